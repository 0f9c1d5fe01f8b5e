/* CPU learner: finite-difference gradients for every layer and head, micro-batch accumulation,
 * determinism, sparse (lazy) embedding updates, optimizer updates against hand-computed
 * references, clipping, loss scaling and the skip path, bf16/fp16 against fp32, state files. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model/learner.h"
#include "model/learner_internal.h"
#include "format/safetensors.h"
#include "testutil.h"

/* ---- helpers ---- */

static uint64_t lcg_state;

static double rnd(void) { /* uniform [0, 1) */
  lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
  return (double)(lcg_state >> 11) * 0x1.0p-53;
}

static eddy_model_spec_t small_spec(eddy_head_t head) {
  eddy_model_spec_t s;
  memset(&s, 0, sizeof s);
  s.hash_bits = 3;
  s.embed_dim = 2;
  s.dense_dim = 3;
  s.n_hidden = 2;
  s.hidden[0] = 5;
  s.hidden[1] = 4;
  s.head = head;
  s.classes = 3;
  return s;
}

static eddy_train_opts_t opts_with(eddy_optim_t opt, float lr) {
  eddy_train_opts_t o = eddy_train_opts_defaults();
  o.optimizer = opt;
  o.lr = lr;
  o.threads = 1;
  o.seed = 7;
  return o;
}

static eddy_learner_t *learner(const eddy_model_spec_t *s, const eddy_train_opts_t *o) {
  char err[256] = "";
  eddy_learner_t *l = eddy_learner_new(s, o, "cpu", err, sizeof err);
  if (!l) fprintf(stderr, "learner_new: %s\n", err);
  assert_non_null(l);
  return l;
}

/* A batch of n random examples for spec; bucket 3 repeats inside each example. */
static eddy_batch_t *make_batch(const eddy_model_spec_t *s, size_t n, uint64_t seed) {
  lcg_state = seed;
  eddy_batch_t *b = eddy_batch_new(s->dense_dim, n);
  assert_non_null(b);
  float dense[64], val[8];
  uint32_t idx[8];
  uint32_t rows = s->embed_dim ? 1u << s->hash_bits : 0;
  for (size_t i = 0; i < n; i++) {
    eddy_event_t ev;
    eddy_event_init(&ev);
    for (uint32_t j = 0; j < s->dense_dim; j++) dense[j] = (float)(rnd() * 2 - 1);
    uint32_t ns = 0;
    if (rows) {
      idx[ns] = 3 % rows, val[ns++] = 1.0f;
      idx[ns] = (uint32_t)(rnd() * rows), val[ns++] = (float)(rnd() + 0.5);
      idx[ns] = 3 % rows, val[ns++] = 0.5f; /* repeated bucket */
    }
    ev.dense = dense;
    ev.n_dense = s->dense_dim;
    ev.sparse_idx = idx;
    ev.sparse_val = val;
    ev.n_sparse = ns;
    if (s->head == EDDY_HEAD_SOFTMAX) ev.label = (double)(uint32_t)(rnd() * s->classes);
    else if (s->head == EDDY_HEAD_LOGISTIC) ev.label = rnd() < 0.5 ? 0 : 1;
    else ev.label = rnd() * 4 - 2;
    ev.weight = (float)(0.5 + rnd() * 1.5); /* non-uniform sample weights */
    assert_int_equal(eddy_batch_push(b, &ev), EDDY_OK);
  }
  return b;
}

static double loss_at(eddy_learner_t *l, const eddy_batch_t *b) {
  double loss = 0;
  assert_int_equal(eddy_learner_accumulate(l, b, NULL, &loss), EDDY_OK);
  return loss;
}

/* Every parameter of every tensor: analytic gradient sum vs central differences of the
 * weighted loss sum. The probe learner only evaluates losses (its gradients are never used). */
static void gradcheck(const eddy_model_spec_t *s) {
  eddy_train_opts_t o = opts_with(EDDY_OPT_SGD, 0.1f);
  o.momentum = 0;
  eddy_learner_t *l = learner(s, &o), *probe = learner(s, &o);
  eddy_batch_t *b = make_batch(s, 6, 99);
  double loss0 = 0;
  assert_int_equal(eddy_learner_accumulate(l, b, NULL, &loss0), EDDY_OK);
  assert_true(loss0 > 0);
  const eddy_tensor_info_t *t;
  size_t nt = eddy_learner_tensors(l, &t);
  size_t checked = 0, nonzero = 0;
  for (size_t k = 0; k < nt; k++) {
    float *w = malloc(t[k].numel * sizeof *w), *g = malloc(t[k].numel * sizeof *g);
    assert_int_equal(eddy_learner_export(l, t[k].name, w, t[k].numel), EDDY_OK);
    assert_int_equal(eddy_learner_export_grad(l, t[k].name, g, t[k].numel), EDDY_OK);
    for (size_t i = 0; i < t[k].numel; i++) {
      const float h = 3e-3f, orig = w[i]; /* small enough to stay clear of ReLU kinks here */
      w[i] = orig + h;
      assert_int_equal(eddy_learner_import(probe, t[k].name, w, t[k].numel), EDDY_OK);
      double lp = loss_at(probe, b);
      w[i] = orig - h;
      assert_int_equal(eddy_learner_import(probe, t[k].name, w, t[k].numel), EDDY_OK);
      double lm = loss_at(probe, b);
      w[i] = orig;
      assert_int_equal(eddy_learner_import(probe, t[k].name, w, t[k].numel), EDDY_OK);
      double fd = (lp - lm) / ((double)(orig + h) - (double)(orig - h));
      double tol = 2e-3 + 2e-2 * fmax(fabs(fd), fabs(g[i]));
      if (fabs(fd - g[i]) > tol)
        fail_msg("%s[%zu]: analytic %.6g vs finite difference %.6g", t[k].name, i, g[i], fd);
      checked++;
      if (g[i] != 0) nonzero++;
    }
    free(w);
    free(g);
  }
  assert_true(checked > 20);
  assert_true(nonzero > checked / 3);
  eddy_batch_destroy(b);
  eddy_learner_destroy(l);
  eddy_learner_destroy(probe);
}

