/* The trainer in process, mostly with events appended straight into its buffer (exact seqs and
 * counts): versions verify and grow; shuffled labels are rejected by the gate; serve-only, retrain
 * (skip range, parent) and concurrent rollbacks; restarts, also right after a retrain rollback;
 * corrupt state; a failing write (file size limit for a full disk); degraded after Inf gradients;
 * every version's serving precisions, scored on the holdout.
 * One case runs Kafka -> ingest -> training -> versions -> announcements on the embedded broker. */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <librdkafka/rdkafka.h>

#include "buffer/replay.h"
#include "config/config.h"
#include "core/clock.h"
#include "metrics/registry.h"
#include "snapshot/manifest.h"
#include "snapshot/store.h"
#include "stream/broker.h"
#include "stream/producer.h"
#include "testutil.h"
#include "train/trainer.h"

static char errstr[2048];

/* ---- config and events ---- */

static void load_config(eddy_config_t *cfg, const char *dir, const char *const *extra, size_t n_extra) {
  const char *text =
      "[model]\nname = toy\nhash_bits = 0\nembed_dim = 0\ndense_dim = 4\nhidden =\nhead = logistic\n"
      "[train]\nbatch_size = 16\noptimizer = adam\nlr = 0.05\nholdout_fraction = 0.1\n"
      "max_skipped_steps = 3\nmetrics_window = 500\n"
      "[replay]\nratio = 0.25\n"
      "[snapshot]\nevery_steps = 0\nevery_seconds = 0\nkeep = 1000\n"
      "[buffer]\nsync = false\n";
  char sets[24][512];
  const char *ptrs[24];
  size_t n = 0;
  snprintf(sets[n++], sizeof sets[0], "buffer.path=%s/buf", dir);
  snprintf(sets[n++], sizeof sets[0], "snapshot.store=%s/store", dir);
  for (size_t i = 0; i < n_extra; i++) snprintf(sets[n++], sizeof sets[0], "%s", extra[i]);
  for (size_t i = 0; i < n; i++) ptrs[i] = sets[i];
  eddy_err_t err = eddy_config_load_string(cfg, "toy.ini", text, strlen(text), ptrs, n, errstr, sizeof errstr);
  if (err) print_error("config: %s\n", errstr);
  assert_int_equal(err, EDDY_OK);
}

static uint64_t rng_state = 12345;
static double urand(void) {
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (double)(rng_state >> 11) * 0x1.0p-53;
}

/* Event i: x uniform in [-1, 1]^4, label = [x0 - 2 x1 + 0.5 x2 > 0] (or a coin flip: poisoned). */
static int force_label = -1; /* >= 0: every event gets this label (an upstream default) */

static void make_event(eddy_event_t *ev, int i, bool poisoned, float scale) {
  snprintf(ev->id, sizeof ev->id, "ev-%d", i);
  ev->has_ts = true;
  ev->ts = 1732780000000LL + i;
  ev->weight = 1;
  ev->n_dense = 4;
  ev->n_sparse = 0;
  for (int k = 0; k < 4; k++) ev->dense[k] = (float)(2 * urand() - 1) * scale;
  double s = ev->dense[0] - 2 * ev->dense[1] + 0.5 * ev->dense[2];
  ev->label = force_label >= 0 ? force_label : poisoned ? (urand() < 0.5) : (s > 0);
}

static int next_id;

/* Appends n events (ids next_id..) to the trainer's buffer; returns the first seq. */
static uint64_t append(eddy_trainer_t *t, int n, bool poisoned, float scale) {
  eddy_replay_t *r = eddy_trainer_buffer(t);
  enum { CHUNK = 200 };
  eddy_event_t evs[CHUNK];
  const eddy_event_t *ptrs[CHUNK];
  float dense[CHUNK][4];
  uint64_t first = UINT64_MAX;
  for (int i = 0; i < CHUNK; i++) {
    eddy_event_init(&evs[i]);
    evs[i].dense = dense[i];
    ptrs[i] = &evs[i];
  }
  for (int done = 0; done < n;) {
    int k = n - done < CHUNK ? n - done : CHUNK;
    for (int i = 0; i < k; i++) make_event(&evs[i], next_id++, poisoned, scale);
    uint64_t seq0;
    assert_int_equal(eddy_replay_append(r, ptrs, (size_t)k, NULL, 0, NULL, 0, &seq0, errstr, sizeof errstr),
                     EDDY_OK);
    if (first == UINT64_MAX) first = seq0;
    done += k;
  }
  return first;
}

/* ---- trainer helpers ---- */

static eddy_trainer_t *new_trainer(const eddy_config_t *cfg, bool fresh, bool no_ingest, eddy_registry_t *reg) {
  eddy_trainer_opts_t o = {.fresh = fresh, .no_ingest = no_ingest};
  eddy_trainer_t *t = eddy_trainer_new(cfg, &o, reg, errstr, sizeof errstr);
  if (!t) print_error("trainer: %s\n", errstr);
  assert_non_null(t);
  assert_int_equal(eddy_trainer_start(t, errstr, sizeof errstr), EDDY_OK);
  return t;
}

static cJSON *status(eddy_trainer_t *t) {
  char *text = eddy_trainer_status_json(t);
  assert_non_null(text);
  cJSON *j = cJSON_Parse(text);
  free(text);
  assert_non_null(j);
  return j;
}

