/* Tests of datasets without the Fashion-MNIST package: tiny gzip IDX files written here (read
 * through EDDY_FASHION_MNIST_DIR), every corrupt-IDX error naming its file, JSONL reading (bad lines
 * reported with FILE:LINE and skipped, the line cap, CRLF, gzip), raw lines (eddy produce's reader:
 * stdin, long lines, truncated gzip), progress, and the streams/ samples. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "data/dataset.h"
#include "testutil.h"

#define STREAMS_DIR EDDY_SOURCE_DIR "/streams"

static eddy_event_schema_t fmnist_schema(void) {
  eddy_event_schema_t s = {.dense_dim = 784, .hash_bits = 0, .head = EDDY_HEAD_SOFTMAX, .classes = 10};
  return s;
}

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static void write_gz(const char *dir, const char *name, const void *data, size_t len) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  gzFile gz = gzopen(path, "wb");
  assert_non_null(gz);
  if (len) assert_int_equal(gzwrite(gz, data, (unsigned)len), (int)len);
  assert_int_equal(gzclose(gz), Z_OK);
}

/* Writes <prefix>-labels-idx1-ubyte.gz and <prefix>-images-idx3-ubyte.gz with n records:
 * image i has pixel k = (i * 31 + k) % 256. Knobs corrupt one thing at a time. */
typedef struct {
  uint32_t image_magic, label_magic, rows, cols, image_count, label_count;
  size_t image_bytes_cut; /* drop this many bytes from the end of the image file */
  size_t image_extra;     /* append this many bytes */
  uint8_t bad_label;      /* when nonzero, label 1 gets this value */
} idx_opts_t;

static idx_opts_t idx_ok(uint32_t n) {
  idx_opts_t o = {0x803, 0x801, 28, 28, n, n, 0, 0, 0};
  return o;
}

static const uint8_t tiny_labels[] = {4, 0, 9, 7, 1};

static void write_idx(const char *dir, const char *prefix, const idx_opts_t *o) {
  size_t n = o->image_count;
  size_t img_len = 16 + n * 784 + o->image_extra;
  uint8_t *img = calloc(1, img_len);
  assert_non_null(img);
  put_be32(img, o->image_magic);
  put_be32(img + 4, o->image_count);
  put_be32(img + 8, o->rows);
  put_be32(img + 12, o->cols);
  for (size_t i = 0; i < n; i++)
    for (size_t k = 0; k < 784; k++) img[16 + i * 784 + k] = (uint8_t)((i * 31 + k) % 256);
  uint8_t lab[64] = {0};
  put_be32(lab, o->label_magic);
  put_be32(lab + 4, o->label_count);
  for (size_t i = 0; i < o->label_count && i < 40; i++) lab[8 + i] = tiny_labels[i % 5];
  if (o->bad_label) lab[9] = o->bad_label;
  char name[256];
  snprintf(name, sizeof name, "%s-images-idx3-ubyte.gz", prefix);
  write_gz(dir, name, img, img_len - o->image_bytes_cut);
  snprintf(name, sizeof name, "%s-labels-idx1-ubyte.gz", prefix);
  write_gz(dir, name, lab, 8 + o->label_count);
  free(img);
}