static void test_gradcheck_logistic(void **state) {
  eddy_model_spec_t s = small_spec(EDDY_HEAD_LOGISTIC);
  gradcheck(&s);
}

static void test_gradcheck_softmax(void **state) {
  eddy_model_spec_t s = small_spec(EDDY_HEAD_SOFTMAX);
  gradcheck(&s);
}

static void test_gradcheck_squared(void **state) {
  eddy_model_spec_t s = small_spec(EDDY_HEAD_SQUARED);
  gradcheck(&s);
}

static void test_gradcheck_shapes(void **state) {
  /* Hashed logistic regression (no hidden layer, embedding only) and a dense-only MLP. */
  eddy_model_spec_t s = small_spec(EDDY_HEAD_LOGISTIC);
  s.n_hidden = 0;
  s.dense_dim = 0;
  s.embed_dim = 3;
  gradcheck(&s);
  eddy_model_spec_t d = small_spec(EDDY_HEAD_SOFTMAX);
  d.embed_dim = 0;
  d.n_hidden = 1;
  gradcheck(&d);
}

/* The loss value itself: softmax cross-entropy and BCE by hand from the predictions. */
static void test_loss_matches_predictions(void **state) {
  eddy_head_t heads[] = {EDDY_HEAD_LOGISTIC, EDDY_HEAD_SOFTMAX, EDDY_HEAD_SQUARED};
  for (size_t h = 0; h < 3; h++) {
    eddy_model_spec_t s = small_spec(heads[h]);
    eddy_train_opts_t o = opts_with(EDDY_OPT_ADAM, 1e-3f);
    eddy_learner_t *l = learner(&s, &o);
    eddy_batch_t *b = make_batch(&s, 7, 5);
    uint32_t O = eddy_model_outputs(&s);
    float pred[7 * 3], pred2[7 * 3];
    double loss = 0, ref = 0;
    assert_int_equal(eddy_learner_predict(l, b, pred2), EDDY_OK);
    assert_int_equal(eddy_learner_accumulate(l, b, pred, &loss), EDDY_OK);
    for (size_t i = 0; i < 7; i++) {
      double li;
      if (heads[h] == EDDY_HEAD_LOGISTIC)
        li = b->label[i] > 0.5f ? -log(pred[i]) : -log(1 - pred[i]);
      else if (heads[h] == EDDY_HEAD_SOFTMAX)
        li = -log(pred[i * O + (size_t)b->label[i]]);
      else
        li = 0.5 * (pred[i] - b->label[i]) * (pred[i] - b->label[i]);
      ref += b->weight[i] * li;
      for (uint32_t c = 0; c < O; c++) assert_float_equal(pred[i * O + c], pred2[i * O + c], 1e-7);
    }
    assert_float_equal(loss, ref, 1e-5 * fabs(ref) + 1e-6);
    eddy_batch_destroy(b);
    eddy_learner_destroy(l);
  }
}

static void assert_close_arrays(const float *a, const float *b, size_t n, double rel, double abs_tol) {
  for (size_t i = 0; i < n; i++)
    if (fabs((double)a[i] - b[i]) > abs_tol + rel * fabs((double)b[i]))
      fail_msg("element %zu: %.9g vs %.9g", i, a[i], b[i]);
}

/* All weights of a learner, concatenated. */
static float *all_weights(eddy_learner_t *l, size_t *count) {
  const eddy_tensor_info_t *t;
  size_t nt = eddy_learner_tensors(l, &t), total = 0;
  for (size_t k = 0; k < nt; k++) total += t[k].numel;
  float *w = malloc(total * sizeof *w), *p = w;
  for (size_t k = 0; k < nt; k++) {
    assert_int_equal(eddy_learner_export(l, t[k].name, p, t[k].numel), EDDY_OK);
    p += t[k].numel;
  }
  *count = total;
  return w;
}

static void test_accumulation_equals_big_batch(void **state) {
  eddy_model_spec_t s = small_spec(EDDY_HEAD_SOFTMAX);
  eddy_train_opts_t o = opts_with(EDDY_OPT_SGD, 0.05f);
  eddy_learner_t *a = learner(&s, &o), *big = learner(&s, &o);
  eddy_batch_t *all = make_batch(&s, 32, 11);
  /* Four micro-batches of 8 holding the same examples. */
  for (int k = 0; k < 4; k++) {
    eddy_batch_t *mb = eddy_batch_new(s.dense_dim, 8);
    for (size_t i = 0; i < 8; i++) {
      size_t src = k * 8 + i;
      eddy_event_t ev;
      eddy_event_init(&ev);
      ev.dense = all->dense + src * s.dense_dim;
      ev.n_dense = s.dense_dim;
      ev.sparse_idx = all->sparse_idx + all->sparse_off[src];
      ev.sparse_val = all->sparse_val + all->sparse_off[src];
      ev.n_sparse = (uint32_t)(all->sparse_off[src + 1] - all->sparse_off[src]);
      ev.label = all->label[src];
      ev.weight = all->weight[src];
      assert_int_equal(eddy_batch_push(mb, &ev), EDDY_OK);
    }
    assert_int_equal(eddy_learner_accumulate(a, mb, NULL, NULL), EDDY_OK);
    eddy_batch_destroy(mb);
  }
  assert_int_equal(eddy_learner_accumulate(big, all, NULL, NULL), EDDY_OK);
  const eddy_tensor_info_t *t;
  size_t nt = eddy_learner_tensors(a, &t);
  for (size_t k = 0; k < nt; k++) {
    float *ga = malloc(t[k].numel * 4), *gb = malloc(t[k].numel * 4);
    eddy_learner_export_grad(a, t[k].name, ga, t[k].numel);
    eddy_learner_export_grad(big, t[k].name, gb, t[k].numel);
    assert_close_arrays(ga, gb, t[k].numel, 1e-5, 1e-6);
    free(ga);
    free(gb);
  }
  eddy_step_info_t ia, ib;
  assert_int_equal(eddy_learner_step(a, &ia), EDDY_OK);
  assert_int_equal(eddy_learner_step(big, &ib), EDDY_OK);
  assert_true(ia.applied && ib.applied);
  assert_int_equal(ia.examples, 32);
  assert_int_equal(ib.examples, 32);
  assert_float_equal(ia.grad_norm, ib.grad_norm, 1e-5 * ib.grad_norm);
  size_t n;
  float *wa = all_weights(a, &n), *wb = all_weights(big, &n);
  assert_close_arrays(wa, wb, n, 1e-5, 1e-7);
  free(wa);
  free(wb);
  eddy_batch_destroy(all);
  eddy_learner_destroy(a);
  eddy_learner_destroy(big);
}