static double jnum(cJSON *j, const char *a, const char *b) {
  cJSON *x = cJSON_GetObjectItemCaseSensitive(j, a);
  if (b) x = cJSON_GetObjectItemCaseSensitive(x, b);
  return cJSON_IsNumber(x) ? x->valuedouble : -1;
}

static double status_num(eddy_trainer_t *t, const char *a, const char *b) {
  cJSON *j = status(t);
  double v = jnum(j, a, b);
  cJSON_Delete(j);
  return v;
}

/* Until the cursor reaches the buffer's end. */
static void wait_caught_up(eddy_trainer_t *t, double timeout_s) {
  double end = eddy_clock_mono_s() + timeout_s;
  for (;;) {
    cJSON *j = status(t);
    double cur = jnum(j, "buffer", "cursor"), next = jnum(j, "buffer", "next_seq");
    cJSON_Delete(j);
    if (cur == next) return;
    if (eddy_clock_mono_s() > end) {
      print_error("trainer not caught up: cursor %.0f of %.0f\n", cur, next);
      fail();
    }
    usleep(5000);
  }
}

/* Flips a byte near the end of the file at path. */
static void corrupt_tail(const char *path) {
  FILE *f = fopen(path, "r+b");
  assert_non_null(f);
  fseek(f, -3, SEEK_END);
  int c = fgetc(f);
  fseek(f, -3, SEEK_END);
  fputc(c ^ 0x5a, f);
  fclose(f);
}

static uint64_t snapshot(eddy_trainer_t *t) {
  uint64_t v = 0;
  eddy_err_t err = eddy_trainer_snapshot(t, 20000, &v, errstr, sizeof errstr);
  if (err) print_error("snapshot: %s\n", errstr);
  assert_int_equal(err, EDDY_OK);
  assert_true(v > 0);
  return v;
}

static void manifest(eddy_trainer_t *t, uint64_t v, eddy_manifest_t *m) {
  eddy_err_t err = eddy_store_load_manifest(eddy_trainer_store(t), v, m, errstr, sizeof errstr);
  if (err) print_error("manifest v%" PRIu64 ": %s\n", v, errstr);
  assert_int_equal(err, EDDY_OK);
}

static void verify(eddy_trainer_t *t, uint64_t v) {
  char dir[4096];
  assert_int_equal(eddy_store_path(eddy_trainer_store(t), v, NULL, dir, sizeof dir), EDDY_OK);
  eddy_err_t err = eddy_store_verify(dir, NULL, errstr, sizeof errstr);
  if (err) print_error("verify: %s\n", errstr);
  assert_int_equal(err, EDDY_OK);
}

static uint64_t current(eddy_trainer_t *t) {
  uint64_t v = 0;
  assert_int_equal(eddy_store_current(eddy_trainer_store(t), &v, errstr, sizeof errstr), EDDY_OK);
  return v;
}

/* ---- cases ---- */

static void test_publish_and_gate(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  eddy_config_t cfg;
  load_config(&cfg, dir, NULL, 0);
  eddy_registry_t *reg = eddy_registry_new();
  eddy_trainer_t *t = new_trainer(&cfg, false, true, reg);

  uint64_t vs[8];
  size_t nv = 0;
  for (int round = 0; round < 3; round++) {
    append(t, 1500, false, 1);
    wait_caught_up(t, 20);
    vs[nv++] = snapshot(t);
  }
  for (size_t i = 0; i < nv; i++) assert_int_equal(vs[i], i + 1);
  eddy_manifest_t prev;
  eddy_manifest_init(&prev);
  for (size_t i = 0; i < nv; i++) {
    verify(t, vs[i]);
    eddy_manifest_t m;
    manifest(t, vs[i], &m);
    assert_int_equal(m.status, EDDY_STATUS_PROMOTED);
    assert_int_equal(m.buffer_cursor, 1500 * (i + 1));
    assert_true(m.holdout.n > 0);
    assert_true(isfinite(m.holdout.logloss));
    assert_true(isfinite(m.prequential.accuracy));
    if (i) {
      assert_int_equal(m.parent, vs[i - 1]);
      assert_true(m.step > prev.step);
      assert_true(m.examples > prev.examples);
      assert_true(m.buffer_cursor > prev.buffer_cursor);
    } else {
      assert_int_equal(m.parent, 0);
    }
    eddy_manifest_clear(&prev);
    prev = m;
  }
  /* ~10% held out: examples trained are the rest of the 4500 events. */
  assert_true(prev.examples > 3800 && prev.examples < 4300);
  assert_true(prev.prequential.accuracy > 0.9);
  eddy_manifest_clear(&prev);
  assert_int_equal(current(t), vs[nv - 1]);

  /* Shuffled labels: every candidate regresses on the holdout and is rejected. */
  uint64_t good = vs[nv - 1];
  for (int round = 0; round < 2; round++) {
    append(t, 1500, true, 1);
    wait_caught_up(t, 20);
    uint64_t v = snapshot(t);
    verify(t, v);
    eddy_manifest_t m;
    manifest(t, v, &m);
    assert_int_equal(m.status, EDDY_STATUS_REJECTED);
    assert_non_null(strstr(m.reason, "holdout logloss"));
    eddy_manifest_clear(&m);
    assert_int_equal(current(t), good);
  }
  /* A rejected version cannot be rolled back to. */
  assert_int_equal(eddy_trainer_rollback(t, good + 1, false, 1, 0, errstr, sizeof errstr), EDDY_ERR_STATE);
  assert_int_equal(eddy_trainer_rollback(t, 999, false, 1, 0, errstr, sizeof errstr), EDDY_ERR_NOT_FOUND);

  cJSON *j = status(t);
  assert_int_equal(jnum(j, "snapshots", "rejected"), 2);
  assert_int_equal(jnum(j, "snapshots", "published"), 5);
  assert_int_equal(jnum(j, "current_version", NULL), good);
  assert_string_equal(cJSON_GetObjectItem(j, "state")->valuestring, "running");
  cJSON_Delete(j);

  char *text = eddy_registry_render(reg, NULL);
  assert_non_null(text);
  const char *names[] = {"eddy_train_steps_total ", "eddy_train_examples_total ", "eddy_train_skipped_steps_total ",
                         "eddy_train_loss_scale ", "eddy_prequential_logloss ", "eddy_prequential_accuracy ",
                         "eddy_snapshot_version 3", "eddy_snapshot_rejected_total 2",
                         "eddy_snapshot_published_total 5", "eddy_snapshot_publish_seconds_count 5"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    if (!strstr(text, names[i])) print_error("metric \"%s\" missing\n", names[i]);
    assert_non_null(strstr(text, names[i]));
  }
  free(text);

  /* Pause: ingest (here: appends) go on, the cursor does not move; resume catches up. */
  eddy_trainer_pause(t);
  double cursor = status_num(t, "buffer", "cursor");
  append(t, 300, false, 1);
  usleep(200000);
  assert_true(status_num(t, "buffer", "cursor") == cursor);
  uint64_t v = snapshot(t); /* snapshots work while paused */
  eddy_manifest_t m;
  manifest(t, v, &m);
  assert_int_equal(m.buffer_cursor, (uint64_t)cursor);
  eddy_manifest_clear(&m);
  eddy_trainer_resume(t);
  wait_caught_up(t, 20);

  eddy_trainer_destroy(t);
  eddy_registry_destroy(reg);
  eddy_config_free(&cfg);
  eddy_test_rmdir(dir);
}

