/* `eddy serve`: an inference replica. Builds the metrics registry, the replica and its HTTP server,
 * starts following versions, and runs until SIGINT or SIGTERM: then stops taking requests (those in
 * flight finish), stops the follower and heartbeat threads and frees the served version. */
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
#include "serve/oip_grpc.h"
#include "serve/replica.h"
#include "stream/kafka_conf.h"

static const char serve_usage[] =
    "usage: eddy serve -c CONFIG [--set section.key=value]... [-b BOOTSTRAP]\n\n"
    "An inference replica for model.name. It follows the trainer's promotions and rollbacks: it\n"
    "reads the announcements on snapshot.topic (every partition, without a consumer group,\n"
    "starting from the last announcement; the newest announcement wins) and also asks for the\n"
    "current version every serve.poll_seconds, from serve.trainer_url (GET\n"
    "/v1/versions/current) or, when serve.store is set, from that shared snapshot store's\n"
    "CURRENT. Each version is fetched (HTTP from the trainer, or read from the store), verified\n"
    "(size and sha256 against the manifest, safetensors structure, tensor names, shapes and\n"
    "dtype against the manifest's spec, finite values) and swapped in atomically; a version that\n"
    "fails a check is refused (logged, eddy_replica_refusals_total) and the replica keeps serving\n"
    "what it had. Without kafka.bootstrap.servers it only polls.\n\n"
    "HTTP on http.bind (serve.threads threads): POST /v1/predict (one event as on the stream, label\n"
    "optional, or {\"instances\": [...]}) answers {\"model\", \"version\", \"predictions\"} with header\n"
    "X-Eddy-Version; GET /v1/model, /healthz (503 until a version is loaded), /metrics. The Open\n"
    "Inference Protocol (KServe v2, as Triton speaks it) under /v2: health, metadata and\n"
    "POST /v2/models/MODEL[/versions/V]/infer with JSON or binary tensors (inputs dense FP32 and\n"
    "sparse BYTES, outputs scores FP32 and label INT64); and over gRPC on serve.grpc_bind when set\n"
    "(inference.GRPCInferenceService, grpc.health.v1.Health).\n"
    "With http.token_file set, the replica reports itself to the trainer every\n"
    "serve.heartbeat_seconds (POST serve.trainer_url/v1/replicas/heartbeat).\n\n"
    EDDY_CLI_HELP_CONFIG EDDY_CLI_HELP_SET EDDY_CLI_HELP_BOOTSTRAP
    EDDY_CLI_HELP_HELP "\n"
    "With http.bind port 0 the chosen port is logged (\"replica API listening on port N\"); with\n"
    "serve.grpc_bind port 0, \"gRPC listening on port N\".\n"
    "Exit: 0 after SIGINT/SIGTERM; 1 on a runtime failure (HTTP port taken, bad token file);\n"
    "2 usage or config error.\n";

