/* safetensors reader and writer. The reader loads the whole file, checks the header (size cap,
 * UTF-8, JSON shape, dtypes, shapes, byte ranges that exactly tile the data buffer, unique names)
 * before any tensor is handed out, and never reads outside the image. The writer lays tensors out
 * in insertion order, pads the header with spaces to a multiple of 8 and saves atomically.
 * Files are little-endian; this code assumes a little-endian host (checked at compile time). */
#include "format/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/json.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors.c assumes a little-endian host");

#define ST_MAX_INT (1ull << 53)        /* largest dim / offset accepted (exact in a JSON double) */
#define ST_MAX_TOKENS (1u << 20)       /* JSON values allowed in one header (bounds cJSON memory) */
#define ST_MAX_ARRAY 64                /* elements in one header array (shape, data_offsets) */
#define ST_WRITER_MAX_TENSORS (1u << 16)
#define ST_WRITER_MAX_META 4096

static const struct {
  const char *name;
  size_t size;
} dtype_table[] = {
    [EDDY_DT_F32] = {"F32", 4}, [EDDY_DT_F16] = {"F16", 2}, [EDDY_DT_BF16] = {"BF16", 2},
    [EDDY_DT_F64] = {"F64", 8}, [EDDY_DT_I64] = {"I64", 8}, [EDDY_DT_U8] = {"U8", 1},
    [EDDY_DT_I8] = {"I8", 1},
};
#define DTYPE_COUNT (sizeof dtype_table / sizeof dtype_table[0])

const char *eddy_dtype_name(eddy_dtype_t dt) {
  return (unsigned)dt < DTYPE_COUNT ? dtype_table[dt].name : "?";
}

int eddy_dtype_parse(const char *name, eddy_dtype_t *dt) {
  if (!name) return -1;
  for (size_t i = 0; i < DTYPE_COUNT; i++) {
    if (strcmp(name, dtype_table[i].name) == 0) {
      if (dt) *dt = (eddy_dtype_t)i;
      return 0;
    }
  }
  return -1;
}

size_t eddy_dtype_size(eddy_dtype_t dt) { return (unsigned)dt < DTYPE_COUNT ? dtype_table[dt].size : 0; }

/* ---- half-precision conversions ---- */

static uint32_t f32_bits(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  return u;
}

static float bits_f32(uint32_t u) {
  float x;
  memcpy(&x, &u, 4);
  return x;
}

uint16_t eddy_f32_to_bf16(float x) {
  uint32_t u = f32_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* quiet NaN */
  /* Round to nearest even on the low 16 bits; a carry into the exponent is the correct result,
   * and values past the largest bf16 carry into the infinity pattern. */
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

float eddy_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t eddy_f32_to_f16(float x) {
  uint32_t u = f32_bits(x);
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  uint32_t ax = u & 0x7fffffffu;
  if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu)); /* quiet NaN */
  if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf (and inf) */
  if (ax >= 0x38800000u) {                                     /* normal half: >= 2^-14 */
    uint32_t h = ((((ax >> 23) - 127u + 15u)) << 10) | ((ax >> 13) & 0x3ffu);
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* a carry into the exponent is right */
    return (uint16_t)(sign | h);
  }
  if (ax <= 0x33000000u) return sign; /* <= 2^-25: rounds to zero (the tie goes to even zero) */
  /* Subnormal half: value = m * 2^-24. With full = 1.mantissa * 2^23 and exponent e, m = full >>
   * (126 - e), shift in [14, 24]. Rounding up to 0x400 gives the smallest normal, as it should. */
  uint32_t e = ax >> 23;
  uint32_t full = (ax & 0x7fffffu) | 0x800000u;
  uint32_t shift = 126u - e;
  uint32_t m = full >> shift;
  uint32_t rem = full & ((1u << shift) - 1u);
  uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (m & 1u))) m++;
  return (uint16_t)(sign | m);
}

float eddy_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu;
  uint32_t m = h & 0x3ffu;
  if (e == 0x1f) return bits_f32(sign | 0x7f800000u | (m << 13)); /* inf, NaN keeps its payload */
  if (e == 0) {
    if (m == 0) return bits_f32(sign);
    e = 113; /* subnormal: normalise m * 2^-24 */
    while (!(m & 0x400u)) {
      m <<= 1;
      e--;
    }
    return bits_f32(sign | (e << 23) | ((m & 0x3ffu) << 13));
  }
  return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

/* ---- shared helpers ---- */

static int utf8_valid(const char *s) {
  size_t n = strlen(s);
  for (size_t i = 0; i < n;) {
    size_t k = eddy_utf8_len((const unsigned char *)s + i, n - i);
    if (!k) return 0;
    i += k;
  }
  return 1;
}

static int shape_numel(const uint64_t *shape, uint32_t ndim, uint64_t *numel) {
  uint64_t n = 1;
  for (uint32_t i = 0; i < ndim; i++)
    if (__builtin_mul_overflow(n, shape[i], &n)) return -1;
  *numel = n;
  return 0;
}

/* ---- writing ---- */

typedef struct {
  char *name;
  eddy_dtype_t dtype;
  uint32_t ndim;
  uint64_t shape[EDDY_ST_MAX_DIMS];
  uint8_t *data;
  size_t nbytes;
} st_wtensor_t;

