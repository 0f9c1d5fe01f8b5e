/* The snapshot store with a real CPU learner: publish and verify, state restored from the store,
 * CURRENT (atomic replace, rollback, rejected versions refused, concurrent callers), retention with
 * pinned and current versions, the writer lock, leftovers of crashes removed on open, failed
 * publishes (file-size limit, a full tmpfs) leaving nothing behind, and verify on damaged copies:
 * truncated, flipped byte, wrong recorded checksum, another spec's weights, missing and unlisted
 * files, incomplete manifest, NaN weights in a promoted version; a version with the files of every
 * serving precision (bf16, fp16, int8) written, committed, verified and damaged. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "format/safetensors.h"
#include "format/sha256.h"
#include "model/infer.h"
#include "snapshot/store.h"
#include "testutil.h"

/* ---- helpers ---- */

static eddy_model_spec_t spec_with(uint32_t hidden) {
  eddy_model_spec_t s;
  memset(&s, 0, sizeof s);
  s.hash_bits = 4;
  s.embed_dim = 2;
  s.dense_dim = 3;
  s.n_hidden = 1;
  s.hidden[0] = hidden;
  s.head = EDDY_HEAD_SOFTMAX;
  s.classes = 3;
  return s;
}

static eddy_learner_t *learner_for(const eddy_model_spec_t *s) {
  eddy_train_opts_t o = eddy_train_opts_defaults();
  o.optimizer = EDDY_OPT_ADAM;
  o.lr = 0.01f;
  o.seed = 11;
  o.threads = 1;
  char err[256] = "";
  eddy_learner_t *l = eddy_learner_new(s, &o, "cpu", err, sizeof err);
  if (!l) fail_msg("learner_new: %s", err);
  return l;
}

static uint64_t rng_state = 1;
static double rnd(void) {
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (double)(rng_state >> 11) * 0x1.0p-53;
}

/* Refills b with 8 random events. */
static void random_batch(eddy_batch_t *b) {
  eddy_batch_clear(b);
  for (int i = 0; i < 8; i++) {
    float dense[3] = {(float)rnd(), (float)rnd() - 0.5f, (float)rnd() * 2};
    uint32_t idx[2] = {(uint32_t)(rnd() * 16), 3};
    float val[2] = {1, 0.5f};
    eddy_event_t ev;
    eddy_event_init(&ev);
    ev.dense = dense;
    ev.n_dense = 3;
    ev.sparse_idx = idx;
    ev.sparse_val = val;
    ev.n_sparse = 2;
    ev.label = (double)(uint32_t)(rnd() * 3);
    ev.weight = 1;
    assert_int_equal(eddy_batch_push(b, &ev), EDDY_OK);
  }
}

/* steps optimizer steps on batches of 8 random events. */
static void train(eddy_learner_t *l, int steps) {
  const eddy_model_spec_t *s = eddy_learner_spec(l);
  eddy_batch_t *b = eddy_batch_new(s->dense_dim, 8);
  assert_non_null(b);
  for (int k = 0; k < steps; k++) {
    random_batch(b);
    assert_int_equal(eddy_learner_accumulate(l, b, NULL, NULL), EDDY_OK);
    eddy_step_info_t info;
    assert_int_equal(eddy_learner_step(l, &info), EDDY_OK);
    assert_true(info.applied);
  }
  eddy_batch_destroy(b);
}

static void fill(eddy_manifest_t *m, eddy_learner_t *l, uint64_t parent, eddy_version_status_t status) {
  eddy_manifest_init(m);
  m->parent = parent;
  m->step = eddy_learner_step_count(l);
  m->examples = m->step * 8;
  m->buffer_cursor = m->examples + 1;
  assert_int_equal(eddy_manifest_add_offset(m, "events", 0, (int64_t)m->examples / 2), EDDY_OK);
  assert_int_equal(eddy_manifest_add_offset(m, "events", 1, (int64_t)m->examples / 2), EDDY_OK);
  m->prequential = (eddy_metric_values_t){.logloss = 1.05, .accuracy = 0.4, .mse = NAN, .n = m->examples};
  m->holdout = (eddy_metric_values_t){.logloss = 1.0, .accuracy = 0.45, .mse = NAN, .n = 16};
  m->status = status;
  if (status == EDDY_STATUS_REJECTED) snprintf(m->reason, sizeof m->reason, "holdout logloss regressed");
}

static uint64_t publish(eddy_store_t *s, eddy_learner_t *l, uint64_t parent, eddy_version_status_t status,
                        const char *dtype) {
  eddy_manifest_t m;
  fill(&m, l, parent, status);
  char err[1024] = "";
  uint64_t v = 0;
  eddy_err_t rc = eddy_store_publish(s, l, &m, dtype, &v, err, sizeof err);
  if (rc) fail_msg("publish: %s: %s", eddy_err_name(rc), err);
  assert_int_equal(m.version, v);
  eddy_manifest_clear(&m);
  return v;
}

/* v1 and v2 promoted, v3 rejected (a step of training before each). */
static void publish_two_promoted_one_rejected(eddy_store_t *s, eddy_learner_t *l) {
  train(l, 1);
  assert_int_equal(publish(s, l, 0, EDDY_STATUS_PROMOTED, "F32"), 1);
  train(l, 1);
  assert_int_equal(publish(s, l, 1, EDDY_STATUS_PROMOTED, "F32"), 2);
  train(l, 1);
  assert_int_equal(publish(s, l, 2, EDDY_STATUS_REJECTED, "F32"), 3);
}

static char *pathf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *pathf(const char *fmt, ...) {
  char *p = NULL;
  va_list ap;
  va_start(ap, fmt);
  assert_true(vasprintf(&p, fmt, ap) >= 0);
  va_end(ap);
  return p;
}

static int exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* Entries of dir whose names start with prefix. */
static int count_prefix(const char *dir, const char *prefix) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
  closedir(d);
  return n;
}

static void copy_file(const char *from, const char *to) {
  FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
  assert_non_null(in);
  assert_non_null(out);
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, in)) > 0) assert_int_equal(fwrite(buf, 1, n, out), n);
  fclose(in);
  assert_int_equal(fclose(out), 0);
}

/* Copies the version folder src (flat) to dst. */
static void copy_version(const char *src, const char *dst) {
  assert_int_equal(mkdir(dst, 0755), 0);
  const char *names[] = {EDDY_STORE_WEIGHTS, EDDY_STORE_STATE, EDDY_STORE_MANIFEST};
  for (int i = 0; i < 3; i++) {
    char *a = pathf("%s/%s", src, names[i]), *b = pathf("%s/%s", dst, names[i]);
    copy_file(a, b);
    free(a);
    free(b);
  }
}

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
  buf[n] = 0;
  fclose(f);
  if (len) *len = (size_t)n;
  return buf;
}

/* Rewrites dir/manifest.json with the recorded size and sha256 of file replaced by its actual ones. */
static void rehash(const char *dir, const char *file) {
  char *mpath = pathf("%s/manifest.json", dir), *fpath = pathf("%s/%s", dir, file), err[512];
  eddy_manifest_t m;
  assert_int_equal(eddy_manifest_load(mpath, &m, err, sizeof err), EDDY_OK);
  for (size_t i = 0; i < m.n_files; i++)
    if (!strcmp(m.files[i].name, file)) {
      struct stat st;
      uint8_t d[32];
      assert_int_equal(stat(fpath, &st), 0);
      assert_int_equal(eddy_sha256_file(fpath, d, err, sizeof err), EDDY_OK);
      m.files[i].bytes = (uint64_t)st.st_size;
      eddy_sha256_hex(d, m.files[i].sha256);
    }
  char *json = NULL;
  assert_int_equal(eddy_manifest_to_json(&m, &json, err, sizeof err), EDDY_OK);
  FILE *f = fopen(mpath, "wb");
  fputs(json, f);
  fclose(f);
  free(json);
  eddy_manifest_clear(&m);
  free(mpath);
  free(fpath);
}

