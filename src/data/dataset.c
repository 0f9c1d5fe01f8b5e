/* Datasets: JSONL event files (plain or gzip, read through zlib, one event per line, bad lines
 * reported with FILE:LINE and skipped; also handed out as raw lines, standard input included) and
 * Fashion-MNIST from gzip IDX files, read and validated whole at open (magic, 28x28 dims, equal
 * counts, labels 0..9) so that iteration cannot fail. */
#include "data/dataset.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define FMNIST_PREFIX "fashion-mnist:"
#define FMNIST_SIDE 28
#define FMNIST_PIXELS (FMNIST_SIDE * FMNIST_SIDE)
#define FMNIST_CLASSES 10
#define FMNIST_MAX_RECORDS (1u << 20) /* cap on the count an IDX header may claim */
#define IDX_MAGIC_LABELS 0x00000801u
#define IDX_MAGIC_IMAGES 0x00000803u
#define GZ_CHUNK (1u << 20)
#define JSONL_CHUNK (64u << 10)
#define LINE_FIRST_CAP 4096u /* the line buffer starts here and doubles up to max_bytes + 2 */

typedef enum { DATASET_JSONL, DATASET_IDX } dataset_kind_t;

struct eddy_dataset {
  dataset_kind_t kind;
  eddy_event_schema_t schema;
  /* Fashion-MNIST */
  const char *split; /* "train" | "test" */
  uint8_t *pixels;   /* count * 784 */
  uint8_t *labels;   /* count */
  uint32_t count, next;
  float scale[256]; /* pixel value -> pixel / 255 */
  /* JSONL */
  bool lines_only; /* opened by eddy_dataset_new_lines: no schema, no decoding */
  char *path;
  gzFile gz;
  bool direct;        /* plain (not gzip) file: progress counts consumed bytes exactly */
  uint64_t file_size; /* bytes on disk */
  uint64_t consumed;  /* uncompressed bytes handed out as lines */
  char *chunk;
  size_t chunk_len, chunk_pos;
  bool gz_eof, done;
  char *line; /* current line, NUL-terminated; of a line over the cap, its first max_bytes bytes */
  size_t line_len, line_cap, max_bytes;
  uint64_t lineno;
};

static eddy_err_t dataset_reserve_dense(eddy_event_t *ev, uint32_t n) {
  if (n <= ev->dense_cap && ev->dense) return EDDY_OK;
  float *dense = realloc(ev->dense, (size_t)n * sizeof *dense);
  if (!dense) return EDDY_ERR_NOMEM;
  ev->dense = dense;
  ev->dense_cap = n;
  return EDDY_OK;
}

/* Reads exactly n bytes; errors name the file. */
static eddy_err_t gz_read_exact(gzFile gz, const char *path, void *buf, size_t n, const char *what,
                                char *errstr, size_t errstr_size) {
  size_t got = 0;
  while (got < n) {
    size_t want = n - got < GZ_CHUNK ? n - got : GZ_CHUNK;
    int r = gzread(gz, (uint8_t *)buf + got, (unsigned)want);
    if (r < 0) {
      int errnum = 0;
      const char *msg = gzerror(gz, &errnum);
      if (errnum == Z_ERRNO)
        return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "%s: read error in %s: %s", path, what,
                         strerror(errno));
      return eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size,
                       "%s: corrupt gzip data in %s after %zu bytes: %s", path, what, got, msg);
    }
    if (r == 0) {
      int errnum = 0;
      const char *msg = gzerror(gz, &errnum);
      return eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "%s: truncated %s: %zu of %zu bytes%s%s", path,
                       what, got, n, errnum != Z_OK ? ", " : "", errnum != Z_OK ? msg : "");
    }
    got += (size_t)r;
  }
  return EDDY_OK;
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Reads one IDX file whole: header checks, then count * record bytes, then nothing more.
 * is_images: magic 0x803 with 28x28 records; else magic 0x801 with 1-byte records. */