struct eddy_st_writer {
  st_wtensor_t *tensors;
  size_t count, cap;
  char **meta_keys, **meta_vals;
  size_t meta_count, meta_cap;
};

eddy_st_writer_t *eddy_st_writer_new(void) { return calloc(1, sizeof(eddy_st_writer_t)); }

void eddy_st_writer_destroy(eddy_st_writer_t *w) {
  if (!w) return;
  for (size_t i = 0; i < w->count; i++) {
    free(w->tensors[i].name);
    free(w->tensors[i].data);
  }
  for (size_t i = 0; i < w->meta_count; i++) {
    free(w->meta_keys[i]);
    free(w->meta_vals[i]);
  }
  free(w->tensors);
  free(w->meta_keys);
  free(w->meta_vals);
  free(w);
}

/* Checks name, dtype and shape and reserves a slot; on success *out is the new (not yet counted)
 * entry with name, dtype, shape and nbytes filled in and data allocated. */
static eddy_err_t writer_slot(eddy_st_writer_t *w, const char *name, eddy_dtype_t dt, const uint64_t *shape,
                              uint32_t ndim, st_wtensor_t **out) {
  if (!w || !name || (unsigned)dt >= DTYPE_COUNT || ndim > EDDY_ST_MAX_DIMS || (ndim > 0 && !shape))
    return EDDY_ERR_INVALID_ARG;
  if (!utf8_valid(name) || strcmp(name, "__metadata__") == 0) return EDDY_ERR_INVALID_ARG;
  for (size_t i = 0; i < w->count; i++)
    if (strcmp(w->tensors[i].name, name) == 0) return EDDY_ERR_INVALID_ARG;
  for (uint32_t i = 0; i < ndim; i++)
    if (shape[i] > ST_MAX_INT) return EDDY_ERR_TOO_LARGE;
  uint64_t numel, nbytes;
  if (shape_numel(shape, ndim, &numel) != 0 || __builtin_mul_overflow(numel, (uint64_t)eddy_dtype_size(dt), &nbytes) ||
      nbytes > ST_MAX_INT || nbytes > SIZE_MAX)
    return EDDY_ERR_TOO_LARGE;
  if (w->count == w->cap) {
    if (w->cap >= ST_WRITER_MAX_TENSORS) return EDDY_ERR_TOO_LARGE;
    size_t ncap = w->cap ? w->cap * 2 : 8;
    st_wtensor_t *nt = realloc(w->tensors, ncap * sizeof *nt);
    if (!nt) return EDDY_ERR_NOMEM;
    w->tensors = nt;
    w->cap = ncap;
  }
  st_wtensor_t *t = &w->tensors[w->count];
  memset(t, 0, sizeof *t);
  t->name = strdup(name);
  t->data = malloc(nbytes ? (size_t)nbytes : 1);
  if (!t->name || !t->data) {
    free(t->name);
    free(t->data);
    return EDDY_ERR_NOMEM;
  }
  t->dtype = dt;
  t->ndim = ndim;
  for (uint32_t i = 0; i < ndim; i++) t->shape[i] = shape[i];
  t->nbytes = (size_t)nbytes;
  *out = t;
  return EDDY_OK;
}

eddy_err_t eddy_st_writer_add(eddy_st_writer_t *w, const char *name, eddy_dtype_t dt, const uint64_t *shape,
                              uint32_t ndim, const void *data) {
  st_wtensor_t *t;
  eddy_err_t err = writer_slot(w, name, dt, shape, ndim, &t);
  if (err) return err;
  if (t->nbytes > 0 && !data) {
    free(t->name);
    free(t->data);
    return EDDY_ERR_INVALID_ARG;
  }
  if (t->nbytes) memcpy(t->data, data, t->nbytes);
  w->count++;
  return EDDY_OK;
}

eddy_err_t eddy_st_writer_add_f32(eddy_st_writer_t *w, const char *name, eddy_dtype_t dt, const uint64_t *shape,
                                  uint32_t ndim, const float *data) {
  if (dt != EDDY_DT_F32 && dt != EDDY_DT_F16 && dt != EDDY_DT_BF16) return EDDY_ERR_UNSUPPORTED;
  st_wtensor_t *t;
  eddy_err_t err = writer_slot(w, name, dt, shape, ndim, &t);
  if (err) return err;
  if (t->nbytes > 0 && !data) {
    free(t->name);
    free(t->data);
    return EDDY_ERR_INVALID_ARG;
  }
  size_t numel = t->nbytes / eddy_dtype_size(dt);
  if (dt == EDDY_DT_F32) {
    if (t->nbytes) memcpy(t->data, data, t->nbytes);
  } else {
    for (size_t i = 0; i < numel; i++) {
      uint16_t h = dt == EDDY_DT_F16 ? eddy_f32_to_f16(data[i]) : eddy_f32_to_bf16(data[i]);
      memcpy(t->data + 2 * i, &h, 2);
    }
  }
  w->count++;
  return EDDY_OK;
}

