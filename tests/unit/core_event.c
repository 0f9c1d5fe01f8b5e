/* Tests of the event codecs: JSON decoding and validation (every bad-event class with its code and
 * message), defaults, the feature hashing rule, the size cap, trailing garbage, the binary
 * encoding (layout, random round trips, every truncation) and JSON output. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "core/event.h"

static eddy_event_schema_t schema_of(uint32_t dense_dim, uint32_t hash_bits, eddy_head_t head,
                                     uint32_t classes) {
  eddy_event_schema_t s = {.dense_dim = dense_dim, .hash_bits = hash_bits, .head = head, .classes = classes};
  return s;
}

/* Decodes text from an exactly-sized heap copy, so that ASan catches any read past len. */
static eddy_err_t decode_text(const char *text, const eddy_event_schema_t *schema, eddy_event_t *ev,
                              char *errstr, size_t errstr_size) {
  size_t len = strlen(text);
  char *copy = malloc(len ? len : 1);
  assert_non_null(copy);
  memcpy(copy, text, len);
  eddy_err_t err = eddy_event_from_json(copy, len, schema, ev, errstr, errstr_size);
  free(copy);
  return err;
}

static void assert_event_empty(const eddy_event_t *ev) {
  assert_int_equal(ev->n_dense, 0);
  assert_int_equal(ev->n_sparse, 0);
  assert_string_equal(ev->id, "");
  assert_false(ev->has_ts);
}

static void test_design_example(void **state) {
  (void)state;
  eddy_event_schema_t s = schema_of(2, 18, EDDY_HEAD_SOFTMAX, 10);
  eddy_event_t ev;
  eddy_event_init(&ev);
  char err[256] = "";
  const char *json =
      "{\"id\": \"e-1\", \"ts\": 1732780000123, \"label\": 3, \"weight\": 0.5, "
      "\"dense\": [0.1, -2e-3], \"sparse\": {\"user\": \"u42\", \"price\": 3.5}}";
  assert_int_equal(decode_text(json, &s, &ev, err, sizeof err), EDDY_OK);
  assert_string_equal(ev.id, "e-1");
  assert_true(ev.has_ts);
  assert_true(ev.ts == INT64_C(1732780000123));
  assert_true(ev.label == 3.0);
  assert_true(ev.weight == 0.5f);
  assert_int_equal(ev.n_dense, 2);
  assert_true(ev.dense[0] == 0.1f);
  assert_true(ev.dense[1] == -2e-3f);
  assert_int_equal(ev.n_sparse, 2);
  assert_int_equal(ev.sparse_idx[0], (uint32_t)(XXH3_64bits("user=u42", 8) & ((1u << 18) - 1)));
  assert_true(ev.sparse_val[0] == 1.0f);
  assert_int_equal(ev.sparse_idx[1], (uint32_t)(XXH3_64bits("price", 5) & ((1u << 18) - 1)));
  assert_true(ev.sparse_val[1] == 3.5f);
  eddy_event_free(&ev);
}

static void test_defaults(void **state) {
  (void)state;
  eddy_event_schema_t s = schema_of(0, 0, EDDY_HEAD_LOGISTIC, 0);
  eddy_event_t ev;
  eddy_event_init(&ev);
  char err[256] = "";
  assert_int_equal(decode_text("{\"label\": 1}", &s, &ev, err, sizeof err), EDDY_OK);
  assert_true(ev.label == 1.0);
  assert_true(ev.weight == 1.0f);
  assert_false(ev.has_ts);
  assert_string_equal(ev.id, "");
  assert_int_equal(ev.n_dense, 0);
  assert_int_equal(ev.n_sparse, 0);
  /* empty dense and empty sparse are allowed when the model has neither */
  assert_int_equal(decode_text("{\"label\": 0, \"dense\": [], \"sparse\": {}}", &s, &ev, err, sizeof err),
                   EDDY_OK);
  /* weight 0 is allowed; unknown keys are ignored */
  assert_int_equal(decode_text("{\"label\":0,\"weight\":0,\"future\":{\"x\":[1,\"y\"]},\"v\":2}", &s, &ev,
                               err, sizeof err),
                   EDDY_OK);
  assert_true(ev.weight == 0.0f);
  assert_false(signbit(ev.weight));
  /* an event decoded after a full one does not inherit its fields */
  eddy_event_schema_t s2 = schema_of(1, 4, EDDY_HEAD_SQUARED, 0);
  assert_int_equal(decode_text("{\"id\":\"x\",\"ts\":5,\"label\":-3.25,\"weight\":2,\"dense\":[1],"
                               "\"sparse\":{\"a\":\"b\"}}",
                               &s2, &ev, err, sizeof err),
                   EDDY_OK);
  assert_true(ev.label == -3.25);
  assert_int_equal(decode_text("{\"label\":7,\"dense\":[2]}", &s2, &ev, err, sizeof err), EDDY_OK);
  assert_string_equal(ev.id, "");
  assert_false(ev.has_ts);
  assert_true(ev.weight == 1.0f);
  assert_int_equal(ev.n_sparse, 0);
  assert_true(ev.dense[0] == 2.0f);
  eddy_event_free(&ev);
  eddy_event_free(&ev); /* free twice is safe: free re-inits */
  eddy_event_free(NULL);
}

