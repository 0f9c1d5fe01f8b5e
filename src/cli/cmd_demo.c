/* `eddy demo`: the whole pipeline on the embedded default, as separate processes talking over
 * Kafka and HTTP exactly as in production: `eddy broker`, `eddy train` and two `eddy serve`
 * replicas, with Fashion-MNIST's training set streamed into the topic (timestamped, at a rate the
 * trainer's ingest keeps up with). Shows a live view, then scores the test set through a replica's
 * /v1/predict and prints a summary. Children run in their own process group and die with the
 * demo (PR_SET_PDEATHSIG); Ctrl-C stops them in order: replicas, trainer, broker. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "data/dataset.h"
#include "core/clock.h"
#include "core/event.h"
#include "core/fsutil.h"
#include "http/client.h"
#include "stream/producer.h"

#define DEMO_REPLICAS 2
#define DEMO_MAX_LAG 3000      /* events produced but not yet in the buffer before producing pauses */
#define DEMO_MIN_ACCURACY 0.70 /* a served model below this test accuracy fails the demo */

static const char demo_usage[] =
    "usage: eddy demo [--events N] [--rate N] [--dir DIR] [--port P] [--device D] [--json]\n"
    "                 [--keep-running]\n\n"
    "Runs the whole service on one machine, as separate processes talking over Kafka and HTTP\n"
    "exactly as in production: `eddy broker` (embedded, in memory), `eddy train` and two `eddy serve`\n"
    "replicas. Streams Fashion-MNIST's training set into the topic (each event stamped with the\n"
    "time it is sent), at up to --rate events/s and never more than 3000 ahead of the trainer's\n"
    "ingest. Shows progress live (a redrawn view on a terminal, a line every 5 s otherwise), asks\n"
    "for a last snapshot when every event is trained, waits until both replicas serve the current\n"
    "version, scores Fashion-MNIST's test set through a replica's POST /v1/predict, and prints a\n"
    "summary: events, seconds, versions promoted and rejected, test accuracy of the served version,\n"
    "freshness p50 (newest trained event to a replica serving the version).\n\n"
    "  -n, --events N      events to stream (default 60000, the whole training set)\n"
    "  -r, --rate N        most events per second (default 2000)\n"
    "  -d, --dir DIR       data folder: configs, logs, buffer, snapshots (default: a new folder under\n"
    "                      $TMPDIR or /tmp, removed after a successful run unless --keep-running;\n"
    "                      kept, with its logs, after a failure)\n"
    "  -p, --port P        the trainer's port: admin API and dashboard (default 8080, or a free port\n"
    "                      when it is taken; 0: any free port)\n"
    "      --device D      train.device for the trainer: cpu (default), cuda, cuda:N, cuda:all\n"
    "                      (cuda needs a build with -DEDDY_CUDA=ON)\n"
    "      --json          also print the summary as one JSON object on the last line\n"
    "      --keep-running  leave everything running after the summary, until Ctrl-C\n"
    "  -h, --help          this text\n\n"
    "Ctrl-C stops every process cleanly (replicas, trainer, broker, in that order).\n"
    "Exit: 0 when the served model scores at least 0.70 on the test set; 1 on a failure (a process\n"
    "that exits, a step that times out, or lower accuracy), with the reason and the log to read;\n"
    "2 on usage errors; 130 after Ctrl-C before the end.\n";

typedef struct {
  const char *name;
  pid_t pid;
  char log[4096];
} child_t;

static void nap(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* ---- child processes ---- */

/* Starts `eddy ARGS...` with stdout to LOG.out and stderr to LOG, in its own process group. */
static int spawn(child_t *c, const char *exe, const char *dir, const char *name, char *const argv[]) {
  c->name = name;
  snprintf(c->log, sizeof c->log, "%s/logs/%s.log", dir, name);
  char out[4200];
  snprintf(out, sizeof out, "%s/logs/%s.out", dir, name);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);
    int o = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int e = open(c->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0) _exit(127);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    execv(exe, argv);
    dprintf(2, "exec %s: %s\n", exe, strerror(errno));
    _exit(127);
  }
  c->pid = pid;
  return 0;
}

static bool alive(child_t *c) {
  if (c->pid <= 0) return false;
  int st;
  if (waitpid(c->pid, &st, WNOHANG) == c->pid) {
    c->pid = -c->pid;
    return false;
  }
  return true;
}

