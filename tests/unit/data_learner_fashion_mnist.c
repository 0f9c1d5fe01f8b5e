/* The learner on real data: one pass over the 60k Fashion-MNIST training images in file order with
 * the settings of configs/fashion-mnist.ini (784-256-128-10 softmax, adagrad lr 0.02, batch 16),
 * then test accuracy on the 10k test images, in fp32 and bf16. Predict-then-train prequential
 * accuracy is checked too. Skipped (exit 77) when dataset-fashion-mnist is not installed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/dataset.h"
#include "model/learner.h"
#include "model/prequential.h"

#define BATCH 16

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

/* Runs ds through the learner in batches: training (prequential metrics into m) or predicting
 * (returns accuracy). */
static double run_pass(eddy_learner_t *l, const char *name, bool train, eddy_prequential_t *m) {
  eddy_model_spec_t spec = fmnist_spec();
  eddy_event_schema_t schema = eddy_model_event_schema(&spec);
  char err[256];
  eddy_dataset_t *ds = eddy_dataset_new(name, &schema, err, sizeof err);
  if (!ds) fail_msg("%s: %s", name, err);
  eddy_batch_t *b = eddy_batch_new(784, BATCH);
  float pred[BATCH * 10];
  eddy_event_t ev;
  eddy_event_init(&ev);
  size_t correct = 0, total = 0;
  bool eof = false;
  while (!eof) {
    assert_int_equal(eddy_dataset_next(ds, &ev, &eof, err, sizeof err), EDDY_OK);
    if (!eof) assert_int_equal(eddy_batch_push(b, &ev), EDDY_OK);
    if (b->n == BATCH || (eof && b->n)) {
      if (train) {
        assert_int_equal(eddy_learner_accumulate(l, b, pred, NULL), EDDY_OK);
        eddy_prequential_add(m, pred, b->label, b->weight, b->n);
        eddy_step_info_t info;
        assert_int_equal(eddy_learner_step(l, &info), EDDY_OK);
        assert_true(info.applied);
      } else {
        assert_int_equal(eddy_learner_predict(l, b, pred), EDDY_OK);
        for (size_t i = 0; i < b->n; i++) {
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
  eddy_event_free(&ev);
  eddy_batch_destroy(b);
  eddy_dataset_destroy(ds);
  return total ? (double)correct / (double)total : 0.0;
}

static void one_pass(eddy_precision_t precision) {
  eddy_model_spec_t spec = fmnist_spec();
  eddy_train_opts_t o = eddy_train_opts_defaults();
  o.precision = precision;
  o.optimizer = EDDY_OPT_ADAGRAD;
  o.lr = 0.02f;
  o.seed = 42;
  char err[256];
  eddy_learner_t *l = eddy_learner_new(&spec, &o, "cpu", err, sizeof err);
  if (!l) fail_msg("learner: %s", err);
  eddy_prequential_t *m = eddy_prequential_new(EDDY_HEAD_SOFTMAX, 10, 1000);
  run_pass(l, "fashion-mnist:train", true, m);
  eddy_metric_values_t preq = eddy_prequential_cumulative(m), win = eddy_prequential_window(m);
  double acc = run_pass(l, "fashion-mnist:test", false, NULL);
  printf("%s: test accuracy %.4f, prequential accuracy %.4f (last 1000: %.4f), logloss %.4f\n",
         eddy_learner_precision_info(l), acc, preq.accuracy, win.accuracy, preq.logloss);
  assert_int_equal(preq.n, 60000);
  assert_true(acc >= 0.85);
  assert_true(preq.accuracy >= 0.80);
  assert_true(win.accuracy >= 0.84);
  eddy_prequential_destroy(m);
  eddy_learner_destroy(l);
}

static void test_fp32(void **state) { one_pass(EDDY_PREC_FP32); }
static void test_bf16(void **state) { one_pass(EDDY_PREC_BF16); }

int main(void) {
  const char *dir = getenv("EDDY_FASHION_MNIST_DIR");
  char path[512];
  snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", dir && *dir ? dir : EDDY_FASHION_MNIST_DEFAULT_DIR);
  if (access(path, R_OK) != 0) {
    printf("skipped: %s is absent (install dataset-fashion-mnist)\n", path);
    return 77;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fp32),
      cmocka_unit_test(test_bf16),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