eddy_err_t eddy_st_writer_meta(eddy_st_writer_t *w, const char *key, const char *value) {
  if (!w || !key || !value || !utf8_valid(key) || !utf8_valid(value)) return EDDY_ERR_INVALID_ARG;
  char *v = strdup(value);
  if (!v) return EDDY_ERR_NOMEM;
  for (size_t i = 0; i < w->meta_count; i++) {
    if (strcmp(w->meta_keys[i], key) == 0) { /* setting a key again replaces its value */
      free(w->meta_vals[i]);
      w->meta_vals[i] = v;
      return EDDY_OK;
    }
  }
  if (w->meta_count == w->meta_cap) {
    size_t ncap = w->meta_cap ? w->meta_cap * 2 : 8;
    char **nk = ncap <= ST_WRITER_MAX_META ? realloc(w->meta_keys, ncap * sizeof *nk) : NULL;
    if (nk) w->meta_keys = nk;
    char **nv = nk ? realloc(w->meta_vals, ncap * sizeof *nv) : NULL;
    if (nv) w->meta_vals = nv;
    if (!nk || !nv) {
      free(v);
      return ncap > ST_WRITER_MAX_META ? EDDY_ERR_TOO_LARGE : EDDY_ERR_NOMEM;
    }
    w->meta_cap = ncap;
  }
  char *k = strdup(key);
  if (!k) {
    free(v);
    return EDDY_ERR_NOMEM;
  }
  w->meta_keys[w->meta_count] = k;
  w->meta_vals[w->meta_count] = v;
  w->meta_count++;
  return EDDY_OK;
}

/* Growable text buffer with a hard cap. */
typedef struct {
  char *buf;
  size_t len, cap, max;
  int failed; /* 1 = out of memory, 2 = over max */
} st_sbuf_t;

static void sb_put(st_sbuf_t *sb, const char *s, size_t n) {
  if (sb->failed) return;
  if (n > sb->max - sb->len) {
    sb->failed = 2;
    return;
  }
  if (sb->len + n > sb->cap) {
    size_t ncap = sb->cap ? sb->cap : 256;
    while (ncap < sb->len + n) ncap *= 2;
    char *nb = realloc(sb->buf, ncap);
    if (!nb) {
      sb->failed = 1;
      return;
    }
    sb->buf = nb;
    sb->cap = ncap;
  }
  memcpy(sb->buf + sb->len, s, n);
  sb->len += n;
}

static void sb_str(st_sbuf_t *sb, const char *s) { sb_put(sb, s, strlen(s)); }

static void sb_json_string(st_sbuf_t *sb, const char *s) {
  sb_put(sb, "\"", 1);
  for (const char *p = s; *p; p++) {
    unsigned char c = (unsigned char)*p;
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\', esc[1] = (char)c;
      sb_put(sb, esc, 2);
    } else if (c < 0x20) {
      snprintf(esc, sizeof esc, "\\u%04x", c);
      sb_put(sb, esc, 6);
    } else {
      sb_put(sb, p, 1);
    }
  }
  sb_put(sb, "\"", 1);
}

static void sb_u64(st_sbuf_t *sb, uint64_t v) {
  char num[24];
  int n = snprintf(num, sizeof num, "%llu", (unsigned long long)v);
  sb_put(sb, num, (size_t)n);
}

/* The JSON header, __metadata__ first (as the reference writer does), padded with spaces so
 * that 8 + length is a multiple of 8. */
static eddy_err_t writer_header(const eddy_st_writer_t *w, st_sbuf_t *sb) {
  sb_put(sb, "{", 1);
  int first = 1;
  if (w->meta_count) {
    sb_str(sb, "\"__metadata__\":{");
    for (size_t i = 0; i < w->meta_count; i++) {
      if (i) sb_put(sb, ",", 1);
      sb_json_string(sb, w->meta_keys[i]);
      sb_put(sb, ":", 1);
      sb_json_string(sb, w->meta_vals[i]);
    }
    sb_put(sb, "}", 1);
    first = 0;
  }
  uint64_t off = 0;
  for (size_t i = 0; i < w->count; i++) {
    const st_wtensor_t *t = &w->tensors[i];
    if (!first) sb_put(sb, ",", 1);
    first = 0;
    sb_json_string(sb, t->name);
    sb_str(sb, ":{\"dtype\":\"");
    sb_str(sb, eddy_dtype_name(t->dtype));
    sb_str(sb, "\",\"shape\":[");
    for (uint32_t d = 0; d < t->ndim; d++) {
      if (d) sb_put(sb, ",", 1);
      sb_u64(sb, t->shape[d]);
    }
    sb_str(sb, "],\"data_offsets\":[");
    sb_u64(sb, off);
    sb_put(sb, ",", 1);
    off += t->nbytes;
    sb_u64(sb, off);
    sb_str(sb, "]}");
  }
  sb_put(sb, "}", 1);
  while (!sb->failed && sb->len % 8) sb_put(sb, " ", 1);
  if (sb->failed == 1) return EDDY_ERR_NOMEM;
  if (sb->failed == 2) return EDDY_ERR_TOO_LARGE;
  return EDDY_OK;
}

