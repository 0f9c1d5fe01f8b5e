/* How many partitions a topic has, kept current by a thread that asks the cluster for the topic's
 * metadata every few seconds (sooner after a failed try). Consumers that assign their partitions
 * themselves (ingest, the announcement follower) find new partitions this way, without a consumer
 * group. For src/stream only: carries librdkafka types. */
#ifndef EDDY_TOPIC_WATCH_INTERNAL_H
#define EDDY_TOPIC_WATCH_INTERNAL_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

#define EDDY_TOPIC_WATCH_EVERY_MS 3000 /* metadata requests while all is well */

typedef struct eddy_topic_watch eddy_topic_watch_t;

/* Starts watching topic through rk, which is borrowed: destroy the watch before rk. The first
 * metadata request goes out at once, later ones every every_ms (> 0), or 500 ms after a request
 * that failed. NULL + errstr when out of memory or the thread cannot start. */
eddy_topic_watch_t *eddy_topic_watch_new(rd_kafka_t *rk, const char *topic, int every_ms,
                                         char *errstr, size_t errstr_size);

/* Stops the thread, waiting for a metadata request in flight (1 s at most; 200 ms while no broker
 * is reachable), and frees. NULL is a no-op. */
void eddy_topic_watch_destroy(eddy_topic_watch_t *watch);

/* The partition count of the last metadata answer that had the topic (0 before one came); it
 * never goes down. *err (optional) gets the last request's outcome: 0, the topic's error
 * (RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART while it does not exist) or the request's
 * (RD_KAFKA_RESP_ERR__TIMED_OUT, ...), or RD_KAFKA_RESP_ERR__IN_PROGRESS before the first request
 * ended. Any thread. */
int32_t eddy_topic_watch_partitions(eddy_topic_watch_t *watch, rd_kafka_resp_err_t *err);

/* Tells the watch that librdkafka reported every broker down (RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN):
 * until a broker answers, its requests wait 200 ms for a usable broker instead of 1 s, so that
 * destroy stays prompt. NULL is a no-op. Any thread. */
void eddy_topic_watch_brokers_down(eddy_topic_watch_t *watch);

/* CLOCK_MONOTONIC milliseconds (eddy_clock_mono_ms) of the last metadata answer from a broker,
 * whatever it said of the topic: the cluster was reachable then. 0 before the first. Any thread. */
int64_t eddy_topic_watch_answered_ms(eddy_topic_watch_t *watch);

#endif
