/* `eddy broker`: the embedded Kafka-protocol broker (librdkafka's mock cluster) on loopback, for
 * the demo, tests and a first try. Prints `bootstrap=HOST:PORT` as its first stdout line, then
 * serves until SIGINT or SIGTERM and exits 0; with --control it also takes fault-injection commands
 * from a FIFO and answers each on stdout. In memory only; see docs/broker.md for its limits. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/log.h"
#include "stream/broker.h"

#define MAX_TOPICS 256
#define CONTROL_LINE_MAX 256

static const char broker_usage[] =
    "usage: eddy broker [--port P] [--brokers N] [--topic NAME [--partitions N]]... [--control FIFO]\n\n"
    "Runs a Kafka-protocol broker on 127.0.0.1 built on librdkafka's mock cluster, for the demo,\n"
    "tests and a first try. Prints `bootstrap=HOST:PORT[,HOST:PORT...]` (the value for\n"
    "bootstrap.servers) as the first line on stdout, then serves until SIGINT or SIGTERM, and\n"
    "exits 0. Log lines go to stderr.\n\n"
    "  -p, --port P          bootstrap port (default 0: the broker's own ephemeral port). The mock\n"
    "                        cluster of librdkafka 2.0.2 cannot bind a chosen port, so with P > 0 a\n"
    "                        relay listens on 127.0.0.1:P and forwards each connection to broker 1;\n"
    "                        clients bootstrap there, then reach the brokers at the ephemeral\n"
    "                        ports the cluster advertises in its metadata (same host only).\n"
    "      --brokers N       brokers in the cluster, ids 1..N (default 1, at most 16)\n"
    "  -t, --topic NAME      create topic NAME (repeatable)\n"
    "  -n, --partitions N    partitions of the --topic just before it (default 1)\n"
    "      --control FIFO    read fault-injection commands from FIFO (created if missing), one a\n"
    "                        line; each is answered on stdout with `ok COMMAND` or `error REASON`:\n"
    "                          down BROKER | up BROKER   refuse connections / accept them again\n"
    "                          rtt BROKER MS             delay every response by MS (0 clears)\n"
    "                          errors API COUNT ERROR    fail the next COUNT requests of API\n"
    "                                                    (Fetch, Produce, OffsetCommit, ... or a\n"
    "                                                    key) with ERROR (NOT_LEADER_FOR_PARTITION,\n"
    "                                                    ... or a code)\n"
    "                        BROKER is an id or `all`. Example: echo 'rtt all 200' > FIFO\n"
    "  -h, --help            this text\n\n"
    "Topics that a client asks for but nobody created are auto-created with 4 partitions (the mock\n"
    "cluster's default) when the client allows auto-creation (producers and kcat do).\n\n"
    "Limits (honest ones): everything is in memory and lost on exit. Each partition keeps only\n"
    "its newest ~5 MiB of message batches; older ones are dropped silently. Measured with\n"
    "librdkafka 2.0.2 on one partition: of 50000 messages of 306 bytes, 14.6k-15.7k remained;\n"
    "of 3000 Fashion-MNIST events (5.5 kB each), 931. Producers must not run far ahead of the\n"
    "consumer: one that falls behind the oldest kept offset gets OFFSET_OUT_OF_RANGE and jumps\n"
    "per auto.offset.reset. What works (librdkafka's list): producers (idempotent and\n"
    "transactional), plain and group consumers with offset commits, metadata and topic\n"
    "auto-creation. Not there: SASL/SSL, retention settings, the admin API (CreateTopics).\n"
    "For anything real, run Kafka and point bootstrap.servers at it.\n"
    "Exit: 0 after SIGINT/SIGTERM, 1 if the broker cannot start, 2 usage error.\n";

/* The --control FIFO, opened read-write so that it never reports end-of-file when a writer
 * closes it. -1 + a message on stderr on failure. */
static int control_open(const char *path) {
  if (mkfifo(path, 0600) != 0 && errno != EEXIST) {
    fprintf(stderr, "eddy broker: --control %s: cannot create the FIFO: %s\n", path, strerror(errno));
    return -1;
  }
  struct stat st;
  int fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0 || fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) {
    fprintf(stderr, "eddy broker: --control %s: %s\n", path,
            fd < 0 ? strerror(errno) : "not a FIFO");
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

/* Reads what the FIFO holds and applies each complete line; a line longer than
 * CONTROL_LINE_MAX is answered with an error and skipped. */
static void control_serve(eddy_broker_t *broker, int fd, char *line, size_t *len, bool *skipping) {
  char chunk[1024];
  ssize_t got;
  while ((got = read(fd, chunk, sizeof chunk)) > 0) {
    for (ssize_t i = 0; i < got; i++) {
      if (chunk[i] != '\n') {
        if (*len < CONTROL_LINE_MAX - 1) line[(*len)++] = chunk[i];
        else *skipping = true;
        continue;
      }
      line[*len] = '\0';
      char why[512];
      if (*skipping) {
        printf("error control: a command over %d bytes skipped\n", CONTROL_LINE_MAX - 1);
      } else if (eddy_broker_control(broker, line, why, sizeof why) != EDDY_OK) {
        printf("error %s\n", why);
        EDDY_WARN("broker", "%s", why);
      } else if (line[strspn(line, " \t\r")] && line[strspn(line, " \t\r")] != '#') {
        printf("ok %s\n", line);
        EDDY_INFO("broker", "control: %s", line);
      }
      fflush(stdout);
      *len = 0;
      *skipping = false;
    }
  }
}

static bool parse_int(const char *s, long min, long max, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < min || v > max) return false;
  *out = v;
  return true;
}