static eddy_err_t idx_read(const char *path, bool is_images, uint8_t **data, uint32_t *count, char *errstr,
                           size_t errstr_size) {
  *data = NULL;
  *count = 0;
  errno = 0;
  gzFile gz = gzopen(path, "rb");
  if (!gz) {
    int e = errno;
    return eddy_errf(e == ENOENT ? EDDY_ERR_NOT_FOUND : EDDY_ERR_IO, errstr, errstr_size,
                     "open %s: %s (install dataset-fashion-mnist or set EDDY_FASHION_MNIST_DIR)", path,
                     e ? strerror(e) : "cannot open");
  }
  gzbuffer(gz, 128u << 10);
  uint8_t head[16];
  size_t head_len = is_images ? 16 : 8;
  uint32_t want_magic = is_images ? IDX_MAGIC_IMAGES : IDX_MAGIC_LABELS;
  eddy_err_t err = gz_read_exact(gz, path, head, head_len, "IDX header", errstr, errstr_size);
  if (err) goto out;
  uint32_t magic = be32(head), n = be32(head + 4);
  if (magic != want_magic) {
    err = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "%s: IDX magic 0x%08x, expected 0x%08x (%s)", path,
                    magic, want_magic, is_images ? "ubyte images, 3 dims" : "ubyte labels, 1 dim");
    goto out;
  }
  if (is_images && (be32(head + 8) != FMNIST_SIDE || be32(head + 12) != FMNIST_SIDE)) {
    err = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size,
                    "%s: images are %" PRIu32 "x%" PRIu32 ", expected %dx%d", path, be32(head + 8),
                    be32(head + 12), FMNIST_SIDE, FMNIST_SIDE);
    goto out;
  }
  if (n > FMNIST_MAX_RECORDS) {
    err = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "%s: header claims %" PRIu32 " records, cap %u",
                    path, n, FMNIST_MAX_RECORDS);
    goto out;
  }
  size_t bytes = (size_t)n * (is_images ? FMNIST_PIXELS : 1);
  *data = malloc(bytes ? bytes : 1);
  if (!*data) {
    err = eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "%s: out of memory for %zu bytes", path, bytes);
    goto out;
  }
  err = gz_read_exact(gz, path, *data, bytes, is_images ? "image data" : "label data", errstr, errstr_size);
  if (err) goto out;
  uint8_t extra;
  int r = gzread(gz, &extra, 1);
  int errnum = Z_OK;
  const char *msg = gzerror(gz, &errnum);
  if (r != 0 || errnum != Z_OK) {
    err = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "%s: %s after %" PRIu32 " records", path,
                    r > 0 ? "unexpected trailing data" : msg, n);
    goto out;
  }
  *count = n;
out:
  gzclose(gz);
  if (err) {
    free(*data);
    *data = NULL;
  }
  return err;
}

static eddy_dataset_t *open_fashion_mnist(const char *split_name, const eddy_event_schema_t *schema,
                                          char *errstr, size_t errstr_size) {
  const char *file_prefix;
  if (strcmp(split_name, "train") == 0) {
    file_prefix = "train";
  } else if (strcmp(split_name, "test") == 0) {
    file_prefix = "t10k";
  } else {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
              "dataset \"fashion-mnist:%s\": unknown split (use fashion-mnist:train or fashion-mnist:test)",
              split_name);
    return NULL;
  }
  if (schema && (schema->dense_dim != FMNIST_PIXELS || schema->head != EDDY_HEAD_SOFTMAX ||
                 schema->classes != FMNIST_CLASSES)) {
    eddy_errf(EDDY_ERR_SHAPE, errstr, errstr_size,
              "fashion-mnist:%s needs dense_dim = %d and a softmax head with %d classes; the model has "
              "dense_dim = %u, head %s, classes = %u",
              split_name, FMNIST_PIXELS, FMNIST_CLASSES, schema->dense_dim,
              schema->head == EDDY_HEAD_SOFTMAX    ? "softmax"
              : schema->head == EDDY_HEAD_LOGISTIC ? "logistic"
              : schema->head == EDDY_HEAD_SQUARED  ? "squared"
                                                   : "unknown",
              schema->classes);
    return NULL;
  }
  const char *dir = getenv("EDDY_FASHION_MNIST_DIR");
  if (!dir || !*dir) dir = EDDY_FASHION_MNIST_DEFAULT_DIR;
  char images_path[4096], labels_path[4096];
  int a = snprintf(images_path, sizeof images_path, "%s/%s-images-idx3-ubyte.gz", dir, file_prefix);
  int b = snprintf(labels_path, sizeof labels_path, "%s/%s-labels-idx1-ubyte.gz", dir, file_prefix);
  if (a < 0 || (size_t)a >= sizeof images_path || b < 0 || (size_t)b >= sizeof labels_path) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "EDDY_FASHION_MNIST_DIR is too long");
    return NULL;
  }
  eddy_dataset_t *ds = calloc(1, sizeof *ds);
  if (!ds) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
    return NULL;
  }
  ds->kind = DATASET_IDX;
  ds->split = strcmp(split_name, "train") == 0 ? "train" : "test";
  if (schema) ds->schema = *schema;
  uint32_t n_labels = 0, n_images = 0;
  if (idx_read(labels_path, false, &ds->labels, &n_labels, errstr, errstr_size) != EDDY_OK ||
      idx_read(images_path, true, &ds->pixels, &n_images, errstr, errstr_size) != EDDY_OK) {
    eddy_dataset_destroy(ds);
    return NULL;
  }
  if (n_labels != n_images) {
    eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "%s has %" PRIu32 " images but %s has %" PRIu32 " labels",
              images_path, n_images, labels_path, n_labels);
    eddy_dataset_destroy(ds);
    return NULL;
  }
  for (uint32_t i = 0; i < n_labels; i++) {
    if (ds->labels[i] >= FMNIST_CLASSES) {
      eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "%s: label %u of record %" PRIu32 " out of range 0..%d",
                labels_path, ds->labels[i], i, FMNIST_CLASSES - 1);
      eddy_dataset_destroy(ds);
      return NULL;
    }
  }
  ds->count = n_images;
  for (int v = 0; v < 256; v++) ds->scale[v] = (float)v / 255.0f;
  return ds;
}

