/* Follows a Kafka topic from its newest message on: a consumer that assigns itself every partition
 * of the topic (new ones found within seconds), each at the last message already there (so a new
 * or restarted follower sees the latest announcement at once), and then reads everything after it.
 * It joins no consumer group, so it reads within a second of its start whatever the broker's
 * session timeouts, and commits nothing. Used by replicas to follow snapshot announcements (every
 * replica reads every announcement); carries no librdkafka types. */
#ifndef EDDY_FOLLOWER_H
#define EDDY_FOLLOWER_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/errors.h"

#define EDDY_FOLLOWER_MAX_VALUE (4u << 20) /* larger messages are skipped with a log line */

typedef struct eddy_follower eddy_follower_t;

/* librdkafka's consumer API needs a group.id: the follower sets this one whatever cfg says (cfg's
 * group.id names the trainer's group), never joins it and commits nothing to it. */
#define EDDY_FOLLOWER_GROUP "eddy-follower"

/* Follows topic with cfg's [kafka] properties; the topic's partitions are looked up at once and
 * every 3 s after. NULL + errstr on a rejected property or when librdkafka cannot start. */
eddy_follower_t *eddy_follower_new(const eddy_config_t *cfg, const char *topic, char *errstr,
                                   size_t errstr_size);
void eddy_follower_destroy(eddy_follower_t *f); /* closes the consumer; NULL is a no-op */

typedef struct {
  char *key, *value;      /* NUL-terminated copies (malloc'ed: eddy_follower_msg_free) */
  size_t key_len, value_len;
  int64_t timestamp_ms;   /* the message's timestamp (create time), -1 when it has none */
  int32_t partition;
  int64_t offset;
} eddy_follower_msg_t;

/* Assigns the partitions found since the last call, then waits up to timeout_ms (200 ms at most)
 * for the next message: 1 with *msg filled, 0 on timeout (or a consumer event that was handled),
 * -1 with errstr on a Kafka error worth a log line (the follower keeps going). */
int eddy_follower_poll(eddy_follower_t *f, int timeout_ms, eddy_follower_msg_t *msg, char *errstr,
                       size_t errstr_size);
void eddy_follower_msg_free(eddy_follower_msg_t *msg);

#endif