/* SIGTERM, then SIGKILL after 15 s. */
static void stop_child(child_t *c) {
  if (c->pid <= 0) return;
  kill(c->pid, SIGTERM);
  for (int i = 0; i < 300; i++) {
    if (waitpid(c->pid, NULL, WNOHANG) == c->pid) {
      c->pid = 0;
      return;
    }
    nap(50);
  }
  fprintf(stderr, "eddy demo: %s did not stop in 15 s; killing it\n", c->name);
  kill(c->pid, SIGKILL);
  waitpid(c->pid, NULL, 0);
  c->pid = 0;
}

/* The first line of file matching "PREFIX<value>" or containing NEEDLE followed by a number:
 * waits up to seconds while the child lives. Returns 1 with out filled. */
static int wait_for_text(child_t *c, const char *file, const char *needle, char *out, size_t out_size, double seconds) {
  double end = eddy_clock_mono_s() + seconds;
  size_t nl = strlen(needle);
  while (eddy_clock_mono_s() < end && !eddy_cli_stop_signal()) {
    FILE *f = fopen(file, "r");
    char line[2048];
    while (f && fgets(line, sizeof line, f)) {
      char *p = strstr(line, needle);
      if (!p) continue;
      p += nl;
      size_t n = strcspn(p, " \r\n)");
      if (n && n < out_size) {
        memcpy(out, p, n);
        out[n] = '\0';
        fclose(f);
        return 1;
      }
    }
    if (f) fclose(f);
    if (!alive(c)) return 0;
    nap(50);
  }
  return 0;
}

/* Last lines of a log, indented, for failure messages. */
static void show_tail(const char *file) {
  FILE *f = fopen(file, "r");
  if (!f) return;
  char lines[6][512];
  int n = 0;
  while (fgets(lines[n % 6], sizeof lines[0], f)) n++;
  fclose(f);
  for (int i = n > 6 ? n - 6 : 0; i < n; i++) fprintf(stderr, "  | %s", lines[i % 6]);
}

/* ---- HTTP ---- */

/* GET (body NULL) or POST; returns the HTTP status (-1 when unreachable) and the parsed JSON body
 * in *json (NULL when not JSON); *version gets X-Eddy-Version when present. */
static long http_json(eddy_http_client_t *c, const char *url, const char *body, const char *token, cJSON **json,
                      long *version) {
  eddy_http_request_t req = {.body = body, .token = token, .max_answer = 64u << 20, .timeout_ms = 60000};
  eddy_http_answer_t ans;
  char err[512];
  long status = eddy_http_client_call(c, url, &req, &ans, err, sizeof err) == EDDY_OK ? ans.status : -1;
  if (json) *json = ans.body ? cJSON_ParseWithLength(ans.body, ans.len) : NULL;
  if (version) *version = ans.version;
  eddy_http_answer_free(&ans);
  return status;
}

static double jnum(const cJSON *o, const char *a, const char *b) {
  const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, a);
  if (b) x = cJSON_GetObjectItemCaseSensitive(x, b);
  return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}

/* ---- the demo ---- */

typedef struct {
  const char *exe;
  char dir[1024];
  char token[64];
  unsigned port;
  int events;
  double rate;
  const char *device;
  bool json, keep, tty, made_dir;
  child_t broker, trainer, replicas[DEMO_REPLICAS];
  unsigned rport[DEMO_REPLICAS];
  char boot[256];
  char base[64]; /* http://127.0.0.1:PORT */
  eddy_http_client_t *curl;
  /* progress */
  int64_t sent, ingested, trained;
  double acc, logloss;
  long current, published, rejected, rversion[DEMO_REPLICAS];
  double fresh[4096];
  long fresh_version[4096];
  int n_fresh;
  int drawn;
} demo_t;

static unsigned pick_port(unsigned want) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return want;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)want)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  unsigned port = want;
  socklen_t len = sizeof a;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    a.sin_port = 0; /* taken: any free port */
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
      port = ntohs(a.sin_port);
  } else if (want == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0) {
    port = ntohs(a.sin_port);
  }
  close(fd);
  return port;
}

