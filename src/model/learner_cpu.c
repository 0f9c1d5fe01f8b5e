/* The CPU learner backend (behind learner.c's dispatcher): embedding-bag + MLP (ReLU) + head over
 * one flat fp32 parameter buffer, oneDNN matmuls (fp32, or bf16 where the CPU has a bf16 matmul,
 * else operands rounded to bf16/fp16 and multiplied in fp32), gradients summed over micro-batches, optimizer steps that touch only the
 * embedding rows seen since the last step. Same seed + same data + same thread count gives
 * bit-identical weights. Loss: logistic = BCE on the sigmoid, softmax = cross-entropy,
 * squared = 0.5 * (y - t)^2 per example; a step minimises sum_i w_i * loss_i / N.
 * Embedding rows are updated lazily: a step reads and writes only the rows with gradient since the
 * last step (their Adam/momentum state is not decayed and weight decay is not applied while a row
 * is untouched; Adagrad sums are per element), so its cost does not depend on 2^hash_bits.
 * EDDY_BF16_EMULATE=1 in the environment forces the emulated bf16 path (to test it on CPUs that
 * have a bf16 matmul). */
#include "model/learner.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "model/kernels.h"
#include "model/learner_backend.h"
#include "model/mm.h"
#include "model/optim.h"

#define LEARNER_MAX_BATCH ((size_t)1 << 20)
#define LEARNER_MAX_LAYERS (EDDY_MAX_HIDDEN + 1)

typedef enum { OPS_F32 = 0, OPS_BF16, OPS_BF16_EMU, OPS_F16_EMU } ops_mode_t;

typedef eddy_layer_geometry_t layer_t;

typedef struct cpu_learner cpu_learner_t;

struct cpu_learner {
  eddy_model_spec_t spec;
  eddy_train_opts_t opts;
  eddy_model_geometry_t geo; /* layer widths, tensor offsets, the dense region */

  float *w, *g, *s1, *s2; /* weights, gradient sums, optimizer state (NULL where unused) */
  ops_mode_t ops;
  size_t op_size;         /* bytes per GEMM operand element */
  void *wop;              /* GEMM operand copy of [dense_begin, total); NULL in fp32 mode */
  bool wop_valid;

  size_t cap_n;                              /* examples the per-example buffers hold */
  float *act[LEARNER_MAX_LAYERS + 1];        /* act[0] = MLP input, act[l+1] = layer l output */
  void *xop[LEARNER_MAX_LAYERS];             /* operand copies of layer inputs */
  const void *xin[LEARNER_MAX_LAYERS];       /* this batch's layer inputs as GEMM operands */
  float *dz, *dx;
  void *dzop;

  uint32_t *touched;   /* embedding rows with gradient since the last step */
  size_t n_touched, touched_cap;
  uint64_t *mark;      /* bitmap over rows: in touched[] */

  uint64_t pending;    /* examples accumulated since the last step */
  bool poisoned;
  const eddy_collective_t *coll; /* joined ranks (eddy_learner_join); NULL alone */
  float *xrows;        /* touched rows' gradients packed for the sum across ranks */
  size_t xrows_cap;    /* floats */
  bool grad_live;      /* the dense gradient region holds sums; otherwise it is stale and reads as 0 */
  eddy_scaler_t scaler;
  uint64_t steps;
  uint64_t rng[4];
  eddy_mm_t *mm;
  char info[256];
  char last_error[256];
};

/* ---- helpers ---- */

