/* Subcommands of the eddy binary. Each takes argc/argv starting at its own name and returns the
 * process exit code: 0 ok, 1 runtime failure, 2 usage or configuration error. */
#ifndef EDDY_CLI_H
#define EDDY_CLI_H

#define EDDY_EXIT_OK 0
#define EDDY_EXIT_FAILURE 1
#define EDDY_EXIT_USAGE 2

int eddy_cmd_learn(int argc, char **argv);
int eddy_cmd_broker(int argc, char **argv);
int eddy_cmd_produce(int argc, char **argv);
int eddy_cmd_buffer(int argc, char **argv);
int eddy_cmd_ingest(int argc, char **argv);
int eddy_cmd_snapshot(int argc, char **argv);
int eddy_cmd_ctl(int argc, char **argv);
int eddy_cmd_train(int argc, char **argv);

#endif
