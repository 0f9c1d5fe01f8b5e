/* Tests of the safetensors reader/writer and the SHA-256 helpers: half-precision conversions
 * (exhaustive over 16-bit patterns, swept over fp32), byte-exact round trips, the header layout,
 * every class of malformed file, truncation at every length, atomic saves, digests, and a check
 * of a written file by the independent Python reader in tests/e2e/safetensors_interop.py. */
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "format/safetensors.h"
#include "format/sha256.h"
#include "testutil.h"

static uint32_t fbits(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  return u;
}

static float bitsf(uint32_t u) {
  float x;
  memcpy(&x, &u, 4);
  return x;
}

static uint8_t *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
  assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  *len = (size_t)n;
  return buf;
}

static char *join(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = malloc(n);
  snprintf(p, n, "%s/%s", dir, name);
  return p;
}

/* Number of entries in dir other than . and .. */
static int dir_entries(const char *dir, int *tmp_count) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  int n = 0;
  *tmp_count = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    n++;
    if (strstr(e->d_name, ".tmp-")) (*tmp_count)++;
  }
  closedir(d);
  return n;
}

/* ---- dtypes and conversions ---- */

static void test_dtypes(void **state) {
  (void)state;
  const char *names[] = {"F32", "F16", "BF16", "F64", "I64", "U8", "I8"};
  const size_t sizes[] = {4, 2, 2, 8, 8, 1, 1};
  for (int i = 0; i < 7; i++) {
    eddy_dtype_t dt;
    assert_string_equal(eddy_dtype_name((eddy_dtype_t)i), names[i]);
    assert_int_equal(eddy_dtype_parse(names[i], &dt), 0);
    assert_int_equal(dt, i);
    assert_int_equal(eddy_dtype_size((eddy_dtype_t)i), sizes[i]);
  }
  eddy_dtype_t dt = EDDY_DT_U8;
  assert_int_equal(eddy_dtype_parse("f32", &dt), -1);
  assert_int_equal(eddy_dtype_parse("I32", &dt), -1);
  assert_int_equal(eddy_dtype_parse(NULL, &dt), -1);
  assert_int_equal(eddy_dtype_size((eddy_dtype_t)99), 0);
}

static void test_bf16_known(void **state) {
  (void)state;
  assert_int_equal(eddy_f32_to_bf16(1.0f), 0x3f80);
  assert_int_equal(eddy_f32_to_bf16(-2.0f), 0xc000);
  assert_int_equal(eddy_f32_to_bf16(0.0f), 0x0000);
  assert_int_equal(eddy_f32_to_bf16(-0.0f), 0x8000);
  /* ties to even: 1 + 2^-8 is halfway between 0x3f80 (even) and 0x3f81 */
  assert_int_equal(eddy_f32_to_bf16(bitsf(0x3f808000)), 0x3f80);
  assert_int_equal(eddy_f32_to_bf16(bitsf(0x3f818000)), 0x3f82); /* 0x3f81 odd: up */
  assert_int_equal(eddy_f32_to_bf16(bitsf(0x3f808001)), 0x3f81); /* just above the tie */
  assert_int_equal(eddy_f32_to_bf16(bitsf(0x3f807fff)), 0x3f80); /* just below */
  assert_int_equal(eddy_f32_to_bf16(bitsf(0xbf818000)), 0xbf82); /* sign symmetric */
  assert_int_equal(eddy_f32_to_bf16(INFINITY), 0x7f80);
  assert_int_equal(eddy_f32_to_bf16(-INFINITY), 0xff80);
  assert_int_equal(eddy_f32_to_bf16(bitsf(0x7f7fffff)), 0x7f80); /* FLT_MAX rounds to inf */
  assert_int_equal(eddy_f32_to_bf16(bitsf(0x00000001)), 0x0000); /* tiny subnormal to zero */
  assert_int_equal(eddy_f32_to_bf16(bitsf(0x00018000)), 0x0002); /* subnormal tie, odd: up */
  /* NaN stays NaN, even when its payload sits only in the low 16 bits */
  uint16_t h = eddy_f32_to_bf16(bitsf(0x7f800001));
  assert_true((h & 0x7f80) == 0x7f80 && (h & 0x7f) != 0);
  assert_true(isnan(eddy_bf16_to_f32(eddy_f32_to_bf16(NAN))));
  assert_true(eddy_bf16_to_f32(0x3f80) == 1.0f);
  assert_true(eddy_bf16_to_f32(0x4049) == 3.140625f);
}

static void test_bf16_exhaustive(void **state) {
  (void)state;
  int nan_count = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    float x = eddy_bf16_to_f32((uint16_t)h);
    assert_int_equal(fbits(x), h << 16);
    uint16_t back = eddy_f32_to_bf16(x);
    if (isnan(x)) {
      nan_count++;
      assert_true(isnan(eddy_bf16_to_f32(back)));
      assert_int_equal(back & 0x8000, h & 0x8000);
    } else {
      assert_int_equal(back, h);
    }
  }
  assert_int_equal(nan_count, 2 * 127); /* exponent all ones, mantissa != 0, both signs */
}

/* Reference fp32 -> bf16 rounding in double arithmetic: pick the nearer of the two bf16 neighbours. */
static uint16_t bf16_reference(float x) {
  uint32_t u = fbits(x);
  uint32_t lo = u & 0xffff0000u;
  if ((u & 0xffff) == 0) return (uint16_t)(lo >> 16);
  double below = fabs((double)bitsf(lo)), above;
  uint32_t hi = lo + 0x10000u; /* next magnitude up, same sign */
  if (((hi >> 23) & 0xff) == 0xff) above = ldexp(1.0, 128); /* overflow: inf stands at 2^128 */
  else above = fabs((double)bitsf(hi));
  double ax = fabs((double)x);
  double dlo = ax - below, dhi = above - ax;
  if (dlo < dhi) return (uint16_t)(lo >> 16);
  if (dhi < dlo) return (uint16_t)(hi >> 16);
  return (uint16_t)(((lo >> 16) & 1) ? hi >> 16 : lo >> 16);
}

