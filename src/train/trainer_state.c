/* The transitions every part of the trainer makes on its shared state: a fatal error (the first
 * one wins and wakes every waiter), the degraded state (publishing stops until a retrain rollback
 * or a restart), and the status copies that other threads read under mu. */
#include "train/trainer_state.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

#include "core/log.h"

#define LOG_MOD "train"

void trainer_set_fatal(eddy_trainer_t *t, eddy_err_t err, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  EDDY_ERROR(LOG_MOD, "%s", msg);
  pthread_mutex_lock(&t->mu);
  if (!t->fatal) {
    t->fatal = err ? err : EDDY_ERR_STATE;
    snprintf(t->fatal_msg, sizeof t->fatal_msg, "%s", msg);
  }
  pthread_cond_broadcast(&t->done_cv);
  pthread_cond_broadcast(&t->parked_cv);
  pthread_mutex_unlock(&t->mu);
}

void trainer_degrade(eddy_trainer_t *t, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  pthread_mutex_lock(&t->mu);
  bool was = t->degraded;
  if (!was) {
    t->degraded = true;
    snprintf(t->degraded_why, sizeof t->degraded_why, "%s", msg);
  }
  pthread_mutex_unlock(&t->mu);
  if (!was) {
    eddy_series_set(t->mx.degraded, 1);
    EDDY_ERROR(LOG_MOD, "%s: publishing stopped (degraded); CURRENT keeps serving. A retrain rollback "
                        "(eddy ctl rollback N --retrain) or a restart resumes publishing",
               msg);
  }
}

void trainer_publish_status(eddy_trainer_t *t) {
  eddy_metric_values_t preq = eddy_prequential_window(t->preq);
  const eddy_scaler_t *sc = eddy_learner_scaler(t->learner);
  uint64_t step = eddy_learner_step_count(t->learner);
  size_t oldest = t->hold_head, newest = (t->hold_head + t->hold_n + t->hold_cap - 1) % t->hold_cap;
  pthread_mutex_lock(&t->mu);
  t->st_step = step;
  t->st_examples = t->examples;
  t->st_replay = t->replay_examples;
  t->st_cursor = t->cursor;
  t->st_skipped = sc->skipped_steps;
  t->st_loss_scale = sc->scale;
  t->st_preq = preq;
  t->st_hold_n = t->hold_n;
  t->st_hold_from = t->hold_from;
  t->st_hold_oldest_seq = t->hold_n ? t->hold_seq[oldest] : 0;
  t->st_hold_newest_seq = t->hold_n ? t->hold_seq[newest] : 0;
  t->st_hold_oldest_ms = t->hold_n && t->hold[oldest].has_ts ? t->hold[oldest].ts : 0;
  t->st_hold_newest_ms = t->hold_n && t->hold[newest].has_ts ? t->hold[newest].ts : 0;
  t->st_drift_warning = eddy_drift_warning(&t->drift);
  for (uint32_t k = 0; k < t->st_classes; k++)
    t->st_class_acc[k] = eddy_prequential_class_accuracy(t->preq, k, &t->st_class_n[k]);
  pthread_mutex_unlock(&t->mu);
  for (uint32_t k = 0; k < t->st_classes && k < TRAINER_CLASS_SERIES; k++)
    if (t->st_class_n[k]) eddy_series_set(t->mx.class_accuracy[k], t->st_class_acc[k]);
  eddy_series_set(t->mx.steps, (double)step);
  eddy_series_set(t->mx.examples, (double)t->examples);
  eddy_series_set(t->mx.replay_examples, (double)t->replay_examples);
  eddy_series_set(t->mx.skipped, (double)sc->skipped_steps);
  eddy_series_set(t->mx.loss_scale, sc->scale);
  eddy_series_set(t->mx.holdout_events, (double)t->hold_n);
  if (isfinite(preq.logloss)) eddy_series_set(t->mx.preq_logloss, preq.logloss);
  if (isfinite(preq.accuracy)) eddy_series_set(t->mx.preq_accuracy, preq.accuracy);
  if (isfinite(preq.mse)) eddy_series_set(t->mx.preq_mse, preq.mse);
}