static int write_files(demo_t *d) {
  char path[4200];
  FILE *r = fopen("/dev/urandom", "rb");
  unsigned char raw[16];
  if (!r || fread(raw, 1, sizeof raw, r) != sizeof raw) {
    if (r) fclose(r);
    return fprintf(stderr, "eddy demo: cannot read /dev/urandom\n"), -1;
  }
  fclose(r);
  for (int i = 0; i < 16; i++) snprintf(d->token + 2 * i, 3, "%02x", raw[i]);
  snprintf(path, sizeof path, "%s/token", d->dir);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || dprintf(fd, "%s\n", d->token) < 0) return fprintf(stderr, "eddy demo: write %s failed\n", path), -1;
  close(fd);
  snprintf(path, sizeof path, "%s/demo.ini", d->dir);
  FILE *f = fopen(path, "w");
  if (!f) return fprintf(stderr, "eddy demo: write %s: %s\n", path, strerror(errno)), -1;
  fprintf(f,
          "# Written by `eddy demo`: the trainer runs `eddy train -c` on this file, the replicas `eddy serve -c`\n"
          "# on it with http.bind=127.0.0.1:0. Every key not set keeps its default (configs/reference.ini).\n"
          "[model]\nname = fashion-mnist\ndense_dim = 784\nembed_dim = 0\nhidden = 256,128\nhead = softmax\n"
          "classes = 10\n\n"
          "[train]\ndevice = %s\noptimizer = adagrad\nlr = 0.02\nbatch_size = 16\nholdout_fraction = 0.05\n\n"
          "[stream]\ntopic = events\n\n"
          "[kafka]\nbootstrap.servers = %s\n\n"
          "[buffer]\npath = %s/buffer\nsync = false\n\n"
          "[replay]\nratio = 0.2\n\n"
          "[snapshot]\nstore = %s/snapshots\nevery_steps = 500\nevery_seconds = 5\nkeep = 20\n"
          "topic = eddy-snapshots\n\n"
          "[serve]\ntrainer_url = %s\npoll_seconds = 5\nheartbeat_seconds = 2\n\n"
          "[http]\nbind = 127.0.0.1:%u\ntoken_file = %s/token\n",
          d->device, d->boot, d->dir, d->dir, d->base, d->port, d->dir);
  return fclose(f) == 0 ? 0 : -1;
}

static int fail_child(demo_t *d, child_t *c, const char *what) {
  fprintf(stderr, "eddy demo: %s %s (log: %s)\n", c->name, what, c->log);
  show_tail(c->log);
  (void)d;
  return -1;
}

static int start_all(demo_t *d) {
  char logs[1100];
  snprintf(logs, sizeof logs, "%.900s/logs", d->dir);
  if (eddy_mkdir_p(logs) != 0) return fprintf(stderr, "eddy demo: mkdir %s: %s\n", logs, strerror(errno)), -1;
  char *bargs[] = {(char *)d->exe, "broker", "--topic", "events", "--partitions", "8", "--topic",
                   "eddy-snapshots", "--partitions", "1", NULL};
  if (spawn(&d->broker, d->exe, d->dir, "broker", bargs) != 0) return fprintf(stderr, "eddy demo: fork failed\n"), -1;
  char out[4200];
  snprintf(out, sizeof out, "%s/logs/broker.out", d->dir);
  if (!wait_for_text(&d->broker, out, "bootstrap=", d->boot, sizeof d->boot, 15))
    return fail_child(d, &d->broker, "did not print its bootstrap address");
  snprintf(d->base, sizeof d->base, "http://127.0.0.1:%u", d->port);
  if (write_files(d) != 0) return -1;
  char ini[4200], port[16];
  snprintf(ini, sizeof ini, "%s/demo.ini", d->dir);
  char *targs[] = {(char *)d->exe, "train", "-c", ini, NULL};
  if (spawn(&d->trainer, d->exe, d->dir, "trainer", targs) != 0) return -1;
  if (!wait_for_text(&d->trainer, d->trainer.log, "admin API listening on port ", port, sizeof port, 60))
    return fail_child(d, &d->trainer, "did not start");
  for (int i = 0; i < DEMO_REPLICAS; i++) {
    static const char *names[] = {"replica-1", "replica-2"};
    char *rargs[] = {(char *)d->exe, "serve", "-c", ini, "--set", "http.bind=127.0.0.1:0", NULL};
    if (spawn(&d->replicas[i], d->exe, d->dir, names[i], rargs) != 0) return -1;
  }
  for (int i = 0; i < DEMO_REPLICAS; i++) {
    if (!wait_for_text(&d->replicas[i], d->replicas[i].log, "replica API listening on port ", port, sizeof port, 30))
      return fail_child(d, &d->replicas[i], "did not start");
    d->rport[i] = (unsigned)atoi(port);
  }
  return 0;
}

