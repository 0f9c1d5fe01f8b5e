/* The CUDA learner backend: the CPU backend's model and semantics on one or several GPUs. Per
 * device: the flat fp32 master weights, a bf16/fp16 operand copy of the MLP weights that the
 * optimizer kernel refreshes, one flat fp32 gradient buffer that micro-batches accumulate into,
 * cuBLAS GEMMs (half operands, fp32 accumulate; fp32 mode is strict fp32 unless allow_tf32) and the
 * fused kernels of kernels.cu. Batches go through pinned, double-buffered staging on a copy stream;
 * the forward/backward of a repeated batch shape replays a captured CUDA graph. A step reads one
 * value back (the gradient's sum of squares: Inf/NaN means skip) and keeps the loss scaler on the
 * host with the CPU's code. cuda:all runs data parallel: each device takes a contiguous share of
 * every micro-batch and one NCCL all-reduce sums the gradients before the step. Joined to ranks
 * (eddy_learner_join: one GPU per process) a step first sums the counts and unites the touched rows
 * over the ranks on the host, then all-reduces the dense gradients and the packed rows on one NCCL
 * communicator across the ranks (its ncclUniqueId sent from rank 0 with the collective), or through
 * the host without NCCL. Every CUDA, cuBLAS and NCCL call is checked (check.h); errors come back as
 * EDDY_ERR_BACKEND with file:line:call. */
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "cuda/check.h"
#include "cuda/cuda.h"
#include "cuda/host.h"
#include "cuda/kernels.h"
#include "model/learner_backend.h"
#include "model/optim.h"

#define MAX_LAYERS (EDDY_MAX_HIDDEN + 1)
#define CUDA_MAX_BATCH ((size_t)1 << 20)
#define BLAS_WORKSPACE ((size_t)32 << 20)
#define STAGE_CHUNK ((size_t)2 << 20) /* dense bytes packed and copied at a time */
#define GRAPH_KIND_TRAIN 0

typedef eddy_layer_geometry_t layer_t;

typedef struct {
  int ordinal;
  cudaStream_t compute, copy;
  cublasHandle_t blas;
  void *blas_ws;
  float *w, *g, *s1, *s2; /* flat fp32 master weights, gradient sums, optimizer state */
  void *wh;               /* operand copy of [dense_begin, total); NULL in fp32 mode */
  float *scale;           /* the loss scale, read by the head kernel */
  double *stat, *part;    /* stat[0]: gradient sum of squares; part: its scratch */

  size_t cap_n;               /* examples the per-batch buffers hold */
  float *act[MAX_LAYERS + 1]; /* act[0] = MLP input, act[l+1] = layer l output (fp32) */
  void *acth[MAX_LAYERS];     /* operand copies of layer inputs (half modes) */
  float *dx, *dz32;           /* dX (fp32); dZ (fp32: head, and the operand in fp32 mode) */
  void *dzh;                  /* dZ operand (half modes) */
  float *colpart;             /* column-sum scratch */
  float *pred;
  double *loss;

  eddy_cuda_stage_t stage;
  unsigned char *stage_dev[2], *stage_host[2];
  cudaEvent_t copied[2], consumed[2];

  uint32_t *rows_dev; /* touched embedding rows of this step */
  float *rows_pack;   /* their gradients packed for the all-reduce */

  eddy_cuda_graph_cache_t graphs;
  uint32_t generation; /* bumped when the buffers a graph points at are reallocated */
#ifdef EDDY_NCCL
  ncclComm_t comm;
#endif
} replica_t;

typedef struct cuda_learner {
  eddy_model_spec_t spec;
  eddy_train_opts_t opts;
  eddy_model_geometry_t geo; /* layer widths, tensor offsets, the dense region */
  int op;         /* eddy_op_type_t of GEMM operands */
  size_t op_size; /* bytes per operand element */

  int n_dev;
  bool nccl; /* cuda:all: gradients all-reduced through NCCL */
  const eddy_collective_t *coll; /* data-parallel ranks (eddy_learner_join), one GPU each; NULL alone */
#ifdef EDDY_NCCL
  ncclComm_t xcomm; /* across the ranks: its ncclUniqueId comes from rank 0 over coll */
#endif
  float *xhost;     /* without NCCL: gradients staged on the host for coll's sum */
  size_t xhost_cap; /* floats */
  replica_t dev[EDDY_CUDA_MAX_DEVICES];
  bool use_graphs;
  bool graph_logged; /* the first capture is logged once */
  int slot; /* staging slot of the next micro-batch */

  eddy_cuda_rows_t rows;
  uint64_t pending;
  bool poisoned;
  eddy_scaler_t scaler;
  float device_scale; /* the scale last written to the devices */
  uint64_t steps;
  uint64_t rng[4];

  double *stat_host; /* pinned */
  float *pred_host;  /* pinned, host_cap × outputs */
  double *loss_host; /* pinned, host_cap */
  size_t host_cap;
  uint32_t *rows_host; /* pinned copy of the touched rows */
  size_t rows_host_cap; /* rows that rows_host and every replica's rows_dev (rows_pack) hold */
  float *view_w, *view_s1, *view_s2; /* host mirrors while a file view is out */

  unsigned fail_alloc_in; /* eddy_cuda_fail_alloc: the device allocation that fails (counts down) */
  char name[32];
  char info[256];
  char last_error[512];
} cuda_learner_t;

/* ---- devices ---- */

int eddy_cuda_device_count(char *why, size_t why_size) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    snprintf(why, why_size, "cudaGetDeviceCount: %s", cudaGetErrorString(e));
    return 0;
  }
  if (n <= 0) snprintf(why, why_size, "cudaGetDeviceCount found no device");
  return n > 0 ? n : 0;
}

static eddy_err_t cuda_device_check(const char *device, char *errstr, size_t errstr_size) {
  int index;
  bool all;
  return eddy_cuda_parse_device(device, &index, &all, errstr, errstr_size);
}

static eddy_err_t set_device(cuda_learner_t *l, const replica_t *r) {
  EDDY_CUDA_CHECK(l->last_error, cudaSetDevice(r->ordinal));
  return EDDY_OK;
}

static eddy_err_t sync_all(cuda_learner_t *l) {
  for (int d = 0; d < l->n_dev; d++) {
    replica_t *r = &l->dev[d];
    eddy_err_t err = set_device(l, r);
    if (err) return err;
    EDDY_CUDA_CHECK(l->last_error, cudaStreamSynchronize(r->copy));
    EDDY_CUDA_CHECK(l->last_error, cudaStreamSynchronize(r->compute));
  }
  return EDDY_OK;
}

static void *operand_of(const cuda_learner_t *l, const replica_t *r, size_t flat_off) {
  if (l->op == EDDY_OP_F32) return r->w + flat_off;
  return (char *)r->wh + (flat_off - l->geo.dense_begin) * l->op_size;
}

/* ---- allocation ---- */

static eddy_err_t dev_alloc(cuda_learner_t *l, void **p, size_t bytes) {
  if (l->fail_alloc_in && --l->fail_alloc_in == 0)
    return eddy_cuda_record(l->last_error, sizeof l->last_error, __FILE__, __LINE__, "cudaMalloc",
                            "out of memory (injected by eddy_cuda_fail_alloc)");
  EDDY_CUDA_CHECK(l->last_error, cudaMalloc(p, bytes ? bytes : 16));
  return EDDY_OK;
}

static eddy_err_t dev_zero(cuda_learner_t *l, replica_t *r, void *p, size_t bytes) {
  EDDY_CUDA_CHECK(l->last_error, cudaMemsetAsync(p, 0, bytes, r->compute));
  return EDDY_OK;
}

static void graphs_clear(replica_t *r) {
  for (size_t i = 0; i < EDDY_CUDA_GRAPH_CACHE; i++)
    if (r->graphs.e[i].exec) (void)cudaGraphExecDestroy((cudaGraphExec_t)r->graphs.e[i].exec);
  memset(&r->graphs, 0, sizeof r->graphs);
  r->generation++;
}

