/* Pieces every subcommand needs the same way: collecting --set overrides and installing the
 * handlers that turn SIGINT/SIGTERM into a clean stop. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

int eddy_cli_add_set(const char *cmd, const char **sets, size_t *n_sets, const char *arg) {
  if (*n_sets >= EDDY_CLI_MAX_SETS) {
    fprintf(stderr, "eddy %s: more than %d --set options\n", cmd, EDDY_CLI_MAX_SETS);
    return -1;
  }
  sets[(*n_sets)++] = arg;
  return 0;
}

void eddy_cli_on_stop_signals(void (*handler)(int)) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}
