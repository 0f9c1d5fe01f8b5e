/* The trainer's lifecycle and public calls: opening the buffer, store, consumer, producer and
 * learner; restoring the newest version's state with its cursors (so that after a crash every
 * event is trained once relative to the restored model); the threads; status; pause/resume;
 * snapshot requests; and rollback (serve-only, or retrain from a version's state and cursor while
 * the training thread is parked at a step boundary). */
#include "train/trainer.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "core/clock.h"
#include "core/log.h"
#include "train/trainer_state.h"

#define LOG_MOD "train"

/* ---- metrics ---- */

static eddy_series_t *add_series(eddy_registry_t *reg, eddy_metric_type_t type, const char *name,
                                 const char *help, const double *buckets, size_t n_buckets,
                                 char *errstr, size_t errstr_size, bool *ok) {
  if (!reg || !*ok) return NULL;
  eddy_metric_t *m = eddy_registry_add(reg, type, name, help, "", buckets, n_buckets, errstr, errstr_size);
  if (!m) {
    *ok = false;
    return NULL;
  }
  return eddy_metric_series(m, NULL);
}

static bool register_metrics(eddy_trainer_t *t, char *errstr, size_t errstr_size) {
  static const double pub_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  eddy_registry_t *r = t->reg;
  trainer_metrics_t *x = &t->mx;
  bool ok = true;
  const eddy_metric_type_t C = EDDY_METRIC_COUNTER, G = EDDY_METRIC_GAUGE;
#define S(var, type, name, help) x->var = add_series(r, type, name, help, NULL, 0, errstr, errstr_size, &ok)
  S(steps, C, "eddy_train_steps_total", "Optimizer steps applied");
  S(examples, C, "eddy_train_examples_total", "Fresh events trained on (in applied steps)");
  S(replay_examples, C, "eddy_train_replay_examples_total", "Replayed events trained on");
  S(skipped, C, "eddy_train_skipped_steps_total", "Optimizer steps skipped for Inf/NaN gradients");
  S(loss_scale, G, "eddy_train_loss_scale", "Current loss scale (1 unless precision is fp16)");
  S(paused, G, "eddy_train_paused", "1 while training is paused");
  S(degraded, G, "eddy_train_degraded", "1 after NaN loss or too many skipped steps: no publishing");
  S(holdout_events, G, "eddy_train_holdout_events", "Held-out events kept for the quality gate");
  S(lag, G, "eddy_train_lag_events", "Events in the replay buffer not trained yet");
  S(missed, C, "eddy_train_evicted_untrained_total", "Events evicted from the buffer before training");
  S(skip_range, C, "eddy_train_skipped_events_total", "Events skipped by a retrain rollback's range");
  if (t->cfg.spec.head == EDDY_HEAD_SQUARED) {
    S(preq_mse, G, "eddy_prequential_mse", "Prequential squared error, sliding window");
  } else {
    S(preq_logloss, G, "eddy_prequential_logloss", "Prequential log loss, sliding window");
    S(preq_accuracy, G, "eddy_prequential_accuracy", "Prequential accuracy, sliding window");
  }
  S(version, G, "eddy_snapshot_version", "Version named by CURRENT (being served)");
  S(published, C, "eddy_snapshot_published_total", "Versions written (promoted or rejected)");
  S(rejected, C, "eddy_snapshot_rejected_total", "Versions rejected by the quality gate");
  S(publish_errors, C, "eddy_snapshot_publish_errors_total", "Publishes abandoned on an error");
  S(announce_errors, C, "eddy_snapshot_announce_errors_total",
    "Announcements on snapshot.topic that failed");
  S(rollbacks, C, "eddy_snapshot_rollbacks_total", "Rollbacks that moved CURRENT or the trainer");
  S(drift, C, "eddy_drift_detected_total", "Drift alarms of the detector on the prequential loss");
  S(rejected_run, G, "eddy_snapshot_rejected_consecutive", "Versions rejected by the gate in a row");
  S(ahead_run, G, "eddy_snapshot_trainer_ahead_versions",
    "Rejected versions in a row that scored better than CURRENT on the same holdout events");
#undef S
  uint32_t classes = t->cfg.spec.head == EDDY_HEAD_SOFTMAX ? t->cfg.spec.classes
                     : t->cfg.spec.head == EDDY_HEAD_LOGISTIC ? 2
                                                               : 0;
  if (classes && ok) {
    eddy_metric_t *fam = eddy_registry_add(r, G, "eddy_prequential_class_accuracy",
                                           "Prequential accuracy per class of the label, sliding window (the "
                                           "first 64 classes)",
                                           "class", NULL, 0, errstr, errstr_size);
    ok = fam != NULL;
    for (uint32_t k = 0; ok && k < classes && k < TRAINER_CLASS_SERIES; k++) {
      char label[16];
      snprintf(label, sizeof label, "%u", k);
      const char *values[1] = {label};
      x->class_accuracy[k] = eddy_metric_series(fam, values);
    }
  }
  x->publish_seconds = add_series(r, EDDY_METRIC_HISTOGRAM, "eddy_snapshot_publish_seconds",
                                  "Time to publish a version: write, fsync, commit, CURRENT, announce",
                                  pub_buckets, sizeof pub_buckets / sizeof pub_buckets[0], errstr,
                                  errstr_size, &ok);
  return ok;
}

/* ---- restore ---- */

static uint32_t reservoir_classes(const eddy_config_t *cfg) {
  switch (cfg->spec.head) {
    case EDDY_HEAD_SOFTMAX: return cfg->spec.classes;
    case EDDY_HEAD_LOGISTIC: return 2;
    default: return 1;
  }
}

static uint64_t meta_or(eddy_replay_t *r, const char *key, uint64_t dflt, bool *found) {
  uint64_t v;
  bool ok = eddy_replay_meta_get(r, key, &v) == EDDY_OK;
  if (found) *found = ok;
  return ok ? v : dflt;
}

static bool version_exists(eddy_store_t *s, uint64_t v) {
  char path[4096];
  struct stat st;
  return v && eddy_store_path(s, v, NULL, path, sizeof path) == EDDY_OK && stat(path, &st) == 0;
}

