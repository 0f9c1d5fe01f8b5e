/* The trainer's admin HTTP API (DESIGN "HTTP"): the dashboard, health, metrics, status, version
 * listings, snapshot file downloads, time series, the replica table, and the authenticated POSTs
 * rollback, pause, resume, snapshot and replica heartbeats. Routes are registered on an src/http
 * server; handlers only call the thread-safe eddy_trainer_* functions and read the store, so they
 * may run on any pool thread. */
#ifndef EDDY_ADMIN_H
#define EDDY_ADMIN_H

#include <stddef.h>

#include "config/config.h"
#include "core/errors.h"
#include "metrics/registry.h"
#include "http/server.h"
#include "train/trainer.h"

#define EDDY_ADMIN_SNAPSHOT_TIMEOUT_MS 30000     /* POST /v1/snapshot default wait */
#define EDDY_ADMIN_SNAPSHOT_TIMEOUT_MAX_MS 300000 /* largest "timeout_ms" a request may ask for */

/* Registers every trainer route on http (before eddy_http_start): GET / (the dashboard),
 * /assets/{file}, /healthz, /metrics, /v1/status, /v1/versions, /v1/versions/current,
 * /v1/snapshots/{v}/{file}, /v1/timeseries, /v1/replicas; POST (bearer auth) /v1/rollback,
 * /v1/pause, /v1/resume, /v1/snapshot, /v1/replicas/heartbeat. t and metrics are borrowed and must outlive
 * the server; metrics may be NULL (then /metrics answers 503). Errors from eddy_http_route. */
eddy_err_t eddy_admin_register(eddy_http_t *http, eddy_trainer_t *t, eddy_registry_t *metrics,
                               char *errstr, size_t errstr_size);

/* An eddy_http_on_request_fn counting eddy_http_requests_total{route,code} and observing
 * eddy_http_request_duration_seconds{route} in the eddy_registry_t passed as ctx (route "unmatched"
 * when no route matched). Set it as opts.on_request with on_request_ctx = the registry. */
void eddy_admin_on_request(void *registry, const char *method, const char *route, int status,
                           double seconds);

/* Creates (not starts) the admin server from cfg's [http] section: http.bind, http.max_body_bytes,
 * the bearer token read from http.token_file (eddy_http_load_token; empty token_file = no token,
 * so the POST routes answer 403), and eddy_admin_on_request on metrics (when not NULL).
 * NULL + errstr on a bad token file or bind failure. */
eddy_http_t *eddy_admin_server_new(const eddy_config_t *cfg, eddy_registry_t *metrics,
                                   char *errstr, size_t errstr_size);

#endif
