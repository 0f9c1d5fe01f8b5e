/* `eddy produce`: streams a dataset into a Kafka topic as JSON events, optionally rate-limited
 * and keyed by a field, and checks every delivery report: it exits 1 unless every message sent
 * was acknowledged. JSONL lines go out verbatim (valid or not: a producer is not a validator);
 * Fashion-MNIST images are written as JSON events. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli/cli.h"
#include "config/config.h"
#include "data/dataset.h"
#include "core/clock.h"
#include "core/log.h"
#include "stream/producer.h"

#define KEY_MAX 1024
#define FLUSH_SLICE_MS 200

static const char produce_usage[] =
    "usage: eddy produce -b BOOTSTRAP -t TOPIC --data DATASET [--rate N] [--limit N]\n"
    "                    [--key FIELD] [-c CONFIG] [--set kafka.KEY=VALUE]...\n\n"
    "Streams DATASET into TOPIC, one JSON event per message, and waits for every delivery\n"
    "report. Exit 0 only when every message sent was acknowledged by the broker.\n\n"
    "  -b, --bootstrap HOSTS   bootstrap.servers (overrides kafka.bootstrap.servers of -c/--set;\n"
    "                          required unless one of those sets it)\n"
    "  -t, --topic TOPIC       topic to write to\n"
    "  -d, --data DATASET      JSONL file (plain or gzip; - for stdin), fashion-mnist:train or\n"
    "                          fashion-mnist:test\n"
    "  -r, --rate N            messages per second, smoothly (token bucket, bursts of at most\n"
    "                          N/100); 0 or absent: as fast as the broker takes them\n"
    "  -n, --limit N           stop after N messages\n"
    "  -k, --key FIELD         message key = that top-level field of the event (a string as is, a\n"
    "                          number as its JSON text); no key when absent or not JSON, and then\n"
    "                          librdkafka's partitioner spreads messages. Equal keys share a\n"
    "                          partition, in order.\n"
    "  -c, --config FILE       INI config (checked whole); only its [kafka] section is used\n"
    "  -s, --set kafka.K=V     set one librdkafka property (repeatable), e.g.\n"
    "                          --set kafka.message.timeout.ms=5000 --set kafka.acks=all\n"
    "      --flush-timeout S   seconds to wait at the end for outstanding deliveries (default 60)\n"
    "  -h, --help              this text\n\n"
    "What is sent: each non-blank JSONL line, byte for byte without its line ending, valid event\n"
    "or not (so tests can push bad events; the consumer validates). Fashion-MNIST images become\n"
    "{\"id\":\"fmnist-SPLIT-NNNNNN\",\"label\":L,\"weight\":1,\"dense\":[784 pixels / 255]}.\n"
    "A full local queue is waited out (back-pressure), never dropped. SIGINT stops producing,\n"
    "then outstanding messages are flushed and the summary printed (a second SIGINT stops the\n"
    "flush). The summary goes to stdout as one line: sent= delivered= failed= seconds= rate=;\n"
    "progress goes to stderr (a bar on a terminal, a line every 5 s otherwise).\n\n"
    "Against `eddy broker`: it keeps only ~5 MiB per partition (about 15k events of 300 bytes,\n"
    "or ~900 Fashion-MNIST events), dropping the oldest silently, so do not run far ahead of the\n"
    "consumer; use --rate.\n"
    "Exit: 0 all delivered, 1 a delivery failed, the flush timed out or the data cannot be read,\n"
    "2 usage or configuration error.\n";

static volatile sig_atomic_t produce_signals;
static eddy_producer_t *volatile produce_producer;

static void on_signal(int sig) {
  (void)sig;
  produce_signals++;
  eddy_producer_interrupt(produce_producer);
}

/* Key of one message: the text of top-level field `field`, into key. Returns its length, 0 for
 * no key. */
