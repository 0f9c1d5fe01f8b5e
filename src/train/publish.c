/* Publishing. The training thread writes a candidate at a step boundary (weights + state, a
 * finiteness check, the holdout score, cursors, offsets) and hands it over; the publishing thread
 * applies the gate against the holdout loss recorded in CURRENT's manifest, commits the version
 * with its verdict, moves CURRENT and announces promotions, then applies retention. A failed
 * publish (a full disk) leaves nothing behind, is counted, and training goes on. */
#include "train/trainer_state.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "core/clock.h"
#include "core/log.h"

#define LOG_MOD "publish"

static void answer_ticket(eddy_trainer_t *t, uint64_t ticket, eddy_err_t err, uint64_t version,
                          const char *msg) {
  if (!ticket) return;
  pthread_mutex_lock(&t->mu);
  if (ticket > t->snap_taken) t->snap_taken = ticket;
  if (ticket > t->snap_done) {
    t->snap_done = ticket;
    t->snap_err = err;
    t->snap_version = version;
    snprintf(t->snap_msg, sizeof t->snap_msg, "%s", msg ? msg : "");
  }
  pthread_cond_broadcast(&t->done_cv);
  pthread_mutex_unlock(&t->mu);
}

static void count_error(eddy_trainer_t *t) {
  eddy_series_add(t->mx.publish_errors, 1);
  pthread_mutex_lock(&t->mu);
  t->n_publish_errors++;
  pthread_mutex_unlock(&t->mu);
}

/* Non-finite master weights, tensor by tensor. */
static uint64_t count_nonfinite(eddy_trainer_t *t) {
  const eddy_tensor_info_t *ti;
  size_t n = eddy_learner_tensors(t->learner, &ti);
  uint64_t bad = 0;
  for (size_t i = 0; i < n; i++) {
    if (ti[i].numel > t->scratch_cap) {
      float *s = realloc(t->scratch, ti[i].numel * sizeof *s);
      if (!s) return 0; /* cannot check: the store still refuses a promoted non-finite version */
      t->scratch = s;
      t->scratch_cap = ti[i].numel;
    }
    if (eddy_learner_export(t->learner, ti[i].name, t->scratch, ti[i].numel) != EDDY_OK) continue;
    for (size_t j = 0; j < ti[i].numel; j++) bad += !isfinite(t->scratch[j]);
  }
  return bad;
}

static void add_offset(void *ctx, const char *topic, int32_t partition, int64_t next) {
  eddy_manifest_t *m = ctx;
  if (eddy_manifest_add_offset(m, topic, partition, next) != EDDY_OK)
    EDDY_WARN(LOG_MOD, "manifest: Kafka offset of %s[%d] not recorded", topic, (int)partition);
}

bool trainer_write_candidate(eddy_trainer_t *t, uint64_t ticket) {
  pthread_mutex_lock(&t->mu);
  bool busy = t->pub_busy;
  pthread_mutex_unlock(&t->mu);
  if (busy) return false;
  double t0 = eddy_clock_mono_s();
  t->last_pub_step = eddy_learner_step_count(t->learner);
  t->last_pub_time = t0;
  char why[1024];
  eddy_store_txn_t *txn = NULL;
  eddy_err_t err = eddy_store_begin(t->store, &txn, why, sizeof why);
  if (!err) err = eddy_store_txn_write(txn, t->learner, t->cfg.snapshot_dtype, why, sizeof why);
  trainer_job_t *job = NULL;
  if (!err && !(job = calloc(1, sizeof *job))) {
    err = EDDY_ERR_NOMEM;
    snprintf(why, sizeof why, "out of memory");
  }
  if (err) {
    uint64_t v = txn ? eddy_store_txn_version(txn) : 0;
    eddy_store_abort(txn);
    count_error(t);
    EDDY_ERROR(LOG_MOD, "publish of v%06" PRIu64 " abandoned (training goes on): %s", v, why);
    answer_ticket(t, ticket, err, 0, why);
    return true;
  }
  eddy_manifest_t *m = &job->m;
  eddy_manifest_init(m);
  job->txn = txn;
  job->ticket = ticket;
  job->t0 = t0;
  job->nonfinite = count_nonfinite(t);
  if (trainer_holdout_score(t, &m->holdout) != EDDY_OK)
    EDDY_WARN(LOG_MOD, "holdout scoring failed: %s", eddy_learner_last_error(t->learner));
  m->prequential = eddy_prequential_window(t->preq);
  m->step = eddy_learner_step_count(t->learner);
  m->examples = t->examples;
  m->buffer_cursor = t->cursor;
  m->newest_event_ms = t->newest_event_ms;
  eddy_replay_offsets_each(t->buffer, add_offset, m);
  pthread_mutex_lock(&t->mu);
  m->parent = t->parent;
  t->job = job;
  t->pub_busy = true;
  if (ticket > t->snap_taken) t->snap_taken = ticket;
  pthread_cond_signal(&t->pub_cv);
  pthread_mutex_unlock(&t->mu);
  return true;
}

