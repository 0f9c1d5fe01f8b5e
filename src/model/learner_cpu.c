/* The CPU learner: embedding-bag + MLP (ReLU) + head over one flat fp32 parameter buffer, oneDNN
 * matmuls (fp32, or bf16 where the CPU has a bf16 matmul, else operands rounded to bf16/fp16 and
 * multiplied in fp32), gradients summed over micro-batches, optimizer steps that touch only the
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
#include <oneapi/dnnl/dnnl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "model/kernels.h"
#include "model/learner_internal.h"
#include "model/mm.h"
#include "snapshot/safetensors.h"

#define LEARNER_MAX_BATCH ((size_t)1 << 20)
#define LEARNER_MAX_LAYERS (EDDY_MAX_HIDDEN + 1)
#define STATE_FORMAT "eddy-state-1"

typedef enum { OPS_F32 = 0, OPS_BF16, OPS_BF16_EMU, OPS_F16_EMU } ops_mode_t;

typedef struct {
  uint32_t in, out;
  size_t w_off, b_off;
  bool relu;
} layer_t;

struct eddy_learner {
  eddy_model_spec_t spec;
  eddy_train_opts_t opts;
  eddy_tensor_info_t tensors[EDDY_MAX_TENSORS];
  size_t n_tensors, total, dense_begin;
  uint32_t n_layers, outputs, emb_dim, dense_dim, in0, max_width;
  layer_t layer[LEARNER_MAX_LAYERS];
  size_t emb_rows;

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
  bool grad_live;      /* the dense gradient region holds sums; otherwise it is stale and reads as 0 */
  eddy_scaler_t scaler;
  uint64_t steps;
  uint64_t rng[4];
  eddy_mm_t *mm;
  char info[256];
  char last_error[256];
};

/* ---- random numbers: xoshiro256** seeded by splitmix64 ---- */

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(uint64_t s[4]) {
  uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

static void rng_seed(uint64_t s[4], uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) s[i] = splitmix64(&x);
}

static void init_uniform(uint64_t s[4], float *dst, size_t n, float bound) {
  for (size_t i = 0; i < n; i++) {
    float u = (float)(rng_next(s) >> 40) * 0x1.0p-24f;
    dst[i] = bound * (2.0f * u - 1.0f);
  }
}

static void init_normal(uint64_t s[4], float *dst, size_t n, double stddev) {
  const double two_pi = 6.283185307179586;
  for (size_t i = 0; i < n; i += 2) {
    double u1 = ((double)(rng_next(s) >> 11) + 1.0) * 0x1.0p-53;
    double u2 = (double)(rng_next(s) >> 11) * 0x1.0p-53;
    double r = sqrt(-2.0 * log(u1)) * stddev;
    dst[i] = (float)(r * cos(two_pi * u2));
    if (i + 1 < n) dst[i + 1] = (float)(r * sin(two_pi * u2));
  }
}

/* ---- helpers ---- */

