/* Private to src/model, src/cuda and the unit tests: what the public API does not expose of a
 * learner on any backend (raw gradient sums, for finite-difference checks and backend comparisons). */
#ifndef EDDY_MODEL_LEARNER_INTERNAL_H
#define EDDY_MODEL_LEARNER_INTERNAL_H

#include "model/learner.h"

/* Copies the accumulated gradient sum of a tensor (sum_i w_i * dloss_i, times the loss scale) into
 * dst; numel must match. */
eddy_err_t eddy_learner_export_grad(eddy_learner_t *l, const char *name, float *dst, size_t numel);

#endif