static int write_all(int fd, const void *buf, size_t n) {
  const uint8_t *p = buf;
  while (n > 0) {
    ssize_t k = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
    if (k < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

static eddy_err_t fsync_parent(const char *path, char *errstr, size_t errstr_size) {
  const char *slash = strrchr(path, '/');
  char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
  if (!dir) return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "save %s: out of memory", path);
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || fsync(fd) != 0) {
    int e = errno;
    if (fd >= 0) close(fd);
    eddy_err_t err = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "save %s: fsync directory %s: %s", path, dir,
                               strerror(e));
    free(dir);
    return err;
  }
  close(fd);
  free(dir);
  return EDDY_OK;
}

/* The file written under a temp name and renamed; sync: fsync it and its folder. */
static eddy_err_t writer_save(eddy_st_writer_t *w, const char *path, uint8_t *sha256_out, bool sync, char *errstr,
                              size_t errstr_size) {
  if (!w || !path || !*path)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "safetensors save: NULL writer or empty path");
  st_sbuf_t sb = {.max = EDDY_ST_MAX_HEADER};
  eddy_err_t err = writer_header(w, &sb);
  if (err) {
    free(sb.buf);
    if (err == EDDY_ERR_TOO_LARGE)
      return eddy_errf(err, errstr, errstr_size, "save %s: JSON header over the cap of %u bytes", path,
                       (unsigned)EDDY_ST_MAX_HEADER);
    return eddy_errf(err, errstr, errstr_size, "save %s: out of memory building the header", path);
  }
  size_t plen = strlen(path);
  char *tmp = malloc(plen + 12);
  EVP_MD_CTX *md = sha256_out ? EVP_MD_CTX_new() : NULL;
  if (!tmp || (sha256_out && (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)))) {
    free(sb.buf);
    free(tmp);
    EVP_MD_CTX_free(md);
    return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "save %s: out of memory", path);
  }
  memcpy(tmp, path, plen);
  memcpy(tmp + plen, ".tmp-XXXXXX", 12);
  int fd = mkstemp(tmp);
  if (fd < 0) {
    err = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "save %s: create temp file %s: %s", path, tmp,
                    strerror(errno));
    free(sb.buf);
    free(tmp);
    EVP_MD_CTX_free(md);
    return err;
  }
  const char *step = "write";
  uint8_t lenbuf[8];
  uint64_t hlen = sb.len;
  for (int i = 0; i < 8; i++) lenbuf[i] = (uint8_t)(hlen >> (8 * i));
  int bad = fchmod(fd, 0644) != 0;
  if (bad) step = "chmod";
  if (!bad) bad = write_all(fd, lenbuf, 8) || write_all(fd, sb.buf, sb.len);
  if (md && !bad) bad = !EVP_DigestUpdate(md, lenbuf, 8) || !EVP_DigestUpdate(md, sb.buf, sb.len);
  for (size_t i = 0; i < w->count && !bad; i++) {
    const st_wtensor_t *t = &w->tensors[i];
    bad = write_all(fd, t->data, t->nbytes) != 0;
    if (md && !bad) bad = !EVP_DigestUpdate(md, t->data, t->nbytes);
  }
  if (!bad && sync && fsync(fd) != 0) bad = 1, step = "fsync";
  int saved = errno;
  if (close(fd) != 0 && !bad) bad = 1, step = "close", saved = errno;
  if (!bad && rename(tmp, path) != 0) bad = 1, step = "rename", saved = errno;
  free(sb.buf);
  if (bad) {
    unlink(tmp);
    err = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "save %s: %s %s: %s", path, step, tmp, strerror(saved));
    free(tmp);
    EVP_MD_CTX_free(md);
    return err;
  }
  free(tmp);
  err = sync ? fsync_parent(path, errstr, errstr_size) : EDDY_OK;
  if (md) {
    unsigned int n = 0;
    if (!EVP_DigestFinal_ex(md, sha256_out, &n) || n != 32)
      err = err ? err : eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "save %s: SHA-256 failed", path);
    EVP_MD_CTX_free(md);
  }
  return err;
}

eddy_err_t eddy_st_writer_save(eddy_st_writer_t *w, const char *path, uint8_t *sha256_out, char *errstr,
                               size_t errstr_size) {
  return writer_save(w, path, sha256_out, true, errstr, errstr_size);
}

eddy_err_t eddy_st_writer_save_unsynced(eddy_st_writer_t *w, const char *path, uint8_t *sha256_out, char *errstr,
                                        size_t errstr_size) {
  return writer_save(w, path, sha256_out, false, errstr, errstr_size);
}

/* ---- reading ---- */

typedef struct {
  uint64_t begin, end;
  size_t index;
} st_range_t;

struct eddy_st_reader {
  uint8_t *image;
  size_t len;
  eddy_st_tensor_t *tensors;
  size_t count;
  const eddy_st_tensor_t **by_name; /* sorted by name for eddy_st_find */
  char **meta_keys, **meta_vals;
  size_t meta_count;
};

void eddy_st_reader_destroy(eddy_st_reader_t *r) {
  if (!r) return;
  for (size_t i = 0; i < r->count; i++) free((char *)r->tensors[i].name);
  for (size_t i = 0; i < r->meta_count; i++) {
    free(r->meta_keys[i]);
    free(r->meta_vals[i]);
  }
  free(r->tensors);
  free(r->by_name);
  free(r->meta_keys);
  free(r->meta_vals);
  free(r->image);
  free(r);
}

