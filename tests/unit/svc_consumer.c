/* Kafka ingest into the replay buffer, in process against the embedded broker (librdkafka's mock
 * cluster) with fault injection. Every test checks the buffer exactly: each produced id stored
 * once, byte-exact (binary encoding equal to decoding the produced JSON), in per-partition order,
 * and the stored next offset of every partition equal to its end. Cases: plain flow + metrics;
 * every class of bad event dead-lettered (and copied to a dead-letter topic) while good events
 * flow; restart under a new group id (positions come from the buffer, not Kafka), reading again
 * within seconds; offsets committed to the group for lag tools, a fresh buffer starting at them,
 * and a restart resuming at the buffer's offsets when the commits are behind; broker down/up and
 * injected Fetch / OffsetCommit errors; a prompt destroy with every broker gone and a commit in
 * flight; two ranks of two splitting the partitions (p mod 2) and
 * together storing every event once; a topic that shows while ingest runs; backpressure from a full
 * buffer with eviction off. */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "buffer/replay.h"
#include "config/config.h"
#include "core/clock.h"
#include "model/spec.h"
#include "stream/broker.h"
#include "stream/broker_internal.h"
#include "stream/consumer.h"
#include "stream/producer.h"
#include "stream/topic_watch_internal.h"
#include "testutil.h"

#define TOPIC "events"
#define PARTS 4
#define MAX_IDS 20000

static char errstr[1024];

typedef struct {
  eddy_broker_t *broker;
  eddy_producer_t *producer;
  char *dir;
  int produced;        /* good events e-0 .. e-(produced-1), event i on partition i % PARTS */
  int64_t ends[PARTS]; /* messages produced per partition (good and bad) */
} fixture_t;

static int event_json(int i, char *buf, size_t size) {
  if (i % 7 == 3) /* no ts: ingest fills it from the message time */
    return snprintf(buf, size, "{\"id\":\"e-%d\",\"label\":%d,\"dense\":[%d.25,-0.5]}", i, i % 2,
                    i % 100);
  return snprintf(buf, size,
                  "{\"id\":\"e-%d\",\"ts\":%lld,\"label\":%d,\"weight\":%g,\"dense\":[%.3f,%d],"
                  "\"sparse\":{\"u\":\"u%d\",\"price\":%d.5}}",
                  i, 1732780000000LL + i, i % 2, 0.5 + (i % 3), i * 0.001, i % 11, i % 17, i % 5);
}

static void load_config(eddy_config_t *cfg, const char *bootstrap, const char *group,
                        const char *const *extra, size_t n_extra) {
  const char *text =
      "[model]\nname = test\nhash_bits = 10\nembed_dim = 4\ndense_dim = 2\nhidden =\n"
      "head = logistic\n[stream]\ntopic = " TOPIC "\n";
  char sets[16][256];
  const char *ptrs[16];
  size_t n = 0;
  snprintf(sets[n++], sizeof sets[0], "kafka.bootstrap.servers=%s", bootstrap);
  snprintf(sets[n++], sizeof sets[0], "kafka.group.id=%s", group);
  snprintf(sets[n++], sizeof sets[0], "kafka.reconnect.backoff.max.ms=200");
  snprintf(sets[n++], sizeof sets[0], "kafka.fetch.wait.max.ms=50");
  if (getenv("EDDY_TEST_KAFKA_DEBUG")) snprintf(sets[n++], sizeof sets[0], "kafka.debug=cgrp");
  for (size_t i = 0; i < n_extra; i++) snprintf(sets[n++], sizeof sets[0], "%s", extra[i]);
  for (size_t i = 0; i < n; i++) ptrs[i] = sets[i];
  eddy_err_t err =
      eddy_config_load_string(cfg, "test.ini", text, strlen(text), ptrs, n, errstr, sizeof errstr);
  if (err) print_error("config: %s\n", errstr);
  assert_int_equal(err, EDDY_OK);
}

static void setup_fixture(fixture_t *f, int n_brokers) {
  memset(f, 0, sizeof *f);
  f->broker = eddy_broker_new(0, n_brokers, errstr, sizeof errstr);
  if (!f->broker) print_error("broker: %s\n", errstr);
  assert_non_null(f->broker);
  assert_int_equal(eddy_broker_add_topic(f->broker, TOPIC, PARTS, errstr, sizeof errstr), EDDY_OK);
  f->producer = eddy_producer_new(NULL, eddy_broker_bootstrap(f->broker), errstr, sizeof errstr);
  assert_non_null(f->producer);
  f->dir = eddy_test_tmpdir();
}

static void teardown_fixture(fixture_t *f) {
  eddy_producer_destroy(f->producer);
  eddy_broker_destroy(f->broker);
  eddy_test_rmdir(f->dir);
}

static void send_raw(fixture_t *f, int32_t partition, const char *value, size_t len) {
  assert_int_equal(
      eddy_producer_send(f->producer, TOPIC, partition, NULL, 0, value, len, errstr, sizeof errstr),
      EDDY_OK);
  f->ends[partition]++;
}

/* Produces good events produced .. produced+n-1 and waits for their delivery. */
static void produce(fixture_t *f, int n) {
  char buf[512];
  for (int k = 0; k < n; k++, f->produced++) {
    int len = event_json(f->produced, buf, sizeof buf);
    send_raw(f, f->produced % PARTS, buf, (size_t)len);
  }
  assert_int_equal(eddy_producer_flush(f->producer, 20000, errstr, sizeof errstr), EDDY_OK);
  assert_int_equal(eddy_producer_stats(f->producer).failed, 0);
}

