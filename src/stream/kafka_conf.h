/* The [kafka] config section as librdkafka configuration. Every property is handed to
 * rd_kafka_conf_set() in file order (a later setting of a key wins), so a typo or a bad value is
 * reported at startup with its origin: `x.ini:7: kafka.acks = "most": <librdkafka's message>`.
 * This header carries no librdkafka types; stream code uses kafka_conf_internal.h. */
#ifndef EDDY_KAFKA_CONF_H
#define EDDY_KAFKA_CONF_H

#include <stddef.h>

#include "config/config.h"
#include "core/errors.h"

/* Checks every [kafka] property of cfg against librdkafka (name known, value accepted).
 * EDDY_ERR_CONFIG with "ORIGIN: kafka.KEY = "VALUE": reason" in errstr on the first failure.
 * Values of secret-looking keys (password, secret, jaas, key.pem, oauthbearer.config) are shown
 * as "***". */
eddy_err_t eddy_kafka_conf_check(const eddy_config_t *cfg, char *errstr, size_t errstr_size);

#endif
