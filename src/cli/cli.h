/* Subcommands of the eddy binary. Each takes argc/argv starting at its own name and returns the
 * process exit code: 0 ok, 1 runtime failure, 2 usage or configuration error. */
#ifndef EDDY_CLI_H
#define EDDY_CLI_H

#define EDDY_EXIT_OK 0
#define EDDY_EXIT_FAILURE 1
#define EDDY_EXIT_USAGE 2

#include <stddef.h>

/* Most --set options one command line may carry. */
#define EDDY_CLI_MAX_SETS 256

/* Appends a --set argument to sets[*n_sets] (room for EDDY_CLI_MAX_SETS). Returns 0, or -1 after
 * printing "eddy CMD: more than N --set options" to stderr. */
int eddy_cli_add_set(const char *cmd, const char **sets, size_t *n_sets, const char *arg);

/* Installs handler for SIGINT and SIGTERM (no SA_RESTART, so blocking calls return EINTR). */
void eddy_cli_on_stop_signals(void (*handler)(int));

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

#endif