static eddy_replay_t *open_buffer(const char *dir, const char *name, uint64_t cap_events,
                                  bool evict) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  eddy_replay_opts_t o = {.path = path, .capacity_events = cap_events, .evict = evict};
  eddy_replay_t *r = eddy_replay_new(&o, errstr, sizeof errstr);
  if (!r) print_error("buffer: %s\n", errstr);
  assert_non_null(r);
  return r;
}

static eddy_ingest_t *new_ingest(const eddy_config_t *cfg, eddy_replay_t *r, eddy_registry_t *reg,
                                 const eddy_ingest_opts_t *opts) {
  eddy_ingest_t *ing = eddy_ingest_new(cfg, r, opts, reg, errstr, sizeof errstr);
  if (!ing) print_error("ingest: %s\n", errstr);
  assert_non_null(ing);
  return ing;
}

static uint64_t stored_count(eddy_replay_t *r) {
  eddy_replay_stats_t st = eddy_replay_stats(r);
  return st.events + st.dead_letters;
}

/* Polls the ingests in turn (100 ms each) until r holds want events + dead letters; fails after
 * timeout_s. */
static void pump_until(eddy_ingest_t **ings, size_t n, eddy_replay_t *r, uint64_t want,
                       double timeout_s) {
  double deadline = eddy_clock_mono_s() + timeout_s;
  while (stored_count(r) < want) {
    if (eddy_clock_mono_s() > deadline) {
      print_error("timed out: %" PRIu64 " of %" PRIu64 " stored\n", stored_count(r), want);
      fail();
    }
    for (size_t i = 0; i < n; i++)
      if (ings[i])
        assert_int_equal(eddy_ingest_poll_once(ings[i], 100, NULL, errstr, sizeof errstr), EDDY_OK);
  }
}

static void pump_for(eddy_ingest_t **ings, size_t n, double seconds) {
  double end = eddy_clock_mono_s() + seconds;
  while (eddy_clock_mono_s() < end)
    for (size_t i = 0; i < n; i++)
      if (ings[i])
        assert_int_equal(eddy_ingest_poll_once(ings[i], 50, NULL, errstr, sizeof errstr), EDDY_OK);
}

/* The whole buffer against what was produced from id from_id on, on the partitions p with
 * p mod ranks = rank: every such good id once, byte-exact, per-partition order, no other id; the
 * stored offsets of those partitions equal their ends, the other partitions have none. */
static void verify_owned(const fixture_t *f, eddy_replay_t *r, int from_id, int rank, int ranks) {
  eddy_config_t cfg;
  load_config(&cfg, "127.0.0.1:1", "x", NULL, 0);
  eddy_event_schema_t schema = eddy_model_event_schema(&cfg.spec);
  eddy_config_free(&cfg);
  assert_true(f->produced <= MAX_IDS);
  static int seen[MAX_IDS];
  memset(seen, 0, sizeof seen);
  int last[PARTS];
  int64_t last_offset[PARTS];
  for (int p = 0; p < PARTS; p++) last[p] = -1, last_offset[p] = -1;
  enum { CHUNK = 256 };
  eddy_event_t evs[CHUNK], want;
  for (int i = 0; i < CHUNK; i++) eddy_event_init(&evs[i]);
  eddy_event_init(&want);
  uint8_t a[1024], b[1024];
  uint64_t from = 0;
  size_t total = 0;
  for (;;) {
    size_t got = 0;
    uint64_t seqs[CHUNK];
    assert_int_equal(eddy_replay_read(r, from, CHUNK, evs, seqs, &got), EDDY_OK);
    if (got == 0) break;
    for (size_t k = 0; k < got; k++) {
      int id = -1;
      assert_int_equal(sscanf(evs[k].id, "e-%d", &id), 1);
      if (id < from_id || id >= f->produced || id % PARTS % ranks != rank)
        print_error("unexpected id e-%d (want e-%d..e-%d of rank %d of %d)\n", id, from_id,
                    f->produced - 1, rank, ranks);
      assert_true(id >= from_id && id < f->produced);
      assert_int_equal(id % PARTS % ranks, rank);
      if (seen[id]) print_error("id e-%d stored twice\n", id);
      assert_int_equal(seen[id], 0);
      seen[id] = 1;
      int p = id % PARTS;
      if (id <= last[p]) print_error("partition %d: e-%d after e-%d\n", p, id, last[p]);
      assert_true(id > last[p]);
      last[p] = id;
      char json[512];
      int len = event_json(id, json, sizeof json);
      assert_int_equal(
          eddy_event_from_json(json, (size_t)len, &schema, &want, errstr, sizeof errstr), EDDY_OK);
      if (!want.has_ts) { /* filled from the broker's message time */
        assert_true(evs[k].has_ts);
        assert_true(evs[k].ts > 1600000000000LL);
        want.ts = evs[k].ts;
        want.has_ts = true;
      }
      /* where it came from: its partition, at offsets that grow within it */
      assert_true(evs[k].has_origin);
      assert_int_equal(evs[k].partition, p);
      assert_true(evs[k].offset >= 0 && evs[k].offset > last_offset[p]);
      last_offset[p] = evs[k].offset;
      want.has_origin = true;
      want.partition = evs[k].partition;
      want.offset = evs[k].offset;
      size_t na = eddy_event_encode(&evs[k], a, sizeof a),
             nb = eddy_event_encode(&want, b, sizeof b);
      assert_true(na > 0);
      assert_int_equal(na, nb);
      assert_memory_equal(a, b, na);
    }
    total += got;
    from = seqs[got - 1] + 1;
  }
  int missing = 0, want_total = 0;
  for (int i = from_id; i < f->produced; i++) {
    if (i % PARTS % ranks != rank) continue;
    want_total++;
    missing += !seen[i];
  }
  if (missing) print_error("%d of %d ids missing\n", missing, want_total);
  assert_int_equal(missing, 0);
  assert_int_equal(total, (size_t)want_total);
  for (int p = 0; p < PARTS; p++) {
    int64_t next = -1;
    eddy_err_t err = eddy_replay_offset(r, TOPIC, p, &next);
    if (p % ranks != rank) {
      assert_int_not_equal(err, EDDY_OK);
      continue;
    }
    if (f->ends[p] == 0) continue;
    assert_int_equal(err, EDDY_OK);
    assert_int_equal(next, f->ends[p]);
  }
  for (int i = 0; i < CHUNK; i++) eddy_event_free(&evs[i]);
  eddy_event_free(&want);
}

