/* [kafka] properties into an rd_kafka_conf_t. librdkafka is the authority on property names and
 * values, so nothing is checked here beyond what rd_kafka_conf_set() says; its message is kept
 * and prefixed with where the property was set. Secret values never reach a message. */
#include "stream/kafka_conf.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "stream/kafka_conf_internal.h"

/* True for properties whose values must not be echoed into logs or error messages. */
static bool kafka_key_is_secret(const char *key) {
  static const char *const parts[] = {"password", "secret", "jaas", "key.pem",
                                      "oauthbearer.config"};
  for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
    if (strstr(key, parts[i])) return true;
  return false;
}

rd_kafka_conf_t *eddy_kafka_conf_new(const eddy_config_t *cfg, char *errstr, size_t errstr_size) {
  if (!cfg) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "kafka config: cfg is NULL");
    return NULL;
  }
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  if (!conf) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "kafka config: rd_kafka_conf_new failed");
    return NULL;
  }
  for (size_t i = 0; i < cfg->n_kafka; i++) {
    const eddy_config_kv_t *kv = &cfg->kafka[i];
    char why[512];
    why[0] = '\0';
    if (rd_kafka_conf_set(conf, kv->key, kv->value, why, sizeof why) != RD_KAFKA_CONF_OK) {
      size_t n = strlen(why); /* some librdkafka messages end in a newline */
      while (n > 0 && (why[n - 1] == '\n' || why[n - 1] == '\r' || why[n - 1] == ' '))
        why[--n] = '\0';
      eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "%s: kafka.%s = \"%s\": %s", kv->origin,
                kv->key, kafka_key_is_secret(kv->key) ? "***" : kv->value,
                why[0] ? why : "rejected by librdkafka");
      rd_kafka_conf_destroy(conf);
      return NULL;
    }
  }
  return conf;
}

eddy_err_t eddy_kafka_conf_check(const eddy_config_t *cfg, char *errstr, size_t errstr_size) {
  rd_kafka_conf_t *conf = eddy_kafka_conf_new(cfg, errstr, errstr_size);
  if (!conf) return !cfg ? EDDY_ERR_INVALID_ARG : EDDY_ERR_CONFIG;
  rd_kafka_conf_destroy(conf);
  return EDDY_OK;
}
