/* Fashion-MNIST on the GPU: one pass over the 60k training images in file order with the settings
 * of configs/fashion-mnist.ini (784-256-128-10 softmax, adagrad lr 0.02, batch 16), then test
 * accuracy on the 10k test images, in fp32 and bf16; the same accuracy band the CPU backend's test
 * (data_learner_fashion_mnist) asserts. Needs a GPU (exit 77 without) and the dataset files
 * (EDDY_FASHION_MNIST_DIR or the Debian package's folder; exit 77 without). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/dataset.h"
#include "gputest.h"
#include "model/learner.h"
#include "model/prequential.h"

#define BATCH 16

static const char *GPU = "cuda:0";

static eddy_model_spec_t fmnist_spec(void) {
  eddy_model_spec_t s;
  memset(&s, 0, sizeof s);
  s.dense_dim = 784;
  s.n_hidden = 2;
  s.hidden[0] = 256;
  s.hidden[1] = 128;
  s.head = EDDY_HEAD_SOFTMAX;
  s.classes = 10;
  return s;
}

/* Runs a dataset through the learner: training with prequential metrics into m, or predicting
 * (returns the accuracy). -1 on any error. */
static double run_pass(eddy_learner_t *l, const char *name, bool train, eddy_prequential_t *m) {
  eddy_model_spec_t spec = fmnist_spec();
  eddy_event_schema_t schema = eddy_model_event_schema(&spec);
  char err[256];
  eddy_dataset_t *ds = eddy_dataset_new(name, &schema, err, sizeof err);
  if (!ds) {
    fprintf(stderr, "%s: %s\n", name, err);
    return -1;
  }
  eddy_batch_t *b = eddy_batch_new(784, BATCH);
  float pred[BATCH * 10];
  eddy_event_t ev;
  eddy_event_init(&ev);
  size_t correct = 0, total = 0;
  bool eof = false, ok = true;
  while (ok && !eof) {
    ok = eddy_dataset_next(ds, &ev, &eof, err, sizeof err) == EDDY_OK;
    if (ok && !eof) ok = eddy_batch_push(b, &ev) == EDDY_OK;
    if (ok && (b->n == BATCH || (eof && b->n))) {
      if (train) {
        eddy_step_info_t info;
        ok = eddy_learner_accumulate(l, b, pred, NULL) == EDDY_OK;
        if (ok) eddy_prequential_add(m, pred, b->label, b->weight, b->n);
        ok = ok && eddy_learner_step(l, &info) == EDDY_OK && info.applied;
      } else {
        ok = eddy_learner_predict(l, b, pred) == EDDY_OK;
        for (size_t i = 0; ok && i < b->n; i++) {
          size_t best = 0;
          for (size_t c = 1; c < 10; c++)
            if (pred[i * 10 + c] > pred[i * 10 + best]) best = c;
          correct += best == (size_t)b->label[i];
          total++;
        }
      }
      eddy_batch_clear(b);
    }
  }
  if (!ok) fprintf(stderr, "%s: %s / %s\n", name, err, eddy_learner_last_error(l));
  eddy_event_free(&ev);
  eddy_batch_destroy(b);
  eddy_dataset_destroy(ds);
  return ok && total ? (double)correct / (double)total : ok ? 0.0 : -1.0;
}

static void one_pass(eddy_precision_t precision) {
  eddy_model_spec_t spec = fmnist_spec();
  eddy_train_opts_t o = eddy_train_opts_defaults();
  o.precision = precision;
  o.optimizer = EDDY_OPT_ADAGRAD;
  o.lr = 0.02f;
  o.seed = 42;
  char err[512];
  eddy_learner_t *l = eddy_learner_new(&spec, &o, GPU, err, sizeof err);
  GT_CHECK(l, "learner: %s", err);
  eddy_prequential_t *m = eddy_prequential_new(EDDY_HEAD_SOFTMAX, 10, 1000);
  double t0 = eddy_clock_mono_s();
  double trained = run_pass(l, "fashion-mnist:train", true, m);
  double seconds = eddy_clock_mono_s() - t0;
  GT_CHECK(trained >= 0, "training pass failed");
  eddy_metric_values_t preq = eddy_prequential_cumulative(m), win = eddy_prequential_window(m);
  double acc = run_pass(l, "fashion-mnist:test", false, NULL);
  printf("  %s: test accuracy %.4f, prequential accuracy %.4f (last 1000: %.4f), logloss %.4f; pass %.1f s\n",
         eddy_learner_precision_info(l), acc, preq.accuracy, win.accuracy, preq.logloss, seconds);
  GT_CHECK(preq.n == 60000, "prequential count %llu", (unsigned long long)preq.n);
  GT_CHECK(acc >= 0.85, "test accuracy %.4f below the CPU band (0.85)", acc);
  GT_CHECK(preq.accuracy >= 0.80, "prequential accuracy %.4f below 0.80", preq.accuracy);
  GT_CHECK(win.accuracy >= 0.84, "windowed accuracy %.4f below 0.84", win.accuracy);
  eddy_prequential_destroy(m);
  eddy_learner_destroy(l);
}

static void test_fp32(void) { one_pass(EDDY_PREC_FP32); }
static void test_bf16(void) { one_pass(EDDY_PREC_BF16); }

int main(int argc, char **argv) {
  const char *dir = getenv("EDDY_FASHION_MNIST_DIR");
  char path[512];
  snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", dir && *dir ? dir : EDDY_FASHION_MNIST_DEFAULT_DIR);
  if (access(path, R_OK) != 0) {
    printf("gpu_data_fashion_mnist: skipped: %s is absent (install dataset-fashion-mnist or set "
           "EDDY_FASHION_MNIST_DIR)\n",
           path);
    return 77;
  }
  const char *dev = getenv("EDDY_GPU_TEST_DEVICE");
  if (dev && *dev) GPU = dev;
  const gt_test_t tests[] = {GT_TEST(test_fp32), GT_TEST(test_bf16)};
  return gt_main("gpu_data_fashion_mnist", tests, sizeof tests / sizeof tests[0], argc, argv);
}
