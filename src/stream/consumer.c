/* Kafka -> replay buffer ingest with exactly-once positions. Invariants:
 *  - a message is appended at most once: each poll batch is ONE eddy_replay_append together with
 *    the next offset of every partition in it, and a message below the next offset expected for
 *    its partition (stored or pending) is never appended again;
 *  - nothing is skipped: every partition starts at the offset stored in the buffer (or, for a
 *    partition the buffer has never seen, at the group's committed offset, else the earliest), and
 *    a batch the buffer refused is re-read after a seek back to the first unstored offset;
 *  - ownership never moves while the process lives: ingest assigns its partitions itself (rank r of
 *    R owns the partitions p with p mod R = r, found by a topic watch) and joins no consumer group,
 *    so no partition is ever taken away with a batch in flight.
 * The in-flight batch lives only inside eddy_ingest_poll_once and the callbacks it triggers. */
#include "stream/consumer.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "core/clock.h"
#include "core/log.h"
#include "model/spec.h"
#include "stream/kafka_conf_internal.h"
#include "stream/topic_watch_internal.h"

#define LOG_MOD "ingest"
#define MAX_PARTITIONS 65536  /* assigned partitions tracked at once */
#define DL_TEXT 256           /* bytes of a dead letter's message */
#define BAD_LOGGED 10         /* bad events logged one by one; later ones only counted */
#define WARN_EVERY_MS 10000   /* repeated warnings of one kind at most this often */
#define CLOSE_COMMIT_MS 2000  /* wait for the last commit at exit */
#define COMMIT_TIMEOUT_MS 5000 /* an offset commit request gives up after this */
/* session.timeout.ms of the ingest consumer. It joins no group, so librdkafka uses the value only
 * at exit: lookups of committed offsets still waiting for a group coordinator hold
 * rd_kafka_consumer_close that long (45 s by default while the cluster is unreachable). */
#define QUEUED_OFFSET_FETCH_MS "500"
#define ASSIGN_CHECK_MS 200   /* longest consumer poll between looks at the topic watch */
#define SEEK_TIMEOUT_MS 5000
#define LAG_EVERY_MS 1000
#define COMMIT_EVERY_MS 1000 /* Kafka commits are informational: coalesced, once a second */
#define DLQ_FLUSH_MS 5000

typedef struct {
  char *topic;
  int32_t partition;
  int64_t stored;       /* next offset stored in the buffer; -1 unknown (never stored) */
  int64_t floor;        /* lowest offset not known to be stored: the rewind target; -1 unknown */
  int64_t pending_next; /* next offset after the in-flight batch's messages; -1 none */
  int64_t committed;    /* last offset sent in a Kafka commit; -1 none */
  bool eof;             /* read to the end (no message since the last EOF event) */
  eddy_series_t *lag;
} part_t;

typedef struct {
  eddy_metric_t *events, *dead, *lag;
  eddy_series_t *ok, *invalid, *bytes, *paused, *backpressure, *dlq_ok, *dlq_failed, *commit_failed,
      *kafka_errors, *assigned, *skipped, *buf_events, *buf_bytes, *buf_evicted, *buf_dead,
      *append_seconds;
} ingest_metrics_t;

struct eddy_ingest {
  rd_kafka_t *rk;
  rd_kafka_t *dlq; /* producer for [stream] dlq_topic; NULL when none */
  char *dlq_topic;
  eddy_replay_t *buffer;
  eddy_event_schema_t schema;
  eddy_ingest_opts_t opts;
  char group[EDDY_CONFIG_STR];
  char topic[EDDY_CONFIG_STR];
  uint32_t rank, ranks;      /* this ingest owns the partitions p with p mod ranks = rank */
  eddy_topic_watch_t *watch; /* the topic's partition count */
  int32_t topic_parts;       /* partitions of the topic looked at so far (owned ones assigned) */
  rd_kafka_resp_err_t watch_err; /* the watch's outcome last logged */
  int64_t start_ms;              /* CLOCK_MONOTONIC ms of eddy_ingest_new */
  bool stored_any;               /* a batch was stored since start (logged once) */

  part_t *parts;
  size_t n_parts, parts_cap;

  /* In-flight batch: the messages are held until appended (dead letters point into them). */
  rd_kafka_message_t **msgs;
  size_t n_msgs;
  size_t pending_bytes;
  eddy_event_t *events; /* opts.max_batch decoded events, reused */
  const eddy_event_t **event_ptrs;
  size_t n_events;
  eddy_dead_letter_t *dls;
  char (*dl_text)[DL_TEXT];
  size_t n_dls;
  eddy_replay_offset_t *offsets;
  uint32_t batch_limit; /* current messages per batch: halved while the buffer refuses */

  /* Backpressure. */
  bool paused;  /* partitions paused now (until the retry rewinds and resumes) */
  bool refused; /* the buffer refused the last batch and none was stored since */
  int retry_ms;
  int64_t retry_at_ms;

  eddy_err_t fatal; /* set in a callback; returned by the next poll */
  char fatal_msg[512];
  atomic_int stop;
  int64_t last_lag_ms;
  int64_t last_commit_ms;
  int64_t last_warn_ms[4];
  uint64_t bad_logged;
  rd_kafka_queue_t *commit_q;         /* answers of commit_stored's requests */
  rd_kafka_AdminOptions_t *commit_opts; /* their request timeout */
  bool commit_pending;                /* a commit_stored request awaits its answer */
  int64_t down_ms; /* when librdkafka last reported every broker down; 0 never */
  int64_t up_ms;   /* when a broker last answered (a message, an EOF, a commit) */

  pthread_mutex_t stats_lock;
  eddy_ingest_stats_t stats;
  ingest_metrics_t m;
};

enum { WARN_KAFKA = 0, WARN_SKIP, WARN_DLQ, WARN_COMMIT };

/* True when a warning of this kind may be logged now (first one, then one per WARN_EVERY_MS). */
static bool warn_due(eddy_ingest_t *ing, int kind) {
  int64_t t = eddy_clock_mono_ms();
  if (ing->last_warn_ms[kind] && t - ing->last_warn_ms[kind] < WARN_EVERY_MS) return false;
  ing->last_warn_ms[kind] = t;
  return true;
}

#define STATS_UPDATE(ing, stmt)               \
  do {                                        \
    pthread_mutex_lock(&(ing)->stats_lock);   \
    stmt;                                     \
    pthread_mutex_unlock(&(ing)->stats_lock); \
  } while (0)

static void set_fatal(eddy_ingest_t *ing, eddy_err_t err, const char *fmt, const char *what) {
  if (ing->fatal) return;
  ing->fatal = err;
  snprintf(ing->fatal_msg, sizeof ing->fatal_msg, fmt, what);
}

/* ---- partition table ---- */

static part_t *part_find(eddy_ingest_t *ing, const char *topic, int32_t partition) {
  for (size_t i = 0; i < ing->n_parts; i++)
    if (ing->parts[i].partition == partition && !strcmp(ing->parts[i].topic, topic))
      return &ing->parts[i];
  return NULL;
}

static const char *const *lag_labels(const part_t *p, char *pbuf, size_t size, const char **out) {
  snprintf(pbuf, size, "%" PRId32, p->partition);
  out[0] = p->topic;
  out[1] = pbuf;
  return out;
}