/* Structural pre-check of the raw header before cJSON builds a tree: bytes are UTF-8 without raw
 * control characters, nesting is at most {name: {key: [..]}} with arrays only at the third level,
 * arrays are short and hold integers written as plain digits, and the value count is capped, so
 * the tree cJSON allocates stays proportionate to a real header. */
static int header_prescan(const uint8_t *h, size_t n, char *msg, size_t msg_size) {
  char stack[4];
  int depth = 0, in_str = 0;
  size_t tokens = 0, elems = 0;
  for (size_t i = 0; i < n;) {
    uint8_t c = h[i];
    if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
      snprintf(msg, msg_size, "header has control byte 0x%02x at byte %zu", c, i);
      return -1;
    }
    if (c >= 0x80) {
      size_t k = eddy_utf8_len(h + i, n - i);
      if (!k) {
        snprintf(msg, msg_size, "header is not valid UTF-8 at byte %zu", i);
        return -1;
      }
      if (!in_str) {
        snprintf(msg, msg_size, "header is not valid JSON: unexpected byte 0x%02x at byte %zu", c, i);
        return -1;
      }
      i += k;
      continue;
    }
    if (in_str) {
      if (c == '\\') {
        if (i + 1 < n && (h[i + 1] == '"' || h[i + 1] == '\\')) i++;
      } else if (c == '"') {
        in_str = 0;
      }
      i++;
      continue;
    }
    switch (c) {
      case '"':
        in_str = 1;
        break;
      case '{':
        if (depth >= 2 || (depth == 1 && stack[0] != '{')) {
          snprintf(msg, msg_size, "header nests an object too deep at byte %zu (expected {name: {key: [..]}})", i);
          return -1;
        }
        stack[depth++] = '{';
        tokens++;
        break;
      case '[':
        if (depth != 2) {
          snprintf(msg, msg_size, "header has an array at nesting depth %d at byte %zu (expected {name: {key: [..]}})",
                   depth, i);
          return -1;
        }
        stack[depth++] = '[';
        elems = 0;
        tokens++;
        break;
      case '}':
      case ']':
        if (depth == 0 || stack[depth - 1] != (c == '}' ? '{' : '[')) {
          snprintf(msg, msg_size, "header is not valid JSON: unbalanced '%c' at byte %zu", c, i);
          return -1;
        }
        depth--;
        break;
      case ',':
        tokens++;
        if (depth == 3 && ++elems >= ST_MAX_ARRAY) {
          snprintf(msg, msg_size, "header array at byte %zu has more than %d elements", i, ST_MAX_ARRAY);
          return -1;
        }
        break;
      default:
        /* Inside shape / data_offsets only plain digits (and '-', refused later with the tensor's
         * name) may appear outside strings: no fractions, exponents, literals or nesting. */
        if (depth == 3 && !(c >= '0' && c <= '9') && c != '-' && c != ' ' && c != '\t' && c != '\n' &&
            c != '\r') {
          snprintf(msg, msg_size, "header has a non-integer value in an array at byte %zu ('%c')", i, c);
          return -1;
        }
        break;
    }
    if (tokens > ST_MAX_TOKENS) {
      snprintf(msg, msg_size, "header has more than %u JSON values", ST_MAX_TOKENS);
      return -1;
    }
    i++;
  }
  if (in_str || depth != 0) {
    snprintf(msg, msg_size, "header is not valid JSON: it ends inside %s", in_str ? "a string" : "an object or array");
    return -1;
  }
  return 0;
}

/* Reads a JSON number that must be a whole number in [0, 2^53]; returns 0 or -1 with why set. */
static int json_uint(const cJSON *v, uint64_t *out, const char **why) {
  if (!cJSON_IsNumber(v)) {
    *why = "is not a number";
    return -1;
  }
  double d = v->valuedouble;
  if (d != d) {
    *why = "is not a number";
    return -1;
  }
  if (d < 0) {
    *why = "is negative";
    return -1;
  }
  if (d > (double)ST_MAX_INT) {
    *why = "is absurdly large (over 2^53)";
    return -1;
  }
  if ((double)(uint64_t)d != d) {
    *why = "is not an integer";
    return -1;
  }
  *out = (uint64_t)d;
  return 0;
}

static int cmp_name(const void *a, const void *b) {
  const eddy_st_tensor_t *x = *(const eddy_st_tensor_t *const *)a, *y = *(const eddy_st_tensor_t *const *)b;
  return strcmp(x->name, y->name);
}

