/* Labeled events: JSON decoding with full validation against a schema (a single-pass scanner for
 * the common shape, cJSON for everything else and for every error), sparse feature hashing
 * (XXH3-64), the versioned little-endian binary encoding, and JSON output for datasets. A decode
 * either yields a whole valid event or a specific EDDY_ERR_EVENT_* / EDDY_ERR_FORMAT code with a
 * message naming the field and value; on failure the event is left empty. */
#include "core/event.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "core/event_internal.h"
#include "core/json.h"

#define EVENT_BINARY_VERSION 1
#define EVENT_FLAG_HAS_TS 0x01u
#define EVENT_FLAG_ORIGIN 0x02u
#define EVENT_MAX_HASH_BITS 30
#define EVENT_TS_LIMIT 9007199254740992.0 /* 2^53: integers a JSON number holds exactly */
#define EVENT_KEY_STACK 256               /* "name=value" keys up to this length need no malloc */

void eddy_event_init(eddy_event_t *ev) {
  memset(ev, 0, sizeof *ev);
  ev->weight = 1.0f;
}

void eddy_event_free(eddy_event_t *ev) {
  if (!ev) return;
  free(ev->dense);
  free(ev->sparse_idx);
  free(ev->sparse_val);
  eddy_event_init(ev);
}

/* Empties ev (keeping its arrays) so that a failed decode never leaves a partial event behind. */
static void event_clear(eddy_event_t *ev) {
  ev->id[0] = '\0';
  ev->ts = 0;
  ev->has_ts = false;
  ev->label = 0.0;
  ev->weight = 1.0f;
  ev->n_dense = 0;
  ev->n_sparse = 0;
  ev->has_origin = false;
  ev->partition = 0;
  ev->offset = 0;
}

static eddy_err_t event_reserve_dense(eddy_event_t *ev, uint32_t n) {
  if (n <= ev->dense_cap && (ev->dense || n == 0)) return EDDY_OK;
  float *dense = realloc(ev->dense, (size_t)n * sizeof *dense);
  if (!dense) return EDDY_ERR_NOMEM;
  ev->dense = dense;
  ev->dense_cap = n;
  return EDDY_OK;
}

static eddy_err_t event_reserve_sparse(eddy_event_t *ev, uint32_t n) {
  if (n <= ev->sparse_cap && ((ev->sparse_idx && ev->sparse_val) || n == 0)) return EDDY_OK;
  uint32_t *idx = realloc(ev->sparse_idx, (size_t)n * sizeof *idx);
  if (!idx) return EDDY_ERR_NOMEM;
  ev->sparse_idx = idx;
  float *val = realloc(ev->sparse_val, (size_t)n * sizeof *val);
  if (!val) return EDDY_ERR_NOMEM;
  ev->sparse_val = val;
  ev->sparse_cap = n;
  return EDDY_OK;
}

uint32_t eddy_feature_hash(const char *key, size_t len, uint32_t hash_bits) {
  uint64_t h = XXH3_64bits(key, len);
  if (hash_bits >= 32) return (uint32_t)h;
  return (uint32_t)h & ((UINT32_C(1) << hash_bits) - 1u);
}

/* Hash of "name=value" without building the key on the heap unless it is long. */
static eddy_err_t hash_name_value(const char *name, size_t nlen, const char *value, size_t vlen,
                                  uint32_t hash_bits, uint32_t *bucket) {
  size_t klen = nlen + 1 + vlen;
  char stack_key[EVENT_KEY_STACK];
  char *key = klen <= sizeof stack_key ? stack_key : malloc(klen);
  if (!key) return EDDY_ERR_NOMEM;
  memcpy(key, name, nlen);
  key[nlen] = '=';
  memcpy(key + nlen + 1, value, vlen);
  *bucket = eddy_feature_hash(key, klen, hash_bits);
  if (key != stack_key) free(key);
  return EDDY_OK;
}

static const char *json_type_name(const cJSON *item) {
  if (cJSON_IsNull(item)) return "null";
  if (cJSON_IsBool(item)) return "bool";
  if (cJSON_IsNumber(item)) return "number";
  if (cJSON_IsString(item)) return "string";
  if (cJSON_IsArray(item)) return "array";
  if (cJSON_IsObject(item)) return "object";
  return "invalid";
}

static const char *nonfinite_name(double v) {
  return isnan(v) ? "NaN" : "infinite";
}

/* A finite double that rounds to a finite float; *out gets the float. Doubles below
 * 2^128 - 2^103 (FLT_MAX plus half its ulp) round to at most FLT_MAX. */
static bool to_finite_float(double v, float *out) {
  if (!isfinite(v) || fabs(v) >= 0x1.ffffffp+127) return false;
  *out = (float)v;
  return isfinite(*out);
}

/* The checks of a label, weight or ts value, shared by the cJSON decoder and the scanner. */
static eddy_err_t check_label(double v, const eddy_event_schema_t *schema, double *label, char *errstr,
                              size_t errstr_size) {
  if (!isfinite(v))
    return eddy_errf(EDDY_ERR_EVENT_LABEL_NAN, errstr, errstr_size, "label is %s", nonfinite_name(v));
  switch (schema->head) {
    case EDDY_HEAD_LOGISTIC:
      if (v != 0.0 && v != 1.0)
        return eddy_errf(EDDY_ERR_EVENT_LABEL_RANGE, errstr, errstr_size,
                         "label %.17g out of range 0..1 (logistic head)", v);
      *label = v == 1.0 ? 1.0 : 0.0; /* -0 becomes 0 */
      return EDDY_OK;
    case EDDY_HEAD_SOFTMAX:
      if (v < 0.0 || v >= (double)schema->classes)
        return eddy_errf(EDDY_ERR_EVENT_LABEL_RANGE, errstr, errstr_size, "label %.17g out of range 0..%u", v,
                         schema->classes - 1);
      if (v != floor(v))
        return eddy_errf(EDDY_ERR_EVENT_LABEL_RANGE, errstr, errstr_size,
                         "label %.17g is not a class index 0..%u", v, schema->classes - 1);
      *label = (double)(uint32_t)v;
      return EDDY_OK;
    case EDDY_HEAD_SQUARED:
      *label = v;
      return EDDY_OK;
  }
  return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "schema head %d unknown", (int)schema->head);
}

