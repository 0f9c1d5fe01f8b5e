/* The trainer's shared state: the struct its threads share, which lock guards what, and the few
 * transitions every part makes (fatal, degraded, status). Below the parts that use it: holdout.c
 * (the gate's ring), publish.c (candidates, gate, CURRENT, announcements), train_loop.c (the
 * training thread), ranks.c (data-parallel ranks and the per-partition positions), sampler.c (the
 * time series), storage.c (full disks); trainer.c (lifecycle, restore, the public calls, rollback)
 * sits on top of them all. Not for use outside src/train. */
#ifndef EDDY_TRAINER_STATE_H
#define EDDY_TRAINER_STATE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "buffer/replay.h"
#include "config/config.h"
#include "core/collective.h"
#include "core/errors.h"
#include "metrics/registry.h"
#include "model/batch.h"
#include "model/drift.h"
#include "model/evaluate.h"
#include "model/infer.h"
#include "model/learner.h"
#include "model/prequential.h"
#include "snapshot/manifest.h"
#include "snapshot/store.h"
#include "stream/consumer.h"
#include "stream/producer.h"
#include "train/replicas.h"
#include "train/timeseries.h"

/* As in train/trainer.h, which this header does not include: it stands below the public calls. */
typedef struct eddy_trainer eddy_trainer_t;

#define TRAINER_HOLDOUT_SCAN 20000   /* events before the cursor scanned to refill the holdout */
#define TRAINER_CLASS_SERIES 64      /* classes with an eddy_prequential_class_accuracy series */
#define TRAINER_STATUS_CLASSES 1000  /* classes listed in the status */
#define TRAINER_IDLE_WAIT_MS 20      /* wait for fresh events when there is nothing to train */
#define TRAINER_SAMPLE_TRIES 4       /* draws per wanted replay sample before giving up */
#define TRAINER_STORE_PROBE_S 5.0    /* a failing store is probed this often (storage.c) */

/* Buffer meta keys (u64 cursors) the trainer keeps. */
#define TRAINER_META_RB_VERSION "rollback_version"     /* retrain-rollback target ... */
#define TRAINER_META_RB_LATEST "rollback_latest"       /* ... and the newest version at that time */
#define TRAINER_META_SKIP_FROM "skip_from"             /* events never trained: [from, to] */
#define TRAINER_META_SKIP_TO "skip_to"
#define TRAINER_META_HOLD_FROM "holdout_from"    /* the holdout window's start (drift re-base) */
#define TRAINER_META_BUFFER_ID "buffer_id"         /* this buffer's identity in manifests' "ranks" */

/* One round of the ranks' training threads (ranks.c): what each rank sends, gathered by all.
 * Every field is a u64, so the record is the same bytes on every machine of a cluster. */
typedef struct {
  uint64_t stop;                 /* this rank stops (signal, shutdown, fatal error) */
  uint64_t fresh, replay;        /* examples it accumulated this round */
  uint64_t read_any;             /* it consumed buffer events this round */
  uint64_t loss_bad;             /* its training loss was not finite */
  uint64_t paused, due, resync;  /* rank 0's decisions: paused, write a candidate, adopt a rollback */
  uint64_t has_ingest, ingest_ok, ingest_invalid, lag, assigned; /* lag + 1; 0 = unknown */
  uint64_t buffer_events, cursor, next_seq, examples, stale;
  uint64_t buffer_failing;       /* its buffer's writes fail (a full disk; its ingest waits) */
} trainer_round_t;

/* Data-parallel ranks (ranks.c). With one rank (coll NULL) only the positions are used: the next
 * untrained Kafka offset of each partition, which manifests record so that a partition can move to
 * another rank (or buffer) without losing or repeating an event. */
typedef struct {
  const eddy_collective_t *coll; /* NULL: one rank */
  int rank, ranks, local_rank;
  uint64_t buffer_id;            /* this buffer's identity (meta TRAINER_META_BUFFER_ID) */
  /* Training thread (set up by trainer_ranks_start before any thread runs). */
  int64_t *next;                 /* by partition: next offset not trained yet; -1 unknown */
  bool *changed;                 /* by partition: moved here from another buffer at the adoption */
  size_t n_parts;                /* entries of next and changed */
  uint64_t fence;                /* below this seq, events of foreign partitions are never trained */
  uint64_t examples;             /* fresh examples this rank contributed to the lineage */
  uint64_t stale;                /* events passed over as another rank's since the start */
  bool paused_all;               /* rank 0's pause, as of the last round */
  char *gathered;                /* rank 0 in a candidate round: every rank's positions record */
  size_t *gathered_sizes;        /* ranks entries */
  float *scratch;                /* one tensor, for the weights' checksum */
  size_t scratch_cap;
  /* Shared, under mu. */
  char *resync;                  /* rank 0: manifest (JSON) of a retrain rollback, adopted by every
                                    rank at the next round */
  trainer_round_t *last;         /* rank 0: every rank's record of the last round */
  bool stopped;                  /* the ranks stopped together: the training thread has ended */
} trainer_ranks_t;