void trainer_announce(eddy_trainer_t *t, const eddy_manifest_t *m, const char *why) {
  if (!t->producer) return;
  char *json = NULL, msg[512];
  eddy_err_t err = eddy_manifest_to_json(m, &json, msg, sizeof msg);
  if (!err) cJSON_Minify(json); /* one line: friendlier to kcat and log tools */
  if (!err)
    err = eddy_producer_send(t->producer, t->cfg.snapshot_topic, -1, t->cfg.model_name,
                             strlen(t->cfg.model_name), json, strlen(json), msg, sizeof msg);
  free(json);
  if (err) {
    eddy_series_add(t->mx.announce_errors, 1);
    EDDY_WARN(LOG_MOD, "announcing v%06" PRIu64 " (%s) on %s failed: %s", m->version, why,
              t->cfg.snapshot_topic, msg);
  }
  eddy_producer_poll(t->producer, 0);
}

/* Delivery reports of earlier announcements. Caller holds cur_mu. */
static void check_deliveries(eddy_trainer_t *t, uint64_t *failed_seen) {
  if (!t->producer) return;
  eddy_producer_poll(t->producer, 0);
  eddy_producer_stats_t ps = eddy_producer_stats(t->producer);
  if (ps.failed > *failed_seen) {
    eddy_series_add(t->mx.announce_errors, (double)(ps.failed - *failed_seen));
    EDDY_WARN(LOG_MOD, "%" PRIu64 " announcement(s) on %s not delivered (first error: %s)",
              ps.failed - *failed_seen, t->cfg.snapshot_topic, eddy_producer_first_error(t->producer));
    *failed_seen = ps.failed;
  }
}

/* The gate: sets m->status and m->reason. Caller holds cur_mu. */
static void gate(eddy_trainer_t *t, trainer_job_t *job) {
  eddy_manifest_t *m = &job->m;
  bool sq = t->cfg.spec.head == EDDY_HEAD_SQUARED;
  const char *name = sq ? "mse" : "logloss";
  double cand = sq ? m->holdout.mse : m->holdout.logloss;
  m->status = EDDY_STATUS_PROMOTED;
  if (job->nonfinite) {
    m->status = EDDY_STATUS_REJECTED;
    snprintf(m->reason, sizeof m->reason, "%" PRIu64 " non-finite weights", job->nonfinite);
    return;
  }
  if (!m->holdout.n) {
    snprintf(m->reason, sizeof m->reason, "no holdout events yet: gate checked finiteness only");
    return;
  }
  if (!isfinite(cand)) {
    m->status = EDDY_STATUS_REJECTED;
    snprintf(m->reason, sizeof m->reason, "holdout %s is not finite", name);
    return;
  }
  uint64_t cur = 0;
  char why[512];
  eddy_err_t err = eddy_store_current(t->store, &cur, why, sizeof why);
  if (err == EDDY_ERR_NOT_FOUND) {
    snprintf(m->reason, sizeof m->reason, "first promoted version (holdout %s %.4f on %" PRIu64 " events)",
             name, cand, m->holdout.n);
    return;
  }
  eddy_manifest_t ref;
  eddy_manifest_init(&ref);
  if (!err) err = eddy_store_load_manifest(t->store, cur, &ref, why, sizeof why);
  if (err) {
    eddy_manifest_clear(&ref);
    snprintf(m->reason, sizeof m->reason, "CURRENT unreadable (%.300s): gate checked finiteness only", why);
    return;
  }
  double best = sq ? ref.holdout.mse : ref.holdout.logloss;
  bool have_ref = ref.holdout.n > 0 && isfinite(best);
  eddy_manifest_clear(&ref);
  if (!have_ref) {
    snprintf(m->reason, sizeof m->reason, "v%06" PRIu64 " (CURRENT) has no holdout %s: holdout %s %.4f", cur,
             name, name, cand);
    return;
  }
  double reg = best > 0 ? (cand - best) / best : cand > best ? INFINITY : 0.0;
  double limit = t->cfg.gate_max_regression;
  if (reg > limit) {
    m->status = EDDY_STATUS_REJECTED;
    snprintf(m->reason, sizeof m->reason, "holdout %s %.4f vs %.4f of v%06" PRIu64 " (%+.1f%% > %.1f%% allowed)",
             name, cand, best, cur, reg * 100, limit * 100);
  } else {
    snprintf(m->reason, sizeof m->reason, "holdout %s %.4f vs %.4f of v%06" PRIu64 " (%+.1f%%)", name, cand,
             best, cur, reg * 100);
  }
}