static eddy_err_t fail(cpu_learner_t *l, eddy_err_t err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static eddy_err_t fail(cpu_learner_t *l, eddy_err_t err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(l->last_error, sizeof l->last_error, fmt, ap);
  va_end(ap);
  return err;
}

static void *alloc_floats(size_t n, bool zero) {
  size_t bytes = (n ? n : 1) * sizeof(float);
  bytes = (bytes + 63) / 64 * 64;
  void *p = aligned_alloc(64, bytes);
  if (p && zero) memset(p, 0, bytes);
  return p;
}

static void *alloc_zeroed(size_t n, size_t size) { return calloc(n ? n : 1, size); }

/* ---- buffers ---- */

static void free_batch_buffers(cpu_learner_t *l) {
  for (uint32_t i = 0; i <= l->geo.n_layers; i++) {
    free(l->act[i]);
    l->act[i] = NULL;
  }
  for (uint32_t i = 0; i < l->geo.n_layers; i++) {
    free(l->xop[i]);
    l->xop[i] = NULL;
  }
  free(l->dz);
  free(l->dx);
  free(l->dzop);
  l->dz = l->dx = NULL;
  l->dzop = NULL;
  l->cap_n = 0;
}

/* Grows the per-example buffers to hold n examples (never shrinks; no allocation in steady state). */
static eddy_err_t reserve_batch(cpu_learner_t *l, size_t n) {
  if (n <= l->cap_n) return EDDY_OK;
  if (n > LEARNER_MAX_BATCH)
    return fail(l, EDDY_ERR_TOO_LARGE, "batch of %zu examples: too large (at most %zu)", n, LEARNER_MAX_BATCH);
  size_t cap = 16;
  while (cap < n) cap *= 2;
  free_batch_buffers(l);
  bool ok = true;
  l->act[0] = alloc_floats(cap * l->geo.in0, false);
  ok = ok && l->act[0];
  for (uint32_t i = 0; i < l->geo.n_layers; i++) {
    l->act[i + 1] = alloc_floats(cap * l->geo.layer[i].out, false);
    ok = ok && l->act[i + 1];
    if (l->ops != OPS_F32) {
      l->xop[i] = alloc_floats((cap * l->geo.layer[i].in * l->op_size + 3) / 4, false);
      ok = ok && l->xop[i];
    }
  }
  l->dz = alloc_floats(cap * l->geo.max_width, false);
  l->dx = alloc_floats(cap * l->geo.max_width, false);
  ok = ok && l->dz && l->dx;
  if (l->ops != OPS_F32) {
    l->dzop = alloc_floats((cap * l->geo.max_width * l->op_size + 3) / 4, false);
    ok = ok && l->dzop;
  }
  if (!ok) {
    free_batch_buffers(l);
    return fail(l, EDDY_ERR_NOMEM, "out of memory for a batch of %zu examples", cap);
  }
  l->cap_n = cap;
  return EDDY_OK;
}

/* Converts n floats into the GEMM operand format at dst (which may not alias src). */
static void to_operand(const cpu_learner_t *l, void *dst, const float *src, size_t n) {
  switch (l->ops) {
  case OPS_F32: memcpy(dst, src, n * sizeof(float)); break;
  case OPS_BF16: eddy_kernel_to_bf16(dst, src, n); break;
  case OPS_BF16_EMU: eddy_kernel_round_bf16(dst, src, n); break;
  case OPS_F16_EMU: eddy_kernel_round_f16(dst, src, n); break;
  }
}

static void refresh_weight_operands(cpu_learner_t *l) {
  if (l->ops == OPS_F32 || l->wop_valid) return;
  to_operand(l, l->wop, l->w + l->geo.dense_begin, l->geo.total - l->geo.dense_begin);
  l->wop_valid = true;
}

static const void *weight_operand(const cpu_learner_t *l, const layer_t *ly) {
  if (l->ops == OPS_F32) return l->w + ly->w_off;
  return (const char *)l->wop + (ly->w_off - l->geo.dense_begin) * l->op_size;
}

/* ---- construction ---- */

static void set_precision(cpu_learner_t *l) {
  char impl[160];
  const char *isa = eddy_mm_isa_name();
  l->ops = OPS_F32;
  l->op_size = sizeof(float);
  switch (l->opts.precision) {
  case EDDY_PREC_FP32:
    snprintf(l->info, sizeof l->info, "fp32 (%s f32 matmul, %s)", strcmp(isa, "reference") ? "oneDNN" : "plain-loop",
             isa);
    break;
  case EDDY_PREC_BF16: {
    const char *force = getenv("EDDY_BF16_EMULATE");
    bool forced = force && *force && strcmp(force, "0") != 0;
    if (!forced && eddy_mm_probe_bf16(l->mm, impl, sizeof impl)) {
      l->ops = OPS_BF16;
      l->op_size = sizeof(uint16_t);
      snprintf(l->info, sizeof l->info, "bf16 (oneDNN %s)", impl);
      EDDY_INFO("learner", "precision %s", l->info);
    } else {
      l->ops = OPS_BF16_EMU;
      if (forced) snprintf(impl, sizeof impl, "EDDY_BF16_EMULATE is set");
      snprintf(l->info, sizeof l->info,
               "bf16 (emulated: rounded operands, fp32 GEMM; CPU has no bf16 matmul: %s; isa %s)", impl, isa);
      EDDY_WARN("learner", "precision %s", l->info);
    }
    break;
  }
  case EDDY_PREC_FP16:
    l->ops = OPS_F16_EMU;
    snprintf(l->info, sizeof l->info,
             "fp16 (emulated: operands rounded to fp16, fp32 GEMM; dynamic loss scaling; isa %s)", isa);
    EDDY_INFO("learner", "precision %s", l->info);
    break;
  }
}

static void init_weights(cpu_learner_t *l) {
  eddy_learner_init_weights(&l->spec, l->opts.seed, l->w, l->rng);
  l->wop_valid = false;
}

static void cpu_destroy(void *impl);

static void *cpu_create(const eddy_model_spec_t *spec, const eddy_train_opts_t *opts, const char *device,
                        char *errstr, size_t errstr_size) {
  cpu_learner_t *l = calloc(1, sizeof *l);
  if (!l) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "learner: out of memory");
    return NULL;
  }
  l->spec = *spec;
  l->opts = *opts;
  if (l->opts.threads <= 0) l->opts.threads = 1;
  eddy_model_geometry(spec, &l->geo);

  l->mm = eddy_mm_new(l->opts.threads, errstr, errstr_size);
  if (!l->mm) {
    free(l);
    return NULL;
  }
  set_precision(l);

  bool ok = true;
  l->w = alloc_floats(l->geo.total, true);
  l->g = alloc_zeroed(l->geo.total, sizeof(float));
  ok = l->w && l->g;
  bool need_s1, need_s2;
  eddy_optim_state(opts, &need_s1, &need_s2);
  if (ok && need_s1) ok = (l->s1 = alloc_zeroed(l->geo.total, sizeof(float))) != NULL;
  if (ok && need_s2) ok = (l->s2 = alloc_zeroed(l->geo.total, sizeof(float))) != NULL;
  if (ok && l->ops != OPS_F32)
    ok = (l->wop = alloc_floats(((l->geo.total - l->geo.dense_begin) * l->op_size + 3) / 4, true)) != NULL;
  if (ok && l->geo.emb_rows) {
    l->mark = alloc_zeroed((l->geo.emb_rows + 63) / 64, sizeof(uint64_t));
    l->touched_cap = l->geo.emb_rows < 1024 ? l->geo.emb_rows : 1024;
    l->touched = malloc(l->touched_cap * sizeof *l->touched);
    ok = l->mark && l->touched;
  }
  if (!ok) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "learner: out of memory for %zu parameters", l->geo.total);
    cpu_destroy(l);
    return NULL;
  }
  eddy_scaler_opts_t so = l->opts.loss_scale;
  if (l->opts.precision != EDDY_PREC_FP16) so.enabled = false;
  eddy_scaler_init(&l->scaler, &so);
  init_weights(l);
  return l;
}

