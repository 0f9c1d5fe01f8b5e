/* The trainer service core (`eddy train`): ingest thread (Kafka -> replay buffer), training thread
 * (owns the learner: fresh events from the buffer cursor + replay samples, prequential metrics,
 * holdout), publishing thread (snapshot store, quality gate, CURRENT, announcements on
 * snapshot.topic). The HTTP admin API (src/train/admin.c) and `eddy ctl` drive it through the
 * functions below, all safe to call from any thread. No librdkafka, RocksDB or HTTP types here. */
#ifndef EDDY_TRAINER_H
#define EDDY_TRAINER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/collective.h"
#include "core/errors.h"
#include "metrics/registry.h"
#include "snapshot/store.h"

typedef struct eddy_trainer eddy_trainer_t;

typedef struct {
  bool fresh;            /* start with new weights when there is no usable state (else refuse) */
  bool no_ingest;        /* no Kafka consumer: the caller appends events to eddy_trainer_buffer()
                            itself (tests, or a buffer filled before the start) */
  const eddy_collective_t *ranks; /* data-parallel ranks (DESIGN "Scaling past one machine"),
                            borrowed for the trainer's lifetime; NULL or one rank: alone. Rank r of
                            R ingests the partitions p mod R = r into <buffer.path>/rank-<r>; every
                            rank restores rank 0's version; rank 0 alone gates, publishes and
                            announces. Every rank must create, start and destroy its trainer. */
} eddy_trainer_opts_t;

/* Opens the buffer, the store (writer) and restores the newest state (or CURRENT's lineage head)
 * with its cursors; refuses corrupt or missing state unless opts->fresh (message names the file).
 * metrics: where eddy_train_*, eddy_prequential_*, eddy_snapshot_* (and ingest) series go; owned by
 * the caller, must outlive the trainer. NULL + errstr on failure. Starts no thread. */
eddy_trainer_t *eddy_trainer_new(const eddy_config_t *cfg, const eddy_trainer_opts_t *opts,
                                 eddy_registry_t *metrics, char *errstr, size_t errstr_size);
/* Starts the ingest, training and publishing threads. */
eddy_err_t eddy_trainer_start(eddy_trainer_t *t, char *errstr, size_t errstr_size);
/* Stops the threads (finishing an in-flight publish), closes everything. NULL is a no-op. */
void eddy_trainer_destroy(eddy_trainer_t *t);
/* A fatal error stopped a thread: EDDY_OK while healthy; errstr gets the reason. */
eddy_err_t eddy_trainer_health(eddy_trainer_t *t, char *errstr, size_t errstr_size);
/* Whether the replay buffer and the snapshot store take writes: EDDY_OK, or EDDY_ERR_IO with the
 * reason ("buffer: ... No space left on device (failing for 12 s)") while one refuses them (a full
 * disk). Not fatal: ingest pauses and retries, publishing fails and retries, and both recover by
 * themselves when space returns; meanwhile /healthz answers 503 and the status is degraded. */
eddy_err_t eddy_trainer_storage(eddy_trainer_t *t, char *why, size_t why_size);

/* With ranks: true once the ranks have stopped together (another rank was told to stop), so this
 * one should shut down too. Always false with one rank. */
bool eddy_trainer_stopped(eddy_trainer_t *t);

/* Status as a JSON object (caller frees): model, state (running|paused|degraded), step, examples,
 * buffer {events, cursor, next_seq}, ingest {ok, invalid, lag}, prequential {logloss, accuracy,
 * mse, window...}, loss_scale, skipped_steps, current_version, last_published, uptime_seconds. */
char *eddy_trainer_status_json(eddy_trainer_t *t);

/* Pause / resume training (ingest keeps filling the buffer). Idempotent. */
void eddy_trainer_pause(eddy_trainer_t *t);
void eddy_trainer_resume(eddy_trainer_t *t);

/* Publishes a snapshot now (gate applies) and waits up to timeout_ms for it: *version gets the new
 * version (promoted or rejected: see the manifest) . */
eddy_err_t eddy_trainer_snapshot(eddy_trainer_t *t, int timeout_ms, uint64_t *version, char *errstr,
                                 size_t errstr_size);

/* Rollback to version. retrain = false: serve-only (CURRENT := version, announce; training goes
 * on from where it is). retrain = true: also restore the trainer to version's state and re-train
 * from its buffer cursor, skipping events with seq in [skip_from, skip_to] (skip_to < skip_from:
 * no skip); later versions have parent = version. Idempotent; concurrent calls are serialised.
 * EDDY_ERR_NOT_FOUND for an unknown version, EDDY_ERR_STATE for a rejected one. */
eddy_err_t eddy_trainer_rollback(eddy_trainer_t *t, uint64_t version, bool retrain, uint64_t skip_from,
                                 uint64_t skip_to, char *errstr, size_t errstr_size);

/* The store (read access for listings and file downloads; do not publish through it). */
eddy_store_t *eddy_trainer_store(eddy_trainer_t *t);

/* The replay buffer (reads; appends only with opts.no_ingest, from one thread). */
struct eddy_replay;
struct eddy_replay *eddy_trainer_buffer(eddy_trainer_t *t);

/* The table of inference replicas fed by their heartbeats (train/replicas.h); owned by the
 * trainer, thread-safe. */
struct eddy_replicas;
struct eddy_replicas *eddy_trainer_replicas(eddy_trainer_t *t);

/* The ring of samples taken once a second after eddy_trainer_start (train/timeseries.h): ingest
 * rate, consumer lag, buffer, prequential metrics, loss scale, skipped steps, CURRENT, replica
 * freshness. Owned by the trainer, thread-safe. */
struct eddy_timeseries;
struct eddy_timeseries *eddy_trainer_timeseries(eddy_trainer_t *t);

#endif
