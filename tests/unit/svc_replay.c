/* Replay buffer (src/buffer/replay.c): append/read round trips, atomic offsets, eviction by events
 * and bytes, refusal without eviction, the class-balanced reservoir, the sampling strategies and
 * their determinism, a reader racing the writer, dead letters, read-only access, reopen. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buffer/replay.h"
#include "testutil.h"

/* Fills ev as event number i: id "e-i", label from the caller, dense values derived from i (with
 * a varying length so that event sizes differ), two sparse features. */
static void make_event(eddy_event_t *ev, uint64_t i, double label) {
  snprintf(ev->id, sizeof ev->id, "e-%llu", (unsigned long long)i);
  ev->has_ts = (i % 3) != 0;
  ev->ts = 1732780000000 + (int64_t)i;
  ev->label = label;
  ev->weight = 1.0f + (float)(i % 5) * 0.25f;
  ev->n_dense = 4 + (uint32_t)(i % 4);
  ev->dense = realloc(ev->dense, ev->n_dense * sizeof *ev->dense);
  for (uint32_t k = 0; k < ev->n_dense; k++) ev->dense[k] = (float)i * 0.001f + (float)k / 3.0f;
  ev->n_sparse = 2;
  ev->sparse_idx = realloc(ev->sparse_idx, 2 * sizeof *ev->sparse_idx);
  ev->sparse_val = realloc(ev->sparse_val, 2 * sizeof *ev->sparse_val);
  ev->sparse_idx[0] = (uint32_t)(i * 7919 % 1024);
  ev->sparse_idx[1] = (uint32_t)(i * 104729 % 1024);
  ev->sparse_val[0] = 1.0f;
  ev->sparse_val[1] = (float)i / 7.0f;
  ev->dense_cap = ev->n_dense;
  ev->sparse_cap = 2;
}

static uint64_t event_num(const eddy_event_t *ev) {
  return strtoull(ev->id + 2, NULL, 10);
}

/* A batch of n events numbered from start; labels by label_of (NULL: i % 10). */
typedef struct {
  eddy_event_t *ev;
  const eddy_event_t **ptr;
  size_t n;
} batch_t;

static void batch_make(batch_t *b, uint64_t start, size_t n, double (*label_of)(uint64_t)) {
  b->ev = calloc(n, sizeof *b->ev);
  b->ptr = calloc(n, sizeof *b->ptr);
  b->n = n;
  for (size_t k = 0; k < n; k++) {
    eddy_event_init(&b->ev[k]);
    make_event(&b->ev[k], start + k, label_of ? label_of(start + k) : (double)((start + k) % 10));
    b->ptr[k] = &b->ev[k];
  }
}

static void batch_free(batch_t *b) {
  for (size_t k = 0; k < b->n; k++) eddy_event_free(&b->ev[k]);
  free(b->ev);
  free(b->ptr);
}

static eddy_replay_t *open_buf(const char *dir, uint64_t cap_events, uint64_t cap_bytes, bool evict) {
  eddy_replay_opts_t o = {.path = dir, .capacity_events = cap_events, .capacity_bytes = cap_bytes,
                          .evict = evict, .reservoir_size = 0, .classes = 10, .seed = 42};
  char err[512] = "";
  eddy_replay_t *r = eddy_replay_new(&o, err, sizeof err);
  if (!r) fprintf(stderr, "open: %s\n", err);
  assert_non_null(r);
  return r;
}

static void append_range(eddy_replay_t *r, uint64_t start, size_t n, uint64_t *first) {
  batch_t b;
  batch_make(&b, start, n, NULL);
  char err[512] = "";
  eddy_err_t e = eddy_replay_append(r, b.ptr, n, NULL, 0, NULL, 0, first, err, sizeof err);
  if (e) fprintf(stderr, "append: %s\n", err);
  assert_int_equal(e, EDDY_OK);
  batch_free(&b);
}

static size_t encoded(const eddy_event_t *ev, uint8_t *buf, size_t cap) {
  size_t n = eddy_event_encode(ev, buf, cap);
  assert_true(n > 0);
  return n;
}

static void assert_same_event(const eddy_event_t *a, const eddy_event_t *b) {
  uint8_t x[1024], y[1024];
  size_t nx = encoded(a, x, sizeof x), ny = encoded(b, y, sizeof y);
  assert_int_equal(nx, ny);
  assert_memory_equal(x, y, nx);
}

/* Reads every stored event from seq 0 (up to cap); returns the count. */
static size_t read_all(eddy_replay_t *r, eddy_event_t *out, uint64_t *seqs, size_t cap) {
  size_t got = 0;
  assert_int_equal(eddy_replay_read(r, 0, cap, out, seqs, &got), EDDY_OK);
  return got;
}

static eddy_event_t *events_new(size_t n) {
  eddy_event_t *ev = calloc(n, sizeof *ev);
  for (size_t i = 0; i < n; i++) eddy_event_init(&ev[i]);
  return ev;
}

static void events_free(eddy_event_t *ev, size_t n) {
  for (size_t i = 0; i < n; i++) eddy_event_free(&ev[i]);
  free(ev);
}