typedef struct {
  char text[8192];
  size_t n;
} problems_t;

static void collect(void *ctx, const char *file, eddy_err_t err, const char *message) {
  problems_t *p = ctx;
  size_t used = strlen(p->text);
  snprintf(p->text + used, sizeof p->text - used, "%s [%s]: %s\n", file, eddy_err_name(err), message);
  p->n++;
}

/* verify must fail with code and report a problem in file whose message contains needle. */
static void expect_problem(const char *dir, eddy_err_t code, const char *file, const char *needle) {
  problems_t p = {.n = 0};
  size_t count = 0;
  eddy_err_t err = eddy_store_verify_each(dir, NULL, collect, &p, &count);
  char want[256];
  snprintf(want, sizeof want, "%s [", file);
  if (err != code || count == 0 || count != p.n || !strstr(p.text, want) || !strstr(p.text, needle))
    fail_msg("verify %s: got %s with %zu problems:\n%swant %s in %s naming \"%s\"", dir, eddy_err_name(err), count,
             p.text, eddy_err_name(code), file, needle);
}

static eddy_store_t *open_writer(const char *root, const char *model) {
  char err[512] = "";
  eddy_store_t *s = eddy_store_new(root, model, EDDY_STORE_WRITER, err, sizeof err);
  if (!s) fail_msg("store_open: %s", err);
  return s;
}

/* ---- tests ---- */

static void test_publish_verify_restore(void **state) {
  (void)state;
  char *root = eddy_test_tmpdir(), err[1024] = "";
  eddy_store_t *s = open_writer(root, "m1");
  uint64_t v = 0;
  assert_int_equal(eddy_store_latest(s, &v, err, sizeof err), EDDY_ERR_NOT_FOUND);
  eddy_model_spec_t spec = spec_with(6);
  eddy_learner_t *l = learner_for(&spec);
  train(l, 3);
  assert_int_equal(publish(s, l, 0, EDDY_STATUS_PROMOTED, "BF16"), 1);
  train(l, 4);
  assert_int_equal(publish(s, l, 1, EDDY_STATUS_PROMOTED, "F32"), 2);
  assert_int_equal(eddy_store_latest(s, &v, err, sizeof err), EDDY_OK);
  assert_int_equal(v, 2);
  assert_int_equal(count_prefix(eddy_store_dir(s), ".tmp-"), 0);

  char dir[4096];
  for (uint64_t k = 1; k <= 2; k++) {
    assert_int_equal(eddy_store_path(s, k, NULL, dir, sizeof dir), EDDY_OK);
    eddy_manifest_t m;
    if (eddy_store_verify(dir, &m, err, sizeof err) != EDDY_OK) fail_msg("verify v%llu: %s", (unsigned long long)k, err);
    assert_int_equal(m.version, k);
    assert_string_equal(m.model, "m1");
    assert_string_equal(m.weights_dtype, k == 1 ? "BF16" : "F32");
    assert_string_equal(m.precision, "fp32");
    assert_int_equal(m.parent, k - 1);
    assert_int_equal(m.step, k == 1 ? 3 : 7);
    assert_int_equal(m.n_offsets, 2);
    assert_memory_equal(&m.spec, &spec, sizeof spec);
    assert_true(m.created_at_ms > 1700000000000);
    /* sizes and checksums are those of the files on disk */
    for (size_t i = 0; i < m.n_files; i++) {
      char *f = pathf("%s/%s", dir, m.files[i].name);
      struct stat st;
      uint8_t d[32];
      char hex[65];
      assert_int_equal(stat(f, &st), 0);
      assert_int_equal((uint64_t)st.st_size, m.files[i].bytes);
      assert_int_equal(eddy_sha256_file(f, d, err, sizeof err), EDDY_OK);
      eddy_sha256_hex(d, hex);
      assert_string_equal(hex, m.files[i].sha256);
      free(f);
    }
    eddy_manifest_clear(&m);
    /* the weights' metadata ties them to the version */
    char wpath[4200];
    assert_int_equal(eddy_store_path(s, k, EDDY_STORE_WEIGHTS, wpath, sizeof wpath), EDDY_OK);
    eddy_st_reader_t *r = eddy_st_reader_new(wpath, 0, err, sizeof err);
    assert_non_null(r);
    assert_string_equal(eddy_st_meta(r, "eddy.version"), k == 1 ? "1" : "2");
    assert_string_equal(eddy_st_meta(r, "eddy.model"), "m1");
    eddy_st_reader_destroy(r);
  }
  /* A fresh learner restored from v2's state continues exactly like the one that published it. */
  eddy_learner_t *restored = learner_for(&spec);
  char spath[4200];
  assert_int_equal(eddy_store_path(s, 2, EDDY_STORE_STATE, spath, sizeof spath), EDDY_OK);
  assert_int_equal(eddy_learner_load_state(restored, spath, err, sizeof err), EDDY_OK);
  uint64_t saved_rng = rng_state;
  train(l, 2);
  rng_state = saved_rng;
  train(restored, 2);
  const eddy_tensor_info_t *t;
  size_t nt = eddy_learner_tensors(l, &t);
  for (size_t i = 0; i < nt; i++) {
    float *a = malloc(t[i].numel * sizeof *a), *b = malloc(t[i].numel * sizeof *b);
    assert_int_equal(eddy_learner_export(l, t[i].name, a, t[i].numel), EDDY_OK);
    assert_int_equal(eddy_learner_export(restored, t[i].name, b, t[i].numel), EDDY_OK);
    assert_memory_equal(a, b, t[i].numel * sizeof *a);
    free(a);
    free(b);
  }
  /* listing, newest first */
  eddy_store_entry_t *entries = NULL;
  size_t n = 0;
  assert_int_equal(eddy_store_list(s, &entries, &n, err, sizeof err), EDDY_OK);
  assert_int_equal(n, 2);
  assert_int_equal(entries[0].version, 2);
  assert_int_equal(entries[1].version, 1);
  assert_true(entries[0].manifest_ok && entries[1].manifest_ok);
  assert_int_equal(entries[0].manifest.parent, 1);
  assert_false(entries[0].current || entries[0].pinned);
  eddy_store_list_free(entries, n);
  /* the audit trail has one line per publish */
  char *events = pathf("%s/events.log", eddy_store_dir(s));
  char *log = slurp(events, NULL);
  assert_non_null(strstr(log, "\"action\":\"publish\",\"version\":1"));
  assert_non_null(strstr(log, "\"action\":\"publish\",\"version\":2"));
  free(log);
  free(events);
  /* a bad dtype fails before anything is written, and does not use up the number */
  eddy_manifest_t m;
  fill(&m, l, 2, EDDY_STATUS_PROMOTED);
  assert_int_equal(eddy_store_publish(s, l, &m, "F64", &v, err, sizeof err), EDDY_ERR_INVALID_ARG);
  assert_non_null(strstr(err, "F64"));
  eddy_manifest_clear(&m);
  assert_int_equal(count_prefix(eddy_store_dir(s), ".tmp-"), 0);
  assert_int_equal(publish(s, l, 2, EDDY_STATUS_CANDIDATE, "F16"), 3);
  eddy_learner_destroy(restored);
  eddy_learner_destroy(l);
  eddy_store_destroy(s);
  eddy_test_rmdir(root);
}

