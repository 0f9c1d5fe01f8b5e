/* The replica's gRPC server (serve.grpc_bind): the Open Inference Protocol's
 * inference.GRPCInferenceService (ServerLive, ServerReady, ModelReady, ServerMetadata,
 * ModelMetadata, ModelInfer with typed or raw contents) and grpc.health.v1.Health (Check, Watch),
 * on gRPC's C core. Predictions take the replica's one forward pass, so they equal /v1/predict's
 * and /v2's bit for bit, and count in the same eddy_predict_* metrics (protocol="grpc"). */
#ifndef EDDY_OIP_GRPC_H
#define EDDY_OIP_GRPC_H

#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"
#include "metrics/registry.h"
#include "serve/replica.h"

#define EDDY_GRPC_DEFAULT_GRACE_MS 5000 /* destroy waits this long for calls in flight */

typedef struct eddy_grpc eddy_grpc_t;

typedef struct {
  const char *bind;           /* "host:port" (port 0: an ephemeral port), required */
  unsigned threads;           /* worker threads, each with its completion queue; 0 = 1 */
  uint64_t max_message_bytes; /* a request over it fails with RESOURCE_EXHAUSTED; 0 = gRPC's 4 MiB */
  unsigned grace_ms;          /* 0 = EDDY_GRPC_DEFAULT_GRACE_MS */
} eddy_grpc_opts_t;

/* Creates the server for replica r (borrowed, outlives it) and binds its port, without serving
 * yet; registers eddy_grpc_requests_total in metrics (borrowed). NULL with errstr naming the bind
 * and the reason. */
eddy_grpc_t *eddy_grpc_new(eddy_replica_t *r, eddy_registry_t *metrics, const eddy_grpc_opts_t *opts, char *errstr,
                           size_t errstr_size);

/* The bound port (the actual one when the bind asked for port 0). */
unsigned eddy_grpc_port(const eddy_grpc_t *g);

/* Starts serving on the worker threads. EDDY_ERR_STATE if already started, EDDY_ERR_BACKEND when a
 * thread cannot start. */
eddy_err_t eddy_grpc_start(eddy_grpc_t *g, char *errstr, size_t errstr_size);

/* Stops taking calls, ends the health watches, waits up to grace_ms for calls in flight (then
 * cancels them), joins the threads and frees everything. NULL is a no-op. */
void eddy_grpc_destroy(eddy_grpc_t *g);

#endif
