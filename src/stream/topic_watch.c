/* The partition count of one topic (see topic_watch_internal.h): one thread, one metadata request
 * for the topic at a time, the count published under a mutex. The count only grows: Kafka cannot
 * take partitions away from a topic, and a shorter answer (a topic deleted and created again) must
 * not make a consumer forget partitions it reads. */
#include "stream/topic_watch_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/errors.h"

#define METADATA_TIMEOUT_MS 1000
#define NO_BROKER_WAIT_MS 200 /* the wait for a usable broker after none was: keeps destroy prompt */
#define RETRY_MS 500

struct eddy_topic_watch {
  rd_kafka_t *rk;
  rd_kafka_topic_t *rkt;
  int every_ms;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t wake;
  bool stop;
  int32_t partitions;
  rd_kafka_resp_err_t err;
  int64_t answered_ms;
  bool brokers_down; /* told so by the client's owner; cleared by the next answer */
};

/* One metadata request for the topic: its partition count, or 0 and the error. *answered: a broker
 * answered (the topic's own error aside). While no broker is up (the last ask got
 * RD_KAFKA_RESP_ERR__TRANSPORT, or the owner said so), rd_kafka_metadata waits for one for its
 * whole timeout, so that wait is kept short. */
static int32_t ask(eddy_topic_watch_t *w, bool no_broker, rd_kafka_resp_err_t *err,
                   bool *answered) {
  const struct rd_kafka_metadata *md = NULL;
  *err = rd_kafka_metadata(w->rk, 0, w->rkt, &md,
                           no_broker ? NO_BROKER_WAIT_MS : METADATA_TIMEOUT_MS);
  *answered = !*err;
  if (*err) return 0;
  int32_t n = 0;
  *err = RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
  for (int i = 0; i < md->topic_cnt; i++) {
    if (strcmp(md->topics[i].topic, rd_kafka_topic_name(w->rkt))) continue;
    *err = md->topics[i].err;
    if (!*err) n = md->topics[i].partition_cnt;
  }
  rd_kafka_metadata_destroy(md);
  return n;
}

static void *watch_main(void *arg) {
  eddy_topic_watch_t *w = arg;
  rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
  pthread_mutex_lock(&w->lock);
  while (!w->stop) {
    pthread_mutex_unlock(&w->lock);
    bool answered, no_broker = err == RD_KAFKA_RESP_ERR__TRANSPORT || w->brokers_down;
    int32_t n = ask(w, no_broker, &err, &answered);
    pthread_mutex_lock(&w->lock);
    w->err = err;
    if (answered) {
      w->answered_ms = eddy_clock_mono_ms();
      w->brokers_down = false;
    }
    if (n > w->partitions) w->partitions = n;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    int wait_ms = err ? RETRY_MS : w->every_ms;
    until.tv_sec += wait_ms / 1000;
    until.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000L;
    }
    while (!w->stop && pthread_cond_timedwait(&w->wake, &w->lock, &until) != ETIMEDOUT) {
    }
  }
  pthread_mutex_unlock(&w->lock);
  return NULL;
}

eddy_topic_watch_t *eddy_topic_watch_new(rd_kafka_t *rk, const char *topic, int every_ms,
                                         char *errstr, size_t errstr_size) {
  if (!rk || !topic || !topic[0] || every_ms <= 0) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
              "topic watch: a client, a topic and a period > 0 are required");
    return NULL;
  }
  eddy_topic_watch_t *w = calloc(1, sizeof *w);
  if (!w) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "topic watch of %s: out of memory", topic);
    return NULL;
  }
  w->rk = rk;
  w->every_ms = every_ms;
  w->err = RD_KAFKA_RESP_ERR__IN_PROGRESS;
  if (!(w->rkt = rd_kafka_topic_new(rk, topic, NULL))) {
    eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size, "topic watch of %s: %s", topic,
              rd_kafka_err2str(rd_kafka_last_error()));
    free(w);
    return NULL;
  }
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&w->wake, &attr);
  pthread_condattr_destroy(&attr);
  pthread_mutex_init(&w->lock, NULL);
  int rc = pthread_create(&w->thread, NULL, watch_main, w);
  if (rc) {
    eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size, "topic watch of %s: thread: %s", topic,
              strerror(rc));
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    rd_kafka_topic_destroy(w->rkt);
    free(w);
    return NULL;
  }
  return w;
}

void eddy_topic_watch_destroy(eddy_topic_watch_t *w) {
  if (!w) return;
  pthread_mutex_lock(&w->lock);
  w->stop = true;
  pthread_cond_signal(&w->wake);
  pthread_mutex_unlock(&w->lock);
  pthread_join(w->thread, NULL);
  pthread_cond_destroy(&w->wake);
  pthread_mutex_destroy(&w->lock);
  rd_kafka_topic_destroy(w->rkt);
  free(w);
}

int32_t eddy_topic_watch_partitions(eddy_topic_watch_t *w, rd_kafka_resp_err_t *err) {
  pthread_mutex_lock(&w->lock);
  int32_t n = w->partitions;
  if (err) *err = w->err;
  pthread_mutex_unlock(&w->lock);
  return n;
}

void eddy_topic_watch_brokers_down(eddy_topic_watch_t *w) {
  if (!w) return;
  pthread_mutex_lock(&w->lock);
  w->brokers_down = true;
  pthread_mutex_unlock(&w->lock);
}

int64_t eddy_topic_watch_answered_ms(eddy_topic_watch_t *w) {
  pthread_mutex_lock(&w->lock);
  int64_t t = w->answered_ms;
  pthread_mutex_unlock(&w->lock);
  return t;
}