static void test_tiny_idx(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  idx_opts_t o = idx_ok(3);
  write_idx(dir, "train", &o);
  o = idx_ok(5);
  write_idx(dir, "t10k", &o);
  setenv("EDDY_FASHION_MNIST_DIR", dir, 1);
  eddy_event_schema_t s = fmnist_schema();
  char err[512] = "";
  eddy_dataset_t *ds = eddy_dataset_new("fashion-mnist:train", &s, err, sizeof err);
  assert_non_null(ds);
  assert_int_equal(eddy_dataset_size(ds), 3);
  assert_true(eddy_dataset_progress(ds) == 0.0);
  eddy_event_t ev;
  eddy_event_init(&ev);
  for (uint32_t i = 0; i < 3; i++) {
    bool eof = true;
    assert_int_equal(eddy_dataset_next(ds, &ev, &eof, err, sizeof err), EDDY_OK);
    assert_false(eof);
    char id[64];
    snprintf(id, sizeof id, "fmnist-train-%06u", i);
    assert_string_equal(ev.id, id);
    assert_true(ev.label == tiny_labels[i]);
    assert_true(ev.weight == 1.0f);
    assert_false(ev.has_ts);
    assert_int_equal(ev.n_dense, 784);
    assert_int_equal(ev.n_sparse, 0);
    for (uint32_t k = 0; k < 784; k++) assert_true(ev.dense[k] == (float)((i * 31 + k) % 256) / 255.0f);
    assert_true(eddy_dataset_progress(ds) == (double)(i + 1) / 3.0);
    size_t raw_len = 99;
    assert_null(eddy_dataset_raw(ds, &raw_len));
    assert_int_equal(raw_len, 0);
  }
  /* an IDX dataset has events, no lines */
  const char *line = "x";
  size_t line_len = 9;
  bool line_eof = true;
  assert_int_equal(eddy_dataset_next_line(ds, &line, &line_len, &line_eof, err, sizeof err), EDDY_ERR_INVALID_ARG);
  assert_non_null(strstr(err, "fashion-mnist:train"));
  assert_null(line);
  assert_int_equal(eddy_dataset_lineno(ds), 0);
  for (int k = 0; k < 2; k++) {
    bool eof = false;
    assert_int_equal(eddy_dataset_next(ds, &ev, &eof, err, sizeof err), EDDY_OK);
    assert_true(eof);
  }
  assert_true(eddy_dataset_progress(ds) == 1.0);
  eddy_dataset_destroy(ds);
  /* the test split comes from the t10k files; a NULL schema is accepted */
  ds = eddy_dataset_new("fashion-mnist:test", NULL, err, sizeof err);
  assert_non_null(ds);
  assert_int_equal(eddy_dataset_size(ds), 5);
  bool eof = false;
  assert_int_equal(eddy_dataset_next(ds, &ev, &eof, err, sizeof err), EDDY_OK);
  assert_string_equal(ev.id, "fmnist-test-000000");
  eddy_dataset_destroy(ds);
  eddy_dataset_destroy(NULL);
  eddy_event_free(&ev);
  unsetenv("EDDY_FASHION_MNIST_DIR");
  eddy_test_rmdir(dir);
}

typedef struct {
  idx_opts_t opts;
  const char *file; /* which file the message must name */
  eddy_err_t code;
  const char *msg;
} corrupt_case_t;

