/* The announcement follower (see follower.h): every partition of the topic, found by a topic
 * watch, is assigned at its last message (RD_KAFKA_OFFSET_TAIL(1): the high watermark - 1, looked
 * up by librdkafka). No group is joined and nothing committed. */
#include "stream/follower.h"

#include <librdkafka/rdkafka.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "stream/kafka_conf_internal.h"
#include "stream/topic_watch_internal.h"

#define LOG_MOD "follow"
#define ASSIGN_CHECK_MS 200 /* longest consumer poll between looks at the topic watch */

struct eddy_follower {
  rd_kafka_t *rk;
  eddy_topic_watch_t *watch;
  int32_t topic_parts;           /* partitions assigned (0 .. topic_parts-1) */
  rd_kafka_resp_err_t watch_err; /* the watch's outcome last reported */
  char topic[EDDY_CONFIG_STR];
};

/* Assigns the partitions the watch found since the last look, each at its last message. 0, or -1
 * with errstr when the watch's outcome changed to an error or the assignment failed. */
static int assign_new(eddy_follower_t *f, char *errstr, size_t errstr_size) {
  rd_kafka_resp_err_t werr;
  int32_t n = eddy_topic_watch_partitions(f->watch, &werr);
  int rc = 0;
  if (werr != f->watch_err && werr != RD_KAFKA_RESP_ERR__IN_PROGRESS) {
    f->watch_err = werr;
    if (werr) {
      eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size, "follower: metadata of %s: %s (asking again)",
                f->topic, rd_kafka_err2str(werr));
      rc = -1;
    }
  }
  if (n <= f->topic_parts) return rc;
  rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(n - f->topic_parts);
  for (int32_t p = f->topic_parts; p < n; p++)
    rd_kafka_topic_partition_list_add(list, f->topic, p)->offset = RD_KAFKA_OFFSET_TAIL(1);
  rd_kafka_error_t *error = rd_kafka_incremental_assign(f->rk, list);
  if (error) {
    eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size, "follower: assigning %d partition(s) of %s: %s",
              list->cnt, f->topic, rd_kafka_error_string(error));
    rd_kafka_error_destroy(error);
    rc = -1;
  } else {
    EDDY_INFO(LOG_MOD, "following %d more partition(s) of %s (%d in all) from their last message",
              list->cnt, f->topic, n);
    f->topic_parts = n;
  }
  rd_kafka_topic_partition_list_destroy(list);
  return rc;
}

/* Client-wide errors, served inside eddy_follower_poll: logged (librdkafka would log them itself
 * without this callback) and retried by librdkafka; every broker down is also passed to the topic
 * watch (its requests then wait less, so that destroy stays prompt). */
static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
  (void)rk;
  eddy_follower_t *f = opaque;
  if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) eddy_topic_watch_brokers_down(f->watch);
  EDDY_WARN(LOG_MOD, "Kafka: %s", reason);
}

static int set(rd_kafka_conf_t *conf, const char *key, const char *value, char *errstr, size_t errstr_size) {
  char why[256];
  if (rd_kafka_conf_set(conf, key, value, why, sizeof why) == RD_KAFKA_CONF_OK) return 0;
  eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "follower: %s = \"%s\": %s", key, value, why);
  return -1;
}

eddy_follower_t *eddy_follower_new(const eddy_config_t *cfg, const char *topic, char *errstr,
                                   size_t errstr_size) {
  if (!cfg || !topic || !topic[0]) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "follower: a config and a topic are required");
    return NULL;
  }
  eddy_follower_t *f = calloc(1, sizeof *f);
  if (!f) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
    return NULL;
  }
  snprintf(f->topic, sizeof f->topic, "%s", topic);
  f->watch_err = RD_KAFKA_RESP_ERR__IN_PROGRESS;
  rd_kafka_conf_t *conf = eddy_kafka_conf_new(cfg, errstr, errstr_size);
  if (!conf) goto fail;
  /* librdkafka's consumer API needs a group.id even when the application assigns: this one is
   * never joined and nothing is committed to it. */
  if (set(conf, "group.id", EDDY_FOLLOWER_GROUP, errstr, errstr_size) ||
      set(conf, "enable.auto.commit", "false", errstr, errstr_size) ||
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
  rd_kafka_conf_set_opaque(conf, f);
  rd_kafka_conf_set_error_cb(conf, error_cb);
  char why[512];
  f->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
  if (!f->rk) {
    rd_kafka_conf_destroy(conf);
    eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size, "follower: rd_kafka_new: %s", why);
    goto fail;
  }
  rd_kafka_poll_set_consumer(f->rk);
  if (!(f->watch = eddy_topic_watch_new(f->rk, topic, EDDY_TOPIC_WATCH_EVERY_MS, errstr, errstr_size))) goto fail;
  return f;
fail:
  eddy_follower_destroy(f);
  return NULL;
}

void eddy_follower_destroy(eddy_follower_t *f) {
  if (!f) return;
  eddy_topic_watch_destroy(f->watch);
  f->watch = NULL; /* the close below may still serve error_cb */
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
  if (assign_new(f, errstr, errstr_size) < 0) return -1;
  int wait = timeout_ms < ASSIGN_CHECK_MS ? timeout_ms : ASSIGN_CHECK_MS;
  rd_kafka_message_t *m = rd_kafka_consumer_poll(f->rk, wait);
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
