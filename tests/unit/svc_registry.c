/* Metrics registry: exact Prometheus text for counters, gauges and labelled histograms, escaping,
 * registration rules (names, _total, shapes), series caps and removal, concurrent updates, and
 * (when promtool from Debian's prometheus package is installed) `promtool check metrics`. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "metrics/registry.h"
#include "testutil.h"

static char errstr[512];

static eddy_metric_t *add(eddy_registry_t *reg, eddy_metric_type_t type, const char *name,
                          const char *labels) {
  errstr[0] = '\0';
  return eddy_registry_add(reg, type, name, "help text", labels, NULL, 0, errstr, sizeof errstr);
}

static void test_render_exact(void **state) {
  (void)state;
  eddy_registry_t *reg = eddy_registry_new();
  assert_non_null(reg);
  eddy_metric_t *events =
      eddy_registry_add(reg, EDDY_METRIC_COUNTER, "eddy_ingest_events_total", "Events by result",
                        "result", NULL, 0, errstr, sizeof errstr);
  assert_non_null(events);
  eddy_series_add(eddy_metric_series(events, (const char *[]){"ok"}), 41);
  eddy_series_add(eddy_metric_series(events, (const char *[]){"ok"}), 1);
  eddy_series_add(eddy_metric_series(events, (const char *[]){"invalid"}), 3);
  eddy_series_add(eddy_metric_series(events, (const char *[]){"invalid"}), -5); /* ignored */
  eddy_metric_t *lag = eddy_registry_add(reg, EDDY_METRIC_GAUGE, "eddy_kafka_consumer_lag",
                                         "Lag\\per \"partition\"\nsecond line", "topic,partition",
                                         NULL, 0, errstr, sizeof errstr);
  assert_non_null(lag);
  eddy_series_set(eddy_metric_series(lag, (const char *[]){"ev\"t\\s\n", "0"}), 12.5);
  eddy_series_t *g = eddy_metric_series(lag, (const char *[]){"events", "1"});
  eddy_series_set(g, 7);
  eddy_series_add(g, -2);
  static const double bounds[] = {0.01, 0.1, 1};
  eddy_metric_t *h = eddy_registry_add(reg, EDDY_METRIC_HISTOGRAM, "eddy_append_seconds",
                                       "Append time", "", bounds, 3, errstr, sizeof errstr);
  assert_non_null(h);
  eddy_series_t *hs = eddy_metric_series(h, NULL);
  eddy_series_observe(hs, 0.005);
  eddy_series_observe(hs, 0.01); /* le is inclusive */
  eddy_series_observe(hs, 0.5);
  eddy_series_observe(hs, 7);
  eddy_metric_t *inf = add(reg, EDDY_METRIC_GAUGE, "eddy_special", "");
  eddy_series_set(eddy_metric_series(inf, NULL), -INFINITY);

  size_t len = 0;
  char *text = eddy_registry_render(reg, &len);
  assert_non_null(text);
  const char *want =
      "# HELP eddy_ingest_events_total Events by result\n"
      "# TYPE eddy_ingest_events_total counter\n"
      "eddy_ingest_events_total{result=\"ok\"} 42\n"
      "eddy_ingest_events_total{result=\"invalid\"} 3\n"
      "# HELP eddy_kafka_consumer_lag Lag\\\\per \"partition\"\\nsecond line\n"
      "# TYPE eddy_kafka_consumer_lag gauge\n"
      "eddy_kafka_consumer_lag{topic=\"ev\\\"t\\\\s\\n\",partition=\"0\"} 12.5\n"
      "eddy_kafka_consumer_lag{topic=\"events\",partition=\"1\"} 5\n"
      "# HELP eddy_append_seconds Append time\n"
      "# TYPE eddy_append_seconds histogram\n"
      "eddy_append_seconds_bucket{le=\"0.01\"} 2\n"
      "eddy_append_seconds_bucket{le=\"0.1\"} 2\n"
      "eddy_append_seconds_bucket{le=\"1\"} 3\n"
      "eddy_append_seconds_bucket{le=\"+Inf\"} 4\n"
      "eddy_append_seconds_sum 7.515\n"
      "eddy_append_seconds_count 4\n"
      "# HELP eddy_special help text\n"
      "# TYPE eddy_special gauge\n"
      "eddy_special -Inf\n";
  assert_string_equal(text, want);
  assert_int_equal(len, strlen(want));
  assert_true(eddy_series_value(hs) == 4);
  free(text);
  eddy_registry_destroy(reg);
}