static eddy_err_t fail(eddy_learner_t *l, eddy_err_t err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static eddy_err_t fail(eddy_learner_t *l, eddy_err_t err, const char *fmt, ...) {
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

static const char *optim_name(eddy_optim_t o) {
  switch (o) {
  case EDDY_OPT_SGD: return "sgd";
  case EDDY_OPT_ADAM: return "adam";
  case EDDY_OPT_ADAMW: return "adamw";
  case EDDY_OPT_ADAGRAD: return "adagrad";
  }
  return "unknown";
}

static const char *precision_name(eddy_precision_t p) {
  switch (p) {
  case EDDY_PREC_FP32: return "fp32";
  case EDDY_PREC_BF16: return "bf16";
  case EDDY_PREC_FP16: return "fp16";
  }
  return "unknown";
}

static const char *isa_name(dnnl_cpu_isa_t isa) {
  switch ((int)isa) {
  case dnnl_cpu_isa_sse41: return "sse41";
  case dnnl_cpu_isa_avx: return "avx";
  case dnnl_cpu_isa_avx2: return "avx2";
  case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
  case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
  case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
  case dnnl_cpu_isa_avx512_core: return "avx512_core";
  case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
  case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
  case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
  default: return "cpu";
  }
}

eddy_train_opts_t eddy_train_opts_defaults(void) {
  eddy_train_opts_t o;
  memset(&o, 0, sizeof o);
  o.precision = EDDY_PREC_FP32;
  o.optimizer = EDDY_OPT_ADAM;
  o.lr = 1e-3f;
  o.momentum = 0.9f;
  o.beta1 = 0.9f;
  o.beta2 = 0.999f;
  o.eps = 1e-8f;
  o.weight_decay = 0.0f;
  o.clip_norm = 0.0f;
  o.seed = 42;
  o.loss_scale = eddy_scaler_defaults();
  o.threads = 1;
  return o;
}

static eddy_err_t check_opts(const eddy_train_opts_t *o, char *errstr, size_t errstr_size) {
  if ((unsigned)o->precision > EDDY_PREC_FP16)
    return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "train.precision = %d: unknown", (int)o->precision);
  if ((unsigned)o->optimizer > EDDY_OPT_ADAGRAD)
    return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "train.optimizer = %d: unknown", (int)o->optimizer);
  if (!(o->lr > 0) || !isfinite(o->lr))
    return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "train.lr = %g: must be > 0", o->lr);
  if (!(o->momentum >= 0 && o->momentum < 1))
    return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "train.momentum = %g: must be in [0, 1)", o->momentum);
  if (!(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1))
    return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "train.beta1 = %g, beta2 = %g: must be in [0, 1)",
                     o->beta1, o->beta2);
  if (!(o->eps > 0) || !isfinite(o->eps))
    return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "train.eps = %g: must be > 0", o->eps);
  if (!(o->weight_decay >= 0) || !isfinite(o->weight_decay))
    return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "train.weight_decay = %g: must be >= 0",
                     o->weight_decay);
  if (!(o->clip_norm >= 0) || !isfinite(o->clip_norm))
    return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "train.clip_norm = %g: must be >= 0", o->clip_norm);
  if (o->threads < 0 || o->threads > 1024)
    return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "train.threads = %d: must be 0..1024", o->threads);
  const eddy_scaler_opts_t *s = &o->loss_scale;
  if (o->precision == EDDY_PREC_FP16 && s->enabled &&
      (!(s->init_scale >= 1) || !isfinite(s->init_scale) || !(s->growth > 1) || !isfinite(s->growth) ||
       !(s->backoff > 0 && s->backoff < 1) || s->interval == 0 || !(s->min_scale > 0) ||
       !(s->min_scale <= s->init_scale)))
    return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size,
                     "train.loss_scale: init %g, growth %g, backoff %g, interval %u, min %g: need init >= 1, "
                     "growth > 1, 0 < backoff < 1, interval >= 1, 0 < min <= init",
                     s->init_scale, s->growth, s->backoff, s->interval, s->min_scale);
  return EDDY_OK;
}

/* ---- buffers ---- */

