/* Internals of the trainer shared by its three files: trainer.c (lifecycle, restore, the public
 * calls, rollback), train_loop.c (the training thread: fresh events, holdout, replay, steps) and
 * publish.c (candidates written on the training thread; gate, commit, CURRENT, announcements and
 * retention on the publishing thread). Not for use outside src/train. */
#ifndef EDDY_TRAINER_INTERNAL_H
#define EDDY_TRAINER_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "buffer/replay.h"
#include "model/batch.h"
#include "model/learner.h"
#include "model/prequential.h"
#include "snapshot/manifest.h"
#include "snapshot/store.h"
#include "stream/consumer.h"
#include "stream/producer.h"
#include "train/replicas.h"
#include "train/timeseries.h"
#include "train/trainer.h"

#define TRAINER_HOLDOUT_MAX 2000     /* newest holdout events kept for the gate */
#define TRAINER_HOLDOUT_SCAN 20000   /* events before the cursor scanned at start to refill it */
#define TRAINER_IDLE_WAIT_MS 20      /* wait for fresh events when there is nothing to train */
#define TRAINER_SAMPLE_TRIES 4       /* draws per wanted replay sample before giving up */

/* Buffer meta keys (u64 cursors) the trainer keeps. */
#define TRAINER_META_RB_VERSION "rollback_version"     /* retrain-rollback target ... */
#define TRAINER_META_RB_LATEST "rollback_latest"       /* ... and the newest version at that time */
#define TRAINER_META_SKIP_FROM "skip_from"             /* events never trained: [from, to] */
#define TRAINER_META_SKIP_TO "skip_to"

/* A written candidate on its way from the training thread to the publishing thread. */
typedef struct {
  eddy_store_txn_t *txn;
  eddy_manifest_t m;     /* the trainer's fields; status and reason are set by the gate */
  uint64_t nonfinite;    /* non-finite master weights found when it was written */
  uint64_t ticket;       /* snapshot requests up to this one are answered by this version */
  double t0;             /* monotonic seconds when writing began */
} trainer_job_t;

typedef struct {
  eddy_series_t *steps, *examples, *replay_examples, *skipped, *loss_scale, *paused, *degraded;
  eddy_series_t *holdout_events, *lag, *missed, *skip_range;
  eddy_series_t *preq_logloss, *preq_accuracy, *preq_mse;
  eddy_series_t *version, *published, *rejected, *publish_errors, *announce_errors, *rollbacks;
  eddy_series_t *publish_seconds;
  eddy_series_t *replicas_fresh, *replicas_stale;
} trainer_metrics_t;

struct eddy_trainer {
  eddy_config_t cfg;          /* deep copy */
  eddy_registry_t *reg;
  eddy_replay_t *buffer;
  eddy_store_t *store;
  eddy_ingest_t *ingest;      /* NULL with opts.no_ingest */
  eddy_producer_t *producer;  /* announcements; NULL when no bootstrap servers are configured */
  eddy_learner_t *learner;    /* owned by the training thread (or by a rollback while parked) */
  trainer_metrics_t mx;
  double start_time;

  /* Training-thread state (touched by others only while the thread is parked). */
  eddy_prequential_t *preq;
  eddy_batch_t *fresh, *replay;
  float *pred;
  size_t pred_cap;            /* floats */
  eddy_event_t *rd;           /* read buffer, batch_size events */
  uint64_t *rd_seqs;
  eddy_event_t sample;        /* one replay draw */
  eddy_event_t *hold;         /* holdout ring, TRAINER_HOLDOUT_MAX events */
  size_t hold_n, hold_pos;
  uint64_t hold_threshold;    /* holdout iff hash < threshold */
  uint64_t rng;
  uint32_t idle_done;         /* replay-only steps in the current idle period */
  uint32_t skipped_run;       /* consecutive skipped steps */
  uint64_t cursor;            /* next fresh seq to read */
  uint64_t examples;          /* fresh examples trained (applied steps) */
  int64_t newest_event_ms;    /* newest "ts" of a fresh event trained since the start (0: none) */
  uint64_t replay_examples;
  uint64_t skip_from, skip_to;  /* events never trained (to < from: none) */
  uint64_t last_pub_step;
  double last_pub_time;
  float *scratch;             /* largest tensor, for the finiteness check */
  size_t scratch_cap;

  /* Shared, under mu. */
  pthread_mutex_t mu;
  pthread_cond_t cv;          /* wakes the training thread */
  pthread_cond_t parked_cv;   /* the training thread parked */
  pthread_cond_t pub_cv;      /* wakes the publishing thread */
  pthread_cond_t done_cv;     /* a publish finished */
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
  uint64_t n_published, n_rejected, n_publish_errors;

  pthread_mutex_t cur_mu;     /* CURRENT moves and announcements (publisher and rollbacks) */
  pthread_mutex_t rb_mu;      /* one rollback at a time */
  bool rb_valid;              /* the last retrain rollback, for idempotency */
  uint64_t rb_version, rb_from, rb_to, rb_latest;

  /* Dashboard data (sampler.c): both objects are thread-safe themselves. */
  eddy_replicas_t *replicas;  /* heartbeats of the inference replicas */
  eddy_timeseries_t *series;  /* one point a second, written by the sampler thread */
  pthread_cond_t sample_cv;   /* wakes the sampler thread (stop) */

  pthread_t ingest_th, train_th, pub_th, sample_th;
  bool ingest_started, train_started, pub_started, sample_started;
};

double trainer_now(void);
void trainer_set_fatal(eddy_trainer_t *t, eddy_err_t err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void trainer_degrade(eddy_trainer_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Copies the training thread's counters into the status fields (takes mu). */
void trainer_publish_status(eddy_trainer_t *t);

/* train_loop.c */
void *trainer_train_main(void *arg);
bool trainer_is_holdout(const eddy_trainer_t *t, const eddy_event_t *ev, uint64_t seq);
void trainer_holdout_add(eddy_trainer_t *t, const eddy_event_t *ev);
/* Scores the holdout ring with the learner's current weights. */
eddy_err_t trainer_holdout_score(eddy_trainer_t *t, eddy_metric_values_t *out);

/* publish.c */
/* Training thread, at a step boundary: writes a candidate and queues it. false when the
 * publishing thread is still busy with the previous one (nothing written). */
bool trainer_write_candidate(eddy_trainer_t *t, uint64_t ticket);
void *trainer_publish_main(void *arg);
/* Sends m on snapshot.topic (key = model); failures are counted and logged. Caller holds cur_mu. */
void trainer_announce(eddy_trainer_t *t, const eddy_manifest_t *m, const char *why);

/* sampler.c */
int64_t trainer_wall_ms(void); /* CLOCK_REALTIME, unix ms */
/* Creates the replica table and the time-series ring and registers eddy_replicas{state}. */
bool trainer_sampler_init(eddy_trainer_t *t, char *errstr, size_t errstr_size);
/* The sampler thread: one time-series point a second until stop. */
void *trainer_sample_main(void *arg);

#endif
