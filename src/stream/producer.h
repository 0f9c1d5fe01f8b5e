/* Kafka producer for eddy: `eddy produce`, snapshot announcements and the dead-letter topic.
 * Messages are copied on send; a full local queue is waited out by serving delivery reports,
 * never by dropping. Every delivery report is counted as delivered or failed, so a caller that
 * flushes knows whether everything it sent was acknowledged. Not thread-safe: one thread sends,
 * polls and flushes. No librdkafka types here. */
#ifndef EDDY_PRODUCER_H
#define EDDY_PRODUCER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/errors.h"

typedef struct eddy_producer eddy_producer_t;

/* Largest key and value eddy_producer_send accepts (librdkafka's message.max.bytes also applies). */
#define EDDY_PRODUCER_MAX_VALUE (64u * 1024 * 1024)
#define EDDY_PRODUCER_MAX_KEY (64u * 1024)

typedef struct {
  uint64_t sent;      /* accepted by eddy_producer_send */
  uint64_t delivered; /* acknowledged by the broker */
  uint64_t failed;    /* delivery report with an error */
} eddy_producer_stats_t;

/* New producer from cfg's [kafka] list (cfg NULL: librdkafka defaults), with bootstrap.servers
 * replaced by bootstrap when it is non-NULL. NULL + errstr on a rejected property ("ORIGIN:
 * kafka.KEY = "VALUE": reason"), a missing bootstrap.servers, or when librdkafka fails. */
eddy_producer_t *eddy_producer_new(const eddy_config_t *cfg, const char *bootstrap, char *errstr,
                                   size_t errstr_size);

/* Destroys the producer without waiting for outstanding messages (flush first to wait).
 * NULL is a no-op. */
void eddy_producer_destroy(eddy_producer_t *p);

/* Queues one message for topic (partition -1: the partitioner chooses, by key when there is one).
 * key may be NULL. Both are copied. When the local queue is full, serves delivery reports until
 * there is room. EDDY_ERR_TOO_LARGE over the caps; EDDY_ERR_STATE after eddy_producer_interrupt;
 * EDDY_ERR_BACKEND with librdkafka's reason for anything else (unknown partition, ...). */
eddy_err_t eddy_producer_send(eddy_producer_t *p, const char *topic, int32_t partition,
                              const void *key, size_t key_len, const void *value, size_t len,
                              char *errstr, size_t errstr_size);

/* Serves delivery reports, waiting up to timeout_ms for the first one. */
void eddy_producer_poll(eddy_producer_t *p, int timeout_ms);

/* Waits up to timeout_ms for every queued message to be delivered or to fail. EDDY_OK when none
 * is left outstanding (some may have failed: see stats); EDDY_ERR_STATE with a count in errstr
 * when the time ran out. */
eddy_err_t eddy_producer_flush(eddy_producer_t *p, int timeout_ms, char *errstr,
                               size_t errstr_size);

/* Counts so far. */
eddy_producer_stats_t eddy_producer_stats(const eddy_producer_t *p);

/* True after librdkafka reported every broker down (reports are served by poll, flush and send)
 * and before the next message was delivered: a flush now would only wait out its timeout. */
bool eddy_producer_brokers_down(const eddy_producer_t *p);

/* The first delivery error seen ("topic t1 [2]: Local: Message timed out"), or "" if none. */
const char *eddy_producer_first_error(const eddy_producer_t *p);

/* Makes a send that waits for queue room return EDDY_ERR_STATE. Async-signal-safe: only sets a
 * flag, so a SIGINT handler may call it. */
void eddy_producer_interrupt(eddy_producer_t *p);

#endif