static void train(eddy_learner_t *l, const eddy_model_spec_t *s, int steps, uint64_t seed) {
  for (int k = 0; k < steps; k++) {
    eddy_batch_t *b = make_batch(s, 16, seed + (uint64_t)k);
    assert_int_equal(eddy_learner_accumulate(l, b, NULL, NULL), EDDY_OK);
    eddy_step_info_t info;
    assert_int_equal(eddy_learner_step(l, &info), EDDY_OK);
    eddy_batch_destroy(b);
  }
}

static void test_determinism(void **state) {
  eddy_model_spec_t s = small_spec(EDDY_HEAD_SOFTMAX);
  s.hash_bits = 6;
  eddy_train_opts_t o = opts_with(EDDY_OPT_ADAM, 1e-2f);
  eddy_learner_t *a = learner(&s, &o), *b = learner(&s, &o);
  train(a, &s, 20, 100);
  train(b, &s, 20, 100);
  size_t n;
  float *wa = all_weights(a, &n), *wb = all_weights(b, &n);
  assert_memory_equal(wa, wb, n * sizeof *wa);
  o.seed = 8;
  eddy_learner_t *c = learner(&s, &o);
  float *wc = all_weights(c, &n);
  train(c, &s, 20, 100);
  free(wc);
  wc = all_weights(c, &n);
  assert_memory_not_equal(wa, wc, n * sizeof *wa);
  free(wa);
  free(wb);
  free(wc);
  eddy_learner_destroy(a);
  eddy_learner_destroy(b);
  eddy_learner_destroy(c);
}

static void test_init_distribution(void **state) {
  eddy_model_spec_t s = small_spec(EDDY_HEAD_SOFTMAX);
  s.hash_bits = 12;
  s.embed_dim = 8;
  s.dense_dim = 100;
  s.hidden[0] = 64;
  eddy_train_opts_t o = opts_with(EDDY_OPT_ADAM, 1e-3f);
  eddy_learner_t *l = learner(&s, &o);
  size_t ne = (1u << 12) * 8;
  float *e = malloc(ne * 4);
  assert_int_equal(eddy_learner_export(l, "emb.weight", e, ne), EDDY_OK);
  double sum = 0, sq = 0;
  for (size_t i = 0; i < ne; i++) sum += e[i], sq += (double)e[i] * e[i];
  assert_true(fabs(sum / ne) < 1e-3);
  assert_float_equal(sqrt(sq / ne), 0.01, 0.001);
  free(e);
  size_t nw = 64 * 108;
  float *w = malloc(nw * 4);
  assert_int_equal(eddy_learner_export(l, "mlp.0.weight", w, nw), EDDY_OK);
  float bound = 1.0f / sqrtf(108.0f), mx = 0;
  for (size_t i = 0; i < nw; i++) mx = fmaxf(mx, fabsf(w[i]));
  assert_true(mx <= bound && mx > 0.95f * bound);
  free(w);
  eddy_learner_destroy(l);
}

/* Only rows seen since the last step change; untouched rows keep their bits even when their Adam
 * moments are non-zero (lazy Adam) and weight decay is on. */
static void test_sparse_lazy_update(void **state) {
  eddy_model_spec_t s;
  memset(&s, 0, sizeof s);
  s.hash_bits = 10;
  s.embed_dim = 4;
  s.dense_dim = 2;
  s.n_hidden = 1;
  s.hidden[0] = 3;
  s.head = EDDY_HEAD_LOGISTIC;
  eddy_optim_t opts[] = {EDDY_OPT_ADAM, EDDY_OPT_ADAMW, EDDY_OPT_ADAGRAD, EDDY_OPT_SGD};
  for (size_t oi = 0; oi < 4; oi++) {
    eddy_train_opts_t o = opts_with(opts[oi], 1e-2f);
    o.weight_decay = 0.1f;
    eddy_learner_t *l = learner(&s, &o);
    size_t ne = 1024 * 4;
    float *before = malloc(ne * 4), *after = malloc(ne * 4), *after2 = malloc(ne * 4);
    eddy_learner_export(l, "emb.weight", before, ne);
    uint32_t rows1[] = {1, 5, 700}, rows2[] = {5};
    eddy_batch_t *b = eddy_batch_new(2, 4);
    float dense[2] = {0.3f, -0.2f}, val[3] = {1, 1, 1};
    eddy_event_t ev;
    eddy_event_init(&ev);
    ev.dense = dense;
    ev.n_dense = 2;
    ev.sparse_idx = rows1;
    ev.sparse_val = val;
    ev.n_sparse = 3;
    ev.label = 1;
    ev.weight = 1;
    assert_int_equal(eddy_batch_push(b, &ev), EDDY_OK);
    assert_int_equal(eddy_learner_accumulate(l, b, NULL, NULL), EDDY_OK);
    eddy_step_info_t info;
    assert_int_equal(eddy_learner_step(l, &info), EDDY_OK);
    assert_true(info.applied);
    eddy_learner_export(l, "emb.weight", after, ne);
    for (uint32_t r = 0; r < 1024; r++) {
      bool touched = r == 1 || r == 5 || r == 700;
      int same = memcmp(before + r * 4, after + r * 4, 16) == 0;
      if (touched) assert_false(same);
      else assert_true(same);
    }
    eddy_batch_clear(b);
    ev.sparse_idx = rows2;
    ev.n_sparse = 1;
    assert_int_equal(eddy_batch_push(b, &ev), EDDY_OK);
    assert_int_equal(eddy_learner_accumulate(l, b, NULL, NULL), EDDY_OK);
    assert_int_equal(eddy_learner_step(l, &info), EDDY_OK);
    eddy_learner_export(l, "emb.weight", after2, ne);
    for (uint32_t r = 0; r < 1024; r++) {
      int same = memcmp(after + r * 4, after2 + r * 4, 16) == 0;
      if (r == 5) assert_false(same);
      else assert_true(same); /* rows 1 and 700 have moments but were not touched */
    }
    free(before);
    free(after);
    free(after2);
    eddy_batch_destroy(b);
    eddy_learner_destroy(l);
  }
}