static void test_corrupt_idx(void **state) {
  (void)state;
  corrupt_case_t cases[10];
  int n = 0;
  cases[n] =
      (corrupt_case_t){idx_ok(3), "train-images-idx3-ubyte.gz", EDDY_ERR_FORMAT, "IDX magic 0x00000801"};
  cases[n++].opts.image_magic = 0x801;
  cases[n] =
      (corrupt_case_t){idx_ok(3), "train-labels-idx1-ubyte.gz", EDDY_ERR_FORMAT, "IDX magic 0x00000803"};
  cases[n++].opts.label_magic = 0x803;
  cases[n] =
      (corrupt_case_t){idx_ok(3), "train-images-idx3-ubyte.gz", EDDY_ERR_FORMAT, "28x27, expected 28x28"};
  cases[n++].opts.cols = 27;
  cases[n] = (corrupt_case_t){idx_ok(3), "train-images-idx3-ubyte.gz", EDDY_ERR_FORMAT, "has 3 images but"};
  cases[n++].opts.label_count = 2;
  cases[n] =
      (corrupt_case_t){idx_ok(3), "train-images-idx3-ubyte.gz", EDDY_ERR_FORMAT, "truncated image data"};
  cases[n++].opts.image_bytes_cut = 10;
  cases[n] = (corrupt_case_t){idx_ok(3), "train-images-idx3-ubyte.gz", EDDY_ERR_FORMAT, "trailing data"};
  cases[n++].opts.image_extra = 5;
  cases[n] =
      (corrupt_case_t){idx_ok(3), "train-labels-idx1-ubyte.gz", EDDY_ERR_FORMAT, "label 10 of record 1"};
  cases[n++].opts.bad_label = 10;
  cases[n] = (corrupt_case_t){idx_ok(3), "train-images-idx3-ubyte.gz", EDDY_ERR_FORMAT, "records, cap"};
  cases[n].opts.image_count = 0xFFFFFFFFu;
  cases[n].opts.label_count = 3;
  n++;
  eddy_event_schema_t s = fmnist_schema();
  for (int i = 0; i < n; i++) {
    char *dir = eddy_test_tmpdir();
    idx_opts_t o = cases[i].opts;
    if (o.image_count == 0xFFFFFFFFu) { /* header only: claim a huge count */
      uint8_t head[16];
      put_be32(head, 0x803);
      put_be32(head + 4, o.image_count);
      put_be32(head + 8, 28);
      put_be32(head + 12, 28);
      write_gz(dir, "train-images-idx3-ubyte.gz", head, sizeof head);
      uint8_t lab[11] = {0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3};
      write_gz(dir, "train-labels-idx1-ubyte.gz", lab, sizeof lab);
    } else {
      write_idx(dir, "train", &o);
    }
    setenv("EDDY_FASHION_MNIST_DIR", dir, 1);
    char err[512] = "";
    eddy_dataset_t *ds = eddy_dataset_new("fashion-mnist:train", &s, err, sizeof err);
    if (ds || !strstr(err, cases[i].file) || !strstr(err, cases[i].msg))
      print_error("case %d: \"%s\" should name %s and say \"%s\"\n", i, err, cases[i].file, cases[i].msg);
    assert_null(ds);
    assert_non_null(strstr(err, cases[i].file));
    assert_non_null(strstr(err, dir));
    assert_non_null(strstr(err, cases[i].msg));
    eddy_test_rmdir(dir);
  }
  /* a file that is not gzip at all is read as-is (zlib is transparent), so a corrupt gzip stream
   * needs a real gzip header followed by garbage */
  char *dir = eddy_test_tmpdir();
  idx_opts_t o = idx_ok(3);
  write_idx(dir, "train", &o);
  const uint8_t bad_gz[] = {0x1f, 0x8b, 8,    0,    0,    0,    0,    0,    0,
                            3,    0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff, 0xff};
  free(eddy_test_write_file(dir, "train-images-idx3-ubyte.gz", bad_gz, sizeof bad_gz));
  setenv("EDDY_FASHION_MNIST_DIR", dir, 1);
  char err[512] = "";
  assert_null(eddy_dataset_new("fashion-mnist:train", &s, err, sizeof err));
  assert_non_null(strstr(err, "train-images-idx3-ubyte.gz"));
  /* a missing file is NOT_FOUND-class and named */
  char path[1024];
  snprintf(path, sizeof path, "%s/train-labels-idx1-ubyte.gz", dir);
  remove(path);
  assert_null(eddy_dataset_new("fashion-mnist:train", &s, err, sizeof err));
  assert_non_null(strstr(err, path));
  assert_non_null(strstr(err, "No such file"));
  unsetenv("EDDY_FASHION_MNIST_DIR");
  eddy_test_rmdir(dir);
}

static void test_fmnist_refuses_schema(void **state) {
  (void)state;
  char err[512] = "";
  eddy_event_schema_t s = fmnist_schema();
  s.dense_dim = 100;
  assert_null(eddy_dataset_new("fashion-mnist:train", &s, err, sizeof err));
  assert_non_null(strstr(err, "needs dense_dim = 784"));
  assert_non_null(strstr(err, "dense_dim = 100"));
  s = fmnist_schema();
  s.head = EDDY_HEAD_LOGISTIC;
  assert_null(eddy_dataset_new("fashion-mnist:test", &s, err, sizeof err));
  assert_non_null(strstr(err, "head logistic"));
  s = fmnist_schema();
  s.classes = 5;
  assert_null(eddy_dataset_new("fashion-mnist:test", &s, err, sizeof err));
  assert_non_null(strstr(err, "classes = 5"));
  s = fmnist_schema();
  assert_null(eddy_dataset_new("fashion-mnist:valid", &s, err, sizeof err));
  assert_non_null(strstr(err, "unknown split"));
  assert_null(eddy_dataset_new("", &s, err, sizeof err));
}

/* Expected outcome of one eddy_dataset_next call. */
typedef struct {
  eddy_err_t code;
  const char *text; /* OK: the event id; error: errstr substring */
  const char *raw;  /* expected raw line (NULL: don't check) */
} step_t;