static void free_batch_buffers(replica_t *r) {
  for (int i = 0; i <= MAX_LAYERS; i++) {
    cudaFree(r->act[i]);
    r->act[i] = NULL;
  }
  for (int i = 0; i < MAX_LAYERS; i++) {
    cudaFree(r->acth[i]);
    r->acth[i] = NULL;
  }
  cudaFree(r->dx);
  cudaFree(r->dz32);
  cudaFree(r->dzh);
  cudaFree(r->colpart);
  cudaFree(r->pred);
  cudaFree(r->loss);
  r->dx = r->dz32 = r->colpart = r->pred = NULL;
  r->dzh = NULL;
  r->loss = NULL;
  for (int s = 0; s < 2; s++) {
    cudaFree(r->stage_dev[s]);
    cudaFreeHost(r->stage_host[s]);
    r->stage_dev[s] = r->stage_host[s] = NULL;
  }
  r->cap_n = 0;
  memset(&r->stage, 0, sizeof r->stage);
}

static size_t pow2_at_least(size_t n, size_t lo) {
  size_t c = lo;
  while (c < n)
    c *= 2;
  return c;
}

/* Grows replica r's per-batch buffers for n examples with nnz sparse entries (never shrinks).
 * Reallocation waits for the device, and drops the graphs that point at the old buffers. */
static eddy_err_t reserve_batch(cuda_learner_t *l, replica_t *r, size_t n, size_t nnz) {
  if (n <= r->cap_n && nnz <= r->stage.cap_nnz) return EDDY_OK;
  if (n > CUDA_MAX_BATCH) {
    snprintf(l->last_error, sizeof l->last_error, "batch of %zu examples: too large (at most %zu)", n, CUDA_MAX_BATCH);
    return EDDY_ERR_TOO_LARGE;
  }
  eddy_err_t err = set_device(l, r);
  if (err) return err;
  EDDY_CUDA_CHECK(l->last_error, cudaStreamSynchronize(r->copy));
  EDDY_CUDA_CHECK(l->last_error, cudaStreamSynchronize(r->compute));
  size_t cap = pow2_at_least(n > r->cap_n ? n : r->cap_n, 16);
  size_t cap_nnz = pow2_at_least(nnz > r->stage.cap_nnz ? nnz : r->stage.cap_nnz, 64);
  graphs_clear(r);
  free_batch_buffers(r);
  const size_t f = sizeof(float);
  err = dev_alloc(l, (void **)&r->act[0], cap * l->geo.in0 * f);
  for (uint32_t i = 0; !err && i < l->geo.n_layers; i++) {
    err = dev_alloc(l, (void **)&r->act[i + 1], cap * l->geo.layer[i].out * f);
    if (!err && l->op != EDDY_OP_F32) err = dev_alloc(l, &r->acth[i], cap * l->geo.layer[i].in * l->op_size);
  }
  if (!err) err = dev_alloc(l, (void **)&r->dx, cap * l->geo.max_width * f);
  if (!err) err = dev_alloc(l, (void **)&r->dz32, cap * l->geo.max_width * f);
  if (!err && l->op != EDDY_OP_F32) err = dev_alloc(l, &r->dzh, cap * l->geo.max_width * l->op_size);
  if (!err) err = dev_alloc(l, (void **)&r->colpart, eddy_k_colsum_scratch((int)l->geo.max_width) * f);
  if (!err) err = dev_alloc(l, (void **)&r->pred, cap * l->geo.outputs * f);
  if (!err) err = dev_alloc(l, (void **)&r->loss, cap * sizeof(double));
  if (err) {
    free_batch_buffers(r);
    return err;
  }
  eddy_cuda_stage_layout(&r->stage, cap, cap_nnz, l->geo.dense_dim);
  for (int s = 0; s < 2; s++) {
    EDDY_CUDA_CHECK(l->last_error, cudaMalloc((void **)&r->stage_dev[s], r->stage.bytes));
    EDDY_CUDA_CHECK(l->last_error, cudaHostAlloc((void **)&r->stage_host[s], r->stage.bytes, cudaHostAllocPortable));
  }
  r->cap_n = cap;
  return EDDY_OK;
}

/* Pinned host buffers for predictions and losses of n examples. */
static eddy_err_t reserve_host(cuda_learner_t *l, size_t n) {
  if (n <= l->host_cap) return EDDY_OK;
  eddy_err_t err = sync_all(l);
  if (err) return err;
  size_t cap = pow2_at_least(n, 16);
  cudaFreeHost(l->pred_host);
  cudaFreeHost(l->loss_host);
  l->pred_host = NULL;
  l->loss_host = NULL;
  l->host_cap = 0;
  EDDY_CUDA_CHECK(l->last_error,
                  cudaHostAlloc((void **)&l->pred_host, cap * l->geo.outputs * sizeof(float), cudaHostAllocPortable));
  EDDY_CUDA_CHECK(l->last_error, cudaHostAlloc((void **)&l->loss_host, cap * sizeof(double), cudaHostAllocPortable));
  l->host_cap = cap;
  return EDDY_OK;
}

/* Device (and pinned) room for n touched rows on every replica. The capacity is recorded only once
 * every buffer exists: after a failure (out of memory) nothing claims room that is not there, and
 * the next step tries again. */
static eddy_err_t reserve_rows(cuda_learner_t *l, size_t n) {
  if (n <= l->rows_host_cap) return EDDY_OK;
  eddy_err_t err = sync_all(l);
  if (err) return err;
  const size_t cap = pow2_at_least(n, 1024);
  l->rows_host_cap = 0;
  cudaFreeHost(l->rows_host);
  l->rows_host = NULL;
  for (int d = 0; d < l->n_dev; d++) {
    replica_t *r = &l->dev[d];
    if ((err = set_device(l, r))) return err;
    cudaFree(r->rows_dev);
    cudaFree(r->rows_pack);
    r->rows_dev = NULL;
    r->rows_pack = NULL;
  }
  EDDY_CUDA_CHECK(l->last_error, cudaHostAlloc((void **)&l->rows_host, cap * sizeof(uint32_t), cudaHostAllocPortable));
  for (int d = 0; d < l->n_dev; d++) {
    replica_t *r = &l->dev[d];
    if ((err = set_device(l, r))) return err;
    if ((err = dev_alloc(l, (void **)&r->rows_dev, cap * sizeof(uint32_t)))) return err;
    if ((l->nccl || l->coll) && (err = dev_alloc(l, (void **)&r->rows_pack, cap * l->geo.emb_dim * sizeof(float))))
      return err;
  }
  l->rows_host_cap = cap;
  return EDDY_OK;
}

/* Copies the touched-row list to every replica (on its compute stream). */
static eddy_err_t upload_rows(cuda_learner_t *l) {
  const size_t n = l->rows.n;
  if (!n) return EDDY_OK;
  eddy_err_t err = reserve_rows(l, n);
  if (err) return err;
  memcpy(l->rows_host, l->rows.rows, n * sizeof(uint32_t));
  for (int d = 0; d < l->n_dev; d++) {
    replica_t *r = &l->dev[d];
    if ((err = set_device(l, r))) return err;
    EDDY_CUDA_CHECK(l->last_error, cudaMemcpyAsync(r->rows_dev, l->rows_host, n * sizeof(uint32_t),
                                                   cudaMemcpyHostToDevice, r->compute));
  }
  return EDDY_OK;
}

static eddy_err_t upload_scale(cuda_learner_t *l) {
  if (l->device_scale == l->scaler.scale) return EDDY_OK;
  const float scale = l->scaler.scale;
  for (int d = 0; d < l->n_dev; d++) {
    replica_t *r = &l->dev[d];
    eddy_err_t err = set_device(l, r);
    if (err) return err;
    EDDY_CUDA_CHECK(l->last_error, cudaMemcpyAsync(r->scale, &scale, sizeof scale, cudaMemcpyHostToDevice, r->compute));
    EDDY_CUDA_CHECK(l->last_error, cudaStreamSynchronize(r->compute));
  }
  l->device_scale = scale;
  return EDDY_OK;
}