/* Linear regression y = w.x + b on one example: the gradient is known in closed form, so each
 * optimizer's first two updates can be computed by hand (in double). */
typedef struct {
  double w[3], s1[3], s2[3];
} ref_state_t;

static void ref_step(ref_state_t *r, const eddy_train_opts_t *o, const double g_raw[3], int t) {
  for (int i = 0; i < 3; i++) {
    double g = g_raw[i], w = r->w[i];
    switch (o->optimizer) {
    case EDDY_OPT_SGD:
      g += o->weight_decay * w;
      r->s1[i] = o->momentum * r->s1[i] + g;
      r->w[i] = w - o->lr * r->s1[i];
      break;
    case EDDY_OPT_ADAM:
    case EDDY_OPT_ADAMW: {
      if (o->optimizer == EDDY_OPT_ADAMW) w *= 1 - (double)o->lr * o->weight_decay;
      else g += o->weight_decay * w;
      r->s1[i] = o->beta1 * r->s1[i] + (1 - o->beta1) * g;
      r->s2[i] = o->beta2 * r->s2[i] + (1 - o->beta2) * g * g;
      double mh = r->s1[i] / (1 - pow(o->beta1, t)), vh = r->s2[i] / (1 - pow(o->beta2, t));
      r->w[i] = w - o->lr * mh / (sqrt(vh) + o->eps);
      break;
    }
    case EDDY_OPT_ADAGRAD:
      g += o->weight_decay * w;
      r->s2[i] += g * g;
      r->w[i] = w - o->lr * g / (sqrt(r->s2[i]) + o->eps);
      break;
    }
  }
}

static void optimizer_reference(eddy_optim_t opt, float clip) {
  eddy_model_spec_t s;
  memset(&s, 0, sizeof s);
  s.dense_dim = 2;
  s.head = EDDY_HEAD_SQUARED;
  eddy_train_opts_t o = opts_with(opt, 0.1f);
  o.momentum = 0.9f;
  o.weight_decay = 0.05f;
  o.eps = 1e-6f;
  o.clip_norm = clip;
  eddy_learner_t *l = learner(&s, &o);
  float w0[2] = {0.5f, -0.25f}, b0[1] = {0.125f};
  assert_int_equal(eddy_learner_import(l, "head.weight", w0, 2), EDDY_OK);
  assert_int_equal(eddy_learner_import(l, "head.bias", b0, 1), EDDY_OK);
  ref_state_t r = {.w = {0.5, -0.25, 0.125}};
  /* Two examples with weights 1 and 3: gradient = sum_i w_i (y_i - t_i) [x_i, 1] / 2. */
  const double x[2][2] = {{1.0, 2.0}, {-0.5, 0.25}}, t[2] = {0.75, -1.0}, ew[2] = {1.0, 3.0};
  eddy_batch_t *b = eddy_batch_new(2, 2);
  for (int i = 0; i < 2; i++) {
    float d[2] = {(float)x[i][0], (float)x[i][1]};
    eddy_event_t ev;
    eddy_event_init(&ev);
    ev.dense = d;
    ev.n_dense = 2;
    ev.label = t[i];
    ev.weight = (float)ew[i];
    assert_int_equal(eddy_batch_push(b, &ev), EDDY_OK);
  }
  for (int step = 1; step <= 2; step++) {
    double g[3] = {0, 0, 0};
    for (int i = 0; i < 2; i++) {
      double y = r.w[0] * x[i][0] + r.w[1] * x[i][1] + r.w[2];
      double d = ew[i] * (y - t[i]) / 2;
      g[0] += d * x[i][0], g[1] += d * x[i][1], g[2] += d;
    }
    double norm = sqrt(g[0] * g[0] + g[1] * g[1] + g[2] * g[2]);
    if (clip > 0 && norm > clip)
      for (int i = 0; i < 3; i++) g[i] *= clip / (norm + 1e-6);
    ref_step(&r, &o, g, step);
    assert_int_equal(eddy_learner_accumulate(l, b, NULL, NULL), EDDY_OK);
    eddy_step_info_t info;
    assert_int_equal(eddy_learner_step(l, &info), EDDY_OK);
    assert_true(info.applied);
    assert_int_equal(info.step, step);
    assert_float_equal(info.grad_norm, norm, 1e-5 * norm);
    float w[2], bias[1];
    eddy_learner_export(l, "head.weight", w, 2);
    eddy_learner_export(l, "head.bias", bias, 1);
    double got[3] = {w[0], w[1], bias[0]};
    for (int i = 0; i < 3; i++)
      if (fabs(got[i] - r.w[i]) > 2e-6 + 2e-6 * fabs(r.w[i]))
        fail_msg("optimizer %d step %d param %d: %.9g vs reference %.9g", (int)opt, step, i, got[i], r.w[i]);
  }
  eddy_batch_destroy(b);
  eddy_learner_destroy(l);
}

