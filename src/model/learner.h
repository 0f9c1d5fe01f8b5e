/* The learner API: backend-neutral. learner.c dispatches to the CPU backend (oneDNN,
 * learner_cpu.c) or to a registered one (the CUDA library's, src/cuda/cuda.h). A learner owns fp32
 * master weights in one flat buffer, the optimizer state, the loss scaler and a flat fp32 gradient
 * buffer that micro-batches accumulate into until eddy_learner_step(). Not thread-safe: one thread
 * drives a learner. */
#ifndef EDDY_LEARNER_H
#define EDDY_LEARNER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/collective.h"
#include "core/errors.h"
#include "model/batch.h"
#include "model/scaler.h"
#include "model/spec.h"

typedef enum { EDDY_PREC_FP32 = 0, EDDY_PREC_BF16, EDDY_PREC_FP16 } eddy_precision_t;
typedef enum { EDDY_OPT_SGD = 0, EDDY_OPT_ADAM, EDDY_OPT_ADAMW, EDDY_OPT_ADAGRAD } eddy_optim_t;

typedef struct {
  eddy_precision_t precision; /* GEMM operand precision; master weights and state are fp32 */
  eddy_optim_t optimizer;
  float lr;
  float momentum;      /* sgd */
  float beta1, beta2;  /* adam, adamw */
  float eps;           /* adam, adamw, adagrad */
  float weight_decay;  /* L2 added to the gradient (sgd, adam, adagrad) or decoupled (adamw) */
  float clip_norm;     /* global-norm clipping of the averaged gradient; 0 = off */
  uint64_t seed;       /* initialisation; same seed + same data = bit-identical weights */
  eddy_scaler_opts_t loss_scale; /* used when precision is fp16; fp32/bf16 run with scale 1 */
  int threads;         /* CPU threads for oneDNN and loops; 0 = 1 */
  bool allow_tf32;     /* CUDA fp32 GEMMs may use TF32 tensor cores (train.allow_tf32) */
} eddy_train_opts_t;

/* The ranges of the numeric training options (config keys train.*): the one place they are
 * written. The config loader checks its keys against them; eddy_train_opts_check() uses them too.
 * The loss-scaling options have theirs in eddy_scaler_limits. */
typedef struct {
  eddy_range_t lr, momentum, beta1, beta2, eps, weight_decay, clip_norm, threads;
} eddy_train_limits_t;

extern const eddy_train_limits_t eddy_train_limits;

/* The default options (configs/reference.ini documents them): adam, lr 0.001, fp32, seed 42. */
eddy_train_opts_t eddy_train_opts_defaults(void);

/* Checks o against eddy_train_limits, the known precisions and optimizers and, for fp16 with
 * dynamic scaling, eddy_scaler_opts_check(). EDDY_ERR_CONFIG with a message naming the key and
 * value ("train.lr = 0: must be > 0 and <= 1000"); eddy_learner_new() calls it. */
eddy_err_t eddy_train_opts_check(const eddy_train_opts_t *o, char *errstr, size_t errstr_size);

typedef struct eddy_learner eddy_learner_t;

/* A learner backend beyond the built-in CPU one (the table is in learner_backend.h). */
typedef struct eddy_learner_backend eddy_learner_backend_t;

/* Lets backend serve the device strings it names (e.g. the CUDA library's eddy_cuda_backend():
 * "cuda", "cuda:N", "cuda:all") in later eddy_learner_new calls. Call at start-up, before learners
 * are created on other threads. Registering a backend twice is a no-op; EDDY_ERR_TOO_LARGE beyond
 * 8 backends. */
eddy_err_t eddy_learner_register(const eddy_learner_backend_t *backend);

/* Creates a learner for spec on device ("cpu"; "cuda", "cuda:N", "cuda:all" once the CUDA backend
 * is registered: on a machine without a usable GPU it falls back to the CPU with one warning).
 * Weights are initialised from opts->seed (Kaiming-uniform like torch.nn.Linear, N(0, 0.01)
 * embeddings), identically on every backend. NULL + errstr on a bad spec, unknown device, or
 * backend failure. */
eddy_learner_t *eddy_learner_new(const eddy_model_spec_t *spec, const eddy_train_opts_t *opts,
                                 const char *device, char *errstr, size_t errstr_size);
void eddy_learner_destroy(eddy_learner_t *l);

const eddy_model_spec_t *eddy_learner_spec(const eddy_learner_t *l);
const char *eddy_learner_backend(const eddy_learner_t *l); /* "cpu", "cuda:0", ... */
/* How the configured precision actually runs here, e.g. "bf16 (oneDNN avx512_core_amx)" or
 * "bf16 (emulated: rounded operands, fp32 GEMM; CPU has no bf16 matmul)". */
const char *eddy_learner_precision_info(const eddy_learner_t *l);

