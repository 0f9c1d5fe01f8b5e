/* What every subcommand does the same way: the shared options (-c CONFIG, --set, -b BOOTSTRAP)
 * and their usage errors, loading and checking the config (a services' token file against its
 * config line too), and the handlers that turn
 * SIGINT/SIGTERM into a clean stop. Messages start "eddy CMD: "; usage errors exit 2. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "core/errors.h"
#include "http/server.h"
#include "stream/kafka_conf.h"

#define SHORTOPTS_MAX 60

/* Prints "eddy CMD: <before><arg><after> (eddy CMD --help shows the options)"; EDDY_CLI_STOP. */
static int usage_error(eddy_cli_t *cli, const char *before, const char *arg, const char *after) {
  fprintf(stderr, "eddy %s: %s%s%s (eddy %s --help shows the options)\n", cli->cmd, before, arg, after,
          cli->cmd);
  cli->exit = EDDY_EXIT_USAGE;
  return EDDY_CLI_STOP;
}

int eddy_cli_getopt(eddy_cli_t *cli, int argc, char **argv, const char *shortopts,
                    const struct option *longopts) {
  char spec[SHORTOPTS_MAX + 2];
  if (strlen(shortopts) > SHORTOPTS_MAX) {
    fprintf(stderr, "eddy %s: internal error: short options \"%s\" over %d characters\n", cli->cmd,
            shortopts, SHORTOPTS_MAX);
    cli->exit = EDDY_EXIT_USAGE;
    return EDDY_CLI_STOP;
  }
  snprintf(spec, sizeof spec, ":%s", shortopts); /* ':' reports a missing value apart */
  if (!cli->started) {
    cli->started = true;
    optind = 1;
    opterr = 0; /* the messages below name the command */
  }
  for (;;) {
    int c = getopt_long(argc, argv, spec, longopts, NULL);
    switch (c) {
      case -1:
        if (!cli->operands && optind < argc)
          return usage_error(cli, "unexpected argument '", argv[optind], "'");
        return -1;
      case 'c': cli->config_path = optarg; break;
      case 'b': cli->bootstrap = optarg; break;
      case 's':
        if (cli->n_sets >= EDDY_CLI_MAX_SETS) {
          fprintf(stderr, "eddy %s: more than %d --set options\n", cli->cmd, EDDY_CLI_MAX_SETS);
          cli->exit = EDDY_EXIT_USAGE;
          return EDDY_CLI_STOP;
        }
        cli->sets[cli->n_sets++] = optarg;
        break;
      case 'h':
        fputs(cli->usage ? cli->usage : "", stdout);
        cli->exit = EDDY_EXIT_OK;
        return EDDY_CLI_STOP;
      case ':':
      case '?': {
        /* A long option is named by its argv word; a short one (perhaps inside "-xyz") by optopt. */
        const char *word = optind > 0 && optind <= argc ? argv[optind - 1] : "";
        char name[8];
        if (strncmp(word, "--", 2) != 0) {
          snprintf(name, sizeof name, "-%c", optopt ? optopt : '?');
          word = name;
        }
        if (c == ':') return usage_error(cli, "", word, " needs a value");
        return usage_error(cli, "unknown option '", word, "'");
      }
      default: return c;
    }
  }
}

/* Reads http.token_file, when set, before a service starts, so that a missing or bad token file is
 * a configuration error naming where the key was set:
 *   configs/x.ini:12: http.token_file = "/nope": No such file or directory */
static eddy_err_t check_token_file(const eddy_cli_t *cli, const eddy_config_t *cfg, size_t n_sets, char *errstr,
                                   size_t errstr_size) {
  if (!cfg->http_token_file[0]) return EDDY_OK;
  char token[EDDY_HTTP_TOKEN_MAX + 1], why[1024];
  eddy_err_t err = eddy_http_load_token(cfg->http_token_file, token, sizeof token, why, sizeof why);
  explicit_bzero(token, sizeof token);
  if (err == EDDY_OK) return EDDY_OK;
  char origin[EDDY_CONFIG_STR];
  if (eddy_config_origin(cli->config_path, cli->sets, n_sets, "http.token_file", origin, sizeof origin) != EDDY_OK)
    snprintf(origin, sizeof origin, "%s", cli->config_path ? cli->config_path : "--set");
  return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "%s: %s", origin, why);
}

int eddy_cli_load_config(eddy_cli_t *cli, unsigned flags, eddy_config_t *cfg) {
  memset(cfg, 0, sizeof *cfg);
  if ((flags & EDDY_CLI_NEED_CONFIG) && !cli->config_path) {
    fprintf(stderr, "eddy %s: -c CONFIG is required (eddy %s --help shows the options)\n", cli->cmd,
            cli->cmd);
    return EDDY_EXIT_USAGE;
  }
  size_t n_sets = cli->n_sets;
  if (cli->bootstrap) {
    int n = snprintf(cli->bootstrap_set, sizeof cli->bootstrap_set, "kafka.bootstrap.servers=%s",
                     cli->bootstrap);
    if (n < 0 || (size_t)n >= sizeof cli->bootstrap_set) {
      fprintf(stderr, "eddy %s: -b \"%.64s...\" is longer than %d bytes\n", cli->cmd, cli->bootstrap,
              EDDY_CONFIG_STR * 4 - 1);
      return EDDY_EXIT_USAGE;
    }
    cli->sets[n_sets++] = cli->bootstrap_set; /* last: -b wins over --set */
  }
  char errstr[2048];
  eddy_err_t err = eddy_config_load(cfg, cli->config_path, cli->sets, n_sets, errstr, sizeof errstr);
  if (!err && (flags & EDDY_CLI_CHECK_KAFKA)) err = eddy_kafka_conf_check(cfg, errstr, sizeof errstr);
  if (!err && (flags & EDDY_CLI_NEED_BOOTSTRAP) && !eddy_config_kafka(cfg, "bootstrap.servers") &&
      !eddy_config_kafka(cfg, "metadata.broker.list"))
    err = eddy_errf(EDDY_ERR_CONFIG, errstr, sizeof errstr,
                    "kafka.bootstrap.servers is not set: -b BOOTSTRAP is required (or the key in "
                    "[kafka] or --set)");
  if (!err && (flags & EDDY_CLI_CHECK_TOKEN_FILE)) err = check_token_file(cli, cfg, n_sets, errstr, sizeof errstr);
  if (err) {
    fprintf(stderr, "eddy %s: %s\n", cli->cmd, errstr);
    eddy_config_free(cfg);
    return EDDY_EXIT_USAGE;
  }
  return EDDY_EXIT_OK;
}

static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig) { stop_signal = sig; }

void eddy_cli_catch_stop_signals(void) { eddy_cli_on_stop_signals(on_stop_signal); }

int eddy_cli_stop_signal(void) { return stop_signal; }

void eddy_cli_on_stop_signals(void (*handler)(int)) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}