/* Operand copy of the MLP weights from the master weights, on every replica. */
static eddy_err_t refresh_operands(cuda_learner_t *l) {
  if (l->op == EDDY_OP_F32) return EDDY_OK;
  for (int d = 0; d < l->n_dev; d++) {
    replica_t *r = &l->dev[d];
    eddy_err_t err = set_device(l, r);
    if (err) return err;
    EDDY_CUDA_CHECK(l->last_error, eddy_k_to_op(r->compute, l->op, l->geo.total - l->geo.dense_begin,
                                                r->w + l->geo.dense_begin, r->wh));
  }
  return EDDY_OK;
}

/* Zeroes every gradient and forgets what was accumulated. */
static eddy_err_t clear_gradients(cuda_learner_t *l) {
  for (int d = 0; d < l->n_dev; d++) {
    replica_t *r = &l->dev[d];
    eddy_err_t err = set_device(l, r);
    if (!err) err = dev_zero(l, r, r->g, l->geo.total * sizeof(float));
    if (err) return err;
  }
  eddy_cuda_rows_clear(&l->rows);
  l->pending = 0;
  l->poisoned = false;
  return EDDY_OK;
}

/* After a failed step or micro-batch: the partial sums are useless, so every gradient is dropped;
 * the failure's message stays in last_error. Returns err. */
static eddy_err_t drop_gradients(cuda_learner_t *l, eddy_err_t err) {
  char saved[sizeof l->last_error];
  memcpy(saved, l->last_error, sizeof saved);
  (void)clear_gradients(l);
  memcpy(l->last_error, saved, sizeof saved);
  return err;
}

/* ---- construction ---- */

static eddy_err_t setup_replica(cuda_learner_t *l, replica_t *r, const float *w0) {
  eddy_err_t err = set_device(l, r);
  if (err) return err;
  EDDY_CUDA_CHECK(l->last_error, cudaStreamCreateWithFlags(&r->compute, cudaStreamNonBlocking));
  EDDY_CUDA_CHECK(l->last_error, cudaStreamCreateWithFlags(&r->copy, cudaStreamNonBlocking));
  for (int s = 0; s < 2; s++) {
    EDDY_CUDA_CHECK(l->last_error, cudaEventCreateWithFlags(&r->copied[s], cudaEventDisableTiming));
    EDDY_CUDA_CHECK(l->last_error, cudaEventCreateWithFlags(&r->consumed[s], cudaEventDisableTiming));
  }
  EDDY_CUBLAS_CHECK(l->last_error, cublasCreate(&r->blas));
  EDDY_CUBLAS_CHECK(l->last_error, cublasSetStream(r->blas, r->compute));
  /* After cublasSetStream (which resets it): our own workspace, so capture allocates nothing. */
  if ((err = dev_alloc(l, &r->blas_ws, BLAS_WORKSPACE))) return err;
  EDDY_CUBLAS_CHECK(l->last_error, cublasSetWorkspace(r->blas, r->blas_ws, BLAS_WORKSPACE));
  const size_t bytes = l->geo.total * sizeof(float);
  bool need_s1, need_s2;
  eddy_optim_state(&l->opts, &need_s1, &need_s2);
  if ((err = dev_alloc(l, (void **)&r->w, bytes))) return err;
  if ((err = dev_alloc(l, (void **)&r->g, bytes))) return err;
  if ((err = dev_zero(l, r, r->g, bytes))) return err;
  if (need_s1 && ((err = dev_alloc(l, (void **)&r->s1, bytes)) || (err = dev_zero(l, r, r->s1, bytes)))) return err;
  if (need_s2 && ((err = dev_alloc(l, (void **)&r->s2, bytes)) || (err = dev_zero(l, r, r->s2, bytes)))) return err;
  if (l->op != EDDY_OP_F32 && (err = dev_alloc(l, &r->wh, (l->geo.total - l->geo.dense_begin) * l->op_size)))
    return err;
  if ((err = dev_alloc(l, (void **)&r->scale, sizeof(float)))) return err;
  if ((err = dev_alloc(l, (void **)&r->stat, sizeof(double)))) return err;
  if ((err = dev_alloc(l, (void **)&r->part, EDDY_K_SUMSQ_BLOCKS * sizeof(double)))) return err;
  EDDY_CUDA_CHECK(l->last_error, cudaMemcpyAsync(r->w, w0, bytes, cudaMemcpyHostToDevice, r->compute));
  const float scale = l->scaler.scale;
  EDDY_CUDA_CHECK(l->last_error, cudaMemcpyAsync(r->scale, &scale, sizeof scale, cudaMemcpyHostToDevice, r->compute));
  EDDY_CUDA_CHECK(l->last_error, cudaStreamSynchronize(r->compute));
  return EDDY_OK;
}

static void cuda_destroy(void *impl);

static eddy_err_t setup(cuda_learner_t *l, const char *device) {
  int index = 0;
  bool all = false;
  eddy_err_t err = eddy_cuda_parse_device(device, &index, &all, l->last_error, sizeof l->last_error);
  if (err) return err;
  int count = 0;
  EDDY_CUDA_CHECK(l->last_error, cudaGetDeviceCount(&count));
  if (!all && index >= count) {
    snprintf(l->last_error, sizeof l->last_error, "device \"%s\": this machine has %d CUDA device%s", device, count,
             count == 1 ? "" : "s");
    return EDDY_ERR_INVALID_ARG;
  }
  l->n_dev = all ? (count < EDDY_CUDA_MAX_DEVICES ? count : EDDY_CUDA_MAX_DEVICES) : 1;
  for (int d = 0; d < l->n_dev; d++)
    l->dev[d].ordinal = all ? d : index;
#ifdef EDDY_NCCL
  l->nccl = all;
#else
  if (all && l->n_dev > 1) {
    EDDY_WARN("cuda", "device \"%s\": built without NCCL (EDDY_NCCL=OFF); training on cuda:0 only", device);
    l->n_dev = 1;
  }
#endif
  if (all)
    snprintf(l->name, sizeof l->name, "cuda:all(%d)", l->n_dev);
  else
    snprintf(l->name, sizeof l->name, "cuda:%d", index);

  struct cudaDeviceProp prop;
  EDDY_CUDA_CHECK(l->last_error, cudaGetDeviceProperties(&prop, l->dev[0].ordinal));
  const char *what = l->opts.precision == EDDY_PREC_BF16 ? "bf16 (cuBLAS bf16 GEMMs, fp32 accumulate"
                     : l->opts.precision == EDDY_PREC_FP16
                         ? "fp16 (cuBLAS fp16 GEMMs, fp32 accumulate, dynamic loss scaling"
                     : l->opts.allow_tf32 ? "fp32 (cuBLAS, TF32 tensor cores allowed"
                                          : "fp32 (cuBLAS strict fp32";
  snprintf(l->info, sizeof l->info, "%s; %.96s, sm_%d%d%s)", what, prop.name, prop.major, prop.minor,
           l->n_dev > 1 ? ", data parallel over NCCL" : "");

  float *w0 = calloc(l->geo.total ? l->geo.total : 1, sizeof(float));
  if (!w0) {
    snprintf(l->last_error, sizeof l->last_error, "out of memory for %zu initial weights", l->geo.total);
    return EDDY_ERR_NOMEM;
  }
  eddy_learner_init_weights(&l->spec, l->opts.seed, w0, l->rng);
  for (int d = 0; !err && d < l->n_dev; d++)
    err = setup_replica(l, &l->dev[d], w0);
  free(w0);
  if (err) return err;
  l->device_scale = l->scaler.scale;
  if ((err = refresh_operands(l))) return err;
#ifdef EDDY_NCCL
  if (l->nccl) {
    ncclComm_t comms[EDDY_CUDA_MAX_DEVICES];
    int ords[EDDY_CUDA_MAX_DEVICES];
    for (int d = 0; d < l->n_dev; d++)
      ords[d] = l->dev[d].ordinal;
    EDDY_NCCL_CHECK(l->last_error, ncclCommInitAll(comms, l->n_dev, ords));
    for (int d = 0; d < l->n_dev; d++)
      l->dev[d].comm = comms[d];
  }
#endif
  if ((err = eddy_cuda_rows_init(&l->rows, l->geo.emb_rows))) {
    snprintf(l->last_error, sizeof l->last_error, "out of memory for the touched-row set of %zu rows", l->geo.emb_rows);
    return err;
  }
  EDDY_CUDA_CHECK(l->last_error, cudaHostAlloc((void **)&l->stat_host, sizeof(double), cudaHostAllocPortable));
  return sync_all(l);
}