static void test_bf16_sweep(void **state) {
  (void)state;
  uint64_t checked = 0;
  for (uint64_t u = 0; u <= 0xffffffffull; u += 1009) {
    float x = bitsf((uint32_t)u);
    if (isnan(x)) continue;
    uint16_t got = eddy_f32_to_bf16(x);
    uint16_t want = bf16_reference(x);
    if (got != want) fail_msg("bf16(0x%08x) = 0x%04x, reference 0x%04x", (unsigned)u, got, want);
    checked++;
  }
  assert_true(checked > 4000000);
}

/* Value of an f16 pattern computed from the definition (independent of eddy_f16_to_f32). */
static double f16_value(uint16_t h) {
  int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
  return s ? -v : v;
}

static void test_f16_known(void **state) {
  (void)state;
  assert_int_equal(eddy_f32_to_f16(1.0f), 0x3c00);
  assert_int_equal(eddy_f32_to_f16(-2.0f), 0xc000);
  assert_int_equal(eddy_f32_to_f16(0.1f), 0x2e66);
  assert_int_equal(eddy_f32_to_f16(-0.0f), 0x8000);
  assert_int_equal(eddy_f32_to_f16(65504.0f), 0x7bff);
  assert_int_equal(eddy_f32_to_f16(65519.0f), 0x7bff);
  assert_int_equal(eddy_f32_to_f16(65520.0f), 0x7c00); /* tie with odd 0x7bff: to inf */
  assert_int_equal(eddy_f32_to_f16(1e10f), 0x7c00);
  assert_int_equal(eddy_f32_to_f16(-1e10f), 0xfc00);
  assert_int_equal(eddy_f32_to_f16(INFINITY), 0x7c00);
  assert_int_equal(eddy_f32_to_f16(-INFINITY), 0xfc00);
  assert_int_equal(eddy_f32_to_f16(bitsf(0x3f801000)), 0x3c00); /* 1 + 2^-11: tie, even down */
  assert_int_equal(eddy_f32_to_f16(bitsf(0x3f803000)), 0x3c02); /* 1 + 3*2^-11: tie, odd up */
  assert_int_equal(eddy_f32_to_f16(bitsf(0x3f801001)), 0x3c01);
  assert_int_equal(eddy_f32_to_f16(ldexpf(1.0f, -14)), 0x0400);  /* smallest normal */
  assert_int_equal(eddy_f32_to_f16(ldexpf(1.0f, -24)), 0x0001);  /* smallest subnormal */
  assert_int_equal(eddy_f32_to_f16(ldexpf(1.0f, -25)), 0x0000);  /* tie with 0: even */
  assert_int_equal(eddy_f32_to_f16(bitsf(0x33000001)), 0x0001);  /* just above 2^-25 */
  assert_int_equal(eddy_f32_to_f16(ldexpf(1.5f, -24)), 0x0002);  /* tie 1|2: even 2 */
  assert_int_equal(eddy_f32_to_f16(ldexpf(2.5f, -24)), 0x0002);  /* tie 2|3: even 2 */
  assert_int_equal(eddy_f32_to_f16(ldexpf(1023.5f, -24)), 0x0400); /* rounds up into normal */
  assert_int_equal(eddy_f32_to_f16(-ldexpf(3.0f, -24)), 0x8003);
  assert_int_equal(eddy_f32_to_f16(1e-30f), 0x0000);
  uint16_t h = eddy_f32_to_f16(bitsf(0x7f800001)); /* NaN with a payload below f16's mantissa */
  assert_true((h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0);
  assert_true(isnan(eddy_f16_to_f32(eddy_f32_to_f16(-NAN))));
  assert_true(eddy_f16_to_f32(0x3555) == 0.333251953125f);
}

static void test_f16_exhaustive(void **state) {
  (void)state;
  int nan_count = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    float x = eddy_f16_to_f32((uint16_t)h);
    double want = f16_value((uint16_t)h);
    uint16_t back = eddy_f32_to_f16(x);
    if (isnan(want)) {
      nan_count++;
      assert_true(isnan(x));
      assert_true((back & 0x7c00) == 0x7c00 && (back & 0x3ff) != 0);
      assert_int_equal(back & 0x8000, h & 0x8000);
      assert_int_equal(back & 0x1ff, h & 0x1ff); /* payload kept; only the quiet bit may be set */
    } else {
      if ((double)x != want) fail_msg("f16 0x%04x -> %a, want %a", h, (double)x, want);
      assert_int_equal(signbit(x) != 0, (h >> 15) != 0);
      assert_int_equal(back, h);
    }
  }
  assert_int_equal(nan_count, 2 * 1023);
}

/* Reference fp32 -> f16: binary search over the monotonic positive f16 patterns, nearer neighbour,
 * ties to even, values past 65504 compared against 65536 (where inf would sit). */
static uint16_t f16_reference(float x) {
  double ax = fabs((double)x);
  uint16_t sign = signbit(x) ? 0x8000 : 0;
  if (isinf(x) || ax >= 65536.0) return sign | 0x7c00;
  uint32_t lo = 0, hi = 0x7c00; /* find the largest pattern p < 0x7c00 with value(p) <= ax */
  while (hi - lo > 1) {
    uint32_t mid = (lo + hi) / 2;
    if (f16_value((uint16_t)mid) <= ax) lo = mid;
    else hi = mid;
  }
  double below = f16_value((uint16_t)lo), above = lo == 0x7bff ? 65536.0 : f16_value((uint16_t)(lo + 1));
  if (below == ax) return sign | (uint16_t)lo;
  double dlo = ax - below, dhi = above - ax;
  uint32_t r = dlo < dhi ? lo : dhi < dlo ? lo + 1 : ((lo & 1) ? lo + 1 : lo);
  return sign | (uint16_t)r;
}

