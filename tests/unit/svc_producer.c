/* The embedded broker and the producer together: messages sent through eddy_producer arrive
 * byte-exact and keyed messages keep their partition and order; the fixed-port forwarder
 * relays a full produce/consume; a downed broker makes deliveries fail and the counts say so;
 * the --control commands inject those faults; bad arguments are refused with the right codes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config/config.h"
#include "stream/broker.h"
#include "stream/broker_internal.h"
#include "stream/producer.h"

#define MAX_MSGS 4096

typedef struct {
  int32_t partition;
  int64_t offset;
  char key[64];
  char value[256];
} got_t;

/* Reads every partition of topic from the beginning to its end (bounded by 20 s). Returns the
 * number of messages stored in got. */
static size_t consume_all(const char *bootstrap, const char *topic, int partitions, got_t *got,
                          size_t cap) {
  char why[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, why, sizeof why), 0);
  assert_int_equal(rd_kafka_conf_set(conf, "group.id", "svc-producer-test", why, sizeof why), 0);
  assert_int_equal(rd_kafka_conf_set(conf, "enable.partition.eof", "true", why, sizeof why), 0);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
  assert_non_null(rk);
  rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(partitions);
  for (int i = 0; i < partitions; i++)
    rd_kafka_topic_partition_list_add(parts, topic, i)->offset = RD_KAFKA_OFFSET_BEGINNING;
  assert_int_equal(rd_kafka_assign(rk, parts), 0);
  rd_kafka_topic_partition_list_destroy(parts);
  size_t n = 0;
  int eofs = 0;
  time_t deadline = time(NULL) + 20;
  while (eofs < partitions && time(NULL) < deadline) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
    if (!m) continue;
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      eofs++;
    } else if (!m->err && n < cap) {
      got[n].partition = m->partition;
      got[n].offset = m->offset;
      snprintf(got[n].key, sizeof got[n].key, "%.*s", (int)m->key_len,
               m->key ? (const char *)m->key : "");
      snprintf(got[n].value, sizeof got[n].value, "%.*s", (int)m->len, (const char *)m->payload);
      n++;
    }
    rd_kafka_message_destroy(m);
  }
  assert_int_equal(eofs, partitions);
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return n;
}

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  socklen_t len = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &len);
  close(fd);
  return ntohs(a.sin_port);
}

/* Sends n keyed messages (key k<i%5>, value "m-<i>") and checks what a consumer reads back. */
static void roundtrip(eddy_broker_t *b, const char *topic, int partitions, int n) {
  char err[512];
  eddy_producer_t *p = eddy_producer_new(NULL, eddy_broker_bootstrap(b), err, sizeof err);
  assert_non_null(p);
  for (int i = 0; i < n; i++) {
    char key[16], value[64];
    int kl = snprintf(key, sizeof key, "k%d", i % 5);
    int vl = snprintf(value, sizeof value, "{\"id\":\"m-%d\"}", i);
    assert_int_equal(eddy_producer_send(p, topic, -1, key, (size_t)kl, value, (size_t)vl, err,
                                        sizeof err),
                     EDDY_OK);
  }
  assert_int_equal(eddy_producer_flush(p, 10000, err, sizeof err), EDDY_OK);
  eddy_producer_stats_t st = eddy_producer_stats(p);
  assert_int_equal(st.sent, (uint64_t)n);
  assert_int_equal(st.delivered, (uint64_t)n);
  assert_int_equal(st.failed, 0);
  assert_string_equal(eddy_producer_first_error(p), "");
  eddy_producer_destroy(p);

  got_t *got = calloc(MAX_MSGS, sizeof *got);
  size_t m = consume_all(eddy_broker_bootstrap(b), topic, partitions, got, MAX_MSGS);
  assert_int_equal(m, (size_t)n);
  /* Every value once; same key -> same partition; per key, increasing i in offset order. */
  char *seen = calloc((size_t)n, 1);
  int32_t key_part[5] = {-1, -1, -1, -1, -1};
  int last_i[5] = {-1, -1, -1, -1, -1};
  for (size_t j = 0; j < m; j++) {
    int i = -1;
    assert_int_equal(sscanf(got[j].value, "{\"id\":\"m-%d\"}", &i), 1);
    assert_true(i >= 0 && i < n);
    assert_false(seen[i]);
    seen[i] = 1;
    int k = i % 5;
    char want_key[16];
    snprintf(want_key, sizeof want_key, "k%d", k);
    assert_string_equal(got[j].key, want_key);
    if (key_part[k] < 0) key_part[k] = got[j].partition;
    assert_int_equal(got[j].partition, key_part[k]);
    assert_true(i > last_i[k]); /* consume_all reads each partition in offset order */
    last_i[k] = i;
  }
  free(seen);
  free(got);
}