static void verify_buffer(const fixture_t *f, eddy_replay_t *r) { verify_owned(f, r, 0, 0, 1); }

static void test_flow_and_metrics(void **state) {
  (void)state;
  fixture_t f;
  setup_fixture(&f, 1);
  eddy_config_t cfg;
  load_config(&cfg, eddy_broker_bootstrap(f.broker), "g-flow", NULL, 0);
  eddy_replay_t *r = open_buffer(f.dir, "buf", 0, true);
  eddy_registry_t *reg = eddy_registry_new();
  eddy_ingest_t *ing = new_ingest(&cfg, r, reg, NULL);
  assert_string_equal(eddy_ingest_group(ing), "g-flow");
  produce(&f, 1500);
  pump_until(&ing, 1, r, 1500, 30);
  produce(&f, 500); /* more while consuming */
  pump_until(&ing, 1, r, 2000, 30);
  double deadline = eddy_clock_mono_s() + 10;
  while (!eddy_ingest_stats(ing).caught_up && eddy_clock_mono_s() < deadline) pump_for(&ing, 1, 0.1);
  eddy_ingest_stats_t st = eddy_ingest_stats(ing);
  assert_true(st.caught_up);
  assert_int_equal(st.events_ok, 2000);
  assert_int_equal(st.events_invalid, 0);
  assert_int_equal(st.assigned, PARTS);
  assert_int_equal(st.lag, 0);
  assert_int_equal(st.skipped, 0);
  assert_false(st.paused);
  verify_buffer(&f, r);

  char *text = eddy_registry_render(reg, NULL);
  assert_non_null(text);
  assert_non_null(strstr(text, "# TYPE eddy_ingest_events_total counter\n"));
  assert_non_null(strstr(text, "eddy_ingest_events_total{result=\"ok\"} 2000\n"));
  assert_non_null(strstr(text, "eddy_ingest_events_total{result=\"invalid\"} 0\n"));
  assert_non_null(strstr(text, "eddy_buffer_events 2000\n"));
  assert_non_null(strstr(text, "eddy_kafka_assigned_partitions 4\n"));
  for (int p = 0; p < PARTS; p++) {
    char line[128];
    snprintf(line, sizeof line, "eddy_kafka_consumer_lag{topic=\"events\",partition=\"%d\"} 0\n",
             p);
    assert_non_null(strstr(text, line));
  }
  char want[64];
  snprintf(want, sizeof want, "eddy_ingest_append_seconds_count %" PRIu64 "\n", st.batches);
  assert_non_null(strstr(text, want));
  free(text);

  eddy_ingest_destroy(ing);
  /* the lag series of the partitions it read are gone with it */
  text = eddy_registry_render(reg, NULL);
  assert_null(strstr(text, "eddy_kafka_consumer_lag{"));
  free(text);
  eddy_registry_destroy(reg);
  eddy_replay_destroy(r);
  eddy_config_free(&cfg);
  teardown_fixture(&f);
}

static void read_lines(const char *path, char lines[][512], int *n, int max) {
  FILE *fp = fopen(path, "r");
  assert_non_null(fp);
  *n = 0;
  while (*n < max && fgets(lines[*n], 512, fp)) {
    size_t len = strlen(lines[*n]);
    while (len && (lines[*n][len - 1] == '\n' || lines[*n][len - 1] == '\r')) lines[*n][--len] = 0;
    if (len) (*n)++;
  }
  fclose(fp);
}

typedef struct {
  int n;
  eddy_err_t reason[64];
  int32_t partition[64];
  int64_t offset[64];
  size_t raw_len[64];
} dl_seen_t;

static void collect_dl(void *ctx, const eddy_dead_letter_t *dl) {
  dl_seen_t *s = ctx;
  if (s->n >= 64) return;
  s->reason[s->n] = dl->reason;
  s->partition[s->n] = dl->partition;
  s->offset[s->n] = dl->offset;
  s->raw_len[s->n] = dl->raw_len;
  assert_string_equal(dl->topic, TOPIC);
  assert_true(dl->message && dl->message[0]);
  s->n++;
}

