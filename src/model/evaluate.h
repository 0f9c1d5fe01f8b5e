/* Scoring a model's weights on a set of events, one loss per event, so that two predictors can be
 * compared on the same events (the snapshot gate's champion/challenger test, `eddy eval`): a model
 * built from a weights file (model/infer.h), the label prior of the events themselves (the trivial
 * predictor a model must beat), and the paired difference of two such scorings with its standard
 * error. Per-event losses are eddy_prequential_loss's, so they average to the metrics' values. */
#ifndef EDDY_EVALUATE_H
#define EDDY_EVALUATE_H

#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"
#include "core/event.h"
#include "model/infer.h"
#include "model/prequential.h"
#include "model/spec.h"

/* One predictor on n events, in the events' order. */
typedef struct {
  size_t n;
  double *loss;                 /* [n] logloss (logistic, softmax) or squared error (squared) */
  float *weight;                /* [n] the events' weights */
  int32_t *label;               /* [n] class of the label; -1 for squared or out of range */
  int32_t *pred;                /* [n] predicted class (argmax, or p >= 0.5); -1 for squared */
  eddy_metric_values_t metrics; /* weighted means over the n events */
} eddy_eval_scores_t;

/* Scores model on events[0..n) in batches: out gets arrays it owns (eddy_eval_scores_free).
 * EDDY_ERR_SHAPE with errstr naming the event index when an event does not fit the model. */
eddy_err_t eddy_eval_model(const eddy_infer_t *model, const eddy_event_t *events, size_t n,
                           eddy_eval_scores_t *out, char *errstr, size_t errstr_size);

/* The label-prior predictor of the same events: it predicts, for every event, the label
 * distribution of events[0..n) themselves (class frequencies for softmax and logistic with a
 * 1e-3 pseudo-count per class, the mean label for squared). A stream whose labels carry no
 * signal (one class, or random) cannot be beaten by it. Same ownership as eddy_eval_model. */
eddy_err_t eddy_eval_prior(const eddy_model_spec_t *spec, const eddy_event_t *events, size_t n,
                           eddy_eval_scores_t *out);

void eddy_eval_scores_free(eddy_eval_scores_t *s); /* NULL is a no-op; s is zeroed */

/* a minus b on the same events (same n, same order). */
typedef struct {
  double mean_a, mean_b; /* weighted mean losses */
  double diff;           /* weighted mean of the per-event differences: mean_a - mean_b */
  double se;             /* its standard error (0 with fewer than 2 events) */
  size_t n;
} eddy_eval_paired_t;

eddy_eval_paired_t eddy_eval_paired(const eddy_eval_scores_t *a, const eddy_eval_scores_t *b);
/* The same on the events' 0/1 errors (pred != label) instead of their losses: means are error
 * rates. Classification heads only (squared: n = 0, NaN means). */
eddy_eval_paired_t eddy_eval_paired_errors(const eddy_eval_scores_t *a, const eddy_eval_scores_t *b);

#endif