static cJSON *jpath(cJSON *j, const char *a, const char *b) {
  cJSON *x = cJSON_GetObjectItemCaseSensitive(j, a);
  return b ? cJSON_GetObjectItemCaseSensitive(x, b) : x;
}

/* The champion/challenger gate with the holdout window: the verdict records its criteria; labels
 * turned constant fire the drift detector, re-base the window and no candidate beats the label
 * prior there; a retrain rollback skipping them rebuilds the window from the good events (none
 * skipped, none twice: a restart rebuilds the same) and its retrained version is promoted. */
static void test_gate_drift_and_holdout(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  eddy_config_t cfg;
  load_config(&cfg, dir, NULL, 0);
  eddy_registry_t *reg = eddy_registry_new();
  eddy_trainer_t *t = new_trainer(&cfg, false, true, reg);
  append(t, 2000, false, 1);
  wait_caught_up(t, 20);
  uint64_t v1 = snapshot(t);
  eddy_manifest_t m;
  manifest(t, v1, &m);
  assert_int_equal(m.status, EDDY_STATUS_PROMOTED);
  assert_true(m.gate.present);
  assert_string_equal(m.gate.metric, "logloss");
  assert_int_equal(m.gate.n_criteria, 4);
  const char *names[] = {"finite", "holdout_events", "vs_prior", "vs_current"};
  for (int i = 0; i < 4; i++) assert_string_equal(m.gate.criteria[i].name, names[i]);
  assert_int_equal(m.gate.criteria[3].result, EDDY_CRITERION_SKIPPED); /* no CURRENT yet */
  assert_int_equal(m.gate.criteria[2].result, EDDY_CRITERION_PASSED);
  assert_true(m.gate.criteria[2].candidate < m.gate.criteria[2].reference);
  assert_int_equal(m.gate.events, m.holdout.n);
  uint64_t good_cursor = m.buffer_cursor;
  eddy_manifest_clear(&m);
  cJSON *j = status(t);
  double held = jnum(j, "holdout", "events");
  assert_true(held > 120 && held < 280); /* ~10% of 2000 */
  assert_int_equal(jnum(j, "drift", "detected"), 0);
  cJSON_Delete(j);

  /* Labels turn constant: drift, re-based window, rejected by the prior floor. */
  force_label = 1;
  uint64_t bad_from = append(t, 1500, false, 1);
  force_label = -1;
  wait_caught_up(t, 20);
  j = status(t);
  assert_true(jnum(j, "drift", "detected") >= 1);
  double drift_seq = jnum(j, "drift", "last_seq");
  assert_true(drift_seq >= bad_from && drift_seq < bad_from + 100);
  cJSON *seqs = jpath(j, "holdout", "seqs");
  assert_true(cJSON_GetArrayItem(seqs, 0)->valuedouble >= drift_seq);
  cJSON_Delete(j);
  uint64_t v2 = snapshot(t);
  manifest(t, v2, &m);
  assert_int_equal(m.status, EDDY_STATUS_REJECTED);
  assert_non_null(strstr(m.reason, "vs_prior"));
  assert_int_equal(m.gate.criteria[2].result, EDDY_CRITERION_FAILED);
  assert_true(m.gate.from_seq >= drift_seq);
  eddy_manifest_clear(&m);
  assert_int_equal(current(t), v1);
  j = status(t);
  assert_int_equal(jnum(j, "gate", "rejected_in_a_row"), 1);
  char want[64];
  snprintf(want, sizeof want, "eddy_drift_detected_total %.0f\n", jnum(j, "drift", "detected"));
  cJSON_Delete(j);
  char *text = eddy_registry_render(reg, NULL);
  assert_non_null(strstr(text, want));
  assert_non_null(strstr(text, "eddy_snapshot_rejected_consecutive 1"));
  assert_non_null(strstr(text, "eddy_prequential_class_accuracy{class=\"1\"}"));
  free(text);

  /* Retrain from v1 skipping the bad range: the window holds good events only. */
  assert_int_equal(eddy_trainer_rollback(t, v1, true, bad_from, bad_from + 1499, errstr, sizeof errstr), EDDY_OK);
  append(t, 500, false, 1);
  wait_caught_up(t, 20);
  j = status(t);
  seqs = jpath(j, "holdout", "seqs");
  double hold_after = jnum(j, "holdout", "events");
  assert_true(cJSON_GetArrayItem(seqs, 0)->valuedouble < (double)good_cursor);
  cJSON_Delete(j);
  uint64_t v3 = snapshot(t);
  manifest(t, v3, &m);
  if (m.status != EDDY_STATUS_PROMOTED) print_error("v%" PRIu64 ": %s\n", v3, m.reason);
  assert_int_equal(m.status, EDDY_STATUS_PROMOTED);
  assert_int_equal(m.parent, v1);
  for (size_t i = 0; i < m.gate.n_criteria; i++) assert_int_not_equal(m.gate.criteria[i].result, EDDY_CRITERION_FAILED);
  eddy_manifest_clear(&m);
  eddy_trainer_destroy(t);

  /* A restart rebuilds the window from the buffer (skip range honoured): the same events. */
  t = new_trainer(&cfg, false, true, NULL);
  j = status(t);
  assert_true(jnum(j, "holdout", "events") == hold_after);
  cJSON_Delete(j);
  eddy_trainer_destroy(t);
  eddy_registry_destroy(reg);
  eddy_config_free(&cfg);
  eddy_test_rmdir(dir);
}