/* Verifies version v and loads its state into the learner; m receives its manifest. */
static eddy_err_t load_version(eddy_trainer_t *t, uint64_t v, eddy_manifest_t *m, char *errstr,
                               size_t errstr_size) {
  char dir[4096], state[4096], why[1024];
  eddy_store_path(t->store, v, NULL, dir, sizeof dir);
  eddy_store_path(t->store, v, EDDY_STORE_STATE, state, sizeof state);
  eddy_err_t err = eddy_store_verify(dir, m, why, sizeof why);
  if (!err) err = eddy_learner_load_state(t->learner, state, why, sizeof why);
  if (err)
    return eddy_errf(err, errstr, errstr_size, "state file %s is corrupt: %s", state, why);
  return EDDY_OK;
}

/* A new learner in place of one whose load may have failed half way. */
static eddy_err_t renew_learner(eddy_trainer_t *t, char *errstr, size_t errstr_size) {
  eddy_learner_destroy(t->learner);
  t->learner = eddy_learner_new(&t->cfg.spec, &t->cfg.train, t->cfg.device, errstr, errstr_size);
  return t->learner ? EDDY_OK : EDDY_ERR_BACKEND;
}

/* New weights from seq first: no skip range, and no pending retrain rollback (a store that was
 * emptied must not resume a rollback recorded for its old versions). One write. */
static eddy_err_t start_new_lineage(eddy_trainer_t *t, uint64_t first, char *errstr, size_t errstr_size) {
  t->cursor = first;
  t->skip_from = 1, t->skip_to = 0;
  t->hold_from = 0;
  const eddy_replay_meta_t meta[] = {{TRAINER_META_HOLD_FROM, 0},
                                     {TRAINER_META_SKIP_FROM, 1},
                                     {TRAINER_META_SKIP_TO, 0},
                                     {TRAINER_META_RB_LATEST, UINT64_MAX}}; /* matches no version */
  char why[512];
  eddy_err_t err = eddy_replay_meta_put_batch(t->buffer, meta, sizeof meta / sizeof meta[0], why, sizeof why);
  if (err) return eddy_errf(err, errstr, errstr_size, "starting a new lineage: %s", why);
  return EDDY_OK;
}

/* The versions to restore from, in order: the target of a retrain rollback with no version
 * published since (the lineage head), then every version newest first. *n gets the count. */
static uint64_t *restore_order(eddy_trainer_t *t, const eddy_store_entry_t *e, size_t count, size_t *n) {
  uint64_t *order = malloc((count + 1) * sizeof *order);
  *n = 0;
  if (!order) return NULL;
  bool have_rb = false;
  uint64_t rb_version = meta_or(t->buffer, TRAINER_META_RB_VERSION, 0, &have_rb);
  uint64_t rb_latest = meta_or(t->buffer, TRAINER_META_RB_LATEST, 0, NULL);
  if (have_rb && rb_latest == e[0].version && rb_version != e[0].version && version_exists(t->store, rb_version)) {
    EDDY_INFO(LOG_MOD, "resuming the retrain rollback to v%06" PRIu64 " (no version published since)", rb_version);
    order[(*n)++] = rb_version;
  }
  for (size_t i = 0; i < count; i++)
    if (!*n || e[i].version != order[0]) order[(*n)++] = e[i].version;
  return order;
}

/* Loads the first version of the restore order that verifies and loads, skipping the others
 * with a warning each. *v gets it (0: none did; errstr then names the first problem). */
static eddy_err_t restore_newest_good(eddy_trainer_t *t, const uint64_t *order, size_t n, uint64_t *v,
                                      eddy_manifest_t *m, char *errstr, size_t errstr_size) {
  char why[1536];
  *v = 0;
  for (size_t i = 0; i < n; i++) {
    eddy_err_t err = load_version(t, order[i], m, i ? why : errstr, i ? sizeof why : errstr_size);
    if (!err) {
      *v = order[i];
      return EDDY_OK;
    }
    eddy_manifest_clear(m);
    EDDY_WARN(LOG_MOD, "v%06" PRIu64 " skipped at restore: %s", order[i], i ? why : errstr);
    if ((err = renew_learner(t, errstr, errstr_size)) != EDDY_OK) return err;
  }
  if (n > 1) {
    size_t used = strlen(errstr);
    if (used + 1 < errstr_size)
      snprintf(errstr + used, errstr_size - used, " (and the %zu older version(s) do not load either)", n - 1);
  }
  return EDDY_ERR_FORMAT;
}

static eddy_err_t restore(eddy_trainer_t *t, const eddy_trainer_opts_t *opts, char *errstr,
                          size_t errstr_size) {
  eddy_replay_stats_t bs = eddy_replay_stats(t->buffer);
  eddy_store_entry_t *entries = NULL;
  size_t count = 0, n = 0;
  char why[1024];
  eddy_err_t err = eddy_store_list(t->store, &entries, &count, why, sizeof why);
  if (err) return eddy_errf(err, errstr, errstr_size, "%s", why);
  if (count == 0) {
    EDDY_INFO(LOG_MOD, "%s: no versions in %s: starting from new weights at buffer seq %" PRIu64,
              t->cfg.model_name, eddy_store_dir(t->store), bs.first_seq);
    return start_new_lineage(t, bs.first_seq, errstr, errstr_size);
  }
  uint64_t *order = restore_order(t, entries, count, &n);
  eddy_store_list_free(entries, count);
  if (!order) return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "trainer: out of memory");
  uint64_t v = 0;
  eddy_manifest_t m;
  eddy_manifest_init(&m);
  err = restore_newest_good(t, order, n, &v, &m, errstr, errstr_size);
  free(order);
  if (err) {
    eddy_manifest_clear(&m);
    if (err != EDDY_ERR_FORMAT) return err;
    if (!opts || !opts->fresh) {
      size_t used = strlen(errstr);
      if (used + 1 < errstr_size)
        snprintf(errstr + used, errstr_size - used, "; start with --fresh to begin from new weights");
      return EDDY_ERR_FORMAT;
    }
    EDDY_WARN(LOG_MOD, "%s; --fresh: starting from new weights at buffer seq %" PRIu64 " (new lineage)",
              errstr, bs.first_seq);
    return start_new_lineage(t, bs.first_seq, errstr, errstr_size);
  }
  if (opts && opts->fresh)
    EDDY_INFO(LOG_MOD, "--fresh ignored: v%06" PRIu64 " has a usable state", v);
  t->cursor = m.buffer_cursor;
  t->examples = m.examples;
  t->parent = v;
  t->skip_from = meta_or(t->buffer, TRAINER_META_SKIP_FROM, 1, NULL);
  t->skip_to = meta_or(t->buffer, TRAINER_META_SKIP_TO, 0, NULL);
  t->hold_from = meta_or(t->buffer, TRAINER_META_HOLD_FROM, 0, NULL);
  if (t->cursor > bs.next_seq) {
    EDDY_WARN(LOG_MOD, "v%06" PRIu64 "'s buffer cursor %" PRIu64 " is past the buffer's next seq %" PRIu64
                       " (buffer recreated?): training from seq %" PRIu64,
              v, t->cursor, bs.next_seq, bs.first_seq);
    t->cursor = bs.first_seq;
  }
  char skip[96] = "";
  if (t->skip_to >= t->skip_from && t->skip_to >= t->cursor)
    snprintf(skip, sizeof skip, ", skipping seq %" PRIu64 "..%" PRIu64, t->skip_from, t->skip_to);
  EDDY_INFO(LOG_MOD, "%s: restored v%06" PRIu64 " (%s): step %" PRIu64 ", %" PRIu64
                     " examples, buffer cursor %" PRIu64 " of %" PRIu64 "%s",
            t->cfg.model_name, v, eddy_version_status_name(m.status), eddy_learner_step_count(t->learner),
            m.examples, t->cursor, bs.next_seq, skip);
  eddy_manifest_clear(&m);
  return EDDY_OK;
}

