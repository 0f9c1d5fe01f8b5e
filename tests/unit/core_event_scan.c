/* Tests of the event scanner (the fast path of eddy_event_from_json) against the cJSON decoder that
 * defines the behaviour: edge cases, random number tokens and random events (valid, odd and
 * mutated) must give the same code, message and fields bit for bit, and events of the common
 * shape must be taken by the scanner rather than left to cJSON. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/event.h"
#include "core/event_internal.h"

#ifndef SCAN_RANDOM_EVENTS
#define SCAN_RANDOM_EVENTS 20000 /* per run; raise with -D for a longer private soak */
#endif
#define SCAN_RANDOM_NUMBERS (SCAN_RANDOM_EVENTS * 5)

static const eddy_event_schema_t schemas[] = {
    {.dense_dim = 4, .hash_bits = 8, .head = EDDY_HEAD_SOFTMAX, .classes = 10},
    {.dense_dim = 0, .hash_bits = 0, .head = EDDY_HEAD_LOGISTIC},
    {.dense_dim = 2, .hash_bits = 20, .head = EDDY_HEAD_SQUARED, .max_bytes = 512},
    {.dense_dim = 1, .hash_bits = 30, .head = EDDY_HEAD_SQUARED},
};
#define N_SCHEMAS (sizeof schemas / sizeof schemas[0])

static bool same_event(const eddy_event_t *a, const eddy_event_t *b) {
  return strcmp(a->id, b->id) == 0 && a->has_ts == b->has_ts && a->ts == b->ts &&
         memcmp(&a->label, &b->label, sizeof a->label) == 0 &&
         memcmp(&a->weight, &b->weight, sizeof a->weight) == 0 && a->n_dense == b->n_dense &&
         a->n_sparse == b->n_sparse &&
         (a->n_dense == 0 || memcmp(a->dense, b->dense, a->n_dense * sizeof *a->dense) == 0) &&
         (a->n_sparse == 0 ||
          (memcmp(a->sparse_idx, b->sparse_idx, a->n_sparse * sizeof *a->sparse_idx) == 0 &&
           memcmp(a->sparse_val, b->sparse_val, a->n_sparse * sizeof *a->sparse_val) == 0));
}

/* Decodes text[0..len) (from an exactly-sized heap copy, for ASan) both ways under schema and
 * fails the test on any difference. Returns whether the scanner alone decoded it. */
static bool check_agrees(const char *text, size_t len, const eddy_event_schema_t *schema, eddy_event_t *ev,
                         eddy_event_t *ref) {
  char *copy = malloc(len ? len : 1);
  assert_non_null(copy);
  memcpy(copy, text, len);
  char err[256] = "", ref_err[256] = "";
  eddy_err_t rc = eddy_event_from_json(copy, len, schema, ev, err, sizeof err);
  eddy_err_t ref_rc = eddy_event_from_json_cjson(copy, len, schema, ref, ref_err, sizeof ref_err);
  bool same = rc == ref_rc && strcmp(err, ref_err) == 0 && same_event(ev, ref);
  if (!same)
    fprintf(stderr, "differs on %.*s\n  from_json %d \"%s\", cJSON %d \"%s\"\n", (int)(len > 300 ? 300 : len),
            text, (int)rc, err, (int)ref_rc, ref_err);
  assert_true(same);
  eddy_event_t scratch;
  eddy_event_init(&scratch);
  bool scanned = eddy_event_scan_json(copy, len, schema, &scratch);
  if (scanned) {
    assert_int_equal(ref_rc, EDDY_OK);
    assert_true(same_event(&scratch, ref));
  }
  eddy_event_free(&scratch);
  free(copy);
  return scanned;
}

static bool check_text(const char *text, const eddy_event_schema_t *schema) {
  eddy_event_t ev, ref;
  eddy_event_init(&ev);
  eddy_event_init(&ref);
  bool scanned = check_agrees(text, strlen(text), schema, &ev, &ref);
  eddy_event_free(&ev);
  eddy_event_free(&ref);
  return scanned;
}

