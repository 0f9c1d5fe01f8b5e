/* Metrics registry and Prometheus text exposition (format 0.0.4). Families are append-only and
 * each has its own mutex guarding its series; rendering takes one family lock at a time, so a
 * page is consistent per family (a histogram's buckets, _sum and _count always agree). */
#include "metrics/registry.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

#define MAX_COLLECT 32

struct eddy_series {
  eddy_metric_t *family;
  char **values; /* family->n_labels strings */
  bool hidden;
  double value;      /* counter, gauge */
  uint64_t *buckets; /* histogram: per-bucket counts (not cumulative), n_buckets + 1 */
  double sum;
  uint64_t count;
  eddy_series_t *next;
};

struct eddy_metric {
  eddy_registry_t *reg;
  eddy_metric_type_t type;
  char *name, *help;
  size_t n_labels;
  char *labels[EDDY_METRIC_MAX_LABELS];
  double *bounds;
  size_t n_bounds;
  pthread_mutex_t lock;
  eddy_series_t *head, *tail;
  size_t n_series;
  bool cap_logged;
  eddy_metric_t *next;
};

struct eddy_registry {
  pthread_mutex_t lock; /* family list and collect callbacks */
  eddy_metric_t *head, *tail;
  struct {
    void (*fn)(void *ctx);
    void *ctx;
  } collect[MAX_COLLECT];
  size_t n_collect;
};

static const char *type_name(eddy_metric_type_t t) {
  return t == EDDY_METRIC_COUNTER ? "counter" : t == EDDY_METRIC_GAUGE ? "gauge" : "histogram";
}

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

static bool valid_metric_name(const char *s) {
  if (!s || !*s) return false;
  for (size_t i = 0; s[i]; i++) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

static bool valid_label_name(const char *s, size_t len) {
  if (len == 0 || (len >= 2 && s[0] == '_' && s[1] == '_')) return false;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

eddy_registry_t *eddy_registry_new(void) {
  eddy_registry_t *reg = calloc(1, sizeof *reg);
  if (!reg) return NULL;
  pthread_mutex_init(&reg->lock, NULL);
  return reg;
}

static void series_free(eddy_series_t *s, size_t n_labels) {
  for (size_t i = 0; i < n_labels; i++) free(s->values[i]);
  free(s->values);
  free(s->buckets);
  free(s);
}

static void family_free(eddy_metric_t *m) {
  if (!m) return;
  for (eddy_series_t *s = m->head, *next; s; s = next) {
    next = s->next;
    series_free(s, m->n_labels);
  }
  for (size_t i = 0; i < m->n_labels; i++) free(m->labels[i]);
  free(m->bounds);
  free(m->name);
  free(m->help);
  pthread_mutex_destroy(&m->lock);
  free(m);
}

void eddy_registry_destroy(eddy_registry_t *reg) {
  if (!reg) return;
  for (eddy_metric_t *m = reg->head, *next; m; m = next) {
    next = m->next;
    family_free(m);
  }
  pthread_mutex_destroy(&reg->lock);
  free(reg);
}

/* Splits "a,b,c" into m->labels; errstr on a bad name. */
static eddy_err_t parse_labels(eddy_metric_t *m, const char *labels, char *errstr,
                               size_t errstr_size) {
  if (!labels || !*labels) return EDDY_OK;
  const char *p = labels;
  for (;;) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    bool reserved = m->type == EDDY_METRIC_HISTOGRAM && len == 2 && !strncmp(p, "le", 2);
    if (!valid_label_name(p, len) || reserved)
      return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                       "metric %s: label name \"%.*s\" is not valid", m->name, (int)len, p);
    if (m->n_labels == EDDY_METRIC_MAX_LABELS)
      return eddy_errf(EDDY_ERR_TOO_LARGE, errstr, errstr_size,
                       "metric %s: more than %d label names in \"%s\"", m->name,
                       EDDY_METRIC_MAX_LABELS, labels);
    for (size_t i = 0; i < m->n_labels; i++)
      if (strlen(m->labels[i]) == len && !strncmp(m->labels[i], p, len))
        return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                         "metric %s: label name \"%.*s\" given twice", m->name, (int)len, p);
    m->labels[m->n_labels] = strndup(p, len);
    if (!m->labels[m->n_labels])
      return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "metric %s: out of memory", m->name);
    m->n_labels++;
    if (!comma) break;
    p = comma + 1;
  }
  return EDDY_OK;
}