/* The JSONL reader on path ("-": standard input, when stdin_ok), lines capped at max_bytes. */
static eddy_dataset_t *jsonl_new(const char *path, size_t max_bytes, bool stdin_ok, char *errstr,
                                 size_t errstr_size) {
  bool is_stdin = stdin_ok && strcmp(path, "-") == 0;
  struct stat st = {0};
  if (!is_stdin && stat(path, &st) != 0) {
    eddy_errf(errno == ENOENT ? EDDY_ERR_NOT_FOUND : EDDY_ERR_IO, errstr, errstr_size, "open %s: %s", path,
              strerror(errno));
    return NULL;
  }
  if (S_ISDIR(st.st_mode)) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "open %s: is a directory", path);
    return NULL;
  }
  eddy_dataset_t *ds = calloc(1, sizeof *ds);
  if (!ds) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
    return NULL;
  }
  ds->kind = DATASET_JSONL;
  ds->max_bytes = max_bytes;
  ds->file_size = is_stdin ? 0 : (uint64_t)st.st_size;
  ds->path = strdup(path);
  ds->chunk = malloc(JSONL_CHUNK);
  ds->line_cap = max_bytes + 2 < LINE_FIRST_CAP ? max_bytes + 2 : LINE_FIRST_CAP;
  ds->line = malloc(ds->line_cap);
  if (!ds->path || !ds->chunk || !ds->line) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "%s: out of memory", path);
    eddy_dataset_destroy(ds);
    return NULL;
  }
  ds->line[0] = '\0';
  errno = 0;
  if (is_stdin) {
    int fd = dup(STDIN_FILENO);
    ds->gz = fd < 0 ? NULL : gzdopen(fd, "rb");
    if (!ds->gz && fd >= 0) close(fd);
  } else {
    ds->gz = gzopen(path, "rb");
  }
  if (!ds->gz) {
    eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "open %s: %s", path, errno ? strerror(errno) : "cannot open");
    eddy_dataset_destroy(ds);
    return NULL;
  }
  gzbuffer(ds->gz, 128u << 10);
  ds->direct = gzdirect(ds->gz) == 1;
  return ds;
}

static eddy_dataset_t *open_jsonl(const char *path, const eddy_event_schema_t *schema, char *errstr,
                                  size_t errstr_size) {
  if (!schema) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "%s: a JSONL dataset needs an event schema", path);
    return NULL;
  }
  eddy_dataset_t *ds =
      jsonl_new(path, schema->max_bytes ? schema->max_bytes : EDDY_EVENT_DEFAULT_MAX_BYTES, false, errstr,
                errstr_size);
  if (ds) ds->schema = *schema;
  return ds;
}

eddy_dataset_t *eddy_dataset_new(const char *name, const eddy_event_schema_t *schema, char *errstr,
                                  size_t errstr_size) {
  if (!name || !*name) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "dataset name is empty");
    return NULL;
  }
  if (strncmp(name, FMNIST_PREFIX, strlen(FMNIST_PREFIX)) == 0)
    return open_fashion_mnist(name + strlen(FMNIST_PREFIX), schema, errstr, errstr_size);
  return open_jsonl(name, schema, errstr, errstr_size);
}

eddy_dataset_t *eddy_dataset_new_lines(const char *path, size_t max_bytes, char *errstr, size_t errstr_size) {
  if (!path || !*path) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "dataset name is empty");
    return NULL;
  }
  if (max_bytes == 0 || max_bytes > SIZE_MAX / 2) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "%s: line cap %zu bytes is out of range", path,
              max_bytes);
    return NULL;
  }
  eddy_dataset_t *ds = jsonl_new(path, max_bytes, true, errstr, errstr_size);
  if (ds) ds->lines_only = true;
  return ds;
}