/* Inputs of the common shape: the scanner must decode them itself. */
static void test_common_shapes_are_scanned(void **state) {
  (void)state;
  static const char *const texts[] = {
      "{\"label\": 3, \"dense\": [0.1, 0.2, 0.3, 0.4]}",
      "{\"id\":\"e-1\",\"ts\":1732780000123,\"label\":9,\"weight\":0.5,\"dense\":[0,1e-3,-2.5E+2,7],"
      "\"sparse\":{\"user\":\"u42\",\"price\":3.5}}",
      " \t\r\n{ \"dense\" : [ 1 , 2 , 3 , 4 ] , \"label\" : 0 } \n",
      "{\"label\":1,\"dense\":[1,2,3,4],\"extra\":{\"a\":[true,false,null,\"x\",-1.5e-300,{}],\"b\":[]}}",
      "{\"label\":2,\"dense\":[9007199254740993,1e23,4.9e-324,123456789012345678901234567890],"
      "\"sparse\":{}}",
      "{\"label\":2,\"dense\":[3.4028234e38,-3.40282356e38,1.4e-45,-0.0],\"id\":\"caf\xc3\xa9 \xf0\x9f\x98\x80\"}",
  };
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) assert_true(check_text(texts[i], &schemas[0]));
  /* Many sparse features: the arrays grow while scanning. */
  static char many[8192];
  size_t len = (size_t)snprintf(many, sizeof many, "{\"label\":1,\"dense\":[1,2,3,4],\"sparse\":{");
  for (int i = 0; i < 300; i++)
    len += (size_t)snprintf(many + len, sizeof many - len, "%s\"f%d\":%s", i ? "," : "", i, i % 2 ? "\"v\"" : "0.5");
  snprintf(many + len, sizeof many - len, "}}");
  assert_true(check_text(many, &schemas[0]));
}