static void cpu_destroy(void *impl) {
  cpu_learner_t *l = impl;
  if (!l) return;
  free_batch_buffers(l);
  free(l->w);
  free(l->g);
  free(l->s1);
  free(l->s2);
  free(l->wop);
  free(l->touched);
  free(l->mark);
  free(l->xrows);
  eddy_mm_destroy(l->mm);
  free(l);
}

static const char *cpu_backend(const void *impl) { return "cpu"; }
static const char *cpu_precision_info(const void *impl) { return ((const cpu_learner_t *)impl)->info; }
static const char *cpu_last_error(const void *impl) { return ((const cpu_learner_t *)impl)->last_error; }
static const eddy_scaler_t *cpu_scaler(const void *impl) { return &((const cpu_learner_t *)impl)->scaler; }
static uint64_t cpu_step_count(const void *impl) { return ((const cpu_learner_t *)impl)->steps; }

static void clear_gradients(cpu_learner_t *l);

/* ---- forward / backward ---- */

static eddy_err_t check_batch(cpu_learner_t *l, const eddy_batch_t *b, bool labels) {
  return eddy_learner_check_batch(&l->spec, b, labels, l->last_error, sizeof l->last_error);
}

/* Embedding-bag sums and dense features into act[0], then every layer; logits land in
 * act[n_layers]. Records each layer's GEMM input in xin[] for the backward pass. */
