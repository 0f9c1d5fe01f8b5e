/* Producer on librdkafka: [kafka] properties from the config, a delivery-report callback that
 * counts every message as delivered or failed, and back-pressure on a full queue by polling.
 * Delivery reports run on the calling thread inside poll/flush/send, so counters need no lock. */
#include "stream/producer.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "stream/kafka_conf_internal.h"

#define FIRST_ERROR_MAX 512

struct eddy_producer {
  rd_kafka_t *rk;
  eddy_producer_stats_t stats;
  char first_error[FIRST_ERROR_MAX];
  volatile sig_atomic_t interrupted;
  bool brokers_down; /* every broker reported down, no delivery since */
};

static void producer_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque) {
  (void)rk;
  eddy_producer_t *p = opaque;
  if (!msg->err) {
    p->stats.delivered++;
    p->brokers_down = false;
    return;
  }
  p->stats.failed++;
  if (!p->first_error[0])
    snprintf(p->first_error, sizeof p->first_error, "topic %s [%d]: %s",
             rd_kafka_topic_name(msg->rkt), (int)msg->partition, rd_kafka_err2str(msg->err));
}

static void producer_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
  (void)rk;
  eddy_log_level_t lvl = level <= 2   ? EDDY_LOG_ERROR
                         : level <= 4 ? EDDY_LOG_WARN
                         : level <= 6 ? EDDY_LOG_INFO
                                      : EDDY_LOG_DEBUG;
  eddy_log(lvl, "producer", "librdkafka %s: %s", fac, buf);
}

/* Client-level errors. librdkafka has already logged transport failures (FAIL lines), so only
 * fatal errors and "all brokers down" are worth repeating at a visible level. */
static void producer_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
  (void)rk;
  eddy_producer_t *p = opaque;
  if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) p->brokers_down = true;
  eddy_log_level_t lvl = err == RD_KAFKA_RESP_ERR__FATAL             ? EDDY_LOG_ERROR
                         : err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN ? EDDY_LOG_WARN
                                                                      : EDDY_LOG_DEBUG;
  eddy_log(lvl, "producer", "librdkafka error: %s", reason);
}

eddy_producer_t *eddy_producer_new(const eddy_config_t *cfg, const char *bootstrap, char *errstr,
                                   size_t errstr_size) {
  eddy_config_t defaults;
  bool own_defaults = false;
  if (!cfg) {
    eddy_config_defaults(&defaults);
    cfg = &defaults;
    own_defaults = true;
  }
  if ((!bootstrap || !bootstrap[0]) && !eddy_config_kafka(cfg, "bootstrap.servers")) {
    eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size,
              "producer: no bootstrap servers (set kafka.bootstrap.servers or pass one)");
    if (own_defaults) eddy_config_free(&defaults);
    return NULL;
  }
  rd_kafka_conf_t *conf = eddy_kafka_conf_new(cfg, errstr, errstr_size);
  if (own_defaults) eddy_config_free(&defaults);
  if (!conf) return NULL;

  eddy_producer_t *p = calloc(1, sizeof *p);
  if (!p) {
    rd_kafka_conf_destroy(conf);
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "producer: out of memory");
    return NULL;
  }
  char why[512];
  if (bootstrap && bootstrap[0] &&
      rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, why, sizeof why) !=
          RD_KAFKA_CONF_OK) {
    eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "producer: bootstrap \"%s\": %s", bootstrap,
              why);
    rd_kafka_conf_destroy(conf);
    free(p);
    return NULL;
  }
  rd_kafka_conf_set_dr_msg_cb(conf, producer_dr_cb);
  rd_kafka_conf_set_log_cb(conf, producer_log_cb);
  rd_kafka_conf_set_error_cb(conf, producer_error_cb);
  rd_kafka_conf_set_opaque(conf, p);
  p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
  if (!p->rk) {
    rd_kafka_conf_destroy(conf);
    eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size, "producer: rd_kafka_new: %s", why);
    free(p);
    return NULL;
  }
  return p;
}

void eddy_producer_destroy(eddy_producer_t *p) {
  if (!p) return;
  /* Messages still queued get failed delivery reports inside rd_kafka_destroy; none is lost
   * silently for a caller that flushed first. */
  rd_kafka_destroy(p->rk);
  free(p);
}

eddy_err_t eddy_producer_send(eddy_producer_t *p, const char *topic, int32_t partition,
                              const void *key, size_t key_len, const void *value, size_t len,
                              char *errstr, size_t errstr_size) {
  if (!p || !topic || !topic[0] || (!value && len > 0) || (!key && key_len > 0))
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "producer: bad arguments");
  if (len > EDDY_PRODUCER_MAX_VALUE)
    return eddy_errf(EDDY_ERR_TOO_LARGE, errstr, errstr_size,
                     "producer: message of %zu bytes is too large (cap %u)", len,
                     EDDY_PRODUCER_MAX_VALUE);
  if (key_len > EDDY_PRODUCER_MAX_KEY)
    return eddy_errf(EDDY_ERR_TOO_LARGE, errstr, errstr_size,
                     "producer: key of %zu bytes is too large (cap %u)", key_len,
                     EDDY_PRODUCER_MAX_KEY);
  for (;;) {
    if (p->interrupted)
      return eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "producer: interrupted");
    rd_kafka_resp_err_t err = rd_kafka_producev(
        p->rk, RD_KAFKA_V_TOPIC(topic),
        RD_KAFKA_V_PARTITION(partition < 0 ? RD_KAFKA_PARTITION_UA : partition),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY((void *)key, key_len),
        RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_END);
    if (!err) {
      p->stats.sent++;
      rd_kafka_poll(p->rk, 0);
      return EDDY_OK;
    }
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      rd_kafka_poll(p->rk, 100);
      continue;
    }
    if (err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE)
      return eddy_errf(EDDY_ERR_TOO_LARGE, errstr, errstr_size,
                       "producer: topic %s: message of %zu bytes: %s", topic, len,
                       rd_kafka_err2str(err));
    return eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size, "producer: topic %s partition %d: %s",
                     topic, (int)partition, rd_kafka_err2str(err));
  }
}

void eddy_producer_poll(eddy_producer_t *p, int timeout_ms) {
  if (p) rd_kafka_poll(p->rk, timeout_ms);
}

eddy_err_t eddy_producer_flush(eddy_producer_t *p, int timeout_ms, char *errstr,
                               size_t errstr_size) {
  if (!p) return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "producer: NULL producer");
  rd_kafka_resp_err_t err = rd_kafka_flush(p->rk, timeout_ms);
  /* Serve delivery reports that arrived with the last acknowledgements. */
  rd_kafka_poll(p->rk, 0);
  if (err == RD_KAFKA_RESP_ERR__TIMED_OUT || rd_kafka_outq_len(p->rk) > 0)
    return eddy_errf(EDDY_ERR_STATE, errstr, errstr_size,
                     "producer: flush timed out after %d ms with %d messages or requests "
                     "outstanding",
                     timeout_ms, rd_kafka_outq_len(p->rk));
  return EDDY_OK;
}

eddy_producer_stats_t eddy_producer_stats(const eddy_producer_t *p) {
  eddy_producer_stats_t none = {0};
  return p ? p->stats : none;
}

bool eddy_producer_brokers_down(const eddy_producer_t *p) { return p && p->brokers_down; }

const char *eddy_producer_first_error(const eddy_producer_t *p) {
  return p ? p->first_error : "";
}

void eddy_producer_interrupt(eddy_producer_t *p) {
  if (p) p->interrupted = 1;
}
