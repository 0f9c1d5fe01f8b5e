/* Dynamic loss scaling bookkeeping (PyTorch GradScaler semantics): backoff and skip on a
 * non-finite step, growth after `interval` clean steps in a row. The scale never drops below
 * min_scale and never grows to infinity. */
#include "model/scaler.h"

#include <float.h>
#include <math.h>
#include <string.h>

const eddy_scaler_limits_t eddy_scaler_limits = {
    .init_scale = {1, 1e9, 0},
    .growth = {1, 1000, EDDY_RANGE_OPEN_MIN},
    .backoff = {0, 1, EDDY_RANGE_OPEN_MIN | EDDY_RANGE_OPEN_MAX},
    .interval = {1, 1e9, 0},
    .min_scale = {0, 1e9, EDDY_RANGE_OPEN_MIN},
};

eddy_scaler_opts_t eddy_scaler_defaults(void) {
  eddy_scaler_opts_t o;
  memset(&o, 0, sizeof o); /* padding too: configs holding these are compared byte for byte */
  o.enabled = true;
  o.init_scale = 65536.0f;
  o.growth = 2.0f;
  o.backoff = 0.5f;
  o.interval = 2000;
  o.min_scale = 1.0f;
  return o;
}

eddy_err_t eddy_scaler_opts_check(const eddy_scaler_opts_t *o, eddy_fault_t *f) {
  const eddy_scaler_limits_t *lim = &eddy_scaler_limits;
  const eddy_bounded_t opts[] = {
      {"train.loss_scale.init", o->init_scale, &lim->init_scale},
      {"train.loss_scale.growth", o->growth, &lim->growth},
      {"train.loss_scale.backoff", o->backoff, &lim->backoff},
      {"train.loss_scale.interval", o->interval, &lim->interval},
      {"train.loss_scale.min", o->min_scale, &lim->min_scale},
  };
  if (eddy_range_check_all(opts, sizeof opts / sizeof opts[0], f) != EDDY_OK)
    return EDDY_ERR_CONFIG;
  if (!(o->min_scale <= o->init_scale)) {
    eddy_fault_key(f, "train.loss_scale.min", "%g", (double)o->min_scale);
    eddy_fault_key(f, "train.loss_scale.init", "%g", (double)o->init_scale);
    return eddy_fault_why(f, "train.loss_scale.min must not exceed train.loss_scale.init");
  }
  return EDDY_OK;
}

void eddy_scaler_init(eddy_scaler_t *s, const eddy_scaler_opts_t *opts) {
  s->opts = opts ? *opts : eddy_scaler_defaults();
  s->scale = s->opts.enabled ? s->opts.init_scale : 1.0f;
  s->good_steps = 0;
  s->skipped_steps = 0;
}

bool eddy_scaler_update(eddy_scaler_t *s, bool found_nonfinite) {
  if (found_nonfinite) {
    s->skipped_steps++;
    s->good_steps = 0;
    if (s->opts.enabled) {
      float next = s->scale * s->opts.backoff;
      s->scale = next > s->opts.min_scale ? next : s->opts.min_scale;
    }
    return false;
  }
  if (s->opts.enabled) {
    s->good_steps++;
    if (s->good_steps >= s->opts.interval) {
      float next = s->scale * s->opts.growth;
      if (isfinite(next) && next <= FLT_MAX) s->scale = next;
      s->good_steps = 0;
    }
  }
  return true;
}