/* Odd and invalid inputs: whatever path decodes them, the result is cJSON's. */
static void test_edge_cases_agree(void **state) {
  (void)state;
  static const char *const texts[] = {
      "", " ", "{", "}", "[]", "null", "{}", "{\"label\":1}x", "{\"label\":1} {}", "{\"label\":1}\x01",
      "\xef\xbb\xbf{\"label\":1}", "{\x01\"label\":1}", "{\"label\":1,}", "{\"label\":1,\"label\":1}",
      "{\"label\":01}", "{\"label\":1.}", "{\"label\":.5}", "{\"label\":-}", "{\"label\":1e}", "{\"label\":1e+}",
      "{\"label\":+1}", "{\"label\":0x1}", "{\"label\":1.5.5}", "{\"label\":-01}", "{\"label\":1E400}",
      "{\"label\":-1e400}", "{\"label\":1e-400}", "{\"label\":NaN}", "{\"label\":Infinity}",
      "{\"label\":1,\"dense\":[1,2,3,4,]}", "{\"label\":1,\"dense\":[1,2,3]}", "{\"label\":1,\"dense\":[1,2,3,4,5]}",
      "{\"label\":1,\"dense\":[1,2,3,\"4\"]}", "{\"label\":1,\"dense\":[1,2,3,3.4028236e38]}",
      "{\"label\":1,\"dense\":[1,2,3,3.40282357e38]}", "{\"label\":1,\"dense\":[1,2,3,3.402823567e38]}",
      "{\"label\":1,\"dense\":[1,2,3,3.4028235677973366e38]}", "{\"label\":1,\"dense\":[1,2,3,4],\"dense\":[1]}",
      "{\"label\":1,\"dense\":[1,2,3,4],\"sparse\":{\"a\":true}}", "{\"label\":1,\"dense\":[1,2,3,4],\"sparse\":[]}",
      "{\"label\":1,\"dense\":[1,2,3,4],\"sparse\":{\"a\":\"b\",\"a\":\"b\",\"\":\"\",\"c\":-0}}",
      "{\"label\":1,\"dense\":[1,2,3,4],\"sparse\":{\"a\\u0062\":\"b\\n\"}}", "{\"label\":1,\"id\":\"a\\u0000b\"}",
      "{\"label\":1,\"id\":\"\\ud83d\\ude00\"}", "{\"label\":1,\"id\":\"\\ud83d\"}", "{\"label\":1,\"id\":\"\\ude00\"}",
      "{\"label\":1,\"id\":\"tab\there\"}", "{\"label\":1,\"id\":\"\\\"\"}", "{\"label\":1,\"id\":\"\\x\"}",
      "{\"label\":1,\"id\":\"0123456789012345678901234567890123456789012345678901234567890123456789012345678901"
      "234567890123456789012345678901234567890123456\"}",
      "{\"label\":1,\"id\":\"0123456789012345678901234567890123456789012345678901234567890123456789012345678901"
      "2345678901234567890123456789012345678901234567\"}",
      "{\"label\":1,\"weight\":-0}", "{\"label\":1,\"weight\":-1}", "{\"label\":1,\"weight\":1e39}",
      "{\"label\":1,\"ts\":1.5}", "{\"label\":1,\"ts\":9007199254740992}", "{\"label\":1,\"ts\":9007199254740993}",
      "{\"label\":1,\"ts\":-9007199254740992}", "{\"label\":-0}", "{\"label\":1.0e0}", "{\"label\":10}",
      "{\"label\":9.999999999999999999999}", "{\"label\":1,\"x\":[[[[[[[[[[]]]]]]]]]]}", "{\"label\":1,\"x\":tru}",
      "{\"label\":1,\"x\":nul}", "{\"label\":1,\"x\":{\"a\"}}", "{\"label\":1,\"x\":{1:2}}", "{\"label\":1,\"x\":[1 2]}",
      "{\"label\":1,\"x\":\"\\u12\"}", "{\"x\":{\"label\":5,\"dense\":1},\"label\":1}", "{\"Label\":1}",
      "{\"label\":1,\"labels\":2,\"lab\":3,\"\":4}", "{\"label\":1 \"x\":2}", "{\"label\" 1}", "{label:1}",
      "{\"label\":1,\"x\":1234567890123456789012345678901234567890123456789012345678901.5}",
      "{\"label\":1,\"x\":1234567890123456789012345678901234567890123456789012345678901.55}",
      "{\"label\":1,\"x\":1234567890123456789012345678901234567890123456789012345678901.555}",
      "{\"label\":1,\"x\":12345678901234567890123456789012345678901234567890123456789012.55}",
  };
  for (size_t s = 0; s < N_SCHEMAS; s++)
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) check_text(texts[i], &schemas[s]);
  /* An input that ends inside a value: no read past len (ASan), same answer. */
  eddy_event_t ev, ref;
  eddy_event_init(&ev);
  eddy_event_init(&ref);
  const char *full = "{\"id\":\"x\",\"ts\":12,\"label\":1,\"dense\":[1.25e-3,2],\"sparse\":{\"a\":\"b\",\"c\":3e1}}";
  for (size_t len = 0; len <= strlen(full); len++)
    for (size_t s = 0; s < N_SCHEMAS; s++) check_agrees(full, len, &schemas[s], &ev, &ref);
  eddy_event_free(&ev);
  eddy_event_free(&ref);
}

/* xorshift64*: deterministic across runs and platforms. */
static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static uint64_t rng(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545f4914f6cdd1du;
}
static uint32_t rnd(uint32_t n) {
  return (uint32_t)(rng() % n);
}

typedef struct {
  char data[8192];
  size_t len;
  bool plain; /* strict JSON of the common shape: the scanner should take it */
} text_t;

static void put(text_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text_t *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(t->data + t->len, sizeof t->data - t->len, fmt, ap);
  va_end(ap);
  if (n > 0) t->len += (size_t)n < sizeof t->data - t->len ? (size_t)n : sizeof t->data - 1 - t->len;
}

static void put_digits(text_t *t, int n) {
  for (int i = 0; i < n; i++) put(t, "%c", (char)('0' + rnd(10)));
}

