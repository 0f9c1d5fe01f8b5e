/* Kafka ingest: a consumer that reads the partitions of [stream] topic its rank owns (p mod ranks =
 * rank), decodes every message and appends each poll batch (good events, dead letters and the next
 * offset of every partition in it) to the replay buffer in ONE append. It assigns its partitions
 * itself and joins no consumer group: the buffer, not Kafka, holds the positions, every partition
 * starts at the offset stored there, so a crash at any moment neither loses nor duplicates an event
 * in the buffer, and a restart reads again within a second. Offsets are committed to group
 * kafka.group.id (default "eddy-<model>") only so that lag shows in Kafka tools. No librdkafka
 * types here. */
#ifndef EDDY_CONSUMER_H
#define EDDY_CONSUMER_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buffer/replay.h"
#include "config/config.h"
#include "core/errors.h"
#include "metrics/registry.h"

typedef struct eddy_ingest eddy_ingest_t;

typedef struct {
  uint32_t max_batch;     /* messages per append; 0 = 1000 */
  size_t max_batch_bytes; /* payload bytes per append; 0 = 16 MiB */
  int linger_ms;          /* longest wait to fill a batch once it has a message; 0 = 100 */
  int retry_min_ms;       /* first backpressure retry delay; 0 = 1000 */
  int retry_max_ms;       /* backpressure retry delay cap (doubling); 0 = 30000 */
  uint32_t rank, ranks;   /* reads the partitions p with p mod ranks = rank; ranks 0 = 1 (all) */
} eddy_ingest_opts_t;

typedef struct {
  uint64_t events_ok;      /* events appended to the buffer */
  uint64_t events_invalid; /* dead letters appended to the buffer */
  uint64_t bytes;          /* payload bytes of appended messages */
  uint64_t batches;        /* successful appends */
  uint64_t dlq_produced;   /* dead letters acknowledged by the dead-letter topic */
  uint64_t dlq_failed;     /* dead letters the dead-letter topic did not take */
  uint64_t commit_failed;  /* Kafka offset commits that failed (informational) */
  uint64_t backpressure;   /* batches the buffer refused (each pauses ingest, then retried) */
  uint64_t skipped;        /* messages below the stored offset, not stored again */
  uint64_t kafka_errors;   /* consumer errors reported by librdkafka (all retried) */
  uint32_t assigned;       /* partitions assigned now (owned by this rank) */
  bool paused;             /* backpressure: the buffer refused the last batch and none was
                              stored since (partitions paused, or re-read after a retry) */
  bool caught_up;          /* every assigned partition read to its end and stored */
  int64_t lag;             /* sum over assigned partitions of high watermark - stored offset;
                              -1 while unknown */
  int64_t last_message_ms; /* CLOCK_MONOTONIC ms of the newest message; 0 = none yet */
} eddy_ingest_stats_t;

/* New consumer for cfg (needs kafka bootstrap.servers and stream.topic) writing into buffer,
 * which the caller keeps open until eddy_ingest_destroy and writes to from no other thread.
 * metrics (optional) gets the eddy_ingest_*, eddy_kafka_consumer_* and eddy_buffer_* series.
 * opts NULL = defaults (rank 0 of 1: every partition). The topic's partition count is looked up
 * at once and every 3 s after; the polls assign the owned partitions as they appear, each at the
 * offset stored in the buffer, else the group's committed offset, else auto.offset.reset. No
 * group is joined. Properties eddy decides are forced: enable.auto.commit=false,
 * enable.auto.offset.store=false, enable.partition.eof=true; group.id defaults to
 * "eddy-<model.name>" and auto.offset.reset to earliest. NULL + errstr on a bad [kafka] property,
 * rank >= ranks, or a librdkafka failure. */
eddy_ingest_t *eddy_ingest_new(const eddy_config_t *cfg, eddy_replay_t *buffer,
                               const eddy_ingest_opts_t *opts, eddy_registry_t *metrics,
                               char *errstr, size_t errstr_size);

/* Commits the stored offsets (waiting 2 s at most), closes the consumer, flushes the dead-letter
 * producer for up to 5 s and frees. NULL is a no-op. */
void eddy_ingest_destroy(eddy_ingest_t *ing);

/* Polls for up to timeout_ms, gathers one batch (max_batch messages, max_batch_bytes, or linger_ms
 * after its first message) and appends it; *consumed (optional) gets the number of messages it
 * stored (events plus dead letters). While the buffer refuses (backpressure) the partitions stay
 * paused and nothing is lost: they are rewound to the stored offsets and retried after a delay.
 * EDDY_OK unless something fatal happened (a fatal librdkafka error, a buffer error other than
 * full/over capacity), then the error with errstr set. */
eddy_err_t eddy_ingest_poll_once(eddy_ingest_t *ing, int timeout_ms, size_t *consumed, char *errstr,
                                 size_t errstr_size);

/* Calls eddy_ingest_poll_once until *stop (optional; a signal handler may set it) becomes
 * non-zero, eddy_ingest_stop is called, or a fatal error. */
eddy_err_t eddy_ingest_run(eddy_ingest_t *ing, volatile sig_atomic_t *stop, char *errstr,
                           size_t errstr_size);

/* Makes eddy_ingest_run return after its current poll. Any thread; async-signal-safe. */
void eddy_ingest_stop(eddy_ingest_t *ing);

/* Counters and state; safe to call from any thread while another runs the ingest. */
eddy_ingest_stats_t eddy_ingest_stats(eddy_ingest_t *ing);

/* The consumer group that offsets are committed to ("eddy-model"); ingest never joins it. Owned
 * by ing. */
const char *eddy_ingest_group(const eddy_ingest_t *ing);

#endif
