/* Trainer benchmarks, in process against the embedded broker (run by tests/bench/run-freshness):
 *  publish: the time eddy_trainer_snapshot takes (write weights + state with fsync on the training
 *    thread, holdout scoring, commit with sha256 + fsync + rename, CURRENT, announcement) for
 *    softmax MLPs of growing size on 784 dense inputs;
 *  freshness: events produced at a steady rate with ts = now into Kafka, `eddy train`'s threads
 *    (ingest, training, publishing every snapshot.every_seconds); for each event, the time from its
 *    ts to the moment CURRENT names a version whose buffer cursor is past it.
 *    With --gate N, half the events are held out and the gate scores the candidate and CURRENT
 *    on a full holdout window of N events (snapshot.gate.holdout_events = N) at every publish.
 * usage: bench_freshness [--publish-only | --freshness-only] [--seconds S] [--rate R] [--every S]
 *                        [--gate N] [--dir DIR] */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "buffer/replay.h"
#include "config/config.h"
#include "core/clock.h"
#include "core/log.h"
#include "snapshot/store.h"
#include "stream/broker.h"
#include "stream/producer.h"
#include "train/trainer.h"

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p) {
  if (!n) return NAN;
  size_t i = (size_t)(p * (double)(n - 1) + 0.5);
  return v[i < n ? i : n - 1];
}

static void die(const char *what, const char *err) {
  fprintf(stderr, "bench_freshness: %s: %s\n", what, err);
  exit(1);
}

/* gate_events > 0: half the events held out and a holdout window of gate_events (the gate scores
 * the candidate and CURRENT on all of them); 0: no holdout. */
static void load_config(eddy_config_t *cfg, const char *dir, const char *bootstrap, const char *hidden,
                        int every_seconds, bool ingest, int gate_events) {
  const char *text =
      "[model]\nname = bench\ndense_dim = 784\nembed_dim = 0\nhead = softmax\nclasses = 10\n"
      "[train]\noptimizer = adagrad\nlr = 0.02\nbatch_size = 16\nholdout_fraction = 0\n"
      "[replay]\nratio = 0.2\n[stream]\ntopic = events\n[buffer]\nsync = false\n"
      "[snapshot]\nevery_steps = 0\nkeep = 5\ntopic = snaps\n";
  char sets[16][4200]; /* room for a PATH_MAX folder */
  const char *p[16];
  size_t n = 0;
  snprintf(sets[n++], sizeof sets[0], "model.hidden=%s", hidden);
  snprintf(sets[n++], sizeof sets[0], "buffer.path=%s/buf", dir);
  snprintf(sets[n++], sizeof sets[0], "snapshot.store=%s/store", dir);
  snprintf(sets[n++], sizeof sets[0], "snapshot.every_seconds=%d", every_seconds);
  snprintf(sets[n++], sizeof sets[0], "kafka.bootstrap.servers=%s", bootstrap);
  if (gate_events > 0) {
    snprintf(sets[n++], sizeof sets[0], "train.holdout_fraction=0.5");
    snprintf(sets[n++], sizeof sets[0], "snapshot.gate.holdout_events=%d", gate_events);
    snprintf(sets[n++], sizeof sets[0], "snapshot.gate.min_events=1");
  }
  if (ingest) snprintf(sets[n++], sizeof sets[0], "kafka.fetch.wait.max.ms=20");
  for (size_t i = 0; i < n; i++) p[i] = sets[i];
  char err[1024];
  if (eddy_config_load_string(cfg, "bench.ini", text, strlen(text), p, n, err, sizeof err)) die("config", err);
}

static void fill_event(eddy_event_t *ev, uint64_t i, int64_t ts) {
  snprintf(ev->id, sizeof ev->id, "b-%" PRIu64, i);
  ev->ts = ts;
  ev->has_ts = true;
  ev->label = (double)(i % 10);
  ev->weight = 1;
  ev->n_dense = 784;
  uint64_t s = i * 0x9e3779b97f4a7c15ull + 1;
  for (int k = 0; k < 784; k++) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    ev->dense[k] = (float)((s >> 40) & 0xff) / 255.0f * (k % 10 == (int)(i % 10) ? 1.0f : 0.3f);
  }
}

static double file_mb(eddy_store_t *s, uint64_t v, const char *f) {
  char path[4096];
  struct stat st;
  eddy_store_path(s, v, f, path, sizeof path);
  return stat(path, &st) == 0 ? st.st_size / 1048576.0 : 0;
}