static void test_f16_sweep(void **state) {
  (void)state;
  uint64_t checked = 0;
  for (uint64_t u = 0; u <= 0xffffffffull; u += 4099) {
    float x = bitsf((uint32_t)u);
    if (isnan(x)) continue;
    uint16_t got = eddy_f32_to_f16(x);
    uint16_t want = f16_reference(x);
    if (got != want) fail_msg("f16(0x%08x) = 0x%04x, reference 0x%04x", (unsigned)u, got, want);
#ifdef __FLT16_MAX__
    _Float16 hw = (_Float16)x; /* the compiler's own conversion, a third opinion */
    uint16_t hwbits;
    memcpy(&hwbits, &hw, 2);
    if (got != hwbits) fail_msg("f16(0x%08x) = 0x%04x, _Float16 gives 0x%04x", (unsigned)u, got, hwbits);
#endif
    checked++;
  }
  /* every float in the subnormal / rounding-boundary region, densely */
  for (uint32_t u = 0x33000000u - 16; u < 0x38800000u + 0x20000; u += 61) {
    uint16_t got = eddy_f32_to_f16(bitsf(u)), want = f16_reference(bitsf(u));
    if (got != want) fail_msg("f16(0x%08x) = 0x%04x, reference 0x%04x", u, got, want);
    checked++;
  }
  assert_true(checked > 1000000);
}

/* ---- writing and reading ---- */

static const float vals6[6] = {1.0f, -2.5f, 0.1f, 3.14159f, -0.0f, 65504.0f};

/* A writer with all dtypes, a scalar, an empty tensor and metadata with characters that need escaping. */
static eddy_st_writer_t *sample_writer(void) {
  eddy_st_writer_t *w = eddy_st_writer_new();
  assert_non_null(w);
  uint64_t s23[2] = {2, 3}, s6[1] = {6}, s4[1] = {4}, s3[1] = {3}, s0[2] = {0, 5};
  assert_int_equal(eddy_st_writer_add_f32(w, "mlp.0.weight", EDDY_DT_F32, s23, 2, vals6), EDDY_OK);
  assert_int_equal(eddy_st_writer_add_f32(w, "half", EDDY_DT_F16, s6, 1, vals6), EDDY_OK);
  assert_int_equal(eddy_st_writer_add_f32(w, "brain", EDDY_DT_BF16, s23, 2, vals6), EDDY_OK);
  double d[4] = {1e300, -1.5, 0, 42};
  int64_t q[3] = {-1, 0, INT64_MAX};
  uint8_t b[3] = {0, 7, 255};
  float scalar = 7.0f;
  assert_int_equal(eddy_st_writer_add(w, "f64", EDDY_DT_F64, s4, 1, d), EDDY_OK);
  assert_int_equal(eddy_st_writer_add(w, "i64", EDDY_DT_I64, s3, 1, q), EDDY_OK);
  assert_int_equal(eddy_st_writer_add(w, "u8", EDDY_DT_U8, s3, 1, b), EDDY_OK);
  assert_int_equal(eddy_st_writer_add(w, "scalar", EDDY_DT_F32, NULL, 0, &scalar), EDDY_OK);
  assert_int_equal(eddy_st_writer_add(w, "empty", EDDY_DT_F32, s0, 2, NULL), EDDY_OK);
  assert_int_equal(eddy_st_writer_add(w, "name with \"quotes\" \\ and é", EDDY_DT_U8, s3, 1, b), EDDY_OK);
  assert_int_equal(eddy_st_writer_meta(w, "eddy.spec", "{\"hash_bits\": 10, \"hidden\": [64]}"), EDDY_OK);
  assert_int_equal(eddy_st_writer_meta(w, "note", "line1\nline2\ttab \x01 ünïcødé"), EDDY_OK);
  assert_int_equal(eddy_st_writer_meta(w, "eddy.version", "1"), EDDY_OK);
  assert_int_equal(eddy_st_writer_meta(w, "eddy.version", "2"), EDDY_OK); /* replaces */
  return w;
}

static void test_roundtrip(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  char *path = join(dir, "w.safetensors"), *path2 = join(dir, "w2.safetensors");
  eddy_st_writer_t *w = sample_writer();
  char err[512] = "";
  uint8_t digest[32];
  assert_int_equal(eddy_st_writer_save(w, path, digest, err, sizeof err), EDDY_OK);
  eddy_st_writer_destroy(w);

  eddy_st_reader_t *r = eddy_st_reader_new(path, 0, err, sizeof err);
  if (!r) fail_msg("open: %s", err);
  assert_int_equal(eddy_st_count(r), 9);
  const char *order[] = {"mlp.0.weight", "half", "brain", "f64", "i64", "u8", "scalar", "empty",
                         "name with \"quotes\" \\ and é"};
  for (size_t i = 0; i < 9; i++) {
    assert_string_equal(eddy_st_at(r, i)->name, order[i]);
    assert_ptr_equal(eddy_st_find(r, order[i]), eddy_st_at(r, i));
  }
  assert_null(eddy_st_at(r, 9));
  assert_null(eddy_st_find(r, "nope"));
  assert_string_equal(eddy_st_meta(r, "eddy.spec"), "{\"hash_bits\": 10, \"hidden\": [64]}");
  assert_string_equal(eddy_st_meta(r, "note"), "line1\nline2\ttab \x01 ünïcødé");
  assert_string_equal(eddy_st_meta(r, "eddy.version"), "2");
  assert_null(eddy_st_meta(r, "absent"));

  float out[6];
  const eddy_st_tensor_t *t = eddy_st_find(r, "mlp.0.weight");
  assert_int_equal(t->dtype, EDDY_DT_F32);
  assert_int_equal(t->ndim, 2);
  assert_int_equal(t->shape[0], 2);
  assert_int_equal(t->shape[1], 3);
  assert_int_equal(t->nbytes, 24);
  assert_int_equal(eddy_st_read_f32(t, out, 6), EDDY_OK);
  assert_memory_equal(out, vals6, sizeof out);
  t = eddy_st_find(r, "half");
  assert_int_equal(eddy_st_read_f32(t, out, 6), EDDY_OK);
  for (int i = 0; i < 6; i++) assert_true(out[i] == eddy_f16_to_f32(eddy_f32_to_f16(vals6[i])));
  assert_true(out[5] == 65504.0f && out[0] == 1.0f);
  assert_true(fabsf(out[3] - 3.14159f) < 2e-3f);
  t = eddy_st_find(r, "brain");
  assert_int_equal(eddy_st_read_f32(t, out, 6), EDDY_OK);
  for (int i = 0; i < 6; i++) assert_true(out[i] == eddy_bf16_to_f32(eddy_f32_to_bf16(vals6[i])));
  assert_int_equal(eddy_st_read_f32(t, out, 5), EDDY_ERR_SHAPE);
  assert_int_equal(eddy_st_read_f32(eddy_st_find(r, "f64"), out, 4), EDDY_ERR_UNSUPPORTED);
  assert_int_equal(eddy_st_read_f32(eddy_st_find(r, "u8"), out, 3), EDDY_ERR_UNSUPPORTED);
  t = eddy_st_find(r, "i64");
  int64_t q[3];
  memcpy(q, t->data, 24);
  assert_true(q[0] == -1 && q[1] == 0 && q[2] == INT64_MAX);
  t = eddy_st_find(r, "scalar");
  assert_int_equal(t->ndim, 0);
  assert_int_equal(eddy_st_read_f32(t, out, 1), EDDY_OK);
  assert_true(out[0] == 7.0f);
  t = eddy_st_find(r, "empty");
  assert_int_equal(t->nbytes, 0);
  assert_int_equal(eddy_st_read_f32(t, NULL, 0), EDDY_OK);

  /* Rewriting everything the reader returned gives the same bytes. */
  eddy_st_writer_t *w2 = eddy_st_writer_new();
  assert_int_equal(eddy_st_writer_meta(w2, "eddy.spec", eddy_st_meta(r, "eddy.spec")), EDDY_OK);
  assert_int_equal(eddy_st_writer_meta(w2, "note", eddy_st_meta(r, "note")), EDDY_OK);
  assert_int_equal(eddy_st_writer_meta(w2, "eddy.version", eddy_st_meta(r, "eddy.version")), EDDY_OK);
  for (size_t i = 0; i < eddy_st_count(r); i++) {
    t = eddy_st_at(r, i);
    assert_int_equal(eddy_st_writer_add(w2, t->name, t->dtype, t->shape, t->ndim, t->data), EDDY_OK);
  }
  uint8_t digest2[32];
  assert_int_equal(eddy_st_writer_save(w2, path2, digest2, err, sizeof err), EDDY_OK);
  eddy_st_writer_destroy(w2);
  eddy_st_reader_destroy(r);
  size_t n1, n2;
  uint8_t *b1 = read_all(path, &n1), *b2 = read_all(path2, &n2);
  assert_int_equal(n1, n2);
  assert_memory_equal(b1, b2, n1);
  assert_memory_equal(digest, digest2, 32);

  /* The in-memory reader agrees with the file reader. */
  r = eddy_st_reader_new_mem(b1, n1, 0, err, sizeof err);
  assert_non_null(r);
  assert_int_equal(eddy_st_count(r), 9);
  eddy_st_reader_destroy(r);
  free(b1);
  free(b2);
  free(path);
  free(path2);
  eddy_test_rmdir(dir);
}

