/* Write health: a failure begins at the first failed write and ends at the next one that works. */
#include "core/health.h"

#include <stdio.h>

#include "core/clock.h"

int eddy_health_init(eddy_health_t *h) {
  h->failing = false;
  h->since = 0;
  h->why[0] = '\0';
  return pthread_mutex_init(&h->mu, NULL);
}

void eddy_health_destroy(eddy_health_t *h) { pthread_mutex_destroy(&h->mu); }

bool eddy_health_note(eddy_health_t *h, bool failed, const char *why) {
  pthread_mutex_lock(&h->mu);
  bool was = h->failing;
  if (failed) {
    if (!was) h->since = eddy_clock_mono_s();
    snprintf(h->why, sizeof h->why, "%s", why && *why ? why : "write failed");
  }
  h->failing = failed;
  pthread_mutex_unlock(&h->mu);
  return was && !failed;
}

eddy_err_t eddy_health_status(eddy_health_t *h, char *why, size_t why_size) {
  pthread_mutex_lock(&h->mu);
  eddy_err_t err = EDDY_OK;
  if (h->failing)
    err = eddy_errf(EDDY_ERR_IO, why, why_size, "%s (failing for %.0f s)", h->why, eddy_clock_mono_s() - h->since);
  pthread_mutex_unlock(&h->mu);
  return err;
}

bool eddy_health_failing(eddy_health_t *h) {
  pthread_mutex_lock(&h->mu);
  bool failing = h->failing;
  pthread_mutex_unlock(&h->mu);
  return failing;
}
