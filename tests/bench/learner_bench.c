/* Learner throughput benchmark (not a test): trains the Fashion-MNIST MLP (784-256-128-10, softmax,
 * Adam) on a fixed pool of synthetic examples for a given time and prints one JSON line with the
 * examples per second. tests/bench/run-learner runs it beside the PyTorch peer (torch_peer.py). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "model/learner.h"

#define POOL 4096
#define DIM 784

int main(int argc, char **argv) {
  size_t batch = 64;
  double seconds = 3.0;
  const char *precision = "fp32";
  int threads = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--batch")) batch = (size_t)atol(argv[i + 1]);
    else if (!strcmp(argv[i], "--seconds")) seconds = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "--precision")) precision = argv[i + 1];
    else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
    else {
      fprintf(stderr, "usage: bench_learner [--batch N] [--seconds S] [--precision fp32|bf16|fp16] [--threads N]\n");
      return 2;
    }
  }
  eddy_model_spec_t spec = {.dense_dim = DIM, .n_hidden = 2, .hidden = {256, 128},
                            .head = EDDY_HEAD_SOFTMAX, .classes = 10};
  eddy_train_opts_t opts = eddy_train_opts_defaults();
  opts.optimizer = EDDY_OPT_ADAM;
  opts.lr = 1e-3f;
  opts.threads = threads;
  opts.precision = !strcmp(precision, "bf16") ? EDDY_PREC_BF16
                   : !strcmp(precision, "fp16") ? EDDY_PREC_FP16 : EDDY_PREC_FP32;
  char err[512];
  eddy_learner_t *l = eddy_learner_new(&spec, &opts, "cpu", err, sizeof err);
  if (!l) {
    fprintf(stderr, "bench_learner: %s\n", err);
    return 1;
  }
  /* A pool of examples, cut into batches round-robin: synthetic pixels in [0,1), labels 0..9. */
  eddy_batch_t **batches = calloc(POOL / batch + 1, sizeof *batches);
  size_t nb = 0;
  unsigned seed = 12345;
  eddy_event_t ev;
  eddy_event_init(&ev);
  ev.dense = malloc(sizeof(float) * DIM);
  ev.dense_cap = DIM;
  ev.n_dense = DIM;
  ev.weight = 1;
  for (size_t made = 0; made + batch <= POOL || nb == 0; nb++) {
    batches[nb] = eddy_batch_new(DIM, batch);
    for (size_t i = 0; i < batch; i++, made++) {
      for (int k = 0; k < DIM; k++) ev.dense[k] = (float)(rand_r(&seed) % 256) / 255.0f;
      ev.label = rand_r(&seed) % 10;
      eddy_batch_push(batches[nb], &ev);
    }
  }
  float *pred = malloc(sizeof(float) * batch * 10);
  eddy_step_info_t info;
  for (size_t i = 0; i < 20; i++) { /* warm-up: primitive creation, page faults */
    eddy_learner_accumulate(l, batches[i % nb], pred, NULL);
    eddy_learner_step(l, &info);
  }
  size_t steps = 0;
  double t0 = eddy_clock_mono_s(), t;
  do {
    for (int k = 0; k < 10; k++, steps++) {
      eddy_learner_accumulate(l, batches[steps % nb], pred, NULL);
      eddy_learner_step(l, &info);
    }
    t = eddy_clock_mono_s();
  } while (t - t0 < seconds);
  printf("{\"impl\": \"eddy\", \"batch\": %zu, \"precision\": \"%s\", \"threads\": %d, "
         "\"examples_per_second\": %.1f, \"steps\": %zu, \"info\": \"%s\"}\n",
         batch, precision, threads, steps * batch / (t - t0), steps, eddy_learner_precision_info(l));
  for (size_t i = 0; i < nb; i++) eddy_batch_destroy(batches[i]);
  free(batches);
  free(pred);
  eddy_event_free(&ev);
  eddy_learner_destroy(l);
  return 0;
}
