/* The gate's building blocks in eddy_core: per-event scoring of a weights file against the
 * learner's own predictions (model/evaluate.h), the label prior (one class, random labels), the
 * paired difference and its standard error, the windowed per-class prequential accuracy, and the
 * drift detector (model/drift.h): quiet on a long stationary stream with heavy-tailed losses,
 * never fired by one outlier, firing within a few dozen events of a jump with the change point
 * estimated where the jump is. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "format/safetensors.h"
#include "model/drift.h"
#include "model/evaluate.h"
#include "model/learner.h"
#include "model/prequential.h"
#include "testutil.h"

static uint64_t lcg_state = 7;

static double rnd(void) {
  lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
  return (double)(lcg_state >> 11) * 0x1.0p-53;
}

/* n softmax events of 6 dense features, labels from label_of(i) (-1: random over 4 classes). */
static eddy_event_t *make_events(size_t n, int label) {
  eddy_event_t *evs = calloc(n, sizeof *evs);
  assert_non_null(evs);
  for (size_t i = 0; i < n; i++) {
    eddy_event_init(&evs[i]);
    evs[i].dense = malloc(6 * sizeof(float));
    assert_non_null(evs[i].dense);
    evs[i].dense_cap = evs[i].n_dense = 6;
    for (int k = 0; k < 6; k++) evs[i].dense[k] = (float)(rnd() * 2 - 1);
    evs[i].label = label >= 0 ? label : (float)(uint32_t)(rnd() * 4);
    evs[i].weight = 1;
    snprintf(evs[i].id, sizeof evs[i].id, "e%zu", i);
  }
  return evs;
}

static void free_events(eddy_event_t *evs, size_t n) {
  for (size_t i = 0; i < n; i++) eddy_event_free(&evs[i]);
  free(evs);
}

static eddy_model_spec_t spec4(void) {
  eddy_model_spec_t s;
  memset(&s, 0, sizeof s);
  s.dense_dim = 6;
  s.n_hidden = 1;
  s.hidden[0] = 8;
  s.head = EDDY_HEAD_SOFTMAX;
  s.classes = 4;
  return s;
}

static void test_model_scores_match_the_learner(void **state) {
  (void)state;
  eddy_model_spec_t s = spec4();
  eddy_train_opts_t o;
  memset(&o, 0, sizeof o);
  o.optimizer = EDDY_OPT_ADAM;
  o.lr = 0.01f;
  o.beta1 = 0.9f;
  o.beta2 = 0.999f;
  o.eps = 1e-8f;
  o.seed = 3;
  o.threads = 1;
  char err[256] = "", *dir = eddy_test_tmpdir(), path[512];
  eddy_learner_t *l = eddy_learner_new(&s, &o, "cpu", err, sizeof err);
  assert_non_null(l);
  enum { N = 150 };
  eddy_event_t *evs = make_events(N, -1);
  snprintf(path, sizeof path, "%s/w.safetensors", dir);
  assert_int_equal(eddy_learner_save_weights(l, path, "F32", NULL, 0, err, sizeof err), EDDY_OK);
  eddy_st_reader_t *r = eddy_st_reader_new(path, 0, err, sizeof err);
  assert_non_null(r);
  eddy_infer_t *m = eddy_infer_new(&s, r, EDDY_INFER_F32, err, sizeof err);
  eddy_st_reader_destroy(r);
  assert_non_null(m);
  eddy_eval_scores_t sc;
  assert_int_equal(eddy_eval_model(m, evs, N, &sc, err, sizeof err), EDDY_OK);
  assert_int_equal(sc.n, N);
  /* The learner's predictions scored by the prequential metrics give the same mean. */
  eddy_batch_t *b = eddy_batch_new(6, N);
  for (size_t i = 0; i < N; i++) assert_int_equal(eddy_batch_push(b, &evs[i]), EDDY_OK);
  float *pred = malloc(N * 4 * sizeof(float));
  assert_int_equal(eddy_learner_predict(l, b, pred), EDDY_OK);
  eddy_prequential_t *pm = eddy_prequential_new(EDDY_HEAD_SOFTMAX, 4, 0);
  eddy_prequential_add(pm, pred, b->label, b->weight, N);
  eddy_metric_values_t want = eddy_prequential_cumulative(pm);
  assert_true(fabs(sc.metrics.logloss - want.logloss) < 1e-5);
  assert_true(fabs(sc.metrics.accuracy - want.accuracy) < 1e-9);
  for (size_t i = 0; i < N; i++) {
    assert_int_equal(sc.label[i], (int32_t)evs[i].label);
    assert_true(sc.pred[i] >= 0 && sc.pred[i] < 4);
  }
  /* An event that does not fit is named. */
  evs[7].n_dense = 5;
  eddy_eval_scores_t bad;
  assert_int_equal(eddy_eval_model(m, evs, N, &bad, err, sizeof err), EDDY_ERR_SHAPE);
  assert_non_null(strstr(err, "event 7"));
  evs[7].n_dense = 6;
  free(pred);
  eddy_prequential_destroy(pm);
  eddy_batch_destroy(b);
  eddy_eval_scores_free(&sc);
  eddy_eval_scores_free(NULL);
  eddy_infer_destroy(m);
  eddy_learner_destroy(l);
  free_events(evs, N);
  eddy_test_rmdir(dir);
}

