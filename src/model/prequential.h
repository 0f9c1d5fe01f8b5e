/* Prequential metrics: every fresh event is scored before the step that trains on it. Keeps
 * cumulative sums and a sliding window of the last `window` events: weighted logloss (logistic,
 * softmax), accuracy (logistic, softmax), MSE (squared). */
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

#endif
