/* The trainer's storage health: whether the replay buffer and the snapshot store take writes.
 * Both keep their own failure state (set by a write that fails with EDDY_ERR_IO, ended by one
 * that works); this reports it (eddy_trainer_storage, eddy_storage_write_failing{part}) and, while
 * the store fails, probes it so that space coming back is noticed without waiting for a publish.
 * The buffer needs no probe: ingest retries its appends by itself. With trainer ranks rank 0
 * reports for all: "buffer" fails while its own or another rank's buffer does (each rank's
 * round record says), "store" is rank 0's. */
#include "train/trainer.h"

#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "train/trainer_state.h"

#define LOG_MOD "train"

bool trainer_storage_init(eddy_trainer_t *t, char *errstr, size_t errstr_size) {
  if (!t->reg) return true;
  eddy_metric_t *m = eddy_registry_add(t->reg, EDDY_METRIC_GAUGE, "eddy_storage_write_failing",
                                       "1 while writes to the replay buffer or the snapshot store fail (a full "
                                       "disk): ingest or publishing is paused until they work again",
                                       "part", NULL, 0, errstr, errstr_size);
  if (!m) return false;
  const char *buffer[] = {"buffer"}, *store[] = {"store"};
  t->mx.storage_buffer = eddy_metric_series(m, buffer);
  t->mx.storage_store = eddy_metric_series(m, store);
  return true;
}

/* The failure of part i (0 buffer: this rank's and, on rank 0, every rank's; 1 store) into why;
 * false when its writes work. */
static bool part_failing(eddy_trainer_t *t, int i, char *why, size_t why_size) {
  if (i == 1) return t->store && eddy_store_write_status(t->store, why, why_size) != EDDY_OK;
  bool own = eddy_replay_write_status(t->buffer, why, why_size) != EDDY_OK;
  size_t used = own ? strlen(why) : 0;
  bool others = trainer_ranks_buffers_failing(t, own ? "; " : "", why + used, why_size - used);
  return own || others;
}

void trainer_storage_sample(eddy_trainer_t *t) {
  static const char *const names[] = {"buffer", "store"};
  char why[640];
  double now = eddy_clock_mono_s();
  if (t->store && eddy_store_write_status(t->store, why, sizeof why) != EDDY_OK &&
      now - t->store_probed >= TRAINER_STORE_PROBE_S) {
    t->store_probed = now;
    char probe[512];
    if (eddy_store_probe_write(t->store, probe, sizeof probe) != EDDY_OK)
      EDDY_DEBUG(LOG_MOD, "store probe: %s", probe);
  }
  for (int i = 0; i < 2; i++) {
    bool failing = part_failing(t, i, why, sizeof why);
    eddy_series_set(i == 0 ? t->mx.storage_buffer : t->mx.storage_store, failing ? 1 : 0);
    if (failing && !t->storage_logged[i])
      EDDY_ERROR(LOG_MOD, "%s writes fail: %s; /healthz answers 503 until they work again (retried by "
                          "themselves: free some space)", names[i], why);
    else if (!failing && t->storage_logged[i])
      EDDY_INFO(LOG_MOD, "%s writes work again", names[i]);
    t->storage_logged[i] = failing;
  }
}

eddy_err_t eddy_trainer_storage(eddy_trainer_t *t, char *why, size_t why_size) {
  if (!t) return eddy_errf(EDDY_ERR_INVALID_ARG, why, why_size, "trainer: NULL");
  static const char *const names[] = {"buffer", "store"};
  char part[640];
  size_t used = 0;
  eddy_err_t err = EDDY_OK;
  for (int i = 0; i < 2; i++) {
    if (!part_failing(t, i, part, sizeof part)) continue;
    err = EDDY_ERR_IO;
    if (why && used < why_size) {
      int n = snprintf(why + used, why_size - used, "%s%s: %s", used ? "; " : "", names[i], part);
      used += n > 0 ? (size_t)n : 0;
    }
  }
  return err;
}