static void test_hashing_rule(void **state) {
  (void)state;
  for (uint32_t bits = 1; bits <= 30; bits++) {
    uint64_t full = XXH3_64bits("user=u42", 8);
    uint32_t h = eddy_feature_hash("user=u42", 8, bits);
    assert_true(h < (1u << bits));
    assert_int_equal(h, (uint32_t)(full & ((1u << bits) - 1)));
  }
  eddy_event_schema_t s = schema_of(0, 20, EDDY_HEAD_LOGISTIC, 0);
  eddy_event_t a, b;
  eddy_event_init(&a);
  eddy_event_init(&b);
  char err[256] = "";
  /* string value: bucket of "name=value", value 1; number: bucket of "name", that value */
  assert_int_equal(
      decode_text("{\"label\":1,\"sparse\":{\"city\":\"paris\",\"age\":31}}", &s, &a, err, sizeof err),
      EDDY_OK);
  assert_int_equal(a.sparse_idx[0], eddy_feature_hash("city=paris", 10, 20));
  assert_true(a.sparse_val[0] == 1.0f);
  assert_int_equal(a.sparse_idx[1], eddy_feature_hash("age", 3, 20));
  assert_true(a.sparse_val[1] == 31.0f);
  /* same key, same bucket, in another event and position; a different value, another bucket */
  assert_int_equal(decode_text("{\"label\":0,\"sparse\":{\"age\":2,\"city\":\"paris\",\"c2\":\"rome\"}}", &s,
                               &b, err, sizeof err),
                   EDDY_OK);
  assert_int_equal(b.sparse_idx[0], a.sparse_idx[1]);
  assert_true(b.sparse_val[0] == 2.0f);
  assert_int_equal(b.sparse_idx[1], a.sparse_idx[0]);
  assert_int_equal(b.sparse_idx[2], eddy_feature_hash("c2=rome", 7, 20));
  /* the string "31" is a categorical value, not the number 31 */
  assert_int_equal(decode_text("{\"label\":0,\"sparse\":{\"age\":\"31\"}}", &s, &b, err, sizeof err),
                   EDDY_OK);
  assert_int_equal(b.sparse_idx[0], eddy_feature_hash("age=31", 6, 20));
  assert_true(b.sparse_val[0] == 1.0f);
  /* long keys (beyond the on-stack key buffer) hash the same way */
  char name[600], json[1400], key[1300];
  memset(name, 'n', sizeof name - 1);
  name[sizeof name - 1] = '\0';
  snprintf(json, sizeof json, "{\"label\":0,\"sparse\":{\"%s\":\"%s\"}}", name, name);
  snprintf(key, sizeof key, "%s=%s", name, name);
  assert_int_equal(decode_text(json, &s, &b, err, sizeof err), EDDY_OK);
  assert_int_equal(b.sparse_idx[0], eddy_feature_hash(key, strlen(key), 20));
  /* fewer bits mask the same hash */
  eddy_event_schema_t s3 = schema_of(0, 3, EDDY_HEAD_LOGISTIC, 0);
  assert_int_equal(decode_text("{\"label\":1,\"sparse\":{\"city\":\"paris\"}}", &s3, &b, err, sizeof err),
                   EDDY_OK);
  assert_int_equal(b.sparse_idx[0], a.sparse_idx[0] & 7u);
  eddy_event_free(&a);
  eddy_event_free(&b);
}

typedef struct {
  const char *json;
  eddy_event_schema_t schema;
  eddy_err_t code;
  const char *msg; /* substring of errstr */
} bad_case_t;