/* A number token: printf of random doubles and floats, or digits built by hand. */
static void put_number(text_t *t) {
  static const char *const special[] = {"0", "-0", "1e22", "1e23", "9007199254740992", "9007199254740993",
                                        "3.4028234e38", "3.40282357e38", "1.4e-45", "7e-46", "1.17549435e-38",
                                        "2.2250738585072014e-308", "4.9e-324", "1.7976931348623157e308",
                                        "0.1e-22", "123456789012345678e-22", "1e-22", "-1e22", "1E+0"};
  union {
    uint64_t bits;
    double d;
  } u64;
  union {
    uint32_t bits;
    float f;
  } u32;
  switch (rnd(6)) {
    case 0:
      put(t, "%s", special[rnd(sizeof special / sizeof special[0])]);
      return;
    case 1:
      do u64.bits = rng();
      while (!isfinite(u64.d));
      if (rnd(2)) u64.d = ldexp(frexp(u64.d, &(int){0}), (int)rnd(260) - 130); /* within float range */
      put(t, "%.*g", 1 + (int)rnd(17), u64.d);
      return;
    case 2:
      do u32.bits = (uint32_t)rng();
      while (!isfinite(u32.f));
      put(t, "%.9g", (double)u32.f);
      return;
    case 3:
      put(t, "%.*e", (int)rnd(20), ldexp((double)(rng() >> 11), (int)rnd(160) - 120));
      return;
    default:
      if (rnd(2)) put(t, "-");
      if (rnd(4) == 0) {
        put(t, "0");
      } else {
        put(t, "%c", (char)('1' + rnd(9)));
        put_digits(t, (int)rnd(rnd(4) ? 8 : 24));
      }
      if (rnd(2)) {
        put(t, ".");
        if (rnd(3) == 0) put(t, "000000");
        put_digits(t, 1 + (int)rnd(rnd(4) ? 10 : 24));
      }
      if (rnd(2)) {
        put(t, "%c%s", rnd(2) ? 'e' : 'E', rnd(3) == 0 ? "-" : rnd(2) ? "+" : "");
        put_digits(t, 1 + (int)rnd(rnd(8) ? 2 : 4));
      }
  }
}

static void put_ws(text_t *t) {
  static const char *const ws[] = {"", "", "", " ", "\n", "\t", " \r\n "};
  if (rnd(200) == 0) {
    put(t, "%c", rnd(2) ? '\x01' : '\f'); /* whitespace to cJSON only */
    t->plain = false;
    return;
  }
  put(t, "%s", ws[rnd(sizeof ws / sizeof ws[0])]);
}

static void put_string(text_t *t) {
  static const char *const pieces[] = {"a", "user", "=", " ", "-", "1", "\xc3\xa9", "\xf0\x9f\x98\x80"};
  /* Escapes, control bytes and invalid UTF-8 (refused in a string): none is plain. */
  static const char *const escapes[] = {"\\n", "\\\"", "\\\\", "\\/", "\\u00e9", "\\ud83d\\ude00", "\\u0000",
                                        "\\ud83d", "\\x", "\\u12", "\x01", "\xff", "\xc3", "\xed\xa0\x80"};
  put(t, "\"");
  int n = (int)rnd(rnd(20) ? 12 : 150);
  for (int i = 0; i < n; i++) {
    if (rnd(60) == 0) {
      put(t, "%s", escapes[rnd(sizeof escapes / sizeof escapes[0])]);
      t->plain = false;
    } else {
      put(t, "%s", pieces[rnd(sizeof pieces / sizeof pieces[0])]);
    }
  }
  put(t, "\"");
}

static void put_any(text_t *t, int depth) {
  put_ws(t);
  switch (rnd(depth > 80 ? 4 : 7)) {
    case 0:
      put_number(t);
      break;
    case 1:
      put_string(t);
      break;
    case 2:
      put(t, "%s", rnd(3) == 0 ? "true" : rnd(2) ? "false" : "null");
      break;
    case 3:
      put(t, "[]");
      break;
    case 4:
    case 5: {
      bool object = rnd(2);
      int n = (int)rnd(depth > 3 ? 2 : 4);
      put(t, "%c", object ? '{' : '[');
      for (int i = 0; i < n; i++) {
        if (i) put(t, ",");
        if (object) {
          put_ws(t);
          put_string(t);
          put_ws(t);
          put(t, ":");
        }
        put_any(t, depth + 1);
      }
      put_ws(t);
      put(t, "%c", object ? '}' : ']');
      break;
    }
    default: /* a deep chain, around the scanner's nesting cap */
      for (int i = 0; i < 60 + (int)rnd(10); i++) put(t, "[");
      for (int i = 0; i < 60 + (int)rnd(10); i++) put(t, "]");
      t->plain = false;
      break;
  }
}