static void test_optimizer_sgd(void **state) { optimizer_reference(EDDY_OPT_SGD, 0); }
static void test_optimizer_adam(void **state) { optimizer_reference(EDDY_OPT_ADAM, 0); }
static void test_optimizer_adamw(void **state) { optimizer_reference(EDDY_OPT_ADAMW, 0); }
static void test_optimizer_adagrad(void **state) { optimizer_reference(EDDY_OPT_ADAGRAD, 0); }
static void test_clipping(void **state) {
  optimizer_reference(EDDY_OPT_SGD, 0.05f);
  optimizer_reference(EDDY_OPT_ADAM, 0.05f);
}

/* Poisoned gradients: the step is skipped, weights keep their bits, the scale backs off. */
static void test_skip_nonfinite(void **state) {
  eddy_model_spec_t s = small_spec(EDDY_HEAD_SOFTMAX);
  eddy_precision_t precs[] = {EDDY_PREC_FP16, EDDY_PREC_FP32};
  float poisons[] = {INFINITY, NAN};
  for (size_t p = 0; p < 2; p++) {
    eddy_train_opts_t o = opts_with(EDDY_OPT_ADAM, 1e-2f);
    o.precision = precs[p];
    eddy_learner_t *l = learner(&s, &o);
    train(l, &s, 2, 40);
    for (size_t k = 0; k < 2; k++) {
      const eddy_scaler_t *sc = eddy_learner_scaler(l);
      float scale = sc->scale;
      uint64_t skipped = sc->skipped_steps, steps = eddy_learner_step_count(l);
      size_t n;
      float *w0 = all_weights(l, &n);
      eddy_batch_t *b = make_batch(&s, 8, 77);
      assert_int_equal(eddy_learner_accumulate(l, b, NULL, NULL), EDDY_OK);
      eddy_learner_poison_gradients(l, poisons[k]);
      eddy_step_info_t info;
      assert_int_equal(eddy_learner_step(l, &info), EDDY_OK);
      assert_false(info.applied);
      float *w1 = all_weights(l, &n);
      assert_memory_equal(w0, w1, n * sizeof *w0);
      assert_int_equal(sc->skipped_steps, skipped + 1);
      assert_int_equal(eddy_learner_step_count(l), steps);
      if (precs[p] == EDDY_PREC_FP16) assert_float_equal(sc->scale, scale * 0.5f, 0);
      else assert_float_equal(sc->scale, 1.0f, 0);
      assert_float_equal(info.loss_scale, sc->scale, 0);
      /* Gradients were cleared: the next clean step applies. */
      assert_int_equal(eddy_learner_accumulate(l, b, NULL, NULL), EDDY_OK);
      assert_int_equal(eddy_learner_step(l, &info), EDDY_OK);
      assert_true(info.applied);
      free(w0);
      free(w1);
      eddy_batch_destroy(b);
    }
    eddy_learner_destroy(l);
  }
}

static void test_scale_growth(void **state) {
  eddy_model_spec_t s = small_spec(EDDY_HEAD_SOFTMAX);
  eddy_train_opts_t o = opts_with(EDDY_OPT_ADAM, 1e-3f);
  o.precision = EDDY_PREC_FP16;
  o.loss_scale.init_scale = 256;
  o.loss_scale.interval = 3;
  eddy_learner_t *l = learner(&s, &o);
  train(l, &s, 2, 1);
  assert_float_equal(eddy_learner_scaler(l)->scale, 256, 0);
  train(l, &s, 1, 3);
  assert_float_equal(eddy_learner_scaler(l)->scale, 512, 0);
  assert_int_equal(eddy_learner_scaler(l)->skipped_steps, 0);
  assert_int_equal(eddy_learner_step_count(l), 3);
  eddy_learner_destroy(l);
}

/* fp16 overflow for real: a huge input makes fp16 operands Inf; the step is skipped. */
static void test_fp16_overflow_skips(void **state) {
  eddy_model_spec_t s = small_spec(EDDY_HEAD_SQUARED);
  eddy_train_opts_t o = opts_with(EDDY_OPT_SGD, 1e-3f);
  o.precision = EDDY_PREC_FP16;
  eddy_learner_t *l = learner(&s, &o);
  eddy_batch_t *b = make_batch(&s, 4, 3);
  b->label[0] = 1e6f; /* dloss * 65536 / 4 far beyond 65504 */
  assert_int_equal(eddy_learner_accumulate(l, b, NULL, NULL), EDDY_OK);
  eddy_step_info_t info;
  assert_int_equal(eddy_learner_step(l, &info), EDDY_OK);
  assert_false(info.applied);
  assert_float_equal(info.loss_scale, 32768, 0);
  assert_int_equal(eddy_learner_scaler(l)->skipped_steps, 1);
  eddy_batch_destroy(b);
  eddy_learner_destroy(l);
}