/* A producer to b whose messages fail after 1.5 s without delivery. */
static eddy_producer_t *short_timeout_producer(eddy_broker_t *b) {
  char err[512];
  eddy_config_t cfg;
  const char *sets[] = {"kafka.message.timeout.ms=1500"};
  assert_int_equal(eddy_config_load(&cfg, NULL, sets, 1, err, sizeof err), EDDY_OK);
  eddy_producer_t *p = eddy_producer_new(&cfg, eddy_broker_bootstrap(b), err, sizeof err);
  eddy_config_free(&cfg);
  assert_non_null(p);
  return p;
}

static void test_roundtrip_ephemeral(void **state) {
  (void)state;
  char err[512];
  eddy_broker_t *b = eddy_broker_new(0, 1, err, sizeof err);
  assert_non_null(b);
  assert_int_equal(strncmp(eddy_broker_bootstrap(b), "127.0.0.1:", 10), 0);
  assert_int_equal(eddy_broker_add_topic(b, "t1", 3, err, sizeof err), EDDY_OK);
  roundtrip(b, "t1", 3, 2000);
  eddy_broker_destroy(b);
}

static void test_roundtrip_fixed_port(void **state) {
  (void)state;
  char err[512], want[64];
  int port = free_port();
  eddy_broker_t *b = eddy_broker_new(port, 1, err, sizeof err);
  assert_non_null(b);
  snprintf(want, sizeof want, "127.0.0.1:%d", port);
  assert_string_equal(eddy_broker_bootstrap(b), want);
  assert_int_equal(eddy_broker_add_topic(b, "fixed", 2, err, sizeof err), EDDY_OK);
  roundtrip(b, "fixed", 2, 500);
  /* A second broker on the same port is refused with the port in the message. */
  eddy_broker_t *again = eddy_broker_new(port, 1, err, sizeof err);
  assert_null(again);
  assert_non_null(strstr(err, want));
  eddy_broker_destroy(b);
}

static void test_three_brokers(void **state) {
  (void)state;
  char err[512];
  eddy_broker_t *b = eddy_broker_new(0, 3, err, sizeof err);
  assert_non_null(b);
  assert_int_equal(eddy_broker_count(b), 3);
  /* Three comma-separated addresses. */
  const char *bs = eddy_broker_bootstrap(b);
  int commas = 0;
  for (const char *c = bs; *c; c++) commas += *c == ',';
  assert_int_equal(commas, 2);
  assert_int_equal(eddy_broker_add_topic(b, "multi", 6, err, sizeof err), EDDY_OK);
  roundtrip(b, "multi", 6, 600);
  eddy_broker_destroy(b);
}