static void expect_steps(eddy_dataset_t *ds, const char *path, const step_t *steps, size_t n) {
  eddy_event_t ev;
  eddy_event_init(&ev);
  double last = 0.0;
  for (size_t i = 0; i < n; i++) {
    char err[512] = "";
    bool eof = true;
    eddy_err_t got = eddy_dataset_next(ds, &ev, &eof, err, sizeof err);
    if (got != steps[i].code) print_error("step %zu: got %s \"%s\"\n", i, eddy_err_name(got), err);
    assert_int_equal(got, steps[i].code);
    if (got == EDDY_OK) {
      assert_false(eof);
      assert_string_equal(ev.id, steps[i].text);
    } else {
      assert_non_null(strstr(err, path));
      assert_non_null(strstr(err, steps[i].text));
    }
    if (steps[i].raw) {
      size_t len = 0;
      const char *raw = eddy_dataset_raw(ds, &len);
      assert_non_null(raw);
      assert_int_equal(len, strlen(steps[i].raw));
      assert_memory_equal(raw, steps[i].raw, len);
    }
    double p = eddy_dataset_progress(ds);
    assert_true(p >= last && p <= 1.0);
    last = p;
  }
  bool eof = false;
  char err[512] = "";
  assert_int_equal(eddy_dataset_next(ds, &ev, &eof, err, sizeof err), EDDY_OK);
  assert_true(eof);
  assert_true(eddy_dataset_progress(ds) == 1.0);
  assert_int_equal(eddy_dataset_next(ds, &ev, &eof, err, sizeof err), EDDY_OK);
  assert_true(eof);
  eddy_event_free(&ev);
}

static void test_jsonl(void **state) {
  (void)state;
  char long_line[400];
  memset(long_line, ' ', sizeof long_line - 1);
  long_line[sizeof long_line - 1] = '\0';
  memcpy(long_line, "{\"id\":\"long\",\"label\":1}", 23);
  /* exactly at the cap (200 bytes), with and without CR */
  char at_cap[201];
  memset(at_cap, ' ', 200);
  at_cap[200] = '\0';
  memcpy(at_cap, "{\"id\":\"cap\",\"label\":0}", 22);
  char text[4096];
  snprintf(text, sizeof text,
           "{\"id\":\"a\",\"label\":1,\"sparse\":{\"u\":\"x\"}}\n"
           "\n"
           "   \t\n"
           "oops, not json\n"
           "%s\n"
           "{\"id\":\"b\",\"label\":2}\n"
           "{\"id\":\"c\",\"label\":0}\r\n"
           "%s\n"
           "%s\r\n"
           "{\"id\":\"d\",\"label\":1}",
           long_line, at_cap, at_cap);
  eddy_event_schema_t s = {.dense_dim = 0, .hash_bits = 10, .head = EDDY_HEAD_LOGISTIC, .max_bytes = 200};
  const step_t steps[] = {
      {EDDY_OK, "a", "{\"id\":\"a\",\"label\":1,\"sparse\":{\"u\":\"x\"}}"},
      {EDDY_ERR_EVENT_NOT_JSON, ":4: not valid JSON", "oops, not json"},
      {EDDY_ERR_EVENT_TOO_LARGE, ":5: line is longer than 200 bytes", NULL},
      {EDDY_ERR_EVENT_LABEL_RANGE, ":6: label 2 out of range 0..1", "{\"id\":\"b\",\"label\":2}"},
      {EDDY_OK, "c", "{\"id\":\"c\",\"label\":0}"},
      {EDDY_OK, "cap", at_cap},
      {EDDY_OK, "cap", at_cap},
      {EDDY_OK, "d", "{\"id\":\"d\",\"label\":1}"},
  };
  char *dir = eddy_test_tmpdir();
  char *path = eddy_test_write_file(dir, "events.jsonl", text, strlen(text));
  char err[512] = "";
  eddy_dataset_t *ds = eddy_dataset_new(path, &s, err, sizeof err);
  assert_non_null(ds);
  assert_int_equal(eddy_dataset_size(ds), -1);
  assert_true(eddy_dataset_progress(ds) == 0.0);
  size_t len = 7;
  assert_null(eddy_dataset_raw(ds, &len));
  expect_steps(ds, path, steps, sizeof steps / sizeof steps[0]);
  eddy_dataset_destroy(ds);
  /* the same lines gzip-compressed read the same */
  write_gz(dir, "events.jsonl.gz", text, strlen(text));
  char gz_path[1024];
  snprintf(gz_path, sizeof gz_path, "%s/events.jsonl.gz", dir);
  ds = eddy_dataset_new(gz_path, &s, err, sizeof err);
  assert_non_null(ds);
  expect_steps(ds, gz_path, steps, sizeof steps / sizeof steps[0]);
  eddy_dataset_destroy(ds);
  /* an empty file has no events */
  char *empty = eddy_test_write_file(dir, "empty.jsonl", "", 0);
  ds = eddy_dataset_new(empty, &s, err, sizeof err);
  assert_non_null(ds);
  expect_steps(ds, empty, NULL, 0);
  eddy_dataset_destroy(ds);
  /* opening errors name the file */
  char missing[1024];
  snprintf(missing, sizeof missing, "%s/nope.jsonl", dir);
  assert_null(eddy_dataset_new(missing, &s, err, sizeof err));
  assert_non_null(strstr(err, missing));
  assert_null(eddy_dataset_new(path, NULL, err, sizeof err));
  assert_non_null(strstr(err, "needs an event schema"));
  assert_null(eddy_dataset_new(dir, &s, err, sizeof err));
  assert_non_null(strstr(err, "is a directory"));
  free(empty);
  free(path);
  eddy_test_rmdir(dir);
}