/* snapshot.gate.validation: loaded at the start (a missing file refuses the start, naming the
 * key), scored for the candidate and CURRENT, recorded as the "validation" criterion. */
static void test_gate_validation(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  char path[4096], set[4200];
  snprintf(path, sizeof path, "%s/validation.jsonl", dir);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  for (int i = 0; i < 300; i++) {
    eddy_event_t ev;
    float dense[4];
    eddy_event_init(&ev);
    ev.dense = dense;
    make_event(&ev, 100000 + i, false, 1);
    fprintf(f, "{\"id\": \"%s\", \"label\": %d, \"dense\": [%g, %g, %g, %g]}\n", ev.id, (int)ev.label, dense[0],
            dense[1], dense[2], dense[3]);
  }
  fclose(f);
  eddy_config_t cfg;
  snprintf(set, sizeof set, "snapshot.gate.validation=%s/missing.jsonl", dir);
  const char *missing[] = {set};
  load_config(&cfg, dir, missing, 1);
  eddy_trainer_opts_t o = {.no_ingest = true};
  assert_null(eddy_trainer_new(&cfg, &o, NULL, errstr, sizeof errstr));
  assert_non_null(strstr(errstr, "snapshot.gate.validation"));
  eddy_config_free(&cfg);
  snprintf(set, sizeof set, "snapshot.gate.validation=%s", path);
  const char *extra[] = {set};
  load_config(&cfg, dir, extra, 1);
  eddy_trainer_t *t = new_trainer(&cfg, false, true, NULL);
  append(t, 1500, false, 1);
  wait_caught_up(t, 20);
  uint64_t v1 = snapshot(t);
  append(t, 1500, false, 1);
  wait_caught_up(t, 20);
  uint64_t v2 = snapshot(t);
  eddy_manifest_t m;
  manifest(t, v1, &m);
  assert_string_equal(m.gate.criteria[4].name, "validation");
  assert_int_equal(m.gate.criteria[4].result, EDDY_CRITERION_SKIPPED); /* no CURRENT to compare with */
  assert_true(m.gate.criteria[4].candidate > 0 && m.gate.criteria[4].candidate < 0.6);
  eddy_manifest_clear(&m);
  manifest(t, v2, &m);
  if (m.status != EDDY_STATUS_PROMOTED) print_error("v2: %s\n", m.reason);
  assert_int_equal(m.status, EDDY_STATUS_PROMOTED);
  assert_string_equal(m.gate.criteria[4].name, "validation");
  assert_int_equal(m.gate.criteria[4].result, EDDY_CRITERION_PASSED);
  assert_true(isfinite(m.gate.criteria[4].reference) && isfinite(m.gate.criteria[4].value));
  assert_non_null(strstr(m.reason, "validation logloss"));
  eddy_manifest_clear(&m);
  eddy_trainer_destroy(t);
  eddy_config_free(&cfg);
  eddy_test_rmdir(dir);
}