static void test_bad_events(void **state) {
  (void)state;
  const eddy_event_schema_t fm = schema_of(784, 0, EDDY_HEAD_SOFTMAX, 10);
  const eddy_event_schema_t sm = schema_of(2, 16, EDDY_HEAD_SOFTMAX, 10);
  const eddy_event_schema_t lg = schema_of(0, 16, EDDY_HEAD_LOGISTIC, 0);
  const eddy_event_schema_t lg0 = schema_of(0, 0, EDDY_HEAD_LOGISTIC, 0);
  const eddy_event_schema_t sq = schema_of(1, 8, EDDY_HEAD_SQUARED, 0);
  const bad_case_t cases[] = {
      {"not json", lg, EDDY_ERR_EVENT_NOT_JSON, "not valid JSON"},
      {"", lg, EDDY_ERR_EVENT_NOT_JSON, "empty"},
      {"{\"label\":1", lg, EDDY_ERR_EVENT_NOT_JSON, "not valid JSON"},
      {"[1, 2]", lg, EDDY_ERR_EVENT_NOT_JSON, "JSON array, not an object"},
      {"42", lg, EDDY_ERR_EVENT_NOT_JSON, "JSON number, not an object"},
      {"{\"label\":1} x", lg, EDDY_ERR_EVENT_NOT_JSON, "trailing data"},
      {"{\"label\":1}{\"label\":0}", lg, EDDY_ERR_EVENT_NOT_JSON,
       "trailing data after the JSON value at byte 11"},
      {"{\"label\":NaN}", lg, EDDY_ERR_EVENT_NOT_JSON, "not valid JSON"},
      {"{\"weight\":1}", lg, EDDY_ERR_EVENT_LABEL_MISSING, "label is missing"},
      {"{\"Label\":1}", lg, EDDY_ERR_EVENT_LABEL_MISSING, "label is missing"},
      {"{\"label\":1e999}", lg, EDDY_ERR_EVENT_LABEL_NAN, "label is infinite"},
      {"{\"label\":-1e999}", sq, EDDY_ERR_EVENT_LABEL_NAN, "label is infinite"},
      {"{\"label\":12,\"dense\":[1,2]}", sm, EDDY_ERR_EVENT_LABEL_RANGE, "label 12 out of range 0..9"},
      {"{\"label\":-1,\"dense\":[1,2]}", sm, EDDY_ERR_EVENT_LABEL_RANGE, "label -1 out of range 0..9"},
      {"{\"label\":2.5,\"dense\":[1,2]}", sm, EDDY_ERR_EVENT_LABEL_RANGE,
       "label 2.5 is not a class index 0..9"},
      {"{\"label\":10,\"dense\":[1,2]}", sm, EDDY_ERR_EVENT_LABEL_RANGE, "label 10 out of range 0..9"},
      {"{\"label\":0.5}", lg, EDDY_ERR_EVENT_LABEL_RANGE, "label 0.5 out of range 0..1"},
      {"{\"label\":2}", lg, EDDY_ERR_EVENT_LABEL_RANGE, "label 2 out of range 0..1"},
      {"{\"label\":3,\"dense\":[0.1,0.2,0.3]}", fm, EDDY_ERR_EVENT_DENSE_LEN,
       "dense has 3 values, expected 784"},
      {"{\"label\":3}", fm, EDDY_ERR_EVENT_DENSE_LEN, "dense is missing, expected 784 values"},
      {"{\"label\":1,\"dense\":[1]}", lg, EDDY_ERR_EVENT_DENSE_LEN, "dense has 1 values, expected 0"},
      {"{\"label\":1,\"dense\":[1,1e999]}", sm, EDDY_ERR_EVENT_NONFINITE, "dense[1] is infinite"},
      {"{\"label\":1,\"dense\":[1e39,1]}", sm, EDDY_ERR_EVENT_NONFINITE,
       "dense[0] = 1e+39 overflows float32"},
      {"{\"label\":1,\"sparse\":{\"price\":-1e999}}", lg, EDDY_ERR_EVENT_NONFINITE,
       "sparse.price is infinite"},
      {"{\"label\":1,\"sparse\":{\"price\":4e38}}", lg, EDDY_ERR_EVENT_NONFINITE,
       "sparse.price = 4e+38 overflows"},
      {"{\"label\":1,\"weight\":1e999}", lg, EDDY_ERR_EVENT_NONFINITE, "weight is infinite"},
      {"{\"label\":1,\"ts\":1e999}", lg, EDDY_ERR_EVENT_NONFINITE, "ts is infinite"},
      {"{\"label\":1,\"weight\":\"heavy\"}", lg, EDDY_ERR_EVENT_TYPE, "weight must be a number, got string"},
      {"{\"label\":1,\"weight\":-1}", lg, EDDY_ERR_EVENT_TYPE, "weight -1 must be >= 0"},
      {"{\"label\":\"1\"}", lg, EDDY_ERR_EVENT_TYPE, "label must be a number, got string"},
      {"{\"label\":true}", lg, EDDY_ERR_EVENT_TYPE, "label must be a number, got bool"},
      {"{\"label\":null}", lg, EDDY_ERR_EVENT_TYPE, "label must be a number, got null"},
      {"{\"label\":1,\"dense\":\"abc\"}", sm, EDDY_ERR_EVENT_TYPE, "dense must be an array, got string"},
      {"{\"label\":1,\"dense\":[1,\"2\"]}", sm, EDDY_ERR_EVENT_TYPE, "dense[1] must be a number, got string"},
      {"{\"label\":1,\"sparse\":[1]}", lg, EDDY_ERR_EVENT_TYPE, "sparse must be an object, got array"},
      {"{\"label\":1,\"sparse\":{\"flag\":true}}", lg, EDDY_ERR_EVENT_TYPE,
       "sparse.flag must be a string or a number, got bool"},
      {"{\"label\":1,\"sparse\":{\"u\":\"x\"}}", lg0, EDDY_ERR_EVENT_TYPE, "hash_bits = 0"},
      {"{\"label\":1,\"id\":5}", lg, EDDY_ERR_EVENT_TYPE, "id must be a string, got number"},
      {"{\"label\":1,\"ts\":1.5}", lg, EDDY_ERR_EVENT_TYPE, "ts 1.5 must be an integer"},
      {"{\"label\":1,\"ts\":\"2024\"}", lg, EDDY_ERR_EVENT_TYPE, "ts must be a number, got string"},
      {"{\"label\":1,\"ts\":1e17}", lg, EDDY_ERR_EVENT_TYPE, "must be an integer (ms since epoch) within"},
      {"{\"label\":1,\"label\":0}", lg, EDDY_ERR_EVENT_TYPE, "duplicate key \"label\""},
      {"{\"label\":1,\"id\":\"a\\u0000b\"}", lg, EDDY_ERR_EVENT_TYPE, "\\u0000"},
  };
  eddy_event_t ev;
  eddy_event_init(&ev);
  eddy_event_schema_t full = sm;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char err[256] = "";
    /* start from a full event so that a failure visibly clears it */
    assert_int_equal(decode_text("{\"id\":\"z\",\"ts\":1,\"label\":1,\"dense\":[1,2],\"sparse\":{\"a\":1}}",
                                 &full, &ev, err, sizeof err),
                     EDDY_OK);
    eddy_err_t got = decode_text(cases[i].json, &cases[i].schema, &ev, err, sizeof err);
    if (got != cases[i].code || !strstr(err, cases[i].msg)) {
      print_error("case %zu %s: got %s \"%s\", want %s \"%s\"\n", i, cases[i].json, eddy_err_name(got), err,
                  eddy_err_name(cases[i].code), cases[i].msg);
    }
    assert_int_equal(got, cases[i].code);
    assert_non_null(strstr(err, cases[i].msg));
    assert_event_empty(&ev);
  }
  eddy_event_free(&ev);
}