static eddy_err_t forward(cpu_learner_t *l, const eddy_batch_t *b) {
  const size_t n = b->n;
  const uint32_t E = l->geo.emb_dim, D = l->geo.dense_dim, in0 = l->geo.in0;
  const float *x0 = b->dense;
  if (E) {
    float *x = l->act[0];
    for (size_t i = 0; i < n; i++, x += in0) {
      memset(x, 0, E * sizeof *x);
      for (size_t j = b->sparse_off[i]; j < b->sparse_off[i + 1]; j++) {
        const float v = b->sparse_val[j];
        const float *row = l->w + (size_t)b->sparse_idx[j] * E;
        for (uint32_t k = 0; k < E; k++) x[k] += v * row[k];
      }
      if (D) memcpy(x + E, b->dense + i * D, D * sizeof *x);
    }
    x0 = l->act[0];
  }
  refresh_weight_operands(l);
  for (uint32_t i = 0; i < l->geo.n_layers; i++) {
    const layer_t *ly = &l->geo.layer[i];
    const float *x = i == 0 ? x0 : l->act[i];
    if (l->ops == OPS_F32) {
      l->xin[i] = x;
    } else {
      to_operand(l, l->xop[i], x, n * ly->in);
      l->xin[i] = l->xop[i];
    }
    eddy_mm_shape_t s = {.m = (int64_t)n, .k = ly->in, .n = ly->out,
                         .src_stride = {ly->in, 1}, .wei_stride = {1, ly->in}, .dst_stride = {ly->out, 1},
                         .type = l->ops == OPS_BF16 ? EDDY_MM_BF16 : EDDY_MM_F32,
                         .bias = 1, .relu = ly->relu};
    eddy_err_t err = eddy_mm_run(l->mm, &s, l->xin[i], weight_operand(l, ly), l->w + ly->b_off, l->act[i + 1],
                                 1.0f, l->last_error, sizeof l->last_error);
    if (err) return err;
  }
  return EDDY_OK;
}

static float sigmoid(float x) { return x >= 0 ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x)); }

/* p = softmax(z) over O classes; returns log(sum exp(z - max)) + max, the log-partition. */
static double softmax(const float *z, float *p, uint32_t O) {
  float mx = z[0];
  for (uint32_t c = 1; c < O; c++) mx = z[c] > mx ? z[c] : mx;
  float sum = 0;
  for (uint32_t c = 0; c < O; c++) sum += (p[c] = expf(z[c] - mx));
  float inv = 1.0f / sum;
  for (uint32_t c = 0; c < O; c++) p[c] *= inv;
  return log((double)sum) + mx;
}

/* Probabilities (or values) from the logits into pred (n × outputs). */
static void head_predict(const cpu_learner_t *l, size_t n, float *pred) {
  const uint32_t O = l->geo.outputs;
  const float *z = l->act[l->geo.n_layers];
  for (size_t i = 0; i < n; i++) {
    const float *zi = z + i * O;
    float *pi = pred + i * O;
    if (l->spec.head == EDDY_HEAD_LOGISTIC) {
      pi[0] = sigmoid(zi[0]);
    } else if (l->spec.head == EDDY_HEAD_SQUARED) {
      pi[0] = zi[0];
    } else {
      softmax(zi, pi, O);
    }
  }
}

/* Loss, predictions and dL/dlogits (times weight × factor) into l->dz. */
static double head_loss_grad(cpu_learner_t *l, const eddy_batch_t *b, float *pred, float factor) {
  const uint32_t O = l->geo.outputs;
  const float *z = l->act[l->geo.n_layers];
  double loss = 0;
  for (size_t i = 0; i < b->n; i++) {
    const float *zi = z + i * O;
    float *dzi = l->dz + i * O;
    const float t = b->label[i], wf = b->weight[i] * factor;
    double li;
    if (l->spec.head == EDDY_HEAD_LOGISTIC) {
      float x = zi[0];
      float p = sigmoid(x);
      li = (x > 0 ? (double)x : 0.0) - (double)t * x + log1p(exp(-fabs((double)x)));
      dzi[0] = wf * (p - t);
      if (pred) pred[i] = p;
    } else if (l->spec.head == EDDY_HEAD_SQUARED) {
      float d = zi[0] - t;
      li = 0.5 * (double)d * d;
      dzi[0] = wf * d;
      if (pred) pred[i] = zi[0];
    } else {
      uint32_t y = (uint32_t)t;
      li = softmax(zi, dzi, O) - zi[y];
      for (uint32_t c = 0; c < O; c++) {
        float p = dzi[c];
        if (pred) pred[i * O + c] = p;
        dzi[c] = wf * (p - (c == y ? 1.0f : 0.0f));
      }
    }
    loss += (double)b->weight[i] * li;
  }
  return loss;
}

