/* The announcement follower (see follower.h): subscribe, and on each assignment start every
 * partition at its last message (RD_KAFKA_OFFSET_TAIL(1)); eager and cooperative rebalancing are
 * both handled. */
#include "stream/follower.h"

#include <librdkafka/rdkafka.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "stream/kafka_conf_internal.h"

#define LOG_MOD "follow"

struct eddy_follower {
  rd_kafka_t *rk;
  char topic[EDDY_CONFIG_STR];
};

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                         void *opaque) {
  (void)opaque;
  const int cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    for (int i = 0; i < parts->cnt; i++) parts->elems[i].offset = RD_KAFKA_OFFSET_TAIL(1);
    if (cooperative) {
      rd_kafka_error_t *e = rd_kafka_incremental_assign(rk, parts);
      if (e) {
        EDDY_WARN(LOG_MOD, "assign: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
      }
    } else {
      rd_kafka_resp_err_t r = rd_kafka_assign(rk, parts);
      if (r) EDDY_WARN(LOG_MOD, "assign: %s", rd_kafka_err2str(r));
    }
    EDDY_INFO(LOG_MOD, "following %d partition(s) from their last message", parts->cnt);
  } else {
    if (cooperative) {
      rd_kafka_error_t *e = rd_kafka_incremental_unassign(rk, parts);
      if (e) rd_kafka_error_destroy(e);
    } else {
      rd_kafka_assign(rk, NULL);
    }
  }
}

static int set(rd_kafka_conf_t *conf, const char *key, const char *value, char *errstr, size_t errstr_size) {
  char why[256];
  if (rd_kafka_conf_set(conf, key, value, why, sizeof why) == RD_KAFKA_CONF_OK) return 0;
  eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "follower: %s = \"%s\": %s", key, value, why);
  return -1;
}

eddy_follower_t *eddy_follower_new(const eddy_config_t *cfg, const char *topic, const char *group,
                                   char *errstr, size_t errstr_size) {
  if (!cfg || !topic || !topic[0] || !group || !group[0]) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "follower: a config, a topic and a group are required");
    return NULL;
  }
  eddy_follower_t *f = calloc(1, sizeof *f);
  if (!f) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
    return NULL;
  }
  snprintf(f->topic, sizeof f->topic, "%s", topic);
  rd_kafka_conf_t *conf = eddy_kafka_conf_new(cfg, errstr, errstr_size);
  if (!conf) goto fail;
  if (set(conf, "group.id", group, errstr, errstr_size) || set(conf, "enable.auto.commit", "false", errstr, errstr_size) ||
      set(conf, "enable.auto.offset.store", "false", errstr, errstr_size) ||
      set(conf, "auto.offset.reset", "latest", errstr, errstr_size)) {
    rd_kafka_conf_destroy(conf);
    goto fail;
  }
  /* Announcements are rare and latency matters (promotion to serving): do not let the broker hold
   * a fetch for librdkafka's default 500 ms, unless the config says otherwise. */
  if (!eddy_config_kafka(cfg, "fetch.wait.max.ms") && set(conf, "fetch.wait.max.ms", "50", errstr, errstr_size)) {
    rd_kafka_conf_destroy(conf);
    goto fail;
  }
  rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
  char why[512];
  f->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
  if (!f->rk) {
    rd_kafka_conf_destroy(conf);
    eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size, "follower: rd_kafka_new: %s", why);
    goto fail;
  }
  rd_kafka_poll_set_consumer(f->rk);
  rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(topics, topic, RD_KAFKA_PARTITION_UA);
  rd_kafka_resp_err_t err = rd_kafka_subscribe(f->rk, topics);
  rd_kafka_topic_partition_list_destroy(topics);
  if (err) {
    eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size, "follower: subscribe to %s: %s", topic, rd_kafka_err2str(err));
    goto fail;
  }
  return f;
fail:
  eddy_follower_destroy(f);
  return NULL;
}

void eddy_follower_destroy(eddy_follower_t *f) {
  if (!f) return;
  if (f->rk) {
    rd_kafka_consumer_close(f->rk);
    rd_kafka_destroy(f->rk);
  }
  free(f);
}

static char *copy(const void *p, size_t n) {
  char *s = malloc(n + 1);
  if (!s) return NULL;
  if (n) memcpy(s, p, n);
  s[n] = '\0';
  return s;
}

int eddy_follower_poll(eddy_follower_t *f, int timeout_ms, eddy_follower_msg_t *msg, char *errstr,
                       size_t errstr_size) {
  memset(msg, 0, sizeof *msg);
  rd_kafka_message_t *m = rd_kafka_consumer_poll(f->rk, timeout_ms);
  if (!m) return 0;
  int rc = 0;
  if (m->err) {
    if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size, "follower: %s: %s", f->topic, rd_kafka_message_errstr(m));
      rc = -1;
    }
  } else if (m->len > EDDY_FOLLOWER_MAX_VALUE) {
    eddy_errf(EDDY_ERR_TOO_LARGE, errstr, errstr_size, "follower: %s [%d] offset %lld: message of %zu bytes skipped (cap %u)",
              f->topic, (int)m->partition, (long long)m->offset, m->len, EDDY_FOLLOWER_MAX_VALUE);
    rc = -1;
  } else {
    msg->key = copy(m->key, m->key ? m->key_len : 0);
    msg->value = copy(m->payload, m->payload ? m->len : 0);
    if (!msg->key || !msg->value) {
      eddy_follower_msg_free(msg);
      eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
      rc = -1;
    } else {
      msg->key_len = m->key ? m->key_len : 0;
      msg->value_len = m->payload ? m->len : 0;
      rd_kafka_timestamp_type_t tt;
      msg->timestamp_ms = rd_kafka_message_timestamp(m, &tt);
      msg->partition = m->partition;
      msg->offset = m->offset;
      rc = 1;
    }
  }
  rd_kafka_message_destroy(m);
  return rc;
}

void eddy_follower_msg_free(eddy_follower_msg_t *msg) {
  if (!msg) return;
  free(msg->key);
  free(msg->value);
  msg->key = msg->value = NULL;
}