/* CURRENT must name a promoted version that verifies (else the store falls back to the newest
 * that does, see eddy_store_check_current); a repair is announced like a rollback, so that
 * replicas following snapshot.topic serve the version CURRENT names now. */
static eddy_err_t check_current(eddy_trainer_t *t, char *errstr, size_t errstr_size) {
  eddy_store_current_check_t c;
  eddy_err_t err = eddy_store_check_current(t->store, &c, errstr, errstr_size);
  if (err || !c.repaired || !c.version) return err;
  eddy_manifest_t m;
  eddy_manifest_init(&m);
  char why[512];
  if (eddy_store_load_manifest(t->store, c.version, &m, why, sizeof why) == EDDY_OK) {
    pthread_mutex_lock(&t->cur_mu);
    trainer_announce(t, &m, "repair");
    pthread_mutex_unlock(&t->cur_mu);
  }
  eddy_manifest_clear(&m);
  return EDDY_OK;
}

/* ---- lifecycle ---- */

/* Consumer-only librdkafka properties: left out of the announcement producer's configuration so
 * that librdkafka does not warn about each of them at every start. */
static bool consumer_only(const char *key) {
  static const char *const prefixes[] = {"group.", "session.timeout.ms", "heartbeat.interval.ms",
                                         "partition.assignment.strategy", "max.poll.interval.ms",
                                         "enable.auto.", "auto.commit.", "auto.offset.reset",
                                         "enable.partition.eof", "fetch.", "max.partition.fetch.bytes",
                                         "queued.", "isolation.level", "check.crcs",
                                         "coordinator.query.interval.ms", "consume.callback.max.messages",
                                         "offset.store."};
  for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
    if (!strncmp(key, prefixes[i], strlen(prefixes[i]))) return true;
  return false;
}

static eddy_producer_t *announcer_new(const eddy_config_t *c, char *errstr, size_t errstr_size) {
  eddy_config_t pc = *c;
  pc.kafka = c->n_kafka ? malloc(c->n_kafka * sizeof *c->kafka) : NULL;
  pc.n_kafka = 0;
  if (c->n_kafka && !pc.kafka) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "trainer: out of memory");
    return NULL;
  }
  for (size_t i = 0; i < c->n_kafka; i++)
    if (!consumer_only(c->kafka[i].key)) pc.kafka[pc.n_kafka++] = c->kafka[i];
  eddy_producer_t *p = eddy_producer_new(&pc, NULL, errstr, errstr_size);
  free(pc.kafka);
  return p;
}

static bool config_copy(eddy_config_t *dst, const eddy_config_t *src) {
  *dst = *src;
  dst->kafka = NULL;
  if (src->n_kafka) {
    dst->kafka = malloc(src->n_kafka * sizeof *src->kafka);
    if (!dst->kafka) {
      dst->n_kafka = 0;
      return false;
    }
    memcpy(dst->kafka, src->kafka, src->n_kafka * sizeof *src->kafka);
  }
  return true;
}

static bool init_sync(eddy_trainer_t *t) {
  pthread_condattr_t ca;
  if (pthread_condattr_init(&ca) != 0) return false;
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  bool ok = pthread_mutex_init(&t->mu, NULL) == 0 && pthread_mutex_init(&t->cur_mu, NULL) == 0 &&
            pthread_mutex_init(&t->rb_mu, NULL) == 0 && pthread_cond_init(&t->cv, &ca) == 0 &&
            pthread_cond_init(&t->parked_cv, &ca) == 0 && pthread_cond_init(&t->pub_cv, &ca) == 0 &&
            pthread_cond_init(&t->done_cv, &ca) == 0 && pthread_cond_init(&t->sample_cv, &ca) == 0;
  pthread_condattr_destroy(&ca);
  return ok;
}

static void free_parts(eddy_trainer_t *t) {
  eddy_ingest_destroy(t->ingest);
  if (t->producer) {
    char why[256];
    eddy_producer_poll(t->producer, 0); /* serves a report of every broker down */
    bool down = eddy_producer_brokers_down(t->producer); /* then a wait would deliver nothing */
    if (eddy_producer_flush(t->producer, down ? 0 : 2000, why, sizeof why) != EDDY_OK)
      EDDY_WARN(LOG_MOD, "announcements: %s%s", why,
                down ? " (every broker is down: abandoned; replicas find CURRENT by polling)" : "");
    eddy_producer_destroy(t->producer);
  }
  eddy_learner_destroy(t->learner);
  eddy_store_destroy(t->store);
  eddy_replay_destroy(t->buffer);
  eddy_prequential_destroy(t->preq);
  eddy_batch_destroy(t->fresh);
  eddy_batch_destroy(t->replay);
  free(t->pred);
  if (t->rd)
    for (size_t i = 0; i < t->cfg.batch_size; i++) eddy_event_free(&t->rd[i]);
  free(t->rd);
  free(t->rd_seqs);
  eddy_event_free(&t->sample);
  if (t->samples)
    for (size_t i = 0; i < t->samples_cap; i++) eddy_event_free(&t->samples[i]);
  free(t->samples);
  free(t->fresh_seqs);
  trainer_holdout_free(t);
  trainer_gate_forget(t);
  if (t->val)
    for (size_t i = 0; i < t->val_n; i++) eddy_event_free(&t->val[i]);
  free(t->val);
  free(t->st_class_acc);
  free(t->st_class_n);
  free(t->scratch);
  eddy_replicas_destroy(t->replicas);
  eddy_timeseries_destroy(t->series);
  trainer_ranks_free(t);
  eddy_config_free(&t->cfg);
}