static eddy_err_t touch_row(cpu_learner_t *l, uint32_t row) {
  uint64_t bit = 1ull << (row & 63);
  if (l->mark[row >> 6] & bit) return EDDY_OK;
  if (l->n_touched == l->touched_cap) {
    size_t cap = l->touched_cap * 2;
    if (cap > l->geo.emb_rows) cap = l->geo.emb_rows;
    uint32_t *t = realloc(l->touched, cap * sizeof *t);
    if (!t) return fail(l, EDDY_ERR_NOMEM, "out of memory for %zu touched embedding rows", cap);
    l->touched = t;
    l->touched_cap = cap;
  }
  l->mark[row >> 6] |= bit;
  l->touched[l->n_touched++] = row;
  return EDDY_OK;
}

/* Backward from l->dz (dL/dlogits) through every layer into the gradient sums; bscale multiplies
 * every gradient contribution (undoes the per-batch 1/n of the fp16 path). */
static eddy_err_t backward(cpu_learner_t *l, const eddy_batch_t *b, float bscale) {
  const size_t n = b->n;
  const int32_t type = l->ops == OPS_BF16 ? EDDY_MM_BF16 : EDDY_MM_F32;
  const bool scaled = bscale != 1.0f;
  const bool fresh = !l->grad_live; /* first micro-batch since the step: overwrite, no zeroing pass */
  for (uint32_t i = l->geo.n_layers; i-- > 0;) {
    const layer_t *ly = &l->geo.layer[i];
    const void *dzop = l->dz;
    if (l->ops != OPS_F32) {
      to_operand(l, l->dzop, l->dz, n * ly->out);
      dzop = l->dzop;
    }
    /* dW += dZ^T X: [out, n] x [n, in] */
    eddy_mm_shape_t sw = {.m = ly->out, .k = (int64_t)n, .n = ly->in,
                          .src_stride = {1, ly->out}, .wei_stride = {ly->in, 1}, .dst_stride = {ly->in, 1},
                          .type = type, .accumulate = !fresh, .runtime_scale = scaled};
    eddy_err_t err = eddy_mm_run(l->mm, &sw, dzop, l->xin[i], NULL, l->g + ly->w_off, bscale, l->last_error,
                                 sizeof l->last_error);
    if (err) return err;
    eddy_kernel_colsum(l->g + ly->b_off, l->dz, n, ly->out, bscale, fresh);
    uint32_t need = i > 0 ? ly->in : l->geo.emb_dim; /* layer 0 needs dX only for the embedding columns */
    if (!need) continue;
    /* dX = dZ W: [n, out] x [out, need] */
    eddy_mm_shape_t sx = {.m = (int64_t)n, .k = ly->out, .n = need,
                          .src_stride = {ly->out, 1}, .wei_stride = {ly->in, 1}, .dst_stride = {need, 1},
                          .type = type};
    err = eddy_mm_run(l->mm, &sx, dzop, weight_operand(l, ly), NULL, l->dx, 1.0f, l->last_error,
                      sizeof l->last_error);
    if (err) return err;
    if (i > 0) eddy_kernel_relu_mask(l->dz, l->dx, l->act[i], n * ly->in);
  }
  l->grad_live = true;
  if (!l->geo.emb_dim) return EDDY_OK;
  const uint32_t E = l->geo.emb_dim;
  for (size_t i = 0; i < n; i++) {
    const float *dxe = l->dx + i * E;
    for (size_t j = b->sparse_off[i]; j < b->sparse_off[i + 1]; j++) {
      const uint32_t row = b->sparse_idx[j];
      eddy_err_t err = touch_row(l, row);
      if (err) return err;
      const float v = b->sparse_val[j] * bscale;
      float *grow = l->g + (size_t)row * E;
      for (uint32_t k = 0; k < E; k++) grow[k] += v * dxe[k];
    }
  }
  return EDDY_OK;
}