/* Exact bytes of a minimal file, and header padding for every residue mod 8. */
static void test_layout(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  char *path = join(dir, "one.safetensors");
  char err[512];
  eddy_st_writer_t *w = eddy_st_writer_new();
  uint64_t s1[1] = {1};
  float one = 1.0f;
  assert_int_equal(eddy_st_writer_add_f32(w, "a", EDDY_DT_F32, s1, 1, &one), EDDY_OK);
  assert_int_equal(eddy_st_writer_save(w, path, NULL, err, sizeof err), EDDY_OK);
  eddy_st_writer_destroy(w);
  const char *json = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
  size_t jl = strlen(json), hl = (jl + 7) / 8 * 8;
  uint8_t expect[128];
  memset(expect, ' ', sizeof expect);
  for (int i = 0; i < 8; i++) expect[i] = (uint8_t)((uint64_t)hl >> (8 * i));
  memcpy(expect + 8, json, jl);
  memcpy(expect + 8 + hl, "\x00\x00\x80\x3f", 4);
  size_t n;
  uint8_t *got = read_all(path, &n);
  assert_int_equal(n, 8 + hl + 4);
  assert_memory_equal(got, expect, n);
  free(got);

  for (int len = 0; len < 16; len++) {
    char name[32];
    memset(name, 'n', (size_t)len);
    name[len] = '\0';
    w = eddy_st_writer_new();
    uint8_t byte = 9;
    assert_int_equal(eddy_st_writer_add(w, name, EDDY_DT_U8, s1, 1, &byte), EDDY_OK);
    assert_int_equal(eddy_st_writer_save(w, path, NULL, err, sizeof err), EDDY_OK);
    eddy_st_writer_destroy(w);
    got = read_all(path, &n);
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--) h = (h << 8) | got[i];
    assert_int_equal((8 + h) % 8, 0);
    assert_int_equal(n, 8 + h + 1);
    assert_int_equal(got[8 + h], 9);
    size_t last = 8 + (size_t)h - 1;
    while (got[last] == ' ') last--;
    assert_int_equal(got[last], '}');
    assert_true(8 + (size_t)h - 1 - last < 8); /* at most 7 padding spaces */
    free(got);
  }
  /* An empty writer makes a valid file with no tensors. */
  w = eddy_st_writer_new();
  assert_int_equal(eddy_st_writer_save(w, path, NULL, err, sizeof err), EDDY_OK);
  eddy_st_writer_destroy(w);
  eddy_st_reader_t *r = eddy_st_reader_new(path, 0, err, sizeof err);
  assert_non_null(r);
  assert_int_equal(eddy_st_count(r), 0);
  eddy_st_reader_destroy(r);
  free(path);
  eddy_test_rmdir(dir);
}