static void test_round_trip(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  eddy_replay_t *r = open_buf(dir, 0, 0, true);
  eddy_replay_stats_t st = eddy_replay_stats(r);
  assert_int_equal(st.events, 0);
  assert_int_equal(st.first_seq, st.next_seq);

  batch_t b1, b2;
  batch_make(&b1, 0, 50, NULL);
  batch_make(&b2, 50, 30, NULL);
  uint64_t first = 99;
  char err[256];
  assert_int_equal(eddy_replay_append(r, b1.ptr, 50, NULL, 0, NULL, 0, &first, err, sizeof err), EDDY_OK);
  assert_int_equal(first, 0);
  assert_int_equal(eddy_replay_append(r, b2.ptr, 30, NULL, 0, NULL, 0, &first, err, sizeof err), EDDY_OK);
  assert_int_equal(first, 50);
  uint64_t bytes = 0;
  for (size_t i = 0; i < 50; i++) bytes += eddy_event_encoded_size(&b1.ev[i]);
  for (size_t i = 0; i < 30; i++) bytes += eddy_event_encoded_size(&b2.ev[i]);

  st = eddy_replay_stats(r);
  assert_int_equal(st.events, 80);
  assert_int_equal(st.first_seq, 0);
  assert_int_equal(st.next_seq, 80);
  assert_int_equal(st.bytes, bytes);
  assert_int_equal(st.evicted, 0);

  eddy_event_t *out = events_new(100);
  uint64_t seqs[100];
  assert_int_equal(read_all(r, out, seqs, 100), 80);
  for (size_t i = 0; i < 80; i++) {
    assert_int_equal(seqs[i], i);
    assert_same_event(&out[i], i < 50 ? &b1.ev[i] : &b2.ev[i - 50]);
  }
  /* From a cursor, with a limit. */
  size_t got = 0;
  assert_int_equal(eddy_replay_read(r, 45, 10, out, seqs, &got), EDDY_OK);
  assert_int_equal(got, 10);
  assert_int_equal(seqs[0], 45);
  assert_int_equal(seqs[9], 54);
  assert_same_event(&out[5], &b2.ev[0]);
  assert_int_equal(eddy_replay_read(r, 80, 10, out, seqs, &got), EDDY_OK);
  assert_int_equal(got, 0);

  /* Seqs continue across a reopen; the stats persist. */
  eddy_replay_destroy(r);
  r = open_buf(dir, 0, 0, true);
  st = eddy_replay_stats(r);
  assert_int_equal(st.next_seq, 80);
  assert_int_equal(st.bytes, bytes);
  append_range(r, 80, 5, &first);
  assert_int_equal(first, 80);
  assert_int_equal(read_all(r, out, seqs, 100), 85);
  assert_same_event(&out[10], &b1.ev[10]);
  assert_int_equal(event_num(&out[84]), 84);

  events_free(out, 100);
  batch_free(&b1);
  batch_free(&b2);
  eddy_replay_destroy(r);
  eddy_test_rmdir(dir);
}

typedef struct {
  char topic[64];
  int32_t partition;
  int64_t next;
} seen_offset_t;

static void collect_offset(void *ctx, const char *topic, int32_t partition, int64_t next) {
  seen_offset_t *s = ctx;
  while (s->topic[0]) s++;
  snprintf(s->topic, sizeof s->topic, "%s", topic);
  s->partition = partition;
  s->next = next;
}

static void test_offsets_atomic(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  eddy_replay_t *r = open_buf(dir, 0, 0, true);
  batch_t b;
  batch_make(&b, 0, 10, NULL);
  eddy_replay_offset_t offs[] = {{"clicks", 2, 1001}, {"clicks", 0, 17}, {"ab", 11, 5}, {"clicks", 10, 3}};
  char err[256];
  assert_int_equal(eddy_replay_append(r, b.ptr, 10, NULL, 0, offs, 4, NULL, err, sizeof err), EDDY_OK);
  /* A later batch moves one partition. */
  eddy_replay_offset_t again = {"clicks", 2, 1005};
  assert_int_equal(eddy_replay_append(r, b.ptr, 3, NULL, 0, &again, 1, NULL, err, sizeof err), EDDY_OK);
  eddy_replay_destroy(r);

  r = open_buf(dir, 0, 0, true);
  int64_t next = -1;
  assert_int_equal(eddy_replay_offset(r, "clicks", 2, &next), EDDY_OK);
  assert_int_equal(next, 1005);
  assert_int_equal(eddy_replay_offset(r, "clicks", 0, &next), EDDY_OK);
  assert_int_equal(next, 17);
  assert_int_equal(eddy_replay_offset(r, "clicks", 1, &next), EDDY_ERR_NOT_FOUND);
  assert_int_equal(eddy_replay_offset(r, "click", 2, &next), EDDY_ERR_NOT_FOUND);
  seen_offset_t seen[8];
  memset(seen, 0, sizeof seen);
  eddy_replay_offsets_each(r, collect_offset, seen);
  /* topic order, then partition (numerically: 2 before 10) */
  assert_string_equal(seen[0].topic, "ab");
  assert_int_equal(seen[0].partition, 11);
  assert_string_equal(seen[1].topic, "clicks");
  assert_int_equal(seen[1].partition, 0);
  assert_int_equal(seen[2].partition, 2);
  assert_int_equal(seen[2].next, 1005);
  assert_int_equal(seen[3].partition, 10);
  assert_int_equal(seen[4].topic[0], 0);
  assert_int_equal(eddy_replay_stats(r).events, 13);
  batch_free(&b);
  eddy_replay_destroy(r);
  eddy_test_rmdir(dir);
}

/* Sum of the encoded sizes of what read_all returns. */
static uint64_t stored_bytes(eddy_replay_t *r, size_t *count, uint64_t *first) {
  eddy_event_t *out = events_new(2000);
  uint64_t *seqs = calloc(2000, sizeof *seqs);
  size_t n = read_all(r, out, seqs, 2000);
  uint64_t bytes = 0;
  for (size_t i = 0; i < n; i++) {
    bytes += eddy_event_encoded_size(&out[i]);
    assert_int_equal(event_num(&out[i]), seqs[i]);
    if (i) assert_int_equal(seqs[i], seqs[i - 1] + 1);
  }
  *count = n;
  *first = n ? seqs[0] : UINT64_MAX;
  events_free(out, 2000);
  free(seqs);
  return bytes;
}