static eddy_err_t cpu_accumulate(void *impl, const eddy_batch_t *b, float *pred, double *loss_sum) {
  cpu_learner_t *l = impl;
  if (loss_sum) *loss_sum = 0;
  if (!l || !b) return EDDY_ERR_INVALID_ARG;
  eddy_err_t err = check_batch(l, b, true);
  if (err) return err;
  if (b->n == 0) return EDDY_OK;
  if ((err = reserve_batch(l, b->n))) return err;
  eddy_mm_bind_threads(l->mm);
  if ((err = forward(l, b))) return err;
  /* fp16: per-example gradients carry scale / n (PyTorch's scaled mean loss) through the fp16
   * operands; accumulation multiplies n back so the sums stay sum_i w_i * scale * dloss_i. */
  float factor = 1.0f, bscale = 1.0f;
  if (l->ops == OPS_F16_EMU) {
    factor = l->scaler.scale / (float)b->n;
    bscale = (float)b->n;
  }
  double loss = head_loss_grad(l, b, pred, factor);
  if ((err = backward(l, b, bscale))) {
    clear_gradients(l); /* partial sums are useless: drop this step's gradients */
    return err;
  }
  l->pending += b->n;
  if (loss_sum) *loss_sum = loss;
  return EDDY_OK;
}

static eddy_err_t cpu_predict(void *impl, const eddy_batch_t *b, float *pred) {
  cpu_learner_t *l = impl;
  if (!l || !b || !pred) return EDDY_ERR_INVALID_ARG;
  eddy_err_t err = check_batch(l, b, false);
  if (err) return err;
  if (b->n == 0) return EDDY_OK;
  if ((err = reserve_batch(l, b->n))) return err;
  eddy_mm_bind_threads(l->mm);
  if ((err = forward(l, b))) return err;
  head_predict(l, b->n, pred);
  return EDDY_OK;
}

/* ---- optimizer step ---- */

/* Forgets everything accumulated. Dense sums are not zeroed: the next backward overwrites them. */
static void clear_gradients(cpu_learner_t *l) {
  for (size_t i = 0; i < l->n_touched; i++) {
    uint32_t row = l->touched[i];
    memset(l->g + (size_t)row * l->geo.emb_dim, 0, l->geo.emb_dim * sizeof(float));
    l->mark[row >> 6] = 0;
  }
  l->n_touched = 0;
  l->pending = 0;
  l->poisoned = false;
  l->grad_live = false;
}

/* Joined ranks: sums the example counts, the poison flags, the gradients of every embedding row
 * any rank touched (afterwards the touched list is that union, in the same order on every rank)
 * and the dense gradient region over the ranks, so that every rank holds the same sums. */
static eddy_err_t exchange(cpu_learner_t *l, eddy_step_info_t *out) {
  const eddy_collective_t *c = l->coll;
  const double t0 = eddy_clock_mono_s();
  uint64_t counts[2] = {l->pending, l->poisoned ? 1 : 0};
  eddy_err_t err = c->sum_u64(c->ctx, counts, 2, l->last_error, sizeof l->last_error);
  if (err) return err;
  if (!counts[0] && !counts[1]) { /* no rank has anything: no step anywhere */
    out->exchange_seconds = eddy_clock_mono_s() - t0;
    return EDDY_OK;
  }
  const uint32_t E = l->geo.emb_dim;
  if (E) {
    uint32_t *rows = NULL;
    size_t n = 0;
    if ((err = eddy_collective_rows_union(c, l->touched, l->n_touched, &rows, &n, l->last_error,
                                          sizeof l->last_error)))
      return err;
    if (n * E > l->xrows_cap) {
      float *x = realloc(l->xrows, n * E * sizeof *x);
      if (!x) {
        free(rows);
        return fail(l, EDDY_ERR_NOMEM, "out of memory packing %zu touched embedding rows", n);
      }
      l->xrows = x;
      l->xrows_cap = n * E;
    }
    /* Rows this rank did not touch hold zero gradients (cleared at every step). */
    for (size_t i = 0; i < n; i++) memcpy(l->xrows + i * E, l->g + (size_t)rows[i] * E, E * sizeof(float));
    if (n) err = c->sum_f32(c->ctx, l->xrows, n * E, l->last_error, sizeof l->last_error);
    for (size_t i = 0; !err && i < n; i++) memcpy(l->g + (size_t)rows[i] * E, l->xrows + i * E, E * sizeof(float));
    if (!err && n > l->touched_cap) {
      uint32_t *t = realloc(l->touched, n * sizeof *t);
      if (!t) err = fail(l, EDDY_ERR_NOMEM, "out of memory for %zu touched embedding rows", n);
      else l->touched = t, l->touched_cap = n;
    }
    if (!err) {
      for (size_t i = 0; i < l->n_touched; i++) l->mark[l->touched[i] >> 6] = 0;
      for (size_t i = 0; i < n; i++) l->mark[rows[i] >> 6] |= 1ull << (rows[i] & 63);
      if (n) memcpy(l->touched, rows, n * sizeof *rows);
      l->n_touched = n;
      out->exchanged_bytes += n * E * sizeof(float);
    }
    free(rows);
    if (err) return err;
  }
  const size_t db = l->geo.dense_begin, dn = l->geo.total - db;
  if (!l->grad_live) memset(l->g + db, 0, dn * sizeof(float)); /* stale sums read as zero */
  l->grad_live = true;
  if (dn && (err = c->sum_f32(c->ctx, l->g + db, dn, l->last_error, sizeof l->last_error))) return err;
  out->exchanged_bytes += dn * sizeof(float);
  l->pending = counts[0];
  l->poisoned = counts[1] > 0;
  out->examples = l->pending;
  out->exchange_seconds = eddy_clock_mono_s() - t0;
  return EDDY_OK;
}

