/* `eddy ingest`: runs the Kafka consumer into the replay buffer at buffer.path, alone (the trainer
 * runs the same ingest in a thread). Exactly once relative to the buffer: kill it at any moment
 * and start it again, and each message is stored once. Status lines go to stderr every 5 s. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buffer/replay.h"
#include "cli/cli.h"
#include "config/config.h"
#include "core/clock.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "stream/consumer.h"
#include "stream/kafka_conf.h"

#define STATUS_EVERY_S 5.0

static const char ingest_usage[] =
    "usage: eddy ingest -c CONFIG [--set section.key=value]... [-b BOOTSTRAP]\n"
    "                   [--until-caught-up] [--idle-exit SECONDS]\n\n"
    "Consumes every partition of [stream] topic (assigned directly: no consumer group to join, so\n"
    "a restart reads again at once; new partitions are found within 3 s) and stores every message\n"
    "in the replay buffer at buffer.path: valid events as events, invalid ones as dead letters\n"
    "with their reason (also copied to stream.dlq_topic when set). Each poll batch is stored in\n"
    "one atomic write together with the next offset of its partitions, and every partition starts\n"
    "at the offset stored in the buffer, so killing and restarting the process neither loses nor\n"
    "duplicates a message. A partition the buffer has never seen starts at the offset committed\n"
    "to group kafka.group.id (default eddy-<model.name>), else at the earliest (unless\n"
    "kafka.auto.offset.reset says otherwise). Offsets are committed to that group only so that\n"
    "lag shows in Kafka tools.\n"
    "Under `mpirun -np R` (or srun) each of the R ranks reads the partitions p with p mod R = r into\n"
    "its own buffer <buffer.path>/rank-<r>, as `eddy train` ranks do; a rank that owns no partition\n"
    "(more ranks than partitions) is caught up at once.\n\n"
    EDDY_CLI_HELP_CONFIG EDDY_CLI_HELP_SET EDDY_CLI_HELP_BOOTSTRAP
    "      --until-caught-up   exit 0 once every assigned partition is read to its end and stored\n"
    "      --idle-exit S       exit 0 after S seconds (0.1..86400) in which no message arrived\n"
    "                          while partitions were assigned\n"
    EDDY_CLI_HELP_HELP "\n"
    "Runs until SIGINT or SIGTERM otherwise. Every 5 s a status line goes to stderr (events ok "
    "and\n"
    "invalid, rate, buffer size, lag, paused); at exit a summary with the stored offsets. When "
    "the\n"
    "buffer refuses a batch (disk full) ingest pauses the partitions and retries with backoff;\n"
    "nothing is dropped. The buffer evicts its oldest events beyond buffer.capacity_*.\n"
    "Exit: 0 on a signal, --idle-exit or --until-caught-up; 1 on a runtime failure (buffer or\n"
    "fatal Kafka error); 2 usage or configuration error.\n";

static uint32_t reservoir_classes(const eddy_config_t *cfg) {
  switch (cfg->spec.head) {
    case EDDY_HEAD_SOFTMAX: return cfg->spec.classes;
    case EDDY_HEAD_LOGISTIC: return 2;
    default: return 1;
  }
}

static void print_offset(void *ctx, const char *topic, int32_t partition, int64_t next) {
  int *n = ctx;
  fprintf(stderr, "%s%s[%" PRId32 "]=%" PRId64, (*n)++ ? " " : "  next offsets: ", topic, partition,
          next);
}

static void print_status(const eddy_ingest_stats_t *st, const eddy_replay_stats_t *bs, double rate,
                         const char *prefix) {
  char lag[32];
  if (st->lag >= 0)
    snprintf(lag, sizeof lag, "%" PRId64, st->lag);
  else
    snprintf(lag, sizeof lag, "?");
  fprintf(stderr,
          "%s: %" PRIu64 " events ok, %" PRIu64 " invalid, %.0f msg/s; buffer %" PRIu64
          " events, %.1f MiB; %u partitions, lag %s%s\n",
          prefix, st->events_ok, st->events_invalid, rate, bs->events, bs->bytes / 1048576.0,
          st->assigned, lag, st->paused ? ", PAUSED (buffer refuses writes)" : "");
}

int eddy_cmd_ingest(int argc, char **argv) {
  static const struct option opts[] = {EDDY_CLI_OPT_CONFIG,
                                       EDDY_CLI_OPT_SET,
                                       EDDY_CLI_OPT_BOOTSTRAP,
                                       {"until-caught-up", no_argument, NULL, 'U'},
                                       {"idle-exit", required_argument, NULL, 'I'},
                                       EDDY_CLI_OPT_HELP,
                                       {NULL, 0, NULL, 0}};
  eddy_cli_t cli = {.cmd = "ingest", .usage = ingest_usage};
  bool until_caught_up = false;
  double idle_exit = 0;
  int c;
  while ((c = eddy_cli_getopt(&cli, argc, argv, "c:s:b:h", opts)) != -1) {
    switch (c) {
      case 'U': until_caught_up = true; break;
      case 'I': {
        char *end;
        errno = 0;
        idle_exit = strtod(optarg, &end);
        if (errno || end == optarg || *end || !(idle_exit >= 0.1 && idle_exit <= 86400)) {
          fprintf(stderr,
                  "eddy ingest: --idle-exit \"%s\" is not a number of seconds in "
                  "0.1..86400\n",
                  optarg);
          return EDDY_EXIT_USAGE;
        }
        break;
      }
      default: return cli.exit; /* EDDY_CLI_STOP: --help or a usage error, printed */
    }
  }
  eddy_config_t cfg;
  int rc = eddy_cli_load_config(
      &cli, EDDY_CLI_NEED_CONFIG | EDDY_CLI_CHECK_KAFKA | EDDY_CLI_NEED_BOOTSTRAP, &cfg);
  if (rc != EDDY_EXIT_OK) return rc;
  eddy_cli_ranks_t ranks;
  if ((rc = eddy_cli_ranks_start("ingest", &ranks)) != EDDY_EXIT_OK) {
    eddy_config_free(&cfg);
    return rc;
  }
  char errstr[2048];
  if (ranks.ranks > 1) { /* rank r's own buffer, as `eddy train` ranks use */
    char path[sizeof cfg.buffer_path + 32];
    if (eddy_mkdir_p(cfg.buffer_path) != 0 ||
        eddy_replay_rank_path(cfg.buffer_path, ranks.rank, path, sizeof path) != EDDY_OK ||
        strlen(path) >= sizeof cfg.buffer_path) {
      fprintf(stderr, "eddy ingest: buffer.path %s: cannot hold the rank folders\n", cfg.buffer_path);
      eddy_config_free(&cfg);
      return eddy_cli_ranks_end(&ranks, EDDY_EXIT_FAILURE);
    }
    memcpy(cfg.buffer_path, path, strlen(path) + 1);
  }
  eddy_replay_opts_t ropts = {.path = cfg.buffer_path,
                              .capacity_events = cfg.buffer_capacity_events,
                              .capacity_bytes = cfg.buffer_capacity_bytes,
                              .evict = true,
                              .sync = cfg.buffer_sync,
                              .reservoir_size = cfg.reservoir_size,
                              .classes = reservoir_classes(&cfg),
                              .seed = cfg.train.seed};
  eddy_replay_t *buffer = eddy_replay_new(&ropts, errstr, sizeof errstr);
  if (!buffer) {
    fprintf(stderr, "eddy ingest: %s\n", errstr);
    eddy_config_free(&cfg);
    return eddy_cli_ranks_end(&ranks, EDDY_EXIT_FAILURE);
  }
  eddy_ingest_opts_t iopts = {.rank = (uint32_t)ranks.rank, .ranks = (uint32_t)ranks.ranks};
  eddy_ingest_t *ing = eddy_ingest_new(&cfg, buffer, &iopts, NULL, errstr, sizeof errstr);
  if (!ing) {
    fprintf(stderr, "eddy ingest: %s\n", errstr);
    eddy_replay_destroy(buffer);
    eddy_config_free(&cfg);
    return eddy_cli_ranks_end(&ranks, EDDY_EXIT_FAILURE);
  }

  eddy_cli_catch_stop_signals();

  eddy_replay_stats_t bs0 = eddy_replay_stats(buffer);
  EDDY_INFO("ingest", "buffer %s: %" PRIu64 " events (seq %" PRIu64 "..%" PRIu64 ")",
            cfg.buffer_path, bs0.events, bs0.first_seq, bs0.next_seq);
  double start = eddy_clock_mono_s(), last_status = start, idle_since = start;
  uint64_t last_count = 0, status_count = 0;
  const char *why_exit = "signal";
  while (!eddy_cli_stop_signal()) {
    eddy_err_t err = eddy_ingest_poll_once(ing, 200, NULL, errstr, sizeof errstr);
    if (err) {
      fprintf(stderr, "eddy ingest: %s\n", errstr);
      rc = EDDY_EXIT_FAILURE;
      why_exit = "error";
      break;
    }
    eddy_ingest_stats_t st = eddy_ingest_stats(ing);
    double t = eddy_clock_mono_s();
    uint64_t count = st.events_ok + st.events_invalid;
    if (count != last_count || st.assigned == 0) idle_since = t;
    last_count = count;
    if (t - last_status >= STATUS_EVERY_S) {
      eddy_replay_stats_t bs = eddy_replay_stats(buffer);
      print_status(&st, &bs, (count - status_count) / (t - last_status), "ingest");
      last_status = t;
      status_count = count;
    }
    if (until_caught_up && st.caught_up) {
      why_exit = "caught up";
      break;
    }
    if (idle_exit > 0 && t - idle_since >= idle_exit) {
      why_exit = "idle";
      break;
    }
  }
  eddy_ingest_stats_t st = eddy_ingest_stats(ing);
  eddy_ingest_destroy(ing); /* leaves the group */
  double secs = eddy_clock_mono_s() - start;
  eddy_replay_stats_t bs = eddy_replay_stats(buffer);
  char prefix[64];
  snprintf(prefix, sizeof prefix, "ingest done (%s, %.1f s)", why_exit, secs);
  print_status(&st, &bs, (st.events_ok + st.events_invalid) / (secs > 0 ? secs : 1), prefix);
  int n = 0;
  eddy_replay_offsets_each(buffer, print_offset, &n);
  if (n) fputc('\n', stderr);
  eddy_replay_destroy(buffer);
  eddy_config_free(&cfg);
  return eddy_cli_ranks_end(&ranks, rc);
}