static void bench_publish(const char *base, const char *bootstrap, int gate_events) {
  const char *sizes[] = {"64", "512,512", "2048,2048", "4096,4096"};
  printf("publish time (eddy_trainer_snapshot: write + fsync + gate + commit + CURRENT + announce), F32, "
         "holdout window %d events\n", gate_events);
  printf("| hidden | parameters | weights MB | state MB | p50 ms | max ms | runs |\n|---|---|---|---|---|---|---|\n");
  for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++) {
    char dir[4096], err[1024];
    snprintf(dir, sizeof dir, "%s/publish-%zu", base, z);
    mkdir(dir, 0755);
    eddy_config_t cfg;
    load_config(&cfg, dir, bootstrap, sizes[z], 0, false, gate_events);
    eddy_trainer_opts_t o = {.no_ingest = true};
    eddy_trainer_t *t = eddy_trainer_new(&cfg, &o, NULL, err, sizeof err);
    if (!t) die("trainer", err);
    if (eddy_trainer_start(t, err, sizeof err)) die("start", err);
    eddy_event_t ev;
    eddy_event_init(&ev);
    float dense[784];
    ev.dense = dense;
    enum { RUNS = 8 };
    double ms[RUNS];
    uint64_t v = 0;
    const eddy_event_t *pe = &ev;
    for (int k = 0; k < 2 * gate_events + 1; k++) { /* fill the holdout window, and a CURRENT */
      fill_event(&ev, 1000000 + (uint64_t)k, eddy_clock_wall_ms());
      if (eddy_replay_append(eddy_trainer_buffer(t), &pe, 1, NULL, 0, NULL, 0, NULL, err, sizeof err))
        die("append", err);
    }
    if (gate_events > 0 && eddy_trainer_snapshot(t, 600000, &v, err, sizeof err)) die("snapshot", err);
    for (int r = 0; r < RUNS; r++) {
      for (int k = 0; k < 32; k++) { /* a couple of steps between versions */
        fill_event(&ev, (uint64_t)(r * 32 + k), eddy_clock_wall_ms());
        if (eddy_replay_append(eddy_trainer_buffer(t), &pe, 1, NULL, 0, NULL, 0, NULL, err, sizeof err))
          die("append", err);
      }
      usleep(50000);
      double t0 = eddy_clock_mono_s();
      if (eddy_trainer_snapshot(t, 120000, &v, err, sizeof err)) die("snapshot", err);
      ms[r] = (eddy_clock_mono_s() - t0) * 1e3;
    }
    ev.dense = NULL;
    eddy_event_free(&ev);
    qsort(ms, RUNS, sizeof ms[0], cmp_double);
    double wmb = file_mb(eddy_trainer_store(t), v, EDDY_STORE_WEIGHTS);
    double smb = file_mb(eddy_trainer_store(t), v, EDDY_STORE_STATE);
    printf("| %s | %.2fM | %.1f | %.1f | %.1f | %.1f | %d |\n", sizes[z], wmb * 1048576 / 4 / 1e6, wmb, smb,
           pct(ms, RUNS, 0.5), ms[RUNS - 1], RUNS);
    fflush(stdout);
    eddy_trainer_destroy(t);
    eddy_config_free(&cfg);
  }
}

typedef struct {
  eddy_producer_t *p;
  double rate, seconds;
  uint64_t sent;
  volatile int stop;
} producer_arg_t;

static void *produce_main(void *arg) {
  producer_arg_t *a = arg;
  eddy_event_t ev;
  eddy_event_init(&ev);
  float dense[784];
  ev.dense = dense;
  char err[512];
  double start = eddy_clock_mono_s();
  while (!a->stop && eddy_clock_mono_s() - start < a->seconds) {
    double due = start + (double)a->sent / a->rate;
    double now = eddy_clock_mono_s();
    if (now < due) {
      usleep((useconds_t)((due - now) * 1e6));
      continue;
    }
    fill_event(&ev, a->sent, eddy_clock_wall_ms());
    char *json = eddy_event_to_json(&ev);
    if (!json || eddy_producer_send(a->p, "events", -1, ev.id, strlen(ev.id), json, strlen(json), err, sizeof err))
      die("produce", err);
    free(json);
    eddy_producer_poll(a->p, 0);
    a->sent++;
  }
  eddy_producer_flush(a->p, 10000, err, sizeof err);
  ev.dense = NULL;
  eddy_event_free(&ev);
  return NULL;
}