static void *cuda_create(const eddy_model_spec_t *spec, const eddy_train_opts_t *opts, const char *device, char *errstr,
                         size_t errstr_size) {
  cuda_learner_t *l = calloc(1, sizeof *l);
  if (!l) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "learner: out of memory");
    return NULL;
  }
  l->spec = *spec;
  l->opts = *opts;
  eddy_model_geometry(spec, &l->geo);
  l->op = opts->precision == EDDY_PREC_BF16   ? EDDY_OP_BF16
          : opts->precision == EDDY_PREC_FP16 ? EDDY_OP_F16
                                              : EDDY_OP_F32;
  l->op_size = l->op == EDDY_OP_F32 ? sizeof(float) : sizeof(uint16_t);
  eddy_scaler_opts_t so = opts->loss_scale;
  if (opts->precision != EDDY_PREC_FP16) so.enabled = false;
  eddy_scaler_init(&l->scaler, &so);
  const char *graphs = getenv("EDDY_CUDA_GRAPHS");
  l->use_graphs = !(graphs && !strcmp(graphs, "0"));
  eddy_err_t err = setup(l, device);
  if (err) {
    eddy_errf(err, errstr, errstr_size, "CUDA learner on \"%s\": %s", device, l->last_error);
    cuda_destroy(l);
    return NULL;
  }
  EDDY_INFO("cuda", "learner on %s: %s%s", l->name, l->info, l->use_graphs ? "" : " (CUDA graphs off)");
  return l;
}

static void cuda_destroy(void *impl) {
  cuda_learner_t *l = impl;
  if (!l) return;
  for (int d = 0; d < l->n_dev; d++) {
    replica_t *r = &l->dev[d];
    if (cudaSetDevice(r->ordinal) != cudaSuccess) continue;
    if (r->compute) (void)cudaStreamSynchronize(r->compute);
    if (r->copy) (void)cudaStreamSynchronize(r->copy);
    graphs_clear(r);
    free_batch_buffers(r);
#ifdef EDDY_NCCL
    if (r->comm) (void)ncclCommDestroy(r->comm);
#endif
    if (r->blas) (void)cublasDestroy(r->blas);
    cudaFree(r->blas_ws);
    cudaFree(r->w);
    cudaFree(r->g);
    cudaFree(r->s1);
    cudaFree(r->s2);
    cudaFree(r->wh);
    cudaFree(r->scale);
    cudaFree(r->stat);
    cudaFree(r->part);
    cudaFree(r->rows_dev);
    cudaFree(r->rows_pack);
    for (int s = 0; s < 2; s++) {
      if (r->copied[s]) (void)cudaEventDestroy(r->copied[s]);
      if (r->consumed[s]) (void)cudaEventDestroy(r->consumed[s]);
    }
    if (r->compute) (void)cudaStreamDestroy(r->compute);
    if (r->copy) (void)cudaStreamDestroy(r->copy);
  }
  cudaFreeHost(l->stat_host);
  cudaFreeHost(l->pred_host);
  cudaFreeHost(l->loss_host);
  cudaFreeHost(l->rows_host);
#ifdef EDDY_NCCL
  if (l->xcomm) (void)ncclCommDestroy(l->xcomm);
#endif
  free(l->xhost);
  free(l->view_w);
  free(l->view_s1);
  free(l->view_s2);
  eddy_cuda_rows_free(&l->rows);
  (void)cudaGetLastError();
  free(l);
}

static const char *cuda_backend(const void *impl) { return ((const cuda_learner_t *)impl)->name; }
static const char *cuda_precision_info(const void *impl) { return ((const cuda_learner_t *)impl)->info; }
static const char *cuda_last_error(const void *impl) { return ((const cuda_learner_t *)impl)->last_error; }
static const eddy_scaler_t *cuda_scaler(const void *impl) { return &((const cuda_learner_t *)impl)->scaler; }
static uint64_t cuda_step_count(const void *impl) { return ((const cuda_learner_t *)impl)->steps; }

/* ---- forward / backward ---- */

/* C[m, n] (column-major) = alpha op(A) op(B) + beta C with operands of the learner's type and fp32 C. */
static eddy_err_t gemm(cuda_learner_t *l, replica_t *r, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                       float alpha, const void *a, int lda, const void *b, int ldb, float beta, float *c, int ldc) {
  const cudaDataType_t type = l->op == EDDY_OP_BF16 ? CUDA_R_16BF : l->op == EDDY_OP_F16 ? CUDA_R_16F : CUDA_R_32F;
  const cublasComputeType_t compute =
      l->op == EDDY_OP_F32 && l->opts.allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  cublasStatus_t st = cublasGemmEx(r->blas, ta, tb, m, n, k, &alpha, a, type, lda, b, type, ldb, &beta, c, CUDA_R_32F,
                                   ldc, compute, CUBLAS_GEMM_DEFAULT);
  if (st != CUBLAS_STATUS_SUCCESS) {
    char call[160];
    snprintf(call, sizeof call, "cublasGemmEx(%s%s m=%d n=%d k=%d)", ta == CUBLAS_OP_T ? "T" : "N",
             tb == CUBLAS_OP_T ? "T" : "N", m, n, k);
    return eddy_cuda_record(l->last_error, sizeof l->last_error, __FILE__, __LINE__, call, cublasGetStatusString(st));
  }
  return EDDY_OK;
}

typedef struct {
  const uint32_t *csr, *idx;
  const float *val, *dense, *label, *weight;
} staged_t;

static staged_t staged(const replica_t *r, int slot) {
  const unsigned char *base = r->stage_dev[slot];
  const size_t *off = r->stage.offset;
  staged_t s = {(const uint32_t *)(base + off[EDDY_STAGE_CSR]), (const uint32_t *)(base + off[EDDY_STAGE_IDX]),
                (const float *)(base + off[EDDY_STAGE_VAL]),    (const float *)(base + off[EDDY_STAGE_DENSE]),
                (const float *)(base + off[EDDY_STAGE_LABEL]),  (const float *)(base + off[EDDY_STAGE_WEIGHT])};
  return s;
}

/* Enqueues the forward pass of n staged examples; with train, also the loss gradient. */
static eddy_err_t enqueue_forward(cuda_learner_t *l, replica_t *r, int slot, int n, bool train) {
  const staged_t in = staged(r, slot);
  const bool half = l->op != EDDY_OP_F32;
  EDDY_CUDA_CHECK(l->last_error,
                  eddy_k_embed_bag(r->compute, l->op, n, (int)l->geo.emb_dim, (int)l->geo.dense_dim, in.csr, in.idx,
                                   in.val, r->w, in.dense, r->act[0], half ? r->acth[0] : NULL));
  for (uint32_t i = 0; i < l->geo.n_layers; i++) {
    const layer_t *ly = &l->geo.layer[i];
    const void *x = half ? r->acth[i] : (const void *)r->act[i];
    eddy_err_t err = gemm(l, r, CUBLAS_OP_T, CUBLAS_OP_N, (int)ly->out, n, (int)ly->in, 1.0f,
                          operand_of(l, r, ly->w_off), (int)ly->in, x, (int)ly->in, 0.0f, r->act[i + 1], (int)ly->out);
    if (err) return err;
    void *next = half && i + 1 < l->geo.n_layers ? r->acth[i + 1] : NULL;
    EDDY_CUDA_CHECK(l->last_error, eddy_k_bias_act(r->compute, l->op, n, (int)ly->out, r->act[i + 1], r->w + ly->b_off,
                                                   ly->relu, next));
  }
  const int scaled = l->opts.precision == EDDY_PREC_FP16;
  EDDY_CUDA_CHECK(l->last_error, eddy_k_head(r->compute, l->op, (int)l->spec.head, n, (int)l->geo.outputs,
                                             r->act[l->geo.n_layers], train ? in.label : NULL, in.weight, r->scale,
                                             scaled, r->dz32, half ? r->dzh : NULL, r->pred, r->loss));
  return EDDY_OK;
}