static void test_current_and_rollback(void **state) {
  (void)state;
  char *root = eddy_test_tmpdir(), err[1024] = "";
  eddy_store_t *s = open_writer(root, "m");
  eddy_model_spec_t spec = spec_with(5);
  eddy_learner_t *l = learner_for(&spec);
  uint64_t cur = 0;
  assert_int_equal(eddy_store_current(s, &cur, err, sizeof err), EDDY_ERR_NOT_FOUND);
  publish_two_promoted_one_rejected(s, l);

  assert_int_equal(eddy_store_set_current(s, 1, NULL, err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_store_current(s, &cur, err, sizeof err), EDDY_OK);
  assert_int_equal(cur, 1);
  assert_int_equal(eddy_store_set_current(s, 2, "promote", err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_store_current(s, &cur, err, sizeof err), EDDY_OK);
  assert_int_equal(cur, 2);
  char *cpath = pathf("%s/CURRENT", eddy_store_dir(s));
  char *text = slurp(cpath, NULL);
  assert_string_equal(text, "v000002\n");
  free(text);
  assert_int_equal(eddy_store_set_current(s, 1, "rollback", err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_store_set_current(s, 1, "rollback", err, sizeof err), EDDY_OK); /* idempotent */
  assert_int_equal(eddy_store_current(s, &cur, err, sizeof err), EDDY_OK);
  assert_int_equal(cur, 1);
  /* refused: a rejected version, a missing one, a bad action; CURRENT stays */
  assert_int_equal(eddy_store_set_current(s, 3, NULL, err, sizeof err), EDDY_ERR_STATE);
  assert_non_null(strstr(err, "rejected"));
  assert_non_null(strstr(err, "holdout logloss regressed"));
  assert_int_equal(eddy_store_set_current(s, 9, NULL, err, sizeof err), EDDY_ERR_NOT_FOUND);
  assert_non_null(strstr(err, "v000009"));
  assert_int_equal(eddy_store_set_current(s, 2, "Roll back!", err, sizeof err), EDDY_ERR_INVALID_ARG);
  /* a version whose file lost bytes is not pointed at */
  char wpath[4200];
  assert_int_equal(eddy_store_path(s, 2, EDDY_STORE_WEIGHTS, wpath, sizeof wpath), EDDY_OK);
  struct stat st;
  assert_int_equal(stat(wpath, &st), 0);
  assert_int_equal(truncate(wpath, st.st_size - 1), 0);
  assert_int_equal(eddy_store_set_current(s, 2, NULL, err, sizeof err), EDDY_ERR_FORMAT);
  assert_non_null(strstr(err, "weights.safetensors"));
  assert_int_equal(eddy_store_current(s, &cur, err, sizeof err), EDDY_OK);
  assert_int_equal(cur, 1);
  assert_int_equal(count_prefix(eddy_store_dir(s), ".tmp-"), 0);
  /* events.log records the moves with the previous version */
  char *epath = pathf("%s/events.log", eddy_store_dir(s));
  text = slurp(epath, NULL);
  assert_non_null(strstr(text, "\"action\":\"promote\",\"version\":1,\"previous\":null"));
  assert_non_null(strstr(text, "\"action\":\"promote\",\"version\":2,\"previous\":1"));
  assert_non_null(strstr(text, "\"action\":\"rollback\",\"version\":1,\"previous\":2"));
  char *second = strstr(text, "\"action\":\"rollback\"");
  assert_null(strstr(second + 1, "\"action\":\"rollback\"")); /* the repeat wrote nothing */
  free(text);
  free(epath);
  /* a read-only opener sees CURRENT and cannot change it; a malformed CURRENT is FORMAT */
  eddy_store_t *ro = eddy_store_new(root, "m", EDDY_STORE_READONLY, err, sizeof err);
  assert_non_null(ro);
  assert_int_equal(eddy_store_current(ro, &cur, err, sizeof err), EDDY_OK);
  assert_int_equal(cur, 1);
  assert_int_equal(eddy_store_set_current(ro, 2, NULL, err, sizeof err), EDDY_ERR_STATE);
  eddy_store_txn_t *t = NULL;
  assert_int_equal(eddy_store_begin(ro, &t, err, sizeof err), EDDY_ERR_STATE);
  FILE *f = fopen(cpath, "w");
  fputs("42\n", f);
  fclose(f);
  assert_int_equal(eddy_store_current(ro, &cur, err, sizeof err), EDDY_ERR_FORMAT);
  assert_non_null(strstr(err, "CURRENT"));
  eddy_store_destroy(ro);
  assert_null(eddy_store_new(root, "absent", EDDY_STORE_READONLY, err, sizeof err));
  assert_non_null(strstr(err, "absent"));
  free(cpath);
  eddy_learner_destroy(l);
  eddy_store_destroy(s);
  eddy_test_rmdir(root);
}

/* Writes text into <store>/CURRENT as a hand edit or a bad copy would. */
static void write_current(eddy_store_t *s, const char *text) {
  char *path = pathf("%s/CURRENT", eddy_store_dir(s));
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
  free(path);
}

/* Runs the start-up check; expects CURRENT to name want afterwards (0: no CURRENT file). */
static void check_current_is(eddy_store_t *s, bool repaired, uint64_t want, const char *why) {
  eddy_store_current_check_t c;
  char err[1024] = "";
  assert_int_equal(eddy_store_check_current(s, &c, err, sizeof err), EDDY_OK);
  if (c.repaired != repaired || c.version != want || (why && !strstr(c.why, why)))
    fail_msg("check: repaired %d version %llu why \"%s\"; want %d %llu \"%s\"", c.repaired,
             (unsigned long long)c.version, c.why, repaired, (unsigned long long)want, why ? why : "");
  uint64_t cur = 0;
  eddy_err_t rc = eddy_store_current(s, &cur, err, sizeof err);
  if (want) {
    assert_int_equal(rc, EDDY_OK);
    assert_int_equal(cur, want);
  } else {
    assert_int_equal(rc, EDDY_ERR_NOT_FOUND);
  }
}

static void test_check_current(void **state) {
  (void)state;
  char *root = eddy_test_tmpdir(), err[1024] = "";
  eddy_store_t *s = open_writer(root, "m");
  check_current_is(s, false, 0, NULL); /* no versions, no CURRENT: fine */
  eddy_model_spec_t spec = spec_with(5);
  eddy_learner_t *l = learner_for(&spec);
  publish_two_promoted_one_rejected(s, l);
  assert_int_equal(eddy_store_set_current(s, 2, NULL, err, sizeof err), EDDY_OK);
  check_current_is(s, false, 2, NULL);
  /* CURRENT naming a rejected version, a missing one, a path, garbage: back to v2 */
  write_current(s, "v000003\n");
  check_current_is(s, true, 2, "v000003 is rejected, not promoted");
  write_current(s, "v000009\n");
  check_current_is(s, true, 2, "v000009 does not exist");
  write_current(s, "../../etc\n");
  check_current_is(s, true, 2, "is not a version name");
  char *cpath = pathf("%s/CURRENT", eddy_store_dir(s));
  char *text = slurp(cpath, NULL);
  assert_string_equal(text, "v000002\n");
  free(text);
  /* every repair is in events.log with the version it replaced and why */
  char *epath = pathf("%s/events.log", eddy_store_dir(s));
  text = slurp(epath, NULL);
  assert_non_null(strstr(text, "\"action\":\"repair\",\"version\":2,\"previous\":3,\"reason\":\"v000003 is rejected"));
  assert_non_null(strstr(text, "\"action\":\"repair\",\"version\":2,\"previous\":9,\"reason\":\"v000009 does not exist"));
  assert_non_null(strstr(text, "\"action\":\"repair\",\"version\":2,\"previous\":null"));
  free(text);
  /* CURRENT's version fails verification (a flipped byte): the newest promoted one that verifies */
  char wpath[4200];
  assert_int_equal(eddy_store_path(s, 2, EDDY_STORE_WEIGHTS, wpath, sizeof wpath), EDDY_OK);
  FILE *f = fopen(wpath, "r+b");
  assert_non_null(f);
  fseek(f, -2, SEEK_END);
  fputc('X', f);
  fclose(f);
  check_current_is(s, true, 1, "v000002 does not verify");
  /* an empty newest folder (an interrupted copy) and no CURRENT: v1 again */
  char *empty = pathf("%s/v000004", eddy_store_dir(s));
  assert_int_equal(mkdir(empty, 0755), 0);
  assert_int_equal(unlink(cpath), 0);
  check_current_is(s, true, 1, "no CURRENT although promoted versions exist");
  check_current_is(s, false, 1, NULL); /* and then it is fine */
  /* nothing promoted verifies: CURRENT goes, recorded as "clear" */
  assert_int_equal(eddy_store_path(s, 1, EDDY_STORE_STATE, wpath, sizeof wpath), EDDY_OK);
  assert_int_equal(truncate(wpath, 10), 0);
  check_current_is(s, true, 0, "v000001 does not verify");
  text = slurp(epath, NULL);
  assert_non_null(strstr(text, "\"action\":\"clear\",\"version\":null,\"previous\":1"));
  free(text);
  check_current_is(s, false, 0, NULL);
  /* a read-only opener does not check */
  eddy_store_t *ro = eddy_store_new(root, "m", EDDY_STORE_READONLY, err, sizeof err);
  assert_non_null(ro);
  eddy_store_current_check_t c;
  assert_int_equal(eddy_store_check_current(ro, &c, err, sizeof err), EDDY_ERR_STATE);
  eddy_store_destroy(ro);
  free(empty);
  free(epath);
  free(cpath);
  eddy_learner_destroy(l);
  eddy_store_destroy(s);
  eddy_test_rmdir(root);
}

typedef struct {
  eddy_store_t *s;
  uint64_t version;
  int failures;
} flipper_t;

static void *flip(void *arg) {
  flipper_t *f = arg;
  char err[512];
  for (int i = 0; i < 40; i++)
    if (eddy_store_set_current(f->s, (i & 1) ? f->version : 3 - f->version, "rollback", err, sizeof err) != EDDY_OK)
      f->failures++;
  return NULL;
}

static void test_concurrent_set_current(void **state) {
  (void)state;
  char *root = eddy_test_tmpdir(), err[512];
  eddy_store_t *s = open_writer(root, "m");
  eddy_model_spec_t spec = spec_with(4);
  eddy_learner_t *l = learner_for(&spec);
  train(l, 1);
  publish(s, l, 0, EDDY_STATUS_PROMOTED, "F32");
  publish(s, l, 1, EDDY_STATUS_PROMOTED, "F32");
  pthread_t th[4];
  flipper_t fl[4];
  for (int i = 0; i < 4; i++) {
    fl[i] = (flipper_t){.s = s, .version = 1 + (uint64_t)(i & 1)};
    assert_int_equal(pthread_create(&th[i], NULL, flip, &fl[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(fl[i].failures, 0);
  }
  uint64_t cur = 0;
  assert_int_equal(eddy_store_current(s, &cur, err, sizeof err), EDDY_OK);
  assert_true(cur == 1 || cur == 2);
  assert_int_equal(count_prefix(eddy_store_dir(s), ".tmp-"), 0);
  eddy_learner_destroy(l);
  eddy_store_destroy(s);
  eddy_test_rmdir(root);
}

static void test_retention(void **state) {
  (void)state;
  char *root = eddy_test_tmpdir(), err[512] = "";
  eddy_store_t *s = open_writer(root, "m");
  eddy_model_spec_t spec = spec_with(4);
  eddy_learner_t *l = learner_for(&spec);
  for (uint64_t v = 1; v <= 6; v++) {
    train(l, 1);
    assert_int_equal(publish(s, l, v - 1, EDDY_STATUS_PROMOTED, "F32"), v);
  }
  assert_int_equal(eddy_store_set_current(s, 2, NULL, err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_store_pin(s, 3, true, err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_store_pin(s, 3, true, err, sizeof err), EDDY_OK); /* idempotent */
  assert_true(eddy_store_is_pinned(s, 3));
  assert_false(eddy_store_is_pinned(s, 4));
  assert_int_equal(eddy_store_pin(s, 77, true, err, sizeof err), EDDY_ERR_NOT_FOUND);
  assert_int_equal(eddy_store_retain(s, 0, NULL, err, sizeof err), EDDY_ERR_INVALID_ARG);
  size_t deleted = 99;
  assert_int_equal(eddy_store_retain(s, 2, &deleted, err, sizeof err), EDDY_OK);
  assert_int_equal(deleted, 2); /* v1 and v4; v6, v5 newest, v3 pinned, v2 current */
  eddy_store_entry_t *e = NULL;
  size_t n = 0;
  assert_int_equal(eddy_store_list(s, &e, &n, err, sizeof err), EDDY_OK);
  assert_int_equal(n, 4);
  uint64_t want[] = {6, 5, 3, 2};
  for (size_t i = 0; i < 4; i++) assert_int_equal(e[i].version, want[i]);
  assert_true(e[2].pinned && !e[2].current);
  assert_true(e[3].current && !e[3].pinned);
  eddy_store_list_free(e, n);
  assert_int_equal(count_prefix(eddy_store_dir(s), ".del-"), 0);
  /* unpinned, v3 goes; current v2 stays */
  assert_int_equal(eddy_store_pin(s, 3, false, err, sizeof err), EDDY_OK);
  assert_false(eddy_store_is_pinned(s, 3));
  assert_int_equal(eddy_store_retain(s, 2, &deleted, err, sizeof err), EDDY_OK);
  assert_int_equal(deleted, 1);
  assert_int_equal(eddy_store_list(s, &e, &n, err, sizeof err), EDDY_OK);
  assert_int_equal(n, 3);
  assert_int_equal(e[2].version, 2);
  eddy_store_list_free(e, n);
  /* numbering continues after the newest, never reuses deleted numbers below it */
  train(l, 1);
  assert_int_equal(publish(s, l, 6, EDDY_STATUS_PROMOTED, "F32"), 7);
  /* a malformed CURRENT stops retention from deleting anything */
  char *cpath = pathf("%s/CURRENT", eddy_store_dir(s));
  FILE *f = fopen(cpath, "w");
  fputs("garbage", f);
  fclose(f);
  assert_int_equal(eddy_store_retain(s, 1, &deleted, err, sizeof err), EDDY_ERR_FORMAT);
  assert_int_equal(deleted, 0);
  assert_non_null(strstr(err, "nothing deleted"));
  free(cpath);
  char *epath = pathf("%s/events.log", eddy_store_dir(s));
  char *text = slurp(epath, NULL);
  assert_non_null(strstr(text, "\"action\":\"pin\",\"version\":3"));
  assert_non_null(strstr(text, "\"action\":\"unpin\",\"version\":3"));
  assert_non_null(strstr(text, "\"action\":\"delete\",\"version\":4"));
  free(text);
  free(epath);
  eddy_learner_destroy(l);
  eddy_store_destroy(s);
  eddy_test_rmdir(root);
}

static void test_lock_and_leftovers(void **state) {
  (void)state;
  char *root = eddy_test_tmpdir(), err[512] = "";
  eddy_store_t *s = open_writer(root, "m");
  eddy_model_spec_t spec = spec_with(4);
  eddy_learner_t *l = learner_for(&spec);
  train(l, 1);
  publish(s, l, 0, EDDY_STATUS_PROMOTED, "F32");
  /* one writer at a time */
  assert_null(eddy_store_new(root, "m", EDDY_STORE_WRITER, err, sizeof err));
  assert_non_null(strstr(err, "another writer"));
  eddy_store_destroy(s);
  /* what a crash leaves: a half-written version, a half-deleted one, a CURRENT temp file */
  char *tmpdir = pathf("%s/m/.tmp-v000002-abc123", root), *deldir = pathf("%s/m/.del-v000001-1-0", root);
  assert_int_equal(mkdir(tmpdir, 0755), 0);
  free(eddy_test_write_file(tmpdir, "weights.safetensors", "partial", 7));
  assert_int_equal(mkdir(deldir, 0755), 0);
  free(eddy_test_write_file(deldir, "state.safetensors", "x", 1));
  char *mdir = pathf("%s/m", root);
  free(eddy_test_write_file(mdir, ".tmp-CURRENT-Zx81Qa", "v0000", 5));
  /* a reader leaves them alone */
  eddy_store_t *ro = eddy_store_new(root, "m", EDDY_STORE_READONLY, err, sizeof err);
  assert_non_null(ro);
  assert_true(exists(tmpdir) && exists(deldir));
  uint64_t v = 0;
  assert_int_equal(eddy_store_latest(ro, &v, err, sizeof err), EDDY_OK);
  assert_int_equal(v, 1); /* temp folders are not versions */
  /* the writer removes them on open */
  s = open_writer(root, "m");
  assert_false(exists(tmpdir));
  assert_false(exists(deldir));
  assert_int_equal(count_prefix(mdir, ".tmp-"), 0);
  assert_int_equal(count_prefix(mdir, ".del-"), 0);
  char vdir[4096];
  assert_int_equal(eddy_store_path(s, 1, NULL, vdir, sizeof vdir), EDDY_OK);
  assert_int_equal(eddy_store_verify(vdir, NULL, err, sizeof err), EDDY_OK);
  /* transactions: one at a time; abort leaves nothing; the number is reused */
  eddy_store_txn_t *t = NULL, *t2 = NULL;
  assert_int_equal(eddy_store_begin(s, &t, err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_store_txn_version(t), 2);
  assert_true(exists(eddy_store_txn_dir(t)));
  assert_int_equal(eddy_store_begin(s, &t2, err, sizeof err), EDDY_ERR_STATE);
  assert_null(t2);
  assert_int_equal(eddy_store_latest(ro, &v, err, sizeof err), EDDY_OK);
  assert_int_equal(v, 1); /* a reader never sees the version being written */
  eddy_store_abort(t);
  assert_int_equal(count_prefix(mdir, ".tmp-"), 0);
  eddy_store_abort(NULL);
  /* commit refuses an unexpected file, a missing parent, NaN weights in a promoted version */
  eddy_manifest_t m;
  assert_int_equal(eddy_store_begin(s, &t, err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_store_txn_version(t), 2);
  assert_int_equal(eddy_store_txn_write(t, l, "F32", err, sizeof err), EDDY_OK);
  free(eddy_test_write_file(eddy_store_txn_dir(t), "notes.txt", "hi", 2));
  fill(&m, l, 1, EDDY_STATUS_PROMOTED);
  assert_int_equal(eddy_store_commit(t, &m, err, sizeof err), EDDY_ERR_FORMAT);
  assert_non_null(strstr(err, "notes.txt"));
  eddy_manifest_clear(&m);
  assert_int_equal(count_prefix(mdir, ".tmp-"), 0);
  assert_int_equal(eddy_store_begin(s, &t, err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_store_txn_write(t, l, "F32", err, sizeof err), EDDY_OK);
  fill(&m, l, 5, EDDY_STATUS_PROMOTED);
  assert_int_equal(eddy_store_commit(t, &m, err, sizeof err), EDDY_ERR_INVALID_ARG);
  assert_non_null(strstr(err, "parent v000005"));
  eddy_manifest_clear(&m);
  const eddy_tensor_info_t *ti;
  eddy_learner_tensors(l, &ti);
  float *w = calloc(ti[0].numel, sizeof *w);
  assert_int_equal(eddy_learner_export(l, ti[0].name, w, ti[0].numel), EDDY_OK);
  float saved = w[0];
  w[0] = NAN;
  assert_int_equal(eddy_learner_import(l, ti[0].name, w, ti[0].numel), EDDY_OK);
  assert_int_equal(eddy_store_begin(s, &t, err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_store_txn_write(t, l, "BF16", err, sizeof err), EDDY_OK);
  fill(&m, l, 1, EDDY_STATUS_PROMOTED);
  assert_int_equal(eddy_store_commit(t, &m, err, sizeof err), EDDY_ERR_NONFINITE);
  assert_non_null(strstr(err, "non-finite"));
  eddy_manifest_clear(&m);
  assert_int_equal(eddy_store_latest(s, &v, err, sizeof err), EDDY_OK);
  assert_int_equal(v, 1);
  /* the same weights as a rejected candidate are kept, and verify */
  assert_int_equal(publish(s, l, 1, EDDY_STATUS_REJECTED, "BF16"), 2);
  assert_int_equal(eddy_store_path(s, 2, NULL, vdir, sizeof vdir), EDDY_OK);
  assert_int_equal(eddy_store_verify(vdir, NULL, err, sizeof err), EDDY_OK);
  w[0] = saved;
  assert_int_equal(eddy_learner_import(l, ti[0].name, w, ti[0].numel), EDDY_OK);
  free(w);
  /* a folder that appeared under the version's name (another process ignoring the lock) is never
   * replaced, even when empty */
  assert_int_equal(eddy_store_begin(s, &t, err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_store_txn_version(t), 3);
  char *squat = pathf("%s/v000003", mdir);
  assert_int_equal(mkdir(squat, 0755), 0);
  assert_int_equal(eddy_store_txn_write(t, l, "F32", err, sizeof err), EDDY_OK);
  fill(&m, l, 1, EDDY_STATUS_PROMOTED);
  assert_int_equal(eddy_store_commit(t, &m, err, sizeof err), EDDY_ERR_IO);
  assert_non_null(strstr(err, "rename"));
  eddy_manifest_clear(&m);
  assert_int_equal(count_prefix(mdir, ".tmp-"), 0);
  assert_int_equal(rmdir(squat), 0); /* still empty */
  free(squat);
  /* closing with a transaction open aborts it */
  assert_int_equal(eddy_store_begin(s, &t, err, sizeof err), EDDY_OK);
  eddy_store_destroy(s);
  assert_int_equal(count_prefix(mdir, ".tmp-"), 0);
  eddy_store_destroy(ro);
  /* bad model names */
  assert_null(eddy_store_new(root, "../x", EDDY_STORE_WRITER, err, sizeof err));
  assert_non_null(strstr(err, "../x"));
  assert_null(eddy_store_new(root, "", EDDY_STORE_WRITER, err, sizeof err));
  free(tmpdir);
  free(deldir);
  free(mdir);
  eddy_learner_destroy(l);
  eddy_test_rmdir(root);
}

/* Writes weights, state and the files of bf16, fp16 and int8 into a new transaction of s, with
 * int8 calibrated on random events, and lists them in m (fill()ed); skip: a precision whose file
 * is listed but not written, extra: one written but not listed (EDDY_INFER_F32: none). */
static eddy_store_txn_t *precision_txn(eddy_store_t *s, eddy_learner_t *l, eddy_manifest_t *m,
                                       eddy_infer_precision_t skip, eddy_infer_precision_t extra) {
  char err[1024] = "";
  eddy_store_txn_t *t = NULL;
  assert_int_equal(eddy_store_begin(s, &t, err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_store_txn_write(t, l, "F32", err, sizeof err), EDDY_OK);
  char *wpath = pathf("%s/%s", eddy_store_txn_dir(t), EDDY_STORE_WEIGHTS);
  eddy_st_reader_t *w = eddy_st_reader_new(wpath, 0, err, sizeof err);
  assert_non_null(w);
  const eddy_model_spec_t *spec = eddy_learner_spec(l);
  eddy_infer_t *fp = eddy_infer_new(spec, w, EDDY_INFER_F32, err, sizeof err);
  assert_non_null(fp);
  eddy_quant_calib_t calib;
  eddy_quant_calib_init(&calib);
  eddy_batch_t *b = eddy_batch_new(spec->dense_dim, 8);
  float *scratch = malloc(eddy_infer_scratch_floats(fp, 8) * sizeof(float));
  random_batch(b);
  assert_int_equal(eddy_infer_calibrate(fp, b, scratch, &calib, err, sizeof err), EDDY_OK);
  fill(m, l, 0, EDDY_STATUS_PROMOTED);
  for (int p = 0; p < EDDY_INFER_PRECISIONS; p++) {
    if (p && p != (int)skip) {
      eddy_err_t e = eddy_store_txn_write_precision(t, w, spec, (eddy_infer_precision_t)p, &calib, err, sizeof err);
      if (e) fail_msg("write %s: %s", eddy_infer_precision_name((eddy_infer_precision_t)p), err);
    }
    if (p && p == (int)extra) continue;
    m->precisions[p].present = true;
    snprintf(m->precisions[p].file, sizeof m->precisions[p].file, "%s",
             eddy_store_precision_file((eddy_infer_precision_t)p));
    m->precisions[p].holdout = m->holdout;
  }
  m->precisions[EDDY_INFER_INT8].calibration_events = calib.events;
  free(scratch);
  eddy_batch_destroy(b);
  eddy_infer_destroy(fp);
  eddy_st_reader_destroy(w);
  free(wpath);
  return t;
}

/* A version in every precision: committed with its files listed, verified, each file checked in
 * memory as a replica checks it and loaded as its precision; damage to a precision's file, and
 * commits that lack a listed file or hold an unlisted one. */
static void test_precision_files(void **state) {
  (void)state;
  char *root = eddy_test_tmpdir(), err[1024] = "";
  eddy_store_t *s = open_writer(root, "m");
  eddy_model_spec_t spec = spec_with(5);
  eddy_learner_t *l = learner_for(&spec);
  train(l, 3);
  eddy_manifest_t m;
  eddy_store_txn_t *t = precision_txn(s, l, &m, EDDY_INFER_F32, EDDY_INFER_F32);
  eddy_err_t rc = eddy_store_commit(t, &m, err, sizeof err);
  if (rc) fail_msg("commit: %s", err);
  assert_int_equal(m.n_files, 5);
  assert_string_equal(m.files[4].name, "weights-int8.safetensors");
  assert_int_equal(m.precisions[EDDY_INFER_INT8].calibration_events, 8);
  char *dir = pathf("%s/m/v%06d", root, 1);
  assert_int_equal(eddy_store_verify(dir, NULL, err, sizeof err), EDDY_OK);
  for (int p = 0; p < EDDY_INFER_PRECISIONS; p++) {
    const char *name = eddy_store_precision_file((eddy_infer_precision_t)p);
    char *fpath = pathf("%s/%s", dir, name);
    size_t len = 0;
    uint8_t *data = (uint8_t *)slurp(fpath, &len);
    eddy_st_reader_t *r = eddy_store_verify_file_mem(&m, name, data, len, 0, err, sizeof err);
    if (!r) fail_msg("verify %s in memory: %s", name, err);
    eddy_infer_t *model = eddy_infer_new(&spec, r, (eddy_infer_precision_t)p, err, sizeof err);
    if (!model) fail_msg("load %s: %s", name, err);
    eddy_infer_destroy(model);
    eddy_st_reader_destroy(r);
    free(fpath);
  }
  char *spath = pathf("%s/%s", dir, EDDY_STORE_STATE);
  size_t len = 0;
  uint8_t *data = (uint8_t *)slurp(spath, &len);
  assert_null(eddy_store_verify_file_mem(&m, EDDY_STORE_STATE, data, len, 0, err, sizeof err)); /* takes data */
  assert_non_null(strstr(err, "state.safetensors: not a weights file of this version"));
  free(spath);
  /* Damage: a flipped byte of the int8 file; the fp16 file in place of the bf16 one. */
  char *copy = pathf("%s/copy", root);
  assert_int_equal(mkdir(copy, 0755), 0);
  for (size_t i = 0; i < m.n_files; i++) {
    char *a = pathf("%s/%s", dir, m.files[i].name), *b = pathf("%s/%s", copy, m.files[i].name);
    copy_file(a, b);
    free(a);
    free(b);
  }
  char *a = pathf("%s/%s", dir, EDDY_STORE_MANIFEST), *b = pathf("%s/%s", copy, EDDY_STORE_MANIFEST);
  copy_file(a, b);
  free(a);
  free(b);
  assert_int_equal(eddy_store_verify(copy, NULL, err, sizeof err), EDDY_OK);
  char *q = pathf("%s/weights-int8.safetensors", copy);
  int fd = open(q, O_RDWR);
  assert_true(fd >= 0);
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  char byte;
  assert_int_equal(pread(fd, &byte, 1, st.st_size - 3), 1);
  byte ^= 0x40;
  assert_int_equal(pwrite(fd, &byte, 1, st.st_size - 3), 1);
  close(fd);
  expect_problem(copy, EDDY_ERR_FORMAT, "weights-int8.safetensors", "sha256");
  rehash(copy, "weights-int8.safetensors");
  assert_int_equal(eddy_store_verify(copy, NULL, err, sizeof err), EDDY_OK); /* a valid int8 file again */
  char *f16 = pathf("%s/weights-fp16.safetensors", copy), *bf = pathf("%s/weights-bf16.safetensors", copy);
  copy_file(f16, bf);
  rehash(copy, "weights-bf16.safetensors");
  expect_problem(copy, EDDY_ERR_FORMAT, "weights-bf16.safetensors",
                 "eddy.precision is \"fp16\", the manifest lists the file as bf16");
  expect_problem(copy, EDDY_ERR_FORMAT, "weights-bf16.safetensors", "has dtype F16, expected BF16");
  free(f16);
  free(bf);
  free(q);
  eddy_manifest_clear(&m);
  /* Commits: a listed file not written, an unlisted file written. */
  t = precision_txn(s, l, &m, EDDY_INFER_F16, EDDY_INFER_F32);
  assert_int_equal(eddy_store_commit(t, &m, err, sizeof err), EDDY_ERR_NOT_FOUND);
  assert_non_null(strstr(err, "the 3 precision file(s) the manifest lists"));
  eddy_manifest_clear(&m);
  t = precision_txn(s, l, &m, EDDY_INFER_F32, EDDY_INFER_INT8);
  assert_int_equal(eddy_store_commit(t, &m, err, sizeof err), EDDY_ERR_FORMAT);
  assert_non_null(strstr(err, "unexpected file weights-int8.safetensors"));
  eddy_manifest_clear(&m);
  free(copy);
  free(dir);
  eddy_learner_destroy(l);
  eddy_store_destroy(s);
  eddy_test_rmdir(root);
}

static void test_verify_damage(void **state) {
  (void)state;
  char *root = eddy_test_tmpdir(), err[1024] = "";
  eddy_store_t *s = open_writer(root, "m");
  eddy_model_spec_t spec = spec_with(6), other = spec_with(7);
  eddy_learner_t *l = learner_for(&spec), *lo = learner_for(&other);
  train(l, 2);
  publish(s, l, 0, EDDY_STATUS_PROMOTED, "F32");
  char good[4096];
  assert_int_equal(eddy_store_path(s, 1, NULL, good, sizeof good), EDDY_OK);
  assert_int_equal(eddy_store_verify(good, NULL, err, sizeof err), EDDY_OK);
  int k = 0;
  char *cases = pathf("%s/cases", root);
  assert_int_equal(mkdir(cases, 0755), 0);
#define NEW_CASE(var)                                                \
  char *var = pathf("%s/c%d", cases, k++);                           \
  assert_int_equal(mkdir(var, 0755), 0);                             \
  char *var##_v = pathf("%s/v000001", var);                          \
  copy_version(good, var##_v);                                       \
  char *var##_w = pathf("%s/" EDDY_STORE_WEIGHTS, var##_v);          \
  char *var##_s = pathf("%s/" EDDY_STORE_STATE, var##_v);            \
  char *var##_m = pathf("%s/" EDDY_STORE_MANIFEST, var##_v)
#define FREE_CASE(var) free(var), free(var##_v), free(var##_w), free(var##_s), free(var##_m)

  { /* an untouched copy verifies */
    NEW_CASE(c);
    assert_int_equal(eddy_store_verify(c_v, NULL, err, sizeof err), EDDY_OK);
    FREE_CASE(c);
  }
  { /* truncated weights: size and structure */
    NEW_CASE(c);
    struct stat st;
    assert_int_equal(stat(c_w, &st), 0);
    assert_int_equal(truncate(c_w, st.st_size / 2), 0);
    expect_problem(c_v, EDDY_ERR_FORMAT, EDDY_STORE_WEIGHTS, "truncated or replaced");
    expect_problem(c_v, EDDY_ERR_FORMAT, EDDY_STORE_WEIGHTS, "not a valid safetensors file");
    assert_int_equal(eddy_store_verify(c_v, NULL, err, sizeof err), EDDY_ERR_FORMAT);
    assert_non_null(strstr(err, "weights.safetensors: size"));
    assert_non_null(strstr(err, "(and 1 more problem)"));
    FREE_CASE(c);
  }
  { /* one flipped byte in the data: only the checksum sees it */
    NEW_CASE(c);
    size_t len;
    char *buf = slurp(c_w, &len);
    buf[len - 3] ^= 0x01;
    FILE *f = fopen(c_w, "wb");
    fwrite(buf, 1, len, f);
    fclose(f);
    free(buf);
    expect_problem(c_v, EDDY_ERR_FORMAT, EDDY_STORE_WEIGHTS, "(content changed)");
    size_t count = 0;
    eddy_store_verify_each(c_v, NULL, NULL, NULL, &count);
    assert_int_equal(count, 1);
    FREE_CASE(c);
  }
  { /* the manifest records a different checksum */
    NEW_CASE(c);
    size_t len;
    char *buf = slurp(c_m, &len);
    char *at = strstr(strstr(buf, "\"state.safetensors\""), "\"sha256\"");
    at = strchr(at + 8, '"') + 1;
    at[0] = at[0] == '0' ? '1' : '0';
    FILE *f = fopen(c_m, "wb");
    fwrite(buf, 1, len, f);
    fclose(f);
    free(buf);
    expect_problem(c_v, EDDY_ERR_FORMAT, EDDY_STORE_STATE, "the manifest says");
    FREE_CASE(c);
  }
  { /* another spec's weights with a matching recorded checksum: shapes and spec differ */
    NEW_CASE(c);
    const char *meta[] = {"eddy.model", "m", "eddy.version", "1"};
    assert_int_equal(eddy_learner_save_weights(lo, c_w, "F32", meta, 2, err, sizeof err), EDDY_OK);
    rehash(c_v, EDDY_STORE_WEIGHTS);
    expect_problem(c_v, EDDY_ERR_SHAPE, EDDY_STORE_WEIGHTS, "differs from the manifest's spec");
    expect_problem(c_v, EDDY_ERR_SHAPE, EDDY_STORE_WEIGHTS, "tensor mlp.0.weight has shape [7, 5], the spec wants [6, 5]");
    FREE_CASE(c);
  }
  { /* right shapes, wrong dtype and version metadata */
    NEW_CASE(c);
    const char *meta[] = {"eddy.model", "m", "eddy.version", "9"};
    assert_int_equal(eddy_learner_save_weights(l, c_w, "F16", meta, 2, err, sizeof err), EDDY_OK);
    rehash(c_v, EDDY_STORE_WEIGHTS);
    expect_problem(c_v, EDDY_ERR_FORMAT, EDDY_STORE_WEIGHTS, "eddy.version \"9\" differs from the manifest's 1");
    expect_problem(c_v, EDDY_ERR_FORMAT, EDDY_STORE_WEIGHTS, "has dtype F16, expected F32");
    FREE_CASE(c);
  }
  { /* a missing file and an unlisted one */
    NEW_CASE(c);
    assert_int_equal(unlink(c_s), 0);
    expect_problem(c_v, EDDY_ERR_NOT_FOUND, EDDY_STORE_STATE, "missing (the manifest lists");
    free(eddy_test_write_file(c_v, "extra.bin", "x", 1));
    expect_problem(c_v, EDDY_ERR_FORMAT, "extra.bin", "not listed in the manifest");
    FREE_CASE(c);
  }
  { /* a manifest without a required field, or none at all */
    NEW_CASE(c);
    size_t len;
    char *buf = slurp(c_m, &len);
    char *at = strstr(buf, "\"buffer_cursor\"");
    memcpy(at, "\"buffer_kursor\"", 15);
    FILE *f = fopen(c_m, "wb");
    fwrite(buf, 1, len, f);
    fclose(f);
    free(buf);
    expect_problem(c_v, EDDY_ERR_FORMAT, EDDY_STORE_MANIFEST, "\"buffer_cursor\" missing");
    assert_int_equal(unlink(c_m), 0);
    expect_problem(c_v, EDDY_ERR_NOT_FOUND, EDDY_STORE_MANIFEST, "No such file");
    FREE_CASE(c);
  }
  { /* the folder's name says another version */
    char *c = pathf("%s/v000002", cases);
    copy_version(good, c);
    expect_problem(c, EDDY_ERR_FORMAT, EDDY_STORE_MANIFEST, "folder v000002 holds the manifest of version 1");
    free(c);
  }
  { /* NaN in the weights of a version marked promoted */
    NEW_CASE(c);
    const eddy_tensor_info_t *ti;
    eddy_learner_tensors(l, &ti);
    float *w = calloc(ti[1].numel, sizeof *w), *orig = calloc(ti[1].numel, sizeof *w);
    assert_int_equal(eddy_learner_export(l, ti[1].name, orig, ti[1].numel), EDDY_OK);
    memcpy(w, orig, ti[1].numel * sizeof *w);
    w[0] = INFINITY;
    w[1] = NAN;
    assert_int_equal(eddy_learner_import(l, ti[1].name, w, ti[1].numel), EDDY_OK);
    const char *meta[] = {"eddy.model", "m", "eddy.version", "1"};
    assert_int_equal(eddy_learner_save_weights(l, c_w, "F32", meta, 2, err, sizeof err), EDDY_OK);
    assert_int_equal(eddy_learner_import(l, ti[1].name, orig, ti[1].numel), EDDY_OK);
    free(w);
    free(orig);
    rehash(c_v, EDDY_STORE_WEIGHTS);
    expect_problem(c_v, EDDY_ERR_NONFINITE, EDDY_STORE_WEIGHTS, "2 non-finite weights");
    FREE_CASE(c);
  }
  { /* a symbolic link in place of a file */
    NEW_CASE(c);
    assert_int_equal(unlink(c_s), 0);
    char target[4200];
    assert_int_equal(eddy_store_path(s, 1, EDDY_STORE_STATE, target, sizeof target), EDDY_OK);
    assert_int_equal(symlink(target, c_s), 0);
    expect_problem(c_v, EDDY_ERR_FORMAT, EDDY_STORE_STATE, "symbolic link");
    FREE_CASE(c);
  }
#undef NEW_CASE
#undef FREE_CASE
  free(cases);
  eddy_learner_destroy(l);
  eddy_learner_destroy(lo);
  eddy_store_destroy(s);
  eddy_test_rmdir(root);
}

/* A file-size limit makes a write fail partway, as a full disk would. */
static void test_publish_failure_fsize(void **state) {
  (void)state;
  char *root = eddy_test_tmpdir(), err[1024] = "";
  eddy_store_t *s = open_writer(root, "m");
  eddy_model_spec_t spec = spec_with(6);
  eddy_learner_t *l = learner_for(&spec);
  train(l, 1);
  publish(s, l, 0, EDDY_STATUS_PROMOTED, "F32");
  eddy_manifest_t m;
  assert_int_equal(eddy_store_load_manifest(s, 1, &m, err, sizeof err), EDDY_OK);
  uint64_t wbytes = eddy_manifest_file(&m, EDDY_STORE_WEIGHTS)->bytes;
  eddy_manifest_clear(&m);
  struct rlimit old, lim;
  assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
  void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
  const struct {
    rlim_t limit;
    const char *file;
  } cases[] = {{(rlim_t)(wbytes + 64), EDDY_STORE_STATE}, {(rlim_t)(wbytes / 2), EDDY_STORE_WEIGHTS}};
  for (size_t i = 0; i < 2; i++) {
    lim = old;
    lim.rlim_cur = cases[i].limit;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    train(l, 1);
    fill(&m, l, 1, EDDY_STATUS_PROMOTED);
    uint64_t v = 0;
    eddy_err_t rc = eddy_store_publish(s, l, &m, "F32", &v, err, sizeof err);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    eddy_manifest_clear(&m);
    assert_int_equal(rc, EDDY_ERR_IO);
    if (!strstr(err, cases[i].file)) fail_msg("error does not name %s: %s", cases[i].file, err);
    assert_int_equal(count_prefix(eddy_store_dir(s), ".tmp-"), 0);
    char vdir[4096];
    assert_int_equal(eddy_store_path(s, 2, NULL, vdir, sizeof vdir), EDDY_OK);
    assert_false(exists(vdir));
  }
  signal(SIGXFSZ, prev);
  /* the number was not used up */
  assert_int_equal(publish(s, l, 1, EDDY_STATUS_PROMOTED, "F32"), 2);
  eddy_learner_destroy(l);
  eddy_store_destroy(s);
  eddy_test_rmdir(root);
}

/* A really full file system: a small tmpfs (needs root and mount permission; skipped otherwise). */
static void test_publish_failure_tmpfs(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir(), err[1024] = "";
  if (mount("tmpfs", dir, "tmpfs", 0, "size=96k") != 0) {
    printf("skipped: cannot mount a tmpfs here (%s)\n", strerror(errno));
    eddy_test_rmdir(dir);
    skip();
  }
  eddy_store_t *s = open_writer(dir, "m");
  eddy_model_spec_t spec = spec_with(6);
  spec.hash_bits = 10;
  spec.embed_dim = 8; /* emb.weight 1024 x 8: 32 KiB of weights, ~100 KiB of adam state */
  eddy_learner_t *l = learner_for(&spec);
  train(l, 1);
  eddy_manifest_t m;
  fill(&m, l, 0, EDDY_STATUS_PROMOTED);
  uint64_t v = 0;
  eddy_err_t rc = eddy_store_publish(s, l, &m, "F32", &v, err, sizeof err);
  eddy_manifest_clear(&m);
  assert_int_equal(rc, EDDY_ERR_IO);
  assert_non_null(strstr(err, "No space left on device"));
  assert_non_null(strstr(err, EDDY_STORE_STATE));
  assert_int_equal(count_prefix(eddy_store_dir(s), ".tmp-"), 0);
  assert_int_equal(count_prefix(eddy_store_dir(s), "v"), 0);
  eddy_store_txn_t *t = NULL;
  assert_int_equal(eddy_store_begin(s, &t, err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_store_txn_version(t), 1);
  eddy_store_abort(t);
  /* with F16 weights and room freed, the same store publishes fine: space was given back */
  eddy_store_destroy(s);
  assert_int_equal(mount("tmpfs", dir, "tmpfs", MS_REMOUNT, "size=256k"), 0);
  s = open_writer(dir, "m");
  assert_int_equal(publish(s, l, 0, EDDY_STATUS_PROMOTED, "F16"), 1);
  char vdir[4096];
  assert_int_equal(eddy_store_path(s, 1, NULL, vdir, sizeof vdir), EDDY_OK);
  assert_int_equal(eddy_store_verify(vdir, NULL, err, sizeof err), EDDY_OK);
  eddy_store_destroy(s);
  eddy_learner_destroy(l);
  assert_int_equal(umount(dir), 0);
  eddy_test_rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_publish_verify_restore), cmocka_unit_test(test_current_and_rollback),
      cmocka_unit_test(test_check_current),
      cmocka_unit_test(test_concurrent_set_current), cmocka_unit_test(test_retention),
      cmocka_unit_test(test_lock_and_leftovers),     cmocka_unit_test(test_verify_damage),
      cmocka_unit_test(test_publish_failure_fsize),  cmocka_unit_test(test_publish_failure_tmpfs),
      cmocka_unit_test(test_precision_files),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
