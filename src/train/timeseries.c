/* The sample ring: `capacity` points allocated once, the newest at head - 1. Readers copy the
 * points they answer with under the mutex and format outside it, so the sampler never waits on
 * JSON printing. */
#include "train/timeseries.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

typedef struct {
  int64_t t_ms;
  char kind[12];
  uint64_t version;
  char text[EDDY_MARKER_TEXT_MAX];
} marker_t;

struct eddy_timeseries {
  pthread_mutex_t mu;
  eddy_ts_point_t *ring;
  size_t capacity, head, n; /* next write at head; n points held */
  unsigned interval_ms;
  marker_t marks[EDDY_TIMESERIES_MARKERS];
  size_t mark_head, mark_n; /* the same scheme */
};

static const char *const series_names[EDDY_TS_COUNT] = {
    [EDDY_TS_INGEST_RATE] = "ingest_rate",     [EDDY_TS_CONSUMER_LAG] = "consumer_lag",
    [EDDY_TS_BUFFER_EVENTS] = "buffer_events", [EDDY_TS_BUFFER_FILL] = "buffer_fill",
    [EDDY_TS_LOGLOSS] = "logloss",             [EDDY_TS_ACCURACY] = "accuracy",
    [EDDY_TS_MSE] = "mse",                     [EDDY_TS_LOSS_SCALE] = "loss_scale",
    [EDDY_TS_SKIPPED_STEPS] = "skipped_steps", [EDDY_TS_VERSION] = "version",
    [EDDY_TS_FRESHNESS] = "freshness",
};

const char *eddy_timeseries_name(eddy_ts_series_t s) {
  return (unsigned)s < EDDY_TS_COUNT ? series_names[s] : NULL;
}

eddy_timeseries_t *eddy_timeseries_new(size_t capacity, unsigned interval_ms) {
  eddy_timeseries_t *ts = calloc(1, sizeof *ts);
  if (!ts) return NULL;
  ts->capacity = capacity ? capacity : EDDY_TIMESERIES_CAPACITY;
  ts->interval_ms = interval_ms ? interval_ms : EDDY_TIMESERIES_INTERVAL_MS;
  ts->ring = calloc(ts->capacity, sizeof *ts->ring);
  if (!ts->ring || pthread_mutex_init(&ts->mu, NULL) != 0) {
    free(ts->ring);
    free(ts);
    return NULL;
  }
  return ts;
}

void eddy_timeseries_destroy(eddy_timeseries_t *ts) {
  if (!ts) return;
  pthread_mutex_destroy(&ts->mu);
  free(ts->ring);
  free(ts);
}

void eddy_timeseries_add(eddy_timeseries_t *ts, const eddy_ts_point_t *p) {
  if (!ts || !p) return;
  pthread_mutex_lock(&ts->mu);
  ts->ring[ts->head] = *p;
  ts->head = (ts->head + 1) % ts->capacity;
  if (ts->n < ts->capacity) ts->n++;
  pthread_mutex_unlock(&ts->mu);
}

void eddy_timeseries_mark(eddy_timeseries_t *ts, int64_t t_ms, const char *kind, uint64_t version,
                          const char *text) {
  if (!ts || !kind) return;
  pthread_mutex_lock(&ts->mu);
  marker_t *mk = &ts->marks[ts->mark_head];
  mk->t_ms = t_ms;
  snprintf(mk->kind, sizeof mk->kind, "%s", kind);
  mk->version = version;
  snprintf(mk->text, sizeof mk->text, "%s", text ? text : "");
  ts->mark_head = (ts->mark_head + 1) % EDDY_TIMESERIES_MARKERS;
  if (ts->mark_n < EDDY_TIMESERIES_MARKERS) ts->mark_n++;
  pthread_mutex_unlock(&ts->mu);
}

size_t eddy_timeseries_count(eddy_timeseries_t *ts) {
  if (!ts) return 0;
  pthread_mutex_lock(&ts->mu);
  size_t n = ts->n;
  pthread_mutex_unlock(&ts->mu);
  return n;
}

/* v with 6 significant digits (so the JSON stays short); finite v only. */
static double round6(double v) {
  char text[32];
  snprintf(text, sizeof text, "%.6g", v);
  return strtod(text, NULL);
}

char *eddy_timeseries_json(eddy_timeseries_t *ts, int64_t since_ms) {
  if (!ts) return NULL;
  pthread_mutex_lock(&ts->mu);
  size_t first = (ts->head + ts->capacity - ts->n) % ts->capacity, skip = 0;
  /* Points are appended in time order: skip the ones at or before since_ms. */
  while (skip < ts->n && ts->ring[(first + skip) % ts->capacity].t_ms <= since_ms) skip++;
  size_t n = ts->n - skip;
  eddy_ts_point_t *pts = n ? malloc(n * sizeof *pts) : NULL;
  if (n && !pts) {
    pthread_mutex_unlock(&ts->mu);
    return NULL;
  }
  for (size_t i = 0; i < n; i++) pts[i] = ts->ring[(first + skip + i) % ts->capacity];
  unsigned interval_ms = ts->interval_ms;
  marker_t marks[EDDY_TIMESERIES_MARKERS];
  size_t n_marks = 0, mfirst = (ts->mark_head + EDDY_TIMESERIES_MARKERS - ts->mark_n) % EDDY_TIMESERIES_MARKERS;
  for (size_t i = 0; i < ts->mark_n; i++) {
    const marker_t *mk = &ts->marks[(mfirst + i) % EDDY_TIMESERIES_MARKERS];
    if (mk->t_ms > since_ms) marks[n_marks++] = *mk;
  }
  pthread_mutex_unlock(&ts->mu);

  bool ok = true;
  cJSON *root = cJSON_CreateObject();
  ok = root && cJSON_AddNumberToObject(root, "interval_ms", interval_ms);
  cJSON *t = ok ? cJSON_AddArrayToObject(root, "t") : NULL;
  cJSON *series = t ? cJSON_AddObjectToObject(root, "series") : NULL;
  ok = series != NULL;
  for (size_t i = 0; ok && i < n; i++) ok = cJSON_AddItemToArray(t, cJSON_CreateNumber((double)pts[i].t_ms));
  for (int s = 0; ok && s < EDDY_TS_COUNT; s++) {
    cJSON *values = cJSON_AddArrayToObject(series, series_names[s]);
    ok = values != NULL;
    for (size_t i = 0; ok && i < n; i++) {
      double v = pts[i].v[s];
      ok = cJSON_AddItemToArray(values, isfinite(v) ? cJSON_CreateNumber(round6(v)) : cJSON_CreateNull());
    }
  }
  free(pts);
  cJSON *ml = ok ? cJSON_AddArrayToObject(root, "markers") : NULL;
  ok = ml != NULL;
  for (size_t i = 0; ok && i < n_marks; i++) {
    cJSON *o = cJSON_CreateObject();
    ok = o && cJSON_AddItemToArray(ml, o);
    ok = ok && cJSON_AddNumberToObject(o, "t", (double)marks[i].t_ms);
    ok = ok && cJSON_AddStringToObject(o, "kind", marks[i].kind);
    if (ok) ok = marks[i].version ? cJSON_AddNumberToObject(o, "version", (double)marks[i].version) != NULL
                                  : cJSON_AddNullToObject(o, "version") != NULL;
    ok = ok && cJSON_AddStringToObject(o, "text", marks[i].text);
  }
  char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
  cJSON_Delete(root);
  return text;
}