/* Enqueues the backward pass from the loss gradient into the gradient sums. fp16: the head scaled
 * each example's gradient by scale / n; bscale = n restores sum_i w_i × scale × dloss_i. */
static eddy_err_t enqueue_backward(cuda_learner_t *l, replica_t *r, int slot, int n) {
  const staged_t in = staged(r, slot);
  const bool half = l->op != EDDY_OP_F32;
  const float bscale = l->opts.precision == EDDY_PREC_FP16 ? (float)n : 1.0f;
  void *dz = half ? r->dzh : (void *)r->dz32;
  const layer_t *head = &l->geo.layer[l->geo.n_layers - 1];
  EDDY_CUDA_CHECK(l->last_error, eddy_k_relu_bwd_colsum(r->compute, l->op, n, (int)head->out, r->dz32, NULL, NULL,
                                                        r->colpart, bscale, r->g + head->b_off));
  for (uint32_t i = l->geo.n_layers; i-- > 0;) {
    const layer_t *ly = &l->geo.layer[i];
    const void *x = half ? r->acth[i] : (const void *)r->act[i];
    /* dW^T [in, out] += bscale × X^T [in, n] × dZ [n, out] */
    eddy_err_t err = gemm(l, r, CUBLAS_OP_N, CUBLAS_OP_T, (int)ly->in, (int)ly->out, n, bscale, x, (int)ly->in, dz,
                          (int)ly->out, 1.0f, r->g + ly->w_off, (int)ly->in);
    if (err) return err;
    const uint32_t need = i > 0 ? ly->in : l->geo.emb_dim; /* layer 0: dX only for the embedding columns */
    if (!need) continue;
    /* dX^T [need, n] = W^T [need of in, out] × dZ^T [out, n] */
    err = gemm(l, r, CUBLAS_OP_N, CUBLAS_OP_N, (int)need, n, (int)ly->out, 1.0f, operand_of(l, r, ly->w_off),
               (int)ly->in, dz, (int)ly->out, 0.0f, r->dx, (int)need);
    if (err) return err;
    if (i > 0)
      EDDY_CUDA_CHECK(l->last_error, eddy_k_relu_bwd_colsum(r->compute, l->op, n, (int)ly->in, r->dx, r->act[i], dz,
                                                            r->colpart, bscale, r->g + l->geo.layer[i - 1].b_off));
  }
  if (l->geo.emb_dim)
    EDDY_CUDA_CHECK(l->last_error, eddy_k_embed_bag_bwd(r->compute, n, (int)l->geo.emb_dim, in.csr, in.idx, in.val,
                                                        bscale, r->dx, r->g));
  return EDDY_OK;
}

static eddy_err_t enqueue_train(cuda_learner_t *l, replica_t *r, int slot, int n) {
  eddy_err_t err = enqueue_forward(l, r, slot, n, true);
  return err ? err : enqueue_backward(l, r, slot, n);
}

/* Forward + backward of the staged micro-batch: eagerly the first time a shape is seen, captured
 * into a CUDA graph the second time, replayed after that. A failed capture falls back to eager
 * launches for that shape, with a warning. */
static eddy_err_t run_train(cuda_learner_t *l, replica_t *r, int slot, int n) {
  if (!l->use_graphs) return enqueue_train(l, r, slot, n);
  void *evicted = NULL;
  eddy_cuda_graph_entry_t *e = eddy_cuda_graph_lookup(
      &r->graphs, eddy_cuda_graph_key((size_t)n, slot, GRAPH_KIND_TRAIN, r->generation), &evicted);
  if (evicted) EDDY_CUDA_CHECK(l->last_error, cudaGraphExecDestroy((cudaGraphExec_t)evicted));
  switch (eddy_cuda_graph_action(e)) {
  case EDDY_GRAPH_EAGER: return enqueue_train(l, r, slot, n);
  case EDDY_GRAPH_CAPTURE: {
    EDDY_CUDA_CHECK(l->last_error, cudaStreamBeginCapture(r->compute, cudaStreamCaptureModeThreadLocal));
    eddy_err_t err = enqueue_train(l, r, slot, n);
    cudaGraph_t graph = NULL;
    cudaError_t ce = cudaStreamEndCapture(r->compute, &graph);
    cudaGraphExec_t exec = NULL;
    if (!err && ce == cudaSuccess) ce = cudaGraphInstantiate(&exec, graph, 0);
    if (graph) (void)cudaGraphDestroy(graph);
    if (err || ce != cudaSuccess) {
      e->failed = true;
      (void)cudaGetLastError();
      EDDY_WARN("cuda", "%s: CUDA graph capture of a batch of %d failed (%s); running that shape eagerly", l->name, n,
                err ? l->last_error : cudaGetErrorString(ce));
      l->last_error[0] = 0;
      return enqueue_train(l, r, slot, n);
    }
    e->exec = exec;
    if (!l->graph_logged) {
      l->graph_logged = true;
      EDDY_INFO("cuda", "%s: captured a CUDA graph (batch of %d on device %d); repeated shapes replay it", l->name, n,
                r->ordinal);
    }
  }
    /* fall through */
  case EDDY_GRAPH_REPLAY:
    EDDY_CUDA_CHECK(l->last_error, cudaGraphLaunch((cudaGraphExec_t)e->exec, r->compute));
    return EDDY_OK;
  }
  return EDDY_OK;
}

/* Packs examples [begin, end) of b into replica r's pinned slot and copies them to the device on
 * the copy stream; the compute stream waits for the copy. Large dense sections go in pieces of
 * STAGE_CHUNK bytes, each copied while the next is packed. */
static eddy_err_t stage_in(cuda_learner_t *l, replica_t *r, int slot, const eddy_batch_t *b, size_t begin,
                           size_t end) {
  const size_t n = end - begin, nnz = b->sparse_off[end] - b->sparse_off[begin];
  eddy_err_t err = reserve_batch(l, r, n, nnz);
  if (err) return err;
  if ((err = set_device(l, r))) return err;
  /* The pinned slot is free once its last copy is done; the device slot once the compute that
   * read it is done. */
  EDDY_CUDA_CHECK(l->last_error, cudaEventSynchronize(r->copied[slot]));
  EDDY_CUDA_CHECK(l->last_error, cudaStreamWaitEvent(r->copy, r->consumed[slot], 0));
  unsigned char *host = r->stage_host[slot], *dev = r->stage_dev[slot];
  eddy_cuda_stage_pack_rest(&r->stage, b, begin, end, host);
  for (int s = EDDY_STAGE_LABEL; s < EDDY_STAGE_SECTIONS; s++) {
    size_t used = eddy_cuda_stage_used(&r->stage, s, n, nnz), off = r->stage.offset[s];
    if (used)
      EDDY_CUDA_CHECK(l->last_error,
                      cudaMemcpyAsync(dev + off, host + off, used, cudaMemcpyHostToDevice, r->copy));
  }
  const size_t row_bytes = (size_t)l->geo.dense_dim * sizeof(float);
  if (row_bytes) {
    size_t rows = STAGE_CHUNK / row_bytes;
    if (rows < 1) rows = 1;
    for (size_t r0 = 0; r0 < n; r0 += rows) {
      size_t r1 = r0 + rows < n ? r0 + rows : n, off = r->stage.offset[EDDY_STAGE_DENSE] + r0 * row_bytes;
      eddy_cuda_stage_pack_dense(&r->stage, b, begin, r0, r1, host);
      EDDY_CUDA_CHECK(l->last_error, cudaMemcpyAsync(dev + off, host + off, (r1 - r0) * row_bytes,
                                                     cudaMemcpyHostToDevice, r->copy));
    }
  }
  EDDY_CUDA_CHECK(l->last_error, cudaEventRecord(r->copied[slot], r->copy));
  EDDY_CUDA_CHECK(l->last_error, cudaStreamWaitEvent(r->compute, r->copied[slot], 0));
  return EDDY_OK;
}

