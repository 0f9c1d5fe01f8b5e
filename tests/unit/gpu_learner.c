/* The CUDA backend against the CPU backend on the same inputs (needs a GPU; exit 77 without one):
 * initial weights, every operation through the API (embedding-bag, GEMMs, bias + ReLU, the three
 * heads' losses, predictions and gradients, ReLU backward with bias gradients, the sparse scatter),
 * full optimizer steps for every algorithm, finite-difference gradients in fp32, the loss scaler
 * (inf injected: weights bit-identical, scale halved, as on the CPU), accumulation equal to one big
 * batch, CUDA-graph replay equal to eager launches, cuda:all (NCCL) equal to one device, state files
 * across backends, recovery from a failed device allocation. Normalized error limits: 1e-5 fp32,
 * 1e-2 bf16/fp16. CTest and ops/gpu-check run test_nccl apart (--only test_nccl, test gpu_nccl) from
 * the rest (--skip test_nccl): an NCCL that cannot initialise fails that row alone. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gputest.h"
#include "model/learner.h"
#include "model/learner_internal.h"

/* The devices under test. EDDY_GPU_TEST_DEVICE=cpu runs the whole program CPU against CPU: a
 * self-check of the test code on machines without a GPU (all errors are then 0). */
static const char *GPU = "cuda:0", *GPU_ALL = "cuda:all";

static uint64_t lcg_state;

static double rnd(void) {
  lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
  return (double)(lcg_state >> 11) * 0x1.0p-53;
}

static eddy_model_spec_t small_spec(eddy_head_t head) {
  eddy_model_spec_t s;
  memset(&s, 0, sizeof s);
  s.hash_bits = 6;
  s.embed_dim = 8;
  s.dense_dim = 12;
  s.n_hidden = 2;
  s.hidden[0] = 40;
  s.hidden[1] = 24;
  s.head = head;
  s.classes = 5;
  return s;
}

static eddy_train_opts_t opts_with(eddy_optim_t opt, eddy_precision_t prec, float lr) {
  eddy_train_opts_t o = eddy_train_opts_defaults();
  o.optimizer = opt;
  o.precision = prec;
  o.lr = lr;
  o.seed = 7;
  o.weight_decay = 0.01f;
  return o;
}

static eddy_learner_t *make(const eddy_model_spec_t *s, const eddy_train_opts_t *o, const char *device) {
  char err[512] = "";
  eddy_learner_t *l = eddy_learner_new(s, o, device, err, sizeof err);
  if (!l) fprintf(stderr, "learner_new(%s): %s\n", device, err);
  return l;
}

/* n random examples: dense in [-1, 1), three sparse entries (one repeated bucket), weights 0.5..2. */
static eddy_batch_t *make_batch(const eddy_model_spec_t *s, size_t n, uint64_t seed) {
  lcg_state = seed;
  eddy_batch_t *b = eddy_batch_new(s->dense_dim, n);
  float dense[1024], val[4];
  uint32_t idx[4];
  uint32_t rows = s->embed_dim ? 1u << s->hash_bits : 0;
  for (size_t i = 0; i < n; i++) {
    eddy_event_t ev;
    eddy_event_init(&ev);
    for (uint32_t j = 0; j < s->dense_dim; j++)
      dense[j] = (float)(rnd() * 2 - 1);
    uint32_t ns = 0;
    if (rows) {
      idx[ns] = 3 % rows, val[ns++] = 1.0f;
      idx[ns] = (uint32_t)(rnd() * rows), val[ns++] = (float)(rnd() + 0.5);
      idx[ns] = 3 % rows, val[ns++] = 0.5f;
    }
    ev.dense = dense;
    ev.n_dense = s->dense_dim;
    ev.sparse_idx = idx;
    ev.sparse_val = val;
    ev.n_sparse = ns;
    if (s->head == EDDY_HEAD_SOFTMAX)
      ev.label = (double)(uint32_t)(rnd() * s->classes);
    else if (s->head == EDDY_HEAD_LOGISTIC)
      ev.label = rnd() < 0.5 ? 0 : 1;
    else
      ev.label = rnd() * 4 - 2;
    ev.weight = (float)(0.5 + rnd() * 1.5);
    if (eddy_batch_push(b, &ev) != EDDY_OK) abort();
  }
  return b;
}

static float *all_of(eddy_learner_t *l, bool grad, size_t *count) {
  const eddy_tensor_info_t *t;
  size_t nt = eddy_learner_tensors(l, &t), total = 0;
  for (size_t k = 0; k < nt; k++)
    total += t[k].numel;
  float *w = malloc(total * sizeof *w), *p = w;
  for (size_t k = 0; k < nt; k++) {
    eddy_err_t err =
        grad ? eddy_learner_export_grad(l, t[k].name, p, t[k].numel) : eddy_learner_export(l, t[k].name, p, t[k].numel);
    if (err) {
      fprintf(stderr, "export %s: %s\n", t[k].name, eddy_learner_last_error(l));
      free(w);
      return NULL;
    }
    p += t[k].numel;
  }
  *count = total;
  return w;
}