static void test_labelled_histogram_and_remove(void **state) {
  (void)state;
  eddy_registry_t *reg = eddy_registry_new();
  static const double bounds[] = {1, 2};
  eddy_metric_t *h = eddy_registry_add(reg, EDDY_METRIC_HISTOGRAM, "eddy_x_seconds", "x", "op",
                                       bounds, 2, errstr, sizeof errstr);
  assert_non_null(h);
  eddy_series_observe(eddy_metric_series(h, (const char *[]){"put"}), 1.5);
  eddy_metric_t *g = add(reg, EDDY_METRIC_GAUGE, "eddy_g", "p");
  eddy_series_t *s0 = eddy_metric_series(g, (const char *[]){"0"});
  eddy_series_t *s1 = eddy_metric_series(g, (const char *[]){"1"});
  eddy_series_set(s0, 4);
  eddy_series_set(s1, 9);
  eddy_metric_remove(g, (const char *[]){"0"});
  eddy_series_set(s0, 5); /* handle stays valid while hidden */
  char *text = eddy_registry_render(reg, NULL);
  assert_non_null(text);
  assert_non_null(strstr(text,
                         "eddy_x_seconds_bucket{op=\"put\",le=\"1\"} 0\n"
                         "eddy_x_seconds_bucket{op=\"put\",le=\"2\"} 1\n"
                         "eddy_x_seconds_bucket{op=\"put\",le=\"+Inf\"} 1\n"
                         "eddy_x_seconds_sum{op=\"put\"} 1.5\n"
                         "eddy_x_seconds_count{op=\"put\"} 1\n"));
  assert_null(strstr(text, "eddy_g{p=\"0\"}"));
  assert_non_null(strstr(text, "eddy_g{p=\"1\"} 9\n"));
  free(text);
  /* asking for it again shows it, from 0 */
  assert_ptr_equal(eddy_metric_series(g, (const char *[]){"0"}), s0);
  assert_true(eddy_series_value(s0) == 0);
  text = eddy_registry_render(reg, NULL);
  assert_non_null(strstr(text, "eddy_g{p=\"0\"} 0\n"));
  free(text);
  eddy_registry_destroy(reg);
}