static bool version_exists(eddy_store_t *s, uint64_t v) {
  char path[4096];
  struct stat st;
  return v && eddy_store_path(s, v, NULL, path, sizeof path) == EDDY_OK && stat(path, &st) == 0;
}

static void publish_job(eddy_trainer_t *t, trainer_job_t *job) {
  eddy_manifest_t *m = &job->m;
  char why[1024];
  uint64_t v = eddy_store_txn_version(job->txn);
  pthread_mutex_lock(&t->cur_mu);
  gate(t, job);
  if (m->parent && !version_exists(t->store, m->parent)) {
    EDDY_WARN(LOG_MOD, "v%06" PRIu64 ": parent v%06" PRIu64 " no longer exists: recorded as none", v, m->parent);
    m->parent = 0;
  }
  eddy_err_t err = eddy_store_commit(job->txn, m, why, sizeof why); /* takes the transaction */
  job->txn = NULL;
  if (err) {
    pthread_mutex_unlock(&t->cur_mu);
    count_error(t);
    EDDY_ERROR(LOG_MOD, "publish of v%06" PRIu64 " abandoned (training goes on): %s", v, why);
    answer_ticket(t, job->ticket, err, 0, why);
    return;
  }
  bool promoted = m->status == EDDY_STATUS_PROMOTED;
  eddy_series_add(t->mx.published, 1);
  if (!promoted) eddy_series_add(t->mx.rejected, 1);
  pthread_mutex_lock(&t->mu);
  t->parent = v;
  t->st_last_published = v;
  t->n_published++;
  if (!promoted) t->n_rejected++;
  pthread_mutex_unlock(&t->mu);
  eddy_err_t cerr = EDDY_OK;
  if (promoted) {
    cerr = eddy_store_set_current(t->store, v, "promote", why, sizeof why);
    if (cerr) {
      count_error(t);
      EDDY_ERROR(LOG_MOD, "v%06" PRIu64 " published but not served: %s", v, why);
    } else {
      eddy_series_set(t->mx.version, (double)v);
      trainer_announce(t, m, "promote");
    }
  }
  size_t deleted = 0;
  if (eddy_store_retain(t->store, t->cfg.snapshot_keep, &deleted, why, sizeof why) != EDDY_OK)
    EDDY_WARN(LOG_MOD, "retention: %s", why);
  pthread_mutex_unlock(&t->cur_mu);
  double secs = eddy_clock_mono_s() - job->t0;
  eddy_series_observe(t->mx.publish_seconds, secs);
  EDDY_INFO(LOG_MOD, "published v%06" PRIu64 " (%s: %s): step %" PRIu64 ", %" PRIu64 " examples, cursor %" PRIu64
                     ", %.0f ms%s",
            v, eddy_version_status_name(m->status), m->reason, m->step, m->examples, m->buffer_cursor,
            secs * 1e3, deleted ? ", older versions removed" : "");
  answer_ticket(t, job->ticket, cerr, v, cerr ? why : NULL);
}

void *trainer_publish_main(void *arg) {
  eddy_trainer_t *t = arg;
  uint64_t failed_seen = 0;
  for (;;) {
    pthread_mutex_lock(&t->mu);
    if (!t->job && !t->stop) {
      struct timespec ts = eddy_clock_deadline(CLOCK_MONOTONIC, 200);
      pthread_cond_timedwait(&t->pub_cv, &t->mu, &ts);
    }
    trainer_job_t *job = t->job;
    t->job = NULL;
    bool stop = t->stop;
    pthread_mutex_unlock(&t->mu);
    if (job) {
      publish_job(t, job);
      eddy_manifest_clear(&job->m);
      free(job);
      pthread_mutex_lock(&t->mu);
      t->pub_busy = false;
      pthread_cond_broadcast(&t->cv);
      pthread_cond_broadcast(&t->parked_cv);
      pthread_mutex_unlock(&t->mu);
    }
    pthread_mutex_lock(&t->cur_mu);
    check_deliveries(t, &failed_seen);
    pthread_mutex_unlock(&t->cur_mu);
    if (stop && !job) {
      pthread_mutex_lock(&t->mu);
      bool more = t->job != NULL;
      pthread_mutex_unlock(&t->mu);
      if (!more) break;
    }
  }
  return NULL;
}