static int cmp_range(const void *a, const void *b) {
  const st_range_t *x = a, *y = b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return x->index < y->index ? -1 : x->index > y->index;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Fills r->meta_* from the __metadata__ object. */
static int parse_meta(eddy_st_reader_t *r, const cJSON *obj, char *msg, size_t msg_size) {
  if (!cJSON_IsObject(obj)) {
    snprintf(msg, msg_size, "__metadata__ is not an object");
    return -1;
  }
  size_t n = 0;
  for (const cJSON *c = obj->child; c; c = c->next) n++;
  r->meta_keys = calloc(n ? n : 1, sizeof(char *));
  r->meta_vals = calloc(n ? n : 1, sizeof(char *));
  if (!r->meta_keys || !r->meta_vals) {
    snprintf(msg, msg_size, "out of memory");
    return -1;
  }
  for (const cJSON *c = obj->child; c; c = c->next) {
    if (!cJSON_IsString(c) || !c->valuestring) {
      snprintf(msg, msg_size, "__metadata__ value of '%.64s' is not a string", c->string ? c->string : "");
      return -1;
    }
    r->meta_keys[r->meta_count] = strdup(c->string ? c->string : "");
    r->meta_vals[r->meta_count] = strdup(c->valuestring);
    r->meta_count++;
    if (!r->meta_keys[r->meta_count - 1] || !r->meta_vals[r->meta_count - 1]) {
      snprintf(msg, msg_size, "out of memory");
      return -1;
    }
  }
  /* Duplicate keys: sort a copy of the key pointers (values stay paired with the originals). */
  char **keys = malloc((n ? n : 1) * sizeof(char *));
  if (!keys) {
    snprintf(msg, msg_size, "out of memory");
    return -1;
  }
  memcpy(keys, r->meta_keys, n * sizeof(char *));
  qsort(keys, n, sizeof(char *), cmp_str);
  for (size_t i = 1; i < n; i++) {
    if (strcmp(keys[i - 1], keys[i]) == 0) {
      snprintf(msg, msg_size, "duplicate __metadata__ key '%.64s'", keys[i]);
      free(keys);
      return -1;
    }
  }
  free(keys);
  return 0;
}

/* Checks one tensor entry and fills t (name owned by t); range gets its offsets. */
static int parse_tensor(const cJSON *e, eddy_st_tensor_t *t, st_range_t *range, char *msg, size_t msg_size) {
  const char *name = e->string ? e->string : "";
  t->name = strdup(name);
  if (!t->name) {
    snprintf(msg, msg_size, "out of memory");
    return -1;
  }
  if (!cJSON_IsObject(e)) {
    snprintf(msg, msg_size, "tensor '%.64s' entry is not an object", name);
    return -1;
  }
  const cJSON *dtype = NULL, *shape = NULL, *offsets = NULL;
  for (const cJSON *c = e->child; c; c = c->next) {
    const cJSON **slot = NULL;
    if (!c->string) continue;
    if (strcmp(c->string, "dtype") == 0) slot = &dtype;
    if (strcmp(c->string, "shape") == 0) slot = &shape;
    if (strcmp(c->string, "data_offsets") == 0) slot = &offsets;
    if (!slot) continue; /* unknown keys are ignored, as by the reference reader */
    if (*slot) {
      snprintf(msg, msg_size, "tensor '%.64s' has a duplicate '%s' key", name, c->string);
      return -1;
    }
    *slot = c;
  }
  if (!dtype || !shape || !offsets) {
    snprintf(msg, msg_size, "tensor '%.64s' is missing '%s'", name, !dtype ? "dtype" : !shape ? "shape" : "data_offsets");
    return -1;
  }
  if (!cJSON_IsString(dtype) || !dtype->valuestring) {
    snprintf(msg, msg_size, "tensor '%.64s' dtype is not a string", name);
    return -1;
  }
  if (eddy_dtype_parse(dtype->valuestring, &t->dtype) != 0) {
    snprintf(msg, msg_size, "tensor '%.64s' has unknown dtype '%.16s'", name, dtype->valuestring);
    return -1;
  }
  if (!cJSON_IsArray(shape)) {
    snprintf(msg, msg_size, "tensor '%.64s' shape is not an array", name);
    return -1;
  }
  int ndim = cJSON_GetArraySize(shape);
  if (ndim > EDDY_ST_MAX_DIMS) {
    snprintf(msg, msg_size, "tensor '%.64s' has %d dims > EDDY_ST_MAX_DIMS %d", name, ndim, EDDY_ST_MAX_DIMS);
    return -1;
  }
  t->ndim = (uint32_t)ndim;
  int d = 0;
  for (const cJSON *c = shape->child; c; c = c->next, d++) {
    const char *why;
    if (json_uint(c, &t->shape[d], &why) != 0) {
      snprintf(msg, msg_size, "tensor '%.64s' dim %d %s", name, d, why);
      return -1;
    }
  }
  if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2) {
    snprintf(msg, msg_size, "tensor '%.64s' data_offsets is not an array of 2 numbers", name);
    return -1;
  }
  const char *why;
  if (json_uint(offsets->child, &range->begin, &why) != 0 || json_uint(offsets->child->next, &range->end, &why) != 0) {
    snprintf(msg, msg_size, "tensor '%.64s' data offset %s", name, why);
    return -1;
  }
  if (range->begin > range->end) {
    snprintf(msg, msg_size, "tensor '%.64s' data_offsets begin %llu > end %llu", name,
             (unsigned long long)range->begin, (unsigned long long)range->end);
    return -1;
  }
  uint64_t numel, nbytes;
  if (shape_numel(t->shape, t->ndim, &numel) != 0 ||
      __builtin_mul_overflow(numel, (uint64_t)eddy_dtype_size(t->dtype), &nbytes)) {
    snprintf(msg, msg_size, "tensor '%.64s' shape × dtype size overflows 64 bits", name);
    return -1;
  }
  if (nbytes != range->end - range->begin) {
    snprintf(msg, msg_size, "tensor '%.64s' shape × %s size = %llu bytes != data_offsets range %llu", name,
             eddy_dtype_name(t->dtype), (unsigned long long)nbytes,
             (unsigned long long)(range->end - range->begin));
    return -1;
  }
  return 0;
}