static const char *prec_name(eddy_precision_t p) {
  return p == EDDY_PREC_FP32 ? "fp32" : p == EDDY_PREC_BF16 ? "bf16" : "fp16";
}
static double limit_for(eddy_precision_t p) { return p == EDDY_PREC_FP32 ? 1e-5 : 1e-2; }

/* Per tensor: normalized error of gradients (or weights) between the two learners. */
static double worst_tensor_err(eddy_learner_t *gpu, eddy_learner_t *cpu, bool grad, char *which, size_t which_size) {
  const eddy_tensor_info_t *t;
  size_t nt = eddy_learner_tensors(cpu, &t);
  double worst = 0;
  for (size_t k = 0; k < nt; k++) {
    float *a = malloc(t[k].numel * 4), *b = malloc(t[k].numel * 4);
    eddy_err_t e1 = grad ? eddy_learner_export_grad(gpu, t[k].name, a, t[k].numel)
                         : eddy_learner_export(gpu, t[k].name, a, t[k].numel);
    eddy_err_t e2 = grad ? eddy_learner_export_grad(cpu, t[k].name, b, t[k].numel)
                         : eddy_learner_export(cpu, t[k].name, b, t[k].numel);
    double e = e1 || e2 ? INFINITY : gt_norm_err(a, b, t[k].numel);
    if (e > worst || isinf(e)) {
      worst = e;
      snprintf(which, which_size, "%s", t[k].name);
    }
    free(a);
    free(b);
  }
  return worst;
}

static void test_init_identical(void) {
  eddy_model_spec_t s = small_spec(EDDY_HEAD_SOFTMAX);
  eddy_train_opts_t o = opts_with(EDDY_OPT_ADAM, EDDY_PREC_BF16, 1e-3f);
  eddy_learner_t *g = make(&s, &o, GPU), *c = make(&s, &o, "cpu");
  GT_CHECK(g && c, "learners");
  printf("  backend %s: %s\n", eddy_learner_backend(g), eddy_learner_precision_info(g));
  GT_CHECK(strstr(eddy_learner_backend(g), GPU[0] == 'c' && GPU[1] == 'u' ? "cuda" : "cpu") != NULL, "backend %s",
           eddy_learner_backend(g));
  size_t n1, n2;
  float *a = all_of(g, false, &n1), *b = all_of(c, false, &n2);
  GT_CHECK(a && b && n1 == n2, "exports");
  GT_CHECK(!memcmp(a, b, n1 * 4), "initial weights differ between cuda and cpu");
  free(a);
  free(b);
  eddy_learner_destroy(g);
  eddy_learner_destroy(c);
}

/* Predictions, loss and every gradient after one micro-batch, per head, precision and shape. */
static void test_ops_against_cpu(void) {
  eddy_head_t heads[] = {EDDY_HEAD_LOGISTIC, EDDY_HEAD_SOFTMAX, EDDY_HEAD_SQUARED};
  eddy_precision_t precs[] = {EDDY_PREC_FP32, EDDY_PREC_BF16, EDDY_PREC_FP16};
  for (int shape = 0; shape < 3; shape++) {
    for (size_t h = 0; h < 3; h++) {
      for (size_t p = 0; p < 3; p++) {
        eddy_model_spec_t s = small_spec(heads[h]);
        if (shape == 1) s.n_hidden = 0, s.dense_dim = 0; /* hashed linear model: embedding only */
        if (shape == 2) s.embed_dim = 0, s.dense_dim = 100, s.n_hidden = 1, s.hidden[0] = 300; /* dense MLP */
        eddy_train_opts_t o = opts_with(EDDY_OPT_SGD, precs[p], 0.05f);
        o.loss_scale.init_scale = 1024; /* fp16: well clear of overflow */
        eddy_learner_t *g = make(&s, &o, GPU), *c = make(&s, &o, "cpu");
        GT_CHECK(g && c, "learners");
        const size_t n = 77;
        eddy_batch_t *b = make_batch(&s, n, 100 + h);
        const uint32_t O = eddy_model_outputs(&s);
        float *pg = malloc(n * O * 4), *pc = malloc(n * O * 4), *pp = malloc(n * O * 4);
        GT_OK(eddy_learner_predict(g, b, pp));
        double lg = 0, lc = 0;
        eddy_err_t err = eddy_learner_accumulate(g, b, pg, &lg);
        GT_CHECK(err == EDDY_OK, "cuda accumulate: %s", eddy_learner_last_error(g));
        GT_OK(eddy_learner_accumulate(c, b, pc, &lc));
        const double lim = limit_for(precs[p]);
        double ep = gt_norm_err(pg, pc, n * O), epp = gt_norm_err(pp, pg, n * O);
        double el = fabs(lg - lc) / fabs(lc);
        char which[64] = "";
        double eg = worst_tensor_err(g, c, true, which, sizeof which);
        printf("  shape %d %-8s %s: pred %.2e, loss %.2e, worst grad %.2e (%s)\n", shape, eddy_head_name(heads[h]),
               prec_name(precs[p]), ep, el, eg, which);
        GT_CHECK(ep <= lim, "predictions: normalized error %.3g > %.0e", ep, lim);
        GT_CHECK(epp <= lim * 1e-3 || epp == 0, "predict vs accumulate predictions: %.3g", epp);
        GT_CHECK(el <= lim, "loss %.9g vs cpu %.9g", lg, lc);
        GT_CHECK(eg <= lim, "gradient of %s: normalized error %.3g > %.0e", which, eg, lim);
        free(pg);
        free(pc);
        free(pp);
        eddy_batch_destroy(b);
        eddy_learner_destroy(g);
        eddy_learner_destroy(c);
      }
    }
  }
}