static void free_batch_buffers(eddy_learner_t *l) {
  for (uint32_t i = 0; i <= l->n_layers; i++) {
    free(l->act[i]);
    l->act[i] = NULL;
  }
  for (uint32_t i = 0; i < l->n_layers; i++) {
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
static eddy_err_t reserve_batch(eddy_learner_t *l, size_t n) {
  if (n <= l->cap_n) return EDDY_OK;
  if (n > LEARNER_MAX_BATCH)
    return fail(l, EDDY_ERR_TOO_LARGE, "batch of %zu examples: too large (at most %zu)", n, LEARNER_MAX_BATCH);
  size_t cap = 16;
  while (cap < n) cap *= 2;
  free_batch_buffers(l);
  bool ok = true;
  l->act[0] = alloc_floats(cap * l->in0, false);
  ok = ok && l->act[0];
  for (uint32_t i = 0; i < l->n_layers; i++) {
    l->act[i + 1] = alloc_floats(cap * l->layer[i].out, false);
    ok = ok && l->act[i + 1];
    if (l->ops != OPS_F32) {
      l->xop[i] = alloc_floats((cap * l->layer[i].in * l->op_size + 3) / 4, false);
      ok = ok && l->xop[i];
    }
  }
  l->dz = alloc_floats(cap * l->max_width, false);
  l->dx = alloc_floats(cap * l->max_width, false);
  ok = ok && l->dz && l->dx;
  if (l->ops != OPS_F32) {
    l->dzop = alloc_floats((cap * l->max_width * l->op_size + 3) / 4, false);
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
static void to_operand(const eddy_learner_t *l, void *dst, const float *src, size_t n) {
  switch (l->ops) {
  case OPS_F32: memcpy(dst, src, n * sizeof(float)); break;
  case OPS_BF16: eddy_kernel_to_bf16(dst, src, n); break;
  case OPS_BF16_EMU: eddy_kernel_round_bf16(dst, src, n); break;
  case OPS_F16_EMU: eddy_kernel_round_f16(dst, src, n); break;
  }
}

static void refresh_weight_operands(eddy_learner_t *l) {
  if (l->ops == OPS_F32 || l->wop_valid) return;
  to_operand(l, l->wop, l->w + l->dense_begin, l->total - l->dense_begin);
  l->wop_valid = true;
}

static const void *weight_operand(const eddy_learner_t *l, const layer_t *ly) {
  if (l->ops == OPS_F32) return l->w + ly->w_off;
  return (const char *)l->wop + (ly->w_off - l->dense_begin) * l->op_size;
}

/* ---- construction ---- */

static void set_precision(eddy_learner_t *l) {
  char impl[160];
  const char *isa = isa_name(dnnl_get_effective_cpu_isa());
  l->ops = OPS_F32;
  l->op_size = sizeof(float);
  switch (l->opts.precision) {
  case EDDY_PREC_FP32:
    snprintf(l->info, sizeof l->info, "fp32 (oneDNN f32 matmul, %s)", isa);
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

static void init_weights(eddy_learner_t *l) {
  rng_seed(l->rng, l->opts.seed);
  if (l->emb_dim) init_normal(l->rng, l->w, l->emb_rows * l->emb_dim, 0.01);
  for (uint32_t i = 0; i < l->n_layers; i++) {
    const layer_t *ly = &l->layer[i];
    float bound = 1.0f / sqrtf((float)ly->in);
    init_uniform(l->rng, l->w + ly->w_off, (size_t)ly->in * ly->out, bound);
    init_uniform(l->rng, l->w + ly->b_off, ly->out, bound);
  }
  l->wop_valid = false;
}

eddy_learner_t *eddy_learner_new(const eddy_model_spec_t *spec, const eddy_train_opts_t *opts,
                                 const char *device, char *errstr, size_t errstr_size) {
  if (!spec || !opts) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "learner: spec and opts are required");
    return NULL;
  }
  if (eddy_model_spec_validate(spec, errstr, errstr_size) != EDDY_OK) return NULL;
  if (check_opts(opts, errstr, errstr_size) != EDDY_OK) return NULL;
  if (device && strcmp(device, "cpu") != 0) {
    if (!strncmp(device, "cuda", 4))
      eddy_errf(EDDY_ERR_UNSUPPORTED, errstr, errstr_size,
                "device \"%s\": this build has no CUDA backend (configure with -DEDDY_CUDA=ON)", device);
    else
      eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "device \"%s\": unknown (cpu | cuda[:N])", device);
    return NULL;
  }
  eddy_learner_t *l = calloc(1, sizeof *l);
  if (!l) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "learner: out of memory");
    return NULL;
  }
  l->spec = *spec;
  l->opts = *opts;
  if (l->opts.threads <= 0) l->opts.threads = 1;
  l->n_tensors = eddy_model_layout(spec, l->tensors, &l->total);
  l->emb_dim = spec->embed_dim;
  l->dense_dim = spec->dense_dim;
  l->in0 = spec->embed_dim + spec->dense_dim;
  l->outputs = eddy_model_outputs(spec);
  l->emb_rows = spec->embed_dim ? (size_t)1 << spec->hash_bits : 0;
  size_t t = spec->embed_dim ? 1 : 0;
  l->dense_begin = l->tensors[t].offset;
  l->n_layers = spec->n_hidden + 1;
  uint32_t in = l->in0;
  l->max_width = l->in0;
  for (uint32_t i = 0; i < l->n_layers; i++, t += 2) {
    layer_t *ly = &l->layer[i];
    ly->in = in;
    ly->out = i < spec->n_hidden ? spec->hidden[i] : l->outputs;
    ly->w_off = l->tensors[t].offset;
    ly->b_off = l->tensors[t + 1].offset;
    ly->relu = i < spec->n_hidden;
    if (ly->out > l->max_width) l->max_width = ly->out;
    in = ly->out;
  }

  l->mm = eddy_mm_new(l->opts.threads, errstr, errstr_size);
  if (!l->mm) {
    free(l);
    return NULL;
  }
  set_precision(l);

  bool ok = true;
  l->w = alloc_floats(l->total, true);
  l->g = alloc_zeroed(l->total, sizeof(float));
  ok = l->w && l->g;
  bool need_s1 = opts->optimizer == EDDY_OPT_ADAM || opts->optimizer == EDDY_OPT_ADAMW ||
                 (opts->optimizer == EDDY_OPT_SGD && opts->momentum != 0.0f);
  bool need_s2 = opts->optimizer != EDDY_OPT_SGD;
  if (ok && need_s1) ok = (l->s1 = alloc_zeroed(l->total, sizeof(float))) != NULL;
  if (ok && need_s2) ok = (l->s2 = alloc_zeroed(l->total, sizeof(float))) != NULL;
  if (ok && l->ops != OPS_F32)
    ok = (l->wop = alloc_floats(((l->total - l->dense_begin) * l->op_size + 3) / 4, true)) != NULL;
  if (ok && l->emb_rows) {
    l->mark = alloc_zeroed((l->emb_rows + 63) / 64, sizeof(uint64_t));
    l->touched_cap = l->emb_rows < 1024 ? l->emb_rows : 1024;
    l->touched = malloc(l->touched_cap * sizeof *l->touched);
    ok = l->mark && l->touched;
  }
  if (!ok) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "learner: out of memory for %zu parameters", l->total);
    eddy_learner_destroy(l);
    return NULL;
  }
  eddy_scaler_opts_t so = l->opts.loss_scale;
  if (l->opts.precision != EDDY_PREC_FP16) so.enabled = false;
  eddy_scaler_init(&l->scaler, &so);
  init_weights(l);
  return l;
}