/* Frees the parts, the synchronisation objects and t itself (threads already joined). */
static void trainer_free(eddy_trainer_t *t) {
  free_parts(t);
  pthread_mutex_destroy(&t->mu);
  pthread_mutex_destroy(&t->cur_mu);
  pthread_mutex_destroy(&t->rb_mu);
  pthread_cond_destroy(&t->cv);
  pthread_cond_destroy(&t->parked_cv);
  pthread_cond_destroy(&t->pub_cv);
  pthread_cond_destroy(&t->done_cv);
  pthread_cond_destroy(&t->sample_cv);
  free(t);
}

eddy_trainer_t *eddy_trainer_new(const eddy_config_t *cfg, const eddy_trainer_opts_t *opts,
                                 eddy_registry_t *metrics, char *errstr, size_t errstr_size) {
  if (!cfg) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "trainer: NULL config");
    return NULL;
  }
  eddy_trainer_t *t = calloc(1, sizeof *t);
  if (!t || !init_sync(t)) {
    free(t);
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "trainer: out of memory");
    return NULL;
  }
  t->start_time = eddy_clock_mono_s();
  t->reg = metrics;
  eddy_event_init(&t->sample);
  if (!config_copy(&t->cfg, cfg)) goto nomem;
  if (trainer_ranks_init(t, opts ? opts->ranks : NULL, errstr, errstr_size) != EDDY_OK) goto fail;
  const eddy_config_t *c = &t->cfg;
  if (metrics && !register_metrics(t, errstr, errstr_size)) goto fail;
  if (!trainer_sampler_init(t, errstr, errstr_size)) goto fail;
  if (!trainer_storage_init(t, errstr, errstr_size)) goto fail;

  uint32_t outputs = eddy_model_outputs(&c->spec);
  double ratio = c->replay_ratio;
  size_t replay_cap = (size_t)ceil(ratio / (1.0 - ratio) * c->batch_size) + 1;
  size_t bs = c->batch_size;
  t->preq = eddy_prequential_new(c->spec.head, outputs, c->metrics_window);
  t->fresh = eddy_batch_new(c->spec.dense_dim, bs);
  t->replay = eddy_batch_new(c->spec.dense_dim, replay_cap > bs ? replay_cap : bs);
  t->pred_cap = (replay_cap > bs ? replay_cap : bs) * outputs;
  t->pred = malloc(t->pred_cap * sizeof *t->pred);
  t->rd = calloc(bs, sizeof *t->rd);
  t->rd_seqs = calloc(bs, sizeof *t->rd_seqs);
  t->fresh_seqs = calloc(bs, sizeof *t->fresh_seqs);
  t->samples_cap = t->replay ? t->replay->cap : 0;
  t->samples = t->samples_cap ? calloc(t->samples_cap, sizeof *t->samples) : NULL;
  t->st_classes = t->preq ? eddy_prequential_classes(t->preq) : 0;
  if (t->st_classes > TRAINER_STATUS_CLASSES) t->st_classes = TRAINER_STATUS_CLASSES;
  t->st_class_acc = calloc(t->st_classes ? t->st_classes : 1, sizeof *t->st_class_acc);
  t->st_class_n = calloc(t->st_classes ? t->st_classes : 1, sizeof *t->st_class_n);
  if (!t->preq || !t->fresh || !t->replay || !t->pred || !t->rd || !t->rd_seqs || !t->fresh_seqs ||
      !t->samples || !t->st_class_acc || !t->st_class_n || !trainer_holdout_init(t))
    goto nomem;
  for (size_t i = 0; i < bs; i++) eddy_event_init(&t->rd[i]);
  for (size_t i = 0; i < t->samples_cap; i++) eddy_event_init(&t->samples[i]);
  for (uint32_t k = 0; k < t->st_classes; k++) t->st_class_acc[k] = NAN;
  eddy_drift_init(&t->drift, c->drift_slack, c->drift_threshold);
  if (trainer_validation_load(t, errstr, errstr_size) != EDDY_OK) goto fail;
  double thr = c->holdout_fraction * 18446744073709551616.0;
  t->hold_threshold = thr >= 18446744073709549568.0 ? UINT64_MAX : (uint64_t)thr;
  t->rng = c->train.seed ^ 0x9e3779b97f4a7c15ull;

  eddy_replay_opts_t ro = {.path = c->buffer_path,
                           .capacity_events = c->buffer_capacity_events,
                           .capacity_bytes = c->buffer_capacity_bytes,
                           .evict = true,
                           .sync = c->buffer_sync,
                           .reservoir_size = c->reservoir_size,
                           .classes = reservoir_classes(c),
                           .seed = c->train.seed};
  if (!(t->buffer = eddy_replay_new(&ro, errstr, errstr_size))) goto fail;
  if (t->rk.rank == 0 &&  /* with ranks, rank 0 alone owns the store */
      !(t->store = eddy_store_new(c->snapshot_store, c->model_name, EDDY_STORE_WRITER, errstr, errstr_size)))
    goto fail;
  if (!(t->learner = eddy_learner_new(&c->spec, &c->train, c->device, errstr, errstr_size))) goto fail;
  if (t->rk.rank == 0 && restore(t, opts, errstr, errstr_size) != EDDY_OK) goto fail;
  if (trainer_ranks_start(t, errstr, errstr_size) != EDDY_OK) goto fail;
  trainer_holdout_refill(t);
  t->last_pub_step = eddy_learner_step_count(t->learner);
  t->last_pub_time = eddy_clock_mono_s();
  t->st_last_published = 0;

  if (t->rk.rank != 0) {
    /* announcements are rank 0's */
  } else if (eddy_config_kafka(c, "bootstrap.servers") || eddy_config_kafka(c, "metadata.broker.list")) {
    if (!(t->producer = announcer_new(c, errstr, errstr_size))) goto fail;
  } else {
    EDDY_WARN(LOG_MOD, "no kafka.bootstrap.servers: promotions are not announced on %s", c->snapshot_topic);
  }
  if (t->store && check_current(t, errstr, errstr_size) != EDDY_OK) goto fail; /* rank 0's store */
  if (!(opts && opts->no_ingest)) {
    eddy_ingest_opts_t io = {.rank = (uint32_t)t->rk.rank, .ranks = (uint32_t)t->rk.ranks};
    if (!(t->ingest = eddy_ingest_new(c, t->buffer, &io, metrics, errstr, errstr_size))) goto fail;
  }
  uint64_t cur = 0;
  char why[256];
  if (t->store && eddy_store_current(t->store, &cur, why, sizeof why) == EDDY_OK)
    eddy_series_set(t->mx.version, (double)cur);
  trainer_publish_status(t);
  return t;