/* What one rank accumulated for a step (train_loop.c). */
typedef struct {
  size_t fresh_n, replay_n;
  double loss;
  bool read_any;
} trainer_acc_t;

/* Held-out events frozen for one gate: the holdout window at the time the candidate was written
 * (holdout.c). */
typedef struct {
  eddy_event_t *ev;
  uint64_t *seq;
  size_t n;
} trainer_holdout_set_t;
/* A written candidate on its way from the training thread to the publishing thread. */
typedef struct {
  eddy_store_txn_t *txn;
  eddy_manifest_t m;     /* the trainer's fields; status and reason are set by the gate */
  uint64_t nonfinite;    /* non-finite master weights found when it was written */
  uint64_t ticket;       /* snapshot requests up to this one are answered by this version */
  double t0;             /* monotonic seconds when writing began */
  trainer_holdout_set_t hold; /* the holdout window the gate scores both models on */
} trainer_job_t;

typedef struct {
  eddy_series_t *steps, *examples, *replay_examples, *skipped, *loss_scale, *paused, *degraded;
  eddy_series_t *holdout_events, *lag, *missed, *skip_range;
  eddy_series_t *preq_logloss, *preq_accuracy, *preq_mse;
  eddy_series_t *version, *published, *rejected, *publish_errors, *announce_errors, *rollbacks;
  eddy_series_t *publish_seconds;
  eddy_series_t *replicas_fresh, *replicas_stale;
  eddy_series_t *storage_buffer, *storage_store; /* eddy_storage_write_failing{part} */
  eddy_series_t *drift, *rejected_run, *ahead_run;
  eddy_series_t *class_accuracy[TRAINER_CLASS_SERIES];
} trainer_metrics_t;

/* Locks. Three mutexes of the trainer, which may be nested only in this order:
 *
 *     rb_mu  ->  cur_mu  ->  mu  ->  (leaf locks of other modules)
 *
 *   rb_mu   one rollback at a time; guards rb_*. Held across a whole rollback: it takes cur_mu
 *           (move_current) and mu (parking the training thread, the status copies).
 *   cur_mu  CURRENT and what hangs on it: the gate's reference version, commit, CURRENT moves,
 *           announcements on snapshot.topic and their delivery reports, retention. Held by the
 *           publishing thread over a whole publish (which takes mu inside, for the lineage and the
 *           counters) and by rollbacks.
 *   mu      the fields marked "Shared, under mu" below, and every condition variable (all wait on it).
 *           Held briefly; under it only eddy_ingest_stats (the consumer's own leaf lock) is called.
 *
 * Never the other way round: no code takes rb_mu or cur_mu while holding mu, nor rb_mu while
 * holding cur_mu. A rollback waits for the training thread to park (parked_cv, under mu) holding
 * rb_mu but not cur_mu, so the publish it waits for can finish. The replay buffer, the store, the
 * registry, the replica table and the time-series ring lock inside themselves, and the one callback
 * (publish.c's add_offset, under the buffer's read lock) takes no lock of the trainer. */
struct eddy_trainer {
  /* Set by eddy_trainer_new before any thread starts; read-only afterwards. */
  eddy_config_t cfg;          /* deep copy */
  eddy_registry_t *reg;
  eddy_replay_t *buffer;
  eddy_store_t *store;
  eddy_ingest_t *ingest;      /* NULL with opts.no_ingest */
  eddy_producer_t *producer;  /* announcements, sent under cur_mu; NULL when no bootstrap servers
                                 are configured */
  trainer_metrics_t mx;
  double start_time;          /* eddy_clock_mono_s() */
  uint64_t hold_threshold;    /* holdout iff hash < threshold */

