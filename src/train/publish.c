/* Publishing. The training thread writes a candidate at a step boundary (weights + state, a
 * finiteness check, a frozen copy of the holdout window, cursors, offsets) and hands it over; the
 * publishing thread applies the gate -- the candidate's and CURRENT's weights scored on the same
 * holdout events, a paired comparison, the value floors -- commits the version with its verdict,
 * moves CURRENT and announces promotions, then applies retention. A failed publish (a full disk)
 * leaves nothing behind, is counted, and training goes on. */
#include "train/trainer_state.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "core/clock.h"
#include "core/log.h"
#include "format/safetensors.h"

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

/* A scheduled snapshot waits while the gate could not judge it: too few holdout events since the
 * last re-base, or a rise of the prequential loss under way that may still turn out to be drift. */
static bool defer_scheduled(eddy_trainer_t *t) {
  if (!t->hold_threshold) return false;
  size_t have = trainer_holdout_usable(t);
  bool few = have < t->cfg.gate_min_events, rising = eddy_drift_warning(&t->drift);
  if (!few && !rising) {
    t->defer_logged = false;
    return false;
  }
  if (!t->defer_logged) {
    t->defer_logged = true;
    if (few)
      EDDY_INFO(LOG_MOD, "scheduled snapshot waits: the holdout window has %zu events since seq %" PRIu64
                         " (snapshot.gate.min_events = %u)", have, t->hold_from, t->cfg.gate_min_events);
    else
      EDDY_INFO(LOG_MOD, "scheduled snapshot waits: the prequential loss is rising (possible drift)");
  }
  return true;
}

