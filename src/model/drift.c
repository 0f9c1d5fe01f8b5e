/* The CUSUM change detector of drift.h: z = (loss - mean) / spread, capped at threshold / 5;
 * stat = max(0, stat + z - slack); it fires when stat > threshold. The spread is the baseline's
 * standard deviation, at least a tenth of its mean (a near-perfect model's tiny spread would make
 * every mistake look like drift). The baseline is updated only while stat is below the warning
 * level (a quarter of the threshold), so a rise under way is not absorbed into it. */
#include "model/drift.h"

#include <math.h>

void eddy_drift_init(eddy_drift_t *d, double slack, double threshold) {
  d->slack = slack > 0 ? slack : 0.5;
  d->threshold = threshold > 0 ? threshold : 0;
  eddy_drift_reset(d);
}

void eddy_drift_reset(eddy_drift_t *d) {
  d->n = 0;
  d->mean = d->var = 0;
  d->stat = 0;
  d->rise_seq = 0;
}

static void baseline_add(eddy_drift_t *d, double x) {
  d->n++;
  double a = d->n < EDDY_DRIFT_HORIZON ? 1.0 / (double)d->n : 1.0 / EDDY_DRIFT_HORIZON;
  double dx = x - d->mean;
  d->mean += a * dx;
  d->var = (1 - a) * (d->var + a * dx * dx);
}

bool eddy_drift_add(eddy_drift_t *d, double loss, uint64_t seq, uint64_t *change_seq) {
  if (!isfinite(loss)) return false;
  if (!d->threshold || d->n < EDDY_DRIFT_WARMUP) {
    baseline_add(d, loss);
    return false;
  }
  double spread = sqrt(d->var);
  if (spread < 0.1 * d->mean) spread = 0.1 * d->mean;
  if (!(spread > 1e-12)) spread = 1e-12;
  double z = (loss - d->mean) / spread;
  if (z > d->threshold / 5) z = d->threshold / 5;
  bool was_zero = d->stat == 0;
  d->stat += z - d->slack;
  if (d->stat <= 0) d->stat = 0;
  else if (was_zero) d->rise_seq = seq;
  if (d->stat <= d->threshold / 4) baseline_add(d, loss);
  if (d->stat <= d->threshold) return false;
  if (change_seq) *change_seq = d->rise_seq;
  eddy_drift_reset(d);
  return true;
}

bool eddy_drift_warning(const eddy_drift_t *d) { return d->threshold && d->stat > d->threshold / 4; }