/* Reads the dead-letter topic and counts the messages whose eddy-reason header is present. */
static int read_dlq_topic(const char *bootstrap, const char *topic, int want, char reasons[][64]) {
  char why[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, why, sizeof why);
  rd_kafka_conf_set(conf, "group.id", "dlq-reader", why, sizeof why);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
  assert_non_null(rk);
  rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(parts, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
  assert_int_equal(rd_kafka_assign(rk, parts), 0);
  rd_kafka_topic_partition_list_destroy(parts);
  int n = 0;
  double deadline = eddy_clock_mono_s() + 15;
  while (n < want && eddy_clock_mono_s() < deadline) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
    if (!m) continue;
    if (!m->err) {
      rd_kafka_headers_t *hdrs = NULL;
      const void *val = NULL;
      size_t len = 0;
      if (!rd_kafka_message_headers(m, &hdrs) &&
          !rd_kafka_header_get_last(hdrs, "eddy-reason", &val, &len)) {
        snprintf(reasons[n], 64, "%.*s", (int)len, (const char *)val);
        const void *off = NULL;
        size_t off_len = 0;
        assert_int_equal(rd_kafka_header_get_last(hdrs, "eddy-offset", &off, &off_len), 0);
        n++;
      }
    }
    rd_kafka_message_destroy(m);
  }
  rd_kafka_destroy(rk);
  return n;
}

static void test_bad_events(void **state) {
  (void)state;
  fixture_t f;
  setup_fixture(&f, 1);
  assert_int_equal(eddy_broker_add_topic(f.broker, "events-dlq", 1, errstr, sizeof errstr),
                   EDDY_OK);
  eddy_config_t cfg;
  const char *extra[] = {"stream.dlq_topic=events-dlq", "stream.max_event_bytes=300"};
  load_config(&cfg, eddy_broker_bootstrap(f.broker), "g-bad", extra, 2);
  eddy_replay_t *r = open_buffer(f.dir, "buf", 0, true);
  eddy_registry_t *reg = eddy_registry_new();
  eddy_ingest_t *ing = new_ingest(&cfg, r, reg, NULL);

  /* streams/bad-events.jsonl: one line per class, in eddy_err_t order from EVENT_NOT_JSON */
  char lines[16][512];
  int n_lines = 0;
  read_lines(EDDY_SOURCE_DIR "/streams/bad-events.jsonl", lines, &n_lines, 16);
  assert_int_equal(n_lines, 8);
  produce(&f, 40);
  int64_t bad_offset[8];
  int32_t bad_part[8];
  for (int i = 0; i < n_lines; i++) {
    bad_part[i] = i % PARTS;
    bad_offset[i] = f.ends[bad_part[i]];
    send_raw(&f, bad_part[i], lines[i], strlen(lines[i]));
    produce(&f, 5); /* good events keep flowing around each bad one */
  }
  /* a payload over stream.max_event_bytes (300) and an empty one */
  char big[400];
  memset(big, ' ', sizeof big);
  memcpy(big, "{\"label\":1}", 11);
  int32_t big_part = 1, empty_part = 2;
  int64_t big_offset = f.ends[big_part];
  send_raw(&f, big_part, big, sizeof big);
  int64_t empty_offset = f.ends[empty_part];
  send_raw(&f, empty_part, "", 0);
  produce(&f, 20);
  uint64_t total_bad = (uint64_t)n_lines + 2;
  pump_until(&ing, 1, r, (uint64_t)f.produced + total_bad, 30);
  verify_buffer(&f, r);

  dl_seen_t seen = {0};
  uint64_t by_reason[EDDY_ERR__COUNT] = {0};
  eddy_replay_dead_letters(r, 64, collect_dl, &seen, by_reason);
  assert_int_equal(seen.n, (int)total_bad);
  for (int i = 0; i < n_lines; i++) {
    eddy_err_t want = (eddy_err_t)(EDDY_ERR_EVENT_NOT_JSON + i);
    bool found = false;
    for (int k = 0; k < seen.n; k++)
      if (seen.partition[k] == bad_part[i] && seen.offset[k] == bad_offset[i]) {
        if (seen.reason[k] != want)
          print_error("line %d: reason %s, want %s\n", i + 1, eddy_err_name(seen.reason[k]),
                      eddy_err_name(want));
        assert_int_equal(seen.reason[k], want);
        assert_int_equal(seen.raw_len[k], strlen(lines[i]));
        found = true;
      }
    assert_true(found);
  }
  bool big_found = false, empty_found = false;
  for (int k = 0; k < seen.n; k++) {
    if (seen.partition[k] == big_part && seen.offset[k] == big_offset) {
      assert_int_equal(seen.reason[k], EDDY_ERR_EVENT_TOO_LARGE);
      big_found = true;
    }
    if (seen.partition[k] == empty_part && seen.offset[k] == empty_offset) {
      assert_int_equal(seen.reason[k], EDDY_ERR_EVENT_NOT_JSON);
      empty_found = true;
    }
  }
  assert_true(big_found && empty_found);
  assert_int_equal(by_reason[EDDY_ERR_EVENT_TOO_LARGE], 2);
  assert_int_equal(by_reason[EDDY_ERR_EVENT_NOT_JSON], 2);
  assert_int_equal(by_reason[EDDY_ERR_EVENT_LABEL_RANGE], 1);

  eddy_ingest_stats_t st = eddy_ingest_stats(ing);
  assert_int_equal(st.events_invalid, total_bad);
  assert_int_equal(st.events_ok, (uint64_t)f.produced);
  char *text = eddy_registry_render(reg, NULL);
  char want[128];
  snprintf(want, sizeof want, "eddy_ingest_events_total{result=\"invalid\"} %" PRIu64 "\n",
           total_bad);
  assert_non_null(strstr(text, want));
  assert_non_null(strstr(text, "eddy_ingest_dead_letters_total{reason=\"event_too_large\"} 2\n"));
  assert_non_null(strstr(text, "eddy_ingest_dead_letters_total{reason=\"event_type\"} 1\n"));
  free(text);

  /* the dead-letter topic gets a copy of each, with its reason in a header */
  char reasons[16][64];
  eddy_ingest_destroy(ing); /* flushes the dead-letter producer */
  int got = read_dlq_topic(eddy_broker_bootstrap(f.broker), "events-dlq", (int)total_bad, reasons);
  assert_int_equal(got, (int)total_bad);
  int too_large = 0;
  for (int i = 0; i < got; i++) too_large += !strcmp(reasons[i], "event_too_large");
  assert_int_equal(too_large, 2);

  eddy_registry_destroy(reg);
  eddy_replay_destroy(r);
  eddy_config_free(&cfg);
  teardown_fixture(&f);
}