/* Several full steps of each optimizer (weight decay and clipping on) against the CPU. */
static void test_steps_against_cpu(void) {
  eddy_optim_t opts[] = {EDDY_OPT_SGD, EDDY_OPT_ADAM, EDDY_OPT_ADAMW, EDDY_OPT_ADAGRAD};
  eddy_precision_t precs[] = {EDDY_PREC_FP32, EDDY_PREC_BF16, EDDY_PREC_FP16};
  for (size_t k = 0; k < 4; k++) {
    for (size_t p = 0; p < 3; p++) {
      eddy_model_spec_t s = small_spec(EDDY_HEAD_SOFTMAX);
      eddy_train_opts_t o = opts_with(opts[k], precs[p], opts[k] == EDDY_OPT_SGD ? 0.05f : 3e-3f);
      o.clip_norm = 0.5f;
      o.loss_scale.init_scale = 1024; /* fp16: no overflow skips in the first steps */
      eddy_learner_t *g = make(&s, &o, GPU), *c = make(&s, &o, "cpu");
      GT_CHECK(g && c, "learners");
      double worst_norm = 0;
      for (int step = 0; step < 6; step++) {
        eddy_batch_t *b = make_batch(&s, 48, 500 + (uint64_t)step);
        GT_OK(eddy_learner_accumulate(g, b, NULL, NULL));
        GT_OK(eddy_learner_accumulate(c, b, NULL, NULL));
        eddy_step_info_t ig, ic;
        eddy_err_t err = eddy_learner_step(g, &ig);
        GT_CHECK(err == EDDY_OK, "cuda step: %s", eddy_learner_last_error(g));
        GT_OK(eddy_learner_step(c, &ic));
        GT_CHECK(ig.applied == ic.applied && ig.step == ic.step && ig.examples == ic.examples,
                 "step info differs: applied %d/%d step %llu/%llu", ig.applied, ic.applied, (unsigned long long)ig.step,
                 (unsigned long long)ic.step);
        GT_CHECK(ig.loss_scale == ic.loss_scale, "loss scale %g vs %g", ig.loss_scale, ic.loss_scale);
        double en = fabs(ig.grad_norm - ic.grad_norm) / ic.grad_norm;
        worst_norm = en > worst_norm ? en : worst_norm;
        eddy_batch_destroy(b);
      }
      char which[64] = "";
      double ew = worst_tensor_err(g, c, false, which, sizeof which);
      printf("  %-7s %s: weights %.2e (%s), grad norm %.2e\n",
             opts[k] == EDDY_OPT_SGD     ? "sgd"
             : opts[k] == EDDY_OPT_ADAM  ? "adam"
             : opts[k] == EDDY_OPT_ADAMW ? "adamw"
                                         : "adagrad",
             prec_name(precs[p]), ew, which, worst_norm);
      GT_CHECK(ew <= limit_for(precs[p]), "weights of %s after 6 steps: normalized error %.3g", which, ew);
      GT_CHECK(worst_norm <= limit_for(precs[p]), "grad norm relative error %.3g", worst_norm);
      eddy_learner_destroy(g);
      eddy_learner_destroy(c);
    }
  }
}