/* Refreshes the progress numbers from the trainer and the replicas. */
static void poll_state(demo_t *d) {
  char url[256];
  cJSON *j = NULL;
  snprintf(url, sizeof url, "%s/v1/status", d->base);
  if (http_json(d->curl, url, NULL, NULL, &j, NULL) == 200 && j) {
    double v;
    if (!isnan(v = jnum(j, "buffer", "next_seq"))) d->ingested = (int64_t)v;
    if (!isnan(v = jnum(j, "buffer", "cursor"))) d->trained = (int64_t)v;
    d->acc = jnum(j, "prequential", "accuracy");
    d->logloss = jnum(j, "prequential", "logloss");
    v = jnum(j, "current_version", NULL);
    d->current = isnan(v) ? 0 : (long)v;
    if (!isnan(v = jnum(j, "snapshots", "published"))) d->published = (long)v;
    if (!isnan(v = jnum(j, "snapshots", "rejected"))) d->rejected = (long)v;
  }
  cJSON_Delete(j);
  for (int i = 0; i < DEMO_REPLICAS; i++) {
    snprintf(url, sizeof url, "http://127.0.0.1:%u/v1/model", d->rport[i]);
    j = NULL;
    d->rversion[i] = 0;
    if (http_json(d->curl, url, NULL, NULL, &j, NULL) == 200 && j) {
      d->rversion[i] = (long)jnum(j, "version", NULL);
      double f = jnum(j, "freshness_seconds", NULL);
      /* One freshness sample per version (replica 1): its newest event to serving it. */
      if (i == 0 && !isnan(f) && d->n_fresh < 4096 &&
          (d->n_fresh == 0 || d->fresh_version[d->n_fresh - 1] != d->rversion[i])) {
        d->fresh_version[d->n_fresh] = d->rversion[i];
        d->fresh[d->n_fresh++] = f;
      }
    }
    cJSON_Delete(j);
  }
}

static void draw(demo_t *d, double rate, double elapsed, bool final) {
  char reps[128] = "";
  size_t o = 0;
  for (int i = 0; i < DEMO_REPLICAS; i++)
    o += d->rversion[i] ? (size_t)snprintf(reps + o, sizeof reps - o, "%s%d: v%ld", i ? "  " : "", i + 1, d->rversion[i])
                        : (size_t)snprintf(reps + o, sizeof reps - o, "%s%d: none yet", i ? "  " : "", i + 1);
  char acc[32] = "-";
  if (!isnan(d->acc)) snprintf(acc, sizeof acc, "%.3f", d->acc);
  if (d->tty) {
    const int width = 30;
    int fill = d->events ? (int)((double)d->trained * width / d->events) : 0;
    if (fill > width) fill = width;
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    if (d->drawn) printf("\033[%dA", d->drawn);
    printf("\033[2K  [%s] %" PRId64 "/%d events trained  %" PRId64 " sent  %.0f events/s  %.0fs\n", bar, d->trained,
           d->events, d->sent, rate, elapsed);
    printf("\033[2K  prequential accuracy %s   versions: current v%ld, %ld published, %ld rejected\n", acc, d->current,
           d->published, d->rejected);
    printf("\033[2K  replicas %s   dashboard %s/\n", reps, d->base);
    d->drawn = 3;
    fflush(stdout);
  } else if (!final) {
    printf("demo: %" PRId64 "/%d trained, %" PRId64 " sent, %.0f events/s, accuracy %s, current v%ld (%ld published, "
           "%ld rejected), replicas %s\n",
           d->trained, d->events, d->sent, rate, acc, d->current, d->published, d->rejected, reps);
    fflush(stdout);
  }
}

