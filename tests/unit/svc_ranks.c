/* Trainer ranks without MPI: two trainers in one process, joined by a collective made of threads
 * (testutil), each fed its own partition through its own buffer (no Kafka: events appended with
 * their Kafka origin). They train in rounds to every event, rank 0 publishes a version whose
 * manifest records both ranks (cursor, examples, positions, equal weight checksums) and the status
 * shows both; a stop on rank 0 stops rank 1 too. Then one trainer restores that version: its
 * buffer is not one of the version's, so it takes both partitions over, its stored Kafka positions
 * are set to the version's, and events that arrive from there are trained once more each. A
 * retrain rollback with two ranks: rank 0 records it in its buffer, both ranks adopt the version's
 * state and positions at the next round and train every event once more, to the same weights as
 * before; a skip range is refused. The full path over MPI and Kafka: tests/e2e/train_ranks*.sh. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "buffer/replay.h"
#include "config/config.h"
#include "snapshot/manifest.h"
#include "snapshot/store.h"
#include "testutil.h"
#include "train/trainer.h"

#define N 96 /* events per partition */

static void load_config(eddy_config_t *cfg, const char *dir) {
  const char *text =
      "[model]\nname = toy\nhash_bits = 6\nembed_dim = 3\ndense_dim = 4\nhidden = 8\nhead = softmax\nclasses = 3\n"
      "[train]\nbatch_size = 8\noptimizer = adam\nlr = 0.02\nholdout_fraction = 0\n"
      "[replay]\nratio = 0\n"
      "[stream]\ntopic = events\n"
      "[snapshot]\nevery_steps = 4\nevery_seconds = 0\nkeep = 1000\n"
      "[buffer]\nsync = false\n";
  char sets[2][512];
  const char *ptrs[2] = {sets[0], sets[1]};
  snprintf(sets[0], sizeof sets[0], "buffer.path=%s/buf", dir);
  snprintf(sets[1], sizeof sets[1], "snapshot.store=%s/store", dir);
  char err[1024];
  eddy_err_t e = eddy_config_load_string(cfg, "toy.ini", text, strlen(text), ptrs, 2, err, sizeof err);
  if (e) print_error("config: %s\n", err);
  assert_int_equal(e, EDDY_OK);
}

/* Appends events [from, to) of partition p, at Kafka offsets from.., with the stored offset. */
static eddy_err_t append(eddy_trainer_t *t, int32_t p, int from, int to) {
  eddy_replay_t *r = eddy_trainer_buffer(t);
  float dense[4];
  uint32_t idx[1];
  float val[1] = {1};
  for (int o = from; o < to; o++) {
    eddy_event_t ev;
    eddy_event_init(&ev);
    snprintf(ev.id, sizeof ev.id, "p%d-%d", (int)p, o);
    for (int k = 0; k < 4; k++) dense[k] = (float)((o * 7 + k * 3 + p) % 11) / 5.0f - 1.0f;
    idx[0] = (uint32_t)((o + 13 * p) % 64);
    ev.dense = dense;
    ev.n_dense = 4;
    ev.sparse_idx = idx;
    ev.sparse_val = val;
    ev.n_sparse = 1;
    ev.label = (o + p) % 3;
    ev.has_origin = true;
    ev.partition = p;
    ev.offset = o;
    const eddy_event_t *ptr = &ev;
    eddy_replay_offset_t off = {.topic = "events", .partition = p, .next_offset = o + 1};
    char err[256];
    eddy_err_t e = eddy_replay_append(r, &ptr, 1, NULL, 0, &off, 1, NULL, err, sizeof err);
    if (e) return e;
  }
  return EDDY_OK;
}