static void test_prior_and_paired(void **state) {
  (void)state;
  eddy_model_spec_t s = spec4();
  enum { N = 4000 };
  /* One class: the prior predicts it with certainty, loss about 0. */
  eddy_event_t *one = make_events(N, 2);
  eddy_eval_scores_t p1;
  assert_int_equal(eddy_eval_prior(&s, one, N, &p1), EDDY_OK);
  assert_true(p1.metrics.logloss < 1e-5);
  assert_true(p1.metrics.accuracy == 1.0);
  /* Random labels over 4 classes: the prior's loss is their entropy, about log 4. */
  eddy_event_t *rnd4 = make_events(N, -1);
  eddy_eval_scores_t p4;
  assert_int_equal(eddy_eval_prior(&s, rnd4, N, &p4), EDDY_OK);
  assert_true(fabs(p4.metrics.logloss - log(4.0)) < 0.01);
  /* Paired: a - b per event, by hand. */
  eddy_eval_scores_t a = p4, b = p1;
  double mean = 0;
  for (size_t i = 0; i < N; i++) mean += (a.loss[i] - b.loss[i]) / N;
  double var = 0;
  for (size_t i = 0; i < N; i++) var += pow(a.loss[i] - b.loss[i] - mean, 2);
  double se = sqrt(var / (N - 1) / N);
  eddy_eval_paired_t p = eddy_eval_paired(&a, &b);
  assert_int_equal(p.n, N);
  assert_true(fabs(p.diff - mean) < 1e-12);
  assert_true(fabs(p.diff - (p.mean_a - p.mean_b)) < 1e-12);
  assert_true(fabs(p.se - se) < 1e-12);
  eddy_eval_paired_t self = eddy_eval_paired(&a, &a);
  assert_true(self.diff == 0 && self.se == 0);
  eddy_eval_scores_free(&p1);
  eddy_eval_scores_free(&p4);
  free_events(one, N);
  free_events(rnd4, N);
}

static void test_prequential_per_class(void **state) {
  (void)state;
  eddy_prequential_t *m = eddy_prequential_new(EDDY_HEAD_SOFTMAX, 3, 4);
  assert_int_equal(eddy_prequential_classes(m), 3);
  /* Predictions: always class 0. Labels 0, 1, 0, 2, 1, 0: the window (4) keeps the last 4. */
  float pred[3] = {0.8f, 0.1f, 0.1f};
  float labels[6] = {0, 1, 0, 2, 1, 0};
  for (int i = 0; i < 6; i++) eddy_prequential_add(m, pred, &labels[i], NULL, 1);
  uint64_t n = 0;
  assert_true(eddy_prequential_class_accuracy(m, 0, &n) == 1.0 && n == 2);
  assert_true(eddy_prequential_class_accuracy(m, 1, &n) == 0.0 && n == 1);
  assert_true(eddy_prequential_class_accuracy(m, 2, &n) == 0.0 && n == 1);
  assert_true(isnan(eddy_prequential_class_accuracy(m, 3, &n)) && n == 0);
  eddy_prequential_reset(m);
  assert_true(isnan(eddy_prequential_class_accuracy(m, 0, &n)) && n == 0);
  eddy_prequential_destroy(m);
  m = eddy_prequential_new(EDDY_HEAD_SQUARED, 1, 4);
  assert_int_equal(eddy_prequential_classes(m), 0);
  eddy_prequential_destroy(m);
  int correct = -2;
  int32_t cls = -2;
  float p1[1] = {0.9f};
  assert_true(fabs(eddy_prequential_loss(EDDY_HEAD_LOGISTIC, 1, p1, 1, &correct, &cls) + log(0.9)) < 1e-6);
  assert_int_equal(correct, 1);
  assert_int_equal(cls, 1);
}

/* Heavy-tailed losses of a model that is right most of the time: mean about 0.45. */
static double stationary_loss(void) {
  return rnd() < 0.85 ? -0.1 * log(1 - rnd()) : 1.0 - 1.5 * log(1 - rnd());
}

static void test_drift_detector(void **state) {
  (void)state;
  eddy_drift_t d;
  eddy_drift_init(&d, 0.5, 25);
  uint64_t change = 0, seq = 0;
  /* Quiet over 200000 stationary events. */
  for (; seq < 200000; seq++) assert_false(eddy_drift_add(&d, stationary_loss(), seq, &change));
  /* One outlier never fires it. */
  assert_false(eddy_drift_add(&d, 16.0, seq++, &change));
  for (int i = 0; i < 100; i++) assert_false(eddy_drift_add(&d, stationary_loss(), seq++, &change));
  /* A jump (labels broken: about 4 nats a mistake) fires within 30 events, at the jump. */
  uint64_t jump = seq, fired = 0;
  bool warned = false;
  for (int i = 0; i < 30 && !fired; i++, seq++) {
    if (eddy_drift_add(&d, 3.0 + stationary_loss(), seq, &change)) fired = seq;
    warned |= eddy_drift_warning(&d);
  }
  assert_true(fired > 0);
  assert_true(warned);
  assert_true(change >= jump && change <= jump + 3);
  assert_false(eddy_drift_warning(&d)); /* reset by the alarm */
  /* After an alarm it learns a new baseline before it can fire again. */
  for (int i = 0; i < EDDY_DRIFT_WARMUP; i++) assert_false(eddy_drift_add(&d, 50.0, seq++, &change));
  /* threshold 0: off. */
  eddy_drift_init(&d, 0.5, 0);
  for (int i = 0; i < 5000; i++) assert_false(eddy_drift_add(&d, i < 2500 ? 0.1 : 9.0, (uint64_t)i, &change));
  assert_false(eddy_drift_warning(&d));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_model_scores_match_the_learner),
      cmocka_unit_test(test_prior_and_paired),
      cmocka_unit_test(test_prequential_per_class),
      cmocka_unit_test(test_drift_detector),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