  /* Training-thread state: touched by other threads only while the training thread is parked
   * and nothing is being published (a retrain rollback under rb_mu). */
  eddy_learner_t *learner;    /* (status reads only its backend and precision names) */
  eddy_prequential_t *preq;
  eddy_batch_t *fresh, *replay;
  float *pred;
  size_t pred_cap;            /* floats */
  eddy_event_t *rd;           /* read buffer, batch_size events */
  uint64_t *rd_seqs;
  eddy_event_t sample;        /* one replay draw */
  eddy_event_t *samples;      /* balanced replay draws, samples_cap of them */
  size_t samples_cap;
  uint64_t *fresh_seqs;       /* buffer seq of each event in t->fresh */
  eddy_event_t *hold;         /* the holdout window, a ring of gate_holdout_events (holdout.c) */
  uint64_t *hold_seq;         /* ... their seqs, increasing from the oldest */
  size_t hold_cap, hold_n, hold_head;  /* hold_head: the oldest */
  uint64_t hold_from;         /* events before this seq are not in the window (drift re-base) */
  eddy_drift_t drift;         /* change detector on the prequential loss */
  bool defer_logged;          /* a scheduled snapshot is waiting (logged once) */
  uint64_t rng;
  uint32_t idle_done;         /* replay-only steps in the current idle period */
  uint32_t skipped_run;       /* consecutive skipped steps */
  uint64_t cursor;            /* next fresh seq to read */
  uint64_t examples;          /* fresh examples trained (applied steps) */
  int64_t newest_event_ms;    /* newest "ts" of a fresh event trained since the start (0: none) */
  uint64_t replay_examples;
  uint64_t skip_from, skip_to;  /* events never trained (to < from: none); a rollback writes them
                                   under mu as well, for the status */
  uint64_t last_pub_step;
  double last_pub_time;       /* eddy_clock_mono_s() */
  float *scratch;             /* largest tensor, for the finiteness check */
  size_t scratch_cap;

  /* Shared, under mu. */
  pthread_mutex_t mu;
  pthread_cond_t cv;          /* wakes the training thread */
  pthread_cond_t parked_cv;   /* the training thread parked */
  pthread_cond_t pub_cv;      /* wakes the publishing thread */
  pthread_cond_t done_cv;     /* a publish finished */
  pthread_cond_t sample_cv;   /* wakes the sampler thread (stop) */
  bool stop, paused, parked, train_running, degraded;
  char degraded_why[256];
  int hold_count;             /* rollbacks waiting for / holding the parked training thread */
  trainer_job_t *job;         /* queued for the publishing thread */
  bool pub_busy;              /* a job is queued or being published */
  uint64_t parent;            /* lineage: parent of the next version */
  uint64_t snap_requested, snap_taken, snap_done, snap_version;
  eddy_err_t snap_err;
  char snap_msg[1024];
  eddy_err_t fatal;
  char fatal_msg[512];
  /* status copies */
  uint64_t st_step, st_examples, st_replay, st_cursor, st_skipped, st_missed, st_last_published;
  double st_loss_scale;
  eddy_metric_values_t st_preq;
  size_t st_hold_n;
  uint64_t st_hold_from, st_hold_oldest_seq, st_hold_newest_seq;
  int64_t st_hold_oldest_ms, st_hold_newest_ms;  /* event ts; 0 = unknown */
  bool st_drift_warning;
  uint64_t n_drift, last_drift_seq;
  int64_t last_drift_ms;      /* wall clock */
  double *st_class_acc;       /* [st_classes] windowed accuracy per class (NaN: none) */
  uint64_t *st_class_n;
  uint32_t st_classes;
  uint64_t n_published, n_rejected, n_publish_errors;
  uint32_t rejected_run;      /* consecutive rejected versions */
  uint32_t ahead_run;         /* ... of which the last ones scored better than CURRENT */
  uint64_t ahead_of;          /* the CURRENT they were compared with */
  char last_failed[64];       /* failing criteria of the last rejection */

  pthread_mutex_t cur_mu;     /* CURRENT moves and announcements (publisher and rollbacks), and: */
  eddy_infer_t *cur_model;    /* CURRENT's weights as the gate loaded them (NULL: not loaded) */
  uint64_t cur_model_v;
  eddy_eval_scores_t cur_val; /* CURRENT's scores on the validation set (n = 0: none yet) */
  eddy_event_t *val;          /* snapshot.gate.validation events (read-only after new) */
  size_t val_n;

  pthread_mutex_t rb_mu;      /* one rollback at a time; guards: */
  bool rb_valid;              /* the last retrain rollback, for idempotency */
  uint64_t rb_version, rb_from, rb_to, rb_latest;

  /* Storage health (storage.c), touched by the sampler thread only; the buffer and the store
   * keep their own failure state (thread-safe), which the public calls read. */
  bool storage_logged[2];     /* a failure of the buffer [0] / store [1] was logged */
  double store_probed;        /* eddy_clock_mono_s() of the last store probe */