/* Polls ing until r holds more than have events + dead letters; returns the seconds since
 * started (eddy_clock_mono_s() when ing was made). Fails after 30 s. */
static double seconds_to_store(eddy_ingest_t *ing, eddy_replay_t *r, uint64_t have,
                               double started) {
  pump_until(&ing, 1, r, have + 1, 30);
  double took = eddy_clock_mono_s() - started;
  print_message("restarted ingest stored its first batch %.2f s after it started\n", took);
  return took;
}

/* Positions come from the buffer: a new consumer under a new group (no Kafka commits) continues
 * exactly where the buffer stops, and stores again within 3 s of its start (no group to join). */
static void test_restart_new_group(void **state) {
  (void)state;
  fixture_t f;
  setup_fixture(&f, 1);
  eddy_config_t cfg1, cfg2;
  load_config(&cfg1, eddy_broker_bootstrap(f.broker), "g-restart-1", NULL, 0);
  load_config(&cfg2, eddy_broker_bootstrap(f.broker), "g-restart-2", NULL, 0);
  eddy_replay_t *r = open_buffer(f.dir, "buf", 0, true);
  eddy_ingest_t *ing = new_ingest(&cfg1, r, NULL, NULL);
  produce(&f, 800);
  pump_until(&ing, 1, r, 800, 30);
  eddy_ingest_destroy(ing);
  eddy_replay_destroy(r);
  produce(&f, 700);
  r = open_buffer(f.dir, "buf", 0, true);
  double started = eddy_clock_mono_s();
  ing = new_ingest(&cfg2, r, NULL, NULL);
  assert_true(seconds_to_store(ing, r, 800, started) < 3.0);
  pump_until(&ing, 1, r, 1500, 30);
  pump_for(&ing, 1, 1.0); /* a duplicate would show up as more than 1500 */
  assert_int_equal(stored_count(r), 1500);
  verify_buffer(&f, r);
  eddy_ingest_destroy(ing);
  eddy_replay_destroy(r);
  eddy_config_free(&cfg1);
  eddy_config_free(&cfg2);
  teardown_fixture(&f);
}

static void test_faults(void **state) {
  (void)state;
  fixture_t f;
  setup_fixture(&f, 1);
  eddy_config_t cfg;
  load_config(&cfg, eddy_broker_bootstrap(f.broker), "g-faults", NULL, 0);
  eddy_replay_t *r = open_buffer(f.dir, "buf", 0, true);
  eddy_ingest_t *ing = new_ingest(&cfg, r, NULL, NULL);
  produce(&f, 500);
  pump_until(&ing, 1, r, 500, 30);

  /* Fetch errors (NOT_LEADER_FOR_PARTITION, then UNKNOWN_SERVER_ERROR) while events arrive */
  assert_int_equal(eddy_broker_push_request_errors(f.broker, 1, 5, 6), EDDY_OK);
  assert_int_equal(eddy_broker_push_request_errors(f.broker, 1, 3, -1), EDDY_OK);
  produce(&f, 500);
  pump_until(&ing, 1, r, 1000, 30);

  /* OffsetCommit errors: commits are informational, ingest goes on and counts them */
  assert_int_equal(eddy_broker_push_request_errors(f.broker, 8, 6, 28), EDDY_OK);
  produce(&f, 500);
  pump_until(&ing, 1, r, 1500, 30);
  pump_for(&ing, 1, 0.5);
  eddy_ingest_stats_t st = eddy_ingest_stats(ing);
  print_message("commit failures counted: %" PRIu64 ", consumer errors: %" PRIu64 "\n",
                st.commit_failed, st.kafka_errors);
  assert_true(st.commit_failed >= 1);

  /* the broker goes down while events are in flight, and comes back */
  produce(&f, 300);
  assert_int_equal(eddy_broker_set_down(f.broker, -1), EDDY_OK);
  pump_for(&ing, 1, 1.5);
  assert_int_equal(eddy_broker_set_up(f.broker, -1), EDDY_OK);
  produce(&f, 400);
  pump_until(&ing, 1, r, 2200, 40);
  pump_for(&ing, 1, 1.0);
  assert_int_equal(stored_count(r), 2200);
  verify_buffer(&f, r);
  assert_int_equal(eddy_ingest_stats(ing).skipped, 0);
  eddy_ingest_destroy(ing);
  eddy_replay_destroy(r);
  eddy_config_free(&cfg);
  teardown_fixture(&f);
}

