/* Embedded Kafka-protocol broker for the demo, tests and a first try: librdkafka's mock cluster,
 * listening on 127.0.0.1 only, in memory only. Each partition keeps only its newest ~5 MB of
 * message sets (librdkafka 2.0.2 drops older ones; see docs/broker.md for the measured count), so
 * producers must not run far ahead of consumers. No librdkafka types here; fault injection on the
 * underlying mock cluster is reached through broker_internal.h. */
#ifndef EDDY_BROKER_H
#define EDDY_BROKER_H

#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"

typedef struct eddy_broker eddy_broker_t;

#define EDDY_BROKER_MAX_BROKERS 16

/* Partition count the mock cluster gives a topic that a client auto-creates (librdkafka 2.0.2). */
#define EDDY_BROKER_AUTO_PARTITIONS 4

/* Starts a mock cluster of n_brokers (1..EDDY_BROKER_MAX_BROKERS) brokers on loopback, broker
 * ids 1..n_brokers. port 0: the bootstrap address is the brokers' own ephemeral ports. port > 0:
 * the mock cluster cannot bind a chosen port, so a forwarder thread listens on 127.0.0.1:port and
 * relays each connection to broker 1; clients bootstrap there, then reach every broker at the
 * ephemeral address the cluster advertises in its metadata. NULL + errstr on failure (port taken,
 * librdkafka cannot create the cluster). */
eddy_broker_t *eddy_broker_new(int port, int n_brokers, char *errstr, size_t errstr_size);

/* Stops the forwarder, closes every connection and frees the cluster with all its messages.
 * NULL is a no-op. */
void eddy_broker_destroy(eddy_broker_t *broker);

/* Creates topic name with partitions partitions (1..100000). EDDY_ERR_INVALID_ARG for a bad name
 * or count; EDDY_ERR_BACKEND with librdkafka's reason otherwise (e.g. the topic exists). */
eddy_err_t eddy_broker_add_topic(eddy_broker_t *broker, const char *name, int partitions,
                                 char *errstr, size_t errstr_size);

/* Value for bootstrap.servers: "127.0.0.1:PORT[,127.0.0.1:PORT]...". Owned by the broker. */
const char *eddy_broker_bootstrap(const eddy_broker_t *broker);

/* Number of brokers in the cluster. */
int eddy_broker_count(const eddy_broker_t *broker);

/* Fault injection without librdkafka types. broker_id -1 means every broker.
 * set_down closes the broker's connections and refuses new ones (no leader change); set_up lets
 * it accept connections again. EDDY_ERR_INVALID_ARG for an unknown broker id. */
eddy_err_t eddy_broker_set_down(eddy_broker_t *broker, int32_t broker_id);
eddy_err_t eddy_broker_set_up(eddy_broker_t *broker, int32_t broker_id);

/* Delays every response of broker_id (-1: all) by rtt_ms milliseconds (0 clears). */
eddy_err_t eddy_broker_set_rtt(eddy_broker_t *broker, int32_t broker_id, int rtt_ms);

/* The next cnt requests of Kafka API api_key (0 Produce, 1 Fetch, 8 OffsetCommit, 9 OffsetFetch,
 * 11 JoinGroup, 14 SyncGroup, ...) fail with Kafka error code kafka_err (e.g. 6
 * NOT_LEADER_FOR_PARTITION, 15 COORDINATOR_NOT_AVAILABLE, 16 NOT_COORDINATOR, 27
 * REBALANCE_IN_PROGRESS). Same as rd_kafka_mock_push_request_errors with one repeated code. */
eddy_err_t eddy_broker_push_request_errors(eddy_broker_t *broker, int16_t api_key, size_t cnt,
                                           int kafka_err);

/* Applies one control command (a line of `eddy broker --control`), whitespace-separated:
 *   down BROKER | up BROKER        eddy_broker_set_down / set_up (BROKER: an id or "all")
 *   rtt BROKER MS                  eddy_broker_set_rtt (0..600000 ms; 0 clears)
 *   errors API COUNT ERROR         eddy_broker_push_request_errors: API a name (Produce, Fetch,
 *                                  ListOffsets, Metadata, OffsetCommit, OffsetFetch,
 *                                  FindCoordinator, JoinGroup, Heartbeat, LeaveGroup, SyncGroup,
 *                                  ApiVersions, InitProducerId) or a key; ERROR a Kafka error name
 *                                  as librdkafka spells it (NOT_LEADER_FOR_PARTITION) or a code
 * A blank line or one starting with '#' does nothing. EDDY_ERR_INVALID_ARG with the line and what
 * is wrong in errstr; the mock cluster's refusal as the error of the call made. */
eddy_err_t eddy_broker_control(eddy_broker_t *broker, const char *line, char *errstr,
                               size_t errstr_size);

#endif
