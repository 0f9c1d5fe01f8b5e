/* What every learner backend shares: training-option defaults, limits and checks, batch checks
 * against the spec, and the seeded weight initialisation (so the same seed gives the same initial
 * model on the CPU and on a GPU). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/rng.h"
#include "model/learner_backend.h"

static void init_uniform(uint64_t s[4], float *dst, size_t n, float bound) {
  for (size_t i = 0; i < n; i++) {
    float u = (float)(eddy_xoshiro_next(s) >> 40) * 0x1.0p-24f;
    dst[i] = bound * (2.0f * u - 1.0f);
  }
}

static void init_normal(uint64_t s[4], float *dst, size_t n, double stddev) {
  const double two_pi = 6.283185307179586;
  for (size_t i = 0; i < n; i += 2) {
    double u1 = ((double)(eddy_xoshiro_next(s) >> 11) + 1.0) * 0x1.0p-53;
    double u2 = (double)(eddy_xoshiro_next(s) >> 11) * 0x1.0p-53;
    double r = sqrt(-2.0 * log(u1)) * stddev;
    dst[i] = (float)(r * cos(two_pi * u2));
    if (i + 1 < n) dst[i + 1] = (float)(r * sin(two_pi * u2));
  }
}

void eddy_learner_init_weights(const eddy_model_spec_t *spec, uint64_t seed, float *w, uint64_t rng[4]) {
  eddy_tensor_info_t t[EDDY_MAX_TENSORS];
  size_t nt = eddy_model_layout(spec, t, NULL), k = 0;
  eddy_xoshiro_seed(rng, seed);
  if (spec->embed_dim) {
    init_normal(rng, w + t[0].offset, t[0].numel, 0.01);
    k = 1;
  }
  for (; k + 1 < nt; k += 2) { /* weight [out, in] then bias [out], layer by layer */
    float bound = 1.0f / sqrtf((float)t[k].shape[1]);
    init_uniform(rng, w + t[k].offset, t[k].numel, bound);
    init_uniform(rng, w + t[k + 1].offset, t[k + 1].numel, bound);
  }
}

const eddy_train_limits_t eddy_train_limits = {
    .lr = {0, 1000, EDDY_RANGE_OPEN_MIN},
    .momentum = {0, 1, EDDY_RANGE_OPEN_MAX},
    .beta1 = {0, 1, EDDY_RANGE_OPEN_MAX},
    .beta2 = {0, 1, EDDY_RANGE_OPEN_MAX},
    .eps = {0, 1, EDDY_RANGE_OPEN_MIN},
    .weight_decay = {0, 100, 0},
    .clip_norm = {0, 1e9, 0},
    .threads = {0, 1024, 0},
};

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
  o.allow_tf32 = false;
  return o;
}

eddy_err_t eddy_train_opts_check(const eddy_train_opts_t *o, char *errstr, size_t errstr_size) {
  if ((unsigned)o->precision > EDDY_PREC_FP16)
    return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "train.precision = %d: unknown", (int)o->precision);
  if ((unsigned)o->optimizer > EDDY_OPT_ADAGRAD)
    return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "train.optimizer = %d: unknown", (int)o->optimizer);
  const eddy_train_limits_t *lim = &eddy_train_limits;
  const eddy_bounded_t opts[] = {
      {"train.lr", o->lr, &lim->lr},
      {"train.momentum", o->momentum, &lim->momentum},
      {"train.beta1", o->beta1, &lim->beta1},
      {"train.beta2", o->beta2, &lim->beta2},
      {"train.eps", o->eps, &lim->eps},
      {"train.weight_decay", o->weight_decay, &lim->weight_decay},
      {"train.clip_norm", o->clip_norm, &lim->clip_norm},
      {"train.threads", o->threads, &lim->threads},
  };
  eddy_fault_t fault;
  if (eddy_range_check_all(opts, sizeof opts / sizeof opts[0], &fault) != EDDY_OK ||
      (o->precision == EDDY_PREC_FP16 && o->loss_scale.enabled &&
       eddy_scaler_opts_check(&o->loss_scale, &fault) != EDDY_OK))
    return eddy_fault_message(&fault, errstr, errstr_size);
  return EDDY_OK;
}

eddy_err_t eddy_learner_check_batch(const eddy_model_spec_t *spec, const eddy_batch_t *b, bool labels, char *errstr,
                                    size_t errstr_size) {
  const size_t emb_rows = spec->embed_dim ? (size_t)1 << spec->hash_bits : 0;
  const uint32_t outputs = eddy_model_outputs(spec);
  if (b->dense_dim != spec->dense_dim)
    return eddy_errf(EDDY_ERR_SHAPE, errstr, errstr_size, "batch dense_dim %u != model dense_dim %u", b->dense_dim,
                     spec->dense_dim);
  if (b->n > b->cap && b->cap)
    return eddy_errf(EDDY_ERR_SHAPE, errstr, errstr_size, "batch n %zu > cap %zu", b->n, b->cap);
  size_t nnz = b->sparse_off[b->n] - b->sparse_off[0];
  if (nnz && !spec->embed_dim)
    return eddy_errf(EDDY_ERR_SHAPE, errstr, errstr_size,
                     "batch has %zu sparse features but the model has no embedding (embed_dim 0)", nnz);
  for (size_t i = 0; i < b->n; i++) {
    if (b->sparse_off[i + 1] < b->sparse_off[i])
      return eddy_errf(EDDY_ERR_SHAPE, errstr, errstr_size, "batch sparse_off[%zu] decreases", i + 1);
  }
  for (size_t j = b->sparse_off[0]; j < b->sparse_off[b->n]; j++)
    if (b->sparse_idx[j] >= emb_rows)
      return eddy_errf(EDDY_ERR_SHAPE, errstr, errstr_size, "batch sparse index %u >= 2^%u buckets", b->sparse_idx[j],
                       spec->hash_bits);
  if (!labels) return EDDY_OK;
  for (size_t i = 0; i < b->n; i++) {
    float t = b->label[i], wt = b->weight[i];
    if (!isfinite(wt) || wt < 0)
      return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "example %zu: weight %g must be finite and >= 0", i,
                       wt);
    bool bad = !isfinite(t);
    if (spec->head == EDDY_HEAD_LOGISTIC) bad = bad || t < 0 || t > 1;
    if (spec->head == EDDY_HEAD_SOFTMAX) bad = bad || t < 0 || t >= (float)outputs || t != floorf(t);
    if (bad)
      return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "example %zu: label %g out of range for the %s head",
                       i, t, eddy_head_name(spec->head));
  }
  return EDDY_OK;
}

