/* Dynamic loss scaling bookkeeping (PyTorch GradScaler semantics): backoff and skip on a
 * non-finite step, growth after `interval` clean steps in a row. The scale never drops below
 * min_scale and never grows to infinity. */
#include "model/scaler.h"

#include <float.h>
#include <math.h>

eddy_scaler_opts_t eddy_scaler_defaults(void) {
  eddy_scaler_opts_t o = {
      .enabled = true,
      .init_scale = 65536.0f,
      .growth = 2.0f,
      .backoff = 0.5f,
      .interval = 2000,
      .min_scale = 1.0f,
  };
  return o;
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