static size_t extract_key(const char *json, size_t len, const char *field, char *key) {
  cJSON *root = cJSON_ParseWithLength(json, len);
  size_t n = 0;
  if (root && cJSON_IsObject(root)) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, field);
    if (cJSON_IsString(item)) {
      n = strlen(item->valuestring);
      if (n >= KEY_MAX) n = KEY_MAX - 1;
      memcpy(key, item->valuestring, n);
    } else if (cJSON_IsNumber(item)) {
      char *text = cJSON_PrintUnformatted(item);
      if (text) {
        n = strlen(text);
        if (n >= KEY_MAX) n = KEY_MAX - 1;
        memcpy(key, text, n);
        cJSON_free(text);
      }
    }
  }
  cJSON_Delete(root);
  key[n] = '\0';
  return n;
}

/* Progress: a redrawn bar on a terminal, otherwise a line every 5 seconds. */
typedef struct {
  bool tty;
  double start, last;
} progress_t;

static void progress_show(progress_t *pr, double frac, eddy_producer_stats_t st, bool final) {
  double t = eddy_clock_mono_s();
  if (!final && t - pr->last < (pr->tty ? 0.1 : 5.0)) return;
  pr->last = t;
  double rate = (double)st.sent / fmax(t - pr->start, 1e-9);
  if (pr->tty) {
    int width = 30, fill = (int)(frac * width + 0.5);
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    fprintf(stderr, "\rproduce [%s] %5.1f%% %9llu sent %9llu delivered %llu failed %8.0f msg/s",
            bar, frac * 100, (unsigned long long)st.sent, (unsigned long long)st.delivered,
            (unsigned long long)st.failed, rate);
    if (final) fputc('\n', stderr);
  } else if (!final) {
    fprintf(stderr, "produce: %.1f%% %llu sent %llu delivered %llu failed %.0f msg/s\n",
            frac * 100, (unsigned long long)st.sent, (unsigned long long)st.delivered,
            (unsigned long long)st.failed, rate);
  }
  fflush(stderr);
}

static bool parse_u64(const char *s, unsigned long long *out) {
  char *end;
  errno = 0;
  if (*s == '-') return false;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end) return false;
  *out = v;
  return true;
}

static bool parse_rate(const char *s, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !isfinite(v) || v < 0 || v > 1e9) return false;
  *out = v;
  return true;
}

/* Token bucket: waits (serving delivery reports) until one message may go. False if a signal
 * came while waiting. */
typedef struct {
  double rate, tokens, burst, last;
} bucket_t;

static bool bucket_take(bucket_t *b, eddy_producer_t *p) {
  if (b->rate <= 0) return true;
  for (;;) {
    double t = eddy_clock_mono_s();
    b->tokens = fmin(b->burst, b->tokens + (t - b->last) * b->rate);
    b->last = t;
    if (b->tokens >= 1.0) {
      b->tokens -= 1.0;
      return true;
    }
    if (produce_signals) return false;
    double wait = (1.0 - b->tokens) / b->rate;
    if (wait >= 0.002) {
      eddy_producer_poll(p, (int)(wait * 1000));
    } else {
      struct timespec ts = {0, (long)(wait * 1e9)};
      nanosleep(&ts, NULL);
    }
  }
}