/* Expected outcome of one eddy_dataset_next_line call. */
typedef struct {
  eddy_err_t code;
  const char *text; /* OK: the line; error: errstr substring */
  uint64_t lineno;
} line_step_t;

static void expect_lines(eddy_dataset_t *ds, const char *path, const line_step_t *steps, size_t n) {
  for (size_t i = 0; i < n; i++) {
    char err[512] = "";
    const char *line = NULL;
    size_t len = 0;
    bool eof = true;
    eddy_err_t got = eddy_dataset_next_line(ds, &line, &len, &eof, err, sizeof err);
    if (got != steps[i].code) print_error("line step %zu: got %s \"%s\"\n", i, eddy_err_name(got), err);
    assert_int_equal(got, steps[i].code);
    assert_false(eof);
    if (got == EDDY_OK) {
      assert_non_null(line);
      assert_int_equal(len, strlen(steps[i].text));
      assert_memory_equal(line, steps[i].text, len);
      assert_int_equal(line[len], '\0');
    } else {
      assert_non_null(strstr(err, path));
      assert_non_null(strstr(err, steps[i].text));
    }
    assert_int_equal(eddy_dataset_lineno(ds), steps[i].lineno);
  }
  for (int k = 0; k < 2; k++) {
    char err[512] = "";
    const char *line = "x";
    size_t len = 9;
    bool eof = false;
    assert_int_equal(eddy_dataset_next_line(ds, &line, &len, &eof, err, sizeof err), EDDY_OK);
    assert_true(eof);
    assert_null(line);
    assert_int_equal(len, 0);
  }
  assert_true(eddy_dataset_progress(ds) == 1.0);
}

/* Raw lines, as eddy produce sends them: every non-blank line byte for byte (valid event or not)
 * with its line number, one over the cap refused and reading going on; gzip and standard input
 * read the same; long lines grow the buffer; a truncated gzip file is an error, not an end. */
