/* The eddy command line: dispatches to one file per subcommand (src/cli/cmd_*.c). */
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "cli/cli.h"
#ifdef EDDY_CUDA
#include "cuda/cuda.h"
#endif

static const struct {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *usage;
} commands[] = {
    {"learn", eddy_cmd_learn,
     "learn -c CONFIG --data DATASET [--test DATASET] [--json] [--save FILE] [--set s.k=v]...\n"
     "                 offline training (one pass, prequential metrics) and evaluation; no Kafka"},
    {"broker", eddy_cmd_broker,
     "broker [--port P] [--brokers N] [--topic T [--partitions N]]...\n"
     "                 embedded Kafka-protocol broker on loopback (librdkafka mock; in memory)"},
    {"produce", eddy_cmd_produce,
     "produce -b BOOTSTRAP -t TOPIC --data DATASET [--rate N] [--limit N] [--key FIELD]\n"
     "                 stream a dataset into a topic as JSON events"},
    {"buffer", eddy_cmd_buffer,
     "buffer inspect --path DIR [--json]\n"
     "                 what a replay buffer holds: events, seq range, offsets, labels, dead letters"},
    {"ingest", eddy_cmd_ingest,
     "ingest -c CONFIG [--set s.k=v]... [-b BOOTSTRAP] [--until-caught-up] [--idle-exit S]\n"
     "                 consume the stream topic into the replay buffer (exactly once)"},
    {"snapshot", eddy_cmd_snapshot,
     "snapshot verify DIR... [--json]\n"
     "                 check snapshot versions: sizes, sha256, safetensors structure, shapes vs spec"},
    {"train", eddy_cmd_train,
     "train -c CONFIG [--set s.k=v]... [-b BOOTSTRAP] [--fresh]\n"
     "                 trainer service: ingest, continuous training, versioned snapshots, admin API"},
    {"serve", eddy_cmd_serve,
     "serve -c CONFIG [--set s.k=v]... [-b BOOTSTRAP]\n"
     "                 inference replica: follows promotions and rollbacks, verifies, hot-swaps, predicts"},
    {"demo", eddy_cmd_demo,
     "demo [--events N] [--rate N] [--dir DIR] [--port P] [--device D] [--json] [--keep-running]\n"
     "                 the whole pipeline on the embedded default: broker, trainer, 2 replicas, Fashion-MNIST"},
    {"eval", eddy_cmd_eval,
     "eval -c CONFIG (--version V | --weights FILE) --data DATASET [--json] [--limit N] [--set s.k=v]...\n"
     "                 score a version (or weights file): accuracy, loss, per class, confusion matrix"},
    {"ctl", eddy_cmd_ctl,
     "ctl [--url URL | -c CONFIG] [--token-file F] [--json] status|versions|pause|resume|snapshot\n"
     "    ctl ... rollback V [--retrain] [--skip A:B]\n"
     "                 client of a running trainer's admin API"},
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

/* Raises the soft open-file limit to the hard one, as Go's runtime does: the services' connection
 * limits (http.max_connections) and RocksDB need descriptors, and the soft default is often 1024. */
static void raise_open_file_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

int main(int argc, char **argv) {
  raise_open_file_limit();
#ifdef EDDY_CUDA
  eddy_learner_register(eddy_cuda_backend()); /* "cuda..." devices; the CPU backend is built in */
#endif
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