/* Analytic gradients of the CUDA learner (fp32) against central differences of its loss. */
static void test_gradcheck_fp32(void) {
  eddy_head_t heads[] = {EDDY_HEAD_LOGISTIC, EDDY_HEAD_SOFTMAX, EDDY_HEAD_SQUARED};
  for (size_t h = 0; h < 3; h++) {
    eddy_model_spec_t s = small_spec(heads[h]);
    s.hash_bits = 3, s.embed_dim = 2, s.dense_dim = 3, s.hidden[0] = 5, s.hidden[1] = 4, s.classes = 3;
    eddy_train_opts_t o = opts_with(EDDY_OPT_SGD, EDDY_PREC_FP32, 0.1f);
    o.momentum = 0;
    o.weight_decay = 0;
    eddy_learner_t *l = make(&s, &o, GPU), *probe = make(&s, &o, GPU);
    GT_CHECK(l && probe, "learners");
    eddy_batch_t *b = make_batch(&s, 6, 99);
    double loss0 = 0;
    GT_OK(eddy_learner_accumulate(l, b, NULL, &loss0));
    const eddy_tensor_info_t *t;
    size_t nt = eddy_learner_tensors(l, &t), checked = 0, nonzero = 0;
    for (size_t k = 0; k < nt; k++) {
      float *w = malloc(t[k].numel * 4), *gr = malloc(t[k].numel * 4);
      GT_OK(eddy_learner_export(l, t[k].name, w, t[k].numel));
      GT_OK(eddy_learner_export_grad(l, t[k].name, gr, t[k].numel));
      for (size_t i = 0; i < t[k].numel; i++) {
        const float hstep = 3e-3f, orig = w[i];
        double lp = 0, lm = 0;
        w[i] = orig + hstep;
        GT_OK(eddy_learner_import(probe, t[k].name, w, t[k].numel));
        GT_OK(eddy_learner_accumulate(probe, b, NULL, &lp));
        w[i] = orig - hstep;
        GT_OK(eddy_learner_import(probe, t[k].name, w, t[k].numel));
        GT_OK(eddy_learner_accumulate(probe, b, NULL, &lm));
        w[i] = orig;
        GT_OK(eddy_learner_import(probe, t[k].name, w, t[k].numel));
        double fd = (lp - lm) / ((double)(orig + hstep) - (double)(orig - hstep));
        double tol = 2e-3 + 2e-2 * fmax(fabs(fd), fabs(gr[i]));
        GT_CHECK(fabs(fd - gr[i]) <= tol, "%s %s[%zu]: analytic %.6g vs finite difference %.6g",
                 eddy_head_name(heads[h]), t[k].name, i, gr[i], fd);
        checked++;
        nonzero += gr[i] != 0;
      }
      free(w);
      free(gr);
    }
    GT_CHECK(checked > 20 && nonzero > checked / 3, "checked %zu, nonzero %zu", checked, nonzero);
    eddy_batch_destroy(b);
    eddy_learner_destroy(l);
    eddy_learner_destroy(probe);
  }
}

/* Inf/NaN injected at step k: the step is skipped, weights keep their bits, the scale backs off
 * exactly as on the CPU; a real fp16 overflow does the same. */
static void test_loss_scaler(void) {
  eddy_precision_t precs[] = {EDDY_PREC_FP16, EDDY_PREC_FP32};
  float poisons[] = {INFINITY, NAN};
  for (size_t p = 0; p < 2; p++) {
    eddy_model_spec_t s = small_spec(EDDY_HEAD_SOFTMAX);
    eddy_train_opts_t o = opts_with(EDDY_OPT_ADAM, precs[p], 1e-2f);
    o.loss_scale.init_scale = 256; /* no real fp16 overflow: only the injected ones skip */
    o.loss_scale.interval = 3;
    eddy_learner_t *g = make(&s, &o, GPU), *c = make(&s, &o, "cpu");
    GT_CHECK(g && c, "learners");
    for (int step = 0; step < 7; step++) {
      eddy_batch_t *b = make_batch(&s, 16, 40 + (uint64_t)step);
      eddy_learner_t *both[2] = {g, c};
      for (int k = 0; k < 2; k++) {
        GT_OK(eddy_learner_accumulate(both[k], b, NULL, NULL));
        if (step == 2 || step == 5) eddy_learner_poison_gradients(both[k], poisons[step == 5]);
      }
      size_t n;
      float *w0 = all_of(g, false, &n);
      eddy_step_info_t ig, ic;
      GT_OK(eddy_learner_step(g, &ig));
      GT_OK(eddy_learner_step(c, &ic));
      float *w1 = all_of(g, false, &n);
      const eddy_scaler_t *sg = eddy_learner_scaler(g), *sc = eddy_learner_scaler(c);
      GT_CHECK(ig.applied == ic.applied, "step %d: applied %d on cuda, %d on cpu", step, ig.applied, ic.applied);
      GT_CHECK(sg->scale == sc->scale && sg->good_steps == sc->good_steps && sg->skipped_steps == sc->skipped_steps,
               "step %d: scaler cuda (%g, %u, %llu) vs cpu (%g, %u, %llu)", step, sg->scale, sg->good_steps,
               (unsigned long long)sg->skipped_steps, sc->scale, sc->good_steps, (unsigned long long)sc->skipped_steps);
      if (step == 2 || step == 5) {
        GT_CHECK(!ig.applied, "poisoned step %d applied", step);
        GT_CHECK(!memcmp(w0, w1, n * 4), "poisoned step %d changed weights", step);
      } else {
        GT_CHECK(ig.applied && memcmp(w0, w1, n * 4) != 0, "clean step %d did not update", step);
      }
      free(w0);
      free(w1);
      eddy_batch_destroy(b);
    }
    printf("  %s: scale %g, skipped %llu (same as cpu)\n", prec_name(precs[p]), eddy_learner_scaler(g)->scale,
           (unsigned long long)eddy_learner_scaler(g)->skipped_steps);
    eddy_learner_destroy(g);
    eddy_learner_destroy(c);
  }
  /* fp16 overflow for real: dloss × 65536 / 4 far beyond 65504. */
  eddy_model_spec_t s = small_spec(EDDY_HEAD_SQUARED);
  eddy_train_opts_t o = opts_with(EDDY_OPT_SGD, EDDY_PREC_FP16, 1e-3f);
  eddy_learner_t *g = make(&s, &o, GPU);
  GT_CHECK(g, "learner");
  eddy_batch_t *b = make_batch(&s, 4, 3);
  b->label[0] = 1e6f;
  GT_OK(eddy_learner_accumulate(g, b, NULL, NULL));
  eddy_step_info_t info;
  GT_OK(eddy_learner_step(g, &info));
  GT_CHECK(!info.applied && info.loss_scale == 32768.0f, "overflow: applied %d, scale %g", info.applied,
           info.loss_scale);
  eddy_batch_destroy(b);
  eddy_learner_destroy(g);
}