/* The serving precisions of each version: written, listed, verified and scored on the holdout
 * through the replicas' forward pass (fp32 there scores what the gate's learner scores); only fp32
 * with snapshot.precisions = fp32. */
static void test_precisions(void **state) {
  (void)state;
  const int id0 = next_id; /* the other cases' events stay what they were */
  const uint64_t rng0 = rng_state;
  for (int only_fp32 = 0; only_fp32 < 2; only_fp32++) {
    char *dir = eddy_test_tmpdir();
    eddy_config_t cfg;
    const char *sets[] = {"snapshot.precisions=fp32"};
    load_config(&cfg, dir, sets, only_fp32 ? 1 : 0);
    eddy_registry_t *reg = eddy_registry_new();
    eddy_trainer_t *t = new_trainer(&cfg, false, true, reg);
    append(t, 1500, false, 1);
    wait_caught_up(t, 20);
    uint64_t v = snapshot(t);
    verify(t, v);
    eddy_manifest_t m;
    manifest(t, v, &m);
    const unsigned all = only_fp32 ? 1u << EDDY_INFER_F32 : EDDY_INFER_ALL_PRECISIONS;
    assert_int_equal(eddy_manifest_precisions(&m), all);
    assert_int_equal(m.n_files, only_fp32 ? 2 : 5);
    const eddy_metric_values_t *fp32 = &m.precisions[EDDY_INFER_F32].holdout;
    assert_string_equal(m.precisions[EDDY_INFER_F32].file, EDDY_STORE_WEIGHTS);
    assert_true(fabs(fp32->logloss - m.holdout.logloss) < 1e-4);
    assert_true(fabs(fp32->accuracy - m.holdout.accuracy) < 0.01);
    for (int p = 0; p < EDDY_INFER_PRECISIONS; p++) {
      const eddy_manifest_precision_t *pr = &m.precisions[p];
      if (!pr->present) continue;
      printf("v%" PRIu64 " %s: accuracy %.4f logloss %.4f on %" PRIu64 " events\n", v,
             eddy_infer_precision_name((eddy_infer_precision_t)p), pr->holdout.accuracy, pr->holdout.logloss,
             pr->holdout.n);
      assert_int_equal(pr->holdout.n, m.holdout.n);
      assert_string_equal(pr->file, eddy_store_precision_file((eddy_infer_precision_t)p));
      assert_true(fabs(pr->holdout.accuracy - fp32->accuracy) < 0.05); /* a linear rule: every precision learns it */
    }
    if (!only_fp32) {
      /* int8 calibrated on the trained events before the cursor (not the holdout ones). */
      assert_true(m.precisions[EDDY_INFER_INT8].calibration_events > 800);
      assert_true(m.precisions[EDDY_INFER_INT8].calibration_events <= 1000);
    }
    eddy_manifest_clear(&m);
    eddy_trainer_destroy(t);
    eddy_registry_destroy(reg);
    eddy_config_free(&cfg);
    eddy_test_rmdir(dir);
  }
  next_id = id0;
  rng_state = rng0;
}

static void test_rollback_and_restart(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  eddy_config_t cfg;
  const char *extra[] = {"train.holdout_fraction=0"}; /* exact example counts */
  load_config(&cfg, dir, extra, 1);
  eddy_trainer_t *t = new_trainer(&cfg, false, true, NULL);
  for (int i = 0; i < 3; i++) {
    append(t, 1000, false, 1);
    wait_caught_up(t, 20);
    assert_int_equal(snapshot(t), (uint64_t)i + 1);
  }
  eddy_manifest_t m1, m2, m3;
  manifest(t, 1, &m1);
  manifest(t, 2, &m2);
  manifest(t, 3, &m3);
  assert_int_equal(m2.examples, 2000);
  assert_int_equal(current(t), 3);

  /* Serve-only: CURRENT moves, the trainer does not. */
  double step = status_num(t, "step", NULL);
  assert_int_equal(eddy_trainer_rollback(t, 1, false, 1, 0, errstr, sizeof errstr), EDDY_OK);
  assert_int_equal(current(t), 1);
  assert_int_equal(eddy_trainer_rollback(t, 1, false, 1, 0, errstr, sizeof errstr), EDDY_OK);
  assert_int_equal(current(t), 1);
  assert_true(status_num(t, "step", NULL) == step);
  assert_int_equal(status_num(t, "examples", NULL), 3000);

  /* Retrain from v2 skipping seq 2100..2399 (300 bad events), plus 500 new events. */
  assert_int_equal(eddy_trainer_rollback(t, 2, true, 2100, 2399, errstr, sizeof errstr), EDDY_OK);
  assert_int_equal(current(t), 2);
  assert_int_equal(status_num(t, "parent", NULL), 2);
  /* idempotent: the same call again changes nothing */
  assert_int_equal(eddy_trainer_rollback(t, 2, true, 2100, 2399, errstr, sizeof errstr), EDDY_OK);
  append(t, 500, false, 1);
  wait_caught_up(t, 20);
  uint64_t v4 = snapshot(t);
  assert_int_equal(v4, 4);
  eddy_manifest_t m4;
  manifest(t, v4, &m4);
  assert_int_equal(m4.parent, 2);
  assert_int_equal(m4.examples, 2000 + 1000 - 300 + 500);
  assert_int_equal(m4.buffer_cursor, 3500);
  assert_true(m4.step > m2.step);
  verify(t, v4);
  /* promoted against CURRENT = v2 */
  assert_int_equal(current(t), 4);

  /* Restart: resumes v4's state and cursor; new events are counted once. */
  eddy_trainer_destroy(t);
  t = new_trainer(&cfg, false, true, NULL);
  assert_int_equal(status_num(t, "examples", NULL), m4.examples);
  assert_int_equal(status_num(t, "step", NULL), m4.step);
  assert_int_equal(status_num(t, "buffer", "cursor"), 3500);
  append(t, 200, false, 1);
  wait_caught_up(t, 20);
  uint64_t v5 = snapshot(t);
  eddy_manifest_t m5;
  manifest(t, v5, &m5);
  assert_int_equal(m5.parent, 4);
  assert_int_equal(m5.examples, m4.examples + 200);

  /* Retrain rollback, then a crash before any publish: the restart resumes the rollback. */
  assert_int_equal(eddy_trainer_rollback(t, 1, true, 1500, 1599, errstr, sizeof errstr), EDDY_OK);
  eddy_trainer_destroy(t);
  t = new_trainer(&cfg, false, true, NULL);
  assert_int_equal(status_num(t, "parent", NULL), 1);
  wait_caught_up(t, 20);
  uint64_t v6 = snapshot(t);
  eddy_manifest_t m6;
  manifest(t, v6, &m6);
  assert_int_equal(m6.parent, 1);
  assert_int_equal(m6.examples, 1000 + (3700 - 1000) - 100);
  for (uint64_t v = 1; v <= v6; v++) verify(t, v);

  eddy_manifest_clear(&m1);
  eddy_manifest_clear(&m2);
  eddy_manifest_clear(&m3);
  eddy_manifest_clear(&m4);
  eddy_manifest_clear(&m5);
  eddy_manifest_clear(&m6);
  eddy_trainer_destroy(t);
  eddy_config_free(&cfg);
  eddy_test_rmdir(dir);
}

