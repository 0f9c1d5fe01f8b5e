/* libFuzzer harness for the event codecs. The input goes to eddy_event_from_json under four
 * schemas and must give exactly what the cJSON-only decoder gives (code, message, fields bit for
 * bit); every accepted event must survive binary encode/decode and (without sparse features) JSON
 * output/input bit for bit. The same bytes go to eddy_event_decode; anything it accepts must
 * re-encode to exactly those bytes. Any mismatch aborts. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/event.h"
#include "core/event_internal.h"

static void fail(const char *what) {
  fprintf(stderr, "fuzz_event: %s\n", what);
  abort();
}

static void check_same(const eddy_event_t *a, const eddy_event_t *b, const char *what) {
  if (strcmp(a->id, b->id) != 0 || a->has_ts != b->has_ts || a->ts != b->ts ||
      memcmp(&a->label, &b->label, sizeof a->label) != 0 ||
      memcmp(&a->weight, &b->weight, sizeof a->weight) != 0 || a->n_dense != b->n_dense ||
      a->n_sparse != b->n_sparse ||
      (a->n_dense && memcmp(a->dense, b->dense, a->n_dense * sizeof *a->dense) != 0) ||
      (a->n_sparse && (memcmp(a->sparse_idx, b->sparse_idx, a->n_sparse * sizeof *a->sparse_idx) != 0 ||
                       memcmp(a->sparse_val, b->sparse_val, a->n_sparse * sizeof *a->sparse_val) != 0)))
    fail(what);
}

/* Checks the invariants of an event that from_json accepted. */
static void check_valid(const eddy_event_t *ev, const eddy_event_schema_t *schema) {
  if (ev->n_dense != schema->dense_dim) fail("dense length differs from the schema");
  if (!isfinite(ev->label) || !isfinite(ev->weight) || ev->weight < 0) fail("label or weight not valid");
  for (uint32_t i = 0; i < ev->n_dense; i++)
    if (!isfinite(ev->dense[i])) fail("non-finite dense value accepted");
  for (uint32_t i = 0; i < ev->n_sparse; i++) {
    if (!isfinite(ev->sparse_val[i])) fail("non-finite sparse value accepted");
    if (ev->sparse_idx[i] >> schema->hash_bits) fail("bucket outside 2^hash_bits");
  }
  if (strlen(ev->id) >= EDDY_EVENT_ID_MAX) fail("id too long");
}

static void round_trip(const eddy_event_t *ev, const eddy_event_schema_t *schema) {
  size_t n = eddy_event_encoded_size(ev);
  uint8_t *buf = malloc(n);
  if (!buf) return;
  if (eddy_event_encode(ev, buf, n) != n) fail("encode size differs from encoded_size");
  eddy_event_t back;
  eddy_event_init(&back);
  char err[256];
  if (eddy_event_decode(buf, n, &back, err, sizeof err) != EDDY_OK) fail("decode of an encoded event failed");
  check_same(ev, &back, "binary round trip changed the event");
  free(buf);
  if (ev->n_sparse == 0) {
    char *json = eddy_event_to_json(ev);
    if (!json) fail("to_json failed on a valid event without sparse features");
    eddy_event_schema_t roomy = *schema;
    roomy.max_bytes = strlen(json) + 1;
    if (eddy_event_from_json(json, strlen(json), &roomy, &back, err, sizeof err) != EDDY_OK) {
      fprintf(stderr, "%s\n%s\n", json, err);
      fail("from_json rejected to_json output");
    }
    check_same(ev, &back, "JSON round trip changed the event");
    free(json);
  } else if (eddy_event_to_json(ev) != NULL) {
    fail("to_json wrote an event with sparse features");
  }
  eddy_event_free(&back);
}

/* eddy_event_from_json (scanner first) against the cJSON-only decoder on the same input. */
static void check_differential(eddy_err_t rc, const char *err, const eddy_event_t *ev, const uint8_t *data,
                               size_t size, const eddy_event_schema_t *schema, eddy_event_t *ref) {
  char ref_err[256];
  eddy_err_t ref_rc = eddy_event_from_json_cjson((const char *)data, size, schema, ref, ref_err, sizeof ref_err);
  if (rc != ref_rc) {
    fprintf(stderr, "code %d vs cJSON %d (%s)\n", (int)rc, (int)ref_rc, ref_rc ? ref_err : err);
    fail("from_json and the cJSON decoder return different codes");
  }
  if (rc != EDDY_OK && strcmp(err, ref_err) != 0) {
    fprintf(stderr, "\"%s\" vs cJSON \"%s\"\n", err, ref_err);
    fail("from_json and the cJSON decoder give different messages");
  }
  check_same(ev, ref, "from_json and the cJSON decoder decode different events");
}

