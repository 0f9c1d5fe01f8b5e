/* The replay buffer: a RocksDB database that is the only hand-off between ingest and training.
 * Column families: events (u64 big-endian seq -> binary event), offsets (topic/partition -> next
 * Kafka offset), meta (head/tail/cursors), dlq (dead letters), reservoir (class-balanced sample).
 * Ingest appends a poll batch (events + dead letters + next offsets) as ONE WriteBatch, so a crash
 * never separates stored events from the offsets that say they were stored (exactly-once ingest).
 * Readers never see half of a batch. One writer thread; any number of reader threads. */
#ifndef EDDY_REPLAY_H
#define EDDY_REPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"
#include "core/event.h"

typedef struct eddy_replay eddy_replay_t;

typedef enum { EDDY_SAMPLE_UNIFORM = 0, EDDY_SAMPLE_RECENT, EDDY_SAMPLE_BALANCED } eddy_sample_t;

typedef struct {
  const char *path;          /* database folder, created if missing */
  uint64_t capacity_events;  /* 0 = unlimited */
  uint64_t capacity_bytes;   /* encoded event bytes; 0 = unlimited */
  bool evict;                /* true: oldest events go by range delete when over capacity;
                                false: eddy_replay_append refuses with EDDY_ERR_TOO_LARGE (ingest
                                pauses) */
  bool sync;                 /* fsync the WAL on every append (survives power loss); false still
                                survives a process crash */
  uint32_t reservoir_size;   /* per class bucket (class-balanced reservoir); 0 = no reservoir */
  uint32_t classes;          /* label buckets for the reservoir: classes for softmax, 2 for
                                logistic, 1 for squared */
  uint64_t seed;             /* reservoir and sampling randomness */
  size_t dlq_raw_cap;        /* raw bytes kept per dead letter; 0 = 4096 */
  bool read_only;            /* open an existing buffer for reading only (works while another
                                process has it open for writing); append and meta_put then fail
                                with EDDY_ERR_STATE, and stats are those at open time */
} eddy_replay_opts_t;

/* Dead letters kept: beyond this many the oldest go (in the same batch as the new ones). */
#define EDDY_REPLAY_DLQ_KEEP 100000
/* Longest message kept per dead letter (bytes; longer ones are cut). */
#define EDDY_REPLAY_DLQ_MESSAGE_MAX 1024
/* Largest encoded event accepted by eddy_replay_append (EDDY_ERR_TOO_LARGE beyond). */
#define EDDY_REPLAY_EVENT_MAX (16u << 20)

/* Kafka position: the next offset to consume for topic/partition. */
typedef struct {
  const char *topic;
  int32_t partition;
  int64_t next_offset;
} eddy_replay_offset_t;

/* A bad message, kept with where it came from and why it was refused. */
typedef struct {
  const char *topic;
  int32_t partition;
  int64_t offset;
  int64_t ts_ms;             /* when it was dead-lettered */
  eddy_err_t reason;         /* an EDDY_ERR_EVENT_* code */
  const char *message;       /* human text ("label 12 out of range 0..9") */
  const void *raw;           /* the payload (capped to dlq_raw_cap when stored) */
  size_t raw_len;
} eddy_dead_letter_t;

typedef struct {
  uint64_t events;           /* events currently stored */
  uint64_t bytes;            /* encoded bytes of those events */
  uint64_t first_seq;        /* oldest stored seq (== next_seq when empty) */
  uint64_t next_seq;         /* seq the next appended event gets */
  uint64_t evicted;          /* events evicted since the database was created */
  uint64_t dead_letters;     /* dead letters stored */
  uint64_t dead_letters_total; /* dead letters ever appended (stored + dropped beyond
                                  EDDY_REPLAY_DLQ_KEEP) */
} eddy_replay_stats_t;

/* The buffer of trainer rank `rank` when a job runs more than one rank: the folder
 * <root>/rank-<rank> (root is buffer.path; one rank uses root itself). EDDY_ERR_TOO_LARGE when it
 * does not fit in out. */
eddy_err_t eddy_replay_rank_path(const char *root, int rank, char *out, size_t out_size);

/* Opens (creating if needed) the buffer. NULL + errstr naming the path on failure. */
eddy_replay_t *eddy_replay_new(const eddy_replay_opts_t *opts, char *errstr, size_t errstr_size);
void eddy_replay_destroy(eddy_replay_t *r);

/* Appends n events (seqs next_seq.., in order), n_dl dead letters and n_off partition positions
 * in one atomic WriteBatch, then evicts if over capacity (evict = true). first_seq (optional) gets
 * the seq of events[0]. EDDY_ERR_TOO_LARGE when evict = false and the events do not fit (nothing
 * written); EDDY_ERR_IO on a RocksDB failure such as a full disk (nothing written). The eviction
 * (a range delete of the oldest events) and all counters go in the same WriteBatch. After an
 * EDDY_ERR_IO the next append first reopens the database (RocksDB refuses writes after a failed
 * one), once the disk has 4 MiB free again; until then it fails with EDDY_ERR_IO too. */
eddy_err_t eddy_replay_append(eddy_replay_t *r, const eddy_event_t *const *events, size_t n,
                              const eddy_dead_letter_t *dls, size_t n_dl,
                              const eddy_replay_offset_t *offsets, size_t n_off, uint64_t *first_seq,
                              char *errstr, size_t errstr_size);