static void bench_freshness(const char *base, const char *bootstrap, double seconds, double rate, int every) {
  char dir[4096], err[1024];
  snprintf(dir, sizeof dir, "%s/freshness", base);
  mkdir(dir, 0755);
  eddy_config_t cfg;
  load_config(&cfg, dir, bootstrap, "64", every, true, 0);
  eddy_trainer_opts_t o = {0};
  eddy_trainer_t *t = eddy_trainer_new(&cfg, &o, NULL, err, sizeof err);
  if (!t) die("trainer", err);
  if (eddy_trainer_start(t, err, sizeof err)) die("start", err);
  /* wait for the consumer group (the mock cluster's join takes ~3 s) */
  for (double end = eddy_clock_mono_s() + 20; eddy_clock_mono_s() < end;) {
    char *s = eddy_trainer_status_json(t);
    cJSON *j = cJSON_Parse(s);
    free(s);
    double assigned = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "ingest"), "assigned")->valuedouble;
    cJSON_Delete(j);
    if (assigned > 0) break;
    usleep(50000);
  }
  producer_arg_t pa = {.rate = rate, .seconds = seconds};
  pa.p = eddy_producer_new(NULL, bootstrap, err, sizeof err);
  if (!pa.p) die("producer", err);
  pthread_t th;
  pthread_create(&th, NULL, produce_main, &pa);
  eddy_store_t *store = eddy_trainer_store(t);
  eddy_replay_t *buf = eddy_trainer_buffer(t);
  size_t cap = (size_t)(rate * seconds) + 16, n = 0;
  double *fresh = malloc(cap * sizeof *fresh);
  uint64_t seen_cursor = 0, cur_seen = 0, versions = 0;
  eddy_event_t evs[64];
  uint64_t seqs[64];
  for (int i = 0; i < 64; i++) eddy_event_init(&evs[i]);
  double end = eddy_clock_mono_s() + seconds + 5;
  while (eddy_clock_mono_s() < end) {
    uint64_t cur = 0;
    if (eddy_store_current(store, &cur, err, sizeof err) == EDDY_OK && cur != cur_seen) {
      int64_t now = eddy_clock_wall_ms();
      cur_seen = cur;
      eddy_manifest_t m;
      if (eddy_store_load_manifest(store, cur, &m, err, sizeof err) == EDDY_OK) {
        versions++;
        for (uint64_t from = seen_cursor; from < m.buffer_cursor;) {
          size_t got = 0;
          if (eddy_replay_read(buf, from, 64, evs, seqs, &got) || !got) break;
          for (size_t k = 0; k < got && seqs[k] < m.buffer_cursor; k++)
            if (n < cap && evs[k].has_ts) fresh[n++] = (double)(now - evs[k].ts) / 1e3;
          from = seqs[got - 1] + 1;
        }
        if (m.buffer_cursor > seen_cursor) seen_cursor = m.buffer_cursor;
      }
      eddy_manifest_clear(&m);
    }
    usleep(2000);
  }
  pa.stop = 1;
  pthread_join(th, NULL);
  qsort(fresh, n, sizeof *fresh, cmp_double);
  printf("\nfreshness: event ts -> CURRENT names a version trained on it (snapshot.every_seconds = %d, "
         "%.0f events/s for %.0f s, 784-64-10 softmax, polled every 2 ms)\n",
         every, rate, seconds);
  printf("| events | versions | p50 s | p90 s | p99 s | max s |\n|---|---|---|---|---|---|\n");
  printf("| %zu | %" PRIu64 " | %.3f | %.3f | %.3f | %.3f |\n", n, versions, pct(fresh, n, 0.5), pct(fresh, n, 0.9),
         pct(fresh, n, 0.99), n ? fresh[n - 1] : NAN);
  for (int i = 0; i < 64; i++) eddy_event_free(&evs[i]);
  free(fresh);
  eddy_producer_destroy(pa.p);
  eddy_trainer_destroy(t);
  eddy_config_free(&cfg);
}

int main(int argc, char **argv) {
  bool publish = true, freshness = true;
  double seconds = 20, rate = 200;
  int every = 1, gate_events = 0;
  const char *dir = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--publish-only")) freshness = false;
    else if (!strcmp(argv[i], "--freshness-only")) publish = false;
    else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
    else if (!strcmp(argv[i], "--rate") && i + 1 < argc) rate = atof(argv[++i]);
    else if (!strcmp(argv[i], "--every") && i + 1 < argc) every = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
    else if (!strcmp(argv[i], "--gate") && i + 1 < argc) gate_events = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: bench_freshness [--publish-only | --freshness-only] [--seconds S] [--rate R] "
                      "[--every S] [--gate N] [--dir DIR]\n");
      return 2;
    }
  }
  if (!(seconds > 0 && rate > 0 && every >= 1 && gate_events >= 0 && gate_events <= 100000)) {
    fprintf(stderr, "bench_freshness: --seconds and --rate must be > 0, --every >= 1, --gate 0..100000\n");
    return 2;
  }
  char tmpl[] = "/tmp/eddy-bench-fresh-XXXXXX";
  if (!dir && !(dir = mkdtemp(tmpl))) die("mkdtemp", "failed");
  eddy_log_set_level(EDDY_LOG_WARN);
  char err[512];
  eddy_broker_t *b = eddy_broker_new(0, 1, err, sizeof err);
  if (!b) die("broker", err);
  if (eddy_broker_add_topic(b, "events", 8, err, sizeof err) || eddy_broker_add_topic(b, "snaps", 1, err, sizeof err))
    die("topics", err);
  if (publish) bench_publish(dir, eddy_broker_bootstrap(b), gate_events);
  if (freshness) bench_freshness(dir, eddy_broker_bootstrap(b), seconds, rate, every);
  eddy_broker_destroy(b);
  printf("\n(work folder %s)\n", dir);
  return 0;
}
