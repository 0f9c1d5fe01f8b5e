/* Metrics registry: counters, gauges and histograms with label sets, rendered in the Prometheus
 * text exposition format 0.0.4 (# HELP and # TYPE lines, counters named *_total, base units).
 * Thread-safe: any thread may update series while another renders. Series handles stay valid
 * until the registry is destroyed, so hot paths look a series up once and keep the handle. */
#ifndef EDDY_REGISTRY_H
#define EDDY_REGISTRY_H

#include <stddef.h>

#include "core/errors.h"

#define EDDY_METRIC_MAX_LABELS 8             /* label names per family */
#define EDDY_METRIC_MAX_SERIES 10000         /* label-value combinations per family */
#define EDDY_METRIC_MAX_BUCKETS 64           /* histogram buckets, +Inf excluded */
#define EDDY_REGISTRY_RENDER_MAX (64u << 20) /* cap of one rendered page */

typedef struct eddy_registry eddy_registry_t;
typedef struct eddy_metric eddy_metric_t; /* one family: name, help, type, label names */
typedef struct eddy_series eddy_series_t; /* one label-value combination of a family */

typedef enum {
  EDDY_METRIC_COUNTER = 0,
  EDDY_METRIC_GAUGE,
  EDDY_METRIC_HISTOGRAM
} eddy_metric_type_t;

eddy_registry_t *eddy_registry_new(void); /* NULL on allocation failure */
void eddy_registry_destroy(eddy_registry_t *reg);

/* Registers a family, or returns the one already registered under name when type, label names
 * and buckets are the same (so two modules may declare the same metric). labels: comma-separated
 * label names ("topic,partition"), "" or NULL for none. Histograms take n_buckets strictly
 * increasing finite upper bounds (the +Inf bucket is implied); other types pass NULL, 0.
 * NULL with errstr when a name is not a valid Prometheus name, a counter's name does not end in
 * "_total" (or another type's does), the help text is empty, or name is taken with another shape.
 */
eddy_metric_t *eddy_registry_add(eddy_registry_t *reg, eddy_metric_type_t type, const char *name,
                                 const char *help, const char *labels, const double *buckets,
                                 size_t n_buckets, char *errstr, size_t errstr_size);

/* The series of family m with these label values (one per label name, in order; NULL when the
 * family has no labels), created at 0 on first use and revived (at 0) after eddy_metric_remove.
 * NULL when m is NULL, a value is NULL, or the family already has EDDY_METRIC_MAX_SERIES series
 * (logged once). Every eddy_series_* function accepts NULL and then does nothing. */
eddy_series_t *eddy_metric_series(eddy_metric_t *m, const char *const *values);

/* Hides the series with these label values from rendering (e.g. a partition no longer assigned).
 * Its handle stays valid; a later eddy_metric_series for the same values shows it again. */
void eddy_metric_remove(eddy_metric_t *m, const char *const *values);

/* Counter: adds v (v < 0 and non-finite v are ignored). Gauge: adds v (any sign). */
void eddy_series_add(eddy_series_t *s, double v);
/* Gauge: sets v. Counter: sets v when v >= the current value (a total kept elsewhere, e.g. on
 * disk), otherwise ignored. */
void eddy_series_set(eddy_series_t *s, double v);
/* Histogram: counts one observation v into its bucket, _sum and _count. */
void eddy_series_observe(eddy_series_t *s, double v);
/* Current value of a counter or gauge; a histogram's count. 0 for NULL. */
double eddy_series_value(const eddy_series_t *s);

/* Registers fn to run at the start of every eddy_registry_render (e.g. to refresh gauges read
 * from elsewhere). Up to 32 callbacks; EDDY_ERR_TOO_LARGE beyond. */
eddy_err_t eddy_registry_on_collect(eddy_registry_t *reg, void (*fn)(void *ctx), void *ctx);

/* The whole registry as Prometheus text format 0.0.4 (families in registration order, series in
 * creation order), NUL-terminated; *len (optional) gets its length. Caller frees. NULL on
 * allocation failure or beyond EDDY_REGISTRY_RENDER_MAX bytes. */
char *eddy_registry_render(eddy_registry_t *reg, size_t *len);

#endif