static part_t *part_add(eddy_ingest_t *ing, const char *topic, int32_t partition) {
  part_t *p = part_find(ing, topic, partition);
  if (p) return p;
  if (ing->n_parts == ing->parts_cap) {
    size_t cap = ing->parts_cap ? ing->parts_cap * 2 : 16;
    if (cap > MAX_PARTITIONS) return NULL;
    part_t *grown = realloc(ing->parts, cap * sizeof *grown);
    if (!grown) return NULL;
    ing->parts = grown;
    ing->parts_cap = cap;
  }
  char *name = strdup(topic);
  if (!name) return NULL;
  p = &ing->parts[ing->n_parts++];
  *p = (part_t){.topic = name,
                .partition = partition,
                .stored = -1,
                .floor = -1,
                .pending_next = -1,
                .committed = -1};
  char pbuf[16];
  const char *labels[2];
  p->lag = eddy_metric_series(ing->m.lag, lag_labels(p, pbuf, sizeof pbuf, labels));
  return p;
}

static void part_remove(eddy_ingest_t *ing, const char *topic, int32_t partition) {
  part_t *p = part_find(ing, topic, partition);
  if (!p) return;
  char pbuf[16];
  const char *labels[2];
  eddy_metric_remove(ing->m.lag, lag_labels(p, pbuf, sizeof pbuf, labels));
  free(p->topic);
  *p = ing->parts[--ing->n_parts];
}

static void parts_clear(eddy_ingest_t *ing) {
  while (ing->n_parts) part_remove(ing, ing->parts[0].topic, ing->parts[0].partition);
}

/* The partitions as a librdkafka list; offsets from the table when with_floor (rewind targets,
 * partitions without one left out). NULL on allocation failure or when none qualifies. */
static rd_kafka_topic_partition_list_t *parts_list(eddy_ingest_t *ing, bool with_floor) {
  rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new((int)ing->n_parts + 1);
  for (size_t i = 0; i < ing->n_parts; i++) {
    const part_t *p = &ing->parts[i];
    if (with_floor && p->floor < 0) continue;
    rd_kafka_topic_partition_t *tp =
        rd_kafka_topic_partition_list_add(list, p->topic, p->partition);
    if (with_floor) tp->offset = p->floor;
  }
  if (list->cnt == 0) {
    rd_kafka_topic_partition_list_destroy(list);
    return NULL;
  }
  return list;
}

static void update_assigned_stats(eddy_ingest_t *ing) {
  STATS_UPDATE(ing, ing->stats.assigned = (uint32_t)ing->n_parts);
  eddy_series_set(ing->m.assigned, (double)ing->n_parts);
}

/* ---- the in-flight batch ---- */

static void pending_drop(eddy_ingest_t *ing) {
  for (size_t i = 0; i < ing->n_msgs; i++) rd_kafka_message_destroy(ing->msgs[i]);
  ing->n_msgs = ing->n_events = ing->n_dls = 0;
  ing->pending_bytes = 0;
  for (size_t i = 0; i < ing->n_parts; i++) ing->parts[i].pending_next = -1;
}

/* Pauses every assigned partition after the buffer refused a batch; the retry (rewind + resume)
 * happens in poll_once once retry_at_ms has come. The delay doubles (up to retry_max_ms) while
 * the buffer keeps refusing and starts again from retry_min_ms after a stored batch. */
static void backpressure_enter(eddy_ingest_t *ing, eddy_err_t err, const char *why) {
  if (!ing->paused) {
    rd_kafka_topic_partition_list_t *list = parts_list(ing, false);
    if (list) {
      rd_kafka_pause_partitions(ing->rk, list);
      rd_kafka_topic_partition_list_destroy(list);
    }
    ing->paused = true;
  }
  if (!ing->refused) { /* first refusal since a batch was stored */
    ing->refused = true;
    ing->retry_ms = ing->opts.retry_min_ms;
    eddy_series_set(ing->m.paused, 1);
  } else {
    ing->retry_ms =
        ing->retry_ms * 2 > ing->opts.retry_max_ms ? ing->opts.retry_max_ms : ing->retry_ms * 2;
  }
  STATS_UPDATE(ing, ing->stats.paused = true; ing->stats.backpressure++);
  eddy_series_add(ing->m.backpressure, 1);
  ing->retry_at_ms = eddy_clock_mono_ms() + ing->retry_ms;
  EDDY_WARN(LOG_MOD, "buffer refused a batch (%s: %s): partitions paused, retry in %d ms",
            eddy_err_name(err), why, ing->retry_ms);
}

/* Rewinds every partition to its first unstored offset and resumes. Stays paused (and retries
 * later) if a seek fails: resuming without it would skip the messages of the refused batch. */
static void backpressure_retry(eddy_ingest_t *ing) {
  rd_kafka_topic_partition_list_t *seek = parts_list(ing, true);
  if (seek) {
    rd_kafka_error_t *error = rd_kafka_seek_partitions(ing->rk, seek, SEEK_TIMEOUT_MS);
    bool failed = error != NULL;
    for (int i = 0; !failed && i < seek->cnt; i++) failed = seek->elems[i].err != 0;
    if (failed) {
      EDDY_WARN(LOG_MOD, "rewind before resuming failed (%s); staying paused",
                error ? rd_kafka_error_string(error) : rd_kafka_err2str(seek->elems[0].err));
      if (error) rd_kafka_error_destroy(error);
      rd_kafka_topic_partition_list_destroy(seek);
      ing->retry_at_ms = eddy_clock_mono_ms() + ing->retry_ms;
      return;
    }
    rd_kafka_topic_partition_list_destroy(seek);
  }
  rd_kafka_topic_partition_list_t *all = parts_list(ing, false);
  if (all) {
    rd_kafka_resume_partitions(ing->rk, all);
    rd_kafka_topic_partition_list_destroy(all);
  }
  ing->paused = false; /* stats.paused stays set until a batch is stored */
  EDDY_INFO(LOG_MOD, "resuming %zu partitions from the stored offsets", ing->n_parts);
}