/* An event for a schema with dense_dim dims: mostly valid, sometimes not. */
static void make_event(text_t *t, uint32_t dense_dim, uint32_t classes) {
  t->len = 0;
  t->plain = true;
  int order[8] = {0, 1, 2, 3, 4, 5, 6, 7};
  for (int i = 7; i > 0; i--) {
    int j = (int)rnd((uint32_t)i + 1), tmp = order[i];
    order[i] = order[j];
    order[j] = tmp;
  }
  put_ws(t);
  put(t, "{");
  bool first = true;
  for (int i = 0; i < 8; i++) {
    int field = order[i];
    if (field >= 5 && rnd(2)) continue; /* optional: unknown keys, sparse */
    if (field <= 2 && field != 0 && rnd(3) == 0) continue;
    if (!first) put(t, ",");
    first = false;
    put_ws(t);
    switch (field) {
      case 0:
        put(t, "\"label\":");
        put_ws(t);
        if (rnd(10) == 0) put_number(t);
        else put(t, "%u", rnd(classes ? classes : 2));
        break;
      case 1:
        put(t, "\"id\":");
        put_string(t);
        break;
      case 2:
        put(t, "\"ts\":");
        put_ws(t);
        if (rnd(8) == 0) put_number(t);
        else put(t, "%lld", (long long)(rng() >> 12) - (1ll << 51));
        break;
      case 3:
        put(t, "\"weight\":");
        put_ws(t);
        put_number(t);
        break;
      case 4: {
        put(t, "\"dense\":[");
        uint32_t n = rnd(20) ? dense_dim : rnd(dense_dim + 2);
        for (uint32_t k = 0; k < n; k++) {
          if (k) put(t, ",");
          put_ws(t);
          put_number(t);
          put_ws(t);
        }
        put(t, "]");
        break;
      }
      case 5: {
        put(t, "\"sparse\":{");
        int n = (int)rnd(8);
        for (int k = 0; k < n; k++) {
          if (k) put(t, ",");
          put_ws(t);
          put_string(t);
          put(t, ":");
          put_ws(t);
          if (rnd(20) == 0) put_any(t, 1);
          else if (rnd(2)) put_string(t);
          else put_number(t);
        }
        put(t, "}");
        break;
      }
      default:
        put_string(t);
        put(t, ":");
        put_any(t, 1);
        break;
    }
    put_ws(t);
    if (rnd(100) == 0) {
      put(t, "%s", rnd(2) ? ",\"label\":1" : ",\"dense\":[]"); /* duplicate key */
      t->plain = false;
    }
  }
  put(t, "}");
  put_ws(t);
  if (rnd(50) == 0) put(t, "%s", rnd(2) ? "x" : "{}");
}

static void mutate(text_t *t) {
  if (t->len == 0) return;
  size_t at = rnd((uint32_t)t->len);
  switch (rnd(4)) {
    case 0:
      t->len = at;
      break;
    case 1:
      t->data[at] = (char)rnd(256);
      break;
    case 2:
      t->data[at] = "{}[],:\"\\-.e0 "[rnd(14)];
      break;
    default:
      if (t->len + 1 >= sizeof t->data) break;
      memmove(t->data + at + 1, t->data + at, t->len - at);
      t->data[at] = "{}[],:\"\\-.e0 "[rnd(14)];
      t->len++;
      break;
  }
}

/* Random number tokens decode to cJSON's double (label, squared head) and float (dense[0]). */
static void test_random_numbers_agree(void **state) {
  (void)state;
  eddy_event_t ev, ref;
  eddy_event_init(&ev);
  eddy_event_init(&ref);
  static text_t t;
  int scanned = 0;
  for (int i = 0; i < SCAN_RANDOM_NUMBERS; i++) {
    t.len = 0;
    put(&t, "{\"label\":");
    size_t start = t.len;
    put_number(&t);
    size_t tok_len = t.len - start;
    char token[128];
    memcpy(token, t.data + start, tok_len);
    token[tok_len] = '\0';
    put(&t, ",\"dense\":[%s]}", token);
    bool ok = check_agrees(t.data, t.len, &schemas[3], &ev, &ref);
    double v = strtod(token, NULL);
    bool fits = isfinite(v) && fabs(v) < 0x1.ffffffp+127; /* dense[0] rounds to a finite float */
    if (tok_len <= 63 && fits) assert_true(ok);
    if (ok) assert_true(memcmp(&ev.label, &v, sizeof v) == 0);
    scanned += ok;
  }
  assert_true(scanned > SCAN_RANDOM_NUMBERS / 2);
  eddy_event_free(&ev);
  eddy_event_free(&ref);
}