nomem:
  eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "trainer: out of memory");
fail:
  trainer_free(t);
  return NULL;
}

static void *ingest_main(void *arg) {
  eddy_trainer_t *t = arg;
  char why[1024];
  eddy_err_t err = eddy_ingest_run(t->ingest, NULL, why, sizeof why);
  if (err) trainer_set_fatal(t, err, "ingest stopped: %s", why);
  return NULL;
}

eddy_err_t eddy_trainer_start(eddy_trainer_t *t, char *errstr, size_t errstr_size) {
  if (!t) return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "trainer: NULL");
  if (t->train_started) return eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "trainer: already started");
  int rc;
  if ((rc = pthread_create(&t->pub_th, NULL, trainer_publish_main, t)) != 0)
    return eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "trainer: publishing thread: %s", strerror(rc));
  t->pub_started = true;
  pthread_mutex_lock(&t->mu);
  t->train_running = true;
  pthread_mutex_unlock(&t->mu);
  if ((rc = pthread_create(&t->train_th, NULL, t->rk.coll ? trainer_ranks_train_main : trainer_train_main, t)) != 0) {
    pthread_mutex_lock(&t->mu);
    t->train_running = false;
    pthread_mutex_unlock(&t->mu);
    return eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "trainer: training thread: %s", strerror(rc));
  }
  t->train_started = true;
  if (t->ingest) {
    if ((rc = pthread_create(&t->ingest_th, NULL, ingest_main, t)) != 0)
      return eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "trainer: ingest thread: %s", strerror(rc));
    t->ingest_started = true;
  }
  if (t->rk.rank == 0) { /* the dashboard's data: rank 0's */
    if ((rc = pthread_create(&t->sample_th, NULL, trainer_sample_main, t)) != 0)
      return eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "trainer: sampler thread: %s", strerror(rc));
    t->sample_started = true;
  }
  EDDY_INFO(LOG_MOD, "%s: training on %s (%s), batch %u x %u, replay %.2f %s, holdout %.3f; "
                     "snapshots every %u steps / %u s into %s",
            t->cfg.model_name, eddy_learner_backend(t->learner), eddy_learner_precision_info(t->learner),
            t->cfg.batch_size, t->cfg.accum_steps, t->cfg.replay_ratio,
            t->cfg.replay_strategy == EDDY_REPLAY_RECENT     ? "recent"
            : t->cfg.replay_strategy == EDDY_REPLAY_BALANCED ? "balanced"
                                                              : "uniform",
            t->cfg.holdout_fraction, t->cfg.snapshot_every_steps, t->cfg.snapshot_every_seconds,
            t->store ? eddy_store_dir(t->store) : "rank 0's store");
  return EDDY_OK;
}

void eddy_trainer_destroy(eddy_trainer_t *t) {
  if (!t) return;
  pthread_mutex_lock(&t->mu);
  t->stop = true;
  pthread_cond_broadcast(&t->cv);
  pthread_cond_broadcast(&t->pub_cv);
  pthread_cond_broadcast(&t->done_cv);
  pthread_cond_broadcast(&t->parked_cv);
  pthread_cond_broadcast(&t->sample_cv);
  pthread_mutex_unlock(&t->mu);
  if (t->sample_started) pthread_join(t->sample_th, NULL);
  if (t->ingest) eddy_ingest_stop(t->ingest);
  if (t->train_started) pthread_join(t->train_th, NULL);
  if (t->pub_started) pthread_join(t->pub_th, NULL); /* finishes a queued publish first */
  if (t->ingest_started) pthread_join(t->ingest_th, NULL);
  if (t->job) { /* written but never published (no publishing thread) */
    eddy_store_abort(t->job->txn);
    eddy_manifest_clear(&t->job->m);
    trainer_holdout_set_free(&t->job->hold);
    free(t->job);
  }
  trainer_free(t);
}

eddy_err_t eddy_trainer_health(eddy_trainer_t *t, char *errstr, size_t errstr_size) {
  if (!t) return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "trainer: NULL");
  pthread_mutex_lock(&t->mu);
  eddy_err_t err = t->fatal;
  if (err) eddy_errf(err, errstr, errstr_size, "%s", t->fatal_msg);
  pthread_mutex_unlock(&t->mu);
  return err;
}

bool eddy_trainer_stopped(eddy_trainer_t *t) {
  if (!t) return false;
  pthread_mutex_lock(&t->mu);
  bool stopped = t->rk.stopped;
  pthread_mutex_unlock(&t->mu);
  return stopped;
}

eddy_store_t *eddy_trainer_store(eddy_trainer_t *t) { return t ? t->store : NULL; }
struct eddy_replay *eddy_trainer_buffer(eddy_trainer_t *t) { return t ? t->buffer : NULL; }
eddy_replicas_t *eddy_trainer_replicas(eddy_trainer_t *t) { return t ? t->replicas : NULL; }
eddy_timeseries_t *eddy_trainer_timeseries(eddy_trainer_t *t) { return t ? t->series : NULL; }

/* ---- status ---- */

static void json_num(cJSON *o, const char *key, double v) {
  if (isfinite(v)) cJSON_AddNumberToObject(o, key, v);
  else cJSON_AddNullToObject(o, key);
}

static void json_version(cJSON *o, const char *key, uint64_t v) {
  if (v) cJSON_AddNumberToObject(o, key, (double)v);
  else cJSON_AddNullToObject(o, key);
}

