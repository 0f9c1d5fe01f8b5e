/* librdkafka configuration from eddy_config_t, for src/stream only (the consumer and producer);
 * other layers include kafka_conf.h, which carries no librdkafka types. */
#ifndef EDDY_KAFKA_CONF_INTERNAL_H
#define EDDY_KAFKA_CONF_INTERNAL_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "config/config.h"

/* New rd_kafka_conf_t holding librdkafka's defaults plus every [kafka] property of cfg, in order.
 * The caller owns the result (rd_kafka_conf_destroy, or hand it to rd_kafka_new, which takes it
 * on success). NULL with errstr ("ORIGIN: kafka.KEY = "VALUE": reason") on a rejected property
 * or when librdkafka cannot allocate. Settings eddy derives itself (group.id "eddy-<model>")
 * are left to the caller: set them only when eddy_config_kafka(cfg, key) is NULL. */
rd_kafka_conf_t *eddy_kafka_conf_new(const eddy_config_t *cfg, char *errstr, size_t errstr_size);

#endif
