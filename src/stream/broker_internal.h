/* The librdkafka mock cluster behind an eddy_broker_t, for tests that need fault injection beyond
 * broker.h (rd_kafka_mock_partition_set_leader, rd_kafka_mock_broker_push_request_error_rtts, ...).
 * Includes librdkafka headers: for src/stream and tests only. */
#ifndef EDDY_BROKER_INTERNAL_H
#define EDDY_BROKER_INTERNAL_H

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "stream/broker.h"

/* The broker's mock cluster; owned by the broker, valid until eddy_broker_destroy. */
rd_kafka_mock_cluster_t *eddy_broker_mock(eddy_broker_t *broker);

#endif