/* Whether the buffer takes writes: EDDY_OK, or EDDY_ERR_IO while they fail (a full disk; why:
 * the last failure and for how long). The next write that works ends the failure: appends reopen
 * the database by themselves once there is room (see eddy_replay_append). */
eddy_err_t eddy_replay_write_status(eddy_replay_t *r, char *why, size_t why_size);

/* Stored next offset for topic/partition: EDDY_OK, or EDDY_ERR_NOT_FOUND if none. */
eddy_err_t eddy_replay_offset(eddy_replay_t *r, const char *topic, int32_t partition, int64_t *next);

/* Calls fn for every stored partition position (topic order, then partition). fn runs under the
 * buffer's read lock: it must not call eddy_replay functions on r. */
void eddy_replay_offsets_each(eddy_replay_t *r,
                              void (*fn)(void *ctx, const char *topic, int32_t partition, int64_t next),
                              void *ctx);

/* Fresh events in seq order: up to max events with seq >= from_seq into out[0..) (each an
 * initialised eddy_event_t, reused), their seqs into seqs (optional). *got = count. Events already
 * evicted are skipped (the caller sees the seq jump). Reads one consistent RocksDB snapshot. */
eddy_err_t eddy_replay_read(eddy_replay_t *r, uint64_t from_seq, size_t max, eddy_event_t *out,
                            uint64_t *seqs, size_t *got);

/* Replay samples: up to n events by strategy (uniform over stored seqs, recency-weighted, or from
 * the class-balanced reservoir), drawn from rng_state (advanced). *got may be < n when the buffer
 * holds fewer. Draws are with replacement and deterministic for a given rng_state and contents.
 * uniform: seq uniform over [first_seq, next_seq). recent: triangular weighting, the density grows
 * linearly from 0 at first_seq to 2/N at the newest event (mean age N/3 instead of N/2).
 * balanced: a class uniformly among those present in the reservoir, then a slot uniformly within
 * it; with reservoir_size = 0 there is no reservoir and *got = 0. */
eddy_err_t eddy_replay_sample(eddy_replay_t *r, eddy_sample_t strategy, uint64_t *rng_state,
                              size_t n, eddy_event_t *out, size_t *got);

/* eddy_replay_sample with the caller's filter: accept(ctx, seq, ev) is asked about every event
 * drawn (seq: its buffer seq; UINT64_MAX for a reservoir slot written by an older build) and a
 * refused draw counts as a try (up to 4 per wanted event, plus 4 per class). For balanced, a
 * class whose first 4 draws of the call are all refused is left out for the rest of the call. seqs (optional) gets the
 * seq of each event returned. accept NULL accepts everything. */
typedef bool (*eddy_replay_accept_fn)(void *ctx, uint64_t seq, const eddy_event_t *ev);
eddy_err_t eddy_replay_sample_where(eddy_replay_t *r, eddy_sample_t strategy, uint64_t *rng_state, size_t n,
                                    eddy_event_t *out, uint64_t *seqs, eddy_replay_accept_fn accept, void *ctx,
                                    size_t *got);

eddy_replay_stats_t eddy_replay_stats(eddy_replay_t *r);

/* Named u64 cursors in the meta column family (e.g. "trained"), written with sync. */
eddy_err_t eddy_replay_meta_put(eddy_replay_t *r, const char *key, uint64_t value);
typedef struct {
  const char *key;
  uint64_t value;
} eddy_replay_meta_t;
/* Several cursors in ONE synced WriteBatch: after a crash all of them are stored or none.
 * EDDY_ERR_IO (why names the buffer and the error) when the write fails, EDDY_ERR_STATE when
 * opened read-only, EDDY_ERR_INVALID_ARG for a key over 200 bytes. */
eddy_err_t eddy_replay_meta_put_batch(eddy_replay_t *r, const eddy_replay_meta_t *meta, size_t n, char *why,
                                      size_t why_size);
eddy_err_t eddy_replay_meta_get(eddy_replay_t *r, const char *key, uint64_t *value); /* NOT_FOUND */

/* Per-label event counts over the stored events (labels rounded to integers; squared head, i.e.
 * classes = 1: one bucket, label 0). fn is called once per label present, in label order; beyond
 * 4096 distinct labels the rest are counted under label INT64_MIN. */
void eddy_replay_label_counts(eddy_replay_t *r, void (*fn)(void *ctx, int64_t label, uint64_t count),
                              void *ctx);

/* Dead letters, newest first, at most max; fn gets each (pointers valid during the call; fn runs
 * under the buffer's read lock and must not call eddy_replay functions on r). Counts by reason
 * over all stored dead letters into by_reason[EDDY_ERR__COUNT] when non-NULL. */
void eddy_replay_dead_letters(eddy_replay_t *r, size_t max,
                              void (*fn)(void *ctx, const eddy_dead_letter_t *dl), void *ctx,
                              uint64_t *by_reason);

/* Reservoir fill per class: fn(class, kept, seen) for every class with seen > 0, where kept =
 * min(seen, reservoir_size) events are held and seen = events of that class offered to it. */
void eddy_replay_reservoir_counts(eddy_replay_t *r,
                                  void (*fn)(void *ctx, uint32_t cls, uint64_t kept, uint64_t seen),
                                  void *ctx);

#endif