static void test_jsonl_lines(void **state) {
  (void)state;
  char long_line[300];
  memset(long_line, 'x', sizeof long_line - 1);
  long_line[sizeof long_line - 1] = '\0';
  char text[1024];
  snprintf(text, sizeof text,
           "{\"id\":\"a\"}\n"
           "\n"
           "not json at all\r\n"
           " \t \r\n"
           "%s\n"
           "{\"label\": 5}",
           long_line);
  const line_step_t steps[] = {
      {EDDY_OK, "{\"id\":\"a\"}", 1},
      {EDDY_OK, "not json at all", 3},
      {EDDY_ERR_EVENT_TOO_LARGE, ":5: line is longer than 100 bytes", 5},
      {EDDY_OK, "{\"label\": 5}", 6},
  };
  const size_t n_steps = sizeof steps / sizeof steps[0];
  char *dir = eddy_test_tmpdir();
  char *path = eddy_test_write_file(dir, "lines.jsonl", text, strlen(text));
  char err[512] = "";
  eddy_dataset_t *ds = eddy_dataset_new_lines(path, 100, err, sizeof err);
  assert_non_null(ds);
  assert_int_equal(eddy_dataset_lineno(ds), 0);
  assert_int_equal(eddy_dataset_size(ds), -1);
  /* opened for lines: no events */
  eddy_event_t ev;
  eddy_event_init(&ev);
  bool eof = true;
  assert_int_equal(eddy_dataset_next(ds, &ev, &eof, err, sizeof err), EDDY_ERR_INVALID_ARG);
  assert_non_null(strstr(err, path));
  eddy_event_free(&ev);
  expect_lines(ds, path, steps, n_steps);
  eddy_dataset_destroy(ds);

  write_gz(dir, "lines.jsonl.gz", text, strlen(text));
  char gz_path[1024];
  snprintf(gz_path, sizeof gz_path, "%s/lines.jsonl.gz", dir);
  ds = eddy_dataset_new_lines(gz_path, 100, err, sizeof err);
  assert_non_null(ds);
  expect_lines(ds, gz_path, steps, n_steps);
  eddy_dataset_destroy(ds);

  /* "-" is standard input (here the gzip file) */
  int saved = dup(STDIN_FILENO);
  assert_true(saved >= 0);
  assert_non_null(freopen(gz_path, "rb", stdin));
  ds = eddy_dataset_new_lines("-", 100, err, sizeof err);
  assert_non_null(ds);
  expect_lines(ds, "-", steps, n_steps);
  eddy_dataset_destroy(ds);
  assert_int_equal(dup2(saved, STDIN_FILENO), STDIN_FILENO);
  close(saved);

  /* lines far beyond the first buffer come back whole */
  size_t big_len = 70000;
  char *big = malloc(2 * big_len + 4);
  assert_non_null(big);
  for (size_t i = 0; i < big_len; i++) big[i] = (char)('a' + i % 26);
  big[big_len] = '\n';
  memcpy(big + big_len + 1, "{}\n", 3);
  char *big_path = eddy_test_write_file(dir, "big.jsonl", big, big_len + 4);
  ds = eddy_dataset_new_lines(big_path, 1u << 20, err, sizeof err);
  assert_non_null(ds);
  const char *line = NULL;
  size_t len = 0;
  eof = true;
  assert_int_equal(eddy_dataset_next_line(ds, &line, &len, &eof, err, sizeof err), EDDY_OK);
  assert_false(eof);
  assert_int_equal(len, big_len);
  assert_memory_equal(line, big, big_len);
  assert_int_equal(eddy_dataset_next_line(ds, &line, &len, &eof, err, sizeof err), EDDY_OK);
  assert_int_equal(len, 2);
  assert_memory_equal(line, "{}", 2);
  assert_int_equal(eddy_dataset_lineno(ds), 2);
  eddy_dataset_destroy(ds);

  /* a gzip file cut short: the lines before the cut, then a read error naming file and line */
  size_t many_len = 0;
  for (int i = 0; i < 2000; i++)
    many_len += (size_t)snprintf(big + many_len, 2 * big_len + 4 - many_len, "{\"id\":\"e-%d\"}\n", i);
  write_gz(dir, "whole.jsonl.gz", big, many_len);
  char whole[1024];
  snprintf(whole, sizeof whole, "%s/whole.jsonl.gz", dir);
  FILE *f = fopen(whole, "rb");
  assert_non_null(f);
  char gz_bytes[65536];
  size_t gz_len = fread(gz_bytes, 1, sizeof gz_bytes, f);
  fclose(f);
  assert_true(gz_len > 100 && gz_len < sizeof gz_bytes);
  char *cut_path = eddy_test_write_file(dir, "cut.jsonl.gz", gz_bytes, gz_len / 2);
  ds = eddy_dataset_new_lines(cut_path, 100, err, sizeof err);
  assert_non_null(ds);
  eddy_err_t rc;
  uint64_t good = 0;
  for (;;) {
    rc = eddy_dataset_next_line(ds, &line, &len, &eof, err, sizeof err);
    if (rc != EDDY_OK || eof) break;
    good++;
  }
  assert_int_equal(rc, EDDY_ERR_IO);
  assert_false(eof);
  assert_true(good > 0 && good < 2000);
  assert_non_null(strstr(err, cut_path));
  assert_non_null(strstr(err, "read error"));
  eddy_dataset_destroy(ds);

  /* opening errors name the file */
  char missing[1024];
  snprintf(missing, sizeof missing, "%s/nope.jsonl", dir);
  assert_null(eddy_dataset_new_lines(missing, 100, err, sizeof err));
  assert_non_null(strstr(err, missing));
  assert_non_null(strstr(err, "No such file"));
  assert_null(eddy_dataset_new_lines(dir, 100, err, sizeof err));
  assert_non_null(strstr(err, "is a directory"));
  assert_null(eddy_dataset_new_lines(path, 0, err, sizeof err));
  assert_non_null(strstr(err, "line cap 0"));
  free(cut_path);
  free(big_path);
  free(big);
  free(path);
  eddy_test_rmdir(dir);
}