static eddy_err_t check_weight(double v, float *weight, char *errstr, size_t errstr_size) {
  if (!isfinite(v))
    return eddy_errf(EDDY_ERR_EVENT_NONFINITE, errstr, errstr_size, "weight is %s", nonfinite_name(v));
  if (!to_finite_float(v, weight))
    return eddy_errf(EDDY_ERR_EVENT_NONFINITE, errstr, errstr_size, "weight %g overflows float32", v);
  if (v < 0.0) return eddy_errf(EDDY_ERR_EVENT_TYPE, errstr, errstr_size, "weight %g must be >= 0", v);
  if (*weight == 0.0f) *weight = 0.0f; /* -0 becomes 0 */
  return EDDY_OK;
}

static eddy_err_t check_ts(double v, eddy_event_t *ev, char *errstr, size_t errstr_size) {
  if (!isfinite(v))
    return eddy_errf(EDDY_ERR_EVENT_NONFINITE, errstr, errstr_size, "ts is %s", nonfinite_name(v));
  if (v != floor(v) || fabs(v) > EVENT_TS_LIMIT)
    return eddy_errf(EDDY_ERR_EVENT_TYPE, errstr, errstr_size,
                     "ts %.17g must be an integer (ms since epoch) within +-2^53", v);
  ev->ts = (int64_t)v;
  ev->has_ts = true;
  return EDDY_OK;
}

static eddy_err_t decode_label(const cJSON *item, const eddy_event_schema_t *schema, double *label,
                               char *errstr, size_t errstr_size) {
  if (!item && schema->label_optional) {
    *label = 0.0;
    return EDDY_OK;
  }
  if (!item) return eddy_errf(EDDY_ERR_EVENT_LABEL_MISSING, errstr, errstr_size, "label is missing");
  if (!cJSON_IsNumber(item))
    return eddy_errf(EDDY_ERR_EVENT_TYPE, errstr, errstr_size, "label must be a number, got %s",
                     json_type_name(item));
  return check_label(item->valuedouble, schema, label, errstr, errstr_size);
}

static eddy_err_t decode_weight(const cJSON *item, float *weight, char *errstr, size_t errstr_size) {
  if (!item) {
    *weight = 1.0f;
    return EDDY_OK;
  }
  if (!cJSON_IsNumber(item))
    return eddy_errf(EDDY_ERR_EVENT_TYPE, errstr, errstr_size, "weight must be a number, got %s",
                     json_type_name(item));
  return check_weight(item->valuedouble, weight, errstr, errstr_size);
}

static eddy_err_t decode_id(const cJSON *item, eddy_event_t *ev, char *errstr, size_t errstr_size) {
  if (!item) return EDDY_OK;
  if (!cJSON_IsString(item))
    return eddy_errf(EDDY_ERR_EVENT_TYPE, errstr, errstr_size, "id must be a string, got %s",
                     json_type_name(item));
  size_t n = strlen(item->valuestring);
  if (n > EDDY_EVENT_ID_MAX - 1)
    return eddy_errf(EDDY_ERR_EVENT_TOO_LARGE, errstr, errstr_size, "id has %zu bytes, max %d", n,
                     EDDY_EVENT_ID_MAX - 1);
  memcpy(ev->id, item->valuestring, n + 1);
  return EDDY_OK;
}

static eddy_err_t decode_ts(const cJSON *item, eddy_event_t *ev, char *errstr, size_t errstr_size) {
  if (!item) return EDDY_OK;
  if (!cJSON_IsNumber(item))
    return eddy_errf(EDDY_ERR_EVENT_TYPE, errstr, errstr_size, "ts must be a number, got %s",
                     json_type_name(item));
  return check_ts(item->valuedouble, ev, errstr, errstr_size);
}

static eddy_err_t decode_dense(const cJSON *item, const eddy_event_schema_t *schema, eddy_event_t *ev,
                               char *errstr, size_t errstr_size) {
  if (!item) {
    if (schema->dense_dim == 0) return EDDY_OK;
    return eddy_errf(EDDY_ERR_EVENT_DENSE_LEN, errstr, errstr_size, "dense is missing, expected %u values",
                     schema->dense_dim);
  }
  if (!cJSON_IsArray(item))
    return eddy_errf(EDDY_ERR_EVENT_TYPE, errstr, errstr_size, "dense must be an array, got %s",
                     json_type_name(item));
  size_t n = 0;
  for (const cJSON *x = item->child; x; x = x->next) n++;
  if (n != schema->dense_dim)
    return eddy_errf(EDDY_ERR_EVENT_DENSE_LEN, errstr, errstr_size, "dense has %zu values, expected %u", n,
                     schema->dense_dim);
  if (event_reserve_dense(ev, (uint32_t)n) != EDDY_OK)
    return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "dense: out of memory for %zu values", n);
  size_t i = 0;
  for (const cJSON *x = item->child; x; x = x->next, i++) {
    if (!cJSON_IsNumber(x))
      return eddy_errf(EDDY_ERR_EVENT_TYPE, errstr, errstr_size, "dense[%zu] must be a number, got %s", i,
                       json_type_name(x));
    double v = x->valuedouble;
    if (!isfinite(v))
      return eddy_errf(EDDY_ERR_EVENT_NONFINITE, errstr, errstr_size, "dense[%zu] is %s", i,
                       nonfinite_name(v));
    if (!to_finite_float(v, &ev->dense[i]))
      return eddy_errf(EDDY_ERR_EVENT_NONFINITE, errstr, errstr_size, "dense[%zu] = %g overflows float32", i,
                       v);
  }
  ev->n_dense = (uint32_t)n;
  return EDDY_OK;
}

