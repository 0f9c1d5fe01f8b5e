/* The replica's precision choice (src/serve/precision.c): the base of a version (fixed, auto within
 * the accuracy budget, mse for a squared head, unmeasured precisions, no fp32 metrics), the steps
 * down a ladder of held precisions, a request's own choice and its refusal, the load state machine
 * on an injected clock (steps down on overloaded windows, holds between the thresholds, steps up
 * one at a time after the calm time, never flaps), and the compute slots that measure the wait. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"
#include "core/clock.h"
#include "serve/precision.h"

#define BIT(p) (1u << (p))
#define ALL (BIT(EDDY_INFER_F32) | BIT(EDDY_INFER_BF16) | BIT(EDDY_INFER_F16) | BIT(EDDY_INFER_INT8))

static void metrics(eddy_metric_values_t *m, double fp32, double bf16, double fp16, double int8) {
  const double acc[4] = {fp32, bf16, fp16, int8};
  for (int p = 0; p < 4; p++)
    m[p] = (eddy_metric_values_t){.logloss = 0.5, .accuracy = acc[p], .mse = NAN, .n = isnan(acc[p]) ? 0 : 500};
}

static void test_choose(void **state) {
  (void)state;
  eddy_metric_values_t m[4];
  metrics(m, 0.86, 0.859, 0.86, 0.85);
  eddy_prec_base_t b = eddy_prec_choose(-1, 0.01, ALL, m, EDDY_HEAD_SOFTMAX);
  assert_int_equal(b.precision, EDDY_INFER_INT8); /* 0.86 - 0.85 is within 0.01 (the float slack) */
  assert_int_equal(b.why, EDDY_PREC_WHY_AUTO);
  assert_string_equal(b.text, "auto: int8, holdout accuracy 0.8500, 0.0100 below fp32's 0.8600 (budget 0.0100)");
  /* int8 beyond the budget: the next cheaper precision, bf16. */
  metrics(m, 0.86, 0.859, 0.86, 0.80);
  b = eddy_prec_choose(-1, 0.01, ALL, m, EDDY_HEAD_SOFTMAX);
  assert_int_equal(b.precision, EDDY_INFER_BF16);
  assert_string_equal(b.text, "auto: bf16, holdout accuracy 0.8590, 0.0010 below fp32's 0.8600 (budget 0.0100); int8: "
                              "holdout accuracy 0.8000, 0.0600 below fp32's 0.8600, over the budget 0.0100");
  /* Only fp32 and int8 allowed: fp32, and the text says why. */
  b = eddy_prec_choose(-1, 0.01, BIT(EDDY_INFER_F32) | BIT(EDDY_INFER_INT8), m, EDDY_HEAD_SOFTMAX);
  assert_int_equal(b.precision, EDDY_INFER_F32);
  assert_string_equal(b.text, "auto: fp32 (int8: holdout accuracy 0.8000, 0.0600 below fp32's 0.8600, over the "
                              "budget 0.0100)");
  /* Not held and beyond: the most precise held. */
  b = eddy_prec_choose(-1, 0.01, BIT(EDDY_INFER_F16) | BIT(EDDY_INFER_INT8), m, EDDY_HEAD_SOFTMAX);
  assert_int_equal(b.precision, EDDY_INFER_F16);
  /* A precision without metrics is not judged: skipped. */
  metrics(m, 0.86, NAN, 0.86, 0.80);
  b = eddy_prec_choose(-1, 0.01, ALL, m, EDDY_HEAD_SOFTMAX);
  assert_int_equal(b.precision, EDDY_INFER_F16);
  /* No fp32 metrics (an older manifest): the most precise held. */
  metrics(m, NAN, NAN, NAN, NAN);
  b = eddy_prec_choose(-1, 0.01, ALL, m, EDDY_HEAD_SOFTMAX);
  assert_int_equal(b.precision, EDDY_INFER_F32);
  assert_non_null(strstr(b.text, "no fp32 holdout accuracy in the manifest"));
  /* A larger budget takes int8. */
  metrics(m, 0.86, 0.859, 0.86, 0.80);
  assert_int_equal(eddy_prec_choose(-1, 0.07, ALL, m, EDDY_HEAD_LOGISTIC).precision, EDDY_INFER_INT8);
  /* Squared head: the relative rise of the mse. */
  for (int p = 0; p < 4; p++) m[p].mse = p == EDDY_INFER_INT8 ? 2.05 : 2.0;
  assert_int_equal(eddy_prec_choose(-1, 0.01, ALL, m, EDDY_HEAD_SQUARED).precision, EDDY_INFER_BF16);
  b = eddy_prec_choose(-1, 0.03, ALL, m, EDDY_HEAD_SQUARED);
  assert_int_equal(b.precision, EDDY_INFER_INT8);
  assert_non_null(strstr(b.text, "+2.50% against fp32's 2"));
  /* Fixed: that precision, or the most precise held when the version lacks it. */
  b = eddy_prec_choose(EDDY_INFER_BF16, 0.01, ALL, m, EDDY_HEAD_SOFTMAX);
  assert_int_equal(b.precision, EDDY_INFER_BF16);
  assert_int_equal(b.why, EDDY_PREC_WHY_CONFIG);
  b = eddy_prec_choose(EDDY_INFER_INT8, 0.01, BIT(EDDY_INFER_F32) | BIT(EDDY_INFER_BF16), m, EDDY_HEAD_SOFTMAX);
  assert_int_equal(b.precision, EDDY_INFER_F32);
  assert_string_equal(b.text, "serve.precision = int8, which this version does not have: fp32");
}