bool trainer_write_candidate(eddy_trainer_t *t, uint64_t ticket) {
  pthread_mutex_lock(&t->mu);
  bool busy = t->pub_busy;
  pthread_mutex_unlock(&t->mu);
  if (busy) return false;
  if (!ticket && defer_scheduled(t)) return false;
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
  if (!trainer_holdout_freeze(t, &job->hold))
    EDDY_WARN(LOG_MOD, "v%06" PRIu64 ": out of memory copying the holdout window: the gate sees no holdout",
              eddy_store_txn_version(txn));
  trainer_precisions_write(t, txn, m, &job->hold, job->nonfinite);
  m->prequential = eddy_prequential_window(t->preq);
  m->step = eddy_learner_step_count(t->learner);
  m->examples = t->examples;
  m->buffer_cursor = t->cursor;
  m->newest_event_ms = t->newest_event_ms;
  eddy_replay_offsets_each(t->buffer, add_offset, m);
  trainer_ranks_manifest(t, m);
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

void trainer_gate_forget(eddy_trainer_t *t) {
  eddy_infer_destroy(t->cur_model);
  t->cur_model = NULL;
  t->cur_model_v = 0;
  eddy_eval_scores_free(&t->cur_val);
}

/* Same layout: compared through their JSON form, which holds every field that shapes a model. */
static bool spec_same(const eddy_model_spec_t *a, const eddy_model_spec_t *b) {
  char *ja = eddy_model_spec_to_json(a), *jb = eddy_model_spec_to_json(b);
  bool same = ja && jb && strcmp(ja, jb) == 0;
  free(ja);
  free(jb);
  return same;
}

/* CURRENT's model for the gate, loaded once per CURRENT version (cur_mu held). NULL with why when
 * its weights cannot be read or do not have the candidate's spec. */
static eddy_infer_t *current_model(eddy_trainer_t *t, uint64_t cur, const eddy_model_spec_t *spec, char *why,
                                   size_t why_size) {
  if (t->cur_model && t->cur_model_v == cur) return t->cur_model;
  trainer_gate_forget(t);
  eddy_manifest_t ref;
  char path[4096], msg[512];
  eddy_err_t err = eddy_store_load_manifest(t->store, cur, &ref, msg, sizeof msg);
  if (err) {
    eddy_manifest_clear(&ref);
    snprintf(why, why_size, "%.300s", msg);
    return NULL;
  }
  bool same = spec_same(&ref.spec, spec);
  eddy_manifest_clear(&ref);
  if (!same) {
    snprintf(why, why_size, "its model spec differs from the candidate's");
    return NULL;
  }
  eddy_store_path(t->store, cur, EDDY_STORE_WEIGHTS, path, sizeof path);
  eddy_st_reader_t *r = eddy_st_reader_new(path, 0, msg, sizeof msg);
  t->cur_model = r ? eddy_infer_new(spec, r, EDDY_INFER_F32, msg, sizeof msg) : NULL;
  eddy_st_reader_destroy(r);
  if (!t->cur_model) {
    snprintf(why, why_size, "%.300s", msg);
    return NULL;
  }
  t->cur_model_v = cur;
  return t->cur_model;
}

/* Appends ", "-separated text to the verdict. */
static void say(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *buf, size_t size, const char *fmt, ...) {
  size_t n = strlen(buf);
  if (n + 3 >= size) return;
  if (n) {
    memcpy(buf + n, "; ", 3);
    n += 2;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf + n, size - n, fmt, ap);
  va_end(ap);
}

/* Relative paired difference a - b with noise_z standard errors taken off (the most favourable
 * reading for a), as a fraction of b's mean. */
static double regression_bound(const eddy_eval_paired_t *p, double z) {
  double base = p->mean_b > 1e-12 ? p->mean_b : 1e-12;
  return (p->diff - z * p->se) / base;
}

/* What the gate learned, for the streak counters and the log. */
typedef struct {
  bool compared;       /* scored against CURRENT */
  bool ahead;          /* ... and better than it on the same events */
  uint64_t current;
  char failed[64];     /* names of the failed criteria */
} gate_outcome_t;

static void crit(eddy_manifest_t *m, gate_outcome_t *o, const char *name, eddy_criterion_result_t r, double cand,
                 double ref, double value, double limit) {
  eddy_manifest_add_criterion(m, name, r, cand, ref, value, limit);
  if (r == EDDY_CRITERION_FAILED) say(o->failed, sizeof o->failed, "%s", name);
}

/* The champion/challenger gate (docs/trainer.md "The gate"): sets m->status, m->reason, m->gate
 * and m->holdout. Caller holds cur_mu. */
static void gate(eddy_trainer_t *t, trainer_job_t *job, gate_outcome_t *o) {
  eddy_manifest_t *m = &job->m;
  const eddy_config_t *c = &t->cfg;
  bool sq = c->spec.head == EDDY_HEAD_SQUARED;
  const char *name = sq ? "mse" : "logloss";
  double z = c->gate_noise_z;
  char why[512], note[EDDY_MANIFEST_REASON_MAX] = "", path[4096];
  memset(o, 0, sizeof *o);
  m->gate.present = true;
  snprintf(m->gate.metric, sizeof m->gate.metric, "%s", name);
  const trainer_holdout_set_t *set = &job->hold;
  m->gate.events = set->n;
  if (set->n) m->gate.from_seq = set->seq[0], m->gate.to_seq = set->seq[set->n - 1];
  uint64_t cur = 0;
  eddy_err_t cerr = eddy_store_current(t->store, &cur, why, sizeof why);
  if (cerr) cur = 0;
  m->gate.current = cur;
  o->current = cur;

  eddy_eval_scores_t cand = {0}, prior = {0}, cs = {0}, cand_val = {0};
  eddy_infer_t *cand_model = NULL;
  snprintf(path, sizeof path, "%s/%s", eddy_store_txn_dir(job->txn), EDDY_STORE_WEIGHTS);
  double cand_loss = NAN;
  eddy_err_t serr = EDDY_OK;
  if (!job->nonfinite) {
    serr = trainer_holdout_score_file(&c->spec, path, EDDY_INFER_F32, set, &cand, &cand_model, why, sizeof why);
    if (!serr && set->n) {
      m->holdout = cand.metrics;
      cand_loss = sq ? cand.metrics.mse : cand.metrics.logloss;
    }
  }
  bool finite = !job->nonfinite && !serr && (!set->n || isfinite(cand_loss));
  crit(m, o, "finite", finite ? EDDY_CRITERION_PASSED : EDDY_CRITERION_FAILED, (double)job->nonfinite, NAN,
       cand_loss, 0);
  if (job->nonfinite) say(note, sizeof note, "%" PRIu64 " non-finite weights", job->nonfinite);
  else if (serr) say(note, sizeof note, "candidate weights unreadable: %.300s", why);
  else if (!finite) say(note, sizeof note, "holdout %s is not finite", name);

  bool holdout_on = t->hold_threshold != 0;
  if (!holdout_on) {
    crit(m, o, "holdout_events", EDDY_CRITERION_SKIPPED, 0, NAN, NAN, c->gate_min_events);
    if (finite) say(note, sizeof note, "no holdout (train.holdout_fraction = 0)");
  } else {
    bool enough = set->n >= c->gate_min_events;
    crit(m, o, "holdout_events", enough ? EDDY_CRITERION_PASSED : EDDY_CRITERION_FAILED, (double)set->n, NAN,
         (double)set->n, c->gate_min_events);
    if (!enough)
      say(note, sizeof note, "%zu holdout events in the window (from seq %" PRIu64 "), %u needed "
          "(snapshot.gate.min_events)", set->n, m->gate.from_seq, c->gate_min_events);
  }

  bool scored = finite && set->n > 0;
  /* Floor: beat the label prior of the same events, in loss or (classification heads) in error
   * rate: the relative reduction over the prior, after noise, must reach the margin in one of them.
   * Labels with no signal leave nothing to reduce in either. */
  if (scored && holdout_on && eddy_eval_prior(&c->spec, set->ev, set->n, &prior) == EDDY_OK) {
    eddy_eval_paired_t p = eddy_eval_paired(&cand, &prior), pe = eddy_eval_paired_errors(&cand, &prior);
    double base = p.mean_b > 1e-12 ? p.mean_b : 1e-12;
    double gain = -(p.diff + z * p.se) / base; /* the least loss reduction the noise allows */
    double ebase = pe.mean_b > 1e-12 ? pe.mean_b : 1e-12;
    double egain = pe.n ? -(pe.diff + z * pe.se) / ebase : -INFINITY;
    bool by_error = egain > gain;
    double best = by_error ? egain : gain;
    bool ok = best >= c->gate_prior_margin;
    crit(m, o, "vs_prior", ok ? EDDY_CRITERION_PASSED : EDDY_CRITERION_FAILED, by_error ? pe.mean_a : p.mean_a,
         by_error ? pe.mean_b : p.mean_b, best, c->gate_prior_margin);
    char errs[96] = "";
    if (pe.n) snprintf(errs, sizeof errs, "; error rate %.4f vs %.4f", pe.mean_a, pe.mean_b);
    if (!ok)
      say(note, sizeof note, "holdout %s %.4f does not beat the label prior's %.4f by %.1f%% (%+.1f%% after noise%s)",
          name, p.mean_a, p.mean_b, c->gate_prior_margin * 100, gain * 100, errs);
    else if (by_error)
      say(note, sizeof note, "error rate %.4f, %.1f%% below the label prior's %.4f (>= %.1f%% after noise; %s %.4f vs "
          "%.4f)", pe.mean_a, -pe.diff / ebase * 100, pe.mean_b, c->gate_prior_margin * 100, name, p.mean_a, p.mean_b);
    else
      say(note, sizeof note, "%.1f%% below the label prior's %s %.4f (>= %.1f%% after noise)", -p.diff / base * 100,
          name, p.mean_b, c->gate_prior_margin * 100);
  } else {
    crit(m, o, "vs_prior", EDDY_CRITERION_SKIPPED, cand_loss, NAN, NAN, c->gate_prior_margin);
  }

  /* Champion: CURRENT's weights on the same events. */
  eddy_infer_t *cm = NULL;
  char cwhy[512] = "";
  if (cur && (scored || (finite && t->val_n))) cm = current_model(t, cur, &c->spec, cwhy, sizeof cwhy);
  if (scored && cm && eddy_eval_model(cm, set->ev, set->n, &cs, cwhy, sizeof cwhy) == EDDY_OK) {
    eddy_eval_paired_t p = eddy_eval_paired(&cand, &cs);
    double reg = regression_bound(&p, z);
    bool ok = reg <= c->gate_max_regression;
    o->compared = true;
    o->ahead = p.diff < 0;
    crit(m, o, "vs_current", ok ? EDDY_CRITERION_PASSED : EDDY_CRITERION_FAILED, p.mean_a, p.mean_b, reg,
         c->gate_max_regression);
    say(note, sizeof note, "holdout %s %.4f vs %.4f of v%06" PRIu64 " on the same %zu events (%+.1f%%, %+.1f%% after "
        "noise %s %.1f%% allowed)", name, p.mean_a, p.mean_b, cur, set->n,
        p.diff / (p.mean_b > 1e-12 ? p.mean_b : 1e-12) * 100, reg * 100, ok ? "<=" : ">", c->gate_max_regression * 100);
  } else {
    crit(m, o, "vs_current", EDDY_CRITERION_SKIPPED, cand_loss, NAN, NAN, c->gate_max_regression);
    if (!cur && finite) say(note, sizeof note, "no CURRENT yet");
    else if (cur && scored) say(note, sizeof note, "v%06" PRIu64 " (CURRENT) not compared: %.200s", cur, cwhy);
  }

  /* Floor: the trusted validation set, against CURRENT. */
  if (t->val_n && finite && cand_model &&
      eddy_eval_model(cand_model, t->val, t->val_n, &cand_val, why, sizeof why) == EDDY_OK) {
    double vl = sq ? cand_val.metrics.mse : cand_val.metrics.logloss;
    if (cm && !t->cur_val.n && eddy_eval_model(cm, t->val, t->val_n, &t->cur_val, why, sizeof why) != EDDY_OK)
      eddy_eval_scores_free(&t->cur_val);
    if (cm && t->cur_val.n) {
      eddy_eval_paired_t p = eddy_eval_paired(&cand_val, &t->cur_val);
      double reg = regression_bound(&p, z);
      bool ok = reg <= c->gate_validation_max_regression;
      crit(m, o, "validation", ok ? EDDY_CRITERION_PASSED : EDDY_CRITERION_FAILED, p.mean_a, p.mean_b, reg,
           c->gate_validation_max_regression);
      say(note, sizeof note, "validation %s %.4f vs %.4f (%+.1f%% after noise %s %.1f%% allowed)", name, p.mean_a,
          p.mean_b, reg * 100, ok ? "<=" : ">", c->gate_validation_max_regression * 100);
    } else {
      crit(m, o, "validation", EDDY_CRITERION_SKIPPED, vl, NAN, NAN, c->gate_validation_max_regression);
    }
  }
  eddy_eval_scores_free(&cand);
  eddy_eval_scores_free(&prior);
  eddy_eval_scores_free(&cs);
  eddy_eval_scores_free(&cand_val);
  eddy_infer_destroy(cand_model);

  m->status = o->failed[0] ? EDDY_STATUS_REJECTED : EDDY_STATUS_PROMOTED;
  if (o->failed[0]) snprintf(m->reason, sizeof m->reason, "failed %.60s: %.440s", o->failed, note);
  else snprintf(m->reason, sizeof m->reason, "%s", note);
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
  gate_outcome_t o;
  gate(t, job, &o);
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
  if (!promoted) {
    t->n_rejected++;
    t->rejected_run++;
    if (!o.compared || !o.ahead) t->ahead_run = 0;
    else t->ahead_run = t->ahead_of == o.current ? t->ahead_run + 1 : 1;
    t->ahead_of = o.current;
    snprintf(t->last_failed, sizeof t->last_failed, "%s", o.failed);
  } else {
    t->rejected_run = t->ahead_run = 0;
    t->last_failed[0] = 0;
  }
  uint32_t rejected_run = t->rejected_run, ahead_run = t->ahead_run;
  pthread_mutex_unlock(&t->mu);
  eddy_series_set(t->mx.rejected_run, rejected_run);
  eddy_series_set(t->mx.ahead_run, ahead_run);
  eddy_timeseries_mark(t->series, eddy_clock_wall_ms(), promoted ? "promote" : "reject", v, m->reason);
  eddy_err_t cerr = EDDY_OK;
  if (promoted) {
    cerr = eddy_store_set_current(t->store, v, "promote", why, sizeof why);
    if (cerr) {
      count_error(t);
      EDDY_ERROR(LOG_MOD, "v%06" PRIu64 " published but not served: %s", v, why);
    } else {
      eddy_series_set(t->mx.version, (double)v);
      trainer_announce(t, m, "promote");
      trainer_gate_forget(t); /* the next gate loads v as CURRENT */
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
      trainer_holdout_set_free(&job->hold);
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
