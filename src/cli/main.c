/* The eddy command line: dispatches to one file per subcommand (src/cli/cmd_*.c). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const struct {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *usage;
} commands[] = {
    {"learn", eddy_cmd_learn,
     "learn -c CONFIG --data DATASET [--test DATASET] [--json] [--save FILE] [--set s.k=v]...\n"
     "                 offline training (one pass, prequential metrics) and evaluation; no Kafka"},
};

static void usage(FILE *out) {
  fprintf(out,
          "eddy %s: continual learning from event streams\n\n"
          "usage: eddy COMMAND [OPTIONS]   (eddy COMMAND --help for details)\n\n"
          "commands:\n",
          EDDY_VERSION);
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(out, "  %s\n", commands[i].usage);
  fprintf(out,
          "\nDATASET: a JSONL file of events, fashion-mnist:train or fashion-mnist:test (folder of\n"
          "the Debian package dataset-fashion-mnist; override with EDDY_FASHION_MNIST_DIR).\n"
          "Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.\n"
          "Logging: EDDY_LOG=debug|info|warn|error (default info), on stderr.\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return EDDY_EXIT_USAGE;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
    usage(stdout);
    return EDDY_EXIT_OK;
  }
  if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
    printf("eddy %s\n", EDDY_VERSION);
    return EDDY_EXIT_OK;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (!strcmp(cmd, commands[i].name)) return commands[i].run(argc - 1, argv + 1);
  fprintf(stderr, "eddy: unknown command '%s' (eddy --help lists the commands)\n", cmd);
  return EDDY_EXIT_USAGE;
}
