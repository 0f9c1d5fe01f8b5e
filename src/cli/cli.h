/* Subcommands of the eddy binary. Each takes argc/argv starting at its own name and returns the
 * process exit code: 0 ok, 1 runtime failure, 2 usage or configuration error. The option handling
 * they share (-c CONFIG, --set S.K=V, -b BOOTSTRAP, usage errors, loading the config) is here. */
#ifndef EDDY_CLI_H
#define EDDY_CLI_H

#define EDDY_EXIT_OK 0
#define EDDY_EXIT_FAILURE 1
#define EDDY_EXIT_USAGE 2

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "core/collective.h"

/* Most --set options one command line may carry. */
#define EDDY_CLI_MAX_SETS 256

/* Long options with the same meaning in every subcommand that has them; list the ones a command
 * takes in its getopt_long table, and their letters (c: s: b: h) in its short options. */
#define EDDY_CLI_OPT_CONFIG {"config", required_argument, NULL, 'c'}
#define EDDY_CLI_OPT_SET {"set", required_argument, NULL, 's'}
#define EDDY_CLI_OPT_BOOTSTRAP {"bootstrap", required_argument, NULL, 'b'}
#define EDDY_CLI_OPT_HELP {"help", no_argument, NULL, 'h'}

/* Their lines in a --help text, so that every command describes them the same way. */
#define EDDY_CLI_STR_(x) #x
#define EDDY_CLI_STR(x) EDDY_CLI_STR_(x)
#define EDDY_CLI_HELP_CONFIG \
  "  -c, --config FILE       INI config (configs/reference.ini documents every key)\n"
#define EDDY_CLI_HELP_SET                                                                          \
  "  -s, --set S.K=V         override one config key (repeatable, up to "                       \
  EDDY_CLI_STR(EDDY_CLI_MAX_SETS) " times)\n"
#define EDDY_CLI_HELP_BOOTSTRAP \
  "  -b, --bootstrap HOSTS   kafka.bootstrap.servers=HOSTS, applied after every --set\n"
#define EDDY_CLI_HELP_HELP "  -h, --help              this text\n"

/* What eddy_cli_getopt returns when the command is to exit with cli->exit. */
#define EDDY_CLI_STOP (-2)

/* One subcommand's command line: its name, --help text, whether it takes operands, and the
 * shared options as parsed by eddy_cli_getopt. Initialise with {.cmd = "ingest", .usage = text};
 * the strings point into argv. */
typedef struct {
  const char *cmd;         /* "ingest": every message starts "eddy ingest: " */
  const char *usage;       /* the --help text */
  bool operands;           /* positional arguments are the command's (ctl); else each is an error */
  int exit;                /* after EDDY_CLI_STOP: EDDY_EXIT_OK (--help) or EDDY_EXIT_USAGE */
  const char *config_path; /* -c/--config FILE; NULL when absent */
  const char *bootstrap;   /* -b/--bootstrap HOSTS; NULL when absent */
  const char *sets[EDDY_CLI_MAX_SETS + 1]; /* --set S.K=V in order; eddy_cli_load_config adds -b */
  size_t n_sets;
  bool started;
  char bootstrap_set[sizeof "kafka.bootstrap.servers=" + EDDY_CONFIG_STR * 4];
} eddy_cli_t;

/* getopt_long over a subcommand's argv that takes -c, -s, -b and -h itself and returns the
 * command's own options one by one; -1 at the end. EDDY_CLI_STOP: return cli->exit, after --help
 * printed cli->usage to stdout (0) or after a usage error printed as "eddy CMD: ... (eddy CMD
 * --help shows the options)" (2): an unknown option, a missing value, more than
 * EDDY_CLI_MAX_SETS --set, an operand the command does not take. shortopts as for getopt_long,
 * without a leading ':' (at most 60 characters). With operands, they are left at
 * argv[optind..argc) once it returns -1. */
int eddy_cli_getopt(eddy_cli_t *cli, int argc, char **argv, const char *shortopts,
                    const struct option *longopts);

/* What eddy_cli_load_config requires beyond a valid config. */
#define EDDY_CLI_NEED_CONFIG 1u    /* -c CONFIG must be given (else the built-in defaults load) */
#define EDDY_CLI_CHECK_KAFKA 2u    /* every [kafka] property must be one librdkafka accepts */
#define EDDY_CLI_NEED_BOOTSTRAP 4u /* kafka.bootstrap.servers must be set (-c, --set or -b) */
#define EDDY_CLI_CHECK_TOKEN_FILE 8u /* http.token_file, when set, must be readable (else FILE:LINE: ...) */

/* Loads cli's config into cfg: the file (or the defaults), then the --set overrides in order,
 * then -b as kafka.bootstrap.servers (so -b wins), then the checks flags ask for. EDDY_EXIT_OK
 * with cfg loaded (the caller frees it with eddy_config_free); EDDY_EXIT_USAGE after printing
 * "eddy CMD: <the error>", with cfg holding nothing to free. */
int eddy_cli_load_config(eddy_cli_t *cli, unsigned flags, eddy_config_t *cfg);

/* Installs handler for SIGINT and SIGTERM (no SA_RESTART, so blocking calls return EINTR). */
void eddy_cli_on_stop_signals(void (*handler)(int));

/* Installs the usual handler: it records the signal for eddy_cli_stop_signal. */
void eddy_cli_catch_stop_signals(void);

/* The signal (SIGINT or SIGTERM) that asked the command to stop; 0 while none has come. */
int eddy_cli_stop_signal(void);

/* The ranks of this process's job (cli_ranks.c). */
typedef struct {
  int rank, ranks, local_rank;
  const eddy_collective_t *coll; /* NULL with one rank */
  void *dist;                    /* the MPI side (src/dist) while MPI runs; NULL otherwise */
} eddy_cli_ranks_t;

/* When an MPI launcher (mpirun, srun) started this process: starts MPI, fills r (rank, ranks,
 * local rank, the collective) and, with more than one rank, makes every log line say
 * "rank r/R (local l)". Otherwise r is rank 0 of 1. A build without MPI refuses a launch of several
 * ranks. EDDY_EXIT_OK, or EDDY_EXIT_FAILURE with the reason printed ("eddy CMD: ..."). */
int eddy_cli_ranks_start(const char *cmd, eddy_cli_ranks_t *r);
/* Ends MPI and returns rc. With several ranks and rc not EDDY_EXIT_OK the whole job ends at once
 * (MPI_Abort: a rank that cannot go on takes the others down, and the supervisor restarts the
 * job); every rank that returns EDDY_EXIT_OK finalises MPI. */
int eddy_cli_ranks_end(eddy_cli_ranks_t *r, int rc);
/* With several ranks: once stopping, this process exits with EDDY_EXIT_FAILURE if it has not got
 * through eddy_cli_ranks_end within seconds: the ranks stop together at a round, which never comes
 * when another rank is gone (MPI then passes SIGTERM to the survivors). */
void eddy_cli_ranks_watch_stop(eddy_cli_ranks_t *r, int seconds);

int eddy_cmd_learn(int argc, char **argv);
int eddy_cmd_broker(int argc, char **argv);
int eddy_cmd_produce(int argc, char **argv);
int eddy_cmd_buffer(int argc, char **argv);
int eddy_cmd_ingest(int argc, char **argv);
int eddy_cmd_snapshot(int argc, char **argv);
int eddy_cmd_ctl(int argc, char **argv);
int eddy_cmd_train(int argc, char **argv);
int eddy_cmd_serve(int argc, char **argv);
int eddy_cmd_demo(int argc, char **argv);
int eddy_cmd_eval(int argc, char **argv);

#endif