static eddy_err_t cpu_step(void *impl, eddy_step_info_t *info) {
  cpu_learner_t *l = impl;
  eddy_step_info_t out = {.applied = false, .step = l->steps, .examples = l->pending,
                          .loss_scale = l->scaler.scale, .grad_norm = 0};
  if (l->coll) {
    eddy_err_t err = exchange(l, &out);
    if (err) {
      clear_gradients(l); /* the sums are incomplete: drop this step's gradients */
      return err;
    }
  }
  if (l->pending == 0 && !l->poisoned) {
    if (info) *info = out;
    return EDDY_OK;
  }
  const uint32_t E = l->geo.emb_dim;
  double sumsq = eddy_kernel_sumsq(l->g + l->geo.dense_begin, l->geo.total - l->geo.dense_begin) +
                 eddy_kernel_sumsq_rows(l->g, l->touched, l->n_touched, E);
  const eddy_optim_scalars_t st = eddy_optim_step_scalars(l->pending, l->scaler.scale, sumsq, l->opts.clip_norm);
  out.grad_norm = st.norm;
  if (!eddy_scaler_update(&l->scaler, st.nonfinite)) {
    EDDY_DEBUG("learner", "step skipped: non-finite gradients (loss scale now %g)", l->scaler.scale);
    clear_gradients(l);
    out.loss_scale = l->scaler.scale;
    if (info) *info = out;
    return EDDY_OK;
  }
  l->steps++;
  const eddy_optim_consts_t p = eddy_optim_consts(&l->opts, l->steps);
  size_t db = l->geo.dense_begin;
  eddy_kernel_optim(&p, st.gmul, l->w + db, l->g + db, l->s1 ? l->s1 + db : NULL, l->s2 ? l->s2 + db : NULL,
                    l->geo.total - db);
  eddy_kernel_optim_rows(&p, st.gmul, l->w, l->g, l->s1, l->s2, l->touched, l->n_touched, E);
  for (size_t i = 0; i < l->n_touched; i++) l->mark[l->touched[i] >> 6] = 0;
  l->n_touched = 0;
  clear_gradients(l);
  l->wop_valid = false;
  out.applied = true;
  out.step = l->steps;
  out.loss_scale = l->scaler.scale;
  if (info) *info = out;
  return EDDY_OK;
}

static void cpu_poison(void *impl, float value) {
  cpu_learner_t *l = impl;
  for (size_t t = 0; t < l->geo.n_tensors; t++) {
    const eddy_tensor_info_t *ti = &l->geo.tensors[t];
    if (ti->offset < l->geo.dense_begin) continue;
    for (size_t i = 0; i < ti->numel; i++) l->g[ti->offset + i] = value;
  }
  l->grad_live = true;
  for (size_t i = 0; i < l->n_touched; i++) {
    float *row = l->g + (size_t)l->touched[i] * l->geo.emb_dim;
    for (uint32_t k = 0; k < l->geo.emb_dim; k++) row[k] = value;
  }
  l->poisoned = true;
}

/* ---- tensors ---- */