void eddy_learner_destroy(eddy_learner_t *l) {
  if (!l) return;
  free_batch_buffers(l);
  free(l->w);
  free(l->g);
  free(l->s1);
  free(l->s2);
  free(l->wop);
  free(l->touched);
  free(l->mark);
  eddy_mm_destroy(l->mm);
  free(l);
}

const eddy_model_spec_t *eddy_learner_spec(const eddy_learner_t *l) { return &l->spec; }
const char *eddy_learner_backend(const eddy_learner_t *l) { return "cpu"; }
const char *eddy_learner_precision_info(const eddy_learner_t *l) { return l->info; }
const char *eddy_learner_last_error(const eddy_learner_t *l) { return l->last_error; }
const eddy_scaler_t *eddy_learner_scaler(const eddy_learner_t *l) { return &l->scaler; }
uint64_t eddy_learner_step_count(const eddy_learner_t *l) { return l->steps; }

static void clear_gradients(eddy_learner_t *l);

/* ---- forward / backward ---- */

static eddy_err_t check_batch(eddy_learner_t *l, const eddy_batch_t *b, bool labels) {
  if (b->dense_dim != l->dense_dim)
    return fail(l, EDDY_ERR_SHAPE, "batch dense_dim %u != model dense_dim %u", b->dense_dim, l->dense_dim);
  if (b->n > b->cap && b->cap)
    return fail(l, EDDY_ERR_SHAPE, "batch n %zu > cap %zu", b->n, b->cap);
  size_t nnz = b->sparse_off[b->n] - b->sparse_off[0];
  if (nnz && !l->emb_dim)
    return fail(l, EDDY_ERR_SHAPE, "batch has %zu sparse features but the model has no embedding (embed_dim 0)",
                nnz);
  for (size_t i = 0; i < b->n; i++) {
    if (b->sparse_off[i + 1] < b->sparse_off[i])
      return fail(l, EDDY_ERR_SHAPE, "batch sparse_off[%zu] decreases", i + 1);
  }
  for (size_t j = b->sparse_off[0]; j < b->sparse_off[b->n]; j++)
    if (b->sparse_idx[j] >= l->emb_rows)
      return fail(l, EDDY_ERR_SHAPE, "batch sparse index %u >= 2^%u buckets", b->sparse_idx[j],
                  l->spec.hash_bits);
  if (!labels) return EDDY_OK;
  for (size_t i = 0; i < b->n; i++) {
    float t = b->label[i], wt = b->weight[i];
    if (!isfinite(wt) || wt < 0)
      return fail(l, EDDY_ERR_INVALID_ARG, "example %zu: weight %g must be finite and >= 0", i, wt);
    bool bad = !isfinite(t);
    if (l->spec.head == EDDY_HEAD_LOGISTIC) bad = bad || t < 0 || t > 1;
    if (l->spec.head == EDDY_HEAD_SOFTMAX) bad = bad || t < 0 || t >= (float)l->outputs || t != floorf(t);
    if (bad)
      return fail(l, EDDY_ERR_INVALID_ARG, "example %zu: label %g out of range for the %s head", i, t,
                  eddy_head_name(l->spec.head));
  }
  return EDDY_OK;
}

/* Embedding-bag sums and dense features into act[0], then every layer; logits land in
 * act[n_layers]. Records each layer's GEMM input in xin[] for the backward pass. */
