/* The trainer's sampler thread: once a second it reads the ingest counters, the buffer, the
 * training status copies, CURRENT and the replica table into one point of the time-series ring
 * (GET /v1/timeseries), and refreshes the eddy_replicas{state} gauges. It reads only what other
 * threads already publish for status, so it takes mu briefly and never waits on training. */
#include "train/trainer_state.h"

#include <math.h>
#include <time.h>

#include "core/clock.h"
#include "core/log.h"

bool trainer_sampler_init(eddy_trainer_t *t, char *errstr, size_t errstr_size) {
  t->replicas = eddy_replicas_new();
  t->series = eddy_timeseries_new(EDDY_TIMESERIES_CAPACITY, EDDY_TIMESERIES_INTERVAL_MS);
  if (!t->replicas || !t->series) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "trainer: out of memory");
    return false;
  }
  if (!t->reg) return true;
  eddy_metric_t *m = eddy_registry_add(t->reg, EDDY_METRIC_GAUGE, "eddy_replicas",
                                       "Inference replicas known from their heartbeats, by state "
                                       "(stale: none for over 10 s)",
                                       "state", NULL, 0, errstr, errstr_size);
  if (!m) return false;
  const char *fresh[] = {"fresh"}, *stale[] = {"stale"};
  t->mx.replicas_fresh = eddy_metric_series(m, fresh);
  t->mx.replicas_stale = eddy_metric_series(m, stale);
  return true;
}

typedef struct {
  bool have;          /* a previous ingest reading exists */
  uint64_t ingest_ok;
  double mono;        /* eddy_clock_mono_s() of that reading */
} sampler_prev_t;

static void sample(eddy_trainer_t *t, sampler_prev_t *prev) {
  eddy_ts_point_t p;
  p.t_ms = eddy_clock_wall_ms();
  for (int i = 0; i < EDDY_TS_COUNT; i++) p.v[i] = NAN;
  double mono = eddy_clock_mono_s();
  if (t->ingest) {
    eddy_ingest_stats_t is = eddy_ingest_stats(t->ingest);
    trainer_ranks_ingest_totals(t, &is); /* with ranks: every rank's */
    if (prev->have && mono > prev->mono && is.events_ok >= prev->ingest_ok)
      p.v[EDDY_TS_INGEST_RATE] = (double)(is.events_ok - prev->ingest_ok) / (mono - prev->mono);
    prev->have = true;
    prev->ingest_ok = is.events_ok;
    prev->mono = mono;
    if (is.lag >= 0) p.v[EDDY_TS_CONSUMER_LAG] = (double)is.lag;
  }
  eddy_replay_stats_t bs = eddy_replay_stats(t->buffer);
  p.v[EDDY_TS_BUFFER_EVENTS] = (double)bs.events;
  if (t->cfg.buffer_capacity_events)
    p.v[EDDY_TS_BUFFER_FILL] = (double)bs.events / (double)t->cfg.buffer_capacity_events;
  pthread_mutex_lock(&t->mu);
  p.v[EDDY_TS_LOGLOSS] = t->st_preq.logloss;
  p.v[EDDY_TS_ACCURACY] = t->st_preq.accuracy;
  p.v[EDDY_TS_MSE] = t->st_preq.mse;
  p.v[EDDY_TS_LOSS_SCALE] = t->st_loss_scale;
  p.v[EDDY_TS_SKIPPED_STEPS] = (double)t->st_skipped;
  uint64_t scored = t->st_preq.n;
  pthread_mutex_unlock(&t->mu);
  if (scored == 0) /* no fresh event scored yet: the window's values mean nothing */
    p.v[EDDY_TS_LOGLOSS] = p.v[EDDY_TS_ACCURACY] = p.v[EDDY_TS_MSE] = NAN;
  uint64_t cur = 0;
  char why[256];
  if (eddy_store_current(t->store, &cur, why, sizeof why) == EDDY_OK && cur)
    p.v[EDDY_TS_VERSION] = (double)cur;
  eddy_replicas_summary_t rs = eddy_replicas_summary(t->replicas, p.t_ms);
  p.v[EDDY_TS_FRESHNESS] = rs.freshness_seconds;
  eddy_series_set(t->mx.replicas_fresh, (double)rs.fresh);
  eddy_series_set(t->mx.replicas_stale, (double)rs.stale);
  eddy_timeseries_add(t->series, &p);
  trainer_storage_sample(t);
}

void *trainer_sample_main(void *arg) {
  eddy_trainer_t *t = arg;
  sampler_prev_t prev = {0};
  int64_t next_ms = eddy_clock_mono_ms(); /* the schedule: one point every interval */
  pthread_mutex_lock(&t->mu);
  while (!t->stop) {
    next_ms += EDDY_TIMESERIES_INTERVAL_MS;
    int64_t now_ms = eddy_clock_mono_ms();
    if (now_ms > next_ms + 1000) next_ms = now_ms; /* fell behind (suspended?): no burst */
    struct timespec next = eddy_clock_deadline(CLOCK_MONOTONIC, next_ms > now_ms ? next_ms - now_ms : 0);
    while (!t->stop && pthread_cond_timedwait(&t->sample_cv, &t->mu, &next) == 0) {
    }
    if (t->stop) break;
    pthread_mutex_unlock(&t->mu);
    sample(t, &prev);
    pthread_mutex_lock(&t->mu);
  }
  pthread_mutex_unlock(&t->mu);
  return NULL;
}