static void test_registration_rules(void **state) {
  (void)state;
  eddy_registry_t *reg = eddy_registry_new();
  assert_null(add(reg, EDDY_METRIC_COUNTER, "eddy_events", ""));
  assert_string_equal(errstr, "counter eddy_events: a counter's name must end in _total");
  assert_null(add(reg, EDDY_METRIC_GAUGE, "eddy_events_total", ""));
  assert_string_equal(errstr, "gauge eddy_events_total: only counters' names end in _total");
  assert_null(add(reg, EDDY_METRIC_GAUGE, "9lives", ""));
  assert_string_equal(errstr, "metric name \"9lives\" is not valid");
  assert_null(add(reg, EDDY_METRIC_GAUGE, "eddy-x", ""));
  assert_null(add(reg, EDDY_METRIC_GAUGE, "eddy_x", "a,b-c"));
  assert_string_equal(errstr, "metric eddy_x: label name \"b-c\" is not valid");
  assert_null(add(reg, EDDY_METRIC_GAUGE, "eddy_x", "a,a"));
  assert_string_equal(errstr, "metric eddy_x: label name \"a\" given twice");
  assert_null(add(reg, EDDY_METRIC_GAUGE, "eddy_x", "__reserved"));
  assert_null(eddy_registry_add(reg, EDDY_METRIC_GAUGE, "eddy_x", "", NULL, NULL, 0, errstr,
                                sizeof errstr));
  assert_string_equal(errstr, "metric eddy_x: empty help text");
  static const double bad[] = {1, 1};
  assert_null(eddy_registry_add(reg, EDDY_METRIC_HISTOGRAM, "eddy_h", "h", "le", (double[]){1}, 1,
                                errstr, sizeof errstr));
  assert_string_equal(errstr, "metric eddy_h: label name \"le\" is not valid");
  assert_null(eddy_registry_add(reg, EDDY_METRIC_HISTOGRAM, "eddy_h", "h", "", bad, 2, errstr,
                                sizeof errstr));
  assert_null(eddy_registry_add(reg, EDDY_METRIC_HISTOGRAM, "eddy_h", "h", "", NULL, 0, errstr,
                                sizeof errstr));
  /* the same shape twice is the same family; another shape under the name is refused */
  eddy_metric_t *a = add(reg, EDDY_METRIC_GAUGE, "eddy_buffer_events", "");
  assert_non_null(a);
  assert_ptr_equal(add(reg, EDDY_METRIC_GAUGE, "eddy_buffer_events", ""), a);
  assert_null(add(reg, EDDY_METRIC_GAUGE, "eddy_buffer_events", "x"));
  assert_string_equal(errstr,
                      "metric eddy_buffer_events is already registered as a gauge with other "
                      "labels or buckets");
  /* missing label values, NULL handles */
  eddy_metric_t *l = add(reg, EDDY_METRIC_GAUGE, "eddy_l", "a,b");
  assert_null(eddy_metric_series(l, (const char *[]){"x", NULL}));
  assert_null(eddy_metric_series(l, NULL));
  eddy_series_add(NULL, 1);
  eddy_series_set(NULL, 1);
  eddy_series_observe(NULL, 1);
  assert_true(eddy_series_value(NULL) == 0);
  eddy_registry_destroy(reg);
  eddy_registry_destroy(NULL);
}

static void test_counter_set_and_series_cap(void **state) {
  (void)state;
  eddy_registry_t *reg = eddy_registry_new();
  eddy_series_t *c = eddy_metric_series(add(reg, EDDY_METRIC_COUNTER, "eddy_c_total", ""), NULL);
  eddy_series_set(c, 10);
  eddy_series_set(c, 4); /* a counter never goes down */
  assert_true(eddy_series_value(c) == 10);
  eddy_series_add(c, NAN);
  assert_true(eddy_series_value(c) == 10);
  eddy_metric_t *many = add(reg, EDDY_METRIC_GAUGE, "eddy_many", "i");
  char v[32];
  for (int i = 0; i < EDDY_METRIC_MAX_SERIES; i++) {
    snprintf(v, sizeof v, "%d", i);
    assert_non_null(eddy_metric_series(many, (const char *[]){v}));
  }
  assert_null(eddy_metric_series(many, (const char *[]){"one-more"}));
  assert_non_null(eddy_metric_series(many, (const char *[]){"17"})); /* existing ones still found */
  eddy_registry_destroy(reg);
}

typedef struct {
  eddy_series_t *c, *h;
  eddy_registry_t *reg;
} race_t;

static void *hammer(void *arg) {
  race_t *r = arg;
  for (int i = 0; i < 20000; i++) {
    eddy_series_add(r->c, 1);
    eddy_series_observe(r->h, (i % 3) * 0.5);
    if (i % 5000 == 0) free(eddy_registry_render(r->reg, NULL));
  }
  return NULL;
}

static int collect_calls;
static void on_collect(void *ctx) {
  collect_calls++;
  eddy_series_set(ctx, 99);
}