/* Copies predictions (and losses) of replica r's share [begin, end) to the pinned host buffers. */
static eddy_err_t fetch_outputs(cuda_learner_t *l, replica_t *r, size_t begin, size_t end, bool pred, bool loss) {
  const size_t n = end - begin;
  if (pred)
    EDDY_CUDA_CHECK(l->last_error,
                    cudaMemcpyAsync(l->pred_host + begin * l->geo.outputs, r->pred, n * l->geo.outputs * sizeof(float),
                                    cudaMemcpyDeviceToHost, r->compute));
  if (loss)
    EDDY_CUDA_CHECK(l->last_error, cudaMemcpyAsync(l->loss_host + begin, r->loss, n * sizeof(double),
                                                   cudaMemcpyDeviceToHost, r->compute));
  return EDDY_OK;
}

static eddy_err_t cuda_accumulate(void *impl, const eddy_batch_t *b, float *pred, double *loss_sum) {
  cuda_learner_t *l = impl;
  if (loss_sum) *loss_sum = 0;
  eddy_err_t err = eddy_learner_check_batch(&l->spec, b, true, l->last_error, sizeof l->last_error);
  if (err || b->n == 0) return err;
  if (b->n > CUDA_MAX_BATCH) {
    snprintf(l->last_error, sizeof l->last_error, "batch of %zu examples: too large (at most %zu)", b->n,
             CUDA_MAX_BATCH);
    return EDDY_ERR_TOO_LARGE;
  }
  const bool want = pred || loss_sum;
  if (want && (err = reserve_host(l, b->n))) return err;
  if (l->geo.emb_dim && (err = eddy_cuda_rows_add_batch(&l->rows, b, l->last_error, sizeof l->last_error)))
    return err;
  const int slot = l->slot;
  l->slot ^= 1;
  for (int d = 0; !err && d < l->n_dev; d++) {
    replica_t *r = &l->dev[d];
    size_t begin, end;
    eddy_cuda_shard(b->n, l->n_dev, d, &begin, &end);
    if (begin == end) continue; /* an empty share contributes zero */
    err = stage_in(l, r, slot, b, begin, end);
    if (!err) err = run_train(l, r, slot, (int)(end - begin));
    if (!err) {
      cudaError_t ce = cudaEventRecord(r->consumed[slot], r->compute);
      if (ce != cudaSuccess)
        err = eddy_cuda_record(l->last_error, sizeof l->last_error, __FILE__, __LINE__, "cudaEventRecord(consumed)",
                               cudaGetErrorString(ce));
    }
    if (!err && want) err = fetch_outputs(l, r, begin, end, pred != NULL, loss_sum != NULL);
  }
  if (!err && want) err = sync_all(l);
  if (err) {
    char saved[sizeof l->last_error];
    memcpy(saved, l->last_error, sizeof saved);
    (void)sync_all(l);
    (void)clear_gradients(l); /* partial sums are useless: drop this step's gradients */
    memcpy(l->last_error, saved, sizeof saved);
    return err;
  }
  l->pending += b->n;
  if (pred) memcpy(pred, l->pred_host, b->n * l->geo.outputs * sizeof(float));
  if (loss_sum) {
    double s = 0;
    for (size_t i = 0; i < b->n; i++)
      s += l->loss_host[i];
    *loss_sum = s;
  }
  return EDDY_OK;
}

static eddy_err_t cuda_predict(void *impl, const eddy_batch_t *b, float *pred) {
  cuda_learner_t *l = impl;
  eddy_err_t err = eddy_learner_check_batch(&l->spec, b, false, l->last_error, sizeof l->last_error);
  if (err || b->n == 0) return err;
  if (b->n > CUDA_MAX_BATCH) {
    snprintf(l->last_error, sizeof l->last_error, "batch of %zu examples: too large (at most %zu)", b->n,
             CUDA_MAX_BATCH);
    return EDDY_ERR_TOO_LARGE;
  }
  if ((err = reserve_host(l, b->n))) return err;
  const int slot = l->slot;
  l->slot ^= 1;
  for (int d = 0; !err && d < l->n_dev; d++) {
    replica_t *r = &l->dev[d];
    size_t begin, end;
    eddy_cuda_shard(b->n, l->n_dev, d, &begin, &end);
    if (begin == end) continue;
    err = stage_in(l, r, slot, b, begin, end);
    if (!err) err = enqueue_forward(l, r, slot, (int)(end - begin), false);
    if (!err) {
      cudaError_t ce = cudaEventRecord(r->consumed[slot], r->compute);
      if (ce != cudaSuccess)
        err = eddy_cuda_record(l->last_error, sizeof l->last_error, __FILE__, __LINE__, "cudaEventRecord(consumed)",
                               cudaGetErrorString(ce));
    }
    if (!err) err = fetch_outputs(l, r, begin, end, true, false);
  }
  if (!err) err = sync_all(l);
  if (err) return err;
  memcpy(pred, l->pred_host, b->n * l->geo.outputs * sizeof(float));
  return EDDY_OK;
}

/* ---- optimizer step ---- */

/* Sums the gradients of every replica (dense region and the touched embedding rows) in one NCCL
 * group; afterwards every replica holds the same sums. */
static eddy_err_t all_reduce(cuda_learner_t *l) {
#ifdef EDDY_NCCL
  const size_t n_rows = l->rows.n, E = l->geo.emb_dim;
  eddy_err_t err;
  for (int d = 0; d < l->n_dev; d++) {
    replica_t *r = &l->dev[d];
    if ((err = set_device(l, r))) return err;
    if (n_rows)
      EDDY_CUDA_CHECK(l->last_error, eddy_k_rows_pack(r->compute, r->g, r->rows_dev, n_rows, (int)E, r->rows_pack, 0));
  }
  EDDY_NCCL_CHECK(l->last_error, ncclGroupStart());
  for (int d = 0; d < l->n_dev; d++) {
    replica_t *r = &l->dev[d];
    float *dense = r->g + l->geo.dense_begin;
    ncclResult_t nr =
        ncclAllReduce(dense, dense, l->geo.total - l->geo.dense_begin, ncclFloat, ncclSum, r->comm, r->compute);
    if (nr == ncclSuccess && n_rows)
      nr = ncclAllReduce(r->rows_pack, r->rows_pack, n_rows * E, ncclFloat, ncclSum, r->comm, r->compute);
    if (nr != ncclSuccess) {
      (void)ncclGroupEnd();
      return eddy_cuda_record(l->last_error, sizeof l->last_error, __FILE__, __LINE__, "ncclAllReduce(gradients)",
                              ncclGetErrorString(nr));
    }
  }
  EDDY_NCCL_CHECK(l->last_error, ncclGroupEnd());
  for (int d = 0; n_rows && d < l->n_dev; d++) {
    replica_t *r = &l->dev[d];
    if ((err = set_device(l, r))) return err;
    EDDY_CUDA_CHECK(l->last_error, eddy_k_rows_pack(r->compute, r->g, r->rows_dev, n_rows, (int)E, r->rows_pack, 1));
  }
#endif
  return EDDY_OK;
}

/* Joined ranks, on the host: sums the example counts and poison flags over the ranks and makes the
 * touched-row set the union of every rank's (sorted: the same list everywhere). */
static eddy_err_t rank_counts(cuda_learner_t *l) {
  const eddy_collective_t *c = l->coll;
  uint64_t counts[2] = {l->pending, l->poisoned ? 1 : 0};
  eddy_err_t err = c->sum_u64(c->ctx, counts, 2, l->last_error, sizeof l->last_error);
  if (err) return err;
  l->pending = counts[0];
  l->poisoned = counts[1] > 0;
  if (!l->geo.emb_dim || (!counts[0] && !counts[1])) return EDDY_OK;
  uint32_t *rows = NULL;
  size_t n = 0;
  err = eddy_collective_rows_union(c, l->rows.rows, l->rows.n, &rows, &n, l->last_error, sizeof l->last_error);
  if (!err) err = eddy_cuda_rows_set(&l->rows, rows, n, l->last_error, sizeof l->last_error);
  free(rows);
  return err;
}