static void test_jsonl_progress_large(void **state) {
  (void)state;
  /* many lines over several read chunks: progress rises steadily and the count is right */
  char *dir = eddy_test_tmpdir();
  size_t cap = 3u << 20, len = 0;
  char *text = malloc(cap);
  assert_non_null(text);
  int lines = 0;
  while (len + 100 < cap) {
    len += (size_t)snprintf(text + len, cap - len, "{\"id\":\"e-%d\",\"label\":%d,\"dense\":[%d.5]}\n", lines,
                            lines % 2, lines);
    lines++;
  }
  char *path = eddy_test_write_file(dir, "big.jsonl", text, len);
  eddy_event_schema_t s = {.dense_dim = 1, .head = EDDY_HEAD_LOGISTIC};
  char err[512] = "";
  eddy_dataset_t *ds = eddy_dataset_new(path, &s, err, sizeof err);
  assert_non_null(ds);
  eddy_event_t ev;
  eddy_event_init(&ev);
  int count = 0;
  double half = -1.0;
  for (;;) {
    bool eof = false;
    assert_int_equal(eddy_dataset_next(ds, &ev, &eof, err, sizeof err), EDDY_OK);
    if (eof) break;
    assert_true(ev.dense[0] == (float)count + 0.5f);
    if (++count == lines / 2) half = eddy_dataset_progress(ds);
  }
  assert_int_equal(count, lines);
  assert_true(half > 0.45 && half < 0.55);
  eddy_event_free(&ev);
  eddy_dataset_destroy(ds);
  free(text);
  free(path);
  eddy_test_rmdir(dir);
}

static void test_streams_samples(void **state) {
  (void)state;
  /* streams/README.md: the samples fit dense_dim 2, hash_bits 18, logistic head */
  eddy_event_schema_t s = {.dense_dim = 2, .hash_bits = 18, .head = EDDY_HEAD_LOGISTIC};
  char err[512] = "";
  eddy_dataset_t *ds = eddy_dataset_new(STREAMS_DIR "/sample-events.jsonl", &s, err, sizeof err);
  if (!ds) print_error("%s\n", err);
  assert_non_null(ds);
  eddy_event_t ev;
  eddy_event_init(&ev);
  int good = 0, with_sparse = 0;
  for (;;) {
    bool eof = false;
    eddy_err_t e = eddy_dataset_next(ds, &ev, &eof, err, sizeof err);
    if (e) print_error("%s\n", err);
    assert_int_equal(e, EDDY_OK);
    if (eof) break;
    good++;
    with_sparse += ev.n_sparse > 0;
  }
  assert_true(good >= 5);
  assert_true(with_sparse >= 3);
  eddy_dataset_destroy(ds);
  /* bad-events.jsonl: one line per bad-event class, in errors.h order */
  const eddy_err_t want[] = {EDDY_ERR_EVENT_NOT_JSON,  EDDY_ERR_EVENT_LABEL_MISSING,
                             EDDY_ERR_EVENT_LABEL_NAN, EDDY_ERR_EVENT_LABEL_RANGE,
                             EDDY_ERR_EVENT_DENSE_LEN, EDDY_ERR_EVENT_NONFINITE,
                             EDDY_ERR_EVENT_TOO_LARGE, EDDY_ERR_EVENT_TYPE};
  ds = eddy_dataset_new(STREAMS_DIR "/bad-events.jsonl", &s, err, sizeof err);
  assert_non_null(ds);
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    bool eof = false;
    eddy_err_t e = eddy_dataset_next(ds, &ev, &eof, err, sizeof err);
    if (e != want[i]) print_error("bad-events line %zu: got %s \"%s\"\n", i + 1, eddy_err_name(e), err);
    assert_int_equal(e, want[i]);
  }
  bool eof = false;
  assert_int_equal(eddy_dataset_next(ds, &ev, &eof, err, sizeof err), EDDY_OK);
  assert_true(eof);
  eddy_dataset_destroy(ds);
  eddy_event_free(&ev);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tiny_idx),
      cmocka_unit_test(test_corrupt_idx),
      cmocka_unit_test(test_fmnist_refuses_schema),
      cmocka_unit_test(test_jsonl),
      cmocka_unit_test(test_jsonl_lines),
      cmocka_unit_test(test_jsonl_progress_large),
      cmocka_unit_test(test_streams_samples),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