/* Streams the events; returns 0, or -1 on a failure or a stop. */
static int stream(demo_t *d, double t0) {
  char errstr[1024];
  eddy_producer_t *p = eddy_producer_new(NULL, d->boot, errstr, sizeof errstr);
  if (!p) return fprintf(stderr, "eddy demo: producer: %s\n", errstr), -1;
  eddy_event_schema_t schema = {.dense_dim = 784, .head = EDDY_HEAD_SOFTMAX, .classes = 10};
  eddy_dataset_t *ds = eddy_dataset_new("fashion-mnist:train", &schema, errstr, sizeof errstr);
  if (!ds) {
    eddy_producer_destroy(p);
    return fprintf(stderr, "eddy demo: %s (install dataset-fashion-mnist: ops/setup-deps)\n", errstr), -1;
  }
  eddy_event_t ev;
  eddy_event_init(&ev);
  int rc = 0;
  double next_poll = 0, next_draw = 0, last_t = eddy_clock_mono_s();
  int64_t last_trained = 0;
  double shown_rate = 0, tokens = 0, last_fill = eddy_clock_mono_s(), progress_at = eddy_clock_mono_s();
  int64_t progress_at_n = -1;
  bool eof = false;
  while (!eddy_cli_stop_signal()) {
    double t = eddy_clock_mono_s();
    if (t >= next_poll) {
      poll_state(d);
      next_poll = t + 0.25;
      if (!alive(&d->trainer)) {
        rc = fail_child(d, &d->trainer, "exited");
        break;
      }
      for (int i = 0; i < DEMO_REPLICAS; i++)
        if (!alive(&d->replicas[i])) rc = fail_child(d, &d->replicas[i], "exited");
      if (!alive(&d->broker)) rc = fail_child(d, &d->broker, "exited");
      if (rc) break;
    }
    if (t >= next_draw) {
      double dt = t - last_t;
      if (dt > 0) shown_rate = (double)(d->trained - last_trained) / dt;
      last_trained = d->trained;
      last_t = t;
      draw(d, shown_rate, t - t0, false);
      next_draw = t + (d->tty ? 0.5 : 5.0);
    }
    if (d->trained != progress_at_n) {
      progress_at_n = d->trained;
      progress_at = t;
    } else if (t - progress_at > 60) {
      fprintf(stderr, "eddy demo: the trainer trained nothing for 60 s (%" PRId64 " of %d events; log: %s)\n",
              d->trained, d->events, d->trainer.log);
      show_tail(d->trainer.log);
      rc = -1;
      break;
    }
    if (eof || d->sent >= d->events) {
      if (d->trained >= d->events) break;
      eddy_producer_poll(p, 50);
      continue;
    }
    /* Token bucket at --rate, and never more than DEMO_MAX_LAG ahead of the trainer's ingest. */
    tokens += (t - last_fill) * d->rate;
    last_fill = t;
    if (tokens > d->rate * 0.1) tokens = d->rate * 0.1;
    int sent_now = 0;
    while (tokens >= 1 && d->sent - d->ingested < DEMO_MAX_LAG && d->sent < d->events) {
      bool end = false;
      eddy_err_t err = eddy_dataset_next(ds, &ev, &end, errstr, sizeof errstr);
      if (err || end) {
        if (err) fprintf(stderr, "eddy demo: dataset: %s\n", errstr);
        eof = true;
        if (d->sent < d->events) d->events = (int)d->sent; /* the dataset is shorter */
        break;
      }
      ev.ts = eddy_clock_wall_ms();
      ev.has_ts = true;
      snprintf(ev.id, sizeof ev.id, "train-%" PRId64, d->sent);
      char *json = eddy_event_to_json(&ev);
      if (!json) {
        fprintf(stderr, "eddy demo: out of memory\n");
        rc = -1;
        break;
      }
      err = eddy_producer_send(p, "events", -1, ev.id, strlen(ev.id), json, strlen(json), errstr, sizeof errstr);
      free(json);
      if (err) {
        fprintf(stderr, "eddy demo: produce: %s\n", errstr);
        rc = -1;
        break;
      }
      d->sent++;
      tokens -= 1;
      sent_now++;
    }
    if (rc) break;
    eddy_producer_poll(p, sent_now ? 0 : 10);
  }
  if (!rc && !eddy_cli_stop_signal() && eddy_producer_flush(p, 30000, errstr, sizeof errstr) != EDDY_OK) {
    fprintf(stderr, "eddy demo: produce: %s\n", errstr);
    rc = -1;
  }
  eddy_producer_stats_t st = eddy_producer_stats(p);
  if (!rc && st.failed) {
    fprintf(stderr, "eddy demo: %" PRIu64 " events were not delivered: %s\n", st.failed, eddy_producer_first_error(p));
    rc = -1;
  }
  eddy_event_free(&ev);
  eddy_dataset_destroy(ds);
  eddy_producer_destroy(p);
  return eddy_cli_stop_signal() ? -1 : rc;
}