int eddy_cmd_serve(int argc, char **argv) {
  static const struct option opts[] = {EDDY_CLI_OPT_CONFIG,
                                       EDDY_CLI_OPT_SET,
                                       EDDY_CLI_OPT_BOOTSTRAP,
                                       EDDY_CLI_OPT_HELP,
                                       {NULL, 0, NULL, 0}};
  eddy_cli_t cli = {.cmd = "serve", .usage = serve_usage};
  if (eddy_cli_getopt(&cli, argc, argv, "c:s:b:h", opts) != -1) /* it takes every serve option */
    return cli.exit; /* EDDY_CLI_STOP: --help or a usage error, printed */
  eddy_config_t cfg;
  int rc = eddy_cli_load_config(&cli, EDDY_CLI_NEED_CONFIG | EDDY_CLI_CHECK_KAFKA | EDDY_CLI_CHECK_TOKEN_FILE, &cfg);
  if (rc != EDDY_EXIT_OK) return rc;

  char errstr[2048];
  rc = EDDY_EXIT_FAILURE;
  eddy_replica_t *replica = NULL;
  eddy_http_t *http = NULL;
  eddy_grpc_t *grpc = NULL;
  eddy_registry_t *reg = eddy_registry_new();
  if (!reg) {
    fprintf(stderr, "eddy serve: out of memory\n");
    goto out;
  }
  if (!(replica = eddy_replica_new(&cfg, reg, errstr, sizeof errstr))) {
    fprintf(stderr, "eddy serve: %s\n", errstr);
    goto out;
  }
  eddy_http_opts_t hopts = {0};
  hopts.bind = cfg.http_bind;
  hopts.threads = cfg.serve_threads;
  hopts.max_body_bytes = cfg.http_max_body_bytes;
  hopts.max_connections = cfg.http_max_connections;
  hopts.max_per_client = cfg.http_max_connections_per_client;
  hopts.header_timeout_s = cfg.http_header_timeout_seconds;
  hopts.on_request = eddy_replica_on_request;
  hopts.on_request_ctx = replica;
  if (!(http = eddy_http_new(&hopts, errstr, sizeof errstr)) ||
      eddy_replica_register(replica, http, errstr, sizeof errstr) != EDDY_OK) {
    fprintf(stderr, "eddy serve: http: %s\n", errstr);
    goto out;
  }
  if (cfg.serve_grpc_bind[0]) {
    eddy_grpc_opts_t gopts = {.bind = cfg.serve_grpc_bind,
                              .threads = cfg.serve_threads,
                              .max_message_bytes = cfg.http_max_body_bytes};
    if (!(grpc = eddy_grpc_new(replica, reg, &gopts, errstr, sizeof errstr))) {
      fprintf(stderr, "eddy serve: grpc: %s\n", errstr);
      goto out;
    }
  }
  eddy_cli_catch_stop_signals();
  if (eddy_http_start(http, errstr, sizeof errstr) != EDDY_OK) {
    fprintf(stderr, "eddy serve: http: %s\n", errstr);
    goto out;
  }
  if (grpc && eddy_grpc_start(grpc, errstr, sizeof errstr) != EDDY_OK) {
    fprintf(stderr, "eddy serve: grpc: %s\n", errstr);
    goto out;
  }
  /* The address the trainer lists this replica under: the bind host (a wildcard becomes this
   * machine's host name) and the actual port. */
  char host[256] = "127.0.0.1", advertise[300];
  const char *colon = strrchr(cfg.http_bind, ':');
  if (colon && colon > cfg.http_bind) snprintf(host, sizeof host, "%.*s", (int)(colon - cfg.http_bind), cfg.http_bind);
  if (!strcmp(host, "0.0.0.0") || !strcmp(host, "[::]") || !strcmp(host, "*")) {
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
  }
  snprintf(advertise, sizeof advertise, "%s:%u", host, eddy_http_port(http));
  if (eddy_replica_start(replica, advertise, errstr, sizeof errstr) != EDDY_OK) {
    fprintf(stderr, "eddy serve: %s\n", errstr);
    goto out;
  }
  EDDY_INFO("serve", "replica API listening on port %u (http.bind %s, model %s)", eddy_http_port(http),
            cfg.http_bind, cfg.model_name);
  if (grpc)
    EDDY_INFO("serve", "gRPC listening on port %u (serve.grpc_bind %s)", eddy_grpc_port(grpc), cfg.serve_grpc_bind);
  rc = EDDY_EXIT_OK;
  while (!eddy_cli_stop_signal()) {
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL);
  }
  EDDY_INFO("serve", "signal %d: stopping", eddy_cli_stop_signal());

out:
  eddy_grpc_destroy(grpc);
  eddy_http_destroy(http);
  eddy_replica_destroy(replica);
  eddy_registry_destroy(reg);
  eddy_config_free(&cfg);
  if (rc == EDDY_EXIT_OK) EDDY_INFO("serve", "stopped");
  return rc;
}