static bool same_shape(const eddy_metric_t *a, const eddy_metric_t *b) {
  if (a->type != b->type || a->n_labels != b->n_labels || a->n_bounds != b->n_bounds) return false;
  for (size_t i = 0; i < a->n_labels; i++)
    if (strcmp(a->labels[i], b->labels[i])) return false;
  for (size_t i = 0; i < a->n_bounds; i++)
    if (a->bounds[i] != b->bounds[i]) return false;
  return true;
}

eddy_metric_t *eddy_registry_add(eddy_registry_t *reg, eddy_metric_type_t type, const char *name,
                                 const char *help, const char *labels, const double *buckets,
                                 size_t n_buckets, char *errstr, size_t errstr_size) {
  if (!reg || type > EDDY_METRIC_HISTOGRAM) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
              "metric registry: no registry or bad type");
    return NULL;
  }
  if (!valid_metric_name(name)) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "metric name \"%s\" is not valid",
              name ? name : "(null)");
    return NULL;
  }
  if ((type == EDDY_METRIC_COUNTER) != ends_with(name, "_total")) {
    if (type == EDDY_METRIC_COUNTER)
      eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                "counter %s: a counter's name must end in _total", name);
    else
      eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                "%s %s: only counters' names end in _total", type_name(type), name);
    return NULL;
  }
  if (!help || !*help) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "metric %s: empty help text", name);
    return NULL;
  }
  if ((type == EDDY_METRIC_HISTOGRAM) != (n_buckets > 0 && buckets != NULL) ||
      n_buckets > EDDY_METRIC_MAX_BUCKETS) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
              "metric %s: %zu buckets (a histogram needs 1..%d, other types none)", name, n_buckets,
              EDDY_METRIC_MAX_BUCKETS);
    return NULL;
  }
  for (size_t i = 0; i < n_buckets; i++)
    if (!isfinite(buckets[i]) || (i > 0 && buckets[i] <= buckets[i - 1])) {
      eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                "metric %s: bucket %zu (%g) is not finite or not above the previous one", name, i,
                buckets[i]);
      return NULL;
    }

  eddy_metric_t *m = calloc(1, sizeof *m);
  if (!m) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "metric %s: out of memory", name);
    return NULL;
  }
  pthread_mutex_init(&m->lock, NULL);
  m->reg = reg;
  m->type = type;
  m->name = strdup(name);
  m->help = strdup(help);
  m->n_bounds = n_buckets;
  if (n_buckets) {
    m->bounds = malloc(n_buckets * sizeof *m->bounds);
    if (m->bounds) memcpy(m->bounds, buckets, n_buckets * sizeof *m->bounds);
  }
  if (!m->name || !m->help || (n_buckets && !m->bounds)) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "metric %s: out of memory", name);
    family_free(m);
    return NULL;
  }
  if (parse_labels(m, labels, errstr, errstr_size) != EDDY_OK) {
    family_free(m);
    return NULL;
  }

  pthread_mutex_lock(&reg->lock);
  for (eddy_metric_t *old = reg->head; old; old = old->next) {
    if (strcmp(old->name, name)) continue;
    bool same = same_shape(old, m);
    pthread_mutex_unlock(&reg->lock);
    if (!same)
      eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                "metric %s is already registered as a %s with other labels or buckets", name,
                type_name(old->type));
    family_free(m);
    return same ? old : NULL;
  }
  if (reg->tail)
    reg->tail->next = m;
  else
    reg->head = m;
  reg->tail = m;
  pthread_mutex_unlock(&reg->lock);
  return m;
}

static bool values_match(const eddy_series_t *s, const char *const *values, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(s->values[i], values[i])) return false;
  return true;
}

/* Finds the series with these values; the caller holds m->lock. */
static eddy_series_t *series_find(eddy_metric_t *m, const char *const *values) {
  for (eddy_series_t *s = m->head; s; s = s->next)
    if (values_match(s, values, m->n_labels)) return s;
  return NULL;
}

static void series_reset(eddy_series_t *s) {
  s->value = 0;
  s->sum = 0;
  s->count = 0;
  if (s->buckets) memset(s->buckets, 0, (s->family->n_bounds + 1) * sizeof *s->buckets);
}