static void dlq_produce(eddy_ingest_t *ing, const rd_kafka_message_t *msg,
                        const eddy_dead_letter_t *dl) {
  char partition[16], offset[24];
  snprintf(partition, sizeof partition, "%" PRId32, dl->partition);
  snprintf(offset, sizeof offset, "%" PRId64, dl->offset);
  const char *reason = eddy_err_name(dl->reason);
  rd_kafka_resp_err_t err = rd_kafka_producev(
      ing->dlq, RD_KAFKA_V_TOPIC(ing->dlq_topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
      RD_KAFKA_V_VALUE(msg->payload, msg->len), RD_KAFKA_V_KEY(msg->key, msg->key_len),
      RD_KAFKA_V_HEADER("eddy-reason", reason, (ssize_t)strlen(reason)),
      RD_KAFKA_V_HEADER("eddy-message", dl->message, (ssize_t)strlen(dl->message)),
      RD_KAFKA_V_HEADER("eddy-topic", dl->topic, (ssize_t)strlen(dl->topic)),
      RD_KAFKA_V_HEADER("eddy-partition", partition, (ssize_t)strlen(partition)),
      RD_KAFKA_V_HEADER("eddy-offset", offset, (ssize_t)strlen(offset)), RD_KAFKA_V_END);
  if (err) {
    STATS_UPDATE(ing, ing->stats.dlq_failed++);
    eddy_series_add(ing->m.dlq_failed, 1);
    if (warn_due(ing, WARN_DLQ))
      EDDY_WARN(LOG_MOD, "dead-letter topic %s: %s (the dead letter is kept in the buffer)",
                ing->dlq_topic, rd_kafka_err2str(err));
  }
}

static void refresh_buffer_metrics(eddy_ingest_t *ing) {
  if (!ing->m.buf_events) return;
  eddy_replay_stats_t st = eddy_replay_stats(ing->buffer);
  eddy_series_set(ing->m.buf_events, (double)st.events);
  eddy_series_set(ing->m.buf_bytes, (double)st.bytes);
  eddy_series_set(ing->m.buf_evicted, (double)st.evicted);
  eddy_series_set(ing->m.buf_dead, (double)st.dead_letters);
}

/* Appends the in-flight batch in one eddy_replay_append, then copies its dead letters to the
 * dead-letter topic (Kafka commits follow in commit_stored). A refusal (over capacity, disk full)
 * drops the batch and enters backpressure: EDDY_OK. Other buffer errors are fatal. */
static eddy_err_t pending_flush(eddy_ingest_t *ing, size_t *stored, char *errstr,
                                size_t errstr_size) {
  if (stored) *stored = 0;
  if (ing->n_msgs == 0) return EDDY_OK;
  size_t n_off = 0;
  for (size_t i = 0; i < ing->n_parts; i++) {
    const part_t *p = &ing->parts[i];
    if (p->pending_next < 0) continue;
    ing->offsets[n_off++] = (eddy_replay_offset_t){p->topic, p->partition, p->pending_next};
  }
  for (size_t i = 0; i < ing->n_events; i++) ing->event_ptrs[i] = &ing->events[i];
  char why[512] = "";
  double append_start = eddy_clock_mono_s();
  eddy_err_t err = eddy_replay_append(ing->buffer, ing->event_ptrs, ing->n_events, ing->dls,
                                      ing->n_dls, ing->offsets, n_off, NULL, why, sizeof why);
  double append_seconds = eddy_clock_mono_s() - append_start;
  if (err == EDDY_ERR_TOO_LARGE || err == EDDY_ERR_IO) {
    size_t n = ing->n_msgs;
    pending_drop(ing);
    if (err == EDDY_ERR_TOO_LARGE) ing->batch_limit = n / 2 > 0 ? (uint32_t)(n / 2) : 1;
    backpressure_enter(ing, err, why);
    return EDDY_OK;
  }
  if (err) {
    pending_drop(ing);
    return eddy_errf(err, errstr, errstr_size, "replay buffer append failed: %s", why);
  }
  eddy_series_observe(ing->m.append_seconds, append_seconds);

  for (size_t i = 0; i < ing->n_parts; i++) {
    part_t *p = &ing->parts[i];
    if (p->pending_next < 0) continue;
    p->stored = p->floor = p->pending_next;
    p->pending_next = -1;
  }
  if (ing->dlq) {
    size_t d = 0;
    for (size_t i = 0; i < ing->n_msgs && d < ing->n_dls; i++) {
      const rd_kafka_message_t *msg = ing->msgs[i];
      if (ing->dls[d].offset == msg->offset && ing->dls[d].partition == msg->partition)
        dlq_produce(ing, msg, &ing->dls[d++]);
    }
    rd_kafka_poll(ing->dlq, 0);
  }

  size_t n_ok = ing->n_events, n_bad = ing->n_dls, bytes = ing->pending_bytes;
  for (size_t i = 0; i < ing->n_dls; i++) {
    const char *labels[1] = {eddy_err_name(ing->dls[i].reason)};
    eddy_series_add(eddy_metric_series(ing->m.dead, labels), 1);
  }
  STATS_UPDATE(ing, ing->stats.events_ok += n_ok; ing->stats.events_invalid += n_bad;
               ing->stats.bytes += bytes; ing->stats.batches++; ing->stats.paused = false);
  if (ing->refused) {
    ing->refused = false;
    eddy_series_set(ing->m.paused, 0);
  }
  eddy_series_add(ing->m.ok, (double)n_ok);
  eddy_series_add(ing->m.invalid, (double)n_bad);
  eddy_series_add(ing->m.bytes, (double)bytes);
  if (stored) *stored = ing->n_msgs;
  if (!ing->stored_any) {
    ing->stored_any = true;
    EDDY_INFO(LOG_MOD, "first batch stored %.2f s after start (%zu messages)",
              (double)(eddy_clock_mono_ms() - ing->start_ms) / 1000.0, ing->n_msgs);
  }
  for (size_t i = 0; i < ing->n_msgs; i++) rd_kafka_message_destroy(ing->msgs[i]);
  ing->n_msgs = ing->n_events = ing->n_dls = 0;
  ing->pending_bytes = 0;
  if (ing->batch_limit < ing->opts.max_batch)
    ing->batch_limit =
        ing->batch_limit * 2 < ing->opts.max_batch ? ing->batch_limit * 2 : ing->opts.max_batch;
  refresh_buffer_metrics(ing);
  return EDDY_OK;
}

/* The stored offsets that changed since the last commit, marked as committed; NULL when none. */
static rd_kafka_topic_partition_list_t *commit_list(eddy_ingest_t *ing) {
  rd_kafka_topic_partition_list_t *list = NULL;
  for (size_t i = 0; i < ing->n_parts; i++) {
    part_t *p = &ing->parts[i];
    if (p->stored < 0 || p->stored == p->committed) continue;
    if (!list) list = rd_kafka_topic_partition_list_new((int)ing->n_parts);
    rd_kafka_topic_partition_list_add(list, p->topic, p->partition)->offset = p->stored;
    p->committed = p->stored;
  }
  return list;
}

/* Forgets the commits of list (or of every partition when list is NULL), so that the next round
 * sends them again, and counts one failure. */
static void commit_failed(eddy_ingest_t *ing, const rd_kafka_topic_partition_list_t *list) {
  for (int i = 0; list && i < list->cnt; i++) {
    part_t *p = part_find(ing, list->elems[i].topic, list->elems[i].partition);
    if (p && p->committed == list->elems[i].offset) p->committed = -1;
  }
  for (size_t i = 0; !list && i < ing->n_parts; i++) ing->parts[i].committed = -1;
  STATS_UPDATE(ing, ing->stats.commit_failed++);
  eddy_series_add(ing->m.commit_failed, 1);
}

/* Sends list as one OffsetCommit to group.id. Commits go through the admin API
 * (AlterConsumerGroupOffsets), not the consumer group handler: librdkafka's consumer close waits
 * for every group commit in flight, forever when the brokers went away mid-request
 * (librdkafka issue #3740), while an admin request only times out. The answer goes to q. */
static bool commit_send(eddy_ingest_t *ing, const rd_kafka_topic_partition_list_t *list,
                        rd_kafka_queue_t *q) {
  rd_kafka_AlterConsumerGroupOffsets_t *alter =
      rd_kafka_AlterConsumerGroupOffsets_new(ing->group, list);
  if (!alter) return false;
  rd_kafka_AlterConsumerGroupOffsets(ing->rk, &alter, 1, ing->commit_opts, q);
  rd_kafka_AlterConsumerGroupOffsets_destroy(alter);
  return true;
}

/* A commit answer: 0 when every partition was committed. A partition whose commit failed is
 * committed again at the next round, so that lag tools catch up once Kafka takes commits again:
 * it refuses them, for one, while another client is an active member of the group. */
static rd_kafka_resp_err_t commit_answer(eddy_ingest_t *ing, rd_kafka_event_t *ev) {
  rd_kafka_resp_err_t err = rd_kafka_event_error(ev);
  const rd_kafka_AlterConsumerGroupOffsets_result_t *res =
      rd_kafka_event_AlterConsumerGroupOffsets_result(ev);
  size_t n = 0;
  const rd_kafka_group_result_t **groups =
      res ? rd_kafka_AlterConsumerGroupOffsets_result_groups(res, &n) : NULL;
  const rd_kafka_topic_partition_list_t *parts = NULL;
  if (!err && n == 1) {
    const rd_kafka_error_t *gerr = rd_kafka_group_result_error(groups[0]);
    if (gerr) err = rd_kafka_error_code(gerr);
    parts = rd_kafka_group_result_partitions(groups[0]);
  } else if (!err) {
    err = RD_KAFKA_RESP_ERR__BAD_MSG;
  }
  for (int i = 0; !err && parts && i < parts->cnt; i++) err = parts->elems[i].err;
  if (!err) {
    ing->up_ms = eddy_clock_mono_ms();
    return RD_KAFKA_RESP_ERR_NO_ERROR;
  }
  commit_failed(ing, parts);
  return err;
}

/* Commits the stored offsets that changed since the last commit to group.id, one request at a
 * time (the answer is read in eddy_ingest_poll_once). Kafka commits only mirror the buffer, so
 * that lag shows in Kafka tools (kafka-consumer-groups, kcat): coalesced to one a second, which
 * is all those tools need. */
static void commit_stored(eddy_ingest_t *ing) {
  ing->last_commit_ms = eddy_clock_mono_ms();
  if (ing->commit_pending) return;
  rd_kafka_topic_partition_list_t *list = commit_list(ing);
  if (!list) return;
  if (commit_send(ing, list, ing->commit_q)) ing->commit_pending = true;
  else commit_failed(ing, list);
  rd_kafka_topic_partition_list_destroy(list);
}

/* Reads the answer of the commit in flight, if it came. */
static void commit_check(eddy_ingest_t *ing) {
  if (!ing->commit_pending) return;
  rd_kafka_event_t *ev = rd_kafka_queue_poll(ing->commit_q, 0);
  if (!ev) return;
  ing->commit_pending = false;
  rd_kafka_resp_err_t err = commit_answer(ing, ev);
  rd_kafka_event_destroy(ev);
  if (err && warn_due(ing, WARN_COMMIT))
    EDDY_WARN(LOG_MOD,
              "Kafka offset commit to group %s failed: %s (informational: the buffer holds the "
              "positions)",
              ing->group, rd_kafka_err2str(err));
}

/* False after librdkafka reported every broker down, until a broker answered again (a message,
 * an EOF, a commit, or the topic watch's metadata). */
static bool kafka_reachable(eddy_ingest_t *ing) {
  if (!ing->down_ms) return true;
  int64_t up = ing->up_ms;
  int64_t watch_up = ing->watch ? eddy_topic_watch_answered_ms(ing->watch) : 0;
  return (watch_up > up ? watch_up : up) > ing->down_ms;
}

/* Serves the consumer's queue without keeping messages (at exit, after the last batch): error
 * events report every broker down to error_cb. */
static void serve_errors(eddy_ingest_t *ing) {
  rd_kafka_message_t *msg;
  while ((msg = rd_kafka_consumer_poll(ing->rk, 0))) rd_kafka_message_destroy(msg);
}

/* The last commit, at exit: waits for the answer (CLOSE_COMMIT_MS at most), so that lag tools
 * show where this buffer stops. Skipped, or given up, while Kafka is unreachable: the buffer
 * holds the positions, and waiting would only delay the exit. */
static void commit_final(eddy_ingest_t *ing) {
  commit_check(ing);
  if (ing->commit_pending) /* one more answer may come; this commit covers it either way */
    for (size_t i = 0; i < ing->n_parts; i++) ing->parts[i].committed = -1;
  rd_kafka_topic_partition_list_t *list = commit_list(ing);
  if (!list) return;
  rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__TRANSPORT;
  serve_errors(ing);
  if (kafka_reachable(ing)) {
    rd_kafka_queue_t *q = rd_kafka_queue_new(ing->rk);
    rd_kafka_event_t *ev = NULL;
    bool sent = commit_send(ing, list, q);
    int64_t until = eddy_clock_mono_ms() + CLOSE_COMMIT_MS;
    while (sent && !ev && eddy_clock_mono_ms() < until && kafka_reachable(ing)) {
      ev = rd_kafka_queue_poll(q, 100);
      serve_errors(ing);
    }
    if (ev) {
      err = commit_answer(ing, ev);
      rd_kafka_event_destroy(ev);
    } else {
      if (kafka_reachable(ing)) err = RD_KAFKA_RESP_ERR__TIMED_OUT;
      commit_failed(ing, list);
    }
    rd_kafka_queue_destroy(q);
  } else {
    commit_failed(ing, list);
  }
  if (err)
    EDDY_WARN(LOG_MOD,
              "last offset commit of %d partition%s to group %s %s: %s (lag tools show older "
              "positions; the buffer holds the right ones)",
              list->cnt, list->cnt == 1 ? "" : "s", ing->group,
              err == RD_KAFKA_RESP_ERR__TRANSPORT ? "skipped" : "failed",
              err == RD_KAFKA_RESP_ERR__TRANSPORT ? "every broker is down" : rd_kafka_err2str(err));
  rd_kafka_topic_partition_list_destroy(list);
}

/* Decodes msg into the in-flight batch (event or dead letter) and takes ownership of it. */
static void pending_add(eddy_ingest_t *ing, part_t *p, rd_kafka_message_t *msg) {
  char why[DL_TEXT];
  eddy_event_t *ev = &ing->events[ing->n_events];
  const char *payload = msg->payload ? msg->payload : "";
  eddy_err_t err = eddy_event_from_json(payload, msg->len, &ing->schema, ev, why, sizeof why);
  if (err == EDDY_OK) {
    if (!ev->has_ts) { /* DESIGN: ts defaults to the broker (message) time */
      rd_kafka_timestamp_type_t tstype;
      int64_t ts = rd_kafka_message_timestamp(msg, &tstype);
      if (tstype != RD_KAFKA_TIMESTAMP_NOT_AVAILABLE && ts >= 0) {
        ev->ts = ts;
        ev->has_ts = true;
      }
    }
    ev->has_origin = true; /* where it came from: the trainer's positions per partition */
    ev->partition = msg->partition;
    ev->offset = msg->offset;
    ing->n_events++;
  } else {
    if (!eddy_err_is_bad_event(err)) err = EDDY_ERR_EVENT_NOT_JSON; /* cannot happen; stay safe */
    eddy_dead_letter_t *dl = &ing->dls[ing->n_dls];
    snprintf(ing->dl_text[ing->n_dls], DL_TEXT, "%s", why);
    *dl = (eddy_dead_letter_t){.topic = p->topic,
                               .partition = msg->partition,
                               .offset = msg->offset,
                               .ts_ms = eddy_clock_wall_ms(),
                               .reason = err,
                               .message = ing->dl_text[ing->n_dls],
                               .raw = payload,
                               .raw_len = msg->len};
    ing->n_dls++;
    if (ing->bad_logged < BAD_LOGGED)
      EDDY_WARN(LOG_MOD, "dead letter %s [%" PRId32 "] @%" PRId64 " (%s): %s", p->topic,
                msg->partition, msg->offset, eddy_err_name(err), why);
    else if (ing->bad_logged == BAD_LOGGED)
      EDDY_WARN(LOG_MOD, "more dead letters follow; counted in metrics, kept in the buffer");
    ing->bad_logged++;
  }
  ing->msgs[ing->n_msgs++] = msg;
  ing->pending_bytes += msg->len;
  p->pending_next = msg->offset + 1;
  p->eof = false;
}

/* ---- partition ownership ---- */

/* Assigns the partitions the topic watch found since the last look that this rank owns, each at
 * the offset stored in the buffer, else RD_KAFKA_OFFSET_INVALID (the group's committed offset,
 * else auto.offset.reset). Incremental: the partitions read already keep their positions. */
static void assign_new(eddy_ingest_t *ing) {
  rd_kafka_resp_err_t werr;
  int32_t n = eddy_topic_watch_partitions(ing->watch, &werr);
  if (werr != ing->watch_err && werr != RD_KAFKA_RESP_ERR__IN_PROGRESS) {
    if (werr && warn_due(ing, WARN_KAFKA))
      EDDY_WARN(LOG_MOD, "metadata of %s: %s (%s; asking again)", ing->topic,
                rd_kafka_err2str(werr),
                n > 0 ? "reading the partitions known" : "no partition to read yet");
    ing->watch_err = werr;
  }
  if (n <= ing->topic_parts) return;
  rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(n - ing->topic_parts);
  char desc[512];
  size_t dlen = 0;
  desc[0] = '\0';
  for (int32_t partition = ing->topic_parts; partition < n; partition++) {
    if ((uint32_t)partition % ing->ranks != ing->rank) continue;
    part_t *p = part_add(ing, ing->topic, partition);
    if (!p) {
      set_fatal(ing, EDDY_ERR_NOMEM, "%s", "out of memory tracking assigned partitions");
      break;
    }
    rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_add(list, ing->topic, partition);
    int64_t next;
    if (eddy_replay_offset(ing->buffer, ing->topic, partition, &next) == EDDY_OK) {
      tp->offset = next;
      p->stored = p->floor = next;
    } else {
      tp->offset = RD_KAFKA_OFFSET_INVALID; /* committed offset, else auto.offset.reset */
    }
    if (dlen < sizeof desc - 64) {
      int w = p->stored >= 0 ? snprintf(desc + dlen, sizeof desc - dlen, " [%" PRId32 "]@%" PRId64,
                                        partition, p->stored)
                             : snprintf(desc + dlen, sizeof desc - dlen, " [%" PRId32 "]@committed",
                                        partition);
      dlen += w > 0 ? (size_t)w : 0;
    }
  }
  int32_t seen = ing->topic_parts;
  ing->topic_parts = n;
  if (list->cnt > 0 && !ing->fatal) {
    rd_kafka_error_t *error = rd_kafka_incremental_assign(ing->rk, list);
    if (error) {
      set_fatal(ing, EDDY_ERR_BACKEND, "assigning partitions failed: %s",
                rd_kafka_error_string(error));
      rd_kafka_error_destroy(error);
    } else if (ing->paused) {
      rd_kafka_pause_partitions(ing->rk, list); /* the buffer still refuses */
    }
  }
  update_assigned_stats(ing);
  if (list->cnt > 0)
    EDDY_INFO(LOG_MOD, "rank %u of %u: assigned %d partition%s of %s (%d in all):%s%s", ing->rank,
              ing->ranks, list->cnt, list->cnt == 1 ? "" : "s", ing->topic, n, desc,
              dlen >= sizeof desc - 64 ? " ..." : "");
  else if (seen == 0)
    EDDY_WARN(LOG_MOD,
              "rank %u of %u owns none of the %d partitions of %s (partition p belongs to "
              "rank p mod %u)",
              ing->rank, ing->ranks, n, ing->topic, ing->ranks);
  rd_kafka_topic_partition_list_destroy(list);
}

/* ---- librdkafka callbacks (run inside rd_kafka_consumer_poll) ---- */

static void dlq_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
  eddy_ingest_t *ing = opaque;
  if (msg->err) {
    STATS_UPDATE(ing, ing->stats.dlq_failed++);
    eddy_series_add(ing->m.dlq_failed, 1);
    if (warn_due(ing, WARN_DLQ))
      EDDY_WARN(LOG_MOD, "dead-letter topic %s: %s (the dead letter is kept in the buffer)",
                ing->dlq_topic, rd_kafka_err2str(msg->err));
  } else {
    STATS_UPDATE(ing, ing->stats.dlq_produced++);
    eddy_series_add(ing->m.dlq_ok, 1);
  }
}