static eddy_err_t decode_sparse(const cJSON *item, const eddy_event_schema_t *schema, eddy_event_t *ev,
                                char *errstr, size_t errstr_size) {
  if (!item) return EDDY_OK;
  if (!cJSON_IsObject(item))
    return eddy_errf(EDDY_ERR_EVENT_TYPE, errstr, errstr_size, "sparse must be an object, got %s",
                     json_type_name(item));
  size_t n = 0;
  for (const cJSON *x = item->child; x; x = x->next) n++;
  if (n == 0) return EDDY_OK;
  if (schema->hash_bits == 0)
    return eddy_errf(EDDY_ERR_EVENT_TYPE, errstr, errstr_size,
                     "sparse has %zu features but the model takes none (hash_bits = 0)", n);
  if (n > UINT32_MAX || event_reserve_sparse(ev, (uint32_t)n) != EDDY_OK)
    return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "sparse: out of memory for %zu features", n);
  size_t i = 0;
  for (const cJSON *x = item->child; x; x = x->next, i++) {
    const char *name = x->string ? x->string : "";
    if (cJSON_IsString(x)) {
      if (hash_name_value(name, strlen(name), x->valuestring, strlen(x->valuestring), schema->hash_bits,
                          &ev->sparse_idx[i]) != EDDY_OK)
        return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "sparse.%.64s: out of memory", name);
      ev->sparse_val[i] = 1.0f;
    } else if (cJSON_IsNumber(x)) {
      double v = x->valuedouble;
      if (!isfinite(v))
        return eddy_errf(EDDY_ERR_EVENT_NONFINITE, errstr, errstr_size, "sparse.%.64s is %s", name,
                         nonfinite_name(v));
      if (!to_finite_float(v, &ev->sparse_val[i]))
        return eddy_errf(EDDY_ERR_EVENT_NONFINITE, errstr, errstr_size, "sparse.%.64s = %g overflows float32",
                         name, v);
      ev->sparse_idx[i] = eddy_feature_hash(name, strlen(name), schema->hash_bits);
    } else {
      return eddy_errf(EDDY_ERR_EVENT_TYPE, errstr, errstr_size,
                       "sparse.%.64s must be a string or a number, got %s", name, json_type_name(x));
    }
  }
  ev->n_sparse = (uint32_t)n;
  return EDDY_OK;
}

static eddy_err_t check_schema(const eddy_event_schema_t *schema, char *errstr, size_t errstr_size) {
  if (schema->hash_bits > EVENT_MAX_HASH_BITS)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "schema hash_bits %u: at most %d",
                     schema->hash_bits, EVENT_MAX_HASH_BITS);
  if (schema->head != EDDY_HEAD_LOGISTIC && schema->head != EDDY_HEAD_SOFTMAX &&
      schema->head != EDDY_HEAD_SQUARED)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "schema head %d unknown", (int)schema->head);
  if (schema->head == EDDY_HEAD_SOFTMAX && schema->classes < 2)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "schema: softmax needs classes >= 2, got %u",
                     schema->classes);
  return EDDY_OK;
}

enum { KEY_ID, KEY_TS, KEY_LABEL, KEY_WEIGHT, KEY_DENSE, KEY_SPARSE, KEY__COUNT };
static const char *const known_keys[KEY__COUNT] = {"id", "ts", "label", "weight", "dense", "sparse"};

/* Validates the parsed object into ev. */
static eddy_err_t decode_object(const cJSON *root, const eddy_event_schema_t *schema, eddy_event_t *ev,
                                char *errstr, size_t errstr_size) {
  const cJSON *field[KEY__COUNT] = {0};
  for (const cJSON *x = root->child; x; x = x->next) {
    if (!x->string) continue;
    for (int k = 0; k < KEY__COUNT; k++) {
      if (strcmp(x->string, known_keys[k]) != 0) continue;
      if (field[k])
        return eddy_errf(EDDY_ERR_EVENT_TYPE, errstr, errstr_size, "duplicate key \"%s\"", known_keys[k]);
      field[k] = x;
      break;
    }
  }
  eddy_err_t err;
  if ((err = decode_label(field[KEY_LABEL], schema, &ev->label, errstr, errstr_size))) return err;
  if ((err = decode_weight(field[KEY_WEIGHT], &ev->weight, errstr, errstr_size))) return err;
  if ((err = decode_id(field[KEY_ID], ev, errstr, errstr_size))) return err;
  if ((err = decode_ts(field[KEY_TS], ev, errstr, errstr_size))) return err;
  if ((err = decode_dense(field[KEY_DENSE], schema, ev, errstr, errstr_size))) return err;
  return decode_sparse(field[KEY_SPARSE], schema, ev, errstr, errstr_size);
}

/* The scanner: one pass over the text, no allocation per value, for events of the common shape.
 * It accepts only strict JSON that cJSON accepts too and decodes it to the same values; on anything
 * else (an invalid event, a string with an escape or a control byte, nesting deeper than
 * SCAN_DEPTH_MAX, a number token longer than cJSON reads) it gives up and the cJSON decoder runs,
 * so every error code and message still comes from there. */

#define SCAN_DEPTH_MAX 64     /* nesting of skipped values (cJSON's own limit is 1000) */
#define SCAN_NUMBER_MAX 63    /* cJSON copies at most 63 characters of a number before strtod */
#define SCAN_SPARSE_MIN_CAP 16

typedef struct {
  const char *p, *end;
} scan_t;

static void scan_ws(scan_t *s) {
  while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t')) s->p++;
}

/* Skips whitespace, then consumes c if it comes next. */
static bool scan_char(scan_t *s, char c) {
  scan_ws(s);
  if (s->p >= s->end || *s->p != c) return false;
  s->p++;
  return true;
}

/* A string without escapes or control bytes, in well-formed UTF-8 (anything else is left to
 * cJSON's path, which refuses a NUL and invalid UTF-8): its bytes are the value. */
static bool scan_string(scan_t *s, const char **str, size_t *len) {
  if (s->p >= s->end || *s->p != '"') return false;
  const char *start = ++s->p;
  for (; s->p < s->end; s->p++) {
    unsigned char c = (unsigned char)*s->p;
    if (c == '"') {
      *str = start;
      *len = (size_t)(s->p++ - start);
      return true;
    }
    if (c == '\\' || c < 0x20) return false;
    if (c >= 0x80) {
      size_t k = eddy_utf8_len((const unsigned char *)s->p, (size_t)(s->end - s->p));
      if (k == 0) return false;
      s->p += k - 1;
    }
  }
  return false;
}

static bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

/* Powers of ten that are exact doubles (5^22 < 2^53). */
static const double exact_pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* The significant digits of a number, as far as a uint64_t holds them. */
typedef struct {
  uint64_t value; /* the first 19 significant digits */
  int digits;
  bool truncated; /* more digits followed: strtod decides */
} scan_mant_t;

static void scan_digit(scan_mant_t *m, char c) {
  if (m->digits < 19) {
    m->value = m->value * 10 + (uint64_t)(c - '0');
    m->digits += m->value != 0; /* leading zeros do not count */
  } else {
    m->truncated = true;
  }
}

