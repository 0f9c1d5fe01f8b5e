/* Prequential metrics: cumulative and sliding-window means of logloss, accuracy and squared error.
 * Every metric is a weighted mean, sum(w * x) / sum(w), so unit weights give plain means.
 * Probabilities are clamped to [1e-7, 1 - 1e-7] before the log. The window keeps one record per
 * event in a ring; its running sums are rebuilt from the ring once per window to bound drift. */
#include "model/prequential.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define METRICS_P_MIN 1e-7
#define METRICS_MAX_WINDOW (1u << 24)

typedef struct {
  double w, wll, wacc, wse;
} metric_sums_t;

typedef struct {
  float w, ll, acc, se;
} metric_rec_t;

struct eddy_prequential {
  eddy_head_t head;
  uint32_t outputs;
  metric_sums_t cum;
  uint64_t cum_n;
  metric_rec_t *ring;
  size_t window, ring_n, ring_pos, since_rebuild;
  metric_sums_t win;
};

eddy_prequential_t *eddy_prequential_new(eddy_head_t head, uint32_t outputs, size_t window) {
  if (outputs == 0 || window > METRICS_MAX_WINDOW) return NULL;
  eddy_prequential_t *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  m->head = head;
  m->outputs = outputs;
  m->window = window;
  if (window) {
    m->ring = calloc(window, sizeof *m->ring);
    if (!m->ring) {
      free(m);
      return NULL;
    }
  }
  return m;
}

void eddy_prequential_destroy(eddy_prequential_t *m) {
  if (!m) return;
  free(m->ring);
  free(m);
}

void eddy_prequential_reset(eddy_prequential_t *m) {
  memset(&m->cum, 0, sizeof m->cum);
  memset(&m->win, 0, sizeof m->win);
  m->cum_n = 0;
  m->ring_n = m->ring_pos = m->since_rebuild = 0;
}

static double clamp_p(double p) {
  if (!(p >= METRICS_P_MIN)) return METRICS_P_MIN; /* also NaN */
  if (p > 1.0 - METRICS_P_MIN) return 1.0 - METRICS_P_MIN;
  return p;
}

static metric_rec_t score(const eddy_prequential_t *m, const float *pred, float label, float weight) {
  metric_rec_t r = {.w = weight, .ll = 0, .acc = 0, .se = 0};
  if (m->head == EDDY_HEAD_LOGISTIC) {
    double p = clamp_p(pred[0]);
    bool positive = label >= 0.5f;
    r.ll = (float)(positive ? -log(p) : -log(1.0 - p));
    r.acc = ((pred[0] >= 0.5f) == positive) ? 1.0f : 0.0f;
  } else if (m->head == EDDY_HEAD_SOFTMAX) {
    uint32_t best = 0;
    for (uint32_t c = 1; c < m->outputs; c++)
      if (pred[c] > pred[best]) best = c;
    bool in_range = label >= 0 && label < (float)m->outputs;
    uint32_t y = in_range ? (uint32_t)label : 0;
    r.ll = (float)-log(in_range ? clamp_p(pred[y]) : METRICS_P_MIN);
    r.acc = (in_range && best == y) ? 1.0f : 0.0f;
  } else {
    double d = (double)pred[0] - label;
    r.se = (float)(d * d);
  }
  return r;
}

static void sums_add(metric_sums_t *s, const metric_rec_t *r, double sign) {
  s->w += sign * r->w;
  s->wll += sign * (double)r->w * r->ll;
  s->wacc += sign * (double)r->w * r->acc;
  s->wse += sign * (double)r->w * r->se;
}

void eddy_prequential_add(eddy_prequential_t *m, const float *pred, const float *label, const float *weight,
                      size_t n) {
  for (size_t i = 0; i < n; i++) {
    metric_rec_t r = score(m, pred + i * m->outputs, label[i], weight ? weight[i] : 1.0f);
    sums_add(&m->cum, &r, 1.0);
    m->cum_n++;
    if (!m->window) continue;
    if (m->ring_n == m->window) sums_add(&m->win, &m->ring[m->ring_pos], -1.0);
    else m->ring_n++;
    m->ring[m->ring_pos] = r;
    sums_add(&m->win, &r, 1.0);
    m->ring_pos = (m->ring_pos + 1) % m->window;
    if (++m->since_rebuild >= m->window) {
      memset(&m->win, 0, sizeof m->win);
      for (size_t j = 0; j < m->ring_n; j++) sums_add(&m->win, &m->ring[j], 1.0);
      m->since_rebuild = 0;
    }
  }
}

static eddy_metric_values_t values(const eddy_prequential_t *m, const metric_sums_t *s, uint64_t n) {
  eddy_metric_values_t v = {.logloss = NAN, .accuracy = NAN, .mse = NAN, .n = n};
  if (n == 0 || !(s->w > 0)) return v;
  if (m->head == EDDY_HEAD_SQUARED) {
    v.mse = s->wse / s->w;
  } else {
    v.logloss = s->wll / s->w;
    v.accuracy = s->wacc / s->w;
  }
  return v;
}

eddy_metric_values_t eddy_prequential_cumulative(const eddy_prequential_t *m) {
  return values(m, &m->cum, m->cum_n);
}

eddy_metric_values_t eddy_prequential_window(const eddy_prequential_t *m) {
  return values(m, &m->win, m->ring_n);
}