/* A last snapshot, then both replicas on the current version. */
static int settle(demo_t *d) {
  char url[256];
  snprintf(url, sizeof url, "%s/v1/snapshot", d->base);
  cJSON *j = NULL;
  long st = http_json(d->curl, url, "{}", d->token, &j, NULL);
  cJSON_Delete(j);
  if (st != 200) fprintf(stderr, "eddy demo: POST /v1/snapshot answered %ld; going on with the current version\n", st);
  double end = eddy_clock_mono_s() + 30;
  while (!eddy_cli_stop_signal() && eddy_clock_mono_s() < end) {
    poll_state(d);
    bool all = d->current > 0;
    for (int i = 0; i < DEMO_REPLICAS; i++) all = all && d->rversion[i] == d->current;
    if (all) return 0;
    nap(200);
  }
  if (eddy_cli_stop_signal()) return -1;
  fprintf(stderr, "eddy demo: the replicas did not reach the current version v%ld in 30 s (logs: %s/logs)\n",
          d->current, d->dir);
  return -1;
}

/* Scores the test set through replica 1. */
static int score(demo_t *d, double *accuracy, long *version) {
  char errstr[1024], url[128];
  eddy_event_schema_t schema = {.dense_dim = 784, .head = EDDY_HEAD_SOFTMAX, .classes = 10};
  eddy_dataset_t *ds = eddy_dataset_new("fashion-mnist:test", &schema, errstr, sizeof errstr);
  if (!ds) return fprintf(stderr, "eddy demo: %s\n", errstr), -1;
  snprintf(url, sizeof url, "http://127.0.0.1:%u/v1/predict", d->rport[0]);
  eddy_event_t ev;
  eddy_event_init(&ev);
  enum { CHUNK = 100 };
  int labels[CHUNK], n = 0, correct = 0, total = 0, rc = 0;
  size_t cap = 1 << 20, len = 0;
  char *body = malloc(cap);
  bool eof = false;
  *version = -1;
  while (!rc && !eddy_cli_stop_signal() && body) {
    if (!eof) {
      eddy_err_t err = eddy_dataset_next(ds, &ev, &eof, errstr, sizeof errstr);
      if (err) {
        fprintf(stderr, "eddy demo: test set: %s\n", errstr);
        rc = -1;
        break;
      }
    }
    if (!eof) {
      char *json = eddy_event_to_json(&ev);
      size_t jl = json ? strlen(json) : 0;
      if (!json || len + jl + 32 > cap) {
        free(json);
        fprintf(stderr, "eddy demo: test request too large\n");
        rc = -1;
        break;
      }
      len += (size_t)sprintf(body + len, "%s%s", n ? "," : "{\"instances\":[", json);
      free(json);
      labels[n++] = (int)ev.label;
    }
    if (n == CHUNK || (eof && n)) {
      sprintf(body + len, "]}");
      cJSON *j = NULL;
      long v = -1, st = http_json(d->curl, url, body, NULL, &j, &v);
      const cJSON *preds = cJSON_GetObjectItemCaseSensitive(j, "predictions");
      if (st != 200 || cJSON_GetArraySize(preds) != n) {
        fprintf(stderr, "eddy demo: POST %s answered %ld\n", url, st);
        cJSON_Delete(j);
        rc = -1;
        break;
      }
      if (*version < 0) *version = v;
      int i = 0;
      for (const cJSON *p = preds ? preds->child : NULL; p; p = p->next, i++) {
        int best = 0, k = 0;
        double bv = -1;
        for (const cJSON *x = p->child; x; x = x->next, k++)
          if (x->valuedouble > bv) bv = x->valuedouble, best = k;
        correct += best == labels[i];
      }
      total += n;
      cJSON_Delete(j);
      n = 0;
      len = 0;
    }
    if (eof && n == 0) break;
  }
  free(body);
  eddy_event_free(&ev);
  eddy_dataset_destroy(ds);
  if (rc || eddy_cli_stop_signal() || total == 0) return -1;
  *accuracy = (double)correct / total;
  return 0;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void stop_all(demo_t *d) {
  for (int i = 0; i < DEMO_REPLICAS; i++) stop_child(&d->replicas[i]);
  stop_child(&d->trainer);
  stop_child(&d->broker);
}

static int rm_rf(const char *dir) {
  pid_t pid = fork();
  if (pid == 0) {
    execlp("rm", "rm", "-rf", "--", dir, (char *)NULL);
    _exit(127);
  }
  int st = 0;
  if (pid > 0) waitpid(pid, &st, 0);
  return pid > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

int eddy_cmd_demo(int argc, char **argv) {
  static const struct option opts[] = {{"events", required_argument, NULL, 'n'},
                                       {"rate", required_argument, NULL, 'r'},
                                       {"dir", required_argument, NULL, 'd'},
                                       {"port", required_argument, NULL, 'p'},
                                       {"device", required_argument, NULL, 'D'},
                                       {"json", no_argument, NULL, 'j'},
                                       {"keep-running", no_argument, NULL, 'k'},
                                       EDDY_CLI_OPT_HELP,
                                       {NULL, 0, NULL, 0}};
  static demo_t dd;
  demo_t *d = &dd;
  memset(d, 0, sizeof *d);
  d->events = 60000;
  d->rate = 2000;
  d->device = "cpu";
  unsigned want_port = 8080;
  const char *dir = NULL;
  eddy_cli_t cli = {.cmd = "demo", .usage = demo_usage};
  int c;
  while ((c = eddy_cli_getopt(&cli, argc, argv, "n:r:d:p:h", opts)) != -1) {
    char *end = NULL;
    switch (c) {
      case 'n':
        d->events = (int)strtol(optarg, &end, 10);
        if (!*optarg || *end || d->events < 1 || d->events > 60000) {
          fprintf(stderr, "eddy demo: --events \"%s\": expected 1..60000\n", optarg);
          return EDDY_EXIT_USAGE;
        }
        break;
      case 'r':
        d->rate = strtod(optarg, &end);
        if (!*optarg || *end || !(d->rate >= 1 && d->rate <= 1e6)) {
          fprintf(stderr, "eddy demo: --rate \"%s\": expected 1..1000000 events/s\n", optarg);
          return EDDY_EXIT_USAGE;
        }
        break;
      case 'd': dir = optarg; break;
      case 'p': {
        long v = strtol(optarg, &end, 10);
        if (!*optarg || *end || v < 0 || v > 65535) {
          fprintf(stderr, "eddy demo: --port \"%s\": expected 0..65535 (0: any free port)\n", optarg);
          return EDDY_EXIT_USAGE;
        }
        want_port = (unsigned)v;
        break;
      }
      case 'D':
        if (strcmp(optarg, "cpu") && strcmp(optarg, "cuda") && strcmp(optarg, "cuda:all") && strncmp(optarg, "cuda:", 5)) {
          fprintf(stderr, "eddy demo: --device \"%s\": expected cpu, cuda, cuda:N or cuda:all\n", optarg);
          return EDDY_EXIT_USAGE;
        }
        d->device = optarg;
        break;
      case 'j': d->json = true; break;
      case 'k': d->keep = true; break;
      default: return cli.exit; /* EDDY_CLI_STOP: --help or a usage error, printed */
    }
  }
  static char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) {
    fprintf(stderr, "eddy demo: cannot find its own binary (/proc/self/exe)\n");
    return EDDY_EXIT_FAILURE;
  }
  exe[n] = '\0';
  d->exe = exe;
  if (dir && strlen(dir) >= 900) {
    fprintf(stderr, "eddy demo: --dir is longer than 900 bytes\n");
    return EDDY_EXIT_USAGE;
  }
  if (dir) {
    snprintf(d->dir, sizeof d->dir, "%s", dir);
    if (eddy_mkdir_p(d->dir) != 0) {
      fprintf(stderr, "eddy demo: --dir %s: %s\n", d->dir, strerror(errno));
      return EDDY_EXIT_FAILURE;
    }
    char probe[4200];
    snprintf(probe, sizeof probe, "%.900s/snapshots", d->dir);
    struct stat sb;
    if (stat(probe, &sb) == 0) {
      fprintf(stderr, "eddy demo: --dir %s holds an earlier demo (snapshots/); pick an empty folder\n", d->dir);
      return EDDY_EXIT_USAGE;
    }
  } else {
    const char *tmp = getenv("TMPDIR");
    snprintf(d->dir, sizeof d->dir, "%s/eddy-demo-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(d->dir)) {
      fprintf(stderr, "eddy demo: mkdtemp %s: %s\n", d->dir, strerror(errno));
      return EDDY_EXIT_FAILURE;
    }
    d->made_dir = true;
  }
  d->port = pick_port(want_port);
  d->tty = isatty(STDOUT_FILENO);
  d->acc = NAN;
  d->curl = eddy_http_client_new("eddy-demo/" EDDY_VERSION);
  eddy_cli_catch_stop_signals();
  signal(SIGPIPE, SIG_IGN);

  int rc = EDDY_EXIT_FAILURE;
  double t0 = eddy_clock_mono_s();
  printf("eddy demo: Fashion-MNIST, %d events at up to %.0f/s; broker, trainer and %d replicas as separate "
         "processes\n  data and logs: %s\n",
         d->events, d->rate, DEMO_REPLICAS, d->dir);
  fflush(stdout);
  double accuracy = NAN;
  long served = -1;
  if (!d->curl || start_all(d) != 0) goto out;
  printf("  dashboard: %s/   replicas: http://127.0.0.1:%u  http://127.0.0.1:%u\n", d->base, d->rport[0], d->rport[1]);
  fflush(stdout);
  if (stream(d, t0) != 0 || settle(d) != 0) goto out;
  draw(d, (double)d->trained / fmax(eddy_clock_mono_s() - t0, 1e-3), eddy_clock_mono_s() - t0, true); /* the average rate */
  if (score(d, &accuracy, &served) != 0) {
    if (!eddy_cli_stop_signal()) fprintf(stderr, "eddy demo: scoring the test set failed\n");
    goto out;
  }
  double seconds = eddy_clock_mono_s() - t0;
  double p50 = NAN;
  if (d->n_fresh) {
    qsort(d->fresh, (size_t)d->n_fresh, sizeof d->fresh[0], cmp_double);
    p50 = d->fresh[d->n_fresh / 2];
  }
  long promoted = d->published - d->rejected;
  printf("\n  %-36s %" PRId64 "\n", "events streamed and trained", d->trained);
  printf("  %-36s %.1f\n", "seconds", seconds);
  printf("  %-36s %ld\n", "versions promoted", promoted);
  printf("  %-36s %ld\n", "versions rejected by the gate", d->rejected);
  printf("  %-36s v%ld\n", "version served", served);
  printf("  %-36s %.4f\n", "test accuracy (10000 images, replica)", accuracy);
  if (isnan(p50)) printf("  %-36s -\n", "freshness p50 (event to serving)");
  else printf("  %-36s %.2f s over %d versions\n", "freshness p50 (event to serving)", p50, d->n_fresh);
  if (d->json) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "events", (double)d->trained);
    cJSON_AddNumberToObject(o, "seconds", round(seconds * 10) / 10);
    cJSON_AddNumberToObject(o, "versions_promoted", (double)promoted);
    cJSON_AddNumberToObject(o, "versions_rejected", (double)d->rejected);
    cJSON_AddNumberToObject(o, "version_served", (double)served);
    cJSON_AddNumberToObject(o, "test_accuracy", accuracy);
    if (isnan(p50)) cJSON_AddNullToObject(o, "freshness_p50_seconds");
    else cJSON_AddNumberToObject(o, "freshness_p50_seconds", p50);
    cJSON_AddStringToObject(o, "dashboard", d->base);
    cJSON_AddStringToObject(o, "dir", d->dir);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (text) printf("%s\n", text);
    free(text);
  }
  fflush(stdout);
  if (accuracy < DEMO_MIN_ACCURACY) {
    fprintf(stderr, "eddy demo: test accuracy %.4f is below %.2f: the served model did not learn (logs: %s/logs)\n",
            accuracy, DEMO_MIN_ACCURACY, d->dir);
    goto out;
  }
  rc = EDDY_EXIT_OK;
  if (d->keep) {
    printf("\n  still running (Ctrl-C stops everything): dashboard %s/, token in %s/token\n", d->base, d->dir);
    fflush(stdout);
    while (!eddy_cli_stop_signal()) {
      nap(200);
      if (!alive(&d->trainer) || !alive(&d->broker)) {
        fprintf(stderr, "eddy demo: a process exited (logs: %s/logs)\n", d->dir);
        rc = EDDY_EXIT_FAILURE;
        break;
      }
    }
  }
out:
  if (eddy_cli_stop_signal() && rc != EDDY_EXIT_OK) fprintf(stderr, "\neddy demo: interrupted; stopping\n");
  stop_all(d);
  eddy_http_client_destroy(d->curl);
  if (eddy_cli_stop_signal() && !(d->keep && rc == EDDY_EXIT_OK)) rc = 130;
  if (d->made_dir && !d->keep && rc == EDDY_EXIT_OK) rm_rf(d->dir);
  else if (rc != EDDY_EXIT_OK) fprintf(stderr, "eddy demo: logs kept in %s/logs\n", d->dir);
  else if (d->keep) printf("eddy demo: stopped; data kept in %s\n", d->dir);
  return rc;
}