eddy_series_t *eddy_metric_series(eddy_metric_t *m, const char *const *values) {
  if (!m) return NULL;
  for (size_t i = 0; i < m->n_labels; i++)
    if (!values || !values[i]) return NULL;
  pthread_mutex_lock(&m->lock);
  eddy_series_t *s = series_find(m, values);
  if (s) {
    if (s->hidden) {
      s->hidden = false;
      series_reset(s);
    }
    pthread_mutex_unlock(&m->lock);
    return s;
  }
  if (m->n_series >= EDDY_METRIC_MAX_SERIES) {
    bool first = !m->cap_logged;
    m->cap_logged = true;
    pthread_mutex_unlock(&m->lock);
    if (first)
      EDDY_WARN("metrics", "metric %s has %d series, the most allowed: new label values dropped",
                m->name, EDDY_METRIC_MAX_SERIES);
    return NULL;
  }
  s = calloc(1, sizeof *s);
  bool ok = s != NULL;
  if (ok) {
    s->family = m;
    s->values = calloc(m->n_labels ? m->n_labels : 1, sizeof *s->values);
    ok = s->values != NULL;
    for (size_t i = 0; ok && i < m->n_labels; i++) ok = (s->values[i] = strdup(values[i])) != NULL;
    if (ok && m->type == EDDY_METRIC_HISTOGRAM)
      ok = (s->buckets = calloc(m->n_bounds + 1, sizeof *s->buckets)) != NULL;
  }
  if (!ok) {
    if (s) series_free(s, s->values ? m->n_labels : 0);
    pthread_mutex_unlock(&m->lock);
    return NULL;
  }
  if (m->tail)
    m->tail->next = s;
  else
    m->head = s;
  m->tail = s;
  m->n_series++;
  pthread_mutex_unlock(&m->lock);
  return s;
}

void eddy_metric_remove(eddy_metric_t *m, const char *const *values) {
  if (!m) return;
  for (size_t i = 0; i < m->n_labels; i++)
    if (!values || !values[i]) return;
  pthread_mutex_lock(&m->lock);
  eddy_series_t *s = series_find(m, values);
  if (s) s->hidden = true;
  pthread_mutex_unlock(&m->lock);
}

void eddy_series_add(eddy_series_t *s, double v) {
  if (!s || s->family->type == EDDY_METRIC_HISTOGRAM) return;
  if (s->family->type == EDDY_METRIC_COUNTER && !(v >= 0 && isfinite(v))) return;
  pthread_mutex_lock(&s->family->lock);
  s->value += v;
  pthread_mutex_unlock(&s->family->lock);
}

void eddy_series_set(eddy_series_t *s, double v) {
  if (!s || s->family->type == EDDY_METRIC_HISTOGRAM) return;
  pthread_mutex_lock(&s->family->lock);
  if (s->family->type == EDDY_METRIC_GAUGE || v >= s->value) s->value = v;
  pthread_mutex_unlock(&s->family->lock);
}

void eddy_series_observe(eddy_series_t *s, double v) {
  if (!s || s->family->type != EDDY_METRIC_HISTOGRAM || isnan(v)) return;
  eddy_metric_t *m = s->family;
  size_t b = 0;
  while (b < m->n_bounds && v > m->bounds[b]) b++;
  pthread_mutex_lock(&m->lock);
  s->buckets[b]++;
  s->sum += v;
  s->count++;
  pthread_mutex_unlock(&m->lock);
}

double eddy_series_value(const eddy_series_t *s) {
  if (!s) return 0;
  pthread_mutex_lock(&s->family->lock);
  double v = s->family->type == EDDY_METRIC_HISTOGRAM ? (double)s->count : s->value;
  pthread_mutex_unlock(&s->family->lock);
  return v;
}

eddy_err_t eddy_registry_on_collect(eddy_registry_t *reg, void (*fn)(void *ctx), void *ctx) {
  if (!reg || !fn) return EDDY_ERR_INVALID_ARG;
  pthread_mutex_lock(&reg->lock);
  eddy_err_t err = EDDY_ERR_TOO_LARGE;
  if (reg->n_collect < MAX_COLLECT) {
    reg->collect[reg->n_collect].fn = fn;
    reg->collect[reg->n_collect].ctx = ctx;
    reg->n_collect++;
    err = EDDY_OK;
  }
  pthread_mutex_unlock(&reg->lock);
  return err;
}

/* Output text with a hard cap; once failed, further writes are ignored. */
typedef struct {
  char *data;
  size_t len, cap;
  bool failed;
} out_t;

static void out_write(out_t *o, const char *s, size_t n) {
  if (o->failed) return;
  if (o->len + n + 1 > o->cap) {
    size_t cap = o->cap ? o->cap : 4096;
    while (cap < o->len + n + 1) cap *= 2;
    if (cap > EDDY_REGISTRY_RENDER_MAX) cap = EDDY_REGISTRY_RENDER_MAX;
    char *grown = cap >= o->len + n + 1 ? realloc(o->data, cap) : NULL;
    if (!grown) {
      o->failed = true;
      return;
    }
    o->data = grown;
    o->cap = cap;
  }
  memcpy(o->data + o->len, s, n);
  o->len += n;
  o->data[o->len] = '\0';
}

static void out_str(out_t *o, const char *s) { out_write(o, s, strlen(s)); }