typedef struct {
  eddy_trainer_t *t;
  int id;
  int ok, failed;
  uint64_t last;
} rb_arg_t;

static void *rollback_thread(void *p) {
  rb_arg_t *a = p;
  char err[512];
  for (int i = 0; i < 6; i++) {
    uint64_t v = 1 + (uint64_t)((a->id + i) % 3);
    bool retrain = (a->id + i) % 2 == 0;
    eddy_err_t e = eddy_trainer_rollback(a->t, v, retrain, retrain ? 100 : 1, retrain ? 199 : 0, err, sizeof err);
    if (e == EDDY_OK) a->ok++, a->last = v;
    else a->failed++, print_error("rollback to v%u (%s): %s\n", (unsigned)v, retrain ? "retrain" : "serve", err);
  }
  return NULL;
}

static void test_concurrent_rollbacks(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  eddy_config_t cfg;
  /* Every version must be promoted for the serve-only rollbacks: a small window is enough here. */
  const char *extra[] = {"snapshot.gate.min_events=10"};
  load_config(&cfg, dir, extra, 1);
  eddy_trainer_t *t = new_trainer(&cfg, false, true, NULL);
  for (int i = 0; i < 3; i++) {
    append(t, 600, false, 1);
    wait_caught_up(t, 20);
    snapshot(t);
  }
  append(t, 2000, false, 1); /* training goes on during the rollbacks */
  enum { N = 4 };
  pthread_t th[N];
  rb_arg_t args[N];
  for (int i = 0; i < N; i++) {
    args[i] = (rb_arg_t){.t = t, .id = i};
    assert_int_equal(pthread_create(&th[i], NULL, rollback_thread, &args[i]), 0);
  }
  for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
  for (int i = 0; i < N; i++) {
    assert_int_equal(args[i].failed, 0);
    assert_int_equal(args[i].ok, 6);
  }
  uint64_t cur = current(t);
  assert_true(cur >= 1 && cur <= 3);
  assert_int_equal(eddy_trainer_health(t, errstr, sizeof errstr), EDDY_OK);
  wait_caught_up(t, 20);
  uint64_t v = snapshot(t);
  for (uint64_t k = 1; k <= v; k++) verify(t, k);
  eddy_trainer_destroy(t);
  eddy_config_free(&cfg);
  eddy_test_rmdir(dir);
}

