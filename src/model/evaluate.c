/* Per-event scoring of a model, of the label prior, and the paired comparison of two scorings
 * (see evaluate.h). Batches of EVAL_BATCH events go through eddy_infer_predict with one scratch
 * area; the standard error of a weighted mean difference uses the effective sample size
 * (sum w)^2 / sum w^2, which is n for unit weights. */
#include "model/evaluate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/batch.h"

#define EVAL_BATCH 64
#define PRIOR_PSEUDO 1e-3

static eddy_err_t scores_alloc(eddy_eval_scores_t *s, size_t n) {
  memset(s, 0, sizeof *s);
  s->metrics.logloss = s->metrics.accuracy = s->metrics.mse = NAN;
  size_t k = n ? n : 1;
  s->loss = malloc(k * sizeof *s->loss);
  s->weight = malloc(k * sizeof *s->weight);
  s->label = malloc(k * sizeof *s->label);
  s->pred = malloc(k * sizeof *s->pred);
  if (!s->loss || !s->weight || !s->label || !s->pred) {
    eddy_eval_scores_free(s);
    return EDDY_ERR_NOMEM;
  }
  s->n = n;
  return EDDY_OK;
}

void eddy_eval_scores_free(eddy_eval_scores_t *s) {
  if (!s) return;
  free(s->loss);
  free(s->weight);
  free(s->label);
  free(s->pred);
  memset(s, 0, sizeof *s);
}

/* Predicted class of one prediction: argmax (softmax), p >= 0.5 (logistic), -1 (squared). */
static int32_t predicted(eddy_head_t head, uint32_t outputs, const float *pred) {
  if (head == EDDY_HEAD_LOGISTIC) return pred[0] >= 0.5f;
  if (head != EDDY_HEAD_SOFTMAX) return -1;
  uint32_t best = 0;
  for (uint32_t c = 1; c < outputs; c++)
    if (pred[c] > pred[best]) best = c;
  return (int32_t)best;
}

/* Fills the metrics of s from its per-event values. */
static void scores_finish(eddy_eval_scores_t *s, eddy_head_t head) {
  double w = 0, wl = 0, wa = 0;
  for (size_t i = 0; i < s->n; i++) {
    w += s->weight[i];
    wl += s->weight[i] * s->loss[i];
    wa += s->weight[i] * (s->label[i] >= 0 && s->label[i] == s->pred[i]);
  }
  s->metrics.n = s->n;
  if (!(w > 0)) return;
  if (head == EDDY_HEAD_SQUARED) {
    s->metrics.mse = wl / w;
  } else {
    s->metrics.logloss = wl / w;
    s->metrics.accuracy = wa / w;
  }
}

eddy_err_t eddy_eval_model(const eddy_infer_t *model, const eddy_event_t *events, size_t n,
                           eddy_eval_scores_t *out, char *errstr, size_t errstr_size) {
  const eddy_model_spec_t *spec = eddy_infer_spec(model);
  uint32_t outputs = eddy_model_outputs(spec);
  eddy_err_t err = scores_alloc(out, n);
  if (err) return eddy_errf(err, errstr, errstr_size, "evaluation: out of memory");
  eddy_batch_t *b = eddy_batch_new(spec->dense_dim, EVAL_BATCH);
  float *scratch = malloc(eddy_infer_scratch_floats(model, EVAL_BATCH) * sizeof *scratch + 16);
  float *pred = malloc((size_t)EVAL_BATCH * outputs * sizeof *pred);
  if (!b || !scratch || !pred) err = eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "evaluation: out of memory");
  for (size_t i = 0; i < n && !err; i += EVAL_BATCH) {
    eddy_batch_clear(b);
    size_t k = n - i < EVAL_BATCH ? n - i : EVAL_BATCH;
    for (size_t j = 0; j < k && !err; j++)
      if ((err = eddy_batch_push(b, &events[i + j])))
        eddy_errf(err, errstr, errstr_size, "evaluation: event %zu (id \"%s\") does not fit the model: %s", i + j,
                  events[i + j].id, eddy_err_str(err));
    if (!err) err = eddy_infer_predict(model, b, scratch, pred, errstr, errstr_size);
    for (size_t j = 0; j < k && !err; j++) {
      const float *p = pred + j * outputs;
      out->loss[i + j] = eddy_prequential_loss(spec->head, outputs, p, b->label[j], NULL, &out->label[i + j]);
      out->weight[i + j] = b->weight[j];
      out->pred[i + j] = predicted(spec->head, outputs, p);
    }
  }
  eddy_batch_destroy(b);
  free(scratch);
  free(pred);
  if (err) {
    eddy_eval_scores_free(out);
    return err;
  }
  scores_finish(out, spec->head);
  return EDDY_OK;
}