  /* Dashboard data (sampler.c): both objects are thread-safe themselves. */
  eddy_replicas_t *replicas;  /* heartbeats of the inference replicas */
  eddy_timeseries_t *series;  /* one point a second, written by the sampler thread */

  trainer_ranks_t rk;         /* data-parallel ranks and positions (ranks.c; see its fields) */

  /* Threads: started by eddy_trainer_start, joined by eddy_trainer_destroy. */
  pthread_t ingest_th, train_th, pub_th, sample_th;
  bool ingest_started, train_started, pub_started, sample_started;
};

/* trainer_state.c */
/* Records the first fatal error (logged) and wakes everyone waiting on a publish or a park. */
void trainer_set_fatal(eddy_trainer_t *t, eddy_err_t err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Stops publishing (logged once) until a retrain rollback or a restart. */
void trainer_degrade(eddy_trainer_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Copies the training thread's counters into the status fields (takes mu) and the gauges. */
void trainer_publish_status(eddy_trainer_t *t);

/* holdout.c */
bool trainer_is_holdout(const eddy_trainer_t *t, const eddy_event_t *ev, uint64_t seq);
/* Allocates the window (gate_holdout_events); false when out of memory. */
bool trainer_holdout_init(eddy_trainer_t *t);
void trainer_holdout_free(eddy_trainer_t *t);
/* Adds the held-out event at seq: ignored when seq is not after the newest one kept (never twice),
 * before hold_from, or in the skip range, and on ranks other than 0 (they do not gate); the
 * oldest go beyond the window's size and age. */
void trainer_holdout_add(eddy_trainer_t *t, const eddy_event_t *ev, uint64_t seq);
/* Empties the window and refills it from the buffer's held-out events before the cursor, from
 * hold_from on, outside the skip range (at the start and after a retrain rollback); rank 0 only. */
void trainer_holdout_refill(eddy_trainer_t *t);
/* Restarts the window at seq (drift): drops the events before it and records it in the buffer. */
void trainer_holdout_rebase(eddy_trainer_t *t, uint64_t seq);
/* Events of the window within its age bound now. */
size_t trainer_holdout_usable(const eddy_trainer_t *t);
/* Copies the window (within its age bound) into set; false when out of memory. */
bool trainer_holdout_freeze(const eddy_trainer_t *t, trainer_holdout_set_t *set);
void trainer_holdout_set_free(trainer_holdout_set_t *set);
/* The gate's evaluation, for any caller that scores weights on the holdout: loads the weights
 * file at path (spec, precision) and scores it on set (evaluate.h). *model (optional) receives the
 * loaded model, owned by the caller; otherwise it is freed. errstr names the file. */
eddy_err_t trainer_holdout_score_file(const eddy_model_spec_t *spec, const char *path,
                                      eddy_infer_precision_t precision, const trainer_holdout_set_t *set,
                                      eddy_eval_scores_t *out, eddy_infer_t **model, char *errstr,
                                      size_t errstr_size);

/* publish.c */
/* Training thread, at a step boundary: writes a candidate and queues it. false when the
 * publishing thread is still busy with the previous one (nothing written). */
bool trainer_write_candidate(eddy_trainer_t *t, uint64_t ticket);
void *trainer_publish_main(void *arg);
/* Sends m on snapshot.topic (key = model); failures are counted and logged. Caller holds cur_mu. */
void trainer_announce(eddy_trainer_t *t, const eddy_manifest_t *m, const char *why);

/* storage.c */
/* Registers eddy_storage_write_failing{part="buffer"|"store"} (at 0). */
bool trainer_storage_init(eddy_trainer_t *t, char *errstr, size_t errstr_size);
/* Sampler thread, once a second: the gauges, a log line when a failure starts or ends, and a
 * probe of the store every TRAINER_STORE_PROBE_S while its writes fail. */
void trainer_storage_sample(eddy_trainer_t *t);
/* Loads the events of snapshot.gate.validation (its first gate_holdout_events) into t->val. */
eddy_err_t trainer_validation_load(eddy_trainer_t *t, char *errstr, size_t errstr_size);
/* Forgets the gate's cached CURRENT model and scores. Caller holds cur_mu. */
void trainer_gate_forget(eddy_trainer_t *t);

/* precisions.c */
/* Training thread, after the candidate's weights are in txn: writes the file of every other
 * precision of snapshot.precisions into txn, scores each precision (fp32 included) on hold (the
 * frozen holdout window the gate scores, with the gate's evaluation) and lists them in
 * m->precisions. Nothing when nonfinite; a failure is logged and leaves txn and m
 * without extra precisions. */
void trainer_precisions_write(eddy_trainer_t *t, eddy_store_txn_t *txn, eddy_manifest_t *m,
                              const trainer_holdout_set_t *hold, uint64_t nonfinite);

/* train_loop.c */
void *trainer_train_main(void *arg);
/* A drift alarm with the rise starting at change_seq: counted, logged, marked, holdout re-based. */
void trainer_on_drift(eddy_trainer_t *t, uint64_t change_seq);
/* The local half of a step: up to accum_steps micro-batches of fresh events (scored, then trained
 * on) with their replay draws, or idle replay. 1: something was read or accumulated; 0: idle; -1:
 * fatal (set). */
int trainer_accumulate(eddy_trainer_t *t, trainer_acc_t *acc);
/* The optimizer step over what was accumulated (collective with ranks), when fresh_n + replay_n
 * (the totals over the ranks) is not 0; counters, degradation, status. 1, or -1: fatal (set). */
int trainer_apply(eddy_trainer_t *t, uint64_t fresh_n, uint64_t replay_n, double loss);
/* Waits up to ms on cv unless stopping, a rollback holds training, or a snapshot is asked for. */
void trainer_wait_ms(eddy_trainer_t *t, int ms);

/* ranks.c */
/* Takes the ranks from opts (NULL or one rank: alone): rank r of R > 1 trains from its own buffer
 * <buffer.path>/rank-<r> and, with device cuda or cuda:all, on GPU cuda:<local rank>. Before the
 * buffer opens. */
eddy_err_t trainer_ranks_init(eddy_trainer_t *t, const eddy_collective_t *coll, char *errstr, size_t errstr_size);
/* After restore (rank 0 restored the version whose number is t->parent, or none): joins the
 * learner to the ranks, copies rank 0's state to every rank, and adopts the version's positions on
 * each (its own cursor; the partitions that moved here are re-read from Kafka at the version's
 * offsets). Collective. */
eddy_err_t trainer_ranks_start(eddy_trainer_t *t, char *errstr, size_t errstr_size);
void trainer_ranks_free(eddy_trainer_t *t);
/* A fresh event at seq: false when it belongs to another rank or buffer (a partition that changed
 * hands; never trained here); otherwise records its partition's position and returns true. */
bool trainer_ranks_take(eddy_trainer_t *t, const eddy_event_t *ev, uint64_t seq);
/* True when ev (at seq; UINT64_MAX: unknown) is another rank's or buffer's: no replay draws it. */
bool trainer_ranks_foreign(const eddy_trainer_t *t, const eddy_event_t *ev, uint64_t seq);
/* Fills m's per-rank positions ("ranks") and, with R ranks, the Kafka offsets of all of them.
 * Training thread (trainer_write_candidate). */
void trainer_ranks_manifest(eddy_trainer_t *t, eddy_manifest_t *m);
/* Before a retrain rollback to m's version: EDDY_ERR_STATE when it was trained by another set of
 * buffers (before a change of R), which only a restart can adopt. */
eddy_err_t trainer_ranks_rollback_check(eddy_trainer_t *t, const eddy_manifest_t *m, char *errstr,
                                        size_t errstr_size);
/* A retrain rollback to m's version, with training parked: one rank adopts m's positions at once;
 * R ranks all adopt them (and rank 0's restored state) at the next round. */
eddy_err_t trainer_ranks_rollback(eddy_trainer_t *t, const eddy_manifest_t *m, char *errstr, size_t errstr_size);
/* The training thread of R ranks: rounds in step with the others (ranks.c). */
void *trainer_ranks_train_main(void *arg);
/* Adds "rank" and "ranks" (each rank's ingest, lag and buffer) to a status object (R ranks only). */
struct cJSON;
void trainer_ranks_status(eddy_trainer_t *t, struct cJSON *o);
/* With R ranks: is's events_ok, events_invalid and lag become the sums over the ranks. */
void trainer_ranks_ingest_totals(eddy_trainer_t *t, eddy_ingest_stats_t *is);
/* Rank 0 of R: true when another rank's buffer writes failed at the last round; why gets prefix
 * and "rank 1: writes fail (...)" (each rank's log has its own reason). False elsewhere. */
bool trainer_ranks_buffers_failing(eddy_trainer_t *t, const char *prefix, char *why, size_t why_size);

/* sampler.c */
/* Creates the replica table and the time-series ring and registers eddy_replicas{state}. */
bool trainer_sampler_init(eddy_trainer_t *t, char *errstr, size_t errstr_size);
/* The sampler thread: one time-series point a second until stop. */
void *trainer_sample_main(void *arg);

#endif