static eddy_batch_t *slice(const eddy_model_spec_t *s, const eddy_batch_t *all, size_t from, size_t n) {
  eddy_batch_t *mb = eddy_batch_new(s->dense_dim, n);
  for (size_t i = 0; i < n; i++) {
    size_t src = from + i;
    eddy_event_t ev;
    eddy_event_init(&ev);
    ev.dense = all->dense + src * s->dense_dim;
    ev.n_dense = s->dense_dim;
    ev.sparse_idx = all->sparse_idx + all->sparse_off[src];
    ev.sparse_val = all->sparse_val + all->sparse_off[src];
    ev.n_sparse = (uint32_t)(all->sparse_off[src + 1] - all->sparse_off[src]);
    ev.label = all->label[src];
    ev.weight = all->weight[src];
    if (eddy_batch_push(mb, &ev) != EDDY_OK) abort();
  }
  return mb;
}

/* k micro-batches of b equal one batch of k×b (fp32 and fp16, whose per-batch scale differs). */
static void test_accumulation(void) {
  eddy_precision_t precs[] = {EDDY_PREC_FP32, EDDY_PREC_FP16};
  for (size_t p = 0; p < 2; p++) {
    eddy_model_spec_t s = small_spec(EDDY_HEAD_SOFTMAX);
    eddy_train_opts_t o = opts_with(EDDY_OPT_SGD, precs[p], 0.05f);
    o.loss_scale.init_scale = 1024;
    eddy_learner_t *a = make(&s, &o, GPU), *big = make(&s, &o, GPU);
    GT_CHECK(a && big, "learners");
    eddy_batch_t *all = make_batch(&s, 64, 11);
    for (int k = 0; k < 4; k++) {
      eddy_batch_t *mb = slice(&s, all, (size_t)k * 16, 16);
      GT_OK(eddy_learner_accumulate(a, mb, NULL, NULL));
      eddy_batch_destroy(mb);
    }
    GT_OK(eddy_learner_accumulate(big, all, NULL, NULL));
    char which[64] = "";
    double eg = worst_tensor_err(a, big, true, which, sizeof which);
    eddy_step_info_t ia, ib;
    GT_OK(eddy_learner_step(a, &ia));
    GT_OK(eddy_learner_step(big, &ib));
    GT_CHECK(ia.applied && ib.applied && ia.examples == 64 && ib.examples == 64, "step info");
    double ew = worst_tensor_err(a, big, false, which, sizeof which);
    printf("  %s: gradients %.2e, weights %.2e\n", prec_name(precs[p]), eg, ew);
    const double lim = precs[p] == EDDY_PREC_FP32 ? 1e-5 : 1e-2;
    GT_CHECK(eg <= lim, "accumulated gradient of %s: %.3g", which, eg);
    GT_CHECK(ew <= lim, "weights of %s: %.3g", which, ew);
    eddy_batch_destroy(all);
    eddy_learner_destroy(a);
    eddy_learner_destroy(big);
  }
}

/* Replayed CUDA graphs compute what eager launches compute, over repeating and changing shapes;
 * predict and the training forward agree at every size. Not bit for bit: cuBLAS may pick another
 * kernel under capture, and bf16 rounding can flip on a last-bit difference; a wrong pointer or a
 * stale shape in a graph gives errors of order 1. */