static double status_num(eddy_trainer_t *t, const char *key) {
  char *text = eddy_trainer_status_json(t);
  cJSON *o = cJSON_Parse(text);
  free(text);
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  double d = cJSON_IsNumber(v) ? v->valuedouble : -1;
  cJSON_Delete(o);
  return d;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

typedef struct {
  eddy_test_rank_t *rank;
  const eddy_config_t *cfg;
  bool rollback;       /* rank 0, once everything is trained: a retrain rollback to v1, then again */
  eddy_err_t err;
  char msg[1024];
  uint64_t version;    /* rank 0: the version it published after training everything */
  char *status;        /* rank 0: the status JSON then */
  bool stopped;        /* rank 1: saw the ranks stop together */
  eddy_err_t skip_err; /* rank 0: a retrain rollback with a skip range */
  double examples_rb;  /* rank 0: the examples right after the rollback (v1's) */
  uint64_t rb_meta;    /* rank 0: its buffer's record of the rollback (rollback_version) */
  uint64_t version2;   /* rank 0: the version published after training everything again */
} rank_work_t;

/* Rank 0 after training everything: a retrain rollback to v1 (a skip range refused first), then
 * every event trained again and a version published. */
static eddy_err_t rollback_and_retrain(eddy_trainer_t *t, rank_work_t *w) {
  w->skip_err = eddy_trainer_rollback(t, 1, true, 3, 9, w->msg, sizeof w->msg);
  eddy_err_t err = eddy_trainer_rollback(t, 1, true, 1, 0, w->msg, sizeof w->msg);
  if (err) return err;
  w->examples_rb = status_num(t, "examples");
  if ((err = eddy_replay_meta_get(eddy_trainer_buffer(t), "rollback_version", &w->rb_meta))) return err;
  for (int i = 0; i < 3000 && status_num(t, "examples") < 2 * N; i++) sleep_ms(10);
  return eddy_trainer_snapshot(t, 30000, &w->version2, w->msg, sizeof w->msg);
}

static void *rank_main(void *arg) {
  rank_work_t *w = arg;
  const int r = w->rank->c.rank;
  eddy_trainer_opts_t o = {.no_ingest = true, .ranks = &w->rank->c};
  eddy_trainer_t *t = eddy_trainer_new(w->cfg, &o, NULL, w->msg, sizeof w->msg);
  if (!t) {
    w->err = EDDY_ERR_STATE;
    return NULL; /* the other rank stays blocked: the test fails on its timeout */
  }
  if ((w->err = append(t, r, 0, N)) || (w->err = eddy_trainer_start(t, w->msg, sizeof w->msg))) goto out;
  if (r == 0) {
    for (int i = 0; i < 3000 && status_num(t, "examples") < 2 * N; i++) sleep_ms(10);
    w->err = eddy_trainer_snapshot(t, 30000, &w->version, w->msg, sizeof w->msg);
    w->status = eddy_trainer_status_json(t);
    if (!w->err && w->rollback) w->err = rollback_and_retrain(t, w);
  } else {
    for (int i = 0; i < 6000 && !eddy_trainer_stopped(t); i++) sleep_ms(10);
    w->stopped = eddy_trainer_stopped(t);
  }
out:
  eddy_trainer_destroy(t); /* rank 0: stops both ranks at the next round */
  return NULL;
}

/* Two ranks as threads, each with its own trainer, to the end (rank 0 rolls back when asked);
 * asserts that both succeeded and stopped together. */
static void run_two_ranks(const eddy_config_t *cfg, bool rollback, rank_work_t w[2]) {
  eddy_test_ranks_t sh;
  eddy_test_rank_t ranks[2];
  eddy_test_ranks_init(&sh, ranks, 2);
  pthread_t th[2];
  for (int r = 0; r < 2; r++) {
    memset(&w[r], 0, sizeof w[r]);
    w[r].rank = &ranks[r];
    w[r].cfg = cfg;
    w[r].rollback = rollback && r == 0;
    pthread_create(&th[r], NULL, rank_main, &w[r]);
  }
  for (int r = 0; r < 2; r++) pthread_join(th[r], NULL);
  eddy_test_ranks_free(&sh);
  for (int r = 0; r < 2; r++) {
    if (w[r].err) print_error("rank %d: %s\n", r, w[r].msg);
    assert_int_equal(w[r].err, EDDY_OK);
  }
  assert_true(w[1].stopped);
  assert_true(w[0].version >= 1);
}

static void test_two_ranks_then_one(void **state) {
  char *dir = eddy_test_tmpdir();
  eddy_config_t cfg;
  load_config(&cfg, dir);
  rank_work_t w[2];
  run_two_ranks(&cfg, false, w);

  /* the status while both ran: each rank's share */
  cJSON *s = cJSON_Parse(w[0].status);
  assert_int_equal(cJSON_GetObjectItem(s, "examples")->valuedouble, 2 * N);
  const cJSON *rk = cJSON_GetObjectItem(s, "ranks");
  assert_int_equal(cJSON_GetArraySize(rk), 2);
  for (int r = 0; r < 2; r++) {
    const cJSON *e = cJSON_GetArrayItem(rk, r);
    assert_int_equal(cJSON_GetObjectItem(e, "examples")->valuedouble, N);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(e, "buffer"), "untrained")->valuedouble, 0);
  }
  assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(s, "rank"), "ranks")->valuedouble, 2);
  cJSON_Delete(s);
  free(w[0].status);

  /* the version: both ranks' positions and equal weights */
  char err[1024];
  eddy_store_t *store = eddy_store_new(cfg.snapshot_store, cfg.model_name, EDDY_STORE_READONLY, err, sizeof err);
  assert_non_null(store);
  eddy_manifest_t m;
  assert_int_equal(eddy_store_load_manifest(store, w[0].version, &m, err, sizeof err), EDDY_OK);
  eddy_store_destroy(store);
  assert_int_equal(m.examples, 2 * N);
  assert_int_equal(m.n_ranks, 2);
  for (uint32_t r = 0; r < 2; r++) {
    const eddy_manifest_rank_t *e = &m.ranks[r];
    assert_int_equal(e->rank, r);
    assert_int_equal(e->cursor, N);
    assert_int_equal(e->examples, N);
    assert_int_equal(strlen(e->weights_xxh3), 16);
    assert_string_equal(e->weights_xxh3, m.ranks[0].weights_xxh3);
    assert_int_equal(e->n_offsets, 1);
    assert_int_equal(e->offsets[0].partition, (int32_t)r);
    assert_int_equal(e->offsets[0].next_offset, N);
  }
  assert_int_equal(m.n_offsets, 2); /* kafka_offsets: both ranks' partitions */
  eddy_manifest_clear(&m);

  /* One rank now (a new buffer, buffer.path itself): it takes both partitions over at the
   * version's positions and trains only what comes after them. */
  eddy_trainer_opts_t o = {.no_ingest = true};
  eddy_trainer_t *t = eddy_trainer_new(&cfg, &o, NULL, err, sizeof err);
  if (!t) print_error("one rank: %s\n", err);
  assert_non_null(t);
  for (int32_t p = 0; p < 2; p++) {
    int64_t next = -1;
    assert_int_equal(eddy_replay_offset(eddy_trainer_buffer(t), "events", p, &next), EDDY_OK);
    assert_int_equal(next, N); /* where ingest would read partition p again */
  }
  assert_int_equal(status_num(t, "examples"), 2 * N);
  assert_int_equal(eddy_trainer_start(t, err, sizeof err), EDDY_OK);
  assert_int_equal(append(t, 0, N, N + 20), EDDY_OK);
  assert_int_equal(append(t, 1, N, N + 30), EDDY_OK);
  for (int i = 0; i < 3000 && status_num(t, "examples") < 2 * N + 50; i++) sleep_ms(10);
  sleep_ms(200); /* anything more would be trained twice */
  assert_int_equal(status_num(t, "examples"), 2 * N + 50);
  uint64_t v = 0;
  assert_int_equal(eddy_trainer_snapshot(t, 30000, &v, err, sizeof err), EDDY_OK);
  eddy_trainer_destroy(t);
  store = eddy_store_new(cfg.snapshot_store, cfg.model_name, EDDY_STORE_READONLY, err, sizeof err);
  assert_int_equal(eddy_store_load_manifest(store, v, &m, err, sizeof err), EDDY_OK);
  eddy_store_destroy(store);
  assert_int_equal(m.n_ranks, 1);
  assert_int_equal(m.ranks[0].n_offsets, 2);
  for (size_t i = 0; i < 2; i++)
    assert_int_equal(m.ranks[0].offsets[i].next_offset, N + (m.ranks[0].offsets[i].partition ? 30 : 20));
  eddy_manifest_clear(&m);
  eddy_config_free(&cfg);
  eddy_test_rmdir(dir);
}