/* A raw NUL or invalid UTF-8 inside a string is refused like \u0000 (cJSON would truncate at the
 * NUL or copy the bytes as they are); well-formed UTF-8 is kept. Lengths are explicit: the texts
 * hold NULs. */
static void test_raw_nul_and_bad_utf8_refused(void **state) {
  (void)state;
  const eddy_event_schema_t lg = schema_of(0, 16, EDDY_HEAD_LOGISTIC, 0);
#define T(text) text, sizeof text - 1
  static const struct {
    const char *json;
    size_t len;
    const char *msg;
  } bad[] = {
      {T("{\"label\":1,\"id\":\"a\0b\"}"), "a raw NUL byte at byte 18"},
      {T("{\"label\":1,\"sparse\":{\"u\0\":\"x\"}}"), "a raw NUL byte"},
      {T("{\"label\":1,\"id\":\"a\xff" "b\"}"), "invalid UTF-8 at byte 18"},
      {T("{\"label\":1,\"id\":\"\xc3\"}"), "invalid UTF-8"},            /* cut sequence */
      {T("{\"label\":1,\"id\":\"\xc0\x80\"}"), "invalid UTF-8"},        /* overlong NUL */
      {T("{\"label\":1,\"id\":\"\xed\xa0\x80\"}"), "invalid UTF-8"},    /* surrogate */
      {T("{\"label\":1,\"id\":\"\xf4\x90\x80\x80\"}"), "invalid UTF-8"}, /* past U+10FFFF */
      {T("{\"label\":1,\"sparse\":{\"u\":\"\xfe\"}}"), "invalid UTF-8"},
  };
#undef T
  eddy_event_t ev;
  eddy_event_init(&ev);
  char err[256];
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    eddy_err_t got = eddy_event_from_json(bad[i].json, bad[i].len, &lg, &ev, err, sizeof err);
    if (got != EDDY_ERR_EVENT_TYPE || !strstr(err, bad[i].msg))
      print_error("case %zu: got %s \"%s\", want EVENT_TYPE \"%s\"\n", i, eddy_err_name(got), err, bad[i].msg);
    assert_int_equal(got, EDDY_ERR_EVENT_TYPE);
    assert_non_null(strstr(err, bad[i].msg));
    assert_event_empty(&ev);
  }
  const char ok[] = "{\"label\":1,\"id\":\"\xc3\xa9\xf0\x9f\x98\x80\"}";
  assert_int_equal(eddy_event_from_json(ok, sizeof ok - 1, &lg, &ev, err, sizeof err), EDDY_OK);
  assert_string_equal(ev.id, "\xc3\xa9\xf0\x9f\x98\x80");
  eddy_event_free(&ev);
}

static void test_escaped_backslash_u0000_is_fine(void **state) {
  (void)state;
  /* "\\u0000" is a backslash followed by the text u0000, not a NUL */
  eddy_event_schema_t s = schema_of(0, 0, EDDY_HEAD_LOGISTIC, 0);
  eddy_event_t ev;
  eddy_event_init(&ev);
  char err[256] = "";
  assert_int_equal(decode_text("{\"label\":1,\"id\":\"a\\\\u0000\"}", &s, &ev, err, sizeof err), EDDY_OK);
  assert_string_equal(ev.id, "a\\u0000");
  eddy_event_free(&ev);
}

static void test_id_cap(void **state) {
  (void)state;
  eddy_event_schema_t s = schema_of(0, 0, EDDY_HEAD_LOGISTIC, 0);
  eddy_event_t ev;
  eddy_event_init(&ev);
  char err[256] = "", json[512], id[200];
  memset(id, 'i', EDDY_EVENT_ID_MAX - 1);
  id[EDDY_EVENT_ID_MAX - 1] = '\0';
  snprintf(json, sizeof json, "{\"label\":1,\"id\":\"%s\"}", id);
  assert_int_equal(decode_text(json, &s, &ev, err, sizeof err), EDDY_OK);
  assert_int_equal(strlen(ev.id), EDDY_EVENT_ID_MAX - 1);
  id[EDDY_EVENT_ID_MAX - 1] = 'i';
  id[EDDY_EVENT_ID_MAX] = '\0';
  snprintf(json, sizeof json, "{\"label\":1,\"id\":\"%s\"}", id);
  assert_int_equal(decode_text(json, &s, &ev, err, sizeof err), EDDY_ERR_EVENT_TOO_LARGE);
  assert_non_null(strstr(err, "id has 128 bytes, max 127"));
  eddy_event_free(&ev);
}

