/* eddy_event_split_instances: the /v1/predict body splitter. One event is one span covering the
 * body; a wrapper yields each instance's exact text; malformed wrappers are refused with the
 * instance named; the cap holds. eddy_event_split_request: the same with a "precision" in the
 * wrapper (either order) or in a single event. And label_optional: a missing label decodes as 0. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/event.h"

static long split(const char *body, const char **spans, size_t max, bool *wrapped, char *why) {
  return eddy_event_split_instances(body, strlen(body), spans, max, wrapped, why, 256);
}

static void test_single_event(void **state) {
  (void)state;
  const char *spans[8], *body = " {\"dense\":[1,2],\"label\":1} ";
  char why[256];
  bool wrapped = true;
  assert_int_equal(split(body, spans, 4, &wrapped, why), 1);
  assert_false(wrapped);
  assert_ptr_equal(spans[0], body);
  assert_ptr_equal(spans[1], body + strlen(body));
}

static void test_wrapper(void **state) {
  (void)state;
  const char *spans[8];
  const char *body = "{ \"instances\" : [ {\"dense\":[1,2]} ,{\"id\":\"a]}\\\"\",\"dense\":[3,4]}]\n}";
  char why[256], text[64];
  bool wrapped = false;
  assert_int_equal(split(body, spans, 4, &wrapped, why), 2);
  assert_true(wrapped);
  snprintf(text, sizeof text, "%.*s", (int)(spans[1] - spans[0]), spans[0]);
  assert_string_equal(text, "{\"dense\":[1,2]}");
  snprintf(text, sizeof text, "%.*s", (int)(spans[3] - spans[2]), spans[2]);
  assert_string_equal(text, "{\"id\":\"a]}\\\"\",\"dense\":[3,4]}");
}

static void test_refusals(void **state) {
  (void)state;
  static const struct {
    const char *body, *why;
  } cases[] = {
      {"{\"instances\":[]}", "\"instances\" is empty"},
      {"{\"instances\":{}}", "\"instances\" must be an array of events"},
      {"{\"instances\":[{\"dense\":[1]}", "expected ',' or ']' after instances[0]"},
      {"{\"instances\":[{\"dense\":[1]},{\"dense\":[2]", "instances[1] is not valid JSON"},
      {"{\"instances\":[{}],\"extra\":1}", "unexpected field after \"instances\""},
      {"{\"instances\":[{}]} x", "text after the request object"},
      {"{\"instances\":[{},{},{},{},{}]}", "more than 4 instances in one request"},
  };
  const char *spans[8];
  char why[256];
  bool wrapped;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    why[0] = 0;
    assert_int_equal(split(cases[i].body, spans, 4, &wrapped, why), -1);
    assert_true(wrapped);
    if (!strstr(why, cases[i].why)) fail_msg("case %zu: \"%s\" lacks \"%s\"", i, why, cases[i].why);
  }
}

static void test_request_precision(void **state) {
  (void)state;
  const char *spans[8];
  char why[256], precision[16], text[64];
  bool wrapped = false;
  static const struct {
    const char *body;
    long n;
    bool wrapped;
    const char *precision;
  } ok[] = {
      {"{\"instances\":[{\"dense\":[1]},{\"dense\":[2]}],\"precision\":\"int8\"}", 2, true, "int8"},
      {" { \"precision\" : \"fp16\" , \"instances\" : [ {\"dense\":[1]} ] } ", 1, true, "fp16"},
      {"{\"instances\":[{\"dense\":[1]}]}", 1, true, ""},
      {"{\"dense\":[1,2],\"precision\":\"bf16\",\"label\":1}", 1, false, "bf16"},
      {"{\"dense\":[1,2],\"x\":{\"precision\":\"bf16\"}}", 1, false, ""}, /* not at the top level */
      {"{\"dense\":[1,2],\"precision\":\"int8\"", 1, false, ""},              /* broken: the decoder says so */
      {"[1,2]", 1, false, ""},
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    long n = eddy_event_split_request(ok[i].body, strlen(ok[i].body), spans, 4, &wrapped, precision, sizeof precision,
                                      why, sizeof why);
    if (n != ok[i].n) fail_msg("case %zu: %ld (%s)", i, n, why);
    assert_int_equal(wrapped, ok[i].wrapped);
    assert_string_equal(precision, ok[i].precision);
  }
  const char *body = ok[1].body;
  eddy_event_split_request(body, strlen(body), spans, 4, &wrapped, precision, sizeof precision, why, sizeof why);
  snprintf(text, sizeof text, "%.*s", (int)(spans[1] - spans[0]), spans[0]);
  assert_string_equal(text, "{\"dense\":[1]}");
  static const struct {
    const char *body, *why;
  } bad[] = {
      {"{\"instances\":[{}],\"extra\":1}", "unexpected field \"extra\" (only \"instances\" and \"precision\" are allowed)"},
      {"{\"extra\":1,\"instances\":[{}]}", "unexpected field \"extra\""},
      {"{\"instances\":[{}],\"precision\":8}", "\"precision\" must be a string such as \"int8\""},
      {"{\"dense\":[1],\"precision\":[\"int8\"]}", "\"precision\" must be a string"},
      {"{\"instances\":[{}],\"precision\":\"int8\"", "not valid JSON after \"instances\""},
      {"{\"instances\":[]}", "\"instances\" is empty"},
      {"{\"instances\":[{}]} x", "text after the request object"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    why[0] = 0;
    assert_int_equal(
        eddy_event_split_request(bad[i].body, strlen(bad[i].body), spans, 4, &wrapped, precision, sizeof precision,
                                 why, sizeof why),
        -1);
    if (!strstr(why, bad[i].why)) fail_msg("bad case %zu: \"%s\" lacks \"%s\"", i, why, bad[i].why);
  }
}

static void test_label_optional(void **state) {
  (void)state;
  eddy_event_schema_t schema = {.dense_dim = 2, .head = EDDY_HEAD_SOFTMAX, .classes = 3};
  eddy_event_t ev;
  eddy_event_init(&ev);
  char err[256];
  const char *body = "{\"dense\":[0.5,1]}";
  assert_int_equal(eddy_event_from_json(body, strlen(body), &schema, &ev, err, sizeof err),
                   EDDY_ERR_EVENT_LABEL_MISSING);
  schema.label_optional = true;
  assert_int_equal(eddy_event_from_json(body, strlen(body), &schema, &ev, err, sizeof err), EDDY_OK);
  assert_true(ev.label == 0.0);
  assert_true(ev.dense[1] == 1.0f);
  const char *bad = "{\"dense\":[0.5,1],\"label\":7}"; /* a present label is still checked */
  assert_int_equal(eddy_event_from_json(bad, strlen(bad), &schema, &ev, err, sizeof err), EDDY_ERR_EVENT_LABEL_RANGE);
  eddy_event_free(&ev);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_single_event),
      cmocka_unit_test(test_wrapper),
      cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_request_precision),
      cmocka_unit_test(test_label_optional),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