/* bf16 and fp16 training tracks fp32: predictions after 40 steps within a few percent. */
static void test_half_precision_tracks_fp32(void **state) {
  eddy_model_spec_t s = small_spec(EDDY_HEAD_SOFTMAX);
  s.dense_dim = 16;
  s.hidden[0] = 32;
  s.hidden[1] = 16;
  eddy_precision_t precs[] = {EDDY_PREC_FP32, EDDY_PREC_BF16, EDDY_PREC_FP16};
  float pred[3][64 * 3];
  double loss[3];
  for (int p = 0; p < 3; p++) {
    eddy_train_opts_t o = opts_with(EDDY_OPT_ADAM, 3e-3f);
    o.precision = precs[p];
    eddy_learner_t *l = learner(&s, &o);
    const char *info = eddy_learner_precision_info(l);
    assert_non_null(strstr(info, p == 0 ? "fp32" : p == 1 ? "bf16" : "fp16"));
    if (p == 2) assert_non_null(strstr(info, "emulated"));
    printf("precision: %s\n", info);
    for (int k = 0; k < 40; k++) {
      eddy_batch_t *b = make_batch(&s, 32, 1000 + k);
      assert_int_equal(eddy_learner_accumulate(l, b, NULL, NULL), EDDY_OK);
      eddy_step_info_t si;
      assert_int_equal(eddy_learner_step(l, &si), EDDY_OK);
      if (p != 2) assert_true(si.applied); /* fp16 may skip its first steps while the scale settles */
      eddy_batch_destroy(b);
    }
    eddy_batch_t *test = make_batch(&s, 64, 5000);
    assert_int_equal(eddy_learner_predict(l, test, pred[p]), EDDY_OK);
    eddy_learner_accumulate(l, test, NULL, &loss[p]);
    eddy_batch_destroy(test);
    eddy_learner_destroy(l);
  }
  for (int p = 1; p < 3; p++) {
    double maxdiff = 0;
    for (size_t i = 0; i < 64 * 3; i++) maxdiff = fmax(maxdiff, fabs(pred[p][i] - pred[0][i]));
    printf("precision %d: max |p - p_fp32| = %.4f, loss %.4f vs %.4f\n", p, maxdiff, loss[p], loss[0]);
    assert_true(maxdiff < 0.05);
    assert_float_equal(loss[p], loss[0], 0.03 * loss[0]);
  }
}

static void test_bad_inputs(void **state) {
  eddy_model_spec_t s = small_spec(EDDY_HEAD_SOFTMAX);
  eddy_train_opts_t o = opts_with(EDDY_OPT_ADAM, 1e-3f);
  char err[256];
  assert_null(eddy_learner_new(&s, &o, "gpu", err, sizeof err));
  assert_non_null(strstr(err, "gpu"));
  /* eddy_core alone has no CUDA backend (a program registers it: tests/unit/cuda_host.c). */
  assert_null(eddy_learner_new(&s, &o, "cuda:0", err, sizeof err));
  assert_non_null(strstr(err, "no CUDA backend"));
  o.lr = -1;
  assert_null(eddy_learner_new(&s, &o, "cpu", err, sizeof err));
  assert_non_null(strstr(err, "lr"));
  /* The learner holds options to the limits the config loader states (eddy_train_limits). */
  o.lr = 1001;
  assert_null(eddy_learner_new(&s, &o, "cpu", err, sizeof err));
  assert_string_equal(err, "train.lr = 1001: must be > 0 and <= 1000");
  o.lr = 1000;
  assert_int_equal(eddy_train_opts_check(&o, err, sizeof err), EDDY_OK);
  o.lr = NAN;
  assert_int_equal(eddy_train_opts_check(&o, err, sizeof err), EDDY_ERR_CONFIG);
  assert_string_equal(err, "train.lr = nan: must be > 0 and <= 1000");
  o.lr = 1e-3f;
  o.eps = 2;
  assert_int_equal(eddy_train_opts_check(&o, err, sizeof err), EDDY_ERR_CONFIG);
  assert_string_equal(err, "train.eps = 2: must be > 0 and <= 1");
  o.eps = 1e-8f;
  o.threads = 1025;
  assert_int_equal(eddy_train_opts_check(&o, err, sizeof err), EDDY_ERR_CONFIG);
  assert_string_equal(err, "train.threads = 1025: must be between 0 and 1024");
  o.threads = 1;
  /* Loss scaling is checked where it is used: fp16 with dynamic scaling. */
  o.loss_scale.growth = 1;
  assert_int_equal(eddy_train_opts_check(&o, err, sizeof err), EDDY_OK);
  o.precision = EDDY_PREC_FP16;
  assert_int_equal(eddy_train_opts_check(&o, err, sizeof err), EDDY_ERR_CONFIG);
  assert_string_equal(err, "train.loss_scale.growth = 1: must be > 1 and <= 1000");
  o.loss_scale.growth = 2;
  o.loss_scale.min_scale = 1e5f;
  assert_int_equal(eddy_train_opts_check(&o, err, sizeof err), EDDY_ERR_CONFIG);
  assert_string_equal(err, "train.loss_scale.min = 100000, train.loss_scale.init = 65536: "
                           "train.loss_scale.min must not exceed train.loss_scale.init");
  o.loss_scale.enabled = false;
  assert_int_equal(eddy_train_opts_check(&o, err, sizeof err), EDDY_OK);
  o = opts_with(EDDY_OPT_ADAM, 1e-3f);
  eddy_model_spec_t bad = s;
  bad.dense_dim = 0;
  bad.embed_dim = 0;
  assert_null(eddy_learner_new(&bad, &o, "cpu", err, sizeof err));
  eddy_learner_t *l = learner(&s, &o);
  eddy_batch_t *wrong_dim = eddy_batch_new(4, 2);
  float d[4] = {0};
  eddy_event_t ev;
  eddy_event_init(&ev);
  ev.dense = d;
  ev.n_dense = 4;
  ev.label = 1;
  ev.weight = 1;
  assert_int_equal(eddy_batch_push(wrong_dim, &ev), EDDY_OK);
  assert_int_equal(eddy_learner_accumulate(l, wrong_dim, NULL, NULL), EDDY_ERR_SHAPE);
  assert_non_null(strstr(eddy_learner_last_error(l), "dense_dim"));
  eddy_batch_t *b = make_batch(&s, 3, 1);
  b->sparse_idx[1] = 8; /* 2^3 buckets */
  assert_int_equal(eddy_learner_accumulate(l, b, NULL, NULL), EDDY_ERR_SHAPE);
  b->sparse_idx[1] = 7;
  b->label[2] = 3; /* 3 classes */
  assert_int_equal(eddy_learner_accumulate(l, b, NULL, NULL), EDDY_ERR_INVALID_ARG);
  b->label[2] = 2;
  b->weight[0] = NAN;
  assert_int_equal(eddy_learner_accumulate(l, b, NULL, NULL), EDDY_ERR_INVALID_ARG);
  b->weight[0] = 1;
  assert_int_equal(eddy_learner_accumulate(l, b, NULL, NULL), EDDY_OK);
  /* Nothing accumulated: a step is a no-op. */
  eddy_step_info_t info;
  assert_int_equal(eddy_learner_step(l, &info), EDDY_OK);
  assert_true(info.applied);
  assert_int_equal(eddy_learner_step(l, &info), EDDY_OK);
  assert_false(info.applied);
  assert_int_equal(info.examples, 0);
  float x[6];
  assert_int_equal(eddy_learner_export(l, "nope", x, 6), EDDY_ERR_NOT_FOUND);
  assert_int_equal(eddy_learner_export(l, "head.bias", x, 6), EDDY_ERR_SHAPE);
  eddy_batch_destroy(b);
  eddy_batch_destroy(wrong_dim);
  eddy_learner_destroy(l);
  eddy_learner_destroy(NULL);
}