/* Writes s escaped: backslash and newline always, the double quote inside label values. */
static void out_escaped(out_t *o, const char *s, bool quote) {
  for (const char *p = s; *p; p++) {
    if (*p == '\\')
      out_write(o, "\\\\", 2);
    else if (*p == '\n')
      out_write(o, "\\n", 2);
    else if (quote && *p == '"')
      out_write(o, "\\\"", 2);
    else
      out_write(o, p, 1);
  }
}

/* Shortest text that reads back as the same double; +Inf, -Inf, NaN as Prometheus spells them. */
static void format_value(double v, char *buf, size_t size) {
  if (isnan(v)) {
    snprintf(buf, size, "NaN");
  } else if (isinf(v)) {
    snprintf(buf, size, v > 0 ? "+Inf" : "-Inf");
  } else {
    for (int prec = 15; prec <= 17; prec++) {
      snprintf(buf, size, "%.*g", prec, v);
      if (strtod(buf, NULL) == v) break;
    }
  }
}

static void out_value(out_t *o, double v) {
  char buf[64];
  format_value(v, buf, sizeof buf);
  out_str(o, buf);
}

/* name{l1="v1",...,extra_name="extra_value"} value */
static void out_sample(out_t *o, const eddy_metric_t *m, const char *suffix, const eddy_series_t *s,
                       const char *extra_name, const char *extra_value, double v) {
  out_str(o, m->name);
  out_str(o, suffix);
  if (m->n_labels || extra_name) {
    out_write(o, "{", 1);
    for (size_t i = 0; i < m->n_labels; i++) {
      if (i) out_write(o, ",", 1);
      out_str(o, m->labels[i]);
      out_write(o, "=\"", 2);
      out_escaped(o, s->values[i], true);
      out_write(o, "\"", 1);
    }
    if (extra_name) {
      if (m->n_labels) out_write(o, ",", 1);
      out_str(o, extra_name);
      out_write(o, "=\"", 2);
      out_str(o, extra_value);
      out_write(o, "\"", 1);
    }
    out_write(o, "}", 1);
  }
  out_write(o, " ", 1);
  out_value(o, v);
  out_write(o, "\n", 1);
}

static void render_family(out_t *o, eddy_metric_t *m) {
  out_str(o, "# HELP ");
  out_str(o, m->name);
  out_write(o, " ", 1);
  out_escaped(o, m->help, false);
  out_str(o, "\n# TYPE ");
  out_str(o, m->name);
  out_write(o, " ", 1);
  out_str(o, type_name(m->type));
  out_write(o, "\n", 1);
  pthread_mutex_lock(&m->lock);
  for (const eddy_series_t *s = m->head; s; s = s->next) {
    if (s->hidden) continue;
    if (m->type != EDDY_METRIC_HISTOGRAM) {
      out_sample(o, m, "", s, NULL, NULL, s->value);
      continue;
    }
    uint64_t cumulative = 0;
    char le[64];
    for (size_t b = 0; b <= m->n_bounds; b++) {
      cumulative += s->buckets[b];
      format_value(b < m->n_bounds ? m->bounds[b] : INFINITY, le, sizeof le);
      out_sample(o, m, "_bucket", s, "le", le, (double)cumulative);
    }
    out_sample(o, m, "_sum", s, NULL, NULL, s->sum);
    out_sample(o, m, "_count", s, NULL, NULL, (double)s->count);
  }
  pthread_mutex_unlock(&m->lock);
}

char *eddy_registry_render(eddy_registry_t *reg, size_t *len) {
  if (len) *len = 0;
  if (!reg) return NULL;
  pthread_mutex_lock(&reg->lock);
  size_t n_collect = reg->n_collect;
  void (*fns[MAX_COLLECT])(void *);
  void *ctxs[MAX_COLLECT];
  for (size_t i = 0; i < n_collect; i++) {
    fns[i] = reg->collect[i].fn;
    ctxs[i] = reg->collect[i].ctx;
  }
  pthread_mutex_unlock(&reg->lock);
  for (size_t i = 0; i < n_collect; i++) fns[i](ctxs[i]); /* no lock held: they update series */

  out_t o = {0};
  out_write(&o, "", 0);           /* an empty registry renders as "" rather than NULL */
  pthread_mutex_lock(&reg->lock); /* lock order: registry, then family */
  for (eddy_metric_t *m = reg->head; m && !o.failed; m = m->next) render_family(&o, m);
  pthread_mutex_unlock(&reg->lock);
  if (o.failed) {
    free(o.data);
    return NULL;
  }
  if (len) *len = o.len;
  return o.data;
}