static void test_threads_and_collect(void **state) {
  (void)state;
  eddy_registry_t *reg = eddy_registry_new();
  static const double b[] = {0.25, 0.75};
  race_t r = {.c = eddy_metric_series(add(reg, EDDY_METRIC_COUNTER, "eddy_n_total", ""), NULL),
              .h = eddy_metric_series(eddy_registry_add(reg, EDDY_METRIC_HISTOGRAM, "eddy_v", "v",
                                                        "", b, 2, errstr, sizeof errstr),
                                      NULL),
              .reg = reg};
  pthread_t t[4];
  for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, hammer, &r);
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  assert_true(eddy_series_value(r.c) == 80000);
  assert_true(eddy_series_value(r.h) == 80000);
  eddy_series_t *g = eddy_metric_series(add(reg, EDDY_METRIC_GAUGE, "eddy_refreshed", ""), NULL);
  assert_int_equal(eddy_registry_on_collect(reg, on_collect, g), EDDY_OK);
  char *text = eddy_registry_render(reg, NULL);
  assert_int_equal(collect_calls, 1);
  assert_non_null(strstr(text, "eddy_refreshed 99\n"));
  assert_non_null(strstr(text, "eddy_n_total 80000\n"));
  /* i % 3 = 0, 1, 2 -> 0, 0.5, 1.0: buckets 0.25 / 0.75 / +Inf get a third each (cumulative) */
  assert_non_null(strstr(text, "eddy_v_bucket{le=\"+Inf\"} 80000\n"));
  free(text);
  eddy_registry_destroy(reg);
}

static void test_promtool(void **state) {
  (void)state;
  if (system("command -v promtool >/dev/null 2>&1") != 0) {
    print_message("promtool not installed (Debian package prometheus): skipped\n");
    skip();
  }
  eddy_registry_t *reg = eddy_registry_new();
  eddy_metric_t *ev =
      eddy_registry_add(reg, EDDY_METRIC_COUNTER, "eddy_ingest_events_total",
                        "Events stored, by result", "result", NULL, 0, errstr, sizeof errstr);
  eddy_series_add(eddy_metric_series(ev, (const char *[]){"ok"}), 5);
  eddy_metric_t *lag =
      eddy_registry_add(reg, EDDY_METRIC_GAUGE, "eddy_kafka_consumer_lag", "Consumer lag",
                        "topic,partition", NULL, 0, errstr, sizeof errstr);
  eddy_series_set(eddy_metric_series(lag, (const char *[]){"a\"b\\c\nd", "3"}), 2);
  static const double b[] = {0.001, 0.01, 0.1};
  eddy_metric_t *h = eddy_registry_add(reg, EDDY_METRIC_HISTOGRAM, "eddy_ingest_append_seconds",
                                       "Append time", "", b, 3, errstr, sizeof errstr);
  eddy_series_observe(eddy_metric_series(h, NULL), 0.004);
  char *text = eddy_registry_render(reg, NULL);
  char *dir = eddy_test_tmpdir();
  char *path = eddy_test_write_file(dir, "metrics.txt", text, strlen(text));
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "promtool check metrics < '%s' > '%s/out.txt' 2>&1", path, dir);
  int rc = system(cmd);
  if (rc != 0) {
    snprintf(cmd, sizeof cmd, "cat '%s/out.txt' >&2", dir);
    (void)system(cmd);
  }
  assert_int_equal(rc, 0);
  free(path);
  free(text);
  eddy_test_rmdir(dir);
  eddy_registry_destroy(reg);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_render_exact),
      cmocka_unit_test(test_labelled_histogram_and_remove),
      cmocka_unit_test(test_registration_rules),
      cmocka_unit_test(test_counter_set_and_series_cap),
      cmocka_unit_test(test_threads_and_collect),
      cmocka_unit_test(test_promtool),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