/* librdkafka's own log lines. Its LOG_ERR lines (connection failures and the like) are things it
 * retries by itself, so they are warnings here; what ingest cannot recover from it reports itself. */
static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
  eddy_log_level_t l = level <= 4 ? EDDY_LOG_WARN : level <= 6 ? EDDY_LOG_INFO : EDDY_LOG_DEBUG;
  eddy_log(l, "kafka", "%s: %s", fac, buf);
}

/* The dead-letter producer gets the [kafka] list written for the consumer: its warnings about
 * consumer-only properties are expected, so they go to the debug level. */
static void dlq_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
  if (!strcmp(fac, "CONFWARN"))
    eddy_log(EDDY_LOG_DEBUG, "kafka", "%s: %s", fac, buf);
  else
    log_cb(rk, level, fac, buf);
}

/* Client-wide errors (all brokers down, ...): counted, logged once per WARN_EVERY_MS; librdkafka
 * retries them. A fatal error stops ingest at the next poll. Set so that librdkafka does not also
 * log every one of them itself. */
static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
  eddy_ingest_t *ing = opaque;
  if (err == RD_KAFKA_RESP_ERR__FATAL) {
    char why[256];
    rd_kafka_fatal_error(rk, why, sizeof why);
    set_fatal(ing, EDDY_ERR_BACKEND, "Kafka consumer fatal error: %s", why);
    return;
  }
  if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
    ing->down_ms = eddy_clock_mono_ms();
    eddy_topic_watch_brokers_down(ing->watch);
  }
  STATS_UPDATE(ing, ing->stats.kafka_errors++);
  eddy_series_add(ing->m.kafka_errors, 1);
  if (warn_due(ing, WARN_KAFKA))
    EDDY_WARN(LOG_MOD, "Kafka: %s (retrying; repeats within %d s not logged)", reason,
              WARN_EVERY_MS / 1000);
}

