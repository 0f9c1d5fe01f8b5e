/* Write health of a storage module (the replay buffer, the snapshot store): a write that fails
 * starts a failure, the next one that works ends it. Thread-safe; the owner embeds one and reports
 * it (eddy_replay_write_status, eddy_store_write_status). */
#ifndef EDDY_HEALTH_H
#define EDDY_HEALTH_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/errors.h"

typedef struct {
  pthread_mutex_t mu;
  bool failing;
  double since; /* eddy_clock_mono_s() when the failure began */
  char why[512];
} eddy_health_t;

/* 0, or an errno value from pthread_mutex_init. */
int eddy_health_init(eddy_health_t *h);
void eddy_health_destroy(eddy_health_t *h);
/* Records a write: failed with why (what failed), or worked. Returns true when this write ended
 * a failure (for a "works again" log line). */
bool eddy_health_note(eddy_health_t *h, bool failed, const char *why);
/* EDDY_OK while writes work; EDDY_ERR_IO with "WHY (failing for N s)" while they fail. */
eddy_err_t eddy_health_status(eddy_health_t *h, char *why, size_t why_size);
/* Whether writes are failing now. */
bool eddy_health_failing(eddy_health_t *h);

#endif
