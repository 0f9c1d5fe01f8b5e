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
    "  -c, --config FILE       INI config (configs/reference.ini documents every key)\n"
    "  -s, --set S.K=V         override one config key (repeatable)\n"
    "  -b, --bootstrap HOSTS   same as --set kafka.bootstrap.servers=HOSTS\n"
    "      --fresh             start from new weights when the newest version's state is missing or\n"
    "                          corrupt (otherwise eddy train refuses to start); a usable state is\n"
    "                          always resumed\n"
    "  -h, --help              this text\n\n"
    "Restart: the newest version's state (weights, optimizer, scaler) and its buffer cursor are\n"
    "restored, so after a crash or kill every event is trained once relative to the restored\n"
    "model; an empty store is a first start. SIGINT/SIGTERM stop it cleanly without publishing a\n"
    "last version (events trained since the newest version are trained again after a restart).\n"
    "A line is logged per published version. With http.bind port 0 the chosen port is logged.\n"
    "Exit: 0 after a signal; 1 on a runtime failure (unusable state, store held by another\n"
    "trainer, a fatal Kafka or buffer error, the HTTP port taken); 2 usage or config error.\n";

static volatile sig_atomic_t train_stop;

static void on_signal(int sig) { train_stop = sig; }

int eddy_cmd_train(int argc, char **argv) {
  static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                       {"set", required_argument, NULL, 's'},
                                       {"bootstrap", required_argument, NULL, 'b'},
                                       {"fresh", no_argument, NULL, 'F'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  const char *config_path = NULL;
  const char *sets[EDDY_CLI_MAX_SETS + 1];
  size_t n_sets = 0;
  char bootstrap_set[EDDY_CONFIG_STR * 4 + 32];
  bool have_bootstrap = false, fresh = false;
  optind = 1;
  int c;
  while ((c = getopt_long(argc, argv, "c:s:b:h", opts, NULL)) != -1) {
    switch (c) {
      case 'c': config_path = optarg; break;
      case 's':
        if (eddy_cli_add_set("train", sets, &n_sets, optarg)) return EDDY_EXIT_USAGE;
        break;
      case 'b':
        snprintf(bootstrap_set, sizeof bootstrap_set, "kafka.bootstrap.servers=%s", optarg);
        have_bootstrap = true;
        break;
      case 'F': fresh = true; break;
      case 'h': fputs(train_usage, stdout); return EDDY_EXIT_OK;
      default: fputs("eddy train --help shows the options\n", stderr); return EDDY_EXIT_USAGE;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "eddy train: unexpected argument '%s' (eddy train --help shows the options)\n",
            argv[optind]);
    return EDDY_EXIT_USAGE;
  }
  if (!config_path) {
    fprintf(stderr, "eddy train: -c CONFIG is required (eddy train --help shows the options)\n");
    return EDDY_EXIT_USAGE;
  }
  if (have_bootstrap) sets[n_sets++] = bootstrap_set;

  char errstr[2048];
  eddy_config_t cfg;
  eddy_err_t err = eddy_config_load(&cfg, config_path, sets, n_sets, errstr, sizeof errstr);
  if (!err) err = eddy_kafka_conf_check(&cfg, errstr, sizeof errstr);
  if (!err && !eddy_config_kafka(&cfg, "bootstrap.servers") &&
      !eddy_config_kafka(&cfg, "metadata.broker.list"))
    err = eddy_errf(EDDY_ERR_CONFIG, errstr, sizeof errstr,
                    "kafka.bootstrap.servers is not set (in [kafka], with --set or -b)");
  if (err) {
    fprintf(stderr, "eddy train: %s\n", errstr);
    eddy_config_free(&cfg);
    return EDDY_EXIT_USAGE;
  }

  int rc = EDDY_EXIT_FAILURE;
  eddy_trainer_t *trainer = NULL;
  eddy_http_t *http = NULL;
  eddy_registry_t *reg = eddy_registry_new();
  if (!reg) {
    fprintf(stderr, "eddy train: out of memory\n");
    goto out;
  }
  eddy_trainer_opts_t topts = {.fresh = fresh};
  if (!(trainer = eddy_trainer_new(&cfg, &topts, reg, errstr, sizeof errstr))) {
    fprintf(stderr, "eddy train: %s\n", errstr);
    goto out;
  }
  if (!(http = eddy_admin_server_new(&cfg, reg, errstr, sizeof errstr)) ||
      eddy_admin_register(http, trainer, reg, errstr, sizeof errstr) != EDDY_OK) {
    fprintf(stderr, "eddy train: http: %s\n", errstr);
    goto out;
  }

  eddy_cli_on_stop_signals(on_signal);

  if (eddy_trainer_start(trainer, errstr, sizeof errstr) != EDDY_OK) {
    fprintf(stderr, "eddy train: %s\n", errstr);
    goto out;
  }
  if (eddy_http_start(http, errstr, sizeof errstr) != EDDY_OK) {
    fprintf(stderr, "eddy train: http: %s\n", errstr);
    goto out;
  }
  EDDY_INFO("train", "admin API listening on port %u (http.bind %s)", eddy_http_port(http), cfg.http_bind);

  rc = EDDY_EXIT_OK;
  while (!train_stop) {
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL);
    if (eddy_trainer_health(trainer, errstr, sizeof errstr) != EDDY_OK) {
      fprintf(stderr, "eddy train: %s\n", errstr);
      rc = EDDY_EXIT_FAILURE;
      break;
    }
  }
  if (train_stop) EDDY_INFO("train", "signal %d: stopping", (int)train_stop);

out:
  eddy_http_destroy(http);
  eddy_trainer_destroy(trainer);
  eddy_registry_destroy(reg);
  eddy_config_free(&cfg);
  if (rc == EDDY_EXIT_OK) EDDY_INFO("train", "stopped");
  return rc;
}