int eddy_cmd_produce(int argc, char **argv) {
  static const struct option opts[] = {EDDY_CLI_OPT_BOOTSTRAP,
                                       {"topic", required_argument, NULL, 't'},
                                       {"data", required_argument, NULL, 'd'},
                                       {"rate", required_argument, NULL, 'r'},
                                       {"limit", required_argument, NULL, 'n'},
                                       {"key", required_argument, NULL, 'k'},
                                       EDDY_CLI_OPT_CONFIG,
                                       EDDY_CLI_OPT_SET,
                                       {"flush-timeout", required_argument, NULL, 'F'},
                                       EDDY_CLI_OPT_HELP,
                                       {NULL, 0, NULL, 0}};
  eddy_cli_t cli = {.cmd = "produce", .usage = produce_usage};
  const char *topic = NULL, *data = NULL, *key_field = NULL;
  double rate = 0;
  unsigned long long limit = 0, flush_s = 60;
  int c;
  while ((c = eddy_cli_getopt(&cli, argc, argv, "b:t:d:r:n:k:c:s:h", opts)) != -1) {
    switch (c) {
    case 't': topic = optarg; break;
    case 'd': data = optarg; break;
    case 'k': key_field = optarg; break;
    case 'r':
      if (!parse_rate(optarg, &rate)) {
        fprintf(stderr, "eddy produce: --rate \"%s\" is not a number of messages per second "
                        "(0..1e9)\n", optarg);
        return EDDY_EXIT_USAGE;
      }
      break;
    case 'n':
      if (!parse_u64(optarg, &limit)) {
        fprintf(stderr, "eddy produce: --limit \"%s\" is not a count\n", optarg);
        return EDDY_EXIT_USAGE;
      }
      break;
    case 'F':
      if (!parse_u64(optarg, &flush_s) || flush_s > 86400) {
        fprintf(stderr, "eddy produce: --flush-timeout \"%s\" is not seconds in 0..86400\n",
                optarg);
        return EDDY_EXIT_USAGE;
      }
      break;
    default:
      return cli.exit; /* EDDY_CLI_STOP: --help or a usage error, printed */
    }
  }
  if (!topic || !topic[0]) {
    fputs("eddy produce: -t TOPIC is required\n", stderr);
    return EDDY_EXIT_USAGE;
  }
  if (!data) {
    fputs("eddy produce: --data DATASET is required\n", stderr);
    return EDDY_EXIT_USAGE;
  }
  if (key_field && !key_field[0]) {
    fputs("eddy produce: --key needs a field name\n", stderr);
    return EDDY_EXIT_USAGE;
  }

  eddy_config_t cfg; /* -c is optional: only [kafka] is used; -b joins it as bootstrap.servers */
  int load_rc = eddy_cli_load_config(&cli, EDDY_CLI_NEED_BOOTSTRAP, &cfg);
  if (load_rc != EDDY_EXIT_OK) return load_rc;
  char err[1024];

  /* Open the data before connecting, so that a missing file fails fast. */
  bool is_fmnist = !strncmp(data, "fashion-mnist:", 14);
  eddy_event_t ev;
  eddy_event_init(&ev);
  eddy_event_schema_t fmnist = {.dense_dim = 784, .hash_bits = 0, .head = EDDY_HEAD_SOFTMAX,
                                .classes = 10, .max_bytes = 0};
  eddy_dataset_t *ds = is_fmnist ? eddy_dataset_new(data, &fmnist, err, sizeof err)
                                 : eddy_dataset_new_lines(data, EDDY_PRODUCER_MAX_VALUE, err, sizeof err);
  if (!ds) {
    fprintf(stderr, "eddy produce: %s\n", err);
    eddy_config_free(&cfg);
    return EDDY_EXIT_FAILURE;
  }

  eddy_producer_t *p = eddy_producer_new(&cfg, NULL, err, sizeof err);
  eddy_config_free(&cfg);
  if (!p) {
    fprintf(stderr, "eddy produce: %s\n", err);
    eddy_dataset_destroy(ds);
    return EDDY_EXIT_USAGE;
  }
  produce_producer = p;
  eddy_cli_on_stop_signals(on_signal);

  progress_t pr = {.tty = isatty(STDERR_FILENO), .start = eddy_clock_mono_s()};
  pr.last = pr.start;
  bucket_t bucket = {.rate = rate, .tokens = 1.0, .burst = fmax(1.0, rate / 100), .last = pr.start};
  bool data_error = false, send_error = false;
  char key[KEY_MAX];
  uint64_t n = 0;
  EDDY_INFO("produce", "%s -> topic %s%s", data, topic,
            rate > 0 ? " (rate limited)" : "");
  while (!produce_signals && (limit == 0 || n < limit)) {
    const char *value = NULL;
    size_t len = 0;
    char *json = NULL;
    bool eof = false;
    eddy_err_t rc = is_fmnist ? eddy_dataset_next(ds, &ev, &eof, err, sizeof err)
                              : eddy_dataset_next_line(ds, &value, &len, &eof, err, sizeof err);
    if (rc != EDDY_OK) {
      fprintf(stderr, "eddy produce: %s\n", err);
      data_error = true;
      break;
    }
    if (eof) break;
    if (is_fmnist) {
      json = eddy_event_to_json(&ev);
      if (!json) {
        fprintf(stderr, "eddy produce: %s: event %s cannot be written as JSON\n", data, ev.id);
        data_error = true;
        break;
      }
      value = json;
      len = strlen(json);
    }
    size_t key_len = key_field ? extract_key(value, len, key_field, key) : 0;
    if (!bucket_take(&bucket, p)) {
      free(json);
      break;
    }
    rc = eddy_producer_send(p, topic, -1, key_len ? key : NULL, key_len, value, len, err,
                            sizeof err);
    free(json);
    if (rc == EDDY_ERR_STATE) break; /* interrupted while waiting for queue room */
    if (rc != EDDY_OK) {
      if (!is_fmnist)
        fprintf(stderr, "eddy produce: %s:%llu: %s\n", data,
                (unsigned long long)eddy_dataset_lineno(ds), err);
      else
        fprintf(stderr, "eddy produce: %s: %s\n", data, err);
      send_error = true;
      break;
    }
    n++;
    double frac = eddy_dataset_progress(ds);
    if (limit) frac = fmax(frac, (double)n / (double)limit);
    progress_show(&pr, frac, eddy_producer_stats(p), false);
  }
  bool interrupted = produce_signals > 0;
  if (interrupted) EDDY_INFO("produce", "interrupted: flushing %llu sent messages",
                             (unsigned long long)n);

  /* Flush in slices so that a second signal can cut it short. */
  double flush_deadline = eddy_clock_mono_s() + (double)flush_s;
  int signals_before = produce_signals;
  eddy_err_t frc;
  for (;;) {
    frc = eddy_producer_flush(p, FLUSH_SLICE_MS, err, sizeof err);
    if (frc == EDDY_OK || eddy_clock_mono_s() >= flush_deadline || produce_signals > signals_before)
      break;
  }
  double seconds = eddy_clock_mono_s() - pr.start;
  eddy_producer_stats_t st = eddy_producer_stats(p);
  progress_show(&pr, 1.0, st, true);
  printf("sent=%llu delivered=%llu failed=%llu seconds=%.3f rate=%.1f\n",
         (unsigned long long)st.sent, (unsigned long long)st.delivered,
         (unsigned long long)st.failed, seconds, (double)st.sent / fmax(seconds, 1e-9));
  fflush(stdout);

  int exit_code = EDDY_EXIT_OK;
  if (st.failed) {
    fprintf(stderr, "eddy produce: %llu of %llu messages failed delivery; first: %s\n",
            (unsigned long long)st.failed, (unsigned long long)st.sent,
            eddy_producer_first_error(p));
    exit_code = EDDY_EXIT_FAILURE;
  }
  if (frc != EDDY_OK) {
    fprintf(stderr, "eddy produce: %llu messages never got a delivery report (%s)\n",
            (unsigned long long)(st.sent - st.delivered - st.failed), err);
    exit_code = EDDY_EXIT_FAILURE;
  }
  if (data_error || send_error) exit_code = EDDY_EXIT_FAILURE;
  if (interrupted && exit_code == EDDY_EXIT_OK)
    EDDY_INFO("produce", "stopped by signal after %llu messages, all delivered",
              (unsigned long long)st.sent);

  produce_producer = NULL;
  eddy_producer_destroy(p);
  eddy_dataset_destroy(ds);
  eddy_event_free(&ev);
  return exit_code;
}