static void test_size_cap(void **state) {
  (void)state;
  eddy_event_schema_t s = schema_of(0, 0, EDDY_HEAD_LOGISTIC, 0);
  s.max_bytes = 64;
  eddy_event_t ev;
  eddy_event_init(&ev);
  char err[256] = "", json[200];
  /* padded with whitespace to exactly 64, then 65 bytes */
  snprintf(json, sizeof json, "{\"label\":1%*s}", 64 - 11, "");
  assert_int_equal(strlen(json), 64);
  assert_int_equal(decode_text(json, &s, &ev, err, sizeof err), EDDY_OK);
  snprintf(json, sizeof json, "{\"label\":1%*s}", 65 - 11, "");
  assert_int_equal(decode_text(json, &s, &ev, err, sizeof err), EDDY_ERR_EVENT_TOO_LARGE);
  assert_non_null(strstr(err, "event is 65 bytes, cap 64"));
  /* the cap is checked before parsing: garbage over the cap is too large, not "not JSON" */
  char big[100];
  memset(big, 'x', sizeof big);
  assert_int_equal(eddy_event_from_json(big, sizeof big, &s, &ev, err, sizeof err), EDDY_ERR_EVENT_TOO_LARGE);
  /* max_bytes 0 means the default cap */
  s.max_bytes = 0;
  size_t n = EDDY_EVENT_DEFAULT_MAX_BYTES + 1;
  char *huge = malloc(n);
  assert_non_null(huge);
  memset(huge, ' ', n);
  memcpy(huge, "{\"label\":1}", 11);
  assert_int_equal(eddy_event_from_json(huge, n, &s, &ev, err, sizeof err), EDDY_ERR_EVENT_TOO_LARGE);
  assert_int_equal(eddy_event_from_json(huge, n - 1, &s, &ev, err, sizeof err), EDDY_OK);
  free(huge);
  eddy_event_free(&ev);
}