/* ---- construction ---- */

static eddy_err_t register_metrics(eddy_ingest_t *ing, eddy_registry_t *reg, char *errstr,
                                   size_t errstr_size) {
  if (!reg) return EDDY_OK;
  static const double append_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                          0.05,   0.1,   0.25,   0.5,   1,    2.5};
  eddy_metric_t *f;
#define ADD(var, type, name, help, labels)                                                       \
  do {                                                                                           \
    if (!(var = eddy_registry_add(reg, type, name, help, labels, NULL, 0, errstr, errstr_size))) \
      return EDDY_ERR_INVALID_ARG;                                                               \
  } while (0)
#define SERIES(dst, family) (dst = eddy_metric_series(family, NULL))
  ADD(ing->m.events, EDDY_METRIC_COUNTER, "eddy_ingest_events_total",
      "Messages stored by ingest: result=ok (events) or invalid (dead letters)", "result");
  ing->m.ok = eddy_metric_series(ing->m.events, (const char *[]){"ok"});
  ing->m.invalid = eddy_metric_series(ing->m.events, (const char *[]){"invalid"});
  ADD(ing->m.dead, EDDY_METRIC_COUNTER, "eddy_ingest_dead_letters_total",
      "Bad events stored as dead letters, by reason", "reason");
  ADD(f, EDDY_METRIC_COUNTER, "eddy_ingest_bytes_total", "Payload bytes of stored messages", "");
  SERIES(ing->m.bytes, f);
  ADD(f, EDDY_METRIC_GAUGE, "eddy_ingest_paused",
      "1 while ingest is paused because the buffer refuses batches (full or over capacity)", "");
  SERIES(ing->m.paused, f);
  ADD(f, EDDY_METRIC_COUNTER, "eddy_ingest_backpressure_total",
      "Batches the buffer refused (full, or over capacity with eviction off); each pauses ingest",
      "");
  SERIES(ing->m.backpressure, f);
  ADD(f, EDDY_METRIC_COUNTER, "eddy_ingest_dlq_messages_total",
      "Dead letters sent to the dead-letter topic, by delivery result", "result");
  ing->m.dlq_ok = eddy_metric_series(f, (const char *[]){"ok"});
  ing->m.dlq_failed = eddy_metric_series(f, (const char *[]){"failed"});
  ADD(f, EDDY_METRIC_COUNTER, "eddy_ingest_skipped_total",
      "Messages below the stored offset of their partition, not stored again", "");
  SERIES(ing->m.skipped, f);
  if (!(f = eddy_registry_add(reg, EDDY_METRIC_HISTOGRAM, "eddy_ingest_append_seconds",
                              "Time of one replay buffer append (one poll batch)", "",
                              append_buckets, sizeof append_buckets / sizeof append_buckets[0],
                              errstr, errstr_size)))
    return EDDY_ERR_INVALID_ARG;
  SERIES(ing->m.append_seconds, f);
  ADD(f, EDDY_METRIC_COUNTER, "eddy_kafka_commit_failures_total",
      "Kafka offset commits that failed (informational: the buffer holds the positions)", "");
  SERIES(ing->m.commit_failed, f);
  ADD(f, EDDY_METRIC_COUNTER, "eddy_kafka_consumer_errors_total",
      "Consumer errors reported by librdkafka (retried)", "");
  SERIES(ing->m.kafka_errors, f);
  ADD(f, EDDY_METRIC_GAUGE, "eddy_kafka_assigned_partitions", "Partitions assigned to ingest", "");
  SERIES(ing->m.assigned, f);
  ADD(ing->m.lag, EDDY_METRIC_GAUGE, "eddy_kafka_consumer_lag",
      "Messages in the partition after the buffer's stored offset", "topic,partition");
  ADD(f, EDDY_METRIC_GAUGE, "eddy_buffer_events", "Events stored in the replay buffer", "");
  SERIES(ing->m.buf_events, f);
  ADD(f, EDDY_METRIC_GAUGE, "eddy_buffer_bytes", "Encoded bytes of the stored events", "");
  SERIES(ing->m.buf_bytes, f);
  ADD(f, EDDY_METRIC_COUNTER, "eddy_buffer_evicted_events_total",
      "Events evicted from the replay buffer since it was created", "");
  SERIES(ing->m.buf_evicted, f);
  ADD(f, EDDY_METRIC_GAUGE, "eddy_buffer_dead_letters", "Dead letters stored in the replay buffer",
      "");
  SERIES(ing->m.buf_dead, f);
