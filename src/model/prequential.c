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
  int32_t cls; /* class of the label, -1: none */
} metric_rec_t;

struct eddy_prequential {
  eddy_head_t head;
  uint32_t outputs;
  metric_sums_t cum;
  uint64_t cum_n;
  metric_rec_t *ring;
  size_t window, ring_n, ring_pos, since_rebuild;
  metric_sums_t win;
  uint32_t classes;     /* per-class window counts below; 0 = none */
  double *class_w, *class_acc; /* [classes] weight and weighted hits of the window's events */
  int64_t *class_n;             /* [classes] events of the window */
};

static uint32_t head_classes(eddy_head_t head, uint32_t outputs) {
  return head == EDDY_HEAD_SOFTMAX ? outputs : head == EDDY_HEAD_LOGISTIC ? 2 : 0;
}

eddy_prequential_t *eddy_prequential_new(eddy_head_t head, uint32_t outputs, size_t window) {
  if (outputs == 0 || window > METRICS_MAX_WINDOW) return NULL;
  eddy_prequential_t *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  m->head = head;
  m->outputs = outputs;
  m->window = window;
  if (window) {
    m->ring = calloc(window, sizeof *m->ring);
    m->classes = head_classes(head, outputs);
    if (m->classes) {
      m->class_w = calloc(m->classes, sizeof *m->class_w);
      m->class_acc = calloc(m->classes, sizeof *m->class_acc);
      m->class_n = calloc(m->classes, sizeof *m->class_n);
    }
    if (!m->ring || (m->classes && (!m->class_w || !m->class_acc || !m->class_n))) {
      eddy_prequential_destroy(m);
      return NULL;
    }
  }
  return m;
}

void eddy_prequential_destroy(eddy_prequential_t *m) {
  if (!m) return;
  free(m->ring);
  free(m->class_w);
  free(m->class_acc);
  free(m->class_n);
  free(m);
}

void eddy_prequential_reset(eddy_prequential_t *m) {
  memset(&m->cum, 0, sizeof m->cum);
  memset(&m->win, 0, sizeof m->win);
  m->cum_n = 0;
  m->ring_n = m->ring_pos = m->since_rebuild = 0;
  if (m->classes) {
    memset(m->class_w, 0, m->classes * sizeof *m->class_w);
    memset(m->class_acc, 0, m->classes * sizeof *m->class_acc);
    memset(m->class_n, 0, m->classes * sizeof *m->class_n);
  }
}

static double clamp_p(double p) {
  if (!(p >= METRICS_P_MIN)) return METRICS_P_MIN; /* also NaN */
  if (p > 1.0 - METRICS_P_MIN) return 1.0 - METRICS_P_MIN;
  return p;
}

double eddy_prequential_loss(eddy_head_t head, uint32_t outputs, const float *pred, float label, int *correct,
                             int32_t *cls) {
  double loss;
  int hit = -1;
  int32_t c = -1;
  if (head == EDDY_HEAD_LOGISTIC) {
    double p = clamp_p(pred[0]);
    bool positive = label >= 0.5f;
    loss = positive ? -log(p) : -log(1.0 - p);
    hit = (pred[0] >= 0.5f) == positive;
    c = positive;
  } else if (head == EDDY_HEAD_SOFTMAX) {
    uint32_t best = 0;
    for (uint32_t k = 1; k < outputs; k++)
      if (pred[k] > pred[best]) best = k;
    bool in_range = label >= 0 && label < (float)outputs;
    uint32_t y = in_range ? (uint32_t)label : 0;
    loss = -log(in_range ? clamp_p(pred[y]) : METRICS_P_MIN);
    hit = in_range && best == y;
    c = in_range ? (int32_t)y : -1;
  } else {
    double d = (double)pred[0] - label;
    loss = d * d;
  }
  if (correct) *correct = hit;
  if (cls) *cls = c;
  return loss;
}

static metric_rec_t score(const eddy_prequential_t *m, const float *pred, float label, float weight) {
  metric_rec_t r = {.w = weight, .ll = 0, .acc = 0, .se = 0, .cls = -1};
  int hit = 0;
  double loss = eddy_prequential_loss(m->head, m->outputs, pred, label, &hit, &r.cls);
  if (m->head == EDDY_HEAD_SQUARED) {
    r.se = (float)loss;
  } else {
    r.ll = (float)loss;
    r.acc = hit ? 1.0f : 0.0f;
  }
  if (r.cls >= 0 && (uint32_t)r.cls >= m->classes) r.cls = -1;
  return r;
}

static void class_add(eddy_prequential_t *m, const metric_rec_t *r, double sign) {
  if (r->cls < 0) return;
  m->class_w[r->cls] += sign * r->w;
  m->class_acc[r->cls] += sign * (double)r->w * r->acc;
  m->class_n[r->cls] += sign > 0 ? 1 : -1;
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
    if (m->ring_n == m->window) {
      sums_add(&m->win, &m->ring[m->ring_pos], -1.0);
      class_add(m, &m->ring[m->ring_pos], -1.0);
    } else {
      m->ring_n++;
    }
    m->ring[m->ring_pos] = r;
    sums_add(&m->win, &r, 1.0);
    class_add(m, &r, 1.0);
    m->ring_pos = (m->ring_pos + 1) % m->window;
    if (++m->since_rebuild >= m->window) {
      memset(&m->win, 0, sizeof m->win);
      if (m->classes) {
        memset(m->class_w, 0, m->classes * sizeof *m->class_w);
        memset(m->class_acc, 0, m->classes * sizeof *m->class_acc);
        memset(m->class_n, 0, m->classes * sizeof *m->class_n);
      }
      for (size_t j = 0; j < m->ring_n; j++) {
        sums_add(&m->win, &m->ring[j], 1.0);
        class_add(m, &m->ring[j], 1.0);
      }
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

uint32_t eddy_prequential_classes(const eddy_prequential_t *m) { return m->classes; }

double eddy_prequential_class_accuracy(const eddy_prequential_t *m, uint32_t cls, uint64_t *n) {
  uint64_t count = 0;
  double acc = NAN;
  if (cls < m->classes && m->class_n[cls] > 0) {
    count = (uint64_t)m->class_n[cls];
    if (m->class_w[cls] > 0) acc = m->class_acc[cls] / m->class_w[cls];
  }
  if (n) *n = count;
  return acc;
}
