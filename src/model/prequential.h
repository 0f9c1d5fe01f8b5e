/* Prequential metrics: every fresh event is scored before the step that trains on it. Keeps
 * cumulative sums and a sliding window of the last `window` events: weighted logloss (logistic,
 * softmax), accuracy (logistic, softmax), MSE (squared), and the window's accuracy per class of
 * the label. eddy_prequential_loss is the one per-event scoring rule, shared with the gate. */
#ifndef EDDY_PREQUENTIAL_H
#define EDDY_PREQUENTIAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/event.h"

typedef struct {
  double logloss, accuracy, mse; /* NaN where the head does not define the metric or n == 0 */
  uint64_t n;
} eddy_metric_values_t;

typedef struct eddy_prequential eddy_prequential_t;

eddy_prequential_t *eddy_prequential_new(eddy_head_t head, uint32_t outputs, size_t window);
void eddy_prequential_destroy(eddy_prequential_t *m);
void eddy_prequential_reset(eddy_prequential_t *m);
/* Scores n examples: pred is n × outputs (probabilities, or values for squared). */
void eddy_prequential_add(eddy_prequential_t *m, const float *pred, const float *label, const float *weight,
                      size_t n);
eddy_metric_values_t eddy_prequential_cumulative(const eddy_prequential_t *m);
eddy_metric_values_t eddy_prequential_window(const eddy_prequential_t *m);

/* Classes of the label that the per-class window counts: outputs for softmax, 2 for logistic, 0
 * for squared. */
uint32_t eddy_prequential_classes(const eddy_prequential_t *m);
/* Windowed accuracy of the events whose label is class cls (NaN when none is in the window);
 * *n (optional) gets their count. */
double eddy_prequential_class_accuracy(const eddy_prequential_t *m, uint32_t cls, uint64_t *n);

/* One prediction scored as the metrics score it: returns the loss (logloss for logistic and
 * softmax, with probabilities clamped to [1e-7, 1 - 1e-7]; squared error for squared) and sets
 * *correct (optional) to 1 or 0 (-1 for squared) and *cls (optional) to the label's class (-1 for
 * squared or a label out of range). pred holds outputs values. */
double eddy_prequential_loss(eddy_head_t head, uint32_t outputs, const float *pred, float label, int *correct,
                             int32_t *cls);

#endif