static void test_length_not_nul(void **state) {
  (void)state;
  eddy_event_schema_t s = schema_of(0, 0, EDDY_HEAD_LOGISTIC, 0);
  eddy_event_t ev;
  eddy_event_init(&ev);
  char err[256] = "";
  /* only len bytes count: what follows in memory is not part of the event */
  const char *buf = "{\"label\":1}garbage";
  assert_int_equal(eddy_event_from_json(buf, 11, &s, &ev, err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_event_from_json(buf, 12, &s, &ev, err, sizeof err), EDDY_ERR_EVENT_NOT_JSON);
  /* trailing whitespace is fine, a NUL byte inside len is not */
  assert_int_equal(decode_text("{\"label\":1} \r\n\t", &s, &ev, err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_event_from_json("{\"label\":1}\0", 12, &s, &ev, err, sizeof err),
                   EDDY_ERR_EVENT_NOT_JSON);
  /* bad arguments */
  assert_int_equal(eddy_event_from_json(NULL, 3, &s, &ev, err, sizeof err), EDDY_ERR_INVALID_ARG);
  assert_int_equal(eddy_event_from_json(buf, 11, NULL, &ev, err, sizeof err), EDDY_ERR_INVALID_ARG);
  eddy_event_schema_t bad = schema_of(0, 31, EDDY_HEAD_LOGISTIC, 0);
  assert_int_equal(eddy_event_from_json(buf, 11, &bad, &ev, err, sizeof err), EDDY_ERR_INVALID_ARG);
  bad = schema_of(0, 0, EDDY_HEAD_SOFTMAX, 1);
  assert_int_equal(eddy_event_from_json(buf, 11, &bad, &ev, err, sizeof err), EDDY_ERR_INVALID_ARG);
  /* errstr may be NULL */
  assert_int_equal(eddy_event_from_json("x", 1, &s, &ev, NULL, 0), EDDY_ERR_EVENT_NOT_JSON);
  eddy_event_free(&ev);
}

static void test_labels_by_head(void **state) {
  (void)state;
  eddy_event_t ev;
  eddy_event_init(&ev);
  char err[256] = "";
  eddy_event_schema_t sm = schema_of(0, 0, EDDY_HEAD_SOFTMAX, 3);
  assert_int_equal(decode_text("{\"label\":2.0}", &sm, &ev, err, sizeof err), EDDY_OK);
  assert_true(ev.label == 2.0);
  assert_int_equal(decode_text("{\"label\":-0}", &sm, &ev, err, sizeof err), EDDY_OK);
  assert_false(signbit(ev.label));
  assert_int_equal(decode_text("{\"label\":3}", &sm, &ev, err, sizeof err), EDDY_ERR_EVENT_LABEL_RANGE);
  eddy_event_schema_t lg = schema_of(0, 0, EDDY_HEAD_LOGISTIC, 0);
  assert_int_equal(decode_text("{\"label\":0}", &lg, &ev, err, sizeof err), EDDY_OK);
  assert_int_equal(decode_text("{\"label\":1.0}", &lg, &ev, err, sizeof err), EDDY_OK);
  assert_true(ev.label == 1.0);
  eddy_event_schema_t sq = schema_of(0, 0, EDDY_HEAD_SQUARED, 0);
  assert_int_equal(decode_text("{\"label\":-1234.5e3}", &sq, &ev, err, sizeof err), EDDY_OK);
  assert_true(ev.label == -1234.5e3);
  assert_int_equal(decode_text("{\"label\":1e300}", &sq, &ev, err, sizeof err), EDDY_OK);
  /* float range: a double that rounds to FLT_MAX is fine, one that rounds to infinity is not */
  assert_int_equal(decode_text("{\"label\":1,\"weight\":3.40282347e38}", &sq, &ev, err, sizeof err), EDDY_OK);
  assert_true(ev.weight == 0x1.fffffep+127f);
  assert_int_equal(decode_text("{\"label\":1,\"weight\":3.4028236e38}", &sq, &ev, err, sizeof err),
                   EDDY_ERR_EVENT_NONFINITE);
  assert_non_null(strstr(err, "overflows float32"));
  /* ts bounds: 2^53 is the largest accepted magnitude; negative times are allowed */
  assert_int_equal(decode_text("{\"label\":1,\"ts\":9007199254740992}", &sq, &ev, err, sizeof err), EDDY_OK);
  assert_true(ev.ts == INT64_C(9007199254740992));
  assert_int_equal(decode_text("{\"label\":1,\"ts\":-5}", &sq, &ev, err, sizeof err), EDDY_OK);
  assert_true(ev.ts == -5);
  eddy_event_free(&ev);
}

/* Deterministic generator (xorshift64*). */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng_next(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1Dull;
}

static float rng_float(void) {
  for (;;) {
    uint32_t bits = (uint32_t)rng_next();
    float f;
    memcpy(&f, &bits, 4);
    if (isfinite(f)) return f;
  }
}

static void random_event(eddy_event_t *ev) {
  size_t id_len = rng_next() % EDDY_EVENT_ID_MAX;
  for (size_t i = 0; i < id_len; i++) ev->id[i] = (char)(1 + rng_next() % 255);
  ev->id[id_len] = '\0';
  ev->has_ts = rng_next() & 1;
  ev->ts = ev->has_ts ? (int64_t)rng_next() : 0;
  do {
    uint64_t bits = rng_next();
    memcpy(&ev->label, &bits, 8);
  } while (!isfinite(ev->label));
  ev->weight = rng_float();
  uint32_t nd = (uint32_t)(rng_next() % 900), ns = (uint32_t)(rng_next() % 60);
  free(ev->dense);
  free(ev->sparse_idx);
  free(ev->sparse_val);
  ev->dense = malloc((nd ? nd : 1) * sizeof(float));
  ev->sparse_idx = malloc((ns ? ns : 1) * sizeof(uint32_t));
  ev->sparse_val = malloc((ns ? ns : 1) * sizeof(float));
  assert_true(ev->dense && ev->sparse_idx && ev->sparse_val);
  ev->n_dense = ev->dense_cap = nd;
  ev->n_sparse = ev->sparse_cap = ns;
  for (uint32_t i = 0; i < nd; i++) ev->dense[i] = rng_float();
  for (uint32_t i = 0; i < ns; i++) {
    ev->sparse_idx[i] = (uint32_t)rng_next();
    ev->sparse_val[i] = rng_float();
  }
}

static void assert_events_equal(const eddy_event_t *a, const eddy_event_t *b) {
  assert_string_equal(a->id, b->id);
  assert_int_equal(a->has_ts, b->has_ts);
  assert_true(a->ts == b->ts);
  assert_memory_equal(&a->label, &b->label, sizeof a->label);
  assert_memory_equal(&a->weight, &b->weight, sizeof a->weight);
  assert_int_equal(a->n_dense, b->n_dense);
  assert_int_equal(a->n_sparse, b->n_sparse);
  if (a->n_dense) assert_memory_equal(a->dense, b->dense, a->n_dense * sizeof(float));
  if (a->n_sparse) {
    assert_memory_equal(a->sparse_idx, b->sparse_idx, a->n_sparse * sizeof(uint32_t));
    assert_memory_equal(a->sparse_val, b->sparse_val, a->n_sparse * sizeof(float));
  }
}

static void test_binary_layout(void **state) {
  (void)state;
  eddy_event_t ev;
  eddy_event_init(&ev);
  float dense[1] = {0.5f};
  uint32_t idx[1] = {0x01020304u};
  float val[1] = {2.0f};
  strcpy(ev.id, "a");
  ev.has_ts = true;
  ev.ts = 1;
  ev.label = 1.0;
  ev.weight = 1.0f;
  ev.n_dense = 1;
  ev.dense = dense;
  ev.n_sparse = 1;
  ev.sparse_idx = idx;
  ev.sparse_val = val;
  /* clang-format off */
  const uint8_t want[] = {
      1, 1, 1, 'a',                         /* version, flags (has ts), id length, id */
      1, 0, 0, 0, 0, 0, 0, 0,               /* ts 1 */
      0, 0, 0, 0, 0, 0, 0xf0, 0x3f,         /* label 1.0 */
      0, 0, 0x80, 0x3f,                     /* weight 1.0f */
      1, 0, 0, 0, 0, 0, 0, 0x3f,            /* n_dense 1, 0.5f */
      1, 0, 0, 0, 4, 3, 2, 1, 0, 0, 0, 0x40 /* n_sparse 1, bucket 0x01020304, 2.0f */
  };
  /* clang-format on */
  uint8_t buf[128];
  assert_int_equal(eddy_event_encoded_size(&ev), sizeof want);
  assert_int_equal(eddy_event_encode(&ev, buf, sizeof buf), sizeof want);
  assert_memory_equal(buf, want, sizeof want);
  assert_int_equal(eddy_event_encode(&ev, buf, sizeof want - 1), 0);
  /* with its Kafka origin: flag bit 1, then partition (i32) and offset (i64) after ts */
  ev.has_origin = true;
  ev.partition = 7;
  ev.offset = 0x0102030405ll;
  const uint8_t origin[] = {7, 0, 0, 0, 5, 4, 3, 2, 1, 0, 0, 0};
  assert_int_equal(eddy_event_encoded_size(&ev), sizeof want + sizeof origin);
  assert_int_equal(eddy_event_encode(&ev, buf, sizeof buf), sizeof want + sizeof origin);
  assert_int_equal(buf[1], 3);
  assert_memory_equal(buf + 12, origin, sizeof origin);
  assert_memory_equal(buf + 24, want + 12, sizeof want - 12);
  eddy_event_t o2;
  eddy_event_init(&o2);
  char e2[256] = "";
  assert_int_equal(eddy_event_decode(buf, sizeof want + sizeof origin, &o2, e2, sizeof e2), EDDY_OK);
  assert_true(o2.has_origin && o2.partition == 7 && o2.offset == 0x0102030405ll && o2.ts == 1);
  assert_int_equal(eddy_event_decode(buf, 18, &o2, e2, sizeof e2), EDDY_ERR_FORMAT); /* inside the origin */
  assert_non_null(strstr(e2, "origin"));
  assert_int_equal(eddy_event_decode(want, sizeof want, &o2, e2, sizeof e2), EDDY_OK);
  assert_false(o2.has_origin); /* decoding clears what an earlier event had */
  eddy_event_free(&o2);
  ev.has_origin = false;
  /* no ts, no id: the fields are left out */
  ev.id[0] = '\0';
  ev.has_ts = false;
  assert_int_equal(eddy_event_encoded_size(&ev), sizeof want - 9);
  eddy_event_t out;
  eddy_event_init(&out);
  char err[256] = "";
  assert_int_equal(eddy_event_decode(want, sizeof want, &out, err, sizeof err), EDDY_OK);
  assert_string_equal(out.id, "a");
  assert_true(out.ts == 1);
  assert_true(out.sparse_idx[0] == 0x01020304u);
  eddy_event_free(&out);
}

static void test_binary_round_trip(void **state) {
  (void)state;
  eddy_event_t ev, out;
  eddy_event_init(&ev);
  eddy_event_init(&out);
  char err[256] = "";
  for (int round = 0; round < 500; round++) {
    random_event(&ev);
    size_t n = eddy_event_encoded_size(&ev);
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    assert_int_equal(eddy_event_encode(&ev, buf, n), n);
    /* out is reused across decodes: arrays grow and shrink in use */
    assert_int_equal(eddy_event_decode(buf, n, &out, err, sizeof err), EDDY_OK);
    assert_events_equal(&ev, &out);
    /* re-encoding the decoded event gives the same bytes (the encoding is canonical) */
    uint8_t *again = malloc(n);
    assert_non_null(again);
    assert_int_equal(eddy_event_encode(&out, again, n), n);
    assert_memory_equal(buf, again, n);
    free(again);
    free(buf);
  }
  eddy_event_free(&ev);
  eddy_event_free(&out);
}

static void test_binary_truncated_and_garbage(void **state) {
  (void)state;
  eddy_event_t ev, out;
  eddy_event_init(&ev);
  eddy_event_init(&out);
  char err[256] = "";
  rng_state = 42;
  int checked = 0;
  for (int round = 0; round < 20; round++) {
    random_event(&ev);
    size_t n = eddy_event_encoded_size(&ev);
    uint8_t *full = malloc(n + 1);
    assert_non_null(full);
    assert_int_equal(eddy_event_encode(&ev, full, n), n);
    for (size_t len = 0; len < n; len++) {
      uint8_t *cut = malloc(len ? len : 1);
      assert_non_null(cut);
      memcpy(cut, full, len);
      assert_int_equal(eddy_event_decode(cut, len, &out, err, sizeof err), EDDY_ERR_FORMAT);
      assert_event_empty(&out);
      free(cut);
      checked++;
    }
    full[n] = 0;
    assert_int_equal(eddy_event_decode(full, n + 1, &out, err, sizeof err), EDDY_ERR_FORMAT);
    assert_non_null(strstr(err, "1 trailing bytes"));
    free(full);
  }
  assert_true(checked > 1000);
  /* header checks */
  uint8_t small[] = {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x3f, 0, 0, 0, 0, 0, 0, 0, 0};
  assert_int_equal(eddy_event_decode(small, sizeof small, &out, err, sizeof err), EDDY_OK);
  small[0] = 2;
  assert_int_equal(eddy_event_decode(small, sizeof small, &out, err, sizeof err), EDDY_ERR_FORMAT);
  assert_non_null(strstr(err, "version 2, expected 1"));
  small[0] = 1;
  small[1] = 0x80;
  assert_int_equal(eddy_event_decode(small, sizeof small, &out, err, sizeof err), EDDY_ERR_FORMAT);
  assert_non_null(strstr(err, "flags 0x80"));
  small[1] = 0;
  small[2] = 200;
  assert_int_equal(eddy_event_decode(small, sizeof small, &out, err, sizeof err), EDDY_ERR_FORMAT);
  assert_non_null(strstr(err, "id length 200"));
  small[2] = 1; /* id is byte 0: a NUL inside the id */
  uint8_t with_nul_id[sizeof small + 1] = {1, 0, 1, 0};
  assert_int_equal(eddy_event_decode(with_nul_id, sizeof with_nul_id, &out, err, sizeof err),
                   EDDY_ERR_FORMAT);
  assert_non_null(strstr(err, "NUL"));
  /* a huge claimed dense count fails on length without allocating it */
  uint8_t huge[] = {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x3f, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0};
  assert_int_equal(eddy_event_decode(huge, sizeof huge, &out, err, sizeof err), EDDY_ERR_FORMAT);
  assert_non_null(strstr(err, "dense"));
  assert_int_equal(eddy_event_decode(NULL, 0, &out, err, sizeof err), EDDY_ERR_FORMAT);
  assert_int_equal(eddy_event_decode(NULL, 5, &out, err, sizeof err), EDDY_ERR_INVALID_ARG);
  eddy_event_free(&ev);
  eddy_event_free(&out);
}

static void test_to_json(void **state) {
  (void)state;
  eddy_event_schema_t s = schema_of(3, 0, EDDY_HEAD_SOFTMAX, 10);
  eddy_event_t ev, back;
  eddy_event_init(&ev);
  eddy_event_init(&back);
  char err[256] = "";
  assert_int_equal(
      decode_text("{\"id\":\"q\\\"\\\\\\n\\u0001\",\"ts\":1732780000123,\"label\":7,\"weight\":0.1,"
                  "\"dense\":[0.1, 1e-45, -0]}",
                  &s, &ev, err, sizeof err),
      EDDY_OK);
  ev.dense[1] = 1.0f / 255.0f;
  char *json = eddy_event_to_json(&ev);
  assert_non_null(json);
  assert_non_null(strstr(json, "\"ts\":1732780000123"));
  assert_non_null(strstr(json, "\"label\":7,"));
  assert_non_null(strstr(json, "\"id\":\"q\\\"\\\\\\u000a\\u0001\""));
  assert_null(strstr(json, "sparse"));
  assert_int_equal(eddy_event_from_json(json, strlen(json), &s, &back, err, sizeof err), EDDY_OK);
  assert_events_equal(&ev, &back);
  free(json);
  /* random dense values survive the text round trip bit for bit */
  eddy_event_schema_t sq = schema_of(300, 0, EDDY_HEAD_SQUARED, 0);
  sq.max_bytes = 1u << 20;
  for (int round = 0; round < 50; round++) {
    random_event(&ev);
    ev.n_sparse = 0;
    ev.has_ts = false;
    ev.ts = 0;
    ev.id[0] = '\0';
    ev.weight = fabsf(ev.weight);
    if (ev.n_dense < 300) continue;
    ev.n_dense = 300;
    json = eddy_event_to_json(&ev);
    assert_non_null(json);
    assert_int_equal(eddy_event_from_json(json, strlen(json), &sq, &back, err, sizeof err), EDDY_OK);
    assert_events_equal(&ev, &back);
    free(json);
  }
  /* sparse features cannot be written back as names; non-finite values are not JSON */
  ev.n_sparse = 1;
  assert_null(eddy_event_to_json(&ev));
  ev.n_sparse = 0;
  ev.label = NAN;
  assert_null(eddy_event_to_json(&ev));
  eddy_event_free(&ev);
  eddy_event_free(&back);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_design_example),
      cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_hashing_rule),
      cmocka_unit_test(test_bad_events),
      cmocka_unit_test(test_raw_nul_and_bad_utf8_refused),
      cmocka_unit_test(test_escaped_backslash_u0000_is_fine),
      cmocka_unit_test(test_id_cap),
      cmocka_unit_test(test_size_cap),
      cmocka_unit_test(test_length_not_nul),
      cmocka_unit_test(test_labels_by_head),
      cmocka_unit_test(test_binary_layout),
      cmocka_unit_test(test_binary_round_trip),
      cmocka_unit_test(test_binary_truncated_and_garbage),
      cmocka_unit_test(test_to_json),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