/* A JSON number (strict grammar) into the double that cJSON gets from strtod for the same token.
 * Exactness: the token is m * 10^e. When m <= 2^53 and |e| <= 22, both m and 10^|e| are exact
 * doubles, so the one IEEE multiplication or division (the sign applied to m first) rounds the
 * exact value once, in the current rounding mode, as glibc's correctly rounded strtod does: the
 * same double. Any other token goes to strtod itself. The shortcut needs FLT_EVAL_METHOD 0 (no
 * extended precision intermediates) and no -ffast-math (which may turn the division into a
 * multiplication by an inexact reciprocal). */
static bool scan_number(scan_t *s, double *out) {
  /* Reading stops one past the longest token taken, so every loop below is bounded. */
  const char *start = s->p, *q = s->p;
  const char *end = s->end - start > SCAN_NUMBER_MAX ? start + SCAN_NUMBER_MAX + 1 : s->end;
  bool neg = q < end && *q == '-';
  if (neg) q++;
  if (q >= end || !is_digit(*q)) return false;
  scan_mant_t m = {0, 0, false};
  if (*q == '0') {
    q++; /* a leading 0 stands alone */
  } else {
    for (; q < end && is_digit(*q); q++) scan_digit(&m, *q);
  }
  int exp10 = 0;
  if (q < end && *q == '.') {
    q++;
    if (q >= end || !is_digit(*q)) return false;
    for (; q < end && is_digit(*q); q++, exp10--) scan_digit(&m, *q);
  }
  if (q < end && (*q == 'e' || *q == 'E')) {
    q++;
    bool exp_neg = q < end && *q == '-';
    if (q < end && (*q == '+' || *q == '-')) q++;
    if (q >= end || !is_digit(*q)) return false;
    int e = 0;
    for (; q < end && is_digit(*q); q++)
      if (e < 100000) e = e * 10 + (*q - '0');
    exp10 += exp_neg ? -e : e;
  }
  size_t tok_len = (size_t)(q - start);
  if (tok_len > SCAN_NUMBER_MAX) return false;
  s->p = q;
  if (m.value == 0) {
    *out = neg ? -0.0 : 0.0;
    return true;
  }
#if FLT_EVAL_METHOD == 0 && !defined(__FAST_MATH__)
  if (!m.truncated && m.value <= (UINT64_C(1) << 53) && exp10 >= -22 && exp10 <= 22) {
    double v = neg ? -(double)m.value : (double)m.value;
    *out = exp10 < 0 ? v / exact_pow10[-exp10] : v * exact_pow10[exp10];
    return true;
  }
#endif
#if defined(__x86_64__) && LDBL_MANT_DIG == 64 && FLT_EVAL_METHOD == 0 && !defined(__FAST_MATH__)
  /* 17..19 significant digits (how JSON writers print most doubles): the digits are exact in an
   * x87 long double (64-bit significand) and so is 10^k for k <= 27, so the quotient or product is
   * the exact value correctly rounded to 64 bits. Rounding it again to a double gives the correctly
   * rounded double unless it lies within one long-double ulp of a double rounding midpoint (its 11
   * low bits 0x3ff..0x401): those few go to strtod. */
  if (!m.truncated && exp10 >= -27 && exp10 <= 27) {
    static const long double pow10l[] = {1e0L,  1e1L,  1e2L,  1e3L,  1e4L,  1e5L,  1e6L,  1e7L,  1e8L,  1e9L,
                                         1e10L, 1e11L, 1e12L, 1e13L, 1e14L, 1e15L, 1e16L, 1e17L, 1e18L, 1e19L,
                                         1e20L, 1e21L, 1e22L, 1e23L, 1e24L, 1e25L, 1e26L, 1e27L};
    const long double ld = exp10 < 0 ? (long double)m.value / pow10l[-exp10] : (long double)m.value * pow10l[exp10];
    uint64_t sig;
    memcpy(&sig, &ld, sizeof sig); /* x87 extended: the 64-bit significand comes first */
    const unsigned low = (unsigned)(sig & 0x7ff);
    if (low < 0x3ff || low > 0x401) {
      const double d = (double)ld;
      *out = neg ? -d : d;
      return true;
    }
  }
#endif
  char token[SCAN_NUMBER_MAX + 1];
  memcpy(token, start, tok_len);
  token[tok_len] = '\0';
  *out = strtod(token, NULL);
  return true;
}

static bool scan_literal(scan_t *s, const char *word, size_t len) {
  if ((size_t)(s->end - s->p) < len || memcmp(s->p, word, len) != 0) return false;
  s->p += len;
  return true;
}

/* Validates and skips any JSON value (for keys the event does not know). */
static bool scan_skip_value(scan_t *s, int depth) {
  const char *str;
  size_t len;
  double v;
  scan_ws(s);
  if (s->p >= s->end) return false;
  switch (*s->p) {
    case '"':
      return scan_string(s, &str, &len);
    case 't':
      return scan_literal(s, "true", 4);
    case 'f':
      return scan_literal(s, "false", 5);
    case 'n':
      return scan_literal(s, "null", 4);
    case '[':
    case '{': {
      bool object = *s->p == '{';
      char close = object ? '}' : ']';
      if (depth >= SCAN_DEPTH_MAX) return false;
      s->p++;
      if (scan_char(s, close)) return true;
      do {
        if (object) {
          scan_ws(s);
          if (!scan_string(s, &str, &len) || !scan_char(s, ':')) return false;
        }
        if (!scan_skip_value(s, depth + 1)) return false;
      } while (scan_char(s, ','));
      return scan_char(s, close);
    }
    default:
      return scan_number(s, &v);
  }
}

static bool scan_dense(scan_t *s, const eddy_event_schema_t *schema, eddy_event_t *ev) {
  if (*s->p != '[' || event_reserve_dense(ev, schema->dense_dim) != EDDY_OK) return false;
  s->p++;
  uint32_t n = 0;
  if (!scan_char(s, ']')) {
    do {
      double v;
      scan_ws(s);
      if (n == schema->dense_dim || !scan_number(s, &v) || !to_finite_float(v, &ev->dense[n])) return false;
      n++;
    } while (scan_char(s, ','));
    if (!scan_char(s, ']')) return false;
  }
  if (n != schema->dense_dim) return false;
  ev->n_dense = n;
  return true;
}