static void test_evict_by_events(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  eddy_replay_t *r = open_buf(dir, 100, 0, true);
  for (int k = 0; k < 10; k++) append_range(r, (uint64_t)k * 30, 30, NULL);
  eddy_replay_stats_t st = eddy_replay_stats(r);
  assert_int_equal(st.events, 100);
  assert_int_equal(st.first_seq, 200);
  assert_int_equal(st.next_seq, 300);
  assert_int_equal(st.evicted, 200);
  size_t count;
  uint64_t first;
  assert_int_equal(stored_bytes(r, &count, &first), st.bytes);
  assert_int_equal(count, 100);
  assert_int_equal(first, 200);
  /* Reading from an evicted cursor skips to the oldest stored event. */
  eddy_event_t *out = events_new(4);
  uint64_t seqs[4];
  size_t got;
  assert_int_equal(eddy_replay_read(r, 150, 4, out, seqs, &got), EDDY_OK);
  assert_int_equal(got, 4);
  assert_int_equal(seqs[0], 200);

  /* One batch larger than the whole capacity: only its newest events stay. */
  append_range(r, 300, 250, NULL);
  st = eddy_replay_stats(r);
  assert_int_equal(st.events, 100);
  assert_int_equal(st.first_seq, 450);
  assert_int_equal(st.next_seq, 550);
  assert_int_equal(st.evicted, 450);
  assert_int_equal(stored_bytes(r, &count, &first), st.bytes);
  assert_int_equal(first, 450);

  /* The stats survive a reopen and match the stored events. */
  eddy_replay_destroy(r);
  r = open_buf(dir, 100, 0, true);
  eddy_replay_stats_t st2 = eddy_replay_stats(r);
  assert_memory_equal(&st, &st2, sizeof st);
  events_free(out, 4);
  eddy_replay_destroy(r);
  eddy_test_rmdir(dir);
}

static void test_evict_by_bytes(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  const uint64_t cap = 5000;
  eddy_replay_t *r = open_buf(dir, 0, cap, true);
  uint64_t prev_first = 0;
  for (int k = 0; k < 20; k++) {
    append_range(r, (uint64_t)k * 17, 17, NULL);
    eddy_replay_stats_t st = eddy_replay_stats(r);
    assert_true(st.bytes <= cap);
    assert_true(st.first_seq >= prev_first);
    prev_first = st.first_seq;
    size_t count;
    uint64_t first;
    assert_int_equal(stored_bytes(r, &count, &first), st.bytes);
    assert_int_equal(count, st.events);
    assert_int_equal(st.evicted, st.first_seq);
  }
  eddy_replay_stats_t st = eddy_replay_stats(r);
  assert_true(st.first_seq > 0);
  /* Tight: the event just before first_seq would not have fitted. */
  eddy_event_t ev;
  eddy_event_init(&ev);
  make_event(&ev, st.first_seq - 1, 0);
  assert_true(st.bytes + eddy_event_encoded_size(&ev) > cap);
  eddy_event_free(&ev);
  eddy_replay_destroy(r);
  eddy_test_rmdir(dir);
}