static void test_graphs(void) {
  eddy_precision_t precs[] = {EDDY_PREC_FP32, EDDY_PREC_BF16};
  for (size_t p = 0; p < 2; p++) {
    const double lim = precs[p] == EDDY_PREC_FP32 ? 1e-6 : 1e-3;
    eddy_model_spec_t s = small_spec(EDDY_HEAD_SOFTMAX);
    /* SGD: linear in the gradient, so the embedding scatter's atomic-add order is not amplified. */
    eddy_train_opts_t o = opts_with(EDDY_OPT_SGD, precs[p], 0.05f);
    setenv("EDDY_CUDA_GRAPHS", "0", 1);
    eddy_learner_t *eager = make(&s, &o, GPU);
    unsetenv("EDDY_CUDA_GRAPHS");
    eddy_learner_t *graph = make(&s, &o, GPU);
    GT_CHECK(eager && graph, "learners");
    const size_t sizes[] = {64, 64, 64, 7, 64, 200, 64, 7, 7, 7, 1, 64, 200, 200};
    const uint32_t O = eddy_model_outputs(&s);
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
      eddy_batch_t *b = make_batch(&s, sizes[k], 900 + k);
      float *p1 = malloc(sizes[k] * O * 4), *p2 = malloc(sizes[k] * O * 4), *p3 = malloc(sizes[k] * O * 4);
      GT_OK(eddy_learner_predict(graph, b, p3));
      GT_OK(eddy_learner_accumulate(graph, b, p1, NULL));
      GT_OK(eddy_learner_accumulate(eager, b, p2, NULL));
      double e13 = gt_norm_err(p1, p3, sizes[k] * O), e12 = gt_norm_err(p1, p2, sizes[k] * O);
      GT_CHECK(e13 <= lim, "%s batch %zu (size %zu): predict vs accumulate predictions %.3g", prec_name(precs[p]), k,
               sizes[k], e13);
      GT_CHECK(e12 <= lim, "%s batch %zu (size %zu): graph vs eager predictions %.3g", prec_name(precs[p]), k,
               sizes[k], e12);
      GT_OK(eddy_learner_step(graph, NULL));
      GT_OK(eddy_learner_step(eager, NULL));
      free(p1);
      free(p2);
      free(p3);
      eddy_batch_destroy(b);
    }
    char which[64] = "";
    double ew = worst_tensor_err(graph, eager, false, which, sizeof which);
    printf("  %s: graph vs eager after %zu steps: weights %.2e (%s)\n", prec_name(precs[p]),
           sizeof sizes / sizeof sizes[0], ew, which);
    GT_CHECK(ew <= lim, "weights: %.3g", ew);
    eddy_learner_destroy(eager);
    eddy_learner_destroy(graph);
  }
}

/* cuda:all (NCCL, every device of the machine; one device is a valid communicator) against one
 * device: the same batches give the same model. Includes a batch smaller than the device count. */
static void test_nccl(void) {
  eddy_model_spec_t s = small_spec(EDDY_HEAD_LOGISTIC);
  eddy_train_opts_t o = opts_with(EDDY_OPT_SGD, EDDY_PREC_FP32, 0.05f);
  eddy_learner_t *one = make(&s, &o, GPU), *all = make(&s, &o, GPU_ALL);
  GT_CHECK(one && all, "learners");
  printf("  %s: %s\n", eddy_learner_backend(all), eddy_learner_precision_info(all));
  const size_t sizes[] = {96, 96, 1, 33, 96};
  for (size_t k = 0; k < 5; k++) {
    eddy_batch_t *b = make_batch(&s, sizes[k], 70 + k);
    GT_OK(eddy_learner_accumulate(one, b, NULL, NULL));
    eddy_err_t err = eddy_learner_accumulate(all, b, NULL, NULL);
    GT_CHECK(err == EDDY_OK, "cuda:all accumulate: %s", eddy_learner_last_error(all));
    eddy_step_info_t i1, i2;
    GT_OK(eddy_learner_step(one, &i1));
    err = eddy_learner_step(all, &i2);
    GT_CHECK(err == EDDY_OK, "cuda:all step: %s", eddy_learner_last_error(all));
    GT_CHECK(i1.examples == i2.examples && i1.applied && i2.applied, "step info");
    GT_CHECK(fabs(i1.grad_norm - i2.grad_norm) <= 1e-5 * i1.grad_norm, "grad norm %.9g vs %.9g", i1.grad_norm,
             i2.grad_norm);
    eddy_batch_destroy(b);
  }
  char which[64] = "";
  double ew = worst_tensor_err(all, one, false, which, sizeof which);
  printf("  cuda:all vs cuda:0: weights %.2e (%s)\n", ew, which);
  GT_CHECK(ew <= 1e-5, "weights of %s: %.3g", which, ew);
  eddy_learner_destroy(one);
  eddy_learner_destroy(all);
}