static void test_writer_args(void **state) {
  (void)state;
  eddy_st_writer_t *w = eddy_st_writer_new();
  uint64_t s2[2] = {1, 2}, s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, huge[2] = {1ull << 40, 1ull << 40};
  float f[2] = {1, 2};
  assert_int_equal(eddy_st_writer_add_f32(w, "x", EDDY_DT_F32, s2, 2, f), EDDY_OK);
  assert_int_equal(eddy_st_writer_add_f32(w, "x", EDDY_DT_F32, s2, 2, f), EDDY_ERR_INVALID_ARG);
  assert_int_equal(eddy_st_writer_add_f32(w, "__metadata__", EDDY_DT_F32, s2, 2, f), EDDY_ERR_INVALID_ARG);
  assert_int_equal(eddy_st_writer_add_f32(w, "bad\xff", EDDY_DT_F32, s2, 2, f), EDDY_ERR_INVALID_ARG);
  assert_int_equal(eddy_st_writer_add_f32(w, "y", EDDY_DT_F32, s9, 9, f), EDDY_ERR_INVALID_ARG);
  assert_int_equal(eddy_st_writer_add_f32(w, "y", EDDY_DT_F32, s2, 2, NULL), EDDY_ERR_INVALID_ARG);
  assert_int_equal(eddy_st_writer_add_f32(w, "y", EDDY_DT_I64, s2, 2, f), EDDY_ERR_UNSUPPORTED);
  assert_int_equal(eddy_st_writer_add(w, "y", EDDY_DT_F32, huge, 2, f), EDDY_ERR_TOO_LARGE);
  assert_int_equal(eddy_st_writer_add(w, "y", (eddy_dtype_t)42, s2, 2, f), EDDY_ERR_INVALID_ARG);
  assert_int_equal(eddy_st_writer_add(NULL, "y", EDDY_DT_F32, s2, 2, f), EDDY_ERR_INVALID_ARG);
  assert_int_equal(eddy_st_writer_meta(w, "k", "bad\xc3"), EDDY_ERR_INVALID_ARG);
  assert_int_equal(eddy_st_writer_meta(w, NULL, "v"), EDDY_ERR_INVALID_ARG);
  char err[256] = "";
  assert_int_equal(eddy_st_writer_save(w, "", NULL, err, sizeof err), EDDY_ERR_INVALID_ARG);
  assert_int_equal(eddy_st_writer_save(w, "/nonexistent-dir-eddy/x.safetensors", NULL, err, sizeof err), EDDY_ERR_IO);
  assert_non_null(strstr(err, "/nonexistent-dir-eddy/x.safetensors"));
  eddy_st_writer_destroy(w);
  eddy_st_writer_destroy(NULL);
  eddy_st_reader_destroy(NULL);
  assert_int_equal(eddy_st_count(NULL), 0);
  assert_null(eddy_st_at(NULL, 0));
  assert_null(eddy_st_find(NULL, "x"));
  assert_null(eddy_st_meta(NULL, "x"));
  assert_int_equal(eddy_st_read_f32(NULL, f, 1), EDDY_ERR_INVALID_ARG);
}

/* ---- malformed files ---- */

/* Builds 8-byte length + header + buffer of buflen bytes (0x00) into a fresh malloc'ed image. */
static uint8_t *make_file(const char *header, size_t buflen, size_t *len) {
  size_t hl = strlen(header);
  *len = 8 + hl + buflen;
  uint8_t *img = calloc(1, *len);
  for (int i = 0; i < 8; i++) img[i] = (uint8_t)((uint64_t)hl >> (8 * i));
  memcpy(img + 8, header, hl);
  return img;
}

typedef struct {
  const char *header;
  size_t buflen;
  const char *expect; /* substring of the error */
} bad_case_t;

static void expect_refused(const uint8_t *img, size_t len, size_t cap, const char *expect, const char *what) {
  char err[512] = "";
  eddy_st_reader_t *r = eddy_st_reader_new_mem(img, len, cap, err, sizeof err);
  if (r) {
    eddy_st_reader_destroy(r);
    fail_msg("accepted malformed file (%s)", what);
  }
  if (!strstr(err, expect)) fail_msg("%s: error \"%s\" lacks \"%s\"", what, err, expect);
  if (!strstr(err, "<memory>")) fail_msg("%s: error \"%s\" does not name the source", what, err);
}

