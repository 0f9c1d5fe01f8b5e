/* The inference replica (DESIGN "Snapshots", "HTTP"): follows the trainer's promotions and
 * rollbacks (announcements on snapshot.topic, plus a poll of the trainer or of a shared store every
 * serve.poll_seconds), fetches and verifies each version (size, SHA-256, safetensors structure,
 * shapes against the manifest's spec, finite values) and swaps it in atomically: a request runs on
 * the version it started with; a refused version changes nothing. Serves /v1/predict, /v1/model,
 * /healthz, /metrics and the Open Inference Protocol's /v2 routes (serve/oip.h) on an src/http
 * server, and reports itself to the trainer by heartbeat. */
#ifndef EDDY_REPLICA_H
#define EDDY_REPLICA_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/errors.h"
#include "metrics/registry.h"
#include "http/server.h"

#define EDDY_REPLICA_MAX_INSTANCES 10000     /* events per prediction request, on every protocol */
#define EDDY_REPLICA_MAX_HEADER (1u << 20)   /* safetensors header cap of a weights file */
#define EDDY_REPLICA_MAX_WEIGHTS (16ull << 30) /* largest weights file fetched */

typedef struct eddy_replica eddy_replica_t;

/* Checks cfg's [serve] section (trainer_url or store) and registers the replica's metrics in
 * metrics (borrowed; must outlive the replica). Starts nothing. NULL + errstr on failure. */
eddy_replica_t *eddy_replica_new(const eddy_config_t *cfg, eddy_registry_t *metrics, char *errstr,
                                 size_t errstr_size);

/* Registers GET /healthz, /metrics, /v1/model, POST /v1/predict and the /v2 routes on http (before
 * it starts). */
eddy_err_t eddy_replica_register(eddy_replica_t *r, eddy_http_t *http, char *errstr, size_t errstr_size);

/* An eddy_http_on_request_fn for the replica's server (ctx = the replica): eddy_predict_* and
 * eddy_http_requests_total / eddy_http_request_duration_seconds. */
void eddy_replica_on_request(void *replica, const char *method, const char *route, int status, double seconds);

/* Starts following versions and, when a token is configured, the heartbeat. advertise: the
 * replica's "host:port" as the trainer should list it. */
eddy_err_t eddy_replica_start(eddy_replica_t *r, const char *advertise, char *errstr, size_t errstr_size);

/* Stops the threads and frees everything (after the HTTP server is gone). NULL is a no-op. */
void eddy_replica_destroy(eddy_replica_t *r);

/* The version being served, 0 before the first load. */
uint64_t eddy_replica_version(eddy_replica_t *r);

#endif