static void test_ladder(void **state) {
  (void)state;
  assert_int_equal(eddy_prec_cheaper(ALL, EDDY_INFER_F32), 3);
  assert_int_equal(eddy_prec_cheaper(ALL, EDDY_INFER_INT8), 0);
  assert_int_equal(eddy_prec_step_down(ALL, EDDY_INFER_F32, 1), EDDY_INFER_F16);
  assert_int_equal(eddy_prec_step_down(ALL, EDDY_INFER_F32, 2), EDDY_INFER_BF16);
  assert_int_equal(eddy_prec_step_down(ALL, EDDY_INFER_F32, 9), EDDY_INFER_INT8);
  const unsigned two = BIT(EDDY_INFER_F32) | BIT(EDDY_INFER_INT8);
  assert_int_equal(eddy_prec_cheaper(two, EDDY_INFER_F32), 1);
  assert_int_equal(eddy_prec_step_down(two, EDDY_INFER_F32, 1), EDDY_INFER_INT8);
  assert_int_equal(eddy_prec_step_down(two, EDDY_INFER_F32, 0), EDDY_INFER_F32);
}

/* n windows of requests waiting wait_ms each, from *t on. */
static void windows(eddy_prec_load_t *l, double *t, int n, double wait_ms, int max_steps) {
  for (int w = 0; w < n; w++) {
    for (int i = 0; i < 10; i++) eddy_prec_load_observe(l, wait_ms, *t + i * EDDY_PREC_WINDOW_S / 10, max_steps);
    *t += EDDY_PREC_WINDOW_S;
  }
}

static void test_load_state(void **state) {
  (void)state;
  eddy_prec_load_t l;
  double t = 100;
  eddy_prec_load_init(&l, 10, t);
  windows(&l, &t, 1, 20, 2);
  assert_int_equal(eddy_prec_load_tick(&l, t, 2), 1); /* one overloaded window: one step down */
  assert_true(l.last_wait_ms == 20);
  windows(&l, &t, 5, 20, 2);
  assert_int_equal(eddy_prec_load_tick(&l, t, 2), 2); /* clamped at the cheapest */
  assert_int_equal(l.downs, 2);
  /* Between half the target and the target: holds, however long. */
  windows(&l, &t, 40, 7, 2);
  assert_int_equal(eddy_prec_load_tick(&l, t, 2), 2);
  assert_int_equal(l.ups, 0);
  /* Calm: one step up after EDDY_PREC_CALM_S, the next after as long again. */
  const int calm = (int)(EDDY_PREC_CALM_S / EDDY_PREC_WINDOW_S + 0.5);
  windows(&l, &t, calm - 1, 1, 2);
  assert_int_equal(eddy_prec_load_tick(&l, t, 2), 2);
  windows(&l, &t, 1, 1, 2);
  assert_int_equal(eddy_prec_load_tick(&l, t, 2), 1);
  windows(&l, &t, calm - 1, 1, 2);
  assert_int_equal(eddy_prec_load_tick(&l, t, 2), 1);
  windows(&l, &t, 1, 1, 2);
  assert_int_equal(eddy_prec_load_tick(&l, t, 2), 0);
  assert_int_equal(l.ups, 2);
  /* A load that alternates around the target steps down and never back up: no flapping. */
  for (int i = 0; i < 20; i++) {
    windows(&l, &t, 1, 11, 3);
    windows(&l, &t, 1, 4, 3);
  }
  assert_int_equal(eddy_prec_load_tick(&l, t, 3), 3);
  assert_int_equal(l.ups, 2);
  /* Idle: windows without requests are calm, closed when someone looks. */
  assert_int_equal(eddy_prec_load_tick(&l, t + 3 * EDDY_PREC_CALM_S + 0.1, 3), 0);
  assert_int_equal(l.ups, 5);
  /* Off: target 0 never steps. */
  eddy_prec_load_init(&l, 0, t);
  windows(&l, &t, 10, 1000, 3);
  assert_int_equal(eddy_prec_load_tick(&l, t, 3), 0);
}

static eddy_prec_selector_t *selector(const char *const *sets, size_t n) {
  eddy_config_t cfg;
  char err[512];
  assert_int_equal(eddy_config_load_string(&cfg, "t.ini", "", 0, sets, n, err, sizeof err), EDDY_OK);
  eddy_prec_selector_t *s = eddy_prec_selector_new(&cfg, err, sizeof err);
  assert_non_null(s);
  eddy_config_free(&cfg);
  return s;
}