int eddy_cmd_broker(int argc, char **argv) {
  static const struct option opts[] = {
      {"port", required_argument, NULL, 'p'},       {"brokers", required_argument, NULL, 'B'},
      {"topic", required_argument, NULL, 't'},      {"partitions", required_argument, NULL, 'n'},
      {"control", required_argument, NULL, 'C'},    EDDY_CLI_OPT_HELP,
      {NULL, 0, NULL, 0}};
  const char *control = NULL;
  const char *topics[MAX_TOPICS];
  int partitions[MAX_TOPICS];
  int n_topics = 0;
  long port = 0, n_brokers = 1, v;
  eddy_cli_t cli = {.cmd = "broker", .usage = broker_usage};
  int c;
  while ((c = eddy_cli_getopt(&cli, argc, argv, "p:t:n:h", opts)) != -1) {
    switch (c) {
    case 'p':
      if (!parse_int(optarg, 0, 65535, &port)) {
        fprintf(stderr, "eddy broker: --port \"%s\" is not a port number (0..65535)\n", optarg);
        return EDDY_EXIT_USAGE;
      }
      break;
    case 'B':
      if (!parse_int(optarg, 1, EDDY_BROKER_MAX_BROKERS, &n_brokers)) {
        fprintf(stderr, "eddy broker: --brokers \"%s\" is not a number in 1..%d\n", optarg,
                EDDY_BROKER_MAX_BROKERS);
        return EDDY_EXIT_USAGE;
      }
      break;
    case 'C':
      control = optarg;
      break;
    case 't':
      if (n_topics == MAX_TOPICS) {
        fprintf(stderr, "eddy broker: more than %d --topic options\n", MAX_TOPICS);
        return EDDY_EXIT_USAGE;
      }
      for (int i = 0; i < n_topics; i++)
        if (!strcmp(topics[i], optarg)) {
          fprintf(stderr, "eddy broker: --topic %s given twice\n", optarg);
          return EDDY_EXIT_USAGE;
        }
      topics[n_topics] = optarg;
      partitions[n_topics++] = 1;
      break;
    case 'n':
      if (n_topics == 0) {
        fprintf(stderr, "eddy broker: --partitions %s must follow a --topic NAME\n", optarg);
        return EDDY_EXIT_USAGE;
      }
      if (!parse_int(optarg, 1, 100000, &v)) {
        fprintf(stderr, "eddy broker: --partitions \"%s\" for topic %s is not a number in "
                        "1..100000\n",
                optarg, topics[n_topics - 1]);
        return EDDY_EXIT_USAGE;
      }
      partitions[n_topics - 1] = (int)v;
      break;
    default:
      return cli.exit; /* EDDY_CLI_STOP: --help or a usage error, printed */
    }
  }

  /* Handlers first, so that a signal right after the bootstrap line is never lost. */
  eddy_cli_catch_stop_signals();
  signal(SIGPIPE, SIG_IGN);

  int control_fd = -1;
  if (control && (control_fd = control_open(control)) < 0) return EDDY_EXIT_FAILURE;
  char err[512];
  eddy_broker_t *broker = eddy_broker_new((int)port, (int)n_brokers, err, sizeof err);
  if (!broker) {
    fprintf(stderr, "eddy %s\n", err);
    if (control_fd >= 0) close(control_fd);
    return EDDY_EXIT_FAILURE;
  }
  for (int i = 0; i < n_topics; i++) {
    eddy_err_t rc = eddy_broker_add_topic(broker, topics[i], partitions[i], err, sizeof err);
    if (rc != EDDY_OK) {
      fprintf(stderr, "eddy %s\n", err);
      eddy_broker_destroy(broker);
      if (control_fd >= 0) close(control_fd);
      return rc == EDDY_ERR_INVALID_ARG ? EDDY_EXIT_USAGE : EDDY_EXIT_FAILURE;
    }
    EDDY_INFO("broker", "topic %s: %d partition%s", topics[i], partitions[i],
              partitions[i] == 1 ? "" : "s");
  }
  printf("bootstrap=%s\n", eddy_broker_bootstrap(broker));
  fflush(stdout);
  EDDY_INFO("broker", "%ld broker%s serving on %s (in memory; ~5 MiB kept per partition); "
                      "SIGINT or SIGTERM stops",
            n_brokers, n_brokers == 1 ? "" : "s", eddy_broker_bootstrap(broker));

  if (control_fd >= 0) EDDY_INFO("broker", "control commands from %s", control);
  char line[CONTROL_LINE_MAX];
  size_t line_len = 0;
  bool skipping = false;
  while (!eddy_cli_stop_signal()) {
    if (control_fd < 0) {
      struct timespec ts = {0, 200 * 1000 * 1000};
      nanosleep(&ts, NULL);
      continue;
    }
    struct pollfd pfd = {.fd = control_fd, .events = POLLIN};
    if (poll(&pfd, 1, 200) > 0) control_serve(broker, control_fd, line, &line_len, &skipping);
  }
  EDDY_INFO("broker", "%s: stopping", eddy_cli_stop_signal() == SIGTERM ? "SIGTERM" : "SIGINT");
  if (control_fd >= 0) close(control_fd);
  eddy_broker_destroy(broker);
  return EDDY_EXIT_OK;
}
