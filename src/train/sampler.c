/* The trainer's sampler thread: once a second it reads the ingest counters, the buffer, the
 * training status copies, CURRENT and the replica table into one point of the time-series ring
 * (GET /v1/timeseries), and refreshes the eddy_replicas{state} gauges. It reads only what other
 * threads already publish for status, so it takes mu briefly and never waits on training. */
#include "train/trainer_internal.h"

#include <math.h>
#include <time.h>

#include "core/log.h"

int64_t trainer_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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
  double mono;        /* trainer_now() of that reading */
} sampler_prev_t;

static void sample(eddy_trainer_t *t, sampler_prev_t *prev) {
  eddy_ts_point_t p;
  p.t_ms = trainer_wall_ms();
  for (int i = 0; i < EDDY_TS_COUNT; i++) p.v[i] = NAN;
  double mono = trainer_now();
  if (t->ingest) {
    eddy_ingest_stats_t is = eddy_ingest_stats(t->ingest);
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
}

void *trainer_sample_main(void *arg) {
  eddy_trainer_t *t = arg;
  sampler_prev_t prev = {0};
  struct timespec next;
  clock_gettime(CLOCK_MONOTONIC, &next);
  pthread_mutex_lock(&t->mu);
  while (!t->stop) {
    next.tv_nsec += (long)EDDY_TIMESERIES_INTERVAL_MS * 1000000L;
    while (next.tv_nsec >= 1000000000L) next.tv_sec++, next.tv_nsec -= 1000000000L;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec > next.tv_sec + 1) next = now; /* fell behind (suspended?): no burst */
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

eddy_replicas_t *eddy_trainer_replicas(eddy_trainer_t *t) { return t ? t->replicas : NULL; }
eddy_timeseries_t *eddy_trainer_timeseries(eddy_trainer_t *t) { return t ? t->series : NULL; }
