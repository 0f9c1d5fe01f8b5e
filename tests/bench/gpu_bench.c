/* GPU benchmark (not a test), eddy side; ops/gpu-check runs it beside tests/bench/torch_gpu_peer.py.
 *   bench_gpu --model mlp|large --batch N [--precision bf16|fp16|fp32] [--seconds S] [--device D]
 *     trains on a pool of synthetic examples for S seconds (after a warm-up that also captures the
 *     CUDA graphs) and prints one JSON line: examples/s and achieved TFLOP/s of the GEMM work.
 *     mlp: the Fashion-MNIST MLP (784-256-128-10 softmax, Adam 1e-3), dense pixels.
 *     large: hashed sparse features 2^22 x 64 (16 per example, summed) + MLP 1024-512-256, logistic
 *     head, Adam 1e-3 (lazy rows on the embedding).
 *   bench_gpu --ceiling: cuBLAS bf16 GEMM 8192^3 (bf16 in and out, fp32 accumulate), TFLOP/s, the
 *     ceiling the large model is measured against. */
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "cuda/cuda.h"
#include "model/learner.h"

#define SPARSE_PER_EXAMPLE 16

#define CK(call)                                                                                                       \
  do {                                                                                                                 \
    cudaError_t e_ = (call);                                                                                           \
    if (e_ != cudaSuccess) {                                                                                           \
      fprintf(stderr, "bench_gpu: %s: %s\n", #call, cudaGetErrorString(e_));                                           \
      exit(1);                                                                                                         \
    }                                                                                                                  \
  } while (0)

static uint16_t to_bf16(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static int ceiling(void) {
  const int n = 8192, reps = 10;
  const size_t elems = (size_t)n * n;
  uint16_t *h = malloc(elems * sizeof *h);
  unsigned seed = 1;
  for (size_t i = 0; i < elems; i++)
    h[i] = to_bf16((float)(rand_r(&seed) % 2001 - 1000) / 1000.0f);
  void *a, *b, *c;
  CK(cudaMalloc(&a, elems * 2));
  CK(cudaMalloc(&b, elems * 2));
  CK(cudaMalloc(&c, elems * 2));
  CK(cudaMemcpy(a, h, elems * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(b, h, elems * 2, cudaMemcpyHostToDevice));
  free(h);
  cublasHandle_t blas;
  if (cublasCreate(&blas) != CUBLAS_STATUS_SUCCESS) {
    fprintf(stderr, "bench_gpu: cublasCreate failed\n");
    return 1;
  }
  const float one = 1.0f, zero = 0.0f;
  cudaEvent_t t0, t1;
  CK(cudaEventCreate(&t0));
  CK(cudaEventCreate(&t1));
  for (int i = 0; i < 3 + reps; i++) {
    if (i == 3) CK(cudaEventRecord(t0, 0));
    cublasStatus_t st = cublasGemmEx(blas, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a, CUDA_R_16BF, n, b, CUDA_R_16BF,
                                     n, &zero, c, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS) {
      fprintf(stderr, "bench_gpu: cublasGemmEx: %s\n", cublasGetStatusString(st));
      return 1;
    }
  }
  CK(cudaEventRecord(t1, 0));
  CK(cudaEventSynchronize(t1));
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, t0, t1));
  double tflops = 2.0 * n * (double)n * n * reps / (ms / 1e3) / 1e12;
  struct cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("{\"impl\": \"cublas\", \"model\": \"gemm8192\", \"tflops\": %.1f, \"device\": \"%s\"}\n", tflops, prop.name);
  cublasDestroy(blas);
  cudaFree(a);
  cudaFree(b);
  cudaFree(c);
  return 0;
}

/* Multiply-adds per example of the forward pass, and of training (forward, weight and data
 * gradients; layer 0 has a data gradient only for its embedding columns). */
static void flops_per_example(const eddy_model_spec_t *s, double *train_flops) {
  double fwd = 0, dx = 0;
  uint32_t in = s->embed_dim + s->dense_dim, outputs = eddy_model_outputs(s);
  for (uint32_t i = 0; i <= s->n_hidden; i++) {
    uint32_t out = i < s->n_hidden ? s->hidden[i] : outputs;
    fwd += (double)in * out;
    dx += i > 0 ? (double)in * out : (double)s->embed_dim * out;
    in = out;
  }
  *train_flops = 2.0 * (2.0 * fwd + dx);
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0); /* ops/gpu-check keeps what a crash leaves */
  eddy_learner_register(eddy_cuda_backend());
  size_t batch = 256;
  double seconds = 3.0;
  const char *model = "mlp", *precision = "bf16", *device = "cuda:0";
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--ceiling")) return ceiling();
    if (i + 1 >= argc) break;
    if (!strcmp(argv[i], "--batch"))
      batch = (size_t)atol(argv[++i]);
    else if (!strcmp(argv[i], "--seconds"))
      seconds = atof(argv[++i]);
    else if (!strcmp(argv[i], "--precision"))
      precision = argv[++i];
    else if (!strcmp(argv[i], "--model"))
      model = argv[++i];
    else if (!strcmp(argv[i], "--device"))
      device = argv[++i];
    else {
      fprintf(stderr, "usage: bench_gpu --model mlp|large --batch N [--precision P] [--seconds S] [--device D] | "
                      "--ceiling\n");
      return 2;
    }
  }
  const bool large = !strcmp(model, "large");
  eddy_model_spec_t spec;
  memset(&spec, 0, sizeof spec);
  if (large) {
    spec.hash_bits = 22;
    spec.embed_dim = 64;
    spec.n_hidden = 3;
    spec.hidden[0] = 1024, spec.hidden[1] = 512, spec.hidden[2] = 256;
    spec.head = EDDY_HEAD_LOGISTIC;
  } else {
    spec.dense_dim = 784;
    spec.n_hidden = 2;
    spec.hidden[0] = 256, spec.hidden[1] = 128;
    spec.head = EDDY_HEAD_SOFTMAX;
    spec.classes = 10;
  }
  eddy_train_opts_t opts = eddy_train_opts_defaults();
  opts.optimizer = EDDY_OPT_ADAM;
  opts.lr = 1e-3f;
  opts.precision = !strcmp(precision, "bf16")   ? EDDY_PREC_BF16
                   : !strcmp(precision, "fp16") ? EDDY_PREC_FP16
                                                : EDDY_PREC_FP32;
  char err[512];
  eddy_learner_t *l = eddy_learner_new(&spec, &opts, device, err, sizeof err);
  if (!l) {
    fprintf(stderr, "bench_gpu: %s\n", err);
    return 1;
  }
  if (!strncmp(device, "cuda", 4) && !strcmp(eddy_learner_backend(l), "cpu")) {
    fprintf(stderr, "bench_gpu: no usable GPU (the learner fell back to the CPU)\n");
    return 1;
  }
  /* A pool of at least 4096 examples (and 4 batches), cut into batches used round-robin. */
  size_t pool = batch * 4 > 4096 ? batch * 4 : 4096, nb = pool / batch;
  eddy_batch_t **batches = calloc(nb, sizeof *batches);
  unsigned seed = 12345;
  eddy_event_t ev;
  eddy_event_init(&ev);
  float *dense = malloc(sizeof(float) * 784), val[SPARSE_PER_EXAMPLE];
  uint32_t idx[SPARSE_PER_EXAMPLE];
  for (size_t k = 0; k < nb; k++) {
    batches[k] = eddy_batch_new(spec.dense_dim, batch);
    for (size_t i = 0; i < batch; i++) {
      ev.dense = dense;
      ev.n_dense = spec.dense_dim;
      for (uint32_t d = 0; d < spec.dense_dim; d++)
        dense[d] = (float)(rand_r(&seed) % 256) / 255.0f;
      ev.sparse_idx = idx;
      ev.sparse_val = val;
      ev.n_sparse = large ? SPARSE_PER_EXAMPLE : 0;
      for (int j = 0; j < SPARSE_PER_EXAMPLE; j++) {
        idx[j] = (((uint32_t)rand_r(&seed) << 11) ^ (uint32_t)rand_r(&seed)) & ((1u << 22) - 1);
        val[j] = 1.0f;
      }
      ev.label = large ? rand_r(&seed) % 2 : rand_r(&seed) % 10;
      ev.weight = 1;
      if (eddy_batch_push(batches[k], &ev) != EDDY_OK) {
        fprintf(stderr, "bench_gpu: batch push failed\n");
        return 1;
      }
    }
  }
  eddy_step_info_t info;
  for (size_t i = 0; i < 30; i++) { /* warm-up: cuBLAS heuristics, graph capture, page faults */
    if (eddy_learner_accumulate(l, batches[i % nb], NULL, NULL) || eddy_learner_step(l, &info)) {
      fprintf(stderr, "bench_gpu: %s\n", eddy_learner_last_error(l));
      return 1;
    }
  }
  size_t steps = 0;
  double t0 = eddy_clock_mono_s(), t;
  do {
    for (int k = 0; k < 10; k++, steps++) {
      if (eddy_learner_accumulate(l, batches[steps % nb], NULL, NULL) || eddy_learner_step(l, &info)) {
        fprintf(stderr, "bench_gpu: %s\n", eddy_learner_last_error(l));
        return 1;
      }
    }
    t = eddy_clock_mono_s();
  } while (t - t0 < seconds);
  double eps = (double)(steps * batch) / (t - t0), flops;
  flops_per_example(&spec, &flops);
  printf(
      "{\"impl\": \"eddy\", \"model\": \"%s\", \"batch\": %zu, \"precision\": \"%s\", \"examples_per_second\": %.1f, "
      "\"steps\": %zu, \"tflops\": %.2f, \"info\": \"%s\"}\n",
      model, batch, precision, eps, steps, eps * flops / 1e12, eddy_learner_precision_info(l));
  for (size_t k = 0; k < nb; k++)
    eddy_batch_destroy(batches[k]);
  free(batches);
  free(dense);
  eddy_learner_destroy(l);
  return 0;
}