static bool scan_sparse(scan_t *s, const eddy_event_schema_t *schema, eddy_event_t *ev) {
  if (*s->p != '{') return false;
  s->p++;
  uint32_t n = 0;
  if (scan_char(s, '}')) return true;
  if (schema->hash_bits == 0) return false;
  do {
    const char *name, *str;
    size_t name_len, str_len;
    scan_ws(s);
    if (!scan_string(s, &name, &name_len) || !scan_char(s, ':')) return false;
    if (n == ev->sparse_cap) {
      if (n > UINT32_MAX / 2) return false;
      if (event_reserve_sparse(ev, n ? 2 * n : SCAN_SPARSE_MIN_CAP) != EDDY_OK) return false;
    }
    scan_ws(s);
    if (s->p < s->end && *s->p == '"') {
      if (!scan_string(s, &str, &str_len) ||
          hash_name_value(name, name_len, str, str_len, schema->hash_bits, &ev->sparse_idx[n]) != EDDY_OK)
        return false;
      ev->sparse_val[n] = 1.0f;
    } else {
      double v;
      if (!scan_number(s, &v) || !to_finite_float(v, &ev->sparse_val[n])) return false;
      ev->sparse_idx[n] = eddy_feature_hash(name, name_len, schema->hash_bits);
    }
    n++;
  } while (scan_char(s, ','));
  if (!scan_char(s, '}')) return false;
  ev->n_sparse = n;
  return true;
}

static int known_key(const char *key, size_t len) {
  for (int k = 0; k < KEY__COUNT; k++)
    if (strlen(known_keys[k]) == len && memcmp(key, known_keys[k], len) == 0) return k;
  return -1;
}

/* Decodes one top-level field whose value starts at s->p (after the colon and whitespace). */
static bool scan_field(scan_t *s, int key, const eddy_event_schema_t *schema, eddy_event_t *ev) {
  const char *str;
  size_t len;
  double v;
  switch (key) {
    case KEY_ID:
      if (!scan_string(s, &str, &len) || len > EDDY_EVENT_ID_MAX - 1) return false;
      memcpy(ev->id, str, len);
      ev->id[len] = '\0';
      return true;
    case KEY_TS:
      return scan_number(s, &v) && check_ts(v, ev, NULL, 0) == EDDY_OK;
    case KEY_LABEL:
      return scan_number(s, &v) && check_label(v, schema, &ev->label, NULL, 0) == EDDY_OK;
    case KEY_WEIGHT:
      return scan_number(s, &v) && check_weight(v, &ev->weight, NULL, 0) == EDDY_OK;
    case KEY_DENSE:
      return scan_dense(s, schema, ev);
    case KEY_SPARSE:
      return scan_sparse(s, schema, ev);
    default:
      return scan_skip_value(s, 1);
  }
}

/* The scanner over json[0..len) for a checked schema; false: leave the input to cJSON. */
static bool event_scan(const char *json, size_t len, const eddy_event_schema_t *schema, eddy_event_t *ev) {
  /* cJSON hands strtod the locale's decimal point; only the "C"-like "." is handled here. */
  const char *point = localeconv()->decimal_point;
  if (point[0] != '.' || point[1] != '\0') return false;
  scan_t s = {json, json + len};
  unsigned seen = 0;
  if (!scan_char(&s, '{')) return false;
  do {
    const char *key;
    size_t key_len;
    scan_ws(&s);
    if (!scan_string(&s, &key, &key_len) || !scan_char(&s, ':')) return false;
    int k = known_key(key, key_len);
    if (k >= 0) {
      if (seen & (1u << k)) return false; /* duplicate */
      seen |= 1u << k;
    }
    scan_ws(&s);
    if (s.p >= s.end || !scan_field(&s, k, schema, ev)) return false;
  } while (scan_char(&s, ','));
  if (!scan_char(&s, '}')) return false;
  scan_ws(&s);
  if (s.p != s.end) return false;
  if (!(seen & (1u << KEY_LABEL))) {
    if (!schema->label_optional) return false;
    ev->label = 0.0;
  }
  return (seen & (1u << KEY_DENSE)) || schema->dense_dim == 0;
}

/* The whole decode; with_scanner false leaves every input to cJSON (the reference for tests). */
static eddy_err_t event_from_json(const char *json, size_t len, const eddy_event_schema_t *schema,
                                  eddy_event_t *ev, char *errstr, size_t errstr_size, bool with_scanner) {
  if (!ev || !schema || (!json && len > 0))
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "event decode: NULL argument");
  event_clear(ev);
  eddy_err_t err = check_schema(schema, errstr, errstr_size);
  if (err) return err;
  size_t cap = schema->max_bytes ? schema->max_bytes : EDDY_EVENT_DEFAULT_MAX_BYTES;
  if (len > cap)
    return eddy_errf(EDDY_ERR_EVENT_TOO_LARGE, errstr, errstr_size, "event is %zu bytes, cap %zu", len, cap);
  if (len == 0) return eddy_errf(EDDY_ERR_EVENT_NOT_JSON, errstr, errstr_size, "event is empty");
  if (with_scanner) {
    if (event_scan(json, len, schema, ev)) return EDDY_OK;
    event_clear(ev);
  }
  /* cJSON would turn a NUL into a truncated C string (ids and feature names must not change
   * meaning that way) and copy invalid UTF-8 as it is. */
  size_t at = 0;
  const char *what = NULL;
  if (eddy_json_bad_string(json, len, &at, &what))
    return eddy_errf(EDDY_ERR_EVENT_TYPE, errstr, errstr_size, "a string holds %s at byte %zu (not supported)",
                     what, at);
  char why[128];
  cJSON *root = eddy_json_parse(json, len, why, sizeof why);
  if (!root) return eddy_errf(EDDY_ERR_EVENT_NOT_JSON, errstr, errstr_size, "%s", why);
  if (!cJSON_IsObject(root)) {
    err = eddy_errf(EDDY_ERR_EVENT_NOT_JSON, errstr, errstr_size, "event is a JSON %s, not an object",
                    json_type_name(root));
  } else {
    err = decode_object(root, schema, ev, errstr, errstr_size);
  }
  cJSON_Delete(root);
  if (err) event_clear(ev);
  return err;
}