static void test_corrupt_state_and_faults(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  eddy_config_t cfg;
  const char *extra[] = {"model.hidden=256"};
  load_config(&cfg, dir, extra, 1);
  eddy_registry_t *reg = eddy_registry_new();
  eddy_trainer_t *t = new_trainer(&cfg, false, true, reg);
  append(t, 500, false, 1);
  wait_caught_up(t, 20);
  assert_int_equal(snapshot(t), 1);

  /* A write failing part way (file size limit: EFBIG, as a full disk gives ENOSPC) abandons the
   * version, leaves no temp folder, and training goes on. */
  struct rlimit old, small = {.rlim_cur = 4096, .rlim_max = RLIM_INFINITY};
  signal(SIGXFSZ, SIG_IGN);
  assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
  small.rlim_max = old.rlim_max;
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
  uint64_t v = 0;
  eddy_err_t err = eddy_trainer_snapshot(t, 20000, &v, errstr, sizeof errstr);
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
  assert_int_not_equal(err, EDDY_OK);
  assert_int_equal(status_num(t, "snapshots", "errors"), 1);
  char *text = eddy_registry_render(reg, NULL);
  assert_non_null(strstr(text, "eddy_snapshot_publish_errors_total 1"));
  free(text);
  append(t, 300, false, 1);
  wait_caught_up(t, 20);
  assert_int_equal(snapshot(t), 2); /* the number was not used up */
  verify(t, 2);

  /* Huge features: Inf gradients, steps skipped past max_skipped_steps: degraded. */
  append(t, 16 * 8, false, 3e38f);
  wait_caught_up(t, 20);
  cJSON *j = status(t);
  assert_string_equal(cJSON_GetObjectItem(j, "state")->valuestring, "degraded");
  assert_true(jnum(j, "skipped_steps", NULL) > 3);
  cJSON_Delete(j);
  assert_int_equal(eddy_trainer_snapshot(t, 1000, &v, errstr, sizeof errstr), EDDY_ERR_STATE);
  /* a retrain rollback brings it back */
  assert_int_equal(eddy_trainer_rollback(t, 2, true, 800, 800 + 16 * 8 - 1, errstr, sizeof errstr), EDDY_OK);
  wait_caught_up(t, 20);
  j = status(t);
  assert_string_equal(cJSON_GetObjectItem(j, "state")->valuestring, "running");
  cJSON_Delete(j);
  assert_int_equal(snapshot(t), 3);
  eddy_trainer_destroy(t);

  /* Corrupt newest state: skipped, the newest version that loads (v2) is restored. */
  char path[4096];
  snprintf(path, sizeof path, "%s/store/toy/v000003/state.safetensors", dir);
  corrupt_tail(path);
  eddy_trainer_opts_t o = {.no_ingest = true};
  t = eddy_trainer_new(&cfg, &o, NULL, errstr, sizeof errstr);
  if (!t) print_error("restart with a corrupt newest state: %s\n", errstr);
  assert_non_null(t);
  assert_int_equal(status_num(t, "parent", NULL), 2);
  eddy_manifest_t m2;
  char mdir[4096];
  snprintf(mdir, sizeof mdir, "%s/store/toy/v000002/manifest.json", dir);
  assert_int_equal(eddy_manifest_load(mdir, &m2, errstr, sizeof errstr), EDDY_OK);
  assert_int_equal(status_num(t, "examples", NULL), m2.examples);
  eddy_manifest_clear(&m2);
  eddy_trainer_destroy(t);
  /* An empty newest folder (an interrupted copy) is skipped too. */
  snprintf(mdir, sizeof mdir, "%s/store/toy/v000004", dir);
  assert_int_equal(mkdir(mdir, 0755), 0);
  t = eddy_trainer_new(&cfg, &o, NULL, errstr, sizeof errstr);
  assert_non_null(t);
  assert_int_equal(status_num(t, "parent", NULL), 2);
  eddy_trainer_destroy(t);
  assert_int_equal(rmdir(mdir), 0);
  /* No version loads: refused, naming the newest state file, unless fresh. */
  for (int older_v = 1; older_v <= 2; older_v++) {
    char older[4096];
    snprintf(older, sizeof older, "%s/store/toy/v%06d/state.safetensors", dir, older_v);
    corrupt_tail(older);
  }
  assert_null(eddy_trainer_new(&cfg, &o, NULL, errstr, sizeof errstr));
  assert_non_null(strstr(errstr, path));
  assert_non_null(strstr(errstr, "corrupt"));
  assert_non_null(strstr(errstr, "2 older version(s) do not load either"));
  assert_non_null(strstr(errstr, "--fresh"));
  o.fresh = true;
  t = eddy_trainer_new(&cfg, &o, NULL, errstr, sizeof errstr);
  assert_non_null(t);
  assert_int_equal(status_num(t, "examples", NULL), 0);
  assert_true(status_num(t, "parent", NULL) == -1); /* null: a new lineage */
  eddy_trainer_destroy(t);
  /* A second writer on the same store is refused. */
  t = new_trainer(&cfg, true, true, NULL);
  eddy_trainer_t *t2 = eddy_trainer_new(&cfg, &o, NULL, errstr, sizeof errstr);
  assert_null(t2);
  eddy_trainer_destroy(t);

  eddy_registry_destroy(reg);
  eddy_config_free(&cfg);
  eddy_test_rmdir(dir);
}

/* ---- Kafka end to end ---- */

static int count_announcements(const char *bootstrap, const char *topic, int partitions, int *promoted) {
  char err[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof err);
  rd_kafka_conf_set(conf, "group.id", "svc-trainer-check", err, sizeof err);
  rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof err);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
  assert_non_null(rk);
  rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(partitions);
  for (int p = 0; p < partitions; p++)
    rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
  assert_int_equal(rd_kafka_assign(rk, parts), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_topic_partition_list_destroy(parts);
  int n = 0, eofs = 0;
  *promoted = 0;
  double end = eddy_clock_mono_s() + 15;
  while (eofs < partitions && eddy_clock_mono_s() < end) {
    rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 200);
    if (!msg) continue;
    if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      eofs++;
    } else if (!msg->err) {
      n++;
      assert_int_equal(msg->key_len, 3);
      assert_memory_equal(msg->key, "toy", 3);
      eddy_manifest_t m;
      assert_int_equal(eddy_manifest_parse(msg->payload, msg->len, &m, err, sizeof err), EDDY_OK);
      *promoted += m.status == EDDY_STATUS_PROMOTED;
      eddy_manifest_clear(&m);
    }
    rd_kafka_message_destroy(msg);
  }
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return n;
}