/* Validates r->image (r->len bytes) and builds the tensor table; msg explains a refusal. */
static int reader_parse(eddy_st_reader_t *r, size_t max_header, char *msg, size_t msg_size) {
  if (r->len < 8) {
    snprintf(msg, msg_size, "file too short (%zu bytes) for the 8-byte header length", r->len);
    return -1;
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = (n << 8) | r->image[i];
  if (n > max_header) {
    snprintf(msg, msg_size, "header length %llu over the cap of %zu bytes", (unsigned long long)n, max_header);
    return -1;
  }
  if (n > r->len - 8) {
    snprintf(msg, msg_size, "bad header length %llu > file size %zu - 8", (unsigned long long)n, r->len);
    return -1;
  }
  const uint8_t *h = r->image + 8;
  if (n == 0 || h[0] != '{') {
    snprintf(msg, msg_size, "header is not a JSON object (does not start with '{')");
    return -1;
  }
  if (header_prescan(h, (size_t)n, msg, msg_size) != 0) return -1;
  char *text = malloc((size_t)n + 1);
  if (!text) {
    snprintf(msg, msg_size, "out of memory for a %llu-byte header", (unsigned long long)n);
    return -1;
  }
  memcpy(text, h, (size_t)n);
  text[n] = '\0';
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithOpts(text, &end, 0);
  if (!root) {
    snprintf(msg, msg_size, "header is not valid JSON (error near byte %zu)", end ? (size_t)(end - text) : (size_t)0);
    free(text);
    return -1;
  }
  for (const char *p = end; *p; p++) {
    if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
      snprintf(msg, msg_size, "header has bytes after the JSON object at byte %zu", (size_t)(p - text));
      cJSON_Delete(root);
      free(text);
      return -1;
    }
  }
  free(text);
  int rc = -1;
  st_range_t *ranges = NULL;
  if (!cJSON_IsObject(root)) {
    snprintf(msg, msg_size, "header is not a JSON object");
    goto out;
  }
  size_t entries = 0;
  int have_meta = 0;
  for (const cJSON *c = root->child; c; c = c->next) entries++;
  r->tensors = calloc(entries ? entries : 1, sizeof *r->tensors);
  r->by_name = calloc(entries ? entries : 1, sizeof *r->by_name);
  ranges = calloc(entries ? entries : 1, sizeof *ranges);
  if (!r->tensors || !r->by_name || !ranges) {
    snprintf(msg, msg_size, "out of memory");
    goto out;
  }
  for (const cJSON *c = root->child; c; c = c->next) {
    if (c->string && strcmp(c->string, "__metadata__") == 0) {
      if (have_meta) {
        snprintf(msg, msg_size, "duplicate __metadata__");
        goto out;
      }
      have_meta = 1;
      if (parse_meta(r, c, msg, msg_size) != 0) goto out;
      continue;
    }
    eddy_st_tensor_t *t = &r->tensors[r->count];
    ranges[r->count].index = r->count;
    r->count++; /* counted first so that close() frees the name on failure */
    if (parse_tensor(c, t, &ranges[r->count - 1], msg, msg_size) != 0) goto out;
  }
  for (size_t i = 0; i < r->count; i++) r->by_name[i] = &r->tensors[i];
  qsort(r->by_name, r->count, sizeof *r->by_name, cmp_name);
  for (size_t i = 1; i < r->count; i++) {
    if (strcmp(r->by_name[i - 1]->name, r->by_name[i]->name) == 0) {
      snprintf(msg, msg_size, "duplicate tensor name '%.64s'", r->by_name[i]->name);
      goto out;
    }
  }
  size_t base = 8 + (size_t)n, buflen = r->len - base;
  qsort(ranges, r->count, sizeof *ranges, cmp_range);
  uint64_t off = 0;
  for (size_t i = 0; i < r->count; i++) {
    const st_range_t *g = &ranges[i];
    const char *name = r->tensors[g->index].name;
    if (g->end > buflen) {
      snprintf(msg, msg_size, "tensor '%.64s' data_offsets [%llu, %llu) end beyond the %zu-byte data buffer", name,
               (unsigned long long)g->begin, (unsigned long long)g->end, buflen);
      goto out;
    }
    if (g->begin < off) {
      snprintf(msg, msg_size, "tensor '%.64s' data_offsets [%llu, %llu) overlap another tensor ending at %llu", name,
               (unsigned long long)g->begin, (unsigned long long)g->end, (unsigned long long)off);
      goto out;
    }
    if (g->begin > off) {
      snprintf(msg, msg_size, "gap: data buffer bytes [%llu, %llu) are not covered by any tensor",
               (unsigned long long)off, (unsigned long long)g->begin);
      goto out;
    }
    off = g->end;
    r->tensors[g->index].data = r->image + base + g->begin;
    r->tensors[g->index].nbytes = (size_t)(g->end - g->begin);
  }
  if (off != buflen) {
    snprintf(msg, msg_size, "gap: data buffer bytes [%llu, %zu) are not covered by any tensor",
             (unsigned long long)off, buflen);
    goto out;
  }
  rc = 0;
out:
  free(ranges);
  cJSON_Delete(root);
  return rc;
}