eddy_err_t eddy_event_from_json(const char *json, size_t len, const eddy_event_schema_t *schema,
                                eddy_event_t *ev, char *errstr, size_t errstr_size) {
  return event_from_json(json, len, schema, ev, errstr, errstr_size, true);
}

eddy_err_t eddy_event_from_json_cjson(const char *json, size_t len, const eddy_event_schema_t *schema,
                                      eddy_event_t *ev, char *errstr, size_t errstr_size) {
  return event_from_json(json, len, schema, ev, errstr, errstr_size, false);
}

bool eddy_event_scan_json(const char *json, size_t len, const eddy_event_schema_t *schema,
                          eddy_event_t *ev) {
  if (!ev || !schema || !json || check_schema(schema, NULL, 0) != EDDY_OK) return false;
  event_clear(ev);
  if (len > (schema->max_bytes ? schema->max_bytes : EDDY_EVENT_DEFAULT_MAX_BYTES)) return false;
  return event_scan(json, len, schema, ev);
}

/* Binary encoding, version 1 (all integers and floats little-endian):
 *   u8 version = 1 | u8 flags (bit 0: has_ts; bit 1: has_origin; others 0) | u8 id_len (0..127)
 *   | id bytes (no NUL) | [i64 ts, only when has_ts] | [i32 partition, i64 offset, only when
 *   has_origin] | f64 label | f32 weight
 *   u32 n_dense | f32 dense[n_dense] | u32 n_sparse | u32 idx[n_sparse] | f32 val[n_sparse]
 * The encoding is canonical: decode accepts exactly what encode writes, nothing more. */

static size_t event_id_len(const eddy_event_t *ev) {
  return strnlen(ev->id, EDDY_EVENT_ID_MAX - 1);
}

size_t eddy_event_encoded_size(const eddy_event_t *ev) {
  return 3 + event_id_len(ev) + (ev->has_ts ? 8 : 0) + (ev->has_origin ? 12 : 0) + 8 + 4 + 4 +
         (size_t)ev->n_dense * 4 + 4 +
         (size_t)ev->n_sparse * 8;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
  return p + 4;
}

static uint8_t *put_u64(uint8_t *p, uint64_t v) {
  p = put_u32(p, (uint32_t)v);
  return put_u32(p, (uint32_t)(v >> 32));
}

static uint8_t *put_f32(uint8_t *p, float f) {
  uint32_t bits;
  memcpy(&bits, &f, 4);
  return put_u32(p, bits);
}

static uint32_t get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p) {
  return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static float get_f32(const uint8_t *p) {
  uint32_t bits = get_u32(p);
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

size_t eddy_event_encode(const eddy_event_t *ev, uint8_t *buf, size_t cap) {
  if (!ev || !buf) return 0;
  if ((ev->n_dense && !ev->dense) || (ev->n_sparse && (!ev->sparse_idx || !ev->sparse_val))) return 0;
  size_t need = eddy_event_encoded_size(ev);
  if (cap < need) return 0;
  size_t id_len = event_id_len(ev);
  uint8_t *p = buf;
  *p++ = EVENT_BINARY_VERSION;
  *p++ = (uint8_t)((ev->has_ts ? EVENT_FLAG_HAS_TS : 0) | (ev->has_origin ? EVENT_FLAG_ORIGIN : 0));
  *p++ = (uint8_t)id_len;
  memcpy(p, ev->id, id_len);
  p += id_len;
  if (ev->has_ts) p = put_u64(p, (uint64_t)ev->ts);
  if (ev->has_origin) {
    p = put_u32(p, (uint32_t)ev->partition);
    p = put_u64(p, (uint64_t)ev->offset);
  }
  uint64_t label_bits;
  memcpy(&label_bits, &ev->label, 8);
  p = put_u64(p, label_bits);
  p = put_f32(p, ev->weight);
  p = put_u32(p, ev->n_dense);
  for (uint32_t i = 0; i < ev->n_dense; i++) p = put_f32(p, ev->dense[i]);
  p = put_u32(p, ev->n_sparse);
  for (uint32_t i = 0; i < ev->n_sparse; i++) p = put_u32(p, ev->sparse_idx[i]);
  for (uint32_t i = 0; i < ev->n_sparse; i++) p = put_f32(p, ev->sparse_val[i]);
  return (size_t)(p - buf);
}

/* Decodes the fields; the caller clears ev on failure. */
static eddy_err_t decode_binary(const uint8_t *buf, size_t len, eddy_event_t *ev, char *errstr,
                                size_t errstr_size) {
#define NEED(n, what)                                                                              \
  do {                                                                                             \
    if (len - off < (size_t)(n))                                                                   \
      return eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size,                                       \
                       "binary event truncated: %s needs %zu bytes at offset %zu, %zu left", what, \
                       (size_t)(n), off, len - off);                                               \
  } while (0)
  size_t off = 0;
  NEED(3, "header");
  if (buf[0] != EVENT_BINARY_VERSION)
    return eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "binary event version %u, expected %d", buf[0],
                     EVENT_BINARY_VERSION);
  uint8_t flags = buf[1];
  if (flags & ~(EVENT_FLAG_HAS_TS | EVENT_FLAG_ORIGIN))
    return eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "binary event flags 0x%02x: unknown bits", flags);
  size_t id_len = buf[2];
  off = 3;
  if (id_len > EDDY_EVENT_ID_MAX - 1)
    return eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "binary event id length %zu, max %d", id_len,
                     EDDY_EVENT_ID_MAX - 1);
  NEED(id_len, "id");
  if (memchr(buf + off, 0, id_len))
    return eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "binary event id contains a NUL byte");
  memcpy(ev->id, buf + off, id_len);
  ev->id[id_len] = '\0';
  off += id_len;
  if (flags & EVENT_FLAG_HAS_TS) {
    NEED(8, "ts");
    ev->ts = (int64_t)get_u64(buf + off);
    ev->has_ts = true;
    off += 8;
  }
  if (flags & EVENT_FLAG_ORIGIN) {
    NEED(12, "origin");
    ev->partition = (int32_t)get_u32(buf + off);
    ev->offset = (int64_t)get_u64(buf + off + 4);
    ev->has_origin = true;
    off += 12;
  }
  NEED(8 + 4 + 4, "label, weight and dense count");
  uint64_t label_bits = get_u64(buf + off);
  memcpy(&ev->label, &label_bits, 8);
  ev->weight = get_f32(buf + off + 8);
  uint32_t n_dense = get_u32(buf + off + 12);
  off += 16;
  if (n_dense > (len - off) / 4) NEED((size_t)n_dense * 4, "dense");
  if (event_reserve_dense(ev, n_dense) != EDDY_OK)
    return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "binary event: out of memory for %u dense",
                     n_dense);
  for (uint32_t i = 0; i < n_dense; i++, off += 4) ev->dense[i] = get_f32(buf + off);
  ev->n_dense = n_dense;
  NEED(4, "sparse count");
  uint32_t n_sparse = get_u32(buf + off);
  off += 4;
  if (n_sparse > (len - off) / 8) NEED((size_t)n_sparse * 8, "sparse");
  if (event_reserve_sparse(ev, n_sparse) != EDDY_OK)
    return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "binary event: out of memory for %u sparse",
                     n_sparse);
  for (uint32_t i = 0; i < n_sparse; i++, off += 4) ev->sparse_idx[i] = get_u32(buf + off);
  for (uint32_t i = 0; i < n_sparse; i++, off += 4) ev->sparse_val[i] = get_f32(buf + off);
  ev->n_sparse = n_sparse;
  if (off != len)
    return eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "binary event has %zu trailing bytes", len - off);
  return EDDY_OK;