static void test_malformed(void **state) {
  (void)state;
#define T(name, dt, shape, offs) "\"" name "\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":" offs "}"
  static const bad_case_t cases[] = {
      {"", 0, "not a JSON object"},
      {"[1]", 0, "not a JSON object"},
      {"{\"a\":", 0, "not valid JSON"},
      {"{abc}", 0, "not valid JSON"},
      {"{\"a\" 1}", 0, "not valid JSON"},
      {"{} x", 0, "after the JSON object"},
      {"{}{}", 0, "after the JSON object"},
      {"{\"a\":5}", 0, "entry is not an object"},
      {"{\"a\":\"x\"}", 0, "entry is not an object"},
      {"{\"a\":[1,2]}", 0, "array at nesting depth 1"},
      {"{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "missing 'dtype'"},
      {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "missing 'shape'"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "missing 'data_offsets'"},
      {"{\"a\":{\"dtype\":1,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype is not a string"},
      {"{\"a\":{\"dtype\":[\"F32\"],\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype is not a string"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}", 4, "shape is not an array"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, "dim 0 is not a number"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":4}}", 4, "data_offsets is not an array of 2"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, "data_offsets is not an array of 2"},
      {"{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "duplicate 'dtype'"},
      {"{" T("a", "F8", "[1]", "[0,1]") "}", 1, "unknown dtype 'F8'"},
      {"{" T("a", "f32", "[1]", "[0,4]") "}", 4, "unknown dtype"},
      {"{" T("a", "F32", "[-1]", "[0,4]") "}", 4, "dim 0 is negative"},
      {"{" T("a", "F32", "[1.5]", "[0,4]") "}", 4, "non-integer value"},
      {"{" T("a", "F32", "[1.0]", "[0,4]") "}", 4, "non-integer value"},
      {"{" T("a", "F32", "[1e3]", "[0,4]") "}", 4, "non-integer value"},
      {"{" T("a", "F32", "[true]", "[0,4]") "}", 4, "non-integer value"},
      {"{" T("a", "F32", "[[1]]", "[0,4]") "}", 4, "array at nesting depth 3"},
      {"{" T("a", "F32", "[99999999999999999999]", "[0,4]") "}", 4, "dim 0 is absurdly large"},
      {"{" T("a", "F32", "[1]", "[-4,0]") "}", 4, "data offset is negative"},
      {"{" T("a", "I64", "[4294967296,4294967296]", "[0,8]") "}", 8, "overflows"},
      {"{" T("a", "I64", "[4294967296,2147483648]", "[0,8]") "}", 8, "overflows"}, /* numel fits, bytes not */
      {"{" T("a", "F32", "[2]", "[0,4]") "}", 4, "!= data_offsets range 4"},
      {"{" T("a", "F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]") "}", 4, "9 dims > EDDY_ST_MAX_DIMS"},
      {"{" T("a", "F32", "[0]", "[8,4]") "}", 8, "begin 8 > end 4"},
      {"{" T("a", "F32", "[1]", "[0,4]") "}", 2, "beyond the 2-byte data buffer"},
      {"{" T("a", "F32", "[1]", "[4,8]") "}", 4, "beyond"},
      {"{" T("a", "F32", "[2]", "[0,8]") "," T("b", "F32", "[2]", "[4,12]") "}", 12, "overlap"},
      {"{" T("a", "F32", "[1]", "[0,4]") "," T("b", "F32", "[1]", "[0,4]") "}", 4, "overlap"},
      {"{" T("a", "F32", "[1]", "[0,4]") "," T("b", "F32", "[1]", "[8,12]") "}", 12, "gap: data buffer bytes [4, 8)"},
      {"{" T("a", "F32", "[1]", "[4,8]") "}", 8, "gap: data buffer bytes [0, 4)"},
      {"{" T("a", "F32", "[1]", "[0,4]") "}", 6, "gap: data buffer bytes [4, 6)"},
      {"{}", 1, "gap: data buffer bytes [0, 1)"},
      {"{" T("a", "F32", "[1]", "[0,4]") "," T("a", "F32", "[1]", "[4,8]") "}", 8, "duplicate tensor name 'a'"},
      {"{\"__metadata__\":{\"k\":1}}", 0, "value of 'k' is not a string"},
      {"{\"__metadata__\":{\"k\":null}}", 0, "value of 'k' is not a string"},
      {"{\"__metadata__\":{\"k\":{}}}", 0, "nests an object too deep"},
      {"{\"__metadata__\":5}", 0, "__metadata__ is not an object"},
      {"{\"__metadata__\":[\"a\"]}", 0, "array at nesting depth 1"},
      {"{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, "duplicate __metadata__ key 'k'"},
      {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate __metadata__"},
      {"{\"__metadata__\":{\"k\":\"\xff\"}}", 0, "not valid UTF-8"},
      {"{\"__metadata__\":{\"k\":\"\xc0\x80\"}}", 0, "not valid UTF-8"},     /* overlong NUL */
      {"{\"__metadata__\":{\"k\":\"\xed\xa0\x80\"}}", 0, "not valid UTF-8"}, /* surrogate */
      {"{\"__metadata__\":{\"k\":\"a\x01\"}}", 0, "control byte 0x01"},
      {"{\"a\":\xc3\xa9}", 0, "not valid JSON"},
  };
#undef T
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t len;
    uint8_t *img = make_file(cases[i].header, cases[i].buflen, &len);
    expect_refused(img, len, 0, cases[i].expect, cases[i].header);
    free(img);
  }
  /* a NUL byte inside the header */
  size_t len;
  uint8_t *img = make_file("{\"__metadata__\":{\"k\":\"a-b\"}}", 0, &len);
  img[8 + 23] = 0;
  expect_refused(img, len, 0, "control byte 0x00", "NUL in header");
  free(img);
  /* short files */
  uint8_t zeros[8] = {0};
  for (size_t n = 0; n < 8; n++) expect_refused(zeros, n, 0, "too short", "short file");
  /* header length past the end of the file, and over the cap */
  img = make_file("{}", 0, &len);
  img[0] = 200;
  expect_refused(img, len, 0, "bad header length 200 > file size 10", "length past end");
  img[0] = 0xff, img[7] = 0xff;
  expect_refused(img, len, 0, "over the cap", "length 2^64-ish");
  free(img);
  img = make_file("{\"__metadata__\":{\"k\":\"0123456789012345678901234567890123456789\"}}", 0, &len);
  char err[256], want[128];
  snprintf(want, sizeof want, "header length %zu over the cap of 32 bytes", len - 8);
  expect_refused(img, len, 32, want, "over explicit cap");
  eddy_st_reader_t *r = eddy_st_reader_new_mem(img, len, len - 8, err, sizeof err);
  assert_non_null(r); /* exactly at the cap is fine */
  eddy_st_reader_destroy(r);
  free(img);
  /* a long array, and too many values */
  char big[1024] = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1";
  for (int i = 0; i < 70; i++) strcat(big, ",1");
  strcat(big, "],\"data_offsets\":[0,4]}}");
  img = make_file(big, 4, &len);
  expect_refused(img, len, 0, "more than 64 elements", "long shape");
  free(img);
  size_t values = (1u << 20) + 10; /* duplicate keys, but the value cap refuses first */
  char *many = malloc(32 + 6 * values);
  strcpy(many, "{\"__metadata__\":{\"\":\"\"");
  size_t pos = strlen(many);
  for (size_t i = 1; i < values; i++, pos += 6) memcpy(many + pos, ",\"\":\"\"", 6);
  strcpy(many + pos, "}}");
  img = make_file(many, 0, &len);
  expect_refused(img, len, 0, "more than 1048576 JSON values", "many values");
  free(img);
  free(many);
  /* the file variant names the path */
  char *dir = eddy_test_tmpdir();
  uint8_t junk[5] = {1, 2, 3, 4, 5};
  char *path = eddy_test_write_file(dir, "junk.safetensors", junk, sizeof junk);
  assert_null(eddy_st_reader_new(path, 0, err, sizeof err));
  assert_non_null(strstr(err, path));
  assert_non_null(strstr(err, "too short"));
  free(path);
  path = join(dir, "missing.safetensors");
  assert_null(eddy_st_reader_new(path, 0, err, sizeof err));
  assert_non_null(strstr(err, path));
  free(path);
  assert_null(eddy_st_reader_new(dir, 0, err, sizeof err));
  assert_non_null(strstr(err, "not a regular file"));
  eddy_test_rmdir(dir);
}

/* Files written by other writers: unknown keys in an entry are ignored, other header orders work. */
static void test_foreign_layouts(void **state) {
  (void)state;
  const char *h = "{\"b\":{\"data_offsets\":[4,6],\"dtype\":\"BF16\",\"shape\":[1],\"extra\":\"x\"},"
                  " \"__metadata__\" : {\"format\":\"pt\"},\n\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
  size_t len;
  uint8_t *img = make_file(h, 6, &len);
  float one = 1.0f;
  memcpy(img + len - 6, &one, 4);
  uint16_t two = eddy_f32_to_bf16(2.0f);
  memcpy(img + len - 2, &two, 2);
  char err[256] = "";
  eddy_st_reader_t *r = eddy_st_reader_new_mem(img, len, 0, err, sizeof err);
  if (!r) fail_msg("%s", err);
  assert_int_equal(eddy_st_count(r), 2);
  assert_string_equal(eddy_st_at(r, 0)->name, "b"); /* header order */
  assert_string_equal(eddy_st_meta(r, "format"), "pt");
  float v;
  assert_int_equal(eddy_st_read_f32(eddy_st_find(r, "a"), &v, 1), EDDY_OK);
  assert_true(v == 1.0f);
  assert_int_equal(eddy_st_read_f32(eddy_st_find(r, "b"), &v, 1), EDDY_OK);
  assert_true(v == 2.0f);
  eddy_st_reader_destroy(r);
  free(img);
  /* zero-size tensors may share an offset with each other and with a range's end */
  img = make_file("{\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                  "\"y\":{\"dtype\":\"U8\",\"shape\":[4,0],\"data_offsets\":[4,4]},"
                  "\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}",
                  4, &len);
  r = eddy_st_reader_new_mem(img, len, 0, err, sizeof err);
  if (!r) fail_msg("%s", err);
  assert_int_equal(eddy_st_count(r), 3);
  eddy_st_reader_destroy(r);
  free(img);
}

static void test_truncation(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  char *path = join(dir, "t.safetensors");
  char err[512];
  eddy_st_writer_t *w = sample_writer();
  assert_int_equal(eddy_st_writer_save(w, path, NULL, err, sizeof err), EDDY_OK);
  eddy_st_writer_destroy(w);
  size_t n;
  uint8_t *full = read_all(path, &n);
  int refused = 0;
  for (size_t len = 0; len < n; len++) {
    uint8_t *cut = malloc(len ? len : 1); /* exact-size copy so ASan sees any overread */
    memcpy(cut, full, len);
    eddy_st_reader_t *r = eddy_st_reader_new_mem(cut, len, 0, err, sizeof err);
    if (r) fail_msg("truncated file of %zu/%zu bytes accepted", len, n);
    refused++;
    free(cut);
  }
  assert_int_equal(refused, (int)n);
  /* one truncation through the file path too */
  char *cutpath = eddy_test_write_file(dir, "cut.safetensors", full, n - 1);
  assert_null(eddy_st_reader_new(cutpath, 0, err, sizeof err));
  assert_non_null(strstr(err, cutpath));
  /* flipping each header byte never crashes (and whatever opens reads cleanly) */
  for (size_t i = 0; i < n; i++) {
    uint8_t saved = full[i];
    full[i] ^= 0x5a;
    eddy_st_reader_t *r = eddy_st_reader_new_mem(full, n, 0, err, sizeof err);
    for (size_t k = 0; r && k < eddy_st_count(r); k++) {
      const eddy_st_tensor_t *t = eddy_st_at(r, k);
      size_t numel = t->nbytes / eddy_dtype_size(t->dtype);
      float *dst = malloc(numel * sizeof(float) + 1);
      eddy_st_read_f32(t, dst, numel);
      free(dst);
    }
    eddy_st_reader_destroy(r);
    full[i] = saved;
  }
  free(full);
  free(cutpath);
  free(path);
  eddy_test_rmdir(dir);
}

/* ---- atomic save and digests ---- */

static void test_atomic_save(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  char *path = join(dir, "w.safetensors");
  char err[512];
  uint64_t s1[1] = {1};
  float a = 1.0f, b = 2.0f;
  eddy_st_writer_t *w = eddy_st_writer_new();
  assert_int_equal(eddy_st_writer_add_f32(w, "v", EDDY_DT_F32, s1, 1, &a), EDDY_OK);
  assert_int_equal(eddy_st_writer_save(w, path, NULL, err, sizeof err), EDDY_OK);
  eddy_st_writer_destroy(w);
  int tmps;
  assert_int_equal(dir_entries(dir, &tmps), 1);
  assert_int_equal(tmps, 0);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0644);
  ino_t first = st.st_ino;

  w = eddy_st_writer_new();
  assert_int_equal(eddy_st_writer_add_f32(w, "v", EDDY_DT_F32, s1, 1, &b), EDDY_OK);
  assert_int_equal(eddy_st_writer_save(w, path, NULL, err, sizeof err), EDDY_OK);
  eddy_st_writer_destroy(w);
  assert_int_equal(dir_entries(dir, &tmps), 1);
  assert_int_equal(tmps, 0);
  assert_int_equal(stat(path, &st), 0);
  assert_true(st.st_ino != first); /* replaced by rename, not rewritten in place */
  eddy_st_reader_t *r = eddy_st_reader_new(path, 0, err, sizeof err);
  assert_non_null(r);
  float v;
  assert_int_equal(eddy_st_read_f32(eddy_st_find(r, "v"), &v, 1), EDDY_OK);
  assert_true(v == 2.0f);
  eddy_st_reader_destroy(r);

  /* rename onto a directory fails: the error names the path and no temp file is left */
  char *sub = join(dir, "taken.safetensors");
  assert_int_equal(mkdir(sub, 0755), 0);
  w = eddy_st_writer_new();
  assert_int_equal(eddy_st_writer_add_f32(w, "v", EDDY_DT_F32, s1, 1, &b), EDDY_OK);
  assert_int_equal(eddy_st_writer_save(w, sub, NULL, err, sizeof err), EDDY_ERR_IO);
  assert_non_null(strstr(err, sub));
  assert_non_null(strstr(err, "rename"));
  eddy_st_writer_destroy(w);
  assert_int_equal(dir_entries(dir, &tmps), 2);
  assert_int_equal(tmps, 0);
  free(sub);
  /* a bare file name saves in the current directory */
  char cwd[4096];
  assert_non_null(getcwd(cwd, sizeof cwd));
  assert_int_equal(chdir(dir), 0);
  w = eddy_st_writer_new();
  assert_int_equal(eddy_st_writer_save(w, "bare.safetensors", NULL, err, sizeof err), EDDY_OK);
  eddy_st_writer_destroy(w);
  assert_int_equal(chdir(cwd), 0);
  assert_int_equal(dir_entries(dir, &tmps), 3);
  assert_int_equal(tmps, 0);
  free(path);
  eddy_test_rmdir(dir);
}