/* A state file written by the GPU learner continues on the CPU and the other way round. */
static void test_state_across_backends(void) {
  char dir[] = "/tmp/eddy-gpu-XXXXXX", path[128], err[512];
  GT_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
  snprintf(path, sizeof path, "%s/state.safetensors", dir);
  eddy_model_spec_t s = small_spec(EDDY_HEAD_SOFTMAX);
  eddy_train_opts_t o = opts_with(EDDY_OPT_ADAM, EDDY_PREC_FP32, 3e-3f);
  eddy_learner_t *g = make(&s, &o, GPU), *c = make(&s, &o, "cpu");
  GT_CHECK(g && c, "learners");
  for (int step = 0; step < 3; step++) {
    eddy_batch_t *b = make_batch(&s, 32, 300 + (uint64_t)step);
    GT_OK(eddy_learner_accumulate(g, b, NULL, NULL));
    GT_OK(eddy_learner_step(g, NULL));
    eddy_batch_destroy(b);
  }
  eddy_err_t e = eddy_learner_save_state(g, path, err, sizeof err);
  GT_CHECK(e == EDDY_OK, "save_state: %s", err);
  e = eddy_learner_load_state(c, path, err, sizeof err);
  GT_CHECK(e == EDDY_OK, "load_state on cpu: %s", err);
  GT_CHECK(eddy_learner_step_count(c) == 3, "step count %llu", (unsigned long long)eddy_learner_step_count(c));
  o.seed = 999;
  eddy_learner_t *g2 = make(&s, &o, GPU);
  GT_CHECK(g2, "learner");
  e = eddy_learner_load_state(g2, path, err, sizeof err);
  GT_CHECK(e == EDDY_OK, "load_state on cuda: %s", err);
  for (int step = 0; step < 3; step++) {
    eddy_batch_t *b = make_batch(&s, 32, 400 + (uint64_t)step);
    eddy_learner_t *all3[3] = {g, c, g2};
    for (int k = 0; k < 3; k++) {
      GT_OK(eddy_learner_accumulate(all3[k], b, NULL, NULL));
      GT_OK(eddy_learner_step(all3[k], NULL));
    }
    eddy_batch_destroy(b);
  }
  char which[64] = "";
  double e1 = worst_tensor_err(g, c, false, which, sizeof which);
  double e2 = worst_tensor_err(g2, g, false, which, sizeof which);
  printf("  cuda -> cpu: %.2e; cuda -> cuda: %.2e\n", e1, e2);
  GT_CHECK(e1 <= 1e-5 && e2 <= 1e-6, "continued training differs: %.3g, %.3g", e1, e2);
  snprintf(path, sizeof path, "%s/w.safetensors", dir);
  e = eddy_learner_save_weights(g, path, "BF16", NULL, 0, err, sizeof err);
  GT_CHECK(e == EDDY_OK, "save_weights: %s", err);
  unlink(path);
  snprintf(path, sizeof path, "%s/state.safetensors", dir);
  unlink(path);
  rmdir(dir);
  eddy_learner_destroy(g);
  eddy_learner_destroy(c);
  eddy_learner_destroy(g2);
}

/* A device allocation that fails (a full GPU; injected with eddy_cuda_fail_alloc) fails that call
 * with the reason and leaves the learner usable: the next calls allocate again and train as the CPU
 * does. Both growth paths: the touched-row buffers (in a step) and the batch buffers (in accumulate).
 * CPU against CPU nothing can be injected; the hook must refuse a CPU learner. */