#undef ADD
#undef SERIES
  return EDDY_OK;
}

/* Sets key=value on conf; errstr on failure. */
static bool conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, char *errstr,
                     size_t errstr_size) {
  char why[256];
  if (rd_kafka_conf_set(conf, key, value, why, sizeof why) == RD_KAFKA_CONF_OK) return true;
  eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "kafka.%s = \"%s\": %s", key, value, why);
  return false;
}

static rd_kafka_conf_t *consumer_conf(eddy_ingest_t *ing, const eddy_config_t *cfg, char *errstr,
                                      size_t errstr_size) {
  rd_kafka_conf_t *conf = eddy_kafka_conf_new(cfg, errstr, errstr_size);
  if (!conf) return NULL;
  const char *group = eddy_config_kafka(cfg, "group.id");
  if (group)
    snprintf(ing->group, sizeof ing->group, "%s", group);
  else
    snprintf(ing->group, sizeof ing->group, "eddy-%s", cfg->model_name);
  static const char *const forced[][2] = {{"enable.auto.commit", "false"},
                                          {"enable.auto.offset.store", "false"},
                                          {"enable.partition.eof", "true"}};
  bool ok = conf_set(conf, "group.id", ing->group, errstr, errstr_size);
  for (size_t i = 0; ok && i < sizeof forced / sizeof forced[0]; i++) {
    const char *user = eddy_config_kafka(cfg, forced[i][0]);
    if (user && strcmp(user, forced[i][1]))
      EDDY_WARN(LOG_MOD, "kafka.%s = %s ignored: ingest needs %s (the buffer holds the offsets)",
                forced[i][0], user, forced[i][1]);
    ok = conf_set(conf, forced[i][0], forced[i][1], errstr, errstr_size);
  }
  if (ok) {
    const char *user = eddy_config_kafka(cfg, "session.timeout.ms");
    if (user && strcmp(user, QUEUED_OFFSET_FETCH_MS))
      EDDY_INFO(LOG_MOD,
                "kafka.session.timeout.ms = %s not used by ingest, which joins no group (%s ms "
                "bounds the wait for queued offset lookups at exit)",
                user, QUEUED_OFFSET_FETCH_MS);
    ok = conf_set(conf, "session.timeout.ms", QUEUED_OFFSET_FETCH_MS, errstr, errstr_size);
  }
  if (ok && !eddy_config_kafka(cfg, "auto.offset.reset"))
    ok = conf_set(conf, "auto.offset.reset", "earliest", errstr, errstr_size);
  if (ok && !eddy_config_kafka(cfg, "client.id"))
    ok = conf_set(conf, "client.id", "eddy-ingest", errstr, errstr_size);
  if (!ok) {
    rd_kafka_conf_destroy(conf);
    return NULL;
  }
  rd_kafka_conf_set_opaque(conf, ing);
  rd_kafka_conf_set_log_cb(conf, log_cb);
  rd_kafka_conf_set_error_cb(conf, error_cb);
  return conf;
}

static bool dlq_open(eddy_ingest_t *ing, const eddy_config_t *cfg, char *errstr,
                     size_t errstr_size) {
  if (!cfg->dlq_topic[0]) return true;
  ing->dlq_topic = strdup(cfg->dlq_topic);
  if (!ing->dlq_topic) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "dead-letter producer: out of memory");
    return false;
  }
  rd_kafka_conf_t *conf = eddy_kafka_conf_new(cfg, errstr, errstr_size);
  if (!conf) return false;
  rd_kafka_conf_set_opaque(conf, ing);
  rd_kafka_conf_set_dr_msg_cb(conf, dlq_dr_cb);
  rd_kafka_conf_set_log_cb(conf, dlq_log_cb);
  char why[512];
  ing->dlq = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
  if (!ing->dlq) {
    rd_kafka_conf_destroy(conf);
    eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size, "dead-letter producer for %s: %s",
              cfg->dlq_topic, why);
    return false;
  }
  return true;
}