/* Doubles as JSON writers print them (%.17g, %.16g, Python's repr of i/255) decode to exactly what
 * strtod gives: the scanner's long-double path for 17..19 digits must round like strtod. */
static void test_long_mantissas_agree(void **state) {
  (void)state;
  eddy_event_t ev;
  eddy_event_init(&ev);
  char json[128], token[64], err[256];
  const eddy_event_schema_t schema = {.dense_dim = 1, .head = EDDY_HEAD_SQUARED};
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (int i = 0; i < 300000; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    double v;
    switch (i % 4) {
      case 0: v = (double)(x >> 11) * 0x1.0p-53; break;                 /* [0, 1) */
      case 1: v = ((double)(x >> 11) * 0x1.0p-53 - 0.5) * 2e6; break;   /* +-1e6 */
      case 2: v = (double)(x % 256) / 255.0; break;                    /* pixel values */
      default: v = ldexp((double)(x >> 11) * 0x1.0p-53, (int)(x % 60) - 30);
    }
    snprintf(token, sizeof token, i % 3 == 0 ? "%.16g" : "%.17g", v);
    int n = snprintf(json, sizeof json, "{\"label\":%s,\"dense\":[0]}", token);
    assert_int_equal(eddy_event_from_json(json, (size_t)n, &schema, &ev, err, sizeof err), EDDY_OK);
    const double want = strtod(token, NULL);
    if (memcmp(&ev.label, &want, sizeof want) != 0) fail_msg("%s: scanner %.17g, strtod %.17g", token, ev.label, want);
    assert_true(eddy_event_scan_json(json, (size_t)n, &schema, &ev)); /* the scanner itself took it */
  }
  eddy_event_free(&ev);
}

/* Random events (valid, odd, mutated) under every schema give the cJSON decoder's answer. */
static void test_random_events_agree(void **state) {
  (void)state;
  eddy_event_t ev, ref;
  eddy_event_init(&ev);
  eddy_event_init(&ref);
  static text_t t;
  int plain = 0, plain_ok = 0, plain_scanned = 0, scanned = 0;
  for (int i = 0; i < SCAN_RANDOM_EVENTS; i++) {
    const eddy_event_schema_t *schema = &schemas[rnd(N_SCHEMAS)];
    make_event(&t, schema->dense_dim, schema->classes);
    if (rnd(4) == 0) {
      mutate(&t);
      t.plain = false;
    }
    bool ok = check_agrees(t.data, t.len, schema, &ev, &ref);
    scanned += ok;
    if (t.plain && eddy_event_from_json_cjson(t.data, t.len, schema, &ref, NULL, 0) == EDDY_OK) {
      plain_ok++;
      plain_scanned += ok;
    }
    plain += t.plain;
    /* The same text under the other schemas too: every decode reuses ev's arrays. */
    for (size_t s = 0; s < N_SCHEMAS; s++) check_agrees(t.data, t.len, &schemas[s], &ev, &ref);
  }
  printf("random events: %d, plain %d (valid %d, scanned %d), scanned in all %d\n", SCAN_RANDOM_EVENTS, plain,
         plain_ok, plain_scanned, scanned);
  assert_true(plain_ok > SCAN_RANDOM_EVENTS / 10);
  assert_int_equal(plain_scanned, plain_ok); /* strict JSON of the common shape never falls back */
  eddy_event_free(&ev);
  eddy_event_free(&ref);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_common_shapes_are_scanned),
      cmocka_unit_test(test_edge_cases_agree),
      cmocka_unit_test(test_random_numbers_agree),
      cmocka_unit_test(test_long_mantissas_agree),
      cmocka_unit_test(test_random_events_agree),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