static void test_no_evict_refuses(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  eddy_replay_t *r = open_buf(dir, 50, 0, false);
  append_range(r, 0, 40, NULL);
  eddy_replay_stats_t before = eddy_replay_stats(r);
  batch_t b;
  batch_make(&b, 40, 20, NULL);
  eddy_replay_offset_t off = {"t", 0, 60};
  eddy_dead_letter_t dl = {.topic = "t", .partition = 0, .offset = 59, .reason = EDDY_ERR_EVENT_NOT_JSON,
                           .message = "x", .raw = "x", .raw_len = 1};
  char err[512] = "";
  assert_int_equal(eddy_replay_append(r, b.ptr, 20, &dl, 1, &off, 1, NULL, err, sizeof err), EDDY_ERR_TOO_LARGE);
  assert_non_null(strstr(err, "capacity_events 50"));
  eddy_replay_stats_t after = eddy_replay_stats(r);
  assert_memory_equal(&before, &after, sizeof before);
  int64_t next;
  assert_int_equal(eddy_replay_offset(r, "t", 0, &next), EDDY_ERR_NOT_FOUND);
  eddy_replay_destroy(r);

  /* Nothing of it reached the disk either; a batch that fits still goes in. */
  r = open_buf(dir, 50, 0, false);
  after = eddy_replay_stats(r);
  assert_memory_equal(&before, &after, sizeof before);
  assert_int_equal(eddy_replay_offset(r, "t", 0, &next), EDDY_ERR_NOT_FOUND);
  assert_int_equal(after.dead_letters, 0);
  assert_int_equal(eddy_replay_append(r, b.ptr, 10, &dl, 1, &off, 1, NULL, err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_replay_stats(r).events, 50);
  assert_int_equal(eddy_replay_append(r, b.ptr, 1, NULL, 0, NULL, 0, NULL, err, sizeof err), EDDY_ERR_TOO_LARGE);
  /* Offsets and dead letters alone still go in when full. */
  assert_int_equal(eddy_replay_append(r, NULL, 0, &dl, 1, &off, 1, NULL, err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_replay_stats(r).dead_letters, 2);
  batch_free(&b);
  eddy_replay_destroy(r);

  /* By bytes too. */
  eddy_test_rmdir(dir);
  dir = eddy_test_tmpdir();
  r = open_buf(dir, 0, 1000, false);
  batch_make(&b, 0, 40, NULL);
  assert_int_equal(eddy_replay_append(r, b.ptr, 40, NULL, 0, NULL, 0, NULL, err, sizeof err), EDDY_ERR_TOO_LARGE);
  assert_non_null(strstr(err, "capacity_bytes 1000"));
  assert_int_equal(eddy_replay_stats(r).events, 0);
  assert_int_equal(eddy_replay_append(r, b.ptr, 5, NULL, 0, NULL, 0, NULL, err, sizeof err), EDDY_OK);
  batch_free(&b);
  eddy_replay_destroy(r);
  eddy_test_rmdir(dir);
}

static double label_skewed(uint64_t i) {
  return (i % 10) == 3 ? 1.0 : 0.0; /* 90% class 0, 10% class 1 */
}

typedef struct {
  uint64_t kept[4], seen[4];
} res_counts_t;

static void collect_res(void *ctx, uint32_t cls, uint64_t kept, uint64_t seen) {
  res_counts_t *c = ctx;
  if (cls < 4) {
    c->kept[cls] = kept;
    c->seen[cls] = seen;
  }
}

static eddy_replay_t *open_res(const char *dir, uint32_t size, uint64_t cap_events) {
  eddy_replay_opts_t o = {.path = dir, .capacity_events = cap_events, .evict = true, .reservoir_size = size,
                          .classes = 2, .seed = 7};
  char err[512] = "";
  eddy_replay_t *r = eddy_replay_new(&o, err, sizeof err);
  if (!r) fprintf(stderr, "open: %s\n", err);
  assert_non_null(r);
  return r;
}

static void append_skewed(eddy_replay_t *r, uint64_t start, size_t n) {
  batch_t b;
  batch_make(&b, start, n, label_skewed);
  char err[256];
  assert_int_equal(eddy_replay_append(r, b.ptr, n, NULL, 0, NULL, 0, NULL, err, sizeof err), EDDY_OK);
  batch_free(&b);
}

static void test_reservoir_balance(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  /* The window keeps 200 events, the reservoir 50 per class. */
  eddy_replay_t *r = open_res(dir, 50, 200);
  for (int k = 0; k < 20; k++) append_skewed(r, (uint64_t)k * 100, 100);
  res_counts_t c = {0};
  eddy_replay_reservoir_counts(r, collect_res, &c);
  assert_int_equal(c.seen[0], 1800);
  assert_int_equal(c.seen[1], 200);
  assert_int_equal(c.kept[0], 50);
  assert_int_equal(c.kept[1], 50);

  /* Balanced samples: about half of each class, and old events (long evicted from the window)
   * are still there; class 0's kept events spread over the stream (Algorithm R, not the first 50). */
  enum { N = 2000 };
  eddy_event_t *out = events_new(N);
  uint64_t rng = 1;
  size_t got = 0;
  assert_int_equal(eddy_replay_sample(r, EDDY_SAMPLE_BALANCED, &rng, N, out, &got), EDDY_OK);
  assert_int_equal(got, N);
  size_t minority = 0, old = 0, late0 = 0;
  for (size_t i = 0; i < N; i++) {
    uint64_t num = event_num(&out[i]);
    assert_true(out[i].label == label_skewed(num));
    if (out[i].label == 1.0) minority++;
    if (num < 1800) old++;
    if (out[i].label == 0.0 && num >= 1000) late0++;
  }
  assert_in_range(minority, N * 40 / 100, N * 60 / 100);
  assert_true(old > N / 2);
  assert_true(late0 > N / 10);
  /* The window itself is 90/10: uniform sampling shows the skew the reservoir corrects. */
  assert_int_equal(eddy_replay_sample(r, EDDY_SAMPLE_UNIFORM, &rng, N, out, &got), EDDY_OK);
  minority = 0;
  for (size_t i = 0; i < N; i++) minority += out[i].label == 1.0;
  assert_in_range(minority, N * 5 / 100, N * 15 / 100);
  events_free(out, N);
  eddy_replay_destroy(r);

  /* A changed reservoir size restarts it. */
  r = open_res(dir, 20, 200);
  memset(&c, 0, sizeof c);
  eddy_replay_reservoir_counts(r, collect_res, &c);
  assert_int_equal(c.seen[0], 0);
  append_skewed(r, 2000, 100);
  eddy_replay_reservoir_counts(r, collect_res, &c);
  assert_int_equal(c.kept[0], 20);
  assert_int_equal(c.seen[0], 90);
  eddy_replay_destroy(r);
  eddy_test_rmdir(dir);
}

static bool accept_early(void *ctx, uint64_t seq, const eddy_event_t *ev) {
  (void)ev;
  return seq < *(const uint64_t *)ctx && seq % 3 != 0;
}

static bool accept_class0(void *ctx, uint64_t seq, const eddy_event_t *ev) {
  (void)ctx;
  (void)seq;
  return ev->label == 0.0;
}

/* Balanced draws through a filter (the trainer's: trained, not held out, not skipped): every
 * event returned passes it, its seq is the one it was stored under, refused draws are redrawn
 * (n events come back), and a class whose draws are all refused is left out. */
static void test_reservoir_filter(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  eddy_replay_t *r = open_res(dir, 300, 5000);
  for (int k = 0; k < 20; k++) append_skewed(r, (uint64_t)k * 100, 100);
  enum { N = 500 };
  eddy_event_t *out = events_new(N);
  uint64_t seqs[N], rng = 5, below = 1200;
  size_t got = 0;
  assert_int_equal(eddy_replay_sample_where(r, EDDY_SAMPLE_BALANCED, &rng, N, out, seqs, accept_early, &below,
                                            &got),
                   EDDY_OK);
  assert_int_equal(got, N);
  size_t minority = 0;
  for (size_t i = 0; i < N; i++) {
    assert_true(seqs[i] < below && seqs[i] % 3 != 0);
    assert_int_equal(event_num(&out[i]), seqs[i]); /* seq = event number here */
    minority += out[i].label == 1.0;
  }
  assert_in_range(minority, N * 30 / 100, N * 70 / 100);
  assert_int_equal(eddy_replay_sample_where(r, EDDY_SAMPLE_BALANCED, &rng, N, out, NULL, accept_class0, NULL, &got),
                   EDDY_OK);
  assert_int_equal(got, N);
  for (size_t i = 0; i < N; i++) assert_true(out[i].label == 0.0);
  /* Nothing acceptable: nothing returned, and the call ends. */
  below = 0;
  assert_int_equal(eddy_replay_sample_where(r, EDDY_SAMPLE_BALANCED, &rng, N, out, seqs, accept_early, &below,
                                            &got),
                   EDDY_OK);
  assert_int_equal(got, 0);
  events_free(out, N);
  eddy_replay_destroy(r);
  eddy_test_rmdir(dir);
}

/* The reservoir state (RNG, per-class counts) persists: a run interrupted by a reopen ends with
 * exactly the same reservoir as an uninterrupted one; and batching does not change it (a slot
 * replaced twice within one batch keeps the later event, as one event per batch would). */
static void test_reservoir_persists(void **state) {
  (void)state;
  char *a = eddy_test_tmpdir(), *b = eddy_test_tmpdir(), *c = eddy_test_tmpdir();
  eddy_replay_t *ra = open_res(a, 30, 0), *rb = open_res(b, 30, 0), *rc = open_res(c, 30, 0);
  for (int k = 0; k < 10; k++) {
    append_skewed(ra, (uint64_t)k * 60, 60);
    append_skewed(rb, (uint64_t)k * 60, 60);
    if (k == 4) {
      eddy_replay_destroy(ra);
      ra = open_res(a, 30, 0);
    }
  }
  for (int k = 0; k < 600; k++) append_skewed(rc, (uint64_t)k, 1);
  enum { N = 300 };
  eddy_event_t *x = events_new(N), *y = events_new(N), *z = events_new(N);
  uint64_t s1 = 99, s2 = 99, s3 = 99;
  size_t g1, g2, g3;
  assert_int_equal(eddy_replay_sample(ra, EDDY_SAMPLE_BALANCED, &s1, N, x, &g1), EDDY_OK);
  assert_int_equal(eddy_replay_sample(rb, EDDY_SAMPLE_BALANCED, &s2, N, y, &g2), EDDY_OK);
  assert_int_equal(eddy_replay_sample(rc, EDDY_SAMPLE_BALANCED, &s3, N, z, &g3), EDDY_OK);
  assert_int_equal(g1, N);
  assert_int_equal(g2, N);
  assert_int_equal(g3, N);
  assert_int_equal(s1, s2);
  size_t late = 0;
  for (size_t i = 0; i < N; i++) {
    assert_same_event(&x[i], &y[i]);
    assert_same_event(&x[i], &z[i]);
    late += event_num(&x[i]) >= 300;
  }
  assert_true(late > N / 10); /* replacements happened, so the comparison means something */
  events_free(x, N);
  events_free(y, N);
  events_free(z, N);
  eddy_replay_destroy(ra);
  eddy_replay_destroy(rb);
  eddy_replay_destroy(rc);
  eddy_test_rmdir(a);
  eddy_test_rmdir(b);
  eddy_test_rmdir(c);
}

static double mean_num(const eddy_event_t *ev, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += (double)event_num(&ev[i]);
  return s / (double)n;
}

static void test_sampling(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  eddy_replay_t *r = open_buf(dir, 1000, 0, true);
  for (int k = 0; k < 12; k++) append_range(r, (uint64_t)k * 100, 100, NULL); /* window 200..1199 */
  enum { N = 4000 };
  eddy_event_t *u = events_new(N), *rec = events_new(N), *again = events_new(N);
  uint64_t s = 12345;
  size_t got = 0;
  assert_int_equal(eddy_replay_sample(r, EDDY_SAMPLE_UNIFORM, &s, N, u, &got), EDDY_OK);
  assert_int_equal(got, N);
  assert_int_not_equal(s, 12345); /* advanced */
  uint64_t lo = UINT64_MAX, hi = 0;
  for (size_t i = 0; i < N; i++) {
    uint64_t num = event_num(&u[i]);
    lo = num < lo ? num : lo;
    hi = num > hi ? num : hi;
  }
  assert_true(lo >= 200 && lo < 220);
  assert_true(hi <= 1199 && hi > 1180);
  double mu = mean_num(u, N);
  assert_true(mu > 680 && mu < 720); /* expected 699.5, sd of the mean ~4.6 */

  s = 12345;
  assert_int_equal(eddy_replay_sample(r, EDDY_SAMPLE_RECENT, &s, N, rec, &got), EDDY_OK);
  assert_int_equal(got, N);
  double mr = mean_num(rec, N);
  assert_true(mr > mu + 100); /* triangular: expected 200 + 2/3 * 1000 = 866 */
  assert_true(mr > 840 && mr < 890);

  /* Same rng_state, same draws; another state, other draws. */
  s = 12345;
  assert_int_equal(eddy_replay_sample(r, EDDY_SAMPLE_UNIFORM, &s, N, again, &got), EDDY_OK);
  for (size_t i = 0; i < N; i++) assert_same_event(&u[i], &again[i]);
  s = 54321;
  assert_int_equal(eddy_replay_sample(r, EDDY_SAMPLE_UNIFORM, &s, N, again, &got), EDDY_OK);
  size_t same = 0;
  for (size_t i = 0; i < N; i++) same += event_num(&u[i]) == event_num(&again[i]);
  assert_true(same < N / 20);

  /* No reservoir configured: balanced yields nothing; an empty buffer yields nothing. */
  assert_int_equal(eddy_replay_sample(r, EDDY_SAMPLE_BALANCED, &s, 10, again, &got), EDDY_OK);
  assert_int_equal(got, 0);
  assert_int_equal(eddy_replay_sample(r, (eddy_sample_t)7, &s, 10, again, &got), EDDY_ERR_INVALID_ARG);
  eddy_replay_destroy(r);
  eddy_test_rmdir(dir);
  dir = eddy_test_tmpdir();
  r = open_buf(dir, 0, 0, true);
  assert_int_equal(eddy_replay_sample(r, EDDY_SAMPLE_UNIFORM, &s, 10, again, &got), EDDY_OK);
  assert_int_equal(got, 0);
  assert_int_equal(eddy_replay_sample(r, EDDY_SAMPLE_RECENT, &s, 10, again, &got), EDDY_OK);
  assert_int_equal(got, 0);
  eddy_replay_destroy(r);
  events_free(u, N);
  events_free(rec, N);
  events_free(again, N);
  eddy_test_rmdir(dir);
}

/* A reader racing the writer: batches of 7 events (with eviction to 70 in the same batch) must
 * appear whole, never in part. */
enum { RACE_BATCH = 7, RACE_BATCHES = 300, RACE_CAP = 70 };

typedef struct {
  eddy_replay_t *r;
  atomic_int *done;
  int bad;
  size_t reads, nonempty;
} race_t;

static void *race_reader(void *arg) {
  race_t *rc = arg;
  eddy_event_t *out = events_new(RACE_CAP + RACE_BATCH);
  uint64_t seqs[RACE_CAP + RACE_BATCH];
  uint64_t rng = 5;
  while (!atomic_load(rc->done) || rc->reads < 10) {
    size_t got = 0;
    if (eddy_replay_read(rc->r, 0, RACE_CAP + RACE_BATCH, out, seqs, &got) != EDDY_OK) rc->bad++;
    rc->reads++;
    if (got) rc->nonempty++;
    if (got % RACE_BATCH || got > RACE_CAP || (got && seqs[0] % RACE_BATCH)) rc->bad++;
    for (size_t i = 0; i < got; i++)
      if (event_num(&out[i]) != seqs[i] || (i && seqs[i] != seqs[i - 1] + 1)) rc->bad++;
    eddy_replay_stats_t st = eddy_replay_stats(rc->r);
    if (st.events > RACE_CAP || st.events % RACE_BATCH) rc->bad++;
    if (eddy_replay_sample(rc->r, EDDY_SAMPLE_RECENT, &rng, 3, out, &got) != EDDY_OK) rc->bad++;
  }
  events_free(out, RACE_CAP + RACE_BATCH);
  return NULL;
}

static void test_concurrent_reader(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  eddy_replay_t *r = open_buf(dir, RACE_CAP, 0, true);
  atomic_int done = 0;
  race_t rc[2] = {{.r = r, .done = &done}, {.r = r, .done = &done}};
  pthread_t th[2];
  append_range(r, 0, RACE_BATCH, NULL);
  for (int t = 0; t < 2; t++) assert_int_equal(pthread_create(&th[t], NULL, race_reader, &rc[t]), 0);
  for (int k = 1; k < RACE_BATCHES; k++) append_range(r, (uint64_t)k * RACE_BATCH, RACE_BATCH, NULL);
  atomic_store(&done, 1);
  for (int t = 0; t < 2; t++) {
    pthread_join(th[t], NULL);
    fprintf(stderr, "concurrent reader %d: %zu reads (%zu non-empty), %d inconsistencies\n", t, rc[t].reads,
            rc[t].nonempty, rc[t].bad);
    assert_int_equal(rc[t].bad, 0);
    assert_true(rc[t].nonempty > 0);
  }
  eddy_replay_stats_t st = eddy_replay_stats(r);
  assert_int_equal(st.events, RACE_CAP);
  assert_int_equal(st.next_seq, RACE_BATCH * RACE_BATCHES);
  eddy_replay_destroy(r);
  eddy_test_rmdir(dir);
}

typedef struct {
  eddy_dead_letter_t dl[8];
  char topic[8][64], msg[8][128];
  uint8_t raw[8][64];
  size_t n;
} dl_seen_t;

static void collect_dl(void *ctx, const eddy_dead_letter_t *dl) {
  dl_seen_t *s = ctx;
  if (s->n >= 8) return;
  size_t i = s->n++;
  s->dl[i] = *dl;
  snprintf(s->topic[i], 64, "%s", dl->topic);
  snprintf(s->msg[i], 128, "%s", dl->message);
  memcpy(s->raw[i], dl->raw, dl->raw_len < 64 ? dl->raw_len : 64);
  s->dl[i].topic = s->topic[i];
  s->dl[i].message = s->msg[i];
  s->dl[i].raw = s->raw[i];
}

static void test_dead_letters(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  eddy_replay_opts_t o = {.path = dir, .evict = true, .dlq_raw_cap = 16};
  char err[256];
  eddy_replay_t *r = eddy_replay_new(&o, err, sizeof err);
  assert_non_null(r);
  const char *long_raw = "{\"label\": 12, \"dense\": [1, 2, 3, 4, 5, 6, 7, 8]}";
  eddy_dead_letter_t dls[] = {
      {"clicks", 1, 100, 1732780000000, EDDY_ERR_EVENT_NOT_JSON, "not valid JSON (error near byte 0)", "oops", 4},
      {"clicks", 0, 7, 1732780000001, EDDY_ERR_EVENT_LABEL_RANGE, "label 12 out of range 0..9", long_raw,
       strlen(long_raw)},
      {"clicks", 1, 101, 1732780000002, EDDY_ERR_EVENT_NOT_JSON, "event is empty", NULL, 0},
  };
  batch_t b;
  batch_make(&b, 0, 5, NULL);
  eddy_replay_offset_t off = {"clicks", 1, 102};
  assert_int_equal(eddy_replay_append(r, b.ptr, 5, dls, 2, &off, 1, NULL, err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_replay_append(r, NULL, 0, dls + 2, 1, NULL, 0, NULL, err, sizeof err), EDDY_OK);
  eddy_replay_destroy(r);

  o.read_only = true; /* everything is there after a reopen, read-only too */
  r = eddy_replay_new(&o, err, sizeof err);
  assert_non_null(r);
  eddy_replay_stats_t st = eddy_replay_stats(r);
  assert_int_equal(st.dead_letters, 3);
  assert_int_equal(st.dead_letters_total, 3);
  assert_int_equal(st.events, 5);
  dl_seen_t seen = {0};
  uint64_t by_reason[EDDY_ERR__COUNT];
  eddy_replay_dead_letters(r, 2, collect_dl, &seen, by_reason);
  assert_int_equal(seen.n, 2); /* max honoured, newest first */
  assert_int_equal(seen.dl[0].offset, 101);
  assert_string_equal(seen.dl[0].message, "event is empty");
  assert_int_equal(seen.dl[0].raw_len, 0);
  assert_int_equal(seen.dl[1].offset, 7);
  assert_int_equal(seen.dl[1].partition, 0);
  assert_int_equal(seen.dl[1].ts_ms, 1732780000001);
  assert_int_equal(seen.dl[1].reason, EDDY_ERR_EVENT_LABEL_RANGE);
  assert_string_equal(seen.dl[1].topic, "clicks");
  assert_string_equal(seen.dl[1].message, "label 12 out of range 0..9");
  assert_int_equal(seen.dl[1].raw_len, 16); /* capped */
  assert_memory_equal(seen.dl[1].raw, long_raw, 16);
  assert_int_equal(by_reason[EDDY_ERR_EVENT_NOT_JSON], 2);
  assert_int_equal(by_reason[EDDY_ERR_EVENT_LABEL_RANGE], 1);
  assert_int_equal(by_reason[EDDY_ERR_EVENT_DENSE_LEN], 0);
  int64_t next;
  assert_int_equal(eddy_replay_offset(r, "clicks", 1, &next), EDDY_OK);
  assert_int_equal(next, 102);
  batch_free(&b);
  eddy_replay_destroy(r);
  eddy_test_rmdir(dir);
}

/* Beyond EDDY_REPLAY_DLQ_KEEP dead letters the oldest go. */
static void test_dead_letter_cap(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  eddy_replay_t *r = open_buf(dir, 0, 0, true);
  size_t n = EDDY_REPLAY_DLQ_KEEP / 2 + 10;
  eddy_dead_letter_t *dls = calloc(n, sizeof *dls);
  for (size_t i = 0; i < n; i++)
    dls[i] = (eddy_dead_letter_t){"t", 0, (int64_t)i, 0, EDDY_ERR_EVENT_TYPE, "m", NULL, 0};
  char err[256];
  for (int k = 0; k < 2; k++)
    assert_int_equal(eddy_replay_append(r, NULL, 0, dls, n, NULL, 0, NULL, err, sizeof err), EDDY_OK);
  eddy_replay_stats_t st = eddy_replay_stats(r);
  assert_int_equal(st.dead_letters, EDDY_REPLAY_DLQ_KEEP);
  assert_int_equal(st.dead_letters_total, 2 * n);
  uint64_t by_reason[EDDY_ERR__COUNT];
  dl_seen_t seen = {0};
  eddy_replay_dead_letters(r, 1, collect_dl, &seen, by_reason);
  assert_int_equal(by_reason[EDDY_ERR_EVENT_TYPE], EDDY_REPLAY_DLQ_KEEP);
  assert_int_equal(seen.dl[0].offset, (int64_t)n - 1);
  free(dls);
  eddy_replay_destroy(r);
  eddy_test_rmdir(dir);
}

typedef struct {
  int64_t label[16];
  uint64_t count[16];
  size_t n;
} labels_t;

static void collect_label(void *ctx, int64_t label, uint64_t count) {
  labels_t *l = ctx;
  if (l->n < 16) {
    l->label[l->n] = label;
    l->count[l->n++] = count;
  }
}

/* A writer creates missing parent folders; a reader never creates anything. */
static void test_open_creates_parents(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  char path[4200], err[256];
  snprintf(path, sizeof path, "%s/a/b/buffer", dir);
  eddy_replay_opts_t ro = {.path = path, .read_only = true};
  assert_null(eddy_replay_new(&ro, err, sizeof err));
  struct stat st;
  assert_int_not_equal(stat(path, &st), 0);
  eddy_replay_opts_t o = {.path = path, .evict = true};
  eddy_replay_t *r = eddy_replay_new(&o, err, sizeof err);
  if (!r) fprintf(stderr, "open: %s\n", err);
  assert_non_null(r);
  assert_int_equal(stat(path, &st), 0);
  assert_true(S_ISDIR(st.st_mode));
  eddy_replay_destroy(r);
  eddy_test_rmdir(dir);
}

static void test_meta_labels_read_only(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  eddy_replay_t *r = open_buf(dir, 0, 0, true);
  uint64_t v = 0;
  assert_int_equal(eddy_replay_meta_get(r, "trained", &v), EDDY_ERR_NOT_FOUND);
  assert_int_equal(eddy_replay_meta_put(r, "trained", 1234567890123ull), EDDY_OK);
  /* Several cursors in one batch; a bad key fails the whole batch before anything is written. */
  char why[256];
  const eddy_replay_meta_t many[] = {{"a", 1}, {"b", UINT64_MAX}, {"trained", 1234567890123ull}};
  assert_int_equal(eddy_replay_meta_put_batch(r, many, 3, why, sizeof why), EDDY_OK);
  assert_int_equal(eddy_replay_meta_get(r, "b", &v), EDDY_OK);
  assert_int_equal(v, UINT64_MAX);
  char long_key[260];
  memset(long_key, 'k', sizeof long_key - 1);
  long_key[sizeof long_key - 1] = '\0';
  const eddy_replay_meta_t bad[] = {{"a", 7}, {long_key, 8}};
  assert_int_equal(eddy_replay_meta_put_batch(r, bad, 2, why, sizeof why), EDDY_ERR_INVALID_ARG);
  assert_non_null(strstr(why, "key 1"));
  assert_int_equal(eddy_replay_meta_get(r, "a", &v), EDDY_OK);
  assert_int_equal(v, 1);
  append_range(r, 0, 95, NULL); /* labels i % 10: 10 of 0..4, 9 of 5..9 */

  /* A read-only open while the writer is open; then the writer goes on. */
  eddy_replay_opts_t ro = {.path = dir, .read_only = true};
  char err[256];
  eddy_replay_t *rd = eddy_replay_new(&ro, err, sizeof err);
  if (!rd) fprintf(stderr, "read-only open: %s\n", err);
  assert_non_null(rd);
  assert_int_equal(eddy_replay_stats(rd).events, 95);
  assert_int_equal(eddy_replay_meta_get(rd, "trained", &v), EDDY_OK);
  assert_int_equal(v, 1234567890123ull);
  labels_t l = {0};
  eddy_replay_label_counts(rd, collect_label, &l);
  assert_int_equal(l.n, 10);
  assert_int_equal(l.label[0], 0);
  assert_int_equal(l.count[0], 10);
  assert_int_equal(l.label[9], 9);
  assert_int_equal(l.count[9], 9);
  batch_t b;
  batch_make(&b, 0, 1, NULL);
  assert_int_equal(eddy_replay_append(rd, b.ptr, 1, NULL, 0, NULL, 0, NULL, err, sizeof err), EDDY_ERR_STATE);
  assert_int_equal(eddy_replay_meta_put(rd, "trained", 1), EDDY_ERR_STATE);
  assert_int_equal(eddy_replay_meta_put_batch(rd, many, 3, why, sizeof why), EDDY_ERR_STATE);
  append_range(r, 95, 5, NULL);
  assert_int_equal(eddy_replay_stats(r).events, 100);
  eddy_replay_destroy(rd);
  batch_free(&b);
  eddy_replay_destroy(r);

  /* Read-only on a missing folder fails and creates nothing. */
  char missing[600];
  snprintf(missing, sizeof missing, "%s/nope", dir);
  ro.path = missing;
  err[0] = 0;
  assert_null(eddy_replay_new(&ro, err, sizeof err));
  assert_non_null(strstr(err, missing));
  struct stat sb;
  assert_int_not_equal(stat(missing, &sb), 0);
  /* Read-only on a folder that is not a buffer. */
  mkdir(missing, 0755);
  assert_null(eddy_replay_new(&ro, err, sizeof err));
  eddy_test_rmdir(dir);
}

/* A full disk: the write fails with EDDY_ERR_IO naming the cause, nothing is written, and once
 * space is back appends work again. Needs a small tmpfs (root); skipped otherwise. */
typedef struct {
  char *dir;
  bool mounted;
} tmpfs_t;

static int tmpfs_setup(void **state) {
  tmpfs_t *t = calloc(1, sizeof *t);
  t->dir = eddy_test_tmpdir();
  t->mounted = mount("tmpfs", t->dir, "tmpfs", 0, "size=16m") == 0;
  *state = t;
  return 0;
}

static int tmpfs_teardown(void **state) {
  tmpfs_t *t = *state;
  if (t->mounted) umount(t->dir);
  eddy_test_rmdir(t->dir);
  free(t);
  return 0;
}

static void test_disk_full(void **state) {
  tmpfs_t *t = *state;
  if (!t->mounted) {
    fprintf(stderr, "disk full test skipped: cannot mount a tmpfs (needs root)\n");
    skip();
  }
  const char *dir = t->dir;
  char db[600], filler[600];
  snprintf(db, sizeof db, "%s/db", dir);
  snprintf(filler, sizeof filler, "%s/filler", dir);
  eddy_replay_opts_t o = {.path = db, .evict = true};
  char err[512] = "";
  eddy_replay_t *r = eddy_replay_new(&o, err, sizeof err);
  assert_non_null(r);
  append_range(r, 0, 10, NULL);
  /* Fill the file system. */
  FILE *f = fopen(filler, "wb");
  assert_non_null(f);
  static char block[4096];
  while (fwrite(block, 1, sizeof block, f) == sizeof block && fflush(f) == 0) {
  }
  fclose(f);
  batch_t b;
  batch_make(&b, 10, 500, NULL);
  eddy_err_t e = EDDY_OK;
  for (int k = 0; k < 50 && !e; k++)
    e = eddy_replay_append(r, b.ptr, 500, NULL, 0, NULL, 0, NULL, err, sizeof err);
  fprintf(stderr, "disk full: %s (%s)\n", eddy_err_name(e), err);
  assert_int_equal(e, EDDY_ERR_IO);
  assert_non_null(strstr(err, "space"));
  eddy_replay_stats_t st = eddy_replay_stats(r);
  assert_int_equal(st.next_seq % 500, 10);
  /* Readers still work while the disk is full. */
  size_t count;
  uint64_t first;
  assert_int_equal(stored_bytes(r, &count, &first), st.bytes);
  assert_int_equal(count, st.events);
  /* Still full: the next append fails again (its reopen may fail too), and nothing changes. */
  e = eddy_replay_append(r, b.ptr, 500, NULL, 0, NULL, 0, NULL, err, sizeof err);
  assert_int_equal(e, EDDY_ERR_IO);
  assert_non_null(strstr(err, "disk still full"));
  assert_int_equal(eddy_replay_stats(r).next_seq, st.next_seq);
  /* Space is back: the next append reopens the database and goes through. */
  unlink(filler);
  e = eddy_replay_append(r, b.ptr, 500, NULL, 0, NULL, 0, NULL, err, sizeof err);
  if (e) fprintf(stderr, "after freeing space: %s\n", err);
  assert_int_equal(e, EDDY_OK);
  assert_int_equal(eddy_replay_stats(r).next_seq, st.next_seq + 500);
  assert_int_equal(stored_bytes(r, &count, &first), eddy_replay_stats(r).bytes);
  st = eddy_replay_stats(r);
  eddy_replay_destroy(r);
  r = eddy_replay_new(&o, err, sizeof err);
  assert_non_null(r);
  eddy_replay_stats_t st2 = eddy_replay_stats(r);
  assert_memory_equal(&st, &st2, sizeof st);
  assert_int_equal(stored_bytes(r, &count, &first), st2.bytes);
  batch_free(&b);
  eddy_replay_destroy(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_offsets_atomic),
      cmocka_unit_test(test_evict_by_events),
      cmocka_unit_test(test_evict_by_bytes),
      cmocka_unit_test(test_no_evict_refuses),
      cmocka_unit_test(test_reservoir_balance),
      cmocka_unit_test(test_reservoir_filter),
      cmocka_unit_test(test_reservoir_persists),
      cmocka_unit_test(test_sampling),
      cmocka_unit_test(test_concurrent_reader),
      cmocka_unit_test(test_dead_letters),
      cmocka_unit_test(test_dead_letter_cap),
      cmocka_unit_test(test_open_creates_parents),
      cmocka_unit_test(test_meta_labels_read_only),
      cmocka_unit_test_setup_teardown(test_disk_full, tmpfs_setup, tmpfs_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