static void load_manifest(const eddy_config_t *cfg, uint64_t v, eddy_manifest_t *m) {
  char err[1024];
  eddy_store_t *store = eddy_store_new(cfg->snapshot_store, cfg->model_name, EDDY_STORE_READONLY, err, sizeof err);
  assert_non_null(store);
  eddy_err_t e = eddy_store_load_manifest(store, v, m, err, sizeof err);
  if (e) print_error("v%llu: %s\n", (unsigned long long)v, err);
  assert_int_equal(e, EDDY_OK);
  eddy_store_destroy(store);
}

static void test_retrain_rollback(void **state) {
  char *dir = eddy_test_tmpdir();
  eddy_config_t cfg;
  load_config(&cfg, dir);
  rank_work_t w[2];
  run_two_ranks(&cfg, true, w);
  free(w[0].status);
  assert_int_equal(w[0].skip_err, EDDY_ERR_INVALID_ARG); /* a skip range names seqs of one buffer */
  assert_int_equal(w[0].rb_meta, 1);                     /* recorded in rank 0's buffer */
  eddy_manifest_t v1, before, after;
  load_manifest(&cfg, 1, &v1);
  load_manifest(&cfg, w[0].version, &before);
  load_manifest(&cfg, w[0].version2, &after);
  assert_true(v1.examples < 2 * N);
  assert_int_equal(w[0].examples_rb, (double)v1.examples); /* v1's right after the rollback */
  assert_true(w[0].version2 > w[0].version);
  eddy_manifest_t next;
  load_manifest(&cfg, w[0].version + 1, &next);
  assert_int_equal(next.parent, 1); /* the retrained lineage starts at v1 */
  eddy_manifest_clear(&next);
  /* Both ranks went back to v1's cursors and trained each of their events once more: the same
   * examples, positions and weights as before the rollback. */
  assert_int_equal(after.examples, 2 * N);
  assert_int_equal(after.n_ranks, 2);
  for (uint32_t r = 0; r < 2; r++) {
    assert_int_equal(after.ranks[r].cursor, N);
    assert_int_equal(after.ranks[r].examples, N);
    assert_int_equal(after.ranks[r].offsets[0].next_offset, N);
    assert_string_equal(after.ranks[r].weights_xxh3, after.ranks[0].weights_xxh3);
    assert_true(v1.ranks[r].cursor < N);
  }
  assert_string_equal(after.ranks[0].weights_xxh3, before.ranks[0].weights_xxh3);
  eddy_manifest_clear(&v1);
  eddy_manifest_clear(&before);
  eddy_manifest_clear(&after);
  eddy_config_free(&cfg);
  eddy_test_rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_two_ranks_then_one),
      cmocka_unit_test(test_retrain_rollback),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