eddy_ingest_t *eddy_ingest_new(const eddy_config_t *cfg, eddy_replay_t *buffer,
                               const eddy_ingest_opts_t *opts, eddy_registry_t *metrics,
                               char *errstr, size_t errstr_size) {
  if (!cfg || !buffer) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "ingest: config and buffer are required");
    return NULL;
  }
  if (!eddy_config_kafka(cfg, "bootstrap.servers") &&
      !eddy_config_kafka(cfg, "metadata.broker.list")) {
    eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size,
              "ingest: kafka.bootstrap.servers is not set (set it in [kafka] or with --set)");
    return NULL;
  }
  if (!cfg->topic[0]) {
    eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "ingest: stream.topic is empty");
    return NULL;
  }
  eddy_ingest_t *ing = calloc(1, sizeof *ing);
  if (!ing) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "ingest: out of memory");
    return NULL;
  }
  pthread_mutex_init(&ing->stats_lock, NULL);
  ing->stats.lag = -1;
  ing->start_ms = eddy_clock_mono_ms();
  ing->buffer = buffer;
  snprintf(ing->topic, sizeof ing->topic, "%s", cfg->topic);
  ing->schema = eddy_model_event_schema(&cfg->spec);
  ing->schema.max_bytes = cfg->max_event_bytes;
  if (opts) ing->opts = *opts;
  ing->ranks = ing->opts.ranks ? ing->opts.ranks : 1;
  ing->rank = ing->opts.rank;
  if (ing->rank >= ing->ranks) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "ingest: rank %u is not below ranks %u",
              ing->rank, ing->ranks);
    eddy_ingest_destroy(ing);
    return NULL;
  }
  if (!ing->opts.max_batch) ing->opts.max_batch = 1000;
  if (!ing->opts.max_batch_bytes) ing->opts.max_batch_bytes = 16u << 20;
  if (ing->opts.linger_ms <= 0) ing->opts.linger_ms = 100;
  if (ing->opts.retry_min_ms <= 0) ing->opts.retry_min_ms = 1000;
  if (ing->opts.retry_max_ms < ing->opts.retry_min_ms)
    ing->opts.retry_max_ms = ing->opts.retry_min_ms > 30000 ? ing->opts.retry_min_ms : 30000;
  ing->batch_limit = ing->opts.max_batch;

  size_t n = ing->opts.max_batch;
  ing->msgs = calloc(n, sizeof *ing->msgs);
  ing->events = calloc(n, sizeof *ing->events);
  ing->event_ptrs = calloc(n, sizeof *ing->event_ptrs);
  ing->dls = calloc(n, sizeof *ing->dls);
  ing->dl_text = calloc(n, sizeof *ing->dl_text);
  ing->offsets = calloc(n, sizeof *ing->offsets); /* partitions in a batch <= messages */
  if (!ing->msgs || !ing->events || !ing->event_ptrs || !ing->dls || !ing->dl_text ||
      !ing->offsets) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "ingest: out of memory for a batch of %zu", n);
    eddy_ingest_destroy(ing);
    return NULL;
  }
  for (size_t i = 0; i < n; i++) eddy_event_init(&ing->events[i]);

  if (register_metrics(ing, metrics, errstr, errstr_size) != EDDY_OK ||
      !dlq_open(ing, cfg, errstr, errstr_size)) {
    eddy_ingest_destroy(ing);
    return NULL;
  }
  rd_kafka_conf_t *conf = consumer_conf(ing, cfg, errstr, errstr_size);
  if (!conf) {
    eddy_ingest_destroy(ing);
    return NULL;
  }
  char why[512];
  ing->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
  if (!ing->rk) {
    rd_kafka_conf_destroy(conf);
    eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size, "ingest: Kafka consumer: %s", why);
    eddy_ingest_destroy(ing);
    return NULL;
  }
  rd_kafka_poll_set_consumer(ing->rk);
  ing->commit_q = rd_kafka_queue_new(ing->rk);
  ing->commit_opts =
      rd_kafka_AdminOptions_new(ing->rk, RD_KAFKA_ADMIN_OP_ALTERCONSUMERGROUPOFFSETS);
  if (!ing->commit_q || !ing->commit_opts ||
      rd_kafka_AdminOptions_set_request_timeout(ing->commit_opts, COMMIT_TIMEOUT_MS, why,
                                                sizeof why)) {
    eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size, "ingest: offset commit setup: %s",
              ing->commit_opts ? why : "out of memory");
    eddy_ingest_destroy(ing);
    return NULL;
  }
  ing->watch_err = RD_KAFKA_RESP_ERR__IN_PROGRESS;
  if (!(ing->watch = eddy_topic_watch_new(ing->rk, cfg->topic, EDDY_TOPIC_WATCH_EVERY_MS, errstr,
                                          errstr_size))) {
    eddy_ingest_destroy(ing);
    return NULL;
  }
  refresh_buffer_metrics(ing);
  EDDY_INFO(LOG_MOD,
            "consuming %s as rank %u of %u (the partitions p with p mod %u = %u); offsets "
            "committed to group %s for lag tools",
            cfg->topic, ing->rank, ing->ranks, ing->ranks, ing->rank, ing->group);
  return ing;
}

void eddy_ingest_destroy(eddy_ingest_t *ing) {
  if (!ing) return;
  if (ing->rk) {
    pending_drop(ing); /* nothing is in flight between polls; a fatal error may leave some */
    commit_final(ing); /* reads the watch */
  }
  eddy_topic_watch_destroy(ing->watch);
  ing->watch = NULL; /* the close below may still serve error_cb */
  if (ing->commit_q) rd_kafka_queue_destroy(ing->commit_q);
  if (ing->commit_opts) rd_kafka_AdminOptions_destroy(ing->commit_opts);
  if (ing->rk) {
    rd_kafka_consumer_close(ing->rk);
    rd_kafka_destroy(ing->rk);
  }
  parts_clear(ing); /* also removes the lag series */
  if (ing->dlq) {
    if (rd_kafka_flush(ing->dlq, DLQ_FLUSH_MS) != RD_KAFKA_RESP_ERR_NO_ERROR)
      EDDY_WARN(LOG_MOD, "dead-letter topic %s: %d messages not delivered at exit", ing->dlq_topic,
                rd_kafka_outq_len(ing->dlq));
    rd_kafka_destroy(ing->dlq);
  }
  free(ing->parts);
  if (ing->events)
    for (size_t i = 0; i < ing->opts.max_batch; i++) eddy_event_free(&ing->events[i]);
  free(ing->events);
  free(ing->event_ptrs);
  free(ing->msgs);
  free(ing->dls);
  free(ing->dl_text);
  free(ing->offsets);
  free(ing->dlq_topic);
  pthread_mutex_destroy(&ing->stats_lock);
  free(ing);
}

/* ---- polling ---- */

/* Updates the lag of every assigned partition from the cached high watermarks. */
static void refresh_lag(eddy_ingest_t *ing) {
  int64_t total = 0;
  /* A rank that owns none of the topic's partitions (more ranks than partitions) has nothing to
   * read: it is caught up, with no lag. */
  const bool none_owned = ing->n_parts == 0 && ing->topic_parts > 0;
  bool known = ing->n_parts > 0 || none_owned;
  for (size_t i = 0; i < ing->n_parts; i++) {
    part_t *p = &ing->parts[i];
    int64_t lo, hi;
    int64_t pos = p->stored >= 0 ? p->stored : p->floor;
    if (rd_kafka_get_watermark_offsets(ing->rk, p->topic, p->partition, &lo, &hi) ||
        hi == RD_KAFKA_OFFSET_INVALID || pos < 0) {
      known = false;
      continue;
    }
    int64_t lag = hi > pos ? hi - pos : 0;
    eddy_series_set(p->lag, (double)lag);
    total += lag;
  }
  bool caught_up = (ing->n_parts > 0 || none_owned) && !ing->paused && ing->n_msgs == 0;
  for (size_t i = 0; caught_up && i < ing->n_parts; i++) caught_up = ing->parts[i].eof;
  STATS_UPDATE(ing, ing->stats.lag = known ? total : -1; ing->stats.caught_up = caught_up);
}