static size_t cpu_tensors(const void *impl, const eddy_tensor_info_t **tensors) {
  const cpu_learner_t *l = impl;
  if (tensors) *tensors = l->geo.tensors;
  return l->geo.n_tensors;
}

static const eddy_tensor_info_t *find_tensor(const cpu_learner_t *l, const char *name) {
  for (size_t i = 0; name && i < l->geo.n_tensors; i++)
    if (!strcmp(l->geo.tensors[i].name, name)) return &l->geo.tensors[i];
  return NULL;
}

static eddy_err_t cpu_export(void *impl, const char *name, float *dst, size_t numel) {
  cpu_learner_t *l = impl;
  const eddy_tensor_info_t *t = find_tensor(l, name);
  if (!t) return fail(l, EDDY_ERR_NOT_FOUND, "no tensor \"%s\"", name ? name : "(null)");
  if (numel != t->numel) return fail(l, EDDY_ERR_SHAPE, "tensor %s has %zu elements, not %zu", name, t->numel, numel);
  memcpy(dst, l->w + t->offset, numel * sizeof(float));
  return EDDY_OK;
}

static eddy_err_t cpu_import(void *impl, const char *name, const float *src, size_t numel) {
  cpu_learner_t *l = impl;
  const eddy_tensor_info_t *t = find_tensor(l, name);
  if (!t) return fail(l, EDDY_ERR_NOT_FOUND, "no tensor \"%s\"", name ? name : "(null)");
  if (numel != t->numel) return fail(l, EDDY_ERR_SHAPE, "tensor %s has %zu elements, not %zu", name, t->numel, numel);
  memcpy(l->w + t->offset, src, numel * sizeof(float));
  l->wop_valid = false;
  return EDDY_OK;
}

static eddy_err_t cpu_export_grad(void *impl, const char *name, float *dst, size_t numel) {
  cpu_learner_t *l = impl;
  const eddy_tensor_info_t *t = find_tensor(l, name);
  if (!t) return fail(l, EDDY_ERR_NOT_FOUND, "no tensor \"%s\"", name ? name : "(null)");
  if (numel != t->numel) return fail(l, EDDY_ERR_SHAPE, "tensor %s has %zu elements, not %zu", name, t->numel, numel);
  if (t->offset >= l->geo.dense_begin && !l->grad_live) memset(dst, 0, numel * sizeof(float));
  else memcpy(dst, l->g + t->offset, numel * sizeof(float));
  return EDDY_OK;
}

/* ---- files: the shared code works on a view of the flat buffers ---- */

static eddy_err_t cpu_view_get(void *impl, eddy_learner_view_t *v, char *errstr, size_t errstr_size) {
  cpu_learner_t *l = impl;
  *v = (eddy_learner_view_t){.spec = &l->spec, .opts = &l->opts, .tensors = l->geo.tensors,
                             .n_tensors = l->geo.n_tensors, .w = l->w, .s1 = l->s1, .s2 = l->s2, .steps = &l->steps,
                             .scaler = &l->scaler, .rng = l->rng, .pending = l->pending, .poisoned = l->poisoned};
  return EDDY_OK;
}

static eddy_err_t cpu_view_loaded(void *impl, char *errstr, size_t errstr_size) {
  cpu_learner_t *l = impl;
  clear_gradients(l);
  l->wop_valid = false;
  return EDDY_OK;
}

static eddy_err_t cpu_join(void *impl, const eddy_collective_t *coll, char *errstr, size_t errstr_size) {
  ((cpu_learner_t *)impl)->coll = coll;
  return EDDY_OK;
}

static const eddy_learner_backend_t cpu_backend_table = {
    .name = "cpu",
    .create = cpu_create,
    .destroy = cpu_destroy,
    .backend = cpu_backend,
    .precision_info = cpu_precision_info,
    .accumulate = cpu_accumulate,
    .step = cpu_step,
    .predict = cpu_predict,
    .tensors = cpu_tensors,
    .export_tensor = cpu_export,
    .import_tensor = cpu_import,
    .export_grad = cpu_export_grad,
    .view_get = cpu_view_get,
    .view_loaded = cpu_view_loaded,
    .view_release = NULL,
    .last_error = cpu_last_error,
    .scaler = cpu_scaler,
    .step_count = cpu_step_count,
    .poison = cpu_poison,
    .join = cpu_join,
};

const eddy_learner_backend_t *eddy_learner_cpu_backend(void) { return &cpu_backend_table; }