/* The prediction-request splitters (with and without "precision"): spans lie inside the input, in
 * order, without overlap; a body that is not a wrapper is one span covering all of it; every span
 * decodes (or fails) safely; a precision name found is a NUL-terminated string. */
static void check_instances(const uint8_t *data, size_t size, const eddy_event_schema_t *schema, eddy_event_t *ev,
                            bool request) {
  enum { MAX = 64 };
  const char *spans[2 * MAX], *text = (const char *)data;
  bool wrapped = true;
  char why[256], precision[16];
  memset(precision, 'x', sizeof precision);
  long n = request ? eddy_event_split_request(text, size, spans, MAX, &wrapped, precision, sizeof precision, why,
                                              sizeof why)
                   : eddy_event_split_instances(text, size, spans, MAX, &wrapped, why, sizeof why);
  if (request && !memchr(precision, 0, sizeof precision)) fail("precision not terminated");
  if (n < 0) {
    if (!wrapped && !request) fail("split failed on a body that is not a wrapper");
    return;
  }
  if (n == 0 || n > MAX) fail("split count out of range");
  if (!wrapped && (n != 1 || spans[0] != text || spans[1] != text + size)) fail("unwrapped body is not one span");
  const char *prev = text;
  for (long i = 0; i < n; i++) {
    if (spans[2 * i] < prev || spans[2 * i + 1] < spans[2 * i] || spans[2 * i + 1] > text + size)
      fail("instance span outside the body or out of order");
    prev = spans[2 * i + 1];
    (void)eddy_event_from_json(spans[2 * i], (size_t)(spans[2 * i + 1] - spans[2 * i]), schema, ev, why, sizeof why);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const eddy_event_schema_t schemas[] = {
      {.dense_dim = 4, .hash_bits = 8, .head = EDDY_HEAD_SOFTMAX, .classes = 10},
      {.dense_dim = 0, .hash_bits = 0, .head = EDDY_HEAD_LOGISTIC},
      {.dense_dim = 2, .hash_bits = 20, .head = EDDY_HEAD_SQUARED, .max_bytes = 512},
      {.dense_dim = 784, .hash_bits = 16, .head = EDDY_HEAD_SOFTMAX, .classes = 10},
      {.dense_dim = 4, .hash_bits = 8, .head = EDDY_HEAD_SOFTMAX, .classes = 10, .label_optional = true},
  };
  eddy_event_t ev, ref;
  eddy_event_init(&ev);
  eddy_event_init(&ref);
  char err[256];
  for (size_t i = 0; i < sizeof schemas / sizeof schemas[0]; i++) {
    eddy_err_t rc = eddy_event_from_json((const char *)data, size, &schemas[i], &ev, err, sizeof err);
    check_differential(rc, err, &ev, data, size, &schemas[i], &ref);
    if (rc == EDDY_OK) {
      check_valid(&ev, &schemas[i]);
      round_trip(&ev, &schemas[i]);
    } else if (ev.n_dense || ev.n_sparse || ev.id[0] || ev.has_ts) {
      fail("failed decode left a partial event");
    }
  }
  if (eddy_event_decode(data, size, &ev, err, sizeof err) == EDDY_OK) {
    if (eddy_event_encoded_size(&ev) != size) fail("decoded binary re-encodes to another size");
    uint8_t *buf = malloc(size ? size : 1);
    if (buf) {
      if (eddy_event_encode(&ev, buf, size) != size || memcmp(buf, data, size) != 0)
        fail("decoded binary re-encodes to other bytes");
      free(buf);
    }
  }
  check_instances(data, size, &schemas[4], &ev, false);
  check_instances(data, size, &schemas[4], &ev, true);
  eddy_event_free(&ev);
  eddy_event_free(&ref);
  return 0;
}