char *eddy_trainer_status_json(eddy_trainer_t *t) {
  if (!t) return NULL;
  eddy_replay_stats_t bs = eddy_replay_stats(t->buffer);
  uint64_t cur = 0;
  char why[256];
  if (eddy_store_current(t->store, &cur, why, sizeof why) != EDDY_OK) cur = 0;
  char storage[1400];
  bool storage_bad = eddy_trainer_storage(t, storage, sizeof storage) != EDDY_OK;
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  pthread_mutex_lock(&t->mu);
  const char *state = t->fatal                      ? "failed"
                      : t->degraded || storage_bad ? "degraded"
                      : t->paused                   ? "paused"
                                                    : "running";
  cJSON_AddStringToObject(o, "model", t->cfg.model_name);
  cJSON_AddStringToObject(o, "state", state);
  if (t->degraded || storage_bad) {
    char reason[1700];
    snprintf(reason, sizeof reason, "%s%s%s", t->degraded ? t->degraded_why : "",
             t->degraded && storage_bad ? "; " : "", storage_bad ? storage : "");
    cJSON_AddStringToObject(o, "degraded_reason", reason);
  }
  if (t->fatal) cJSON_AddStringToObject(o, "error", t->fatal_msg);
  cJSON_AddNumberToObject(o, "step", (double)t->st_step);
  cJSON_AddNumberToObject(o, "examples", (double)t->st_examples);
  cJSON_AddNumberToObject(o, "replay_examples", (double)t->st_replay);
  cJSON *b = cJSON_AddObjectToObject(o, "buffer");
  cJSON_AddNumberToObject(b, "events", (double)bs.events);
  cJSON_AddNumberToObject(b, "first_seq", (double)bs.first_seq);
  cJSON_AddNumberToObject(b, "cursor", (double)t->st_cursor);
  cJSON_AddNumberToObject(b, "next_seq", (double)bs.next_seq);
  cJSON_AddNumberToObject(b, "untrained", (double)(bs.next_seq > t->st_cursor ? bs.next_seq - t->st_cursor : 0));
  if (t->skip_to >= t->skip_from) {
    cJSON *sk = cJSON_AddArrayToObject(b, "skip");
    cJSON_AddItemToArray(sk, cJSON_CreateNumber((double)t->skip_from));
    cJSON_AddItemToArray(sk, cJSON_CreateNumber((double)t->skip_to));
  } else {
    cJSON_AddNullToObject(b, "skip");
  }
  cJSON *ing = cJSON_AddObjectToObject(o, "ingest");
  if (t->ingest) {
    eddy_ingest_stats_t is = eddy_ingest_stats(t->ingest);
    cJSON_AddNumberToObject(ing, "ok", (double)is.events_ok);
    cJSON_AddNumberToObject(ing, "invalid", (double)is.events_invalid);
    if (is.lag >= 0) cJSON_AddNumberToObject(ing, "lag", (double)is.lag);
    else cJSON_AddNullToObject(ing, "lag");
    cJSON_AddNumberToObject(ing, "assigned", is.assigned);
    cJSON_AddBoolToObject(ing, "paused", is.paused);
  } else {
    cJSON_AddBoolToObject(ing, "enabled", false);
  }
  cJSON *p = cJSON_AddObjectToObject(o, "prequential");
  json_num(p, "logloss", t->st_preq.logloss);
  json_num(p, "accuracy", t->st_preq.accuracy);
  json_num(p, "mse", t->st_preq.mse);
  cJSON_AddNumberToObject(p, "n", (double)t->st_preq.n);
  cJSON_AddNumberToObject(p, "window", t->cfg.metrics_window);
  if (t->st_classes) {
    cJSON *pc = cJSON_AddArrayToObject(p, "per_class");
    for (uint32_t k = 0; pc && k < t->st_classes; k++) {
      if (!t->st_class_n[k]) continue;
      cJSON *e = cJSON_CreateObject();
      if (!e) break;
      cJSON_AddItemToArray(pc, e);
      cJSON_AddNumberToObject(e, "class", k);
      json_num(e, "accuracy", t->st_class_acc[k]);
      cJSON_AddNumberToObject(e, "n", (double)t->st_class_n[k]);
    }
  }
  int64_t now_ms = eddy_clock_wall_ms();
  cJSON *h = cJSON_AddObjectToObject(o, "holdout");
  cJSON_AddNumberToObject(h, "events", (double)t->st_hold_n);
  cJSON_AddNumberToObject(h, "capacity", t->cfg.gate_holdout_events);
  cJSON_AddNumberToObject(h, "fraction", t->cfg.holdout_fraction);
  cJSON_AddNumberToObject(h, "from_seq", (double)t->st_hold_from);
  if (t->st_hold_n) {
    cJSON *sq = cJSON_AddArrayToObject(h, "seqs");
    cJSON_AddItemToArray(sq, cJSON_CreateNumber((double)t->st_hold_oldest_seq));
    cJSON_AddItemToArray(sq, cJSON_CreateNumber((double)t->st_hold_newest_seq));
  } else {
    cJSON_AddNullToObject(h, "seqs");
  }
  json_num(h, "oldest_age_seconds", t->st_hold_oldest_ms > 0 ? (now_ms - t->st_hold_oldest_ms) / 1e3 : NAN);
  json_num(h, "newest_age_seconds", t->st_hold_newest_ms > 0 ? (now_ms - t->st_hold_newest_ms) / 1e3 : NAN);
  cJSON_AddNumberToObject(h, "max_age_seconds", t->cfg.gate_holdout_max_age);
  cJSON *d = cJSON_AddObjectToObject(o, "drift");
  cJSON_AddNumberToObject(d, "detected", (double)t->n_drift);
  cJSON_AddBoolToObject(d, "rising", t->st_drift_warning);
  if (t->n_drift) {
    char when[40];
    eddy_manifest_format_time(t->last_drift_ms, when, sizeof when);
    cJSON_AddNumberToObject(d, "last_seq", (double)t->last_drift_seq);
    cJSON_AddStringToObject(d, "last_at", when);
  } else {
    cJSON_AddNullToObject(d, "last_seq");
    cJSON_AddNullToObject(d, "last_at");
  }
  cJSON *g = cJSON_AddObjectToObject(o, "gate");
  cJSON_AddNumberToObject(g, "rejected_in_a_row", t->rejected_run);
  cJSON_AddNumberToObject(g, "ahead_of_current", t->ahead_run);
  if (t->ahead_run) {
    char text[256];
    snprintf(text, sizeof text,
             "the trainer scored better than CURRENT (v%06" PRIu64 ") on the same holdout events for the last %u "
             "version(s), rejected by: %s",
             t->ahead_of, t->ahead_run, t->last_failed[0] ? t->last_failed : "?");
    cJSON_AddStringToObject(g, "note", text);
  } else {
    cJSON_AddNullToObject(g, "note");
  }
  json_num(o, "loss_scale", t->st_loss_scale);
  cJSON_AddNumberToObject(o, "skipped_steps", (double)t->st_skipped);
  json_version(o, "current_version", cur);
  json_version(o, "last_published", t->st_last_published);
  json_version(o, "parent", t->parent);
  cJSON *s = cJSON_AddObjectToObject(o, "snapshots");
  cJSON_AddNumberToObject(s, "published", (double)t->n_published);
  cJSON_AddNumberToObject(s, "rejected", (double)t->n_rejected);
  cJSON_AddNumberToObject(s, "errors", (double)t->n_publish_errors);
  cJSON_AddNumberToObject(s, "every_steps", t->cfg.snapshot_every_steps);
  cJSON_AddNumberToObject(s, "every_seconds", t->cfg.snapshot_every_seconds);
  cJSON_AddStringToObject(s, "store", eddy_store_dir(t->store));
  pthread_mutex_unlock(&t->mu);
  cJSON_AddStringToObject(o, "backend", eddy_learner_backend(t->learner));
  cJSON_AddStringToObject(o, "precision", eddy_learner_precision_info(t->learner));
  trainer_ranks_status(t, o);
  json_num(o, "uptime_seconds", eddy_clock_mono_s() - t->start_time);
  char *text = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  return text;
}

