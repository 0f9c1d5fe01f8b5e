/* A change detector on a stream of per-event losses (the prequential loss): a one-sided CUSUM
 * (Page's test, as in Page-Hinkley) on the loss standardised by its own running mean and spread.
 * It fires when the loss has risen for long enough to be more than noise, and estimates where the
 * rise began. The baseline adapts while nothing is suspected (exponential mean and variance over
 * about EDDY_DRIFT_HORIZON events); one event moves the statistic by at most threshold / 5, so a
 * single outlier never fires it. Not thread-safe: one owner feeds it. */
#ifndef EDDY_DRIFT_H
#define EDDY_DRIFT_H

#include <stdbool.h>
#include <stdint.h>

#define EDDY_DRIFT_WARMUP 200   /* events after a start or an alarm before it can fire */
#define EDDY_DRIFT_HORIZON 1000 /* events the baseline's mean and variance average over */

typedef struct {
  double slack;      /* k: standard deviations of rise ignored per event (> 0) */
  double threshold;  /* h: the statistic that fires it; 0 = off */
  uint64_t n;        /* events in the baseline since the last reset */
  double mean, var;  /* baseline */
  double stat;       /* the CUSUM statistic, >= 0 */
  uint64_t rise_seq; /* seq of the first event of the current rise (valid while stat > 0) */
} eddy_drift_t;

/* A detector with slack k and threshold h (h = 0: never fires). */
void eddy_drift_init(eddy_drift_t *d, double slack, double threshold);
/* Forgets the baseline and the statistic (after an alarm, a rollback). */
void eddy_drift_reset(eddy_drift_t *d);
/* Adds the loss of the event at seq. true when the detector fires: *change_seq gets the seq where
 * the rise began, and the detector resets itself. */
bool eddy_drift_add(eddy_drift_t *d, double loss, uint64_t seq, uint64_t *change_seq);
/* true while a rise is under way that has reached a quarter of the threshold. */
bool eddy_drift_warning(const eddy_drift_t *d);

#endif