void eddy_dataset_destroy(eddy_dataset_t *ds) {
  if (!ds) return;
  free(ds->pixels);
  free(ds->labels);
  if (ds->gz) gzclose(ds->gz);
  free(ds->path);
  free(ds->chunk);
  free(ds->line);
  free(ds);
}

static eddy_err_t next_idx(eddy_dataset_t *ds, eddy_event_t *ev, bool *eof, char *errstr,
                           size_t errstr_size) {
  if (ds->next >= ds->count) {
    *eof = true;
    return EDDY_OK;
  }
  if (dataset_reserve_dense(ev, FMNIST_PIXELS) != EDDY_OK)
    return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "fashion-mnist: out of memory");
  uint32_t i = ds->next++;
  const uint8_t *px = ds->pixels + (size_t)i * FMNIST_PIXELS;
  for (int k = 0; k < FMNIST_PIXELS; k++) ev->dense[k] = ds->scale[px[k]];
  ev->n_dense = FMNIST_PIXELS;
  ev->n_sparse = 0;
  snprintf(ev->id, sizeof ev->id, "fmnist-%s-%06" PRIu32, ds->split, i);
  ev->has_ts = false;
  ev->ts = 0;
  ev->label = (double)ds->labels[i];
  ev->weight = 1.0f;
  return EDDY_OK;
}

/* Refills the chunk buffer; EDDY_OK with gz_eof set at the end of the file. */
static eddy_err_t jsonl_fill(eddy_dataset_t *ds, char *errstr, size_t errstr_size) {
  int r = gzread(ds->gz, ds->chunk, JSONL_CHUNK);
  int errnum = Z_OK;
  const char *msg = gzerror(ds->gz, &errnum);
  if (r < 0 || (r == 0 && errnum != Z_OK))
    return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "%s:%" PRIu64 ": read error: %s", ds->path,
                     ds->lineno + 1, errnum == Z_ERRNO ? strerror(errno) : msg);
  ds->chunk_len = (size_t)r;
  ds->chunk_pos = 0;
  if (r == 0) ds->gz_eof = true;
  return EDDY_OK;
}

/* Makes room for n bytes in ds->line; n is at most max_bytes + 2. */
static eddy_err_t line_reserve(eddy_dataset_t *ds, size_t n, char *errstr, size_t errstr_size) {
  if (n <= ds->line_cap) return EDDY_OK;
  size_t cap = ds->line_cap;
  while (cap < n) cap *= 2;
  if (cap > ds->max_bytes + 2) cap = ds->max_bytes + 2;
  char *grown = realloc(ds->line, cap);
  if (!grown)
    return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "%s:%" PRIu64 ": out of memory for a %zu-byte line",
                     ds->path, ds->lineno + 1, n);
  ds->line = grown;
  ds->line_cap = cap;
  return EDDY_OK;
}

/* Reads the next line into ds->line (without "\n" or "\r\n"). *got = false at end of file;
 * *too_long = true when the line exceeded max_bytes (its first max_bytes bytes are kept). */
static eddy_err_t jsonl_read_line(eddy_dataset_t *ds, bool *got, bool *too_long, char *errstr,
                                  size_t errstr_size) {
  size_t kept = 0, total = 0, keep_max = ds->max_bytes + 1; /* +1: room for a final '\r' */
  bool any = false;
  *got = false;
  *too_long = false;
  for (;;) {
    if (ds->chunk_pos == ds->chunk_len) {
      if (ds->gz_eof) break;
      eddy_err_t err = jsonl_fill(ds, errstr, errstr_size);
      if (err) return err;
      if (ds->gz_eof) break;
    }
    any = true;
    const char *start = ds->chunk + ds->chunk_pos;
    size_t avail = ds->chunk_len - ds->chunk_pos;
    const char *nl = memchr(start, '\n', avail);
    size_t take = nl ? (size_t)(nl - start) : avail;
    size_t copy = take < keep_max - kept ? take : keep_max - kept;
    eddy_err_t err = line_reserve(ds, kept + copy + 1, errstr, errstr_size);
    if (err) return err;
    memcpy(ds->line + kept, start, copy);
    kept += copy;
    total += take;
    ds->chunk_pos += take + (nl ? 1 : 0);
    ds->consumed += take + (nl ? 1 : 0);
    if (nl) break;
  }
  if (!any) return EDDY_OK;
  if (kept == total && kept > 0 && ds->line[kept - 1] == '\r') {
    kept--;
    total--;
  }
  *too_long = total > ds->max_bytes;
  if (kept > ds->max_bytes) kept = ds->max_bytes;
  ds->line[kept] = '\0';
  ds->line_len = kept;
  ds->lineno++;
  *got = true;
  return EDDY_OK;
}

