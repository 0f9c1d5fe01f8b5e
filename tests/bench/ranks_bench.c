/* Data-parallel ranks benchmark (not a test): every rank of `mpirun -np R` trains its own synthetic
 * batches on a learner joined to the others (src/dist, the trainer's path: counts, touched rows and
 * dense gradients summed every step), after warm-up steps, for a fixed number of steps; rank 0
 * prints one JSON line: examples per second over all ranks, time per step, and per step: the
 * compute (forward, backward, optimizer), the wait for the slowest rank (the polled barrier of the
 * trainer's round), and the bytes each rank all-reduces with the time the sums
 * take once every rank is there. tests/bench/run-ranks runs it for R = 1 and 2.
 * Models: compute (784-1024-1024-10 softmax: compute-bound), mlp (the Fashion-MNIST MLP,
 * 784-256-128-10), large (hashed embeddings x 64, 16 sparse features per example, MLP
 * 1024-512-256, logistic: docs/benchmarks.md's large model, with 2^hash_bits rows, default 20).
 * --device cuda (a build with EDDY_CUDA) puts rank r on GPU cuda:<local rank>, as trainer ranks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "dist/dist.h"
#include "model/learner.h"
#ifdef EDDY_CUDA
#include "cuda/cuda.h"
#endif

#define POOL_BATCHES 4

typedef struct {
  double step_s, exchange_s, wait_s;
  double bytes;
} rank_result_t;

static void usage(void) {
  fprintf(stderr, "usage: ranks_bench [--model compute|mlp|large] [--batch N] [--steps N] [--warmup N]\n"
                  "                   [--threads N] [--hash-bits N] [--device cpu|cuda]   (under mpirun -np R)\n");
}

int main(int argc, char **argv) {
  const char *model = "compute", *device = "cpu";
  size_t batch = 256;
  int steps = 30, warmup = 5, threads = 1, hash_bits = 20;
  for (int i = 1; i < argc; i++) {
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) {
      usage();
      return 2;
    }
    if (!strcmp(argv[i], "--model")) model = v;
    else if (!strcmp(argv[i], "--batch")) batch = (size_t)atol(v);
    else if (!strcmp(argv[i], "--steps")) steps = atoi(v);
    else if (!strcmp(argv[i], "--warmup")) warmup = atoi(v);
    else if (!strcmp(argv[i], "--threads")) threads = atoi(v);
    else if (!strcmp(argv[i], "--hash-bits")) hash_bits = atoi(v);
    else if (!strcmp(argv[i], "--device")) device = v;
    else {
      usage();
      return 2;
    }
    i++;
  }
  eddy_model_spec_t spec;
  memset(&spec, 0, sizeof spec);
  if (!strcmp(model, "compute")) {
    spec = (eddy_model_spec_t){.dense_dim = 784, .n_hidden = 2, .hidden = {1024, 1024},
                               .head = EDDY_HEAD_SOFTMAX, .classes = 10};
  } else if (!strcmp(model, "mlp")) {
    spec = (eddy_model_spec_t){.dense_dim = 784, .n_hidden = 2, .hidden = {256, 128},
                               .head = EDDY_HEAD_SOFTMAX, .classes = 10};
  } else if (!strcmp(model, "large")) {
    spec = (eddy_model_spec_t){.hash_bits = (uint32_t)hash_bits, .embed_dim = 64, .n_hidden = 3,
                               .hidden = {1024, 512, 256}, .head = EDDY_HEAD_LOGISTIC, .classes = 2};
  } else {
    usage();
    return 2;
  }
  char err[512];
  eddy_dist_t *d = eddy_dist_new(err, sizeof err);
  if (!d) {
    fprintf(stderr, "ranks_bench: %s\n", err);
    return 1;
  }
  const eddy_collective_t *c = eddy_dist_collective(d);
  eddy_train_opts_t opts = eddy_train_opts_defaults();
  opts.optimizer = EDDY_OPT_ADAM;
  opts.lr = 1e-3f;
  opts.threads = threads;
#ifdef EDDY_CUDA
  eddy_learner_register(eddy_cuda_backend());
#endif
  char dev[32];
  if (!strcmp(device, "cuda")) snprintf(dev, sizeof dev, "cuda:%d", c->local_rank);
  else snprintf(dev, sizeof dev, "%s", device);
  eddy_learner_t *l = eddy_learner_new(&spec, &opts, dev, err, sizeof err);
  if (!l || eddy_learner_join(l, c, err, sizeof err) != EDDY_OK) {
    fprintf(stderr, "ranks_bench: rank %d: %s\n", c->rank, err);
    eddy_dist_abort(d, 1);
  }
  /* A pool of batches per rank (its own seed): pixels in [0,1) or 16 hashed features. */
  eddy_batch_t *pool[POOL_BATCHES];
  unsigned seed = 12345u + 7919u * (unsigned)c->rank;
  eddy_event_t ev;
  eddy_event_init(&ev);
  float *dense = malloc(sizeof(float) * (spec.dense_dim ? spec.dense_dim : 1));
  uint32_t idx[16];
  float val[16];
  for (int k = 0; k < 16; k++) val[k] = 1.0f;
  for (int p = 0; p < POOL_BATCHES; p++) {
    pool[p] = eddy_batch_new(spec.dense_dim, batch);
    for (size_t i = 0; i < batch; i++) {
      for (uint32_t k = 0; k < spec.dense_dim; k++) dense[k] = (float)(rand_r(&seed) % 256) / 255.0f;
      for (int k = 0; spec.embed_dim && k < 16; k++) idx[k] = (uint32_t)rand_r(&seed) & ((1u << spec.hash_bits) - 1);
      ev.dense = dense;
      ev.n_dense = spec.dense_dim;
      ev.sparse_idx = idx;
      ev.sparse_val = val;
      ev.n_sparse = spec.embed_dim ? 16 : 0;
      ev.label = spec.head == EDDY_HEAD_LOGISTIC ? rand_r(&seed) % 2 : rand_r(&seed) % 10;
      ev.weight = 1;
      eddy_batch_push(pool[p], &ev);
    }
  }
  rank_result_t me = {0};
  eddy_step_info_t info;
  double t0 = 0;
  for (int s = 0; s < warmup + steps; s++) {
    if (s == warmup) t0 = eddy_clock_mono_s();
    double ts = eddy_clock_mono_s();
    if (eddy_learner_accumulate(l, pool[s % POOL_BATCHES], NULL, NULL) != EDDY_OK) {
      fprintf(stderr, "ranks_bench: rank %d: %s\n", c->rank, eddy_learner_last_error(l));
      eddy_dist_abort(d, 1);
    }
    double tw = eddy_clock_mono_s();
    if (c->ranks > 1 && c->barrier(c->ctx, err, sizeof err) != EDDY_OK) {
      fprintf(stderr, "ranks_bench: rank %d: %s\n", c->rank, err);
      eddy_dist_abort(d, 1);
    }
    double wait = eddy_clock_mono_s() - tw;
    if (eddy_learner_step(l, &info) != EDDY_OK) {
      fprintf(stderr, "ranks_bench: rank %d: %s\n", c->rank, eddy_learner_last_error(l));
      eddy_dist_abort(d, 1);
    }
    if (s >= warmup) {
      me.step_s += eddy_clock_mono_s() - ts;
      me.wait_s += wait;
      me.exchange_s += info.exchange_seconds;
      me.bytes += (double)info.exchanged_bytes;
    }
  }
  double seconds = eddy_clock_mono_s() - t0;
  void *all = NULL;
  size_t *sizes = calloc((size_t)c->ranks, sizeof *sizes);
  if (c->gather(c->ctx, &me, sizeof me, &all, sizes, err, sizeof err) != EDDY_OK) {
    fprintf(stderr, "ranks_bench: %s\n", err);
    eddy_dist_abort(d, 1);
  }
  if (c->rank == 0) {
    const eddy_tensor_info_t *ti;
    size_t total = 0, nt = eddy_learner_tensors(l, &ti);
    for (size_t i = 0; i < nt; i++) total += ti[i].numel;
    const rank_result_t *r = all;
    double ex = 0, wait = 0, compute = 0;
    for (int i = 0; i < c->ranks; i++) {
      ex += r[i].exchange_s / c->ranks;
      wait += r[i].wait_s / c->ranks;
      compute += (r[i].step_s - r[i].wait_s - r[i].exchange_s) / c->ranks;
    }
    printf("{\"model\": \"%s\", \"device\": \"%s\", \"ranks\": %d, \"batch_per_rank\": %zu, \"threads\": %d, \"steps\": %d, "
           "\"seconds\": %.3f, \"examples_per_second\": %.1f, \"step_ms\": %.3f, \"compute_ms\": %.3f, "
           "\"wait_ms\": %.3f, \"allreduce_ms\": %.3f, \"bytes_per_step\": %.0f, \"parameters\": %zu}\n",
           model, eddy_learner_backend(l), c->ranks, batch, threads, steps, seconds, (double)steps * (double)batch * c->ranks / seconds,
           1e3 * seconds / steps, 1e3 * compute / steps, 1e3 * wait / steps, 1e3 * ex / steps, r[0].bytes / steps,
           total);
  }
  free(all);
  free(sizes);
  for (int p = 0; p < POOL_BATCHES; p++) eddy_batch_destroy(pool[p]);
  free(dense);
  eddy_learner_destroy(l);
  eddy_dist_destroy(d);
  return 0;
}
