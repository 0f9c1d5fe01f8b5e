/* A bounded ring of the trainer's samples over time (one point per interval, the newest
 * `capacity` kept) for GET /v1/timeseries and the dashboard's charts. Every point has a value or
 * NaN (JSON null: undefined at that time) for each series. Markers (drift, promotions, rejections,
 * rollbacks; the newest EDDY_TIMESERIES_MARKERS) annotate the charts. Thread-safe: any number of
 * writers and readers. */
#ifndef EDDY_TIMESERIES_H
#define EDDY_TIMESERIES_H

#include <stddef.h>
#include <stdint.h>

#define EDDY_TIMESERIES_CAPACITY 3600   /* points kept: one hour at one a second */
#define EDDY_TIMESERIES_INTERVAL_MS 1000
#define EDDY_TIMESERIES_MARKERS 256     /* markers kept */
#define EDDY_MARKER_TEXT_MAX 160

/* The series, in the order of the JSON "series" object. */
typedef enum {
  EDDY_TS_INGEST_RATE = 0, /* events/s stored by ingest since the previous point */
  EDDY_TS_CONSUMER_LAG,    /* Kafka consumer lag, summed over assigned partitions */
  EDDY_TS_BUFFER_EVENTS,   /* events in the replay buffer */
  EDDY_TS_BUFFER_FILL,     /* buffer events / buffer.capacity_events */
  EDDY_TS_LOGLOSS,         /* prequential, windowed */
  EDDY_TS_ACCURACY,        /* prequential, windowed */
  EDDY_TS_MSE,             /* prequential, windowed (squared heads) */
  EDDY_TS_LOSS_SCALE,
  EDDY_TS_SKIPPED_STEPS,   /* total */
  EDDY_TS_VERSION,         /* CURRENT */
  EDDY_TS_FRESHNESS,       /* seconds, from the newest fresh replica heartbeat reporting it */
  EDDY_TS_COUNT
} eddy_ts_series_t;

typedef struct {
  int64_t t_ms;              /* unix ms */
  double v[EDDY_TS_COUNT];   /* NaN: undefined */
} eddy_ts_point_t;

typedef struct eddy_timeseries eddy_timeseries_t;

/* capacity 0 = EDDY_TIMESERIES_CAPACITY, interval_ms 0 = EDDY_TIMESERIES_INTERVAL_MS (reported in
 * the JSON). NULL on allocation failure. */
eddy_timeseries_t *eddy_timeseries_new(size_t capacity, unsigned interval_ms);
void eddy_timeseries_destroy(eddy_timeseries_t *ts); /* NULL is a no-op */

/* Appends a point, overwriting the oldest once the ring is full. */
void eddy_timeseries_add(eddy_timeseries_t *ts, const eddy_ts_point_t *p);

/* Marks an event on the charts at unix ms t_ms: kind "drift" | "promote" | "reject" | "rollback",
 * version 0 = none, text a short note (cut to EDDY_MARKER_TEXT_MAX - 1 bytes). */
void eddy_timeseries_mark(eddy_timeseries_t *ts, int64_t t_ms, const char *kind, uint64_t version,
                          const char *text);

/* Points held now. */
size_t eddy_timeseries_count(eddy_timeseries_t *ts);

/* The JSON name of series s ("ingest_rate", ...); NULL out of range. */
const char *eddy_timeseries_name(eddy_ts_series_t s);

/* {"interval_ms": I, "t": [unix ms...], "series": {"ingest_rate": [...], ...}, "markers": [{"t",
 * "kind", "version", "text"}...]} for the points and markers with t > since_ms (all of them for
 * since_ms < 0), oldest first, values rounded to 6 significant digits, NaN as null.
 * NUL-terminated, caller frees; NULL on allocation failure. */
char *eddy_timeseries_json(eddy_timeseries_t *ts, int64_t since_ms);

#endif
