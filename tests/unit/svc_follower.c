/* The announcement follower against the embedded broker: it starts every partition at its last
 * message (older ones are never read) and then reads each new one; a follower started again after
 * its predecessor was dropped without a goodbye reads the latest message within 2 s (no group
 * session to wait out) and two followers both read every message; a topic the cluster does not
 * report at first is followed once it shows; bad arguments are refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"
#include "core/clock.h"
#include "stream/broker.h"
#include "stream/broker_internal.h"
#include "stream/follower.h"
#include "stream/producer.h"
#include "stream/topic_watch_internal.h"
#include "testutil.h"

#define TOPIC "snaps"

static char errstr[1024];

typedef struct {
  eddy_broker_t *broker;
  eddy_producer_t *producer;
  eddy_config_t cfg;
} fixture_t;

static void setup(fixture_t *f, int partitions) {
  f->broker = eddy_broker_new(0, 1, errstr, sizeof errstr);
  assert_non_null(f->broker);
  assert_int_equal(eddy_broker_add_topic(f->broker, TOPIC, partitions, errstr, sizeof errstr),
                   EDDY_OK);
  f->producer = eddy_producer_new(NULL, eddy_broker_bootstrap(f->broker), errstr, sizeof errstr);
  assert_non_null(f->producer);
  const char *text = "[model]\nname = m\n";
  char set[256];
  snprintf(set, sizeof set, "kafka.bootstrap.servers=%s", eddy_broker_bootstrap(f->broker));
  const char *sets[] = {set, "kafka.group.id=the-trainers-group"};
  assert_int_equal(
      eddy_config_load_string(&f->cfg, "t.ini", text, strlen(text), sets, 2, errstr, sizeof errstr),
      EDDY_OK);
}

static void teardown(fixture_t *f) {
  eddy_config_free(&f->cfg);
  eddy_producer_destroy(f->producer);
  eddy_broker_destroy(f->broker);
}

static void announce(fixture_t *f, int32_t partition, const char *value) {
  assert_int_equal(eddy_producer_send(f->producer, TOPIC, partition, "m", 1, value, strlen(value),
                                      errstr, sizeof errstr),
                   EDDY_OK);
  assert_int_equal(eddy_producer_flush(f->producer, 10000, errstr, sizeof errstr), EDDY_OK);
}

static eddy_follower_t *follower(fixture_t *f) {
  eddy_follower_t *fol = eddy_follower_new(&f->cfg, TOPIC, errstr, sizeof errstr);
  if (!fol) print_error("follower: %s\n", errstr);
  assert_non_null(fol);
  return fol;
}

/* Polls fol for up to seconds; appends each message's value to got (space separated). Returns the
 * number of messages. */
static int read_for(eddy_follower_t *fol, double seconds, char *got, size_t size) {
  int n = 0;
  double end = eddy_clock_mono_s() + seconds;
  while (eddy_clock_mono_s() < end) {
    eddy_follower_msg_t msg;
    int rc = eddy_follower_poll(fol, 100, &msg, errstr, sizeof errstr);
    if (rc < 0) print_message("follower: %s\n", errstr);
    if (rc <= 0) continue;
    assert_string_equal(msg.key, "m");
    size_t len = strlen(got);
    snprintf(got + len, size - len, "%s%s", len ? " " : "", msg.value);
    eddy_follower_msg_free(&msg);
    n++;
  }
  return n;
}

/* Polls fol until it has read a message (up to seconds); the seconds it took, or -1. */
static double seconds_to_message(eddy_follower_t *fol, double seconds, char *value, size_t size) {
  double start = eddy_clock_mono_s();
  while (eddy_clock_mono_s() - start < seconds) {
    eddy_follower_msg_t msg;
    if (eddy_follower_poll(fol, 100, &msg, errstr, sizeof errstr) == 1) {
      snprintf(value, size, "%s", msg.value);
      eddy_follower_msg_free(&msg);
      return eddy_clock_mono_s() - start;
    }
  }
  return -1;
}

static void test_last_message_then_new_ones(void **state) {
  (void)state;
  fixture_t f;
  setup(&f, 2);
  announce(&f, 0, "v1");
  announce(&f, 0, "v2");
  announce(&f, 0, "v3");
  announce(&f, 1, "w1");
  eddy_follower_t *fol = follower(&f);
  char got[256] = "";
  assert_int_equal(read_for(fol, 2.0, got, sizeof got), 2);
  assert_true(!strcmp(got, "v3 w1") || !strcmp(got, "w1 v3"));
  announce(&f, 0, "v4");
  announce(&f, 1, "w2");
  got[0] = '\0';
  assert_int_equal(read_for(fol, 1.5, got, sizeof got), 2);
  assert_true(!strcmp(got, "v4 w2") || !strcmp(got, "w2 v4"));

  /* a second follower at the same time reads every new message too (no group to share) */
  eddy_follower_t *other = follower(&f);
  char first[64];
  assert_true(seconds_to_message(other, 5, first, sizeof first) >= 0);
  announce(&f, 0, "v5");
  got[0] = '\0';
  assert_int_equal(read_for(fol, 1.0, got, sizeof got), 1);
  assert_string_equal(got, "v5");
  got[0] = '\0';
  read_for(other, 1.0, got, sizeof got);
  assert_non_null(strstr(got, "v5"));
  eddy_follower_destroy(other);
  eddy_follower_destroy(fol);
  teardown(&f);
}