/* Forward + backward of one micro-batch; gradients (times the loss scale) add into the gradient
 * buffer. pred (optional, n × outputs) receives this forward's predictions, made before any
 * update from this batch: probabilities for logistic/softmax, values for squared. loss_sum
 * (optional) receives the weighted sum of unscaled per-example losses. */
eddy_err_t eddy_learner_accumulate(eddy_learner_t *l, const eddy_batch_t *b, float *pred,
                                   double *loss_sum);

typedef struct {
  bool applied;        /* false when skipped for non-finite gradients or when nothing accumulated */
  uint64_t step;       /* optimizer steps applied so far */
  uint64_t examples;   /* examples in this step */
  float loss_scale;    /* scale after this step's update */
  double grad_norm;    /* global norm of the averaged, unscaled gradient (before clipping) */
  uint64_t exchanged_bytes; /* joined ranks: gradient bytes this rank summed with the others this
                               step (dense part and touched embedding rows); 0 alone */
  double exchange_seconds;  /* joined ranks: time the sums across ranks took, waits included */
} eddy_step_info_t;

/* Optimizer step over everything accumulated since the last step: the gradient is the weighted-sum
 * gradient divided by the number of accumulated examples (so k micro-batches of b equal one batch
 * of k×b), unscaled, checked for Inf/NaN (skip + backoff), clipped, applied. Clears gradients.
 * Joined to ranks (eddy_learner_join) it is collective: every rank calls it once per step, with or
 * without anything accumulated; the gradient sums (dense part and every embedding row any rank
 * touched), the example counts and so the Inf/NaN verdict are summed over the ranks first, so
 * that every rank applies the same update, or skips it, and R ranks equal one learner that
 * accumulated all their micro-batches, up to rounding. */
eddy_err_t eddy_learner_step(eddy_learner_t *l, eddy_step_info_t *info);

/* Joins the data-parallel ranks of coll (borrowed: it must outlive the learner or the next join;
 * NULL or one rank: alone again). Collective for backends that build their own communicator from
 * it (CUDA: NCCL, its id sent with coll's bcast). Joining does not copy weights: start every rank
 * from the same seed or call eddy_learner_sync_state. EDDY_ERR_UNSUPPORTED for a backend or device
 * that cannot (cuda:all: one GPU per rank), with the message in errstr. */
eddy_err_t eddy_learner_join(eddy_learner_t *l, const eddy_collective_t *coll, char *errstr, size_t errstr_size);

/* Copies rank root's whole training state (master weights, optimizer state, loss scaler, step
 * counter, rng) to every joined rank and drops what any rank had accumulated. Collective. */
eddy_err_t eddy_learner_sync_state(eddy_learner_t *l, int root, char *errstr, size_t errstr_size);

/* Inference only: pred is n × outputs. Does not touch gradients or state. */
eddy_err_t eddy_learner_predict(eddy_learner_t *l, const eddy_batch_t *b, float *pred);

/* Tensor table (names, shapes, offsets); valid for the learner's lifetime. */
size_t eddy_learner_tensors(const eddy_learner_t *l, const eddy_tensor_info_t **tensors);
/* Copies a master-weight tensor out / in by name; numel must match. */
eddy_err_t eddy_learner_export(eddy_learner_t *l, const char *name, float *dst, size_t numel);
eddy_err_t eddy_learner_import(eddy_learner_t *l, const char *name, const float *src, size_t numel);

/* Writes the weights as a safetensors file (dtype "F32" | "F16" | "BF16"), __metadata__ holding
 * the spec as JSON under "eddy.spec" plus extra metadata pairs (may be NULL). Atomic. */
eddy_err_t eddy_learner_save_weights(eddy_learner_t *l, const char *path, const char *dtype,
                                     const char *const *meta_kv, size_t meta_pairs, char *errstr,
                                     size_t errstr_size);

/* Full training state (master weights, optimizer state, scaler, step counters, rng) as
 * safetensors; load refuses a file whose spec or optimizer differs. After load, training continues
 * bit-identically to the learner that saved it. */
eddy_err_t eddy_learner_save_state(eddy_learner_t *l, const char *path, char *errstr,
                                   size_t errstr_size);
eddy_err_t eddy_learner_load_state(eddy_learner_t *l, const char *path, char *errstr,
                                   size_t errstr_size);

/* Message of the last failed call on this learner (names the oneDNN call and shape, or the bad
 * batch value); "" before any failure. Valid until the next call. */
const char *eddy_learner_last_error(const eddy_learner_t *l);

const eddy_scaler_t *eddy_learner_scaler(const eddy_learner_t *l);
uint64_t eddy_learner_step_count(const eddy_learner_t *l);

/* Fault injection for tests and chaos drills: sets every accumulated gradient to value (e.g.
 * INFINITY or NAN) so the next step exercises the skip path. */
void eddy_learner_poison_gradients(eddy_learner_t *l, float value);

#endif