/* Destroying ingest while every broker is gone, with an offset commit in flight (each response
 * delayed 3 s, then the brokers go down): it returns within 2.5 s, the last commit skipped, and
 * nothing stored is lost. (librdkafka's group commits would hold the close forever, issue #3740.) */
static void test_destroy_brokers_gone(void **state) {
  (void)state;
  fixture_t f;
  setup_fixture(&f, 1);
  eddy_config_t cfg;
  load_config(&cfg, eddy_broker_bootstrap(f.broker), "g-gone", NULL, 0);
  eddy_replay_t *r = open_buffer(f.dir, "buf", 0, true);
  eddy_ingest_t *ing = new_ingest(&cfg, r, NULL, NULL);
  produce(&f, 200);
  pump_until(&ing, 1, r, 200, 30);
  pump_for(&ing, 1, 1.2);
  produce(&f, 100);
  assert_int_equal(eddy_broker_set_rtt(f.broker, -1, 3000), EDDY_OK);
  pump_until(&ing, 1, r, 300, 30);
  pump_for(&ing, 1, 1.2); /* the commit of the last 100 goes out and waits for its answer */
  assert_int_equal(eddy_broker_set_down(f.broker, -1), EDDY_OK);
  pump_for(&ing, 1, 0.3);
  double t0 = eddy_clock_mono_s();
  eddy_ingest_destroy(ing);
  double took = eddy_clock_mono_s() - t0;
  print_message("ingest destroyed %.2f s after every broker went down\n", took);
  assert_true(took < 2.5);
  assert_int_equal(stored_count(r), 300);
  verify_buffer(&f, r);
  eddy_replay_destroy(r);
  eddy_config_free(&cfg);
  teardown_fixture(&f);
}

/* A client of group that never joins it, as a lag tool would be, with a list of TOPIC's
 * partitions (offsets set to offset). */
static rd_kafka_t *group_client(const char *bootstrap, const char *group, int64_t offset,
                                rd_kafka_topic_partition_list_t **list) {
  char why[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  assert_int_equal(rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, why, sizeof why), 0);
  assert_int_equal(rd_kafka_conf_set(conf, "group.id", group, why, sizeof why), 0);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
  assert_non_null(rk);
  *list = rd_kafka_topic_partition_list_new(PARTS);
  for (int p = 0; p < PARTS; p++)
    rd_kafka_topic_partition_list_add(*list, TOPIC, p)->offset = offset;
  return rk;
}

/* The group's committed offsets of TOPIC's partitions (RD_KAFKA_OFFSET_INVALID where none). */
static void group_offsets(const char *bootstrap, const char *group, int64_t out[PARTS]) {
  rd_kafka_topic_partition_list_t *list;
  rd_kafka_t *rk = group_client(bootstrap, group, RD_KAFKA_OFFSET_INVALID, &list);
  assert_int_equal(rd_kafka_committed(rk, list, 10000), 0);
  for (int p = 0; p < PARTS; p++) out[p] = list->elems[p].offset;
  rd_kafka_topic_partition_list_destroy(list);
  rd_kafka_destroy(rk);
}

/* Commits offset to every partition of TOPIC in group, as another tool could. */
static void group_commit(const char *bootstrap, const char *group, int64_t offset) {
  rd_kafka_topic_partition_list_t *list;
  rd_kafka_t *rk = group_client(bootstrap, group, offset, &list);
  assert_int_equal(rd_kafka_commit(rk, list, 0), 0);
  rd_kafka_topic_partition_list_destroy(list);
  rd_kafka_destroy(rk);
}

/* Pumps the n ingests until the group's committed offsets equal the partition ends (10 s at
 * most). */
static void wait_commits_at_ends(const fixture_t *f, eddy_ingest_t **ings, size_t n,
                                 const char *group) {
  int64_t got[PARTS];
  double deadline = eddy_clock_mono_s() + 10;
  for (;;) {
    group_offsets(eddy_broker_bootstrap(f->broker), group, got);
    bool at_ends = true;
    for (int p = 0; p < PARTS; p++) at_ends = at_ends && got[p] == f->ends[p];
    if (at_ends) return;
    if (eddy_clock_mono_s() > deadline) {
      print_error("group %s: committed %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64
                  ", ends %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 "\n",
                  group, got[0], got[1], got[2], got[3], f->ends[0], f->ends[1], f->ends[2],
                  f->ends[3]);
      fail();
    }
    pump_for(ings, n, 0.3);
  }
}

/* Kafka commits are for lag tools: they follow the buffer to the partition ends; a buffer that has
 * never seen the topic starts at them; a buffer that has positions ignores them, even when they
 * are behind. */