static void test_pick(void **state) {
  (void)state;
  const char *sets[] = {"serve.precision=auto", "serve.latency_target_ms=10"};
  eddy_prec_selector_t *s = selector(sets, 2);
  assert_int_equal(eddy_prec_selector_fixed(s), -1);
  assert_true(eddy_prec_selector_target_ms(s) == 10);
  eddy_prec_base_t base = {.precision = EDDY_INFER_F32, .why = EDDY_PREC_WHY_AUTO};
  eddy_infer_precision_t p;
  eddy_prec_why_t why;
  char msg[256];
  double t = eddy_clock_mono_s();
  assert_int_equal(eddy_prec_pick(s, &base, ALL, NULL, 0, t, &p, &why, msg, sizeof msg), 0);
  assert_int_equal(p, EDDY_INFER_F32);
  assert_int_equal(why, EDDY_PREC_WHY_AUTO);
  assert_int_equal(eddy_prec_pick(s, &base, ALL, "int8", 0, t, &p, &why, msg, sizeof msg), 0);
  assert_int_equal(p, EDDY_INFER_INT8);
  assert_int_equal(why, EDDY_PREC_WHY_REQUEST);
  const unsigned held = BIT(EDDY_INFER_F32) | BIT(EDDY_INFER_INT8);
  assert_int_equal(eddy_prec_pick(s, &base, held, "bf16", 0, t, &p, &why, msg, sizeof msg), -1);
  assert_string_equal(msg, "precision \"bf16\" is not held here: this replica holds fp32,int8");
  assert_int_equal(eddy_prec_pick(s, &base, held, "fp64", 0, t, &p, &why, msg, sizeof msg), -1);
  assert_string_equal(msg, "precision \"fp64\" is not one of fp32, bf16, fp16, int8: this replica holds fp32,int8");
  /* Overloaded windows: requests without a choice run one precision cheaper, for the load. */
  for (int i = 0; i < 5; i++) eddy_prec_pick(s, &base, held, NULL, 50, t + i * 0.01, &p, &why, msg, sizeof msg);
  t += EDDY_PREC_WINDOW_S + 0.01;
  assert_int_equal(eddy_prec_pick(s, &base, held, NULL, 50, t, &p, &why, msg, sizeof msg), 0);
  assert_int_equal(p, EDDY_INFER_INT8);
  assert_int_equal(why, EDDY_PREC_WHY_LOAD);
  eddy_prec_load_info_t info = eddy_prec_load_info(s, t);
  assert_int_equal(info.steps, 1);
  assert_int_equal(info.downs, 1);
  assert_true(fabs(info.last_wait_ms - 250.0 / 9) < 1e-9); /* 4 requests waited 0, 5 waited 50 */
  /* An explicit ask still wins. */
  assert_int_equal(eddy_prec_pick(s, &base, held, "fp32", 0, t, &p, &why, msg, sizeof msg), 0);
  assert_int_equal(p, EDDY_INFER_F32);
  /* Calm for long enough: back at the base. */
  info = eddy_prec_load_info(s, t + EDDY_PREC_CALM_S + 1);
  assert_int_equal(info.steps, 0);
  assert_int_equal(info.ups, 1);
  eddy_prec_selector_destroy(s);
  eddy_prec_selector_destroy(NULL);
}

typedef struct {
  eddy_prec_selector_t *s;
  double waited;
} slot_arg_t;

static void *take_slot(void *arg) {
  slot_arg_t *a = arg;
  double now;
  a->waited = eddy_prec_enter(a->s, &now);
  eddy_prec_leave(a->s);
  return NULL;
}

static void test_slots(void **state) {
  (void)state;
  /* One slot (serve.threads = 1): a second request waits for the first to leave. */
  const char *sets[] = {"serve.threads=1", "serve.latency_target_ms=5"};
  eddy_prec_selector_t *s = selector(sets, 2);
  double now;
  assert_true(eddy_prec_enter(s, &now) < 5);
  assert_int_equal(eddy_prec_load_info(s, now).slots, 1);
  slot_arg_t a = {s, 0};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, take_slot, &a), 0);
  usleep(60000);
  eddy_prec_leave(s);
  pthread_join(th, NULL);
  printf("second request waited %.1f ms\n", a.waited);
  assert_true(a.waited >= 40);
  eddy_prec_selector_destroy(s);
  /* Without a latency target nothing waits: enter returns 0 at once. */
  const char *off[] = {"serve.threads=1"};
  s = selector(off, 1);
  assert_true(eddy_prec_enter(s, &now) == 0);
  assert_true(eddy_prec_enter(s, &now) == 0);
  eddy_prec_leave(s);
  eddy_prec_leave(s);
  eddy_prec_selector_destroy(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_choose), cmocka_unit_test(test_ladder), cmocka_unit_test(test_load_state),
      cmocka_unit_test(test_pick),   cmocka_unit_test(test_slots),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