#undef NEED
}

eddy_err_t eddy_event_decode(const uint8_t *buf, size_t len, eddy_event_t *ev, char *errstr,
                             size_t errstr_size) {
  if (!ev || (!buf && len > 0))
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "event decode: NULL argument");
  event_clear(ev);
  eddy_err_t err = decode_binary(buf, len, ev, errstr, errstr_size);
  if (err) event_clear(ev);
  return err;
}

/* Growable text buffer with a hard cap, for eddy_event_to_json. */
typedef struct {
  char *data;
  size_t len, cap;
  bool failed;
} json_buf_t;

#define EVENT_JSON_MAX (64u << 20)

static void jb_printf(json_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void jb_reserve(json_buf_t *b, size_t extra) {
  if (b->failed || b->len + extra + 1 <= b->cap) return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra + 1) cap *= 2;
  char *data = cap <= EVENT_JSON_MAX ? realloc(b->data, cap) : NULL;
  if (!data) {
    b->failed = true;
    return;
  }
  b->data = data;
  b->cap = cap;
}

static void jb_printf(json_buf_t *b, const char *fmt, ...) {
  char tmp[64];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof tmp) {
    b->failed = true;
    return;
  }
  jb_reserve(b, (size_t)n);
  if (b->failed) return;
  memcpy(b->data + b->len, tmp, (size_t)n + 1);
  b->len += (size_t)n;
}

static void jb_string(json_buf_t *b, const char *s) {
  jb_printf(b, "\"");
  for (const unsigned char *p = (const unsigned char *)s; *p && !b->failed; p++) {
    if (*p == '"' || *p == '\\') {
      jb_printf(b, "\\%c", *p);
    } else if (*p < 0x20) {
      jb_printf(b, "\\u%04x", *p);
    } else {
      jb_reserve(b, 1);
      if (b->failed) return;
      b->data[b->len++] = (char)*p;
      b->data[b->len] = '\0';
    }
  }
  jb_printf(b, "\"");
}

/* Floats with 9 significant digits read back bit-identical; doubles get the fewest of 15..17
 * digits that do. */
static void jb_number(json_buf_t *b, double v, bool is_double) {
  if (!isfinite(v)) {
    b->failed = true; /* JSON has no NaN/Inf */
    return;
  }
  int digits = 9;
  if (is_double) {
    char tmp[40];
    for (digits = 15; digits < 17; digits++) {
      snprintf(tmp, sizeof tmp, "%.*g", digits, v);
      if (strtod(tmp, NULL) == v) break;
    }
  }
  jb_printf(b, "%.*g", digits, v);
}

char *eddy_event_to_json(const eddy_event_t *ev) {
  if (!ev || ev->n_sparse > 0 || (ev->n_dense && !ev->dense)) return NULL;
  json_buf_t b = {0};
  jb_reserve(&b, 64 + (size_t)ev->n_dense * 16);
  jb_printf(&b, "{");
  if (ev->id[0]) {
    char id[EDDY_EVENT_ID_MAX];
    size_t n = event_id_len(ev);
    memcpy(id, ev->id, n);
    id[n] = '\0';
    jb_printf(&b, "\"id\":");
    jb_string(&b, id);
    jb_printf(&b, ",");
  }
  if (ev->has_ts) jb_printf(&b, "\"ts\":%" PRId64 ",", ev->ts);
  jb_printf(&b, "\"label\":");
  jb_number(&b, ev->label, true);
  jb_printf(&b, ",\"weight\":");
  jb_number(&b, ev->weight, false);
  if (ev->n_dense > 0) {
    jb_printf(&b, ",\"dense\":[");
    for (uint32_t i = 0; i < ev->n_dense && !b.failed; i++) {
      if (i) jb_printf(&b, ",");
      jb_number(&b, ev->dense[i], false);
    }
    jb_printf(&b, "]");
  }
  jb_printf(&b, "}");
  if (b.failed) {
    free(b.data);
    return NULL;
  }
  return b.data;
}

/* ---- prediction requests: one event, or {"instances": [...]} ---- */

typedef struct {
  const char *p, *end;
} span_cur_t;