static void test_commits_for_lag_tools(void **state) {
  (void)state;
  fixture_t f;
  setup_fixture(&f, 1);
  const char *boot = eddy_broker_bootstrap(f.broker);
  eddy_config_t cfg;
  load_config(&cfg, boot, "g-lag", NULL, 0);
  eddy_replay_t *r = open_buffer(f.dir, "buf", 0, true);
  eddy_ingest_t *ing = new_ingest(&cfg, r, NULL, NULL);
  assert_string_equal(eddy_ingest_group(ing), "g-lag");
  produce(&f, 800);
  pump_until(&ing, 1, r, 800, 30);
  wait_commits_at_ends(&f, &ing, 1, "g-lag");
  eddy_ingest_destroy(ing);
  eddy_replay_destroy(r);

  /* a fresh buffer in the same group starts at the committed offsets: only the new events */
  produce(&f, 200);
  eddy_replay_t *fresh = open_buffer(f.dir, "fresh", 0, true);
  ing = new_ingest(&cfg, fresh, NULL, NULL);
  pump_until(&ing, 1, fresh, 200, 30);
  pump_for(&ing, 1, 1.0);
  assert_int_equal(stored_count(fresh), 200);
  verify_owned(&f, fresh, 800, 0, 1);
  eddy_ingest_destroy(ing);
  eddy_replay_destroy(fresh);

  /* commits far behind the buffer (someone committed 0): the buffer's offsets win, and the
   * commits follow the buffer again */
  group_commit(boot, "g-lag", 0);
  produce(&f, 300);
  r = open_buffer(f.dir, "buf", 0, true);
  double started = eddy_clock_mono_s();
  ing = new_ingest(&cfg, r, NULL, NULL);
  assert_true(seconds_to_store(ing, r, 800, started) < 3.0);
  pump_until(&ing, 1, r, 1300, 30);
  wait_commits_at_ends(&f, &ing, 1, "g-lag");
  assert_int_equal(stored_count(r), 1300);
  verify_buffer(&f, r);
  assert_int_equal(eddy_ingest_stats(ing).skipped, 0);
  eddy_ingest_destroy(ing);
  eddy_replay_destroy(r);
  eddy_config_free(&cfg);
  teardown_fixture(&f);
}

/* Two ranks of two, each with its own buffer, polled from this one thread: rank r reads exactly
 * the partitions p with p mod 2 = r, and together they store every event once. */
static void test_two_ranks(void **state) {
  (void)state;
  fixture_t f;
  setup_fixture(&f, 1);
  eddy_config_t cfg;
  load_config(&cfg, eddy_broker_bootstrap(f.broker), "g-ranks", NULL, 0);
  eddy_replay_t *bufs[2] = {open_buffer(f.dir, "rank0", 0, true),
                            open_buffer(f.dir, "rank1", 0, true)};
  eddy_ingest_opts_t opts[2] = {{.rank = 0, .ranks = 2, .max_batch = 50},
                                {.rank = 1, .ranks = 2, .max_batch = 50}};
  eddy_ingest_t *ings[2] = {new_ingest(&cfg, bufs[0], NULL, &opts[0]),
                            new_ingest(&cfg, bufs[1], NULL, &opts[1])};
  produce(&f, 1000);
  double deadline = eddy_clock_mono_s() + 30;
  while (stored_count(bufs[0]) + stored_count(bufs[1]) < 1000) {
    assert_true(eddy_clock_mono_s() < deadline);
    pump_for(ings, 2, 0.1);
  }
  produce(&f, 600); /* more while both read */
  while (stored_count(bufs[0]) + stored_count(bufs[1]) < 1600) {
    assert_true(eddy_clock_mono_s() < deadline);
    pump_for(ings, 2, 0.1);
  }
  pump_for(ings, 2, 1.0); /* a duplicate would show up as more than 1600 */
  for (int rank = 0; rank < 2; rank++) {
    eddy_ingest_stats_t st = eddy_ingest_stats(ings[rank]);
    assert_int_equal(st.assigned, PARTS / 2);
    assert_int_equal(st.events_ok, 800); /* event i is on partition i mod 4 */
    assert_int_equal(stored_count(bufs[rank]), 800);
    verify_owned(&f, bufs[rank], 0, rank, 2);
  }
  /* both commit to the one group: it shows every partition at its end */
  wait_commits_at_ends(&f, ings, 2, "g-ranks");
  for (int rank = 0; rank < 2; rank++) {
    eddy_ingest_destroy(ings[rank]);
    eddy_replay_destroy(bufs[rank]);
  }
  eddy_config_free(&cfg);
  teardown_fixture(&f);
}

/* A topic the cluster does not report when ingest starts (metadata answers UNKNOWN_TOPIC_OR_PART:
 * the mock cluster auto-creates any topic a metadata request names, so the test makes it answer
 * that instead): nothing is assigned, and every partition is picked up within a few seconds once
 * the topic shows. That is the path of partitions added to a topic, which the mock cluster of
 * librdkafka 2.0.2 cannot do. */
static void test_topic_shows_later(void **state) {
  (void)state;
  fixture_t f;
  setup_fixture(&f, 1);
  rd_kafka_mock_topic_set_error(eddy_broker_mock(f.broker), TOPIC,
                                RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART);
  eddy_config_t cfg;
  load_config(&cfg, eddy_broker_bootstrap(f.broker), "g-later", NULL, 0);
  eddy_replay_t *r = open_buffer(f.dir, "buf", 0, true);
  eddy_ingest_t *ing = new_ingest(&cfg, r, NULL, NULL);
  pump_for(&ing, 1, 1.5);
  assert_int_equal(eddy_ingest_stats(ing).assigned, 0);
  rd_kafka_mock_topic_set_error(eddy_broker_mock(f.broker), TOPIC, RD_KAFKA_RESP_ERR_NO_ERROR);
  double shown = eddy_clock_mono_s();
  while (eddy_ingest_stats(ing).assigned < PARTS) {
    assert_true(eddy_clock_mono_s() - shown < EDDY_TOPIC_WATCH_EVERY_MS / 1000.0 + 3);
    pump_for(&ing, 1, 0.1);
  }
  print_message("topic picked up %.2f s after it showed\n", eddy_clock_mono_s() - shown);
  produce(&f, 400);
  pump_until(&ing, 1, r, 400, 30);
  pump_for(&ing, 1, 0.5);
  assert_int_equal(stored_count(r), 400);
  verify_buffer(&f, r);
  eddy_ingest_destroy(ing);
  eddy_replay_destroy(r);
  eddy_config_free(&cfg);
  teardown_fixture(&f);
}