static void test_alloc_failure(void) {
  eddy_model_spec_t s = small_spec(EDDY_HEAD_SOFTMAX);
  s.hash_bits = 12; /* 4096 rows: one step can touch more than the 1024 the row buffers start with */
  eddy_train_opts_t o = opts_with(EDDY_OPT_SGD, EDDY_PREC_FP32, 0.05f);
  eddy_learner_t *g = make(&s, &o, GPU), *c = make(&s, &o, "cpu");
  GT_CHECK(g && c, "learners");
  GT_CHECK(eddy_cuda_fail_alloc(c, 1) == EDDY_ERR_INVALID_ARG, "the hook accepted a CPU learner");
  const bool inject = eddy_cuda_fail_alloc(g, 0) == EDDY_OK;
  eddy_batch_t *small = make_batch(&s, 48, 600), *wide = make_batch(&s, 3000, 601), *big = make_batch(&s, 5000, 602);
  eddy_learner_t *both[2] = {g, c};
  for (int k = 0; k < 2; k++) {
    GT_OK(eddy_learner_accumulate(both[k], small, NULL, NULL));
    GT_OK(eddy_learner_step(both[k], NULL));
  }
  /* wide touches about 2100 rows: the step grows the row buffers, and that allocation fails. */
  if (inject) {
    GT_OK(eddy_learner_accumulate(g, wide, NULL, NULL));
    GT_OK(eddy_cuda_fail_alloc(g, 1));
    eddy_step_info_t info = {0};
    GT_CHECK(eddy_learner_step(g, &info) == EDDY_ERR_BACKEND, "step with a failing allocation did not fail");
    GT_CHECK(strstr(eddy_learner_last_error(g), "out of memory") != NULL, "message: %s", eddy_learner_last_error(g));
    GT_CHECK(eddy_learner_step_count(g) == 1, "failed step counted: %llu",
             (unsigned long long)eddy_learner_step_count(g));
  }
  for (int k = 0; k < 2; k++) {
    eddy_err_t err = eddy_learner_accumulate(both[k], wide, NULL, NULL);
    GT_CHECK(err == EDDY_OK, "%s accumulate after the failure: %s", eddy_learner_backend(both[k]),
             eddy_learner_last_error(both[k]));
    err = eddy_learner_step(both[k], NULL);
    GT_CHECK(err == EDDY_OK, "%s step after the failure: %s", eddy_learner_backend(both[k]),
             eddy_learner_last_error(both[k]));
  }
  /* big needs larger batch buffers: that allocation fails in accumulate, the retry works. */
  if (inject) {
    GT_OK(eddy_cuda_fail_alloc(g, 1));
    GT_CHECK(eddy_learner_accumulate(g, big, NULL, NULL) == EDDY_ERR_BACKEND, "accumulate did not fail");
    GT_CHECK(strstr(eddy_learner_last_error(g), "out of memory") != NULL, "message: %s", eddy_learner_last_error(g));
  }
  for (int k = 0; k < 2; k++) {
    eddy_err_t err = eddy_learner_accumulate(both[k], big, NULL, NULL);
    GT_CHECK(err == EDDY_OK, "%s accumulate of the big batch: %s", eddy_learner_backend(both[k]),
             eddy_learner_last_error(both[k]));
    eddy_step_info_t info;
    GT_OK(eddy_learner_step(both[k], &info));
    GT_CHECK(info.applied && info.examples == 5000, "step: applied %d, %llu examples", info.applied,
             (unsigned long long)info.examples);
  }
  GT_CHECK(eddy_learner_step_count(g) == 3 && eddy_learner_step_count(c) == 3, "steps %llu / %llu",
           (unsigned long long)eddy_learner_step_count(g), (unsigned long long)eddy_learner_step_count(c));
  char which[64] = "";
  double ew = worst_tensor_err(g, c, false, which, sizeof which);
  printf("  %s: weights vs cpu %.2e (%s)\n",
         inject ? "after two injected out-of-memory failures" : "nothing injected (CPU self-check)", ew, which);
  GT_CHECK(ew <= 1e-5, "weights of %s: %.3g", which, ew);
  eddy_batch_destroy(small);
  eddy_batch_destroy(wide);
  eddy_batch_destroy(big);
  eddy_learner_destroy(g);
  eddy_learner_destroy(c);
}

static void test_errors(void) {
  eddy_model_spec_t s = small_spec(EDDY_HEAD_SOFTMAX);
  eddy_train_opts_t o = opts_with(EDDY_OPT_ADAM, EDDY_PREC_FP32, 1e-3f);
  char err[512] = "";
  if (strncmp(GPU, "cuda", 4) == 0) {
    GT_CHECK(eddy_learner_new(&s, &o, "cuda:63", err, sizeof err) == NULL, "cuda:63 accepted");
    GT_CHECK(strstr(err, "cuda:63") != NULL, "message: %s", err);
  }
  eddy_learner_t *g = make(&s, &o, GPU);
  GT_CHECK(g, "learner");
  eddy_batch_t *b = make_batch(&s, 5, 1);
  b->label[2] = 7;
  GT_CHECK(eddy_learner_accumulate(g, b, NULL, NULL) == EDDY_ERR_INVALID_ARG, "bad label accepted");
  GT_CHECK(strstr(eddy_learner_last_error(g), "label 7") != NULL, "message: %s", eddy_learner_last_error(g));
  b->label[2] = 1;
  b->sparse_idx[0] = 1u << 6;
  GT_CHECK(eddy_learner_accumulate(g, b, NULL, NULL) == EDDY_ERR_SHAPE, "bad index accepted");
  b->sparse_idx[0] = 1;
  GT_OK(eddy_learner_accumulate(g, b, NULL, NULL));
  eddy_step_info_t info;
  GT_OK(eddy_learner_step(g, &info));
  GT_CHECK(info.applied, "step");
  GT_OK(eddy_learner_step(g, &info));
  GT_CHECK(!info.applied && info.examples == 0, "empty step applied");
  float x[4];
  GT_CHECK(eddy_learner_export(g, "nope", x, 4) == EDDY_ERR_NOT_FOUND, "unknown tensor");
  eddy_batch_destroy(b);
  eddy_learner_destroy(g);
}

int main(int argc, char **argv) {
  const gt_test_t tests[] = {
      GT_TEST(test_init_identical),
      GT_TEST(test_ops_against_cpu),
      GT_TEST(test_steps_against_cpu),
      GT_TEST(test_gradcheck_fp32),
      GT_TEST(test_loss_scaler),
      GT_TEST(test_accumulation),
      GT_TEST(test_graphs),
      GT_TEST(test_nccl),
      GT_TEST(test_state_across_backends),
      GT_TEST(test_alloc_failure),
      GT_TEST(test_errors),
  };
  const char *dev = getenv("EDDY_GPU_TEST_DEVICE");
  if (dev && *dev) GPU = GPU_ALL = dev;
  return gt_main("gpu_learner", tests, sizeof tests / sizeof tests[0], argc, argv);
}