static void varying_sizes(eddy_head_t head) {
  eddy_model_spec_t s = small_spec(head);
  size_t O = eddy_model_outputs(&s);
  eddy_train_opts_t o = opts_with(EDDY_OPT_ADAM, 1e-3f);
  eddy_learner_t *l = learner(&s, &o);
  size_t sizes[] = {1, 7, 64, 3, 200, 1, 64};
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    eddy_batch_t *b = make_batch(&s, sizes[k], k);
    float *p1 = malloc(sizes[k] * O * 4), *p2 = malloc(sizes[k] * O * 4);
    assert_int_equal(eddy_learner_predict(l, b, p1), EDDY_OK);
    assert_int_equal(eddy_learner_accumulate(l, b, p2, NULL), EDDY_OK);
    assert_memory_equal(p1, p2, sizes[k] * O * 4);
    for (size_t i = 0; i < sizes[k] * O; i++) assert_true(p1[i] > 0 && p1[i] < 1);
    eddy_step_info_t info;
    assert_int_equal(eddy_learner_step(l, &info), EDDY_OK);
    assert_true(info.applied);
    free(p1);
    free(p2);
    eddy_batch_destroy(b);
  }
  eddy_learner_destroy(l);
}

/* Different micro-batch sizes and predict sizes reuse or create cached primitives correctly;
 * predict and the training forward give the same bits. */
static void test_varying_batch_sizes(void **state) {
  varying_sizes(EDDY_HEAD_LOGISTIC);
  varying_sizes(EDDY_HEAD_SOFTMAX);
}

static void test_threads(void **state) {
  eddy_model_spec_t s = small_spec(EDDY_HEAD_SOFTMAX);
  s.dense_dim = 64;
  s.hidden[0] = 128;
  eddy_train_opts_t o = opts_with(EDDY_OPT_ADAM, 1e-3f);
  eddy_learner_t *one = learner(&s, &o);
  o.threads = 2;
  eddy_learner_t *two = learner(&s, &o);
  train(one, &s, 5, 9);
  train(two, &s, 5, 9);
  size_t n;
  float *a = all_weights(one, &n), *b = all_weights(two, &n);
  assert_close_arrays(a, b, n, 1e-4, 1e-5);
  free(a);
  free(b);
  eddy_learner_destroy(one);
  eddy_learner_destroy(two);
}

/* ---- files ---- */

static void assert_scalers_equal(const eddy_scaler_t *a, const eddy_scaler_t *b) {
  assert_memory_equal(&a->scale, &b->scale, sizeof a->scale);
  assert_int_equal(a->good_steps, b->good_steps);
  assert_int_equal(a->skipped_steps, b->skipped_steps);
}