/* Next non-blank line into ds->line; *eof = true at the end of the file. A line over the cap is
 * EDDY_ERR_EVENT_TOO_LARGE (the next call goes on after it). */
static eddy_err_t jsonl_next_line(eddy_dataset_t *ds, bool *eof, char *errstr, size_t errstr_size) {
  for (;;) {
    bool got, too_long;
    eddy_err_t err = jsonl_read_line(ds, &got, &too_long, errstr, errstr_size);
    if (err) return err;
    if (!got) {
      ds->done = true;
      *eof = true;
      return EDDY_OK;
    }
    if (too_long)
      return eddy_errf(EDDY_ERR_EVENT_TOO_LARGE, errstr, errstr_size,
                       "%s:%" PRIu64 ": line is longer than %zu bytes", ds->path, ds->lineno, ds->max_bytes);
    bool blank = true;
    for (size_t i = 0; i < ds->line_len && blank; i++) {
      char c = ds->line[i];
      blank = c == ' ' || c == '\t' || c == '\r';
    }
    if (!blank) return EDDY_OK;
  }
}

static eddy_err_t next_jsonl(eddy_dataset_t *ds, eddy_event_t *ev, bool *eof, char *errstr,
                             size_t errstr_size) {
  eddy_err_t err = jsonl_next_line(ds, eof, errstr, errstr_size);
  if (err || *eof) return err;
  char msg[384];
  msg[0] = '\0';
  err = eddy_event_from_json(ds->line, ds->line_len, &ds->schema, ev, msg, sizeof msg);
  if (err) return eddy_errf(err, errstr, errstr_size, "%s:%" PRIu64 ": %s", ds->path, ds->lineno, msg);
  return EDDY_OK;
}

eddy_err_t eddy_dataset_next(eddy_dataset_t *ds, eddy_event_t *ev, bool *eof, char *errstr,
                             size_t errstr_size) {
  if (!ds || !ev || !eof)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "dataset next: NULL argument");
  *eof = false;
  if (ds->kind == DATASET_IDX) return next_idx(ds, ev, eof, errstr, errstr_size);
  if (ds->lines_only)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                     "%s: opened for raw lines; events need eddy_dataset_new", ds->path);
  if (ds->done) {
    *eof = true;
    return EDDY_OK;
  }
  return next_jsonl(ds, ev, eof, errstr, errstr_size);
}

eddy_err_t eddy_dataset_next_line(eddy_dataset_t *ds, const char **line, size_t *len, bool *eof,
                                  char *errstr, size_t errstr_size) {
  if (!ds || !line || !len || !eof)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "dataset next line: NULL argument");
  *line = NULL;
  *len = 0;
  *eof = false;
  if (ds->kind != DATASET_JSONL)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                     "fashion-mnist:%s has no lines, only events (eddy_dataset_next)", ds->split);
  if (ds->done) {
    *eof = true;
    return EDDY_OK;
  }
  eddy_err_t err = jsonl_next_line(ds, eof, errstr, errstr_size);
  if (err || *eof) return err;
  *line = ds->line;
  *len = ds->line_len;
  return EDDY_OK;
}

uint64_t eddy_dataset_lineno(const eddy_dataset_t *ds) {
  return ds && ds->kind == DATASET_JSONL ? ds->lineno : 0;
}

const char *eddy_dataset_raw(const eddy_dataset_t *ds, size_t *len) {
  if (!ds || ds->kind != DATASET_JSONL || ds->lineno == 0) {
    if (len) *len = 0;
    return NULL;
  }
  if (len) *len = ds->line_len;
  return ds->line;
}

double eddy_dataset_progress(const eddy_dataset_t *ds) {
  if (!ds) return 0.0;
  if (ds->kind == DATASET_IDX) return ds->count ? (double)ds->next / ds->count : 1.0;
  if (ds->done || ds->file_size == 0) return ds->done ? 1.0 : 0.0;
  double at = ds->direct ? (double)ds->consumed : (double)gzoffset(ds->gz);
  double p = at / (double)ds->file_size;
  return p < 0.0 ? 0.0 : p > 1.0 ? 1.0 : p;
}

int64_t eddy_dataset_size(const eddy_dataset_t *ds) {
  if (!ds || ds->kind != DATASET_IDX) return -1;
  return ds->count;
}