/* ---- control ---- */

void eddy_trainer_pause(eddy_trainer_t *t) {
  if (!t) return;
  pthread_mutex_lock(&t->mu);
  bool was = t->paused;
  t->paused = true;
  pthread_mutex_unlock(&t->mu);
  eddy_series_set(t->mx.paused, 1);
  if (!was) EDDY_INFO(LOG_MOD, "training paused (ingest goes on)");
}

void eddy_trainer_resume(eddy_trainer_t *t) {
  if (!t) return;
  pthread_mutex_lock(&t->mu);
  bool was = t->paused;
  t->paused = false;
  pthread_cond_broadcast(&t->cv);
  pthread_mutex_unlock(&t->mu);
  eddy_series_set(t->mx.paused, 0);
  if (was) EDDY_INFO(LOG_MOD, "training resumed");
}

eddy_err_t eddy_trainer_snapshot(eddy_trainer_t *t, int timeout_ms, uint64_t *version, char *errstr,
                                 size_t errstr_size) {
  if (!t) return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "trainer: NULL");
  if (version) *version = 0;
  if (timeout_ms < 0) timeout_ms = 0;
  struct timespec dl = eddy_clock_deadline(CLOCK_MONOTONIC, timeout_ms);
  pthread_mutex_lock(&t->mu);
  eddy_err_t err = EDDY_OK;
  if (t->degraded) {
    err = eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "trainer degraded (%s): publishing stopped",
                    t->degraded_why);
  } else if (t->fatal || t->stop || !t->train_running) {
    err = eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "trainer not running%s%s", t->fatal ? ": " : "",
                    t->fatal ? t->fatal_msg : "");
  } else {
    uint64_t ticket = ++t->snap_requested;
    pthread_cond_broadcast(&t->cv);
    while (t->snap_done < ticket && !t->fatal && !t->stop && t->train_running) {
      if (pthread_cond_timedwait(&t->done_cv, &t->mu, &dl) == ETIMEDOUT) break;
    }
    if (t->snap_done >= ticket) {
      err = t->snap_err;
      if (err) eddy_errf(err, errstr, errstr_size, "%s", t->snap_msg);
      else if (version) *version = t->snap_version;
    } else if (t->fatal || t->stop || !t->train_running) {
      err = eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "trainer stopped before the snapshot%s%s",
                      t->fatal ? ": " : "", t->fatal ? t->fatal_msg : "");
    } else {
      err = eddy_errf(EDDY_ERR_STATE, errstr, errstr_size,
                      "snapshot not published within %d ms (still queued; it will be published)", timeout_ms);
    }
  }
  pthread_mutex_unlock(&t->mu);
  return err;
}

/* ---- rollback ---- */

/* Parks the training thread at a step boundary with nothing being published; false when the
 * trainer stops or fails meanwhile. */
static bool hold_training(eddy_trainer_t *t) {
  pthread_mutex_lock(&t->mu);
  t->hold_count++;
  pthread_cond_broadcast(&t->cv);
  while (!t->stop && !t->fatal && ((t->train_running && !t->parked) || t->pub_busy))
    pthread_cond_wait(&t->parked_cv, &t->mu);
  bool ok = !t->stop && !t->fatal;
  pthread_mutex_unlock(&t->mu);
  return ok;
}

static void release_training(eddy_trainer_t *t) {
  pthread_mutex_lock(&t->mu);
  t->hold_count--;
  pthread_cond_broadcast(&t->cv);
  pthread_mutex_unlock(&t->mu);
}

/* CURRENT := version (action "rollback") and announce, unless it is current already. */
static eddy_err_t move_current(eddy_trainer_t *t, uint64_t version, const eddy_manifest_t *m, bool *moved,
                               char *errstr, size_t errstr_size) {
  pthread_mutex_lock(&t->cur_mu);
  uint64_t cur = 0;
  char why[256];
  bool have = eddy_store_current(t->store, &cur, why, sizeof why) == EDDY_OK;
  eddy_err_t err = EDDY_OK;
  *moved = false;
  if (!have || cur != version) {
    err = eddy_store_set_current(t->store, version, "rollback", errstr, errstr_size);
    if (!err) {
      *moved = true;
      eddy_series_set(t->mx.version, (double)version);
      trainer_announce(t, m, "rollback");
      trainer_gate_forget(t);
      char text[64];
      snprintf(text, sizeof text, "CURRENT = v%06" PRIu64 " (rollback)", version);
      eddy_timeseries_mark(t->series, eddy_clock_wall_ms(), "rollback", version, text);
    }
  }
  pthread_mutex_unlock(&t->cur_mu);
  return err;
}

/* The retrain rollback's record in the buffer's meta, ONE synced WriteBatch: a restart before
 * the next publish resumes it (restore_order) with this skip range; a crash never leaves half
 * of it. */
static eddy_err_t record_rollback(eddy_trainer_t *t, uint64_t version, uint64_t latest, uint64_t skip_from,
                                  uint64_t skip_to, char *errstr, size_t errstr_size) {
  const eddy_replay_meta_t meta[] = {{TRAINER_META_RB_VERSION, version},
                                     {TRAINER_META_RB_LATEST, latest},
                                     {TRAINER_META_SKIP_FROM, skip_from},
                                     {TRAINER_META_SKIP_TO, skip_to},
                                     {TRAINER_META_HOLD_FROM, 0}}; /* the holdout starts over */
  char why[512];
  eddy_err_t err = eddy_replay_meta_put_batch(t->buffer, meta, sizeof meta / sizeof meta[0], why, sizeof why);
  if (err)
    return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "rollback to v%06" PRIu64 " not done: recording it: %s",
                     version, why);
  return EDDY_OK;
}