/* Sums n floats at dev (device memory of the one replica) over the ranks: NCCL when built with it,
 * else through the host and coll. */
static eddy_err_t rank_sum(cuda_learner_t *l, replica_t *r, float *dev, size_t n) {
  if (!n) return EDDY_OK;
#ifdef EDDY_NCCL
  EDDY_NCCL_CHECK(l->last_error, ncclAllReduce(dev, dev, n, ncclFloat, ncclSum, l->xcomm, r->compute));
  return EDDY_OK;
#else
  if (n > l->xhost_cap) {
    float *x = realloc(l->xhost, n * sizeof *x);
    if (!x) {
      snprintf(l->last_error, sizeof l->last_error, "out of memory staging %zu gradients", n);
      return EDDY_ERR_NOMEM;
    }
    l->xhost = x;
    l->xhost_cap = n;
  }
  EDDY_CUDA_CHECK(l->last_error, cudaMemcpyAsync(l->xhost, dev, n * sizeof(float), cudaMemcpyDeviceToHost, r->compute));
  EDDY_CUDA_CHECK(l->last_error, cudaStreamSynchronize(r->compute));
  eddy_err_t err = l->coll->sum_f32(l->coll->ctx, l->xhost, n, l->last_error, sizeof l->last_error);
  if (err) return err;
  EDDY_CUDA_CHECK(l->last_error, cudaMemcpyAsync(dev, l->xhost, n * sizeof(float), cudaMemcpyHostToDevice, r->compute));
  return EDDY_OK;
#endif
}

/* Joined ranks, on the device (after upload_rows): the dense gradient region and the touched rows
 * (packed) summed over the ranks, in place. */
static eddy_err_t rank_all_reduce(cuda_learner_t *l, eddy_step_info_t *out) {
  replica_t *r = &l->dev[0];
  const size_t n_rows = l->rows.n, E = l->geo.emb_dim, db = l->geo.dense_begin;
  eddy_err_t err = set_device(l, r);
  if (err) return err;
  if (n_rows)
    EDDY_CUDA_CHECK(l->last_error, eddy_k_rows_pack(r->compute, r->g, r->rows_dev, n_rows, (int)E, r->rows_pack, 0));
  if ((err = rank_sum(l, r, r->g + db, l->geo.total - db))) return err;
  if (n_rows && (err = rank_sum(l, r, r->rows_pack, n_rows * E))) return err;
  if (n_rows)
    EDDY_CUDA_CHECK(l->last_error, eddy_k_rows_pack(r->compute, r->g, r->rows_dev, n_rows, (int)E, r->rows_pack, 1));
  EDDY_CUDA_CHECK(l->last_error, cudaStreamSynchronize(r->compute)); /* so that the time counts the sums */
  out->exchanged_bytes = (l->geo.total - db + n_rows * E) * sizeof(float);
  return EDDY_OK;
}

static eddy_err_t cuda_join(void *impl, const eddy_collective_t *coll, char *errstr, size_t errstr_size) {
  cuda_learner_t *l = impl;
  if (coll && l->n_dev > 1)
    return eddy_errf(EDDY_ERR_UNSUPPORTED, errstr, errstr_size,
                     "%s with %d ranks: one GPU per rank (train.device = cuda gives rank r its local rank's GPU)",
                     l->name, coll->ranks);
#ifdef EDDY_NCCL
  if (l->xcomm) {
    (void)ncclCommDestroy(l->xcomm);
    l->xcomm = NULL;
  }
  if (coll) {
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    ncclResult_t nr = coll->rank == 0 ? ncclGetUniqueId(&id) : ncclSuccess;
    if (nr != ncclSuccess)
      return eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size, "ncclGetUniqueId: %s", ncclGetErrorString(nr));
    eddy_err_t err = coll->bcast(coll->ctx, &id, sizeof id, 0, errstr, errstr_size);
    if (err) return err;
    if ((err = set_device(l, &l->dev[0]))) return eddy_errf(err, errstr, errstr_size, "%s", l->last_error);
    nr = ncclCommInitRank(&l->xcomm, coll->ranks, id, coll->rank);
    if (nr != ncclSuccess)
      return eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size, "ncclCommInitRank(rank %d of %d on %s): %s", coll->rank,
                       coll->ranks, l->name, ncclGetErrorString(nr));
    EDDY_INFO("cuda", "rank %d of %d: NCCL communicator across the ranks on %s", coll->rank, coll->ranks, l->name);
  }
#endif
  l->coll = coll;
  return EDDY_OK;
}

static eddy_err_t cuda_step(void *impl, eddy_step_info_t *info) {
  cuda_learner_t *l = impl;
  eddy_step_info_t out = {
      .applied = false, .step = l->steps, .examples = l->pending, .loss_scale = l->scaler.scale, .grad_norm = 0};
  const double t0 = eddy_clock_mono_s();
  if (l->coll) {
    eddy_err_t err = rank_counts(l);
    if (err) {
      return drop_gradients(l, err);
    }
    out.examples = l->pending;
  }
  if (l->pending == 0 && !l->poisoned) {
    out.exchange_seconds = l->coll ? eddy_clock_mono_s() - t0 : 0;
    if (info) *info = out;
    return EDDY_OK;
  }
  const size_t n_rows = l->rows.n, db = l->geo.dense_begin;
  /* The constants of step steps + 1, used only if the step applies (the kernels decide). */
  const eddy_k_optim_t a = {.c = eddy_optim_consts(&l->opts, l->steps + 1),
                            .clip_norm = l->opts.clip_norm,
                            .examples = l->pending,
                            .scale = (double)l->scaler.scale};
  eddy_err_t err = upload_rows(l);
  if (!err && l->nccl) err = all_reduce(l);
  if (!err && l->coll) {
    err = rank_all_reduce(l, &out);
    out.exchange_seconds = eddy_clock_mono_s() - t0;
  }
  for (int d = 0; !err && d < l->n_dev; d++) {
    replica_t *r = &l->dev[d];
    if ((err = set_device(l, r))) break;
    cudaError_t ce = eddy_k_sumsq(r->compute, r->g + db, l->geo.total - db, r->g, r->rows_dev, n_rows,
                                  (int)l->geo.emb_dim, r->part, r->stat);
    if (ce == cudaSuccess)
      ce = eddy_k_optim_dense(r->compute, l->op, &a, l->geo.total - db, r->w + db, r->g + db, r->s1 ? r->s1 + db : NULL,
                              r->s2 ? r->s2 + db : NULL, r->wh, r->stat);
    if (ce == cudaSuccess)
      ce = eddy_k_optim_rows(r->compute, &a, r->rows_dev, n_rows, (int)l->geo.emb_dim, r->w, r->g, r->s1, r->s2,
                             r->stat);
    if (ce == cudaSuccess && d == 0)
      ce = cudaMemcpyAsync(l->stat_host, r->stat, sizeof(double), cudaMemcpyDeviceToHost, r->compute);
    if (ce != cudaSuccess)
      err = eddy_cuda_record(l->last_error, sizeof l->last_error, __FILE__, __LINE__, "optimizer step launch",
                             cudaGetErrorString(ce));
  }
  if (!err) err = sync_all(l); /* the one read-back of the step: the sum of squares */
  if (err) {
    return drop_gradients(l, err);
  }
  const eddy_optim_scalars_t st =
      eddy_optim_step_scalars(l->pending, (double)l->scaler.scale, l->stat_host[0], l->opts.clip_norm);
  out.grad_norm = st.norm;
  const bool applied = eddy_scaler_update(&l->scaler, st.nonfinite);
  eddy_cuda_rows_clear(&l->rows); /* the kernels zeroed every gradient they visited */
  l->pending = 0;
  l->poisoned = false;
  if (applied) {
    l->steps++;
    out.applied = true;
    out.step = l->steps;
  } else {
    EDDY_DEBUG("cuda", "step skipped: non-finite gradients (loss scale now %g)", l->scaler.scale);
  }
  out.loss_scale = l->scaler.scale;
  if (info) *info = out;
  return upload_scale(l);
}