/* Takes ownership of image (malloc'ed, len bytes). */
static eddy_st_reader_t *reader_from_image(uint8_t *image, size_t len, size_t max_header, const char *label,
                                           char *errstr, size_t errstr_size) {
  eddy_st_reader_t *r = calloc(1, sizeof *r);
  if (!r) {
    free(image);
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "safetensors %s: out of memory", label);
    return NULL;
  }
  r->image = image;
  r->len = len;
  char msg[512];
  if (reader_parse(r, max_header ? max_header : EDDY_ST_MAX_HEADER, msg, sizeof msg) != 0) {
    eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "safetensors %s: %s", label, msg);
    eddy_st_reader_destroy(r);
    return NULL;
  }
  return r;
}

eddy_st_reader_t *eddy_st_reader_new(const char *path, size_t max_header, char *errstr, size_t errstr_size) {
  if (!path) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "safetensors: NULL path");
    return NULL;
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "safetensors %s: open: %s", path, strerror(errno));
    return NULL;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "safetensors %s: fstat: %s", path, strerror(errno));
    close(fd);
    return NULL;
  }
  if (!S_ISREG(st.st_mode)) {
    eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "safetensors %s: not a regular file", path);
    close(fd);
    return NULL;
  }
  if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX / 2) {
    eddy_errf(EDDY_ERR_TOO_LARGE, errstr, errstr_size, "safetensors %s: file of %lld bytes is too large", path,
              (long long)st.st_size);
    close(fd);
    return NULL;
  }
  size_t size = (size_t)st.st_size;
  uint8_t *image = malloc(size ? size : 1);
  if (!image) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "safetensors %s: out of memory for %zu bytes", path, size);
    close(fd);
    return NULL;
  }
  size_t got = 0;
  while (got < size) {
    ssize_t k = read(fd, image + got, size - got);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "safetensors %s: read: %s", path,
                k < 0 ? strerror(errno) : "file shrank while reading");
      free(image);
      close(fd);
      return NULL;
    }
    got += (size_t)k;
  }
  close(fd);
  return reader_from_image(image, size, max_header, path, errstr, errstr_size);
}

eddy_st_reader_t *eddy_st_reader_new_owned(uint8_t *buf, size_t len, size_t max_header, char *errstr,
                                     size_t errstr_size) {
  if (!buf) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "safetensors <memory>: NULL buffer");
    return NULL;
  }
  return reader_from_image(buf, len, max_header, "<memory>", errstr, errstr_size);
}

eddy_st_reader_t *eddy_st_reader_new_mem(const uint8_t *buf, size_t len, size_t max_header, char *errstr,
                                   size_t errstr_size) {
  if (!buf && len) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "safetensors <memory>: NULL buffer");
    return NULL;
  }
  uint8_t *image = malloc(len ? len : 1);
  if (!image) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "safetensors <memory>: out of memory for %zu bytes", len);
    return NULL;
  }
  if (len) memcpy(image, buf, len);
  return reader_from_image(image, len, max_header, "<memory>", errstr, errstr_size);
}

size_t eddy_st_count(const eddy_st_reader_t *r) { return r ? r->count : 0; }

const eddy_st_tensor_t *eddy_st_at(const eddy_st_reader_t *r, size_t i) {
  return r && i < r->count ? &r->tensors[i] : NULL;
}

const eddy_st_tensor_t *eddy_st_find(const eddy_st_reader_t *r, const char *name) {
  if (!r || !name) return NULL;
  size_t lo = 0, hi = r->count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(r->by_name[mid]->name, name);
    if (c == 0) return r->by_name[mid];
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

const char *eddy_st_meta(const eddy_st_reader_t *r, const char *key) {
  if (!r || !key) return NULL;
  for (size_t i = 0; i < r->meta_count; i++)
    if (strcmp(r->meta_keys[i], key) == 0) return r->meta_vals[i];
  return NULL;
}

eddy_err_t eddy_st_read_f32(const eddy_st_tensor_t *t, float *dst, size_t numel) {
  if (!t || (numel && !dst)) return EDDY_ERR_INVALID_ARG;
  if (t->dtype != EDDY_DT_F32 && t->dtype != EDDY_DT_F16 && t->dtype != EDDY_DT_BF16) return EDDY_ERR_UNSUPPORTED;
  uint64_t n;
  if (t->ndim > EDDY_ST_MAX_DIMS || shape_numel(t->shape, t->ndim, &n) != 0) return EDDY_ERR_SHAPE;
  if (n != numel) return EDDY_ERR_SHAPE;
  size_t esize = eddy_dtype_size(t->dtype);
  if (numel > SIZE_MAX / esize || t->nbytes != numel * esize || (numel && !t->data)) return EDDY_ERR_FORMAT;
  if (t->dtype == EDDY_DT_F32) {
    if (numel) memcpy(dst, t->data, numel * 4);
    return EDDY_OK;
  }
  for (size_t i = 0; i < numel; i++) {
    uint16_t h;
    memcpy(&h, t->data + 2 * i, 2);
    dst[i] = t->dtype == EDDY_DT_F16 ? eddy_f16_to_f32(h) : eddy_bf16_to_f32(h);
  }
  return EDDY_OK;
}