eddy_err_t eddy_eval_prior(const eddy_model_spec_t *spec, const eddy_event_t *events, size_t n,
                           eddy_eval_scores_t *out) {
  eddy_err_t err = scores_alloc(out, n);
  if (err) return err;
  uint32_t outputs = eddy_model_outputs(spec);
  uint32_t classes = spec->head == EDDY_HEAD_SOFTMAX ? outputs : spec->head == EDDY_HEAD_LOGISTIC ? 2 : 1;
  double *mass = calloc(classes, sizeof *mass);
  float *p = malloc((outputs ? outputs : 1) * sizeof *p);
  if (!mass || !p) {
    free(mass);
    free(p);
    eddy_eval_scores_free(out);
    return EDDY_ERR_NOMEM;
  }
  double w = 0, wy = 0;
  for (size_t i = 0; i < n; i++) {
    float y = events[i].label, wi = events[i].weight;
    w += wi;
    wy += wi * y;
    if (spec->head == EDDY_HEAD_SOFTMAX && y >= 0 && y < (float)outputs) mass[(uint32_t)y] += wi;
    if (spec->head == EDDY_HEAD_LOGISTIC) mass[y >= 0.5f] += wi;
  }
  if (spec->head == EDDY_HEAD_SQUARED) {
    p[0] = (float)(w > 0 ? wy / w : 0);
  } else {
    for (uint32_t c = 0; c < classes; c++) mass[c] = (mass[c] + PRIOR_PSEUDO) / (w + PRIOR_PSEUDO * classes);
    if (spec->head == EDDY_HEAD_LOGISTIC) p[0] = (float)mass[1];
    else
      for (uint32_t c = 0; c < outputs; c++) p[c] = (float)mass[c];
  }
  for (size_t i = 0; i < n; i++) {
    out->loss[i] = eddy_prequential_loss(spec->head, outputs, p, events[i].label, NULL, &out->label[i]);
    out->weight[i] = events[i].weight;
    out->pred[i] = predicted(spec->head, outputs, p);
  }
  free(mass);
  free(p);
  scores_finish(out, spec->head);
  return EDDY_OK;
}

/* Paired statistics of per-event values x(a, i) - x(b, i), weighted by a's weights. */
static eddy_eval_paired_t paired(const eddy_eval_scores_t *a, const eddy_eval_scores_t *b,
                                 double (*x)(const eddy_eval_scores_t *s, size_t i)) {
  eddy_eval_paired_t r = {.mean_a = NAN, .mean_b = NAN, .diff = NAN, .se = 0, .n = 0};
  size_t n = a->n < b->n ? a->n : b->n;
  double w = 0, w2 = 0, wa = 0, wb = 0;
  for (size_t i = 0; i < n; i++) {
    double wi = a->weight[i];
    w += wi;
    w2 += wi * wi;
    wa += wi * x(a, i);
    wb += wi * x(b, i);
  }
  r.n = n;
  if (!(w > 0)) return r;
  r.mean_a = wa / w;
  r.mean_b = wb / w;
  r.diff = r.mean_a - r.mean_b;
  double var = 0;
  for (size_t i = 0; i < n; i++) {
    double d = x(a, i) - x(b, i) - r.diff;
    var += a->weight[i] * d * d;
  }
  double n_eff = w * w / w2;
  if (n_eff > 1) r.se = sqrt(var / w / (n_eff - 1));
  return r;
}

static double loss_of(const eddy_eval_scores_t *s, size_t i) { return s->loss[i]; }

static double error_of(const eddy_eval_scores_t *s, size_t i) {
  return !(s->label[i] >= 0 && s->label[i] == s->pred[i]);
}

eddy_eval_paired_t eddy_eval_paired(const eddy_eval_scores_t *a, const eddy_eval_scores_t *b) {
  return paired(a, b, loss_of);
}

eddy_eval_paired_t eddy_eval_paired_errors(const eddy_eval_scores_t *a, const eddy_eval_scores_t *b) {
  if (a->n && a->pred[0] < 0) { /* squared head: no classes */
    eddy_eval_paired_t r = {.mean_a = NAN, .mean_b = NAN, .diff = NAN, .se = 0, .n = 0};
    return r;
  }
  return paired(a, b, error_of);
}