static void span_skip_ws(span_cur_t *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

/* Skips one JSON value (structure only: the event decoder checks the contents); false when the
 * text ends first or nests deeper than 64. */
static bool span_skip_value(span_cur_t *c) {
  int depth = 0;
  span_skip_ws(c);
  do {
    if (c->p >= c->end) return false;
    char ch = *c->p;
    if (ch == '"') {
      for (c->p++; c->p < c->end && *c->p != '"'; c->p++)
        if (*c->p == '\\' && c->p + 1 < c->end) c->p++;
      if (c->p >= c->end) return false;
      c->p++;
    } else if (ch == '{' || ch == '[') {
      if (++depth > 64) return false;
      c->p++;
    } else if (ch == '}' || ch == ']') {
      if (--depth < 0) return false;
      c->p++;
    } else if (depth > 0) {
      c->p++;
    } else {
      while (c->p < c->end && !strchr(",]} \t\r\n", *c->p)) c->p++;
    }
  } while (depth > 0);
  return true;
}

/* The instances array at c (just after "instances":) into spans; its length, or -1 with why. */
static long split_array(span_cur_t *c, const char **spans, size_t max, char *why, size_t why_size) {
  span_skip_ws(c);
  if (c->p >= c->end || *c->p != '[') return snprintf(why, why_size, "\"instances\" must be an array of events"), -1;
  c->p++;
  span_skip_ws(c);
  size_t n = 0;
  if (c->p < c->end && *c->p == ']') {
    c->p++;
    return 0;
  }
  for (;;) {
    span_skip_ws(c);
    if (n >= max) return snprintf(why, why_size, "more than %zu instances in one request", max), -1;
    const char *start = c->p;
    if (!span_skip_value(c)) return snprintf(why, why_size, "instances[%zu] is not valid JSON", n), -1;
    spans[2 * n] = start;
    spans[2 * n + 1] = c->p;
    n++;
    span_skip_ws(c);
    if (c->p < c->end && *c->p == ',') {
      c->p++;
      continue;
    }
    if (c->p < c->end && *c->p == ']') {
      c->p++;
      return (long)n;
    }
    return snprintf(why, why_size, "expected ',' or ']' after instances[%zu]", n - 1), -1;
  }
}

long eddy_event_split_instances(const char *body, size_t len, const char **spans, size_t max, bool *wrapped,
                                char *why, size_t why_size) {
  *wrapped = false;
  if (max == 0) return snprintf(why, why_size, "no room for an event"), -1;
  spans[0] = body;
  spans[1] = body + len;
  span_cur_t c = {body, body + len};
  span_skip_ws(&c);
  if (c.p >= c.end || *c.p != '{') return 1;
  c.p++;
  span_skip_ws(&c);
  static const char key[] = "\"instances\"";
  if ((size_t)(c.end - c.p) < sizeof key - 1 || memcmp(c.p, key, sizeof key - 1) != 0) return 1;
  *wrapped = true;
  c.p += sizeof key - 1;
  span_skip_ws(&c);
  if (c.p >= c.end || *c.p != ':') return snprintf(why, why_size, "expected ':' after \"instances\""), -1;
  c.p++;
  long n = split_array(&c, spans, max, why, why_size);
  if (n < 0) return -1;
  span_skip_ws(&c);
  if (c.p < c.end && *c.p == ',')
    return snprintf(why, why_size, "unexpected field after \"instances\" (only \"instances\" is allowed)"), -1;
  if (c.p >= c.end || *c.p != '}') return snprintf(why, why_size, "expected '}' after the instances array"), -1;
  c.p++;
  span_skip_ws(&c);
  if (c.p != c.end) return snprintf(why, why_size, "text after the request object"), -1;
  if (n == 0) return snprintf(why, why_size, "\"instances\" is empty"), -1;
  return n;
}

/* A key at c: its raw bytes [*k, *k + *klen) (escapes left as they are); false when c is not at a
 * string. */
static bool span_key(span_cur_t *c, const char **k, size_t *klen) {
  span_skip_ws(c);
  if (c->p >= c->end || *c->p != '"') return false;
  const char *start = c->p + 1;
  if (!span_skip_value(c)) return false;
  *k = start;
  *klen = (size_t)(c->p - 1 - start);
  return true;
}

static bool key_is(const char *k, size_t klen, const char *name) { return klen == strlen(name) && !memcmp(k, name, klen); }

long eddy_event_split_request(const char *body, size_t len, const char **spans, size_t max, bool *wrapped,
                              char *precision, size_t precision_size, char *why, size_t why_size) {
  *wrapped = false;
  if (precision_size) precision[0] = '\0';
  if (max == 0) return snprintf(why, why_size, "no room for an event"), -1;
  spans[0] = body;
  spans[1] = body + len;
  span_cur_t c = {body, body + len};
  span_skip_ws(&c);
  if (c.p >= c.end || *c.p != '{') return 1;
  c.p++;
  long n = 0;
  char other[40] = "", bad_precision[64] = "";
  bool closed = false;
  for (;;) {
    span_skip_ws(&c);
    if (c.p < c.end && *c.p == '}') {
      c.p++;
      closed = true;
      break;
    }
    const char *k;
    size_t klen;
    if (!span_key(&c, &k, &klen)) break;
    span_skip_ws(&c);
    if (c.p >= c.end || *c.p != ':') break;
    c.p++;
    span_skip_ws(&c);
    if (key_is(k, klen, "instances") && !*wrapped) {
      *wrapped = true;
      if ((n = split_array(&c, spans, max, why, why_size)) < 0) return -1;
    } else if (key_is(k, klen, "precision")) {
      const char *v0 = c.p;
      if (!span_skip_value(&c)) break;
      const size_t vlen = (size_t)(c.p - v0);
      if (vlen < 2 || *v0 != '"' || memchr(v0 + 1, '\\', vlen - 2))
        snprintf(bad_precision, sizeof bad_precision, "\"precision\" must be a string such as \"int8\"");
      else if (precision_size)
        snprintf(precision, precision_size, "%.*s", (int)(vlen - 2), v0 + 1);
    } else {
      if (!other[0]) snprintf(other, sizeof other, "%.*s", (int)(klen > 32 ? 32 : klen), k);
      if (!span_skip_value(&c)) break;
    }
    span_skip_ws(&c);
    if (c.p < c.end && *c.p == ',') c.p++;
    else if (c.p >= c.end || *c.p != '}') break;
  }
  if (!*wrapped) {
    /* One event: the event decoder reports what is wrong with it, and ignores "precision". */
    if (bad_precision[0] && closed) return snprintf(why, why_size, "%s", bad_precision), -1;
    if (!closed && precision_size) precision[0] = '\0';
    spans[0] = body;
    spans[1] = body + len;
    return 1;
  }
  if (!closed) return snprintf(why, why_size, "the request object is not valid JSON after \"instances\""), -1;
  if (other[0])
    return snprintf(why, why_size, "unexpected field \"%s\" (only \"instances\" and \"precision\" are allowed)", other),
           -1;
  if (bad_precision[0]) return snprintf(why, why_size, "%s", bad_precision), -1;
  span_skip_ws(&c);
  if (c.p != c.end) return snprintf(why, why_size, "text after the request object"), -1;
  if (n == 0) return snprintf(why, why_size, "\"instances\" is empty"), -1;
  return n;
}