static eddy_err_t retrain_to(eddy_trainer_t *t, uint64_t version, const eddy_manifest_t *m, uint64_t from,
                             uint64_t to, char *errstr, size_t errstr_size) {
  uint64_t latest = 0, cur = 0;
  char why[1024];
  if (eddy_store_latest(t->store, &latest, why, sizeof why) != EDDY_OK) latest = 0;
  bool is_current = eddy_store_current(t->store, &cur, why, sizeof why) == EDDY_OK && cur == version;
  if (t->rb_valid && t->rb_version == version && t->rb_from == from && t->rb_to == to &&
      t->rb_latest == latest && is_current) {
    EDDY_INFO(LOG_MOD, "retrain rollback to v%06" PRIu64 " already done (nothing published since)", version);
    return EDDY_OK;
  }
  /* Check the files before stopping anything. */
  char dir[4096], state[4096];
  eddy_store_path(t->store, version, NULL, dir, sizeof dir);
  eddy_store_path(t->store, version, EDDY_STORE_STATE, state, sizeof state);
  eddy_err_t err = eddy_store_verify(dir, NULL, why, sizeof why);
  if (err) return eddy_errf(err, errstr, errstr_size, "v%06" PRIu64 " does not verify: %s", version, why);
  if (!hold_training(t)) {
    release_training(t);
    return eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "trainer stopping: rollback not done");
  }
  /* The training thread is parked and nothing is being published: the learner is ours. The
   * record goes first: when it cannot be written nothing has changed. */
  if (eddy_store_latest(t->store, &latest, why, sizeof why) != EDDY_OK) latest = 0;
  bool skip = to >= from;
  err = record_rollback(t, version, latest, skip ? from : 1, skip ? to : 0, errstr, errstr_size);
  if (err) {
    release_training(t);
    return err;
  }
  err = eddy_learner_load_state(t->learner, state, why, sizeof why);
  if (err) {
    release_training(t);
    return eddy_errf(err, errstr, errstr_size, "rollback to v%06" PRIu64 ": %s", version, why);
  }
  eddy_replay_stats_t bs = eddy_replay_stats(t->buffer);
  t->cursor = m->buffer_cursor <= bs.next_seq ? m->buffer_cursor : bs.first_seq;
  t->examples = m->examples;
  t->skipped_run = 0;
  t->idle_done = 0;
  t->last_pub_step = eddy_learner_step_count(t->learner);
  t->last_pub_time = eddy_clock_mono_s();
  eddy_drift_reset(&t->drift);
  if (trainer_ranks_rollback(t, m, why, sizeof why) != EDDY_OK)
    EDDY_WARN(LOG_MOD, "rollback to v%06" PRIu64 ": its per-partition positions: %s", version, why);
  pthread_mutex_lock(&t->mu); /* status_json reads these under mu */
  t->parent = version;
  t->skip_from = skip ? from : 1;
  t->skip_to = skip ? to : 0;
  pthread_mutex_unlock(&t->mu);
  /* The holdout describes the retrained lineage: held-out events before its cursor, none in the
   * skip range, none twice; a drift re-base of the abandoned lineage no longer applies. */
  t->hold_from = 0; /* recorded with the rollback */
  trainer_holdout_refill(t);
  pthread_mutex_lock(&t->mu);
  bool was_degraded = t->degraded;
  t->degraded = false;
  t->degraded_why[0] = 0;
  pthread_mutex_unlock(&t->mu);
  if (was_degraded) eddy_series_set(t->mx.degraded, 0);
  trainer_publish_status(t);
  t->rb_valid = true;
  t->rb_version = version, t->rb_from = from, t->rb_to = to, t->rb_latest = latest;
  bool moved;
  err = move_current(t, version, m, &moved, errstr, errstr_size);
  uint64_t step = eddy_learner_step_count(t->learner), cursor = t->cursor; /* ours until released */
  size_t held = t->hold_n;
  release_training(t);
  char skiptext[96] = "";
  if (skip) snprintf(skiptext, sizeof skiptext, ", skipping seq %" PRIu64 "..%" PRIu64, from, to);
  EDDY_INFO(LOG_MOD, "retrain rollback to v%06" PRIu64 ": step %" PRIu64 ", %" PRIu64
                     " examples, re-training from buffer seq %" PRIu64 "%s; holdout window rebuilt (%zu events)",
            version, step, m->examples, cursor, skiptext, held);
  eddy_series_add(t->mx.rollbacks, 1);
  return err;
}

eddy_err_t eddy_trainer_rollback(eddy_trainer_t *t, uint64_t version, bool retrain, uint64_t skip_from,
                                 uint64_t skip_to, char *errstr, size_t errstr_size) {
  if (!t) return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "trainer: NULL");
  if (version == 0) return eddy_errf(EDDY_ERR_NOT_FOUND, errstr, errstr_size, "no version 0 (versions start at 1)");
  if (retrain && skip_to >= skip_from && t->rk.ranks > 1)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "a skip range names buffer seqs of one buffer: "
                     "with %d ranks (a buffer each) retrain without one", t->rk.ranks);
  pthread_mutex_lock(&t->rb_mu);
  eddy_manifest_t m;
  eddy_manifest_init(&m);
  char why[1024];
  eddy_err_t err = eddy_store_load_manifest(t->store, version, &m, why, sizeof why);
  if (err == EDDY_ERR_NOT_FOUND) {
    err = eddy_errf(err, errstr, errstr_size, "version %" PRIu64 " not found in %s", version,
                    eddy_store_dir(t->store));
  } else if (err) {
    err = eddy_errf(err, errstr, errstr_size, "version %" PRIu64 ": %s", version, why);
  } else if (m.status == EDDY_STATUS_REJECTED) {
    err = eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "v%06" PRIu64 " was rejected by the gate (%s): "
                    "it cannot be served or trained from", version, m.reason[0] ? m.reason : "no reason");
  } else if (!retrain) {
    bool moved = false;
    err = move_current(t, version, &m, &moved, errstr, errstr_size);
    if (!err && moved) {
      eddy_series_add(t->mx.rollbacks, 1);
      EDDY_INFO(LOG_MOD, "rollback (serve only): CURRENT = v%06" PRIu64 "; training goes on", version);
    }
  } else if (!(err = trainer_ranks_rollback_check(t, &m, errstr, errstr_size))) {
    err = retrain_to(t, version, &m, skip_from, skip_to, errstr, errstr_size);
  }
  eddy_manifest_clear(&m);
  pthread_mutex_unlock(&t->rb_mu);
  return err;
}