static void test_kafka_end_to_end(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  eddy_broker_t *broker = eddy_broker_new(0, 1, errstr, sizeof errstr);
  assert_non_null(broker);
  assert_int_equal(eddy_broker_add_topic(broker, "events", 4, errstr, sizeof errstr), EDDY_OK);
  assert_int_equal(eddy_broker_add_topic(broker, "snaps", 1, errstr, sizeof errstr), EDDY_OK);
  const char *bs = eddy_broker_bootstrap(broker);
  char sets[8][256];
  snprintf(sets[0], sizeof sets[0], "kafka.bootstrap.servers=%s", bs);
  snprintf(sets[1], sizeof sets[1], "kafka.fetch.wait.max.ms=50");
  snprintf(sets[2], sizeof sets[2], "snapshot.topic=snaps");
  snprintf(sets[3], sizeof sets[3], "snapshot.every_steps=20");
  snprintf(sets[4], sizeof sets[4], "stream.topic=events");
  const char *extra[] = {sets[0], sets[1], sets[2], sets[3], sets[4]};
  eddy_config_t cfg;
  load_config(&cfg, dir, extra, 5);
  eddy_registry_t *reg = eddy_registry_new();
  eddy_trainer_t *t = new_trainer(&cfg, false, false, reg);

  eddy_producer_t *p = eddy_producer_new(NULL, bs, errstr, sizeof errstr);
  assert_non_null(p);
  eddy_event_t ev;
  eddy_event_init(&ev);
  float dense[4];
  ev.dense = dense;
  int total = 0;
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 800; i++, total++) {
      make_event(&ev, total, false, 1);
      char *json = eddy_event_to_json(&ev);
      assert_non_null(json);
      assert_int_equal(eddy_producer_send(p, "events", total % 4, NULL, 0, json, strlen(json), errstr, sizeof errstr),
                       EDDY_OK);
      free(json);
    }
    assert_int_equal(eddy_producer_flush(p, 20000, errstr, sizeof errstr), EDDY_OK);
    double end = eddy_clock_mono_s() + 30;
    while (status_num(t, "buffer", "next_seq") < total && eddy_clock_mono_s() < end) usleep(20000);
    assert_int_equal(status_num(t, "buffer", "next_seq"), total);
    wait_caught_up(t, 20);
    snapshot(t);
  }
  ev.dense = NULL;
  eddy_producer_destroy(p);

  eddy_store_entry_t *entries = NULL;
  size_t n = 0;
  assert_int_equal(eddy_store_list(eddy_trainer_store(t), &entries, &n, errstr, sizeof errstr), EDDY_OK);
  assert_true(n >= 4);
  /* newest first: walk oldest to newest */
  int64_t prev_sum = -1;
  uint64_t prev_step = 0, prev_ex = 0, prev_cursor = 0;
  size_t n_promoted = 0;
  for (size_t i = n; i-- > 0;) {
    eddy_manifest_t *m = &entries[i].manifest;
    assert_true(entries[i].manifest_ok);
    verify(t, entries[i].version);
    int64_t sum = 0;
    for (size_t k = 0; k < m->n_offsets; k++) {
      assert_string_equal(m->offsets[k].topic, "events");
      sum += m->offsets[k].next_offset;
    }
    assert_true(sum >= prev_sum);
    assert_true(m->step >= prev_step && m->examples >= prev_ex && m->buffer_cursor >= prev_cursor);
    prev_sum = sum, prev_step = m->step, prev_ex = m->examples, prev_cursor = m->buffer_cursor;
    n_promoted += m->status == EDDY_STATUS_PROMOTED;
  }
  assert_int_equal(prev_sum, total);
  assert_int_equal(prev_cursor, (uint64_t)total);
  eddy_store_list_free(entries, n);

  int promoted_msgs = 0;
  eddy_trainer_destroy(t); /* flushes the announcements */
  int msgs = count_announcements(bs, "snaps", 1, &promoted_msgs);
  assert_int_equal(msgs, (int)n_promoted);
  assert_int_equal(promoted_msgs, (int)n_promoted);

  char *text = eddy_registry_render(reg, NULL);
  assert_non_null(strstr(text, "eddy_ingest_events_total"));
  assert_non_null(strstr(text, "eddy_buffer_events"));
  free(text);
  eddy_registry_destroy(reg);
  eddy_broker_destroy(broker);
  eddy_config_free(&cfg);
  eddy_test_rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_publish_and_gate),
      cmocka_unit_test(test_gate_drift_and_holdout),
      cmocka_unit_test(test_gate_validation),
      cmocka_unit_test(test_rollback_and_restart),
      cmocka_unit_test(test_concurrent_rollbacks),
      cmocka_unit_test(test_corrupt_state_and_faults),
      cmocka_unit_test(test_kafka_end_to_end),
      cmocka_unit_test(test_precisions),
  };
  if (getenv("EDDY_TEST_FILTER")) cmocka_set_test_filter(getenv("EDDY_TEST_FILTER"));
  return cmocka_run_group_tests(tests, NULL, NULL);
}