/* capacity 20 events and eviction off: ingest stores exactly 20 (re-reading after each refused
 * batch), stays paused without losing anything, and a bigger buffer later takes the rest. */
static void test_backpressure(void **state) {
  (void)state;
  fixture_t f;
  setup_fixture(&f, 1);
  eddy_config_t cfg;
  load_config(&cfg, eddy_broker_bootstrap(f.broker), "g-bp", NULL, 0);
  eddy_replay_t *r = open_buffer(f.dir, "buf", 20, false);
  eddy_registry_t *reg = eddy_registry_new();
  eddy_ingest_opts_t opts = {.retry_min_ms = 50, .retry_max_ms = 200};
  eddy_ingest_t *ing = new_ingest(&cfg, r, reg, &opts);
  produce(&f, 60);
  pump_until(&ing, 1, r, 20, 30);
  pump_for(&ing, 1, 2.0);
  eddy_ingest_stats_t st = eddy_ingest_stats(ing);
  print_message("backpressure: %" PRIu64 " pauses, %" PRIu64 " stored\n", st.backpressure,
                st.events_ok);
  assert_true(st.paused);
  assert_true(st.backpressure >= 2); /* paused, resumed, refused again */
  assert_int_equal(st.events_ok, 20);
  assert_int_equal(eddy_replay_stats(r).events, 20);
  char *text = eddy_registry_render(reg, NULL);
  assert_non_null(strstr(text, "eddy_ingest_paused 1\n"));
  free(text);
  /* what is stored is a prefix of each partition, with matching offsets */
  uint64_t sum = 0;
  for (int p = 0; p < PARTS; p++) {
    int64_t next = 0;
    if (eddy_replay_offset(r, TOPIC, p, &next) == EDDY_OK) sum += (uint64_t)next;
  }
  assert_int_equal(sum, 20);
  eddy_ingest_destroy(ing);
  eddy_replay_destroy(r);

  r = open_buffer(f.dir, "buf", 0, false);
  ing = new_ingest(&cfg, r, NULL, &opts);
  pump_until(&ing, 1, r, 60, 30);
  pump_for(&ing, 1, 0.5);
  assert_false(eddy_ingest_stats(ing).paused);
  verify_buffer(&f, r);
  eddy_ingest_destroy(ing);
  eddy_registry_destroy(reg);
  eddy_replay_destroy(r);
  eddy_config_free(&cfg);
  teardown_fixture(&f);
}

static void test_config_errors(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  eddy_replay_t *r = open_buffer(dir, "buf", 0, true);
  eddy_config_t cfg;
  const char *text = "[stream]\ntopic = t\n";
  assert_int_equal(
      eddy_config_load_string(&cfg, "t.ini", text, strlen(text), NULL, 0, errstr, sizeof errstr),
      EDDY_OK);
  assert_null(eddy_ingest_new(&cfg, r, NULL, NULL, errstr, sizeof errstr));
  assert_string_equal(
      errstr, "ingest: kafka.bootstrap.servers is not set (set it in [kafka] or with --set)");
  eddy_config_free(&cfg);
  load_config(&cfg, "127.0.0.1:1", "g", (const char *[]){"kafka.fetch.wait.max.ms=abc"}, 1);
  assert_null(eddy_ingest_new(&cfg, r, NULL, NULL, errstr, sizeof errstr));
  assert_non_null(strstr(errstr, "kafka.fetch.wait.max.ms = \"abc\""));
  eddy_config_free(&cfg);
  assert_null(eddy_ingest_new(NULL, r, NULL, NULL, errstr, sizeof errstr));
  load_config(&cfg, "127.0.0.1:1", "g", NULL, 0);
  eddy_ingest_opts_t bad_rank = {.rank = 2, .ranks = 2};
  assert_null(eddy_ingest_new(&cfg, r, &bad_rank, NULL, errstr, sizeof errstr));
  assert_string_equal(errstr, "ingest: rank 2 is not below ranks 2");
  eddy_config_free(&cfg);
  eddy_ingest_destroy(NULL);
  eddy_replay_destroy(r);
  eddy_test_rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_config_errors), cmocka_unit_test(test_flow_and_metrics),
      cmocka_unit_test(test_bad_events),    cmocka_unit_test(test_restart_new_group),
      cmocka_unit_test(test_faults),        cmocka_unit_test(test_commits_for_lag_tools),
      cmocka_unit_test(test_two_ranks),     cmocka_unit_test(test_topic_shows_later),
      cmocka_unit_test(test_backpressure),  cmocka_unit_test(test_destroy_brokers_gone),
  };
  if (getenv("EDDY_TEST_FILTER")) cmocka_set_test_filter(getenv("EDDY_TEST_FILTER"));
  return cmocka_run_group_tests(tests, NULL, NULL);
}