static void test_broker_down_fails_deliveries(void **state) {
  (void)state;
  char err[512];
  eddy_broker_t *b = eddy_broker_new(0, 1, err, sizeof err);
  assert_non_null(b);
  assert_int_equal(eddy_broker_add_topic(b, "down", 1, err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_broker_set_down(b, 1), EDDY_OK);
  eddy_producer_t *p = short_timeout_producer(b);
  for (int i = 0; i < 10; i++)
    assert_int_equal(eddy_producer_send(p, "down", -1, NULL, 0, "x", 1, err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_producer_flush(p, 10000, err, sizeof err), EDDY_OK);
  eddy_producer_stats_t st = eddy_producer_stats(p);
  assert_int_equal(st.sent, 10);
  assert_int_equal(st.delivered, 0);
  assert_int_equal(st.failed, 10);
  assert_non_null(strstr(eddy_producer_first_error(p), "down"));
  eddy_producer_destroy(p);
  /* Back up: deliveries succeed again. */
  assert_int_equal(eddy_broker_set_up(b, 1), EDDY_OK);
  roundtrip(b, "down", 1, 50);
  eddy_broker_destroy(b);
}

static void test_injected_produce_errors_are_retried(void **state) {
  (void)state;
  char err[512];
  eddy_broker_t *b = eddy_broker_new(0, 1, err, sizeof err);
  assert_non_null(b);
  assert_int_equal(eddy_broker_add_topic(b, "inj", 1, err, sizeof err), EDDY_OK);
  /* Retriable NOT_LEADER_FOR_PARTITION (6) on the first 3 Produce requests. */
  assert_int_equal(eddy_broker_push_request_errors(b, 0, 3, 6), EDDY_OK);
  roundtrip(b, "inj", 1, 100);
  assert_non_null(eddy_broker_mock(b));
  eddy_broker_destroy(b);
}

/* eddy_broker_control, the `eddy broker --control` commands: injected Produce errors are retried,
 * a downed broker fails deliveries and the producer says every broker is down until one is
 * delivered again, an added RTT slows a round trip; malformed commands are refused naming the
 * line, blank and comment lines do nothing. */
static void test_control_commands(void **state) {
  (void)state;
  char err[512];
  eddy_broker_t *b = eddy_broker_new(0, 1, err, sizeof err);
  assert_non_null(b);
  assert_int_equal(eddy_broker_add_topic(b, "ctl", 1, err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_broker_control(b, "errors Produce 3 NOT_LEADER_FOR_PARTITION", err, sizeof err),
                   EDDY_OK);
  assert_int_equal(eddy_broker_control(b, "  errors 0 2 6 ", err, sizeof err), EDDY_OK);
  roundtrip(b, "ctl", 1, 50);
  assert_int_equal(eddy_broker_control(b, "", err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_broker_control(b, "# down all", err, sizeof err), EDDY_OK);

  assert_int_equal(eddy_broker_control(b, "down all", err, sizeof err), EDDY_OK);
  eddy_producer_t *p = short_timeout_producer(b);
  assert_false(eddy_producer_brokers_down(p));
  assert_int_equal(eddy_producer_send(p, "ctl", -1, NULL, 0, "x", 1, err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_producer_flush(p, 10000, err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_producer_stats(p).failed, 1);
  assert_true(eddy_producer_brokers_down(p));
  assert_int_equal(eddy_broker_control(b, "up 1", err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_producer_send(p, "ctl", -1, NULL, 0, "y", 1, err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_producer_flush(p, 10000, err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_producer_stats(p).delivered, 1);
  assert_false(eddy_producer_brokers_down(p));
  eddy_producer_destroy(p);

  assert_int_equal(eddy_broker_control(b, "rtt 1 400", err, sizeof err), EDDY_OK);
  p = eddy_producer_new(NULL, eddy_broker_bootstrap(b), err, sizeof err);
  assert_non_null(p);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  assert_int_equal(eddy_producer_send(p, "ctl", -1, NULL, 0, "z", 1, err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_producer_flush(p, 20000, err, sizeof err), EDDY_OK);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
  print_message("one delivery with rtt 400 ms: %.2f s\n", took);
  assert_true(took >= 0.4);
  assert_int_equal(eddy_producer_stats(p).delivered, 1);
  eddy_producer_destroy(p);
  assert_int_equal(eddy_broker_control(b, "rtt all 0", err, sizeof err), EDDY_OK);

  static const char *const bad[][2] = {
      {"bogus 1", "want down BROKER"},
      {"down 2", "broker \"2\" is not 1..1 or all"},
      {"down", "want down BROKER"},
      {"rtt 1 -5", "want rtt BROKER MS"},
      {"errors Nope 1 6", "\"Nope\" is not a Kafka API name"},
      {"errors Fetch 0 6", "count \"0\" is not 1..100000"},
      {"errors Fetch 1 NOPE", "\"NOPE\" is not a Kafka error name"},
      {"errors Fetch 1 6 7 8", "too many words"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(eddy_broker_control(b, bad[i][0], err, sizeof err), EDDY_ERR_INVALID_ARG);
    if (!strstr(err, bad[i][1])) print_error("\"%s\": %s\n", bad[i][0], err);
    assert_non_null(strstr(err, bad[i][1]));
    assert_non_null(strstr(err, bad[i][0]));
  }
  char longline[400];
  memset(longline, 'a', sizeof longline - 1);
  longline[sizeof longline - 1] = '\0';
  assert_int_equal(eddy_broker_control(b, longline, err, sizeof err), EDDY_ERR_TOO_LARGE);
  eddy_broker_destroy(b);
}

static void test_bad_args(void **state) {
  (void)state;
  char err[512];
  assert_null(eddy_broker_new(-1, 1, err, sizeof err));
  assert_non_null(strstr(err, "-1"));
  assert_null(eddy_broker_new(0, 0, err, sizeof err));
  assert_null(eddy_broker_new(0, EDDY_BROKER_MAX_BROKERS + 1, err, sizeof err));
  eddy_broker_t *b = eddy_broker_new(0, 1, err, sizeof err);
  assert_non_null(b);
  assert_int_equal(eddy_broker_add_topic(b, "bad topic", 1, err, sizeof err),
                   EDDY_ERR_INVALID_ARG);
  assert_non_null(strstr(err, "bad topic"));
  assert_int_equal(eddy_broker_add_topic(b, "ok", 0, err, sizeof err), EDDY_ERR_INVALID_ARG);
  assert_int_equal(eddy_broker_set_down(b, 2), EDDY_ERR_INVALID_ARG);
  assert_int_equal(eddy_broker_set_rtt(b, 1, 0), EDDY_OK);

  eddy_broker_destroy(NULL);
  eddy_producer_destroy(NULL);
  eddy_config_t cfg;
  assert_int_equal(eddy_config_load(&cfg, NULL, NULL, 0, err, sizeof err), EDDY_OK);
  assert_null(eddy_producer_new(&cfg, NULL, err, sizeof err));
  assert_non_null(strstr(err, "bootstrap"));
  eddy_config_free(&cfg);
  const char *sets[] = {"kafka.acks=most"};
  assert_int_equal(eddy_config_load(&cfg, NULL, sets, 1, err, sizeof err), EDDY_OK);
  assert_null(eddy_producer_new(&cfg, eddy_broker_bootstrap(b), err, sizeof err));
  assert_non_null(strstr(err, "kafka.acks"));
  eddy_config_free(&cfg);

  eddy_producer_t *p = eddy_producer_new(NULL, eddy_broker_bootstrap(b), err, sizeof err);
  assert_non_null(p);
  char *big = calloc(EDDY_PRODUCER_MAX_VALUE + 1, 1);
  assert_int_equal(eddy_producer_send(p, "ok", -1, NULL, 0, big, EDDY_PRODUCER_MAX_VALUE + 1, err,
                                      sizeof err),
                   EDDY_ERR_TOO_LARGE);
  free(big);
  eddy_producer_interrupt(p);
  assert_int_equal(eddy_producer_send(p, "ok", -1, NULL, 0, "x", 1, err, sizeof err),
                   EDDY_ERR_STATE);
  eddy_producer_destroy(p);
  eddy_broker_destroy(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_roundtrip_ephemeral),
      cmocka_unit_test(test_roundtrip_fixed_port),
      cmocka_unit_test(test_three_brokers),
      cmocka_unit_test(test_broker_down_fails_deliveries),
      cmocka_unit_test(test_injected_produce_errors_are_retried),
      cmocka_unit_test(test_control_commands),
      cmocka_unit_test(test_bad_args),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
