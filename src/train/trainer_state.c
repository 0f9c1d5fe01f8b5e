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
  pthread_mutex_lock(&t->mu);
  t->st_step = step;
  t->st_examples = t->examples;
  t->st_replay = t->replay_examples;
  t->st_cursor = t->cursor;
  t->st_skipped = sc->skipped_steps;
  t->st_loss_scale = sc->scale;
  t->st_preq = preq;
  t->st_hold_n = t->hold_n;
  pthread_mutex_unlock(&t->mu);
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
