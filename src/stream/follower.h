/* Follows a Kafka topic from its newest message on: a consumer in its own group that, on every
 * partition assigned, starts at the last message already there (so a new follower sees the latest
 * announcement at once) and then reads everything after it. Nothing is committed. Used by replicas
 * to follow snapshot announcements; carries no librdkafka types. */
#ifndef EDDY_FOLLOWER_H
#define EDDY_FOLLOWER_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/errors.h"

#define EDDY_FOLLOWER_MAX_VALUE (4u << 20) /* larger messages are skipped with a log line */

typedef struct eddy_follower eddy_follower_t;

/* Subscribes to topic with cfg's [kafka] properties and group.id = group (cfg's own group.id is
 * ignored: it names the trainer's ingest group). NULL + errstr on a rejected property or when
 * librdkafka cannot start. */
eddy_follower_t *eddy_follower_new(const eddy_config_t *cfg, const char *topic, const char *group,
                                   char *errstr, size_t errstr_size);
void eddy_follower_destroy(eddy_follower_t *f); /* closes the consumer; NULL is a no-op */

typedef struct {
  char *key, *value;      /* NUL-terminated copies (malloc'ed: eddy_follower_msg_free) */
  size_t key_len, value_len;
  int64_t timestamp_ms;   /* the message's timestamp (create time), -1 when it has none */
  int32_t partition;
  int64_t offset;
} eddy_follower_msg_t;

/* Waits up to timeout_ms for the next message: 1 with *msg filled, 0 on timeout (or a consumer
 * event that was handled, such as an assignment), -1 with errstr on a Kafka error worth a log line
 * (the follower keeps going). */
int eddy_follower_poll(eddy_follower_t *f, int timeout_ms, eddy_follower_msg_t *msg, char *errstr,
                       size_t errstr_size);
void eddy_follower_msg_free(eddy_follower_msg_t *msg);

#endif