static void test_sha256(void **state) {
  (void)state;
  uint8_t d[32];
  char hex[65];
  eddy_sha256("abc", 3, d);
  eddy_sha256_hex(d, hex);
  assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  eddy_sha256("", 0, d);
  eddy_sha256_hex(d, hex);
  assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  eddy_sha256(m, strlen(m), d);
  eddy_sha256_hex(d, hex);
  assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");

  char *dir = eddy_test_tmpdir();
  char *path = join(dir, "w.safetensors");
  char err[512];
  /* a file larger than the 64 KiB read chunk */
  eddy_st_writer_t *w = sample_writer();
  float *big = calloc(50000, sizeof(float));
  for (int i = 0; i < 50000; i++) big[i] = (float)i;
  uint64_t s[1] = {50000};
  assert_int_equal(eddy_st_writer_add_f32(w, "big", EDDY_DT_F32, s, 1, big), EDDY_OK);
  free(big);
  uint8_t written[32], onfile[32], inmem[32];
  assert_int_equal(eddy_st_writer_save(w, path, written, err, sizeof err), EDDY_OK);
  eddy_st_writer_destroy(w);
  assert_int_equal(eddy_sha256_file(path, onfile, err, sizeof err), EDDY_OK);
  assert_memory_equal(written, onfile, 32);
  size_t n;
  uint8_t *bytes = read_all(path, &n);
  assert_true(n > 200000);
  eddy_sha256(bytes, n, inmem);
  assert_memory_equal(written, inmem, 32);
  free(bytes);
  free(path);
  path = join(dir, "missing");
  assert_int_equal(eddy_sha256_file(path, onfile, err, sizeof err), EDDY_ERR_IO);
  assert_non_null(strstr(err, path));
  free(path);
  eddy_test_rmdir(dir);
}

