/* `eddy train`: the trainer service. Builds the metrics registry, the trainer (ingest, training
 * and publishing threads) and the admin HTTP server, then runs until SIGINT or SIGTERM and shuts
 * down cleanly: HTTP first, then the threads (a publish in flight is finished, none is started). */
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "config/config.h"
#include "core/log.h"
#include "metrics/registry.h"
#include "http/server.h"
#include "stream/kafka_conf.h"
#include "train/admin.h"
#include "train/trainer.h"


#define RANKS_STOP_GRACE_S 15 /* ranks that do not stop together by then end themselves */

static const char train_usage[] =
    "usage: eddy train -c CONFIG [--set section.key=value]... [-b BOOTSTRAP] [--fresh]\n\n"
    "The trainer service. Consumes [stream] topic into the replay buffer at buffer.path (exactly\n"
    "once), trains continuously from it (fresh events from the trained cursor plus replay draws by\n"
    "replay.ratio; prequential metrics on fresh events; train.holdout_fraction of the events, chosen\n"
    "by a hash of the event id, held out for the quality gate), and publishes a version into\n"
    "snapshot.store every snapshot.every_steps steps or snapshot.every_seconds seconds (and on\n"
    "POST /v1/snapshot). A candidate with non-finite weights or whose holdout loss regresses past\n"
    "snapshot.gate.max_regression against CURRENT's is kept as rejected; a promoted one becomes\n"
    "CURRENT and its manifest is announced on snapshot.topic. The admin API (status, versions,\n"
    "snapshot files, rollback, pause, resume, /metrics) listens on http.bind; `eddy ctl` drives it.\n\n"
    EDDY_CLI_HELP_CONFIG EDDY_CLI_HELP_SET EDDY_CLI_HELP_BOOTSTRAP
    "      --fresh             start from new weights when no version's state verifies and loads\n"
    "                          (otherwise eddy train refuses to start); broken newer versions are\n"
    "                          skipped by themselves, and a usable state is always resumed\n"
    EDDY_CLI_HELP_HELP "\n"
    "Ranks: `mpirun -np R eddy train -c CONFIG` (or srun) runs R data-parallel ranks: rank r ingests\n"
    "the partitions p with p mod R = r into its own buffer <buffer.path>/rank-<r>, every optimizer\n"
    "step sums the ranks' gradients, and rank 0 alone gates, publishes, announces and serves the\n"
    "admin API. A rank that fails ends the job (fail-stop); restart all of them (docs/operations.md).\n\n"
    "Restart: the state (weights, optimizer, scaler) and buffer cursor of the newest version that\n"
    "verifies and loads are restored, so after a crash or kill every event is trained once\n"
    "relative to the restored model; an empty store is a first start. CURRENT is checked too,\n"
    "and moved to the newest promoted version that verifies when it names none. SIGINT/SIGTERM\n"
    "stop it cleanly without publishing a last version (events trained since the newest version\n"
    "are trained again after a restart).\n"
    "A line is logged per published version. With http.bind port 0 the chosen port is logged.\n"
    "Exit: 0 after a signal; 1 on a runtime failure (unusable state, store held by another\n"
    "trainer, a fatal Kafka or buffer error, the HTTP port taken); 2 usage or config error.\n";

int eddy_cmd_train(int argc, char **argv) {
  static const struct option opts[] = {EDDY_CLI_OPT_CONFIG,
                                       EDDY_CLI_OPT_SET,
                                       EDDY_CLI_OPT_BOOTSTRAP,
                                       {"fresh", no_argument, NULL, 'F'},
                                       EDDY_CLI_OPT_HELP,
                                       {NULL, 0, NULL, 0}};
  eddy_cli_t cli = {.cmd = "train", .usage = train_usage};
  bool fresh = false;
  int c;
  while ((c = eddy_cli_getopt(&cli, argc, argv, "c:s:b:h", opts)) != -1) {
    switch (c) {
      case 'F': fresh = true; break;
      default: return cli.exit; /* EDDY_CLI_STOP: --help or a usage error, printed */
    }
  }
  eddy_config_t cfg;
  int rc = eddy_cli_load_config(
      &cli, EDDY_CLI_NEED_CONFIG | EDDY_CLI_CHECK_KAFKA | EDDY_CLI_NEED_BOOTSTRAP | EDDY_CLI_CHECK_TOKEN_FILE, &cfg);
  if (rc != EDDY_EXIT_OK) return rc;

  eddy_cli_ranks_t ranks;
  if ((rc = eddy_cli_ranks_start("train", &ranks)) != EDDY_EXIT_OK) {
    eddy_config_free(&cfg);
    return rc;
  }
  char errstr[2048];
  rc = EDDY_EXIT_FAILURE;
  eddy_trainer_t *trainer = NULL;
  eddy_http_t *http = NULL;
  eddy_registry_t *reg = eddy_registry_new();
  if (!reg) {
    fprintf(stderr, "eddy train: out of memory\n");
    goto out;
  }
  eddy_trainer_opts_t topts = {.fresh = fresh, .ranks = ranks.coll};
  if (!(trainer = eddy_trainer_new(&cfg, &topts, reg, errstr, sizeof errstr))) {
    fprintf(stderr, "eddy train: %s\n", errstr);
    goto out;
  }
  /* With ranks, rank 0 alone serves the admin API and the dashboard. */
  if (ranks.rank == 0 && (!(http = eddy_admin_server_new(&cfg, reg, errstr, sizeof errstr)) ||
                          eddy_admin_register(http, trainer, reg, errstr, sizeof errstr) != EDDY_OK)) {
    fprintf(stderr, "eddy train: http: %s\n", errstr);
    goto out;
  }

  eddy_cli_catch_stop_signals();

  if (eddy_trainer_start(trainer, errstr, sizeof errstr) != EDDY_OK) {
    fprintf(stderr, "eddy train: %s\n", errstr);
    goto out;
  }
  if (http && eddy_http_start(http, errstr, sizeof errstr) != EDDY_OK) {
    fprintf(stderr, "eddy train: http: %s\n", errstr);
    goto out;
  }
  if (http) EDDY_INFO("train", "admin API listening on port %u (http.bind %s)", eddy_http_port(http), cfg.http_bind);

  rc = EDDY_EXIT_OK;
  while (!eddy_cli_stop_signal() && !eddy_trainer_stopped(trainer)) {
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL);
    if (eddy_trainer_health(trainer, errstr, sizeof errstr) != EDDY_OK) {
      fprintf(stderr, "eddy train: %s\n", errstr);
      rc = EDDY_EXIT_FAILURE;
      break;
    }
  }
  if (eddy_cli_stop_signal()) EDDY_INFO("train", "signal %d: stopping", eddy_cli_stop_signal());
  else if (rc == EDDY_EXIT_OK) EDDY_INFO("train", "the ranks stop together: stopping");
  eddy_cli_ranks_watch_stop(&ranks, RANKS_STOP_GRACE_S);

out:
  if (rc != EDDY_EXIT_OK && ranks.ranks > 1) eddy_cli_ranks_end(&ranks, rc); /* fail-stop: does not return */
  eddy_http_destroy(http);
  eddy_trainer_destroy(trainer);
  eddy_registry_destroy(reg);
  eddy_config_free(&cfg);
  if (rc == EDDY_EXIT_OK) EDDY_INFO("train", "stopped");
  return eddy_cli_ranks_end(&ranks, rc);
}