static eddy_err_t forward(eddy_learner_t *l, const eddy_batch_t *b) {
  const size_t n = b->n;
  const uint32_t E = l->emb_dim, D = l->dense_dim, in0 = l->in0;
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
  for (uint32_t i = 0; i < l->n_layers; i++) {
    const layer_t *ly = &l->layer[i];
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
static void head_predict(const eddy_learner_t *l, size_t n, float *pred) {
  const uint32_t O = l->outputs;
  const float *z = l->act[l->n_layers];
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
static double head_loss_grad(eddy_learner_t *l, const eddy_batch_t *b, float *pred, float factor) {
  const uint32_t O = l->outputs;
  const float *z = l->act[l->n_layers];
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

static eddy_err_t touch_row(eddy_learner_t *l, uint32_t row) {
  uint64_t bit = 1ull << (row & 63);
  if (l->mark[row >> 6] & bit) return EDDY_OK;
  if (l->n_touched == l->touched_cap) {
    size_t cap = l->touched_cap * 2;
    if (cap > l->emb_rows) cap = l->emb_rows;
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
static eddy_err_t backward(eddy_learner_t *l, const eddy_batch_t *b, float bscale) {
  const size_t n = b->n;
  const int32_t type = l->ops == OPS_BF16 ? EDDY_MM_BF16 : EDDY_MM_F32;
  const bool scaled = bscale != 1.0f;
  const bool fresh = !l->grad_live; /* first micro-batch since the step: overwrite, no zeroing pass */
  for (uint32_t i = l->n_layers; i-- > 0;) {
    const layer_t *ly = &l->layer[i];
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
    uint32_t need = i > 0 ? ly->in : l->emb_dim; /* layer 0 needs dX only for the embedding columns */
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
  if (!l->emb_dim) return EDDY_OK;
  const uint32_t E = l->emb_dim;
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

eddy_err_t eddy_learner_accumulate(eddy_learner_t *l, const eddy_batch_t *b, float *pred, double *loss_sum) {
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

eddy_err_t eddy_learner_predict(eddy_learner_t *l, const eddy_batch_t *b, float *pred) {
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
static void clear_gradients(eddy_learner_t *l) {
  for (size_t i = 0; i < l->n_touched; i++) {
    uint32_t row = l->touched[i];
    memset(l->g + (size_t)row * l->emb_dim, 0, l->emb_dim * sizeof(float));
    l->mark[row >> 6] = 0;
  }
  l->n_touched = 0;
  l->pending = 0;
  l->poisoned = false;
  l->grad_live = false;
}

eddy_err_t eddy_learner_step(eddy_learner_t *l, eddy_step_info_t *info) {
  eddy_step_info_t out = {.applied = false, .step = l->steps, .examples = l->pending,
                          .loss_scale = l->scaler.scale, .grad_norm = 0};
  if (l->pending == 0 && !l->poisoned) {
    if (info) *info = out;
    return EDDY_OK;
  }
  const uint32_t E = l->emb_dim;
  const double scale = l->scaler.scale;
  const double inv = 1.0 / ((double)(l->pending ? l->pending : 1) * scale);
  double sumsq = eddy_kernel_sumsq(l->g + l->dense_begin, l->total - l->dense_begin) +
                 eddy_kernel_sumsq_rows(l->g, l->touched, l->n_touched, E);
  bool nonfinite = !isfinite(sumsq);
  double norm = sqrt(sumsq) * inv;
  out.grad_norm = norm;
  if (!eddy_scaler_update(&l->scaler, nonfinite)) {
    EDDY_DEBUG("learner", "step skipped: non-finite gradients (loss scale now %g)", l->scaler.scale);
    clear_gradients(l);
    out.loss_scale = l->scaler.scale;
    if (info) *info = out;
    return EDDY_OK;
  }
  double coef = 1.0;
  if (l->opts.clip_norm > 0 && norm > l->opts.clip_norm) coef = l->opts.clip_norm / (norm + 1e-6);
  l->steps++;
  const eddy_train_opts_t *o = &l->opts;
  eddy_optim_step_t p = {.kind = o->optimizer, .lr = o->lr, .momentum = o->momentum, .beta1 = o->beta1,
                         .beta2 = o->beta2, .eps = o->eps, .weight_decay = o->weight_decay,
                         .step_size = o->lr, .bc2_sqrt = 1.0f, .gmul = (float)(inv * coef)};
  if (o->optimizer == EDDY_OPT_ADAM || o->optimizer == EDDY_OPT_ADAMW) {
    double t = (double)l->steps;
    p.step_size = (float)(o->lr / (1.0 - pow(o->beta1, t)));
    p.bc2_sqrt = (float)sqrt(1.0 - pow(o->beta2, t));
  }
  size_t db = l->dense_begin;
  eddy_kernel_optim(&p, l->w + db, l->g + db, l->s1 ? l->s1 + db : NULL, l->s2 ? l->s2 + db : NULL,
                    l->total - db);
  eddy_kernel_optim_rows(&p, l->w, l->g, l->s1, l->s2, l->touched, l->n_touched, E);
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

void eddy_learner_poison_gradients(eddy_learner_t *l, float value) {
  for (size_t t = 0; t < l->n_tensors; t++) {
    const eddy_tensor_info_t *ti = &l->tensors[t];
    if (ti->offset < l->dense_begin) continue;
    for (size_t i = 0; i < ti->numel; i++) l->g[ti->offset + i] = value;
  }
  l->grad_live = true;
  for (size_t i = 0; i < l->n_touched; i++) {
    float *row = l->g + (size_t)l->touched[i] * l->emb_dim;
    for (uint32_t k = 0; k < l->emb_dim; k++) row[k] = value;
  }
  l->poisoned = true;
}

/* ---- tensors ---- */

size_t eddy_learner_tensors(const eddy_learner_t *l, const eddy_tensor_info_t **tensors) {
  if (tensors) *tensors = l->tensors;
  return l->n_tensors;
}

static const eddy_tensor_info_t *find_tensor(const eddy_learner_t *l, const char *name) {
  for (size_t i = 0; name && i < l->n_tensors; i++)
    if (!strcmp(l->tensors[i].name, name)) return &l->tensors[i];
  return NULL;
}

eddy_err_t eddy_learner_export(eddy_learner_t *l, const char *name, float *dst, size_t numel) {
  const eddy_tensor_info_t *t = find_tensor(l, name);
  if (!t) return fail(l, EDDY_ERR_NOT_FOUND, "no tensor \"%s\"", name ? name : "(null)");
  if (numel != t->numel) return fail(l, EDDY_ERR_SHAPE, "tensor %s has %zu elements, not %zu", name, t->numel, numel);
  memcpy(dst, l->w + t->offset, numel * sizeof(float));
  return EDDY_OK;
}

eddy_err_t eddy_learner_import(eddy_learner_t *l, const char *name, const float *src, size_t numel) {
  const eddy_tensor_info_t *t = find_tensor(l, name);
  if (!t) return fail(l, EDDY_ERR_NOT_FOUND, "no tensor \"%s\"", name ? name : "(null)");
  if (numel != t->numel) return fail(l, EDDY_ERR_SHAPE, "tensor %s has %zu elements, not %zu", name, t->numel, numel);
  memcpy(l->w + t->offset, src, numel * sizeof(float));
  l->wop_valid = false;
  return EDDY_OK;
}

eddy_err_t eddy_learner_export_grad(eddy_learner_t *l, const char *name, float *dst, size_t numel) {
  const eddy_tensor_info_t *t = find_tensor(l, name);
  if (!t) return fail(l, EDDY_ERR_NOT_FOUND, "no tensor \"%s\"", name ? name : "(null)");
  if (numel != t->numel) return fail(l, EDDY_ERR_SHAPE, "tensor %s has %zu elements, not %zu", name, t->numel, numel);
  if (t->offset >= l->dense_begin && !l->grad_live) memset(dst, 0, numel * sizeof(float));
  else memcpy(dst, l->g + t->offset, numel * sizeof(float));
  return EDDY_OK;
}

/* ---- files ---- */

static eddy_err_t add_spec_meta(eddy_learner_t *l, eddy_st_writer_t *w, char *errstr, size_t errstr_size) {
  char *json = eddy_model_spec_to_json(&l->spec);
  if (!json) return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "model spec to JSON: out of memory");
  eddy_err_t err = eddy_st_writer_meta(w, "eddy.spec", json);
  free(json);
  if (err) return eddy_errf(err, errstr, errstr_size, "safetensors metadata eddy.spec: %s", eddy_err_str(err));
  return EDDY_OK;
}

eddy_err_t eddy_learner_save_weights(eddy_learner_t *l, const char *path, const char *dtype,
                                     const char *const *meta_kv, size_t meta_pairs, char *errstr,
                                     size_t errstr_size) {
  eddy_dtype_t dt;
  if (!dtype || eddy_dtype_parse(dtype, &dt) != 0 || (dt != EDDY_DT_F32 && dt != EDDY_DT_F16 && dt != EDDY_DT_BF16))
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "weights dtype \"%s\": must be F32, F16 or BF16",
                     dtype ? dtype : "(null)");
  eddy_st_writer_t *w = eddy_st_writer_new();
  if (!w) return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "safetensors writer: out of memory");
  eddy_err_t err = add_spec_meta(l, w, errstr, errstr_size);
  for (size_t i = 0; !err && i < meta_pairs; i++) {
    err = eddy_st_writer_meta(w, meta_kv[2 * i], meta_kv[2 * i + 1]);
    if (err) eddy_errf(err, errstr, errstr_size, "safetensors metadata \"%s\": %s", meta_kv[2 * i], eddy_err_str(err));
  }
  for (size_t i = 0; !err && i < l->n_tensors; i++) {
    const eddy_tensor_info_t *t = &l->tensors[i];
    err = eddy_st_writer_add_f32(w, t->name, dt, t->shape, t->ndim, l->w + t->offset);
    if (err) eddy_errf(err, errstr, errstr_size, "safetensors tensor %s: %s", t->name, eddy_err_str(err));
  }
  if (!err) err = eddy_st_writer_save(w, path, NULL, errstr, errstr_size);
  eddy_st_writer_destroy(w);
  return err;
}

typedef struct {
  const char *prefix;
  float *buf;
} state_part_t;

/* The optimizer state tensors this learner keeps, by name prefix. */
static size_t state_parts(const eddy_learner_t *l, state_part_t parts[2]) {
  size_t n = 0;
  if (l->s1) parts[n++] = (state_part_t){"opt.m.", l->s1};
  if (l->s2) parts[n++] = (state_part_t){l->opts.optimizer == EDDY_OPT_ADAGRAD ? "opt.sum." : "opt.v.", l->s2};
  return n;
}

eddy_err_t eddy_learner_save_state(eddy_learner_t *l, const char *path, char *errstr, size_t errstr_size) {
  if (l->pending || l->poisoned)
    return eddy_errf(EDDY_ERR_STATE, errstr, errstr_size,
                     "save_state with %llu accumulated examples pending: call eddy_learner_step first",
                     (unsigned long long)l->pending);
  eddy_st_writer_t *w = eddy_st_writer_new();
  if (!w) return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "safetensors writer: out of memory");
  eddy_err_t err = add_spec_meta(l, w, errstr, errstr_size);
  char value[160];
  struct {
    const char *key;
    const char *fmt;
  } meta[] = {{"eddy.format", STATE_FORMAT}, {"eddy.optimizer", NULL}, {"eddy.precision", NULL},
              {"eddy.step", NULL}, {"eddy.scaler.scale", NULL}, {"eddy.scaler.good_steps", NULL},
              {"eddy.scaler.skipped_steps", NULL}, {"eddy.rng", NULL}};
  for (size_t i = 0; !err && i < sizeof meta / sizeof meta[0]; i++) {
    switch (i) {
    case 0: snprintf(value, sizeof value, "%s", meta[i].fmt); break;
    case 1: snprintf(value, sizeof value, "%s", optim_name(l->opts.optimizer)); break;
    case 2: snprintf(value, sizeof value, "%s", precision_name(l->opts.precision)); break;
    case 3: snprintf(value, sizeof value, "%llu", (unsigned long long)l->steps); break;
    case 4: snprintf(value, sizeof value, "%a", (double)l->scaler.scale); break;
    case 5: snprintf(value, sizeof value, "%u", l->scaler.good_steps); break;
    case 6: snprintf(value, sizeof value, "%llu", (unsigned long long)l->scaler.skipped_steps); break;
    case 7:
      snprintf(value, sizeof value, "%016llx%016llx%016llx%016llx", (unsigned long long)l->rng[0],
               (unsigned long long)l->rng[1], (unsigned long long)l->rng[2], (unsigned long long)l->rng[3]);
      break;
    }
    err = eddy_st_writer_meta(w, meta[i].key, value);
    if (err) eddy_errf(err, errstr, errstr_size, "safetensors metadata %s: %s", meta[i].key, eddy_err_str(err));
  }
  state_part_t parts[2];
  size_t n_parts = state_parts(l, parts);
  char name[EDDY_TENSOR_NAME_MAX + 16];
  for (size_t i = 0; !err && i < l->n_tensors; i++) {
    const eddy_tensor_info_t *t = &l->tensors[i];
    err = eddy_st_writer_add_f32(w, t->name, EDDY_DT_F32, t->shape, t->ndim, l->w + t->offset);
    for (size_t p = 0; !err && p < n_parts; p++) {
      snprintf(name, sizeof name, "%s%s", parts[p].prefix, t->name);
      err = eddy_st_writer_add_f32(w, name, EDDY_DT_F32, t->shape, t->ndim, parts[p].buf + t->offset);
    }
    if (err) eddy_errf(err, errstr, errstr_size, "safetensors tensor %s: %s", t->name, eddy_err_str(err));
  }
  if (!err) err = eddy_st_writer_save(w, path, NULL, errstr, errstr_size);
  eddy_st_writer_destroy(w);
  return err;
}

static eddy_err_t parse_u64(const char *text, int base, uint64_t *out) {
  if (!text || !*text) return EDDY_ERR_FORMAT;
  char *end;
  unsigned long long v = strtoull(text, &end, base);
  if (*end) return EDDY_ERR_FORMAT;
  *out = v;
  return EDDY_OK;
}

static eddy_err_t check_state_tensor(const eddy_st_reader_t *r, const char *name, const eddy_tensor_info_t *t,
                                     const char *path, char *errstr, size_t errstr_size) {
  const eddy_st_tensor_t *st = eddy_st_find(r, name);
  if (!st) return eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "%s: tensor %s missing", path, name);
  bool same = st->dtype == EDDY_DT_F32 && st->ndim == t->ndim && st->shape[0] == t->shape[0] &&
              (t->ndim < 2 || st->shape[1] == t->shape[1]);
  if (!same)
    return eddy_errf(EDDY_ERR_SHAPE, errstr, errstr_size, "%s: tensor %s is not F32 of the model's shape", path, name);
  return EDDY_OK;
}

eddy_err_t eddy_learner_load_state(eddy_learner_t *l, const char *path, char *errstr, size_t errstr_size) {
  eddy_st_reader_t *r = eddy_st_open(path, 0, errstr, errstr_size);
  if (!r) return EDDY_ERR_FORMAT;
  eddy_err_t err = EDDY_OK;
  const char *format = eddy_st_meta(r, "eddy.format");
  const char *spec_json = eddy_st_meta(r, "eddy.spec");
  const char *optimizer = eddy_st_meta(r, "eddy.optimizer");
  char *mine = eddy_model_spec_to_json(&l->spec), *theirs = NULL;
  eddy_model_spec_t spec;
  if (!format || strcmp(format, STATE_FORMAT) != 0) {
    err = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "%s: not an eddy training state (eddy.format = %s)", path,
                    format ? format : "missing");
  } else if (!spec_json || eddy_model_spec_from_json(spec_json, &spec, errstr, errstr_size) != EDDY_OK) {
    err = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "%s: eddy.spec missing or invalid", path);
  } else if (!mine || !(theirs = eddy_model_spec_to_json(&spec)) || strcmp(mine, theirs) != 0) {
    err = eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "%s: saved for model %s, this learner is %s", path,
                    spec_json, mine ? mine : "?");
  } else if (!optimizer || strcmp(optimizer, optim_name(l->opts.optimizer)) != 0) {
    err = eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "%s: saved with optimizer %s, this learner uses %s", path,
                    optimizer ? optimizer : "(missing)", optim_name(l->opts.optimizer));
  }
  free(mine);
  free(theirs);
  uint64_t step = 0, good = 0, skipped = 0, rng[4] = {0};
  double scale = 0;
  const char *saved_prec = eddy_st_meta(r, "eddy.precision");
  bool saved_fp16 = saved_prec && !strcmp(saved_prec, "fp16");
  if (!err) {
    const char *s_step = eddy_st_meta(r, "eddy.step"), *s_scale = eddy_st_meta(r, "eddy.scaler.scale");
    const char *s_good = eddy_st_meta(r, "eddy.scaler.good_steps");
    const char *s_skip = eddy_st_meta(r, "eddy.scaler.skipped_steps"), *s_rng = eddy_st_meta(r, "eddy.rng");
    char *end = NULL;
    if (s_scale) scale = strtod(s_scale, &end);
    bool ok = parse_u64(s_step, 10, &step) == EDDY_OK && parse_u64(s_good, 10, &good) == EDDY_OK &&
              good <= UINT32_MAX && parse_u64(s_skip, 10, &skipped) == EDDY_OK && s_scale && end && !*end &&
              isfinite(scale) && scale > 0 && s_rng && strlen(s_rng) == 64;
    for (int i = 0; ok && i < 4; i++) {
      char word[17];
      memcpy(word, s_rng + 16 * i, 16);
      word[16] = 0;
      ok = parse_u64(word, 16, &rng[i]) == EDDY_OK;
    }
    if (!ok) err = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "%s: step, scaler or rng metadata invalid", path);
  }
  state_part_t parts[2];
  size_t n_parts = state_parts(l, parts);
  char name[EDDY_TENSOR_NAME_MAX + 16];
  size_t expected = l->n_tensors * (1 + n_parts);
  if (!err && eddy_st_count(r) != expected)
    err = eddy_errf(EDDY_ERR_STATE, errstr, errstr_size,
                    "%s: holds %zu tensors, this learner's state has %zu (different optimizer settings?)", path,
                    eddy_st_count(r), expected);
  for (size_t i = 0; !err && i < l->n_tensors; i++) {
    err = check_state_tensor(r, l->tensors[i].name, &l->tensors[i], path, errstr, errstr_size);
    for (size_t p = 0; !err && p < n_parts; p++) {
      snprintf(name, sizeof name, "%s%s", parts[p].prefix, l->tensors[i].name);
      err = check_state_tensor(r, name, &l->tensors[i], path, errstr, errstr_size);
    }
  }
  /* Everything checked: now overwrite the learner. */
  for (size_t i = 0; !err && i < l->n_tensors; i++) {
    const eddy_tensor_info_t *t = &l->tensors[i];
    err = eddy_st_read_f32(eddy_st_find(r, t->name), l->w + t->offset, t->numel);
    for (size_t p = 0; !err && p < n_parts; p++) {
      snprintf(name, sizeof name, "%s%s", parts[p].prefix, t->name);
      err = eddy_st_read_f32(eddy_st_find(r, name), parts[p].buf + t->offset, t->numel);
    }
    if (err) eddy_errf(err, errstr, errstr_size, "%s: reading tensor %s: %s", path, t->name, eddy_err_str(err));
  }
  eddy_st_close(r);
  if (err) return err;
  clear_gradients(l);
  /* The scale only means something between fp16 learners: others run at 1, and an fp16 learner
   * loading a file saved without loss scaling starts from its initial scale. */
  l->steps = step;
  l->scaler.scale = !l->scaler.opts.enabled ? 1.0f : saved_fp16 ? (float)scale : l->scaler.opts.init_scale;
  l->scaler.good_steps = saved_fp16 && l->scaler.opts.enabled ? (uint32_t)good : 0;
  l->scaler.skipped_steps = skipped;
  memcpy(l->rng, rng, sizeof rng);
  l->wop_valid = false;
  return EDDY_OK;
}