/* ---- a second implementation reads our file ---- */

static void test_python_interop(void **state) {
  (void)state;
  const char *py = "/usr/bin/python3";
  char script[4096];
  snprintf(script, sizeof script, "%s/tests/e2e/safetensors_interop.py", EDDY_SOURCE_DIR);
  if (access(py, X_OK) != 0 || access(script, R_OK) != 0) {
    printf("skipping: %s or %s not found\n", py, script);
    skip();
  }
  char *dir = eddy_test_tmpdir();
  char *path = join(dir, "w.safetensors"), *side = join(dir, "w.json");
  char err[512];
  eddy_st_writer_t *w = sample_writer();
  assert_int_equal(eddy_st_writer_save(w, path, NULL, err, sizeof err), EDDY_OK);
  eddy_st_writer_destroy(w);
  /* expected values: F32 exact; F16 / BF16 as their exactly representable rounded values */
  FILE *f = fopen(side, "w");
  assert_non_null(f);
  fprintf(f, "{\"metadata\": {\"eddy.spec\": \"{\\\"hash_bits\\\": 10, \\\"hidden\\\": [64]}\", \"eddy.version\": \"2\","
             " \"note\": \"line1\\nline2\\ttab \\u0001 \\u00fcn\\u00efc\\u00f8d\\u00e9\"},\n \"tensors\": {");
  const char *names[3] = {"mlp.0.weight", "half", "brain"};
  for (int k = 0; k < 3; k++) {
    fprintf(f, "%s\"%s\": {\"dtype\": \"%s\", \"shape\": %s, \"values\": [", k ? ", " : "", names[k],
            k == 0 ? "F32" : k == 1 ? "F16" : "BF16", k == 1 ? "[6]" : "[2, 3]");
    for (int i = 0; i < 6; i++) {
      float v = k == 0 ? vals6[i] : k == 1 ? eddy_f16_to_f32(eddy_f32_to_f16(vals6[i])) : eddy_bf16_to_f32(eddy_f32_to_bf16(vals6[i]));
      fprintf(f, "%s%.17g", i ? ", " : "", (double)v); /* exact as a double */
    }
    fprintf(f, "]}");
  }
  fprintf(f, ", \"f64\": {\"dtype\": \"F64\", \"shape\": [4], \"values\": [1e300, -1.5, 0, 42]},"
             " \"i64\": {\"dtype\": \"I64\", \"shape\": [3], \"values\": [-1, 0, 9223372036854775807]},"
             " \"u8\": {\"dtype\": \"U8\", \"shape\": [3], \"values\": [0, 7, 255]},"
             " \"scalar\": {\"dtype\": \"F32\", \"shape\": [], \"values\": [7]},"
             " \"empty\": {\"dtype\": \"F32\", \"shape\": [0, 5], \"values\": []},"
             " \"name with \\\"quotes\\\" \\\\ and \\u00e9\": {\"dtype\": \"U8\", \"shape\": [3]}}}\n");
  fclose(f);
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "%s %s %s %s", py, script, path, side);
  assert_int_equal(system(cmd), 0);
  /* and the checker does catch a wrong value */
  f = fopen(side, "w");
  fprintf(f, "{\"exact\": false, \"tolerance\": 1e-6, \"tensors\": {\"mlp.0.weight\": {\"values\": [1, -2.5, 0.1, 3.14159, 0, 65505]}}}\n");
  fclose(f);
  snprintf(cmd, sizeof cmd, "%s %s %s %s 2>/dev/null", py, script, path, side);
  int rc = system(cmd);
  assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 1);
  free(path);
  free(side);
  eddy_test_rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dtypes),          cmocka_unit_test(test_bf16_known),
      cmocka_unit_test(test_bf16_exhaustive), cmocka_unit_test(test_bf16_sweep),
      cmocka_unit_test(test_f16_known),       cmocka_unit_test(test_f16_exhaustive),
      cmocka_unit_test(test_f16_sweep),       cmocka_unit_test(test_roundtrip),
      cmocka_unit_test(test_layout),          cmocka_unit_test(test_writer_args),
      cmocka_unit_test(test_malformed),       cmocka_unit_test(test_foreign_layouts),
      cmocka_unit_test(test_truncation),      cmocka_unit_test(test_atomic_save),
      cmocka_unit_test(test_sha256),          cmocka_unit_test(test_python_interop),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