static void cuda_poison(void *impl, float value) {
  cuda_learner_t *l = impl;
  if (upload_rows(l)) return;
  for (int d = 0; d < l->n_dev; d++) {
    replica_t *r = &l->dev[d];
    if (set_device(l, r)) return;
    if (eddy_k_fill(r->compute, r->g + l->geo.dense_begin, l->geo.total - l->geo.dense_begin, value) != cudaSuccess)
      return;
    if (eddy_k_fill_rows(r->compute, r->g, r->rows_dev, l->rows.n, (int)l->geo.emb_dim, value) != cudaSuccess) return;
  }
  l->poisoned = true;
  (void)sync_all(l);
}

/* ---- tensors ---- */

static size_t cuda_tensors(const void *impl, const eddy_tensor_info_t **tensors) {
  const cuda_learner_t *l = impl;
  if (tensors) *tensors = l->geo.tensors;
  return l->geo.n_tensors;
}

static const eddy_tensor_info_t *find_tensor(cuda_learner_t *l, const char *name, size_t numel, eddy_err_t *err) {
  for (size_t i = 0; name && i < l->geo.n_tensors; i++) {
    if (strcmp(l->geo.tensors[i].name, name) != 0) continue;
    if (l->geo.tensors[i].numel != numel) {
      snprintf(l->last_error, sizeof l->last_error, "tensor %s has %zu elements, not %zu", name,
               l->geo.tensors[i].numel, numel);
      *err = EDDY_ERR_SHAPE;
      return NULL;
    }
    return &l->geo.tensors[i];
  }
  snprintf(l->last_error, sizeof l->last_error, "no tensor \"%s\"", name ? name : "(null)");
  *err = EDDY_ERR_NOT_FOUND;
  return NULL;
}

static eddy_err_t download(cuda_learner_t *l, float *dst, const float *src, size_t numel) {
  replica_t *r = &l->dev[0];
  eddy_err_t err = sync_all(l);
  if (!err) err = set_device(l, r);
  if (err) return err;
  EDDY_CUDA_CHECK(l->last_error, cudaMemcpyAsync(dst, src, numel * sizeof(float), cudaMemcpyDeviceToHost, r->compute));
  EDDY_CUDA_CHECK(l->last_error, cudaStreamSynchronize(r->compute));
  return EDDY_OK;
}

static eddy_err_t cuda_export(void *impl, const char *name, float *dst, size_t numel) {
  cuda_learner_t *l = impl;
  eddy_err_t err = EDDY_OK;
  const eddy_tensor_info_t *t = find_tensor(l, name, numel, &err);
  return t ? download(l, dst, l->dev[0].w + t->offset, numel) : err;
}

static eddy_err_t cuda_export_grad(void *impl, const char *name, float *dst, size_t numel) {
  cuda_learner_t *l = impl;
  eddy_err_t err = EDDY_OK;
  const eddy_tensor_info_t *t = find_tensor(l, name, numel, &err);
  return t ? download(l, dst, l->dev[0].g + t->offset, numel) : err;
}

/* Writes n floats at flat offset off of every replica's buffer (w, s1 or s2 by which). */
static eddy_err_t upload(cuda_learner_t *l, int which, size_t off, const float *src, size_t n) {
  eddy_err_t err = sync_all(l);
  for (int d = 0; !err && d < l->n_dev; d++) {
    replica_t *r = &l->dev[d];
    float *base = which == 0 ? r->w : which == 1 ? r->s1 : r->s2;
    if (!base) continue;
    if ((err = set_device(l, r))) return err;
    EDDY_CUDA_CHECK(l->last_error,
                    cudaMemcpyAsync(base + off, src, n * sizeof(float), cudaMemcpyHostToDevice, r->compute));
    EDDY_CUDA_CHECK(l->last_error, cudaStreamSynchronize(r->compute));
  }
  return err;
}

static eddy_err_t cuda_import(void *impl, const char *name, const float *src, size_t numel) {
  cuda_learner_t *l = impl;
  eddy_err_t err = EDDY_OK;
  const eddy_tensor_info_t *t = find_tensor(l, name, numel, &err);
  if (!t) return err;
  if ((err = upload(l, 0, t->offset, src, numel))) return err;
  if ((err = refresh_operands(l))) return err;
  return sync_all(l);
}

/* ---- files ---- */

static void cuda_view_release(void *impl) {
  cuda_learner_t *l = impl;
  free(l->view_w);
  free(l->view_s1);
  free(l->view_s2);
  l->view_w = l->view_s1 = l->view_s2 = NULL;
}

static eddy_err_t cuda_view_get(void *impl, eddy_learner_view_t *v, char *errstr, size_t errstr_size) {
  cuda_learner_t *l = impl;
  replica_t *r = &l->dev[0];
  cuda_view_release(l);
  const size_t n = l->geo.total ? l->geo.total : 1;
  l->view_w = malloc(n * sizeof(float));
  l->view_s1 = r->s1 ? malloc(n * sizeof(float)) : NULL;
  l->view_s2 = r->s2 ? malloc(n * sizeof(float)) : NULL;
  if (!l->view_w || (r->s1 && !l->view_s1) || (r->s2 && !l->view_s2)) {
    cuda_view_release(l);
    return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory for a host copy of %zu parameters",
                     l->geo.total);
  }
  eddy_err_t err = download(l, l->view_w, r->w, l->geo.total);
  if (!err && r->s1) err = download(l, l->view_s1, r->s1, l->geo.total);
  if (!err && r->s2) err = download(l, l->view_s2, r->s2, l->geo.total);
  if (err) {
    cuda_view_release(l);
    return eddy_errf(err, errstr, errstr_size, "%s", l->last_error);
  }
  *v = (eddy_learner_view_t){.spec = &l->spec,
                             .opts = &l->opts,
                             .tensors = l->geo.tensors,
                             .n_tensors = l->geo.n_tensors,
                             .w = l->view_w,
                             .s1 = l->view_s1,
                             .s2 = l->view_s2,
                             .steps = &l->steps,
                             .scaler = &l->scaler,
                             .rng = l->rng,
                             .pending = l->pending,
                             .poisoned = l->poisoned};
  return EDDY_OK;
}

static eddy_err_t cuda_view_loaded(void *impl, char *errstr, size_t errstr_size) {
  cuda_learner_t *l = impl;
  eddy_err_t err = upload(l, 0, 0, l->view_w, l->geo.total);
  if (!err && l->view_s1) err = upload(l, 1, 0, l->view_s1, l->geo.total);
  if (!err && l->view_s2) err = upload(l, 2, 0, l->view_s2, l->geo.total);
  if (!err) err = refresh_operands(l);
  if (!err) err = clear_gradients(l);
  if (!err) {
    l->device_scale = -1.0f; /* the scaler came from the file */
    err = upload_scale(l);
  }
  if (!err) err = sync_all(l);
  if (err) return eddy_errf(err, errstr, errstr_size, "%s", l->last_error);
  return EDDY_OK;
}

static const eddy_learner_backend_t cuda_backend_table = {
    .name = "cuda",
    .device_check = cuda_device_check,
    .device_count = eddy_cuda_device_count,
    .create = cuda_create,
    .destroy = cuda_destroy,
    .backend = cuda_backend,
    .precision_info = cuda_precision_info,
    .accumulate = cuda_accumulate,
    .step = cuda_step,
    .predict = cuda_predict,
    .tensors = cuda_tensors,
    .export_tensor = cuda_export,
    .import_tensor = cuda_import,
    .export_grad = cuda_export_grad,
    .view_get = cuda_view_get,
    .view_loaded = cuda_view_loaded,
    .view_release = cuda_view_release,
    .last_error = cuda_last_error,
    .scaler = cuda_scaler,
    .step_count = cuda_step_count,
    .poison = cuda_poison,
    .join = cuda_join,
};

const eddy_learner_backend_t *eddy_cuda_backend(void) { return &cuda_backend_table; }

eddy_err_t eddy_cuda_fail_alloc(eddy_learner_t *learner, unsigned nth) {
  if (!learner || learner->vt != &cuda_backend_table) return EDDY_ERR_INVALID_ARG;
  ((cuda_learner_t *)learner->impl)->fail_alloc_in = nth;
  return EDDY_OK;
}
