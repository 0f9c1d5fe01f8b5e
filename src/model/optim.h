/* The optimizer arithmetic every learner backend shares, derived in one place: which state buffers
 * an optimizer keeps, the constants of step t (Adam's bias corrections), and the scalars of a step
 * (the gradient averaged over the examples and unscaled, its norm, the clip coefficient, the
 * Inf/NaN test). Header-only so that the CUDA kernels (src/cuda/kernels.cu) run the same formulas
 * as the CPU backend; the elementwise update rules stay in each backend's kernels. */
#ifndef EDDY_MODEL_OPTIM_H
#define EDDY_MODEL_OPTIM_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "model/learner.h"

/* Marks a function callable from CUDA device code as well as from the host. */
#if defined(__CUDACC__)
#define EDDY_HD __host__ __device__
#else
#define EDDY_HD
#endif

/* One optimizer step's constants, the same for the dense and the sparse (row) updates. */
typedef struct {
  eddy_optim_t kind;
  float lr, momentum, beta1, beta2, eps, weight_decay;
  float step_size; /* adam/adamw: lr / (1 - beta1^t); otherwise lr */
  float bc2_sqrt;  /* adam/adamw: sqrt(1 - beta2^t); otherwise 1 */
} eddy_optim_consts_t;

/* The per-element state o's optimizer keeps: *s1 = momentum buffer (sgd with momentum) or Adam's m,
 * *s2 = Adam's v or Adagrad's sum. */
static inline void eddy_optim_state(const eddy_train_opts_t *o, bool *s1, bool *s2) {
  *s1 = o->optimizer == EDDY_OPT_ADAM || o->optimizer == EDDY_OPT_ADAMW ||
        (o->optimizer == EDDY_OPT_SGD && o->momentum != 0.0f);
  *s2 = o->optimizer != EDDY_OPT_SGD;
}

/* The constants of applied step number t (1 for the first step). */
static inline eddy_optim_consts_t eddy_optim_consts(const eddy_train_opts_t *o, uint64_t t) {
  eddy_optim_consts_t c; /* field by field: this header is also C++ (CUDA) */
  c.kind = o->optimizer;
  c.lr = o->lr;
  c.momentum = o->momentum;
  c.beta1 = o->beta1;
  c.beta2 = o->beta2;
  c.eps = o->eps;
  c.weight_decay = o->weight_decay;
  c.step_size = o->lr;
  c.bc2_sqrt = 1.0f;
  if (o->optimizer == EDDY_OPT_ADAM || o->optimizer == EDDY_OPT_ADAMW) {
    c.step_size = (float)(o->lr / (1.0 - pow(o->beta1, (double)t)));
    c.bc2_sqrt = (float)sqrt(1.0 - pow(o->beta2, (double)t));
  }
  return c;
}

/* The scalars of one step over a gradient sum of `examples` examples (all devices together)
 * carrying loss scale `scale`, whose sum of squares is sumsq; clip_norm 0 = no clipping. */
typedef struct {
  bool nonfinite; /* sumsq is Inf or NaN: skip the step */
  double inv;     /* 1 / (examples × scale); examples 0 (poisoned, nothing accumulated) counts as 1 */
  double norm;    /* global norm of the averaged, unscaled gradient (before clipping) */
  float gmul;     /* multiplies each raw gradient: inv × clip coefficient */
} eddy_optim_scalars_t;

static inline EDDY_HD eddy_optim_scalars_t eddy_optim_step_scalars(uint64_t examples, double scale, double sumsq,
                                                                   float clip_norm) {
  eddy_optim_scalars_t s;
  s.inv = 1.0 / ((double)(examples ? examples : 1) * scale);
  s.nonfinite = !(sumsq - sumsq == 0.0); /* Inf or NaN (isfinite, also in device code) */
  s.norm = sqrt(sumsq) * s.inv;
  double coef = 1.0;
  if (clip_norm > 0 && s.norm > clip_norm) coef = clip_norm / (s.norm + 1e-6);
  s.gmul = (float)(s.inv * coef);
  return s;
}

#endif