/* A consumer error event: EOF marks the partition read to its end; others are logged (rate
 * limited) and counted, as librdkafka retries them; a fatal error stops ingest. */
static void handle_error(eddy_ingest_t *ing, rd_kafka_message_t *msg) {
  if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
    part_t *p = msg->rkt ? part_find(ing, rd_kafka_topic_name(msg->rkt), msg->partition) : NULL;
    int64_t expect = p ? (p->pending_next >= 0 ? p->pending_next : p->stored) : -1;
    if (p && (expect < 0 || msg->offset >= expect)) p->eof = true;
    return;
  }
  if (msg->err == RD_KAFKA_RESP_ERR__FATAL) {
    char why[256];
    rd_kafka_fatal_error(ing->rk, why, sizeof why);
    set_fatal(ing, EDDY_ERR_BACKEND, "Kafka consumer fatal error: %s", why);
    return;
  }
  STATS_UPDATE(ing, ing->stats.kafka_errors++);
  eddy_series_add(ing->m.kafka_errors, 1);
  if (warn_due(ing, WARN_KAFKA))
    EDDY_WARN(LOG_MOD, "Kafka: %s%s%s (retrying)", rd_kafka_message_errstr(msg),
              msg->rkt ? " on " : "", msg->rkt ? rd_kafka_topic_name(msg->rkt) : "");
}

/* Classifies one polled message: stale/duplicate (dropped), or into the in-flight batch. */
static void take_message(eddy_ingest_t *ing, rd_kafka_message_t *msg) {
  const char *topic = rd_kafka_topic_name(msg->rkt);
  part_t *p = part_find(ing, topic, msg->partition);
  if (!p) { /* not assigned (any more): its owner reads it from the stored offset */
    rd_kafka_message_destroy(msg);
    return;
  }
  if (ing->paused) { /* re-read after the rewind that precedes resuming */
    if (p->floor < 0) p->floor = msg->offset;
    rd_kafka_message_destroy(msg);
    return;
  }
  int64_t expect = p->pending_next >= 0 ? p->pending_next : p->stored;
  if (expect >= 0 && msg->offset < expect) {
    STATS_UPDATE(ing, ing->stats.skipped++);
    eddy_series_add(ing->m.skipped, 1);
    if (warn_due(ing, WARN_SKIP))
      EDDY_WARN(LOG_MOD,
                "%s [%" PRId32 "] offset %" PRId64 " is below the next expected %" PRId64
                ": already stored, not stored again",
                topic, msg->partition, msg->offset, expect);
    rd_kafka_message_destroy(msg);
    return;
  }
  if (p->floor < 0) p->floor = msg->offset;
  pending_add(ing, p, msg);
}

eddy_err_t eddy_ingest_poll_once(eddy_ingest_t *ing, int timeout_ms, size_t *consumed, char *errstr,
                                 size_t errstr_size) {
  if (consumed) *consumed = 0;
  if (!ing) return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "ingest: NULL");
  if (ing->fatal) return eddy_errf(ing->fatal, errstr, errstr_size, "%s", ing->fatal_msg);
  if (timeout_ms < 0) timeout_ms = 0;
  int64_t start = eddy_clock_mono_ms(), deadline = start + timeout_ms, batch_deadline = 0;

  if (ing->paused && start >= ing->retry_at_ms) backpressure_retry(ing);

  for (;;) {
    if (ing->n_msgs == 0) assign_new(ing);
    if (ing->fatal) break;
    int64_t t = eddy_clock_mono_ms();
    if (ing->paused && t >= ing->retry_at_ms) break;
    int64_t until = ing->n_msgs ? batch_deadline : deadline;
    if (ing->paused && ing->retry_at_ms < until) until = ing->retry_at_ms;
    int wait = until > t ? (int)(until - t) : 0;
    if (wait > ASSIGN_CHECK_MS) wait = ASSIGN_CHECK_MS;
    rd_kafka_message_t *msg = rd_kafka_consumer_poll(ing->rk, wait);
    if (ing->fatal) {
      if (msg) rd_kafka_message_destroy(msg);
      break;
    }
    if (msg) {
      if (!msg->err || msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
        ing->up_ms = eddy_clock_mono_ms();
      if (msg->err) {
        handle_error(ing, msg);
        rd_kafka_message_destroy(msg);
      } else {
        bool first = ing->n_msgs == 0;
        take_message(ing, msg);
        STATS_UPDATE(ing, ing->stats.last_message_ms = eddy_clock_mono_ms());
        if (first && ing->n_msgs) batch_deadline = eddy_clock_mono_ms() + ing->opts.linger_ms;
        if (ing->n_msgs >= ing->batch_limit || ing->pending_bytes >= ing->opts.max_batch_bytes)
          break;
      }
    }
    if (!msg && wait == 0) break;
    if (atomic_load(&ing->stop)) break; /* the batch so far is stored below */
    t = eddy_clock_mono_ms();
    if (ing->n_msgs ? t >= batch_deadline : t >= deadline) break;
  }
  if (ing->fatal) {
    pending_drop(ing);
    return eddy_errf(ing->fatal, errstr, errstr_size, "%s", ing->fatal_msg);
  }
  size_t stored = 0;
  eddy_err_t err = pending_flush(ing, &stored, errstr, errstr_size);
  if (consumed) *consumed = stored;
  if (err) {
    ing->fatal = err;
    snprintf(ing->fatal_msg, sizeof ing->fatal_msg, "%s", errstr ? errstr : "buffer append failed");
    return err;
  }
  if (ing->dlq) rd_kafka_poll(ing->dlq, 0);
  int64_t t = eddy_clock_mono_ms();
  commit_check(ing);
  if (t - ing->last_commit_ms >= COMMIT_EVERY_MS && kafka_reachable(ing)) commit_stored(ing);
  if (t - ing->last_lag_ms >= LAG_EVERY_MS || stored == 0) {
    ing->last_lag_ms = t;
    refresh_lag(ing);
  }
  return EDDY_OK;
}

eddy_err_t eddy_ingest_run(eddy_ingest_t *ing, volatile sig_atomic_t *stop, char *errstr,
                           size_t errstr_size) {
  if (!ing) return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "ingest: NULL");
  while (!(stop && *stop) && !atomic_load(&ing->stop)) {
    eddy_err_t err = eddy_ingest_poll_once(ing, 500, NULL, errstr, errstr_size);
    if (err) return err;
  }
  return EDDY_OK;
}

void eddy_ingest_stop(eddy_ingest_t *ing) {
  if (ing) atomic_store(&ing->stop, 1);
}

eddy_ingest_stats_t eddy_ingest_stats(eddy_ingest_t *ing) {
  eddy_ingest_stats_t st = {.lag = -1};
  if (!ing) return st;
  pthread_mutex_lock(&ing->stats_lock);
  st = ing->stats;
  pthread_mutex_unlock(&ing->stats_lock);
  return st;
}

const char *eddy_ingest_group(const eddy_ingest_t *ing) { return ing ? ing->group : ""; }
