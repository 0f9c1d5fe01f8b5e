/* Dynamic loss scaling with PyTorch GradScaler semantics: losses are multiplied by `scale` before
 * backward; a step whose unscaled gradients hold Inf/NaN is skipped and the scale multiplied by
 * `backoff` (not below `min_scale`); after `interval` clean steps in a row the scale grows by
 * `growth`. Pure bookkeeping shared by every backend. */
#ifndef EDDY_SCALER_H
#define EDDY_SCALER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/range.h"

typedef struct {
  bool enabled;        /* false: scale stays 1 and non-finite steps are still skipped */
  float init_scale;    /* 65536 */
  float growth;        /* 2.0 */
  float backoff;       /* 0.5 */
  uint32_t interval;   /* 2000 */
  float min_scale;     /* floor, 1.0 */
} eddy_scaler_opts_t;

typedef struct {
  eddy_scaler_opts_t opts;
  float scale;
  uint32_t good_steps;     /* clean steps since the last growth or backoff */
  uint64_t skipped_steps;  /* total steps skipped for Inf/NaN */
} eddy_scaler_t;

/* The ranges of the loss-scaling options (config keys train.loss_scale.*): the one place they
 * are written. The config loader checks its keys against them; eddy_scaler_opts_check() uses them
 * too. */
typedef struct {
  eddy_range_t init_scale, growth, backoff, interval, min_scale;
} eddy_scaler_limits_t;

extern const eddy_scaler_limits_t eddy_scaler_limits;

/* The defaults above (configs/reference.ini documents them). */
eddy_scaler_opts_t eddy_scaler_defaults(void);

/* Checks each option against eddy_scaler_limits and that min_scale does not exceed init_scale. On
 * failure returns EDDY_ERR_CONFIG with fault naming the train.loss_scale.* keys. */
eddy_err_t eddy_scaler_opts_check(const eddy_scaler_opts_t *opts, eddy_fault_t *fault);

void eddy_scaler_init(eddy_scaler_t *s, const eddy_scaler_opts_t *opts);
/* Records one optimizer step. Returns true when the step must be applied (gradients finite). */
bool eddy_scaler_update(eddy_scaler_t *s, bool found_nonfinite);

#endif