static void test_state_round_trip(void **state) {
  eddy_optim_t opts[] = {EDDY_OPT_ADAM, EDDY_OPT_SGD, EDDY_OPT_ADAGRAD};
  eddy_precision_t precs[] = {EDDY_PREC_FP16, EDDY_PREC_FP32, EDDY_PREC_BF16};
  char *dir = eddy_test_tmpdir();
  char path[512], err[256];
  snprintf(path, sizeof path, "%s/state.safetensors", dir);
  for (size_t k = 0; k < 3; k++) {
    eddy_model_spec_t s = small_spec(EDDY_HEAD_SOFTMAX);
    s.hash_bits = 5;
    eddy_train_opts_t o = opts_with(opts[k], 1e-2f);
    o.precision = precs[k];
    o.loss_scale.init_scale = 1024;
    o.loss_scale.interval = 4;
    eddy_learner_t *a = learner(&s, &o);
    train(a, &s, 6, 300);
    if (precs[k] == EDDY_PREC_FP16) { /* one skipped step so the counters are non-trivial */
      eddy_batch_t *b = make_batch(&s, 8, 1);
      eddy_learner_accumulate(a, b, NULL, NULL);
      eddy_learner_poison_gradients(a, NAN);
      eddy_learner_step(a, NULL);
      eddy_batch_destroy(b);
    }
    eddy_batch_t *pending = make_batch(&s, 4, 2);
    assert_int_equal(eddy_learner_accumulate(a, pending, NULL, NULL), EDDY_OK);
    assert_int_equal(eddy_learner_save_state(a, path, err, sizeof err), EDDY_ERR_STATE);
    eddy_learner_step(a, NULL);
    eddy_batch_destroy(pending);
    assert_int_equal(eddy_learner_save_state(a, path, err, sizeof err), EDDY_OK);
    o.seed = 12345; /* different init: everything must come from the file */
    eddy_learner_t *b = learner(&s, &o);
    if (eddy_learner_load_state(b, path, err, sizeof err) != EDDY_OK) fail_msg("load_state: %s", err);
    assert_int_equal(eddy_learner_step_count(b), eddy_learner_step_count(a));
    assert_scalers_equal(eddy_learner_scaler(a), eddy_learner_scaler(b));
    train(a, &s, 7, 900);
    train(b, &s, 7, 900);
    size_t n;
    float *wa = all_weights(a, &n), *wb = all_weights(b, &n);
    assert_memory_equal(wa, wb, n * sizeof *wa);
    assert_scalers_equal(eddy_learner_scaler(a), eddy_learner_scaler(b));
    if (precs[k] == EDDY_PREC_FP16) assert_int_equal(eddy_learner_scaler(b)->skipped_steps, 1);
    free(wa);
    free(wb);
    /* Refusals: other optimizer, other spec. */
    eddy_train_opts_t other = o;
    other.optimizer = opts[k] == EDDY_OPT_ADAM ? EDDY_OPT_ADAMW : EDDY_OPT_ADAM;
    eddy_learner_t *c = learner(&s, &other);
    assert_int_equal(eddy_learner_load_state(c, path, err, sizeof err), EDDY_ERR_STATE);
    assert_non_null(strstr(err, "optimizer"));
    eddy_learner_destroy(c);
    eddy_model_spec_t s2 = s;
    s2.hidden[1] = 6;
    c = learner(&s2, &o);
    assert_int_equal(eddy_learner_load_state(c, path, err, sizeof err), EDDY_ERR_STATE);
    eddy_learner_destroy(c);
    eddy_learner_destroy(a);
    eddy_learner_destroy(b);
  }
  snprintf(path, sizeof path, "%s/missing.safetensors", dir);
  eddy_model_spec_t s = small_spec(EDDY_HEAD_SOFTMAX);
  eddy_train_opts_t o = opts_with(EDDY_OPT_ADAM, 1e-2f);
  eddy_learner_t *l = learner(&s, &o);
  assert_int_not_equal(eddy_learner_load_state(l, path, err, sizeof err), EDDY_OK);
  eddy_learner_destroy(l);
  eddy_test_rmdir(dir);
}

static void test_save_weights(void **state) {
  char *dir = eddy_test_tmpdir();
  char path[512], err[256];
  eddy_model_spec_t s = small_spec(EDDY_HEAD_LOGISTIC);
  eddy_train_opts_t o = opts_with(EDDY_OPT_ADAM, 1e-2f);
  eddy_learner_t *l = learner(&s, &o);
  train(l, &s, 3, 5);
  const char *dtypes[] = {"F32", "F16", "BF16"};
  const char *meta[] = {"eddy.version", "42"};
  for (int k = 0; k < 3; k++) {
    snprintf(path, sizeof path, "%s/w-%s.safetensors", dir, dtypes[k]);
    if (eddy_learner_save_weights(l, path, dtypes[k], meta, 1, err, sizeof err) != EDDY_OK)
      fail_msg("save_weights %s: %s", dtypes[k], err);
    eddy_st_reader_t *r = eddy_st_reader_new(path, 0, err, sizeof err);
    assert_non_null(r);
    char *json = eddy_model_spec_to_json(&s);
    assert_string_equal(eddy_st_meta(r, "eddy.spec"), json);
    free(json);
    assert_string_equal(eddy_st_meta(r, "eddy.version"), "42");
    const eddy_tensor_info_t *t;
    size_t nt = eddy_learner_tensors(l, &t);
    assert_int_equal(eddy_st_count(r), nt);
    for (size_t i = 0; i < nt; i++) {
      const eddy_st_tensor_t *st = eddy_st_find(r, t[i].name);
      assert_non_null(st);
      assert_string_equal(eddy_dtype_name(st->dtype), dtypes[k]);
      float *want = malloc(t[i].numel * 4), *got = malloc(t[i].numel * 4);
      eddy_learner_export(l, t[i].name, want, t[i].numel);
      assert_int_equal(eddy_st_read_f32(st, got, t[i].numel), EDDY_OK);
      if (k == 0) assert_memory_equal(want, got, t[i].numel * 4);
      else assert_close_arrays(got, want, t[i].numel, k == 1 ? 1e-3 : 8e-3, 1e-6);
      free(want);
      free(got);
    }
    eddy_st_reader_destroy(r);
  }
  snprintf(path, sizeof path, "%s/w.safetensors", dir);
  assert_int_equal(eddy_learner_save_weights(l, path, "I64", NULL, 0, err, sizeof err), EDDY_ERR_INVALID_ARG);
  eddy_learner_destroy(l);
  eddy_test_rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gradcheck_logistic),
      cmocka_unit_test(test_gradcheck_softmax),
      cmocka_unit_test(test_gradcheck_squared),
      cmocka_unit_test(test_gradcheck_shapes),
      cmocka_unit_test(test_loss_matches_predictions),
      cmocka_unit_test(test_accumulation_equals_big_batch),
      cmocka_unit_test(test_determinism),
      cmocka_unit_test(test_init_distribution),
      cmocka_unit_test(test_sparse_lazy_update),
      cmocka_unit_test(test_optimizer_sgd),
      cmocka_unit_test(test_optimizer_adam),
      cmocka_unit_test(test_optimizer_adamw),
      cmocka_unit_test(test_optimizer_adagrad),
      cmocka_unit_test(test_clipping),
      cmocka_unit_test(test_skip_nonfinite),
      cmocka_unit_test(test_scale_growth),
      cmocka_unit_test(test_fp16_overflow_skips),
      cmocka_unit_test(test_half_precision_tracks_fp32),
      cmocka_unit_test(test_bad_inputs),
      cmocka_unit_test(test_varying_batch_sizes),
      cmocka_unit_test(test_threads),
      cmocka_unit_test(test_state_round_trip),
      cmocka_unit_test(test_save_weights),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