/* A follower dropped without closing (as after a crash: the old one is simply never heard from
 * again) and a new one started at once: the new one reads the latest message within 2 s. */
static void test_restart_within_seconds(void **state) {
  (void)state;
  fixture_t f;
  setup(&f, 1);
  announce(&f, 0, "v1");
  eddy_follower_t *old = follower(&f);
  char value[64];
  assert_true(seconds_to_message(old, 5, value, sizeof value) >= 0);
  assert_string_equal(value, "v1");
  announce(&f, 0, "v2");
  double started = eddy_clock_mono_s();
  eddy_follower_t *fresh = follower(&f); /* the old one stays open, silent */
  double took = seconds_to_message(fresh, 5, value, sizeof value);
  if (took >= 0) took = eddy_clock_mono_s() - started;
  print_message("restarted follower read the latest message %.2f s after it started\n", took);
  assert_true(took >= 0 && took < 2.0);
  assert_string_equal(value, "v2");
  announce(&f, 0, "v3");
  assert_true(seconds_to_message(fresh, 5, value, sizeof value) >= 0);
  assert_string_equal(value, "v3");
  eddy_follower_destroy(fresh);
  eddy_follower_destroy(old);
  teardown(&f);
}

/* The cluster does not report the topic at first (the mock cluster would auto-create any topic a
 * metadata request names, so it is made to answer UNKNOWN_TOPIC_OR_PART): nothing is read, and
 * once the topic shows, its partitions are followed from their last message. */
static void test_topic_shows_later(void **state) {
  (void)state;
  fixture_t f;
  setup(&f, 3);
  announce(&f, 2, "old");
  announce(&f, 2, "last");
  rd_kafka_mock_topic_set_error(eddy_broker_mock(f.broker), TOPIC,
                                RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART);
  eddy_follower_t *fol = follower(&f);
  char got[256] = "";
  assert_int_equal(read_for(fol, 1.5, got, sizeof got), 0);
  rd_kafka_mock_topic_set_error(eddy_broker_mock(f.broker), TOPIC, RD_KAFKA_RESP_ERR_NO_ERROR);
  char value[64];
  double took =
      seconds_to_message(fol, EDDY_TOPIC_WATCH_EVERY_MS / 1000.0 + 3, value, sizeof value);
  print_message("topic followed %.2f s after it showed\n", took);
  assert_true(took >= 0);
  assert_string_equal(value, "last");
  announce(&f, 1, "new");
  assert_true(seconds_to_message(fol, 5, value, sizeof value) >= 0);
  assert_string_equal(value, "new");
  eddy_follower_destroy(fol);
  teardown(&f);
}

static void test_arguments(void **state) {
  (void)state;
  eddy_config_t cfg;
  const char *text = "[model]\nname = m\n";
  assert_int_equal(
      eddy_config_load_string(&cfg, "t.ini", text, strlen(text), NULL, 0, errstr, sizeof errstr),
      EDDY_OK);
  assert_null(eddy_follower_new(&cfg, "", errstr, sizeof errstr));
  assert_string_equal(errstr, "follower: a config and a topic are required");
  assert_null(eddy_follower_new(NULL, TOPIC, errstr, sizeof errstr));
  const char *bad[] = {"kafka.fetch.wait.max.ms=soon"};
  eddy_config_free(&cfg);
  assert_int_equal(
      eddy_config_load_string(&cfg, "t.ini", text, strlen(text), bad, 1, errstr, sizeof errstr),
      EDDY_OK);
  assert_null(eddy_follower_new(&cfg, TOPIC, errstr, sizeof errstr));
  assert_non_null(strstr(errstr, "kafka.fetch.wait.max.ms"));
  eddy_config_free(&cfg);
  eddy_follower_destroy(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_arguments),
      cmocka_unit_test(test_last_message_then_new_ones),
      cmocka_unit_test(test_restart_within_seconds),
      cmocka_unit_test(test_topic_shows_later),
  };
  if (getenv("EDDY_TEST_FILTER")) cmocka_set_test_filter(getenv("EDDY_TEST_FILTER"));
  return cmocka_run_group_tests(tests, NULL, NULL);
}
