/* The trainer's admin HTTP API. GET routes read the trainer (status, health, time series, replica
 * table), the metrics registry, the snapshot store and the embedded dashboard; POST routes (bearer
 * auth, body cap and 405 enforced by the server) parse their JSON bodies strictly, answering 400
 * with the offending field named, then call the trainer. Snapshot downloads serve only the three
 * files of complete version folders, so no request can name a path outside the store. */
#include "train/admin.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/clock.h"
#include "core/json.h"
#include "core/log.h"
#include "http/assets.h"
#include "snapshot/manifest.h"
#include "snapshot/store.h"
#include "train/replicas.h"
#include "train/timeseries.h"

#define JSON_TYPE "application/json"
#define METRICS_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define VERSION_DIGITS_MAX 20
#define CURRENT_RETRIES 3 /* CURRENT may move (and retention delete the old one) between reads */

/* ---- small helpers ---- */

static int send_json(eddy_http_resp_t *resp, int status, cJSON *obj) {
  char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;
  cJSON_Delete(obj);
  if (!text) return EDDY_ERR_NOMEM;
  eddy_http_resp_status(resp, status);
  return eddy_http_resp_body_owned(resp, JSON_TYPE, text, strlen(text));
}

/* A JSON number, or null for NaN/Inf (JSON has no such values). */
static cJSON *add_num_or_null(cJSON *obj, const char *name, double v) {
  return isfinite(v) ? cJSON_AddNumberToObject(obj, name, v) : cJSON_AddNullToObject(obj, name);
}

static cJSON *metric_values_json(const eddy_metric_values_t *mv) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  add_num_or_null(o, "logloss", mv->logloss);
  add_num_or_null(o, "accuracy", mv->accuracy);
  add_num_or_null(o, "mse", mv->mse);
  cJSON_AddNumberToObject(o, "n", (double)mv->n);
  return o;
}

/* "42" or "v000042" (digits only, no sign, no spaces) into 1..2^53; -1 otherwise. */
static int parse_version_text(const char *text, uint64_t *version) {
  if (!text) return -1;
  if (*text == 'v') text++;
  size_t n = strlen(text);
  if (n == 0 || n > VERSION_DIGITS_MAX) return -1;
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (text[i] < '0' || text[i] > '9') return -1;
    if (v > (EDDY_MANIFEST_MAX_INT - (uint64_t)(text[i] - '0')) / 10) return -1;
    v = v * 10 + (uint64_t)(text[i] - '0');
  }
  if (v == 0) return -1;
  *version = v;
  return 0;
}

/* A JSON number that is an integer in [min, max]; -1 otherwise. */
static int json_uint(const cJSON *item, uint64_t min, uint64_t max, uint64_t *out) {
  if (!cJSON_IsNumber(item)) return -1;
  double d = item->valuedouble;
  if (!isfinite(d) || d != floor(d) || d < (double)min || d > (double)max) return -1;
  *out = (uint64_t)d;
  return 0;
}

/* Parses an optional JSON object body: "" (or only whitespace) gives an empty object. Answers 400
 * itself (returning NULL with *answered = 1) on bad JSON, a non-object, a duplicate key, or a key
 * not in allowed (NULL-terminated). */
static cJSON *parse_body(const eddy_http_req_t *req, eddy_http_resp_t *resp,
                         const char *const *allowed, int *answered) {
  *answered = 0;
  size_t len;
  const char *body = eddy_http_req_body(req, &len);
  size_t i = 0;
  while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n')) i++;
  if (i == len) return cJSON_CreateObject();
  char bad[128];
  cJSON *root = eddy_json_parse(body, len, bad, sizeof bad);
  if (!root) {
    *answered = 1;
    bool plain = strncmp(bad, "not valid JSON", 14) == 0; /* else: trailing data, a NUL in a string */
    eddy_http_resp_error(resp, 400, "request body is %s%s", plain ? "" : "not valid JSON: ", bad);
    return NULL;
  }
  if (!cJSON_IsObject(root)) {
    cJSON_Delete(root);
    *answered = 1;
    eddy_http_resp_error(resp, 400, "request body must be a JSON object");
    return NULL;
  }
  for (const cJSON *it = root->child; it; it = it->next) {
    const char *why = "is not a known field";
    for (const char *const *a = allowed; *a; a++)
      if (strcmp(it->string, *a) == 0) why = NULL;
    for (const cJSON *prev = root->child; !why && prev != it; prev = prev->next)
      if (strcmp(prev->string, it->string) == 0) why = "appears twice";
    if (why) {
      *answered = 1;
      eddy_http_resp_error(resp, 400, "request body: field \"%.64s\" %s", it->string, why);
      cJSON_Delete(root);
      return NULL;
    }
  }
  return root;
}

/* The trainer's status as a cJSON object (NULL on failure). */
static cJSON *status_object(eddy_trainer_t *t) {
  char *text = eddy_trainer_status_json(t);
  if (!text) return NULL;
  cJSON *obj = cJSON_Parse(text);
  free(text);
  return obj;
}

/* ---- GET routes ---- */

/* The dashboard runs only what the trainer serves: the policy tells the browser to load nothing
 * from anywhere else. */
#define DASHBOARD_CSP                                                                          \
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "           \
  "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

/* Answers with embedded asset name: 304 when If-None-Match names its ETag, else its bytes.
 * Cache-Control no-cache: browsers revalidate (cheaply, by ETag) so a new build shows at once. */
static int send_asset(const eddy_http_req_t *req, eddy_http_resp_t *resp, const char *name) {
  const eddy_asset_t *a = eddy_assets_find(name);
  if (!a) return eddy_http_resp_error(resp, 404, "no such asset: \"%.64s\"", name ? name : "");
  int rc = eddy_http_resp_header(resp, "Cache-Control", "no-cache");
  if (!rc) rc = eddy_http_resp_header(resp, "ETag", a->etag);
  if (!rc) rc = eddy_http_resp_header(resp, "X-Content-Type-Options", "nosniff");
  if (!rc && strcmp(name, "index.html") == 0)
    rc = eddy_http_resp_header(resp, "Content-Security-Policy", DASHBOARD_CSP);
  if (rc) return rc;
  const char *inm = eddy_http_req_header(req, "If-None-Match");
  if (inm && strstr(inm, a->etag)) return eddy_http_resp_status(resp, 304);
  return eddy_http_resp_body(resp, a->content_type, a->data, a->len);
}

static int h_index(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  (void)ctx;
  return send_asset(req, resp, "index.html");
}

static int h_asset(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  (void)ctx;
  return send_asset(req, resp, eddy_http_req_param(req, "file"));
}

static int h_healthz(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  (void)req;
  char why[512] = "";
  eddy_err_t err = eddy_trainer_health(ctx, why, sizeof why);
  cJSON *o = cJSON_CreateObject();
  if (!o) return EDDY_ERR_NOMEM;
  if (err == EDDY_OK && eddy_trainer_storage(ctx, why, sizeof why) != EDDY_OK) {
    cJSON_AddStringToObject(o, "status", "degraded"); /* a full disk: not fatal, retried */
    cJSON_AddStringToObject(o, "error", why);
    return send_json(resp, 503, o);
  }
  if (err == EDDY_OK) {
    cJSON_AddStringToObject(o, "status", "ok");
    return send_json(resp, 200, o);
  }
  cJSON_AddStringToObject(o, "status", "failing");
  cJSON_AddStringToObject(o, "error", why[0] ? why : eddy_err_str(err));
  return send_json(resp, 503, o);
}

static int h_metrics(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  (void)req;
  if (!ctx) return eddy_http_resp_error(resp, 503, "no metrics registry is configured");
  size_t len = 0;
  char *text = eddy_registry_render(ctx, &len);
  if (!text) return eddy_http_resp_error(resp, 500, "rendering the metrics failed");
  return eddy_http_resp_body_owned(resp, METRICS_TYPE, text, len);
}

static int h_status(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  (void)req;
  char *text = eddy_trainer_status_json(ctx);
  if (!text) return eddy_http_resp_error(resp, 500, "the trainer status is not available");
  return eddy_http_resp_body_owned(resp, JSON_TYPE, text, strlen(text));
}

static cJSON *version_entry_json(const eddy_store_entry_t *e) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  cJSON_AddNumberToObject(o, "version", (double)e->version);
  if (!e->manifest_ok) {
    cJSON_AddNullToObject(o, "status");
    cJSON_AddStringToObject(o, "error", e->error);
    cJSON_AddBoolToObject(o, "pinned", e->pinned);
    cJSON_AddBoolToObject(o, "current", e->current);
    return o;
  }
  const eddy_manifest_t *m = &e->manifest;
  char when[40];
  eddy_manifest_format_time(m->created_at_ms, when, sizeof when);
  cJSON_AddStringToObject(o, "status", eddy_version_status_name(m->status));
  if (m->reason[0])
    cJSON_AddStringToObject(o, "reason", m->reason);
  else
    cJSON_AddNullToObject(o, "reason");
  if (m->parent)
    cJSON_AddNumberToObject(o, "parent", (double)m->parent);
  else
    cJSON_AddNullToObject(o, "parent");
  cJSON_AddStringToObject(o, "created_at", when);
  cJSON_AddNumberToObject(o, "created_at_ms", (double)m->created_at_ms);
  cJSON_AddNumberToObject(o, "step", (double)m->step);
  cJSON_AddNumberToObject(o, "examples", (double)m->examples);
  cJSON_AddNumberToObject(o, "buffer_cursor", (double)m->buffer_cursor);
  cJSON_AddStringToObject(o, "precision", m->precision);
  cJSON_AddStringToObject(o, "weights_dtype", m->weights_dtype);
  cJSON *metrics = cJSON_AddObjectToObject(o, "metrics");
  if (metrics) {
    cJSON_AddItemToObject(metrics, "prequential", metric_values_json(&m->prequential));
    cJSON_AddItemToObject(metrics, "holdout", metric_values_json(&m->holdout));
  }
  char *gate = eddy_manifest_gate_json(m); /* the verdict's criteria, null for older versions */
  cJSON *g = gate ? cJSON_Parse(gate) : NULL;
  free(gate);
  if (g) cJSON_AddItemToObject(o, "gate", g);
  else cJSON_AddNullToObject(o, "gate");
  cJSON_AddBoolToObject(o, "pinned", e->pinned);
  cJSON_AddBoolToObject(o, "current", e->current);
  return o;
}

static int h_versions(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  eddy_store_t *store = eddy_trainer_store(ctx);
  uint64_t limit = EDDY_STORE_MAX_VERSIONS;
  const char *q = eddy_http_req_query(req, "limit");
  if (q && (q[0] < '0' || q[0] > '9' || parse_version_text(q, &limit) != 0))
    return eddy_http_resp_error(resp, 400, "limit=\"%.32s\" is not a positive integer", q);
  eddy_store_entry_t *entries = NULL;
  size_t n = 0;
  char err[512];
  if (eddy_store_list(store, &entries, &n, err, sizeof err) != EDDY_OK)
    return eddy_http_resp_error(resp, 500, "listing versions: %s", err);
  cJSON *o = cJSON_CreateObject();
  cJSON *list = o ? cJSON_AddArrayToObject(o, "versions") : NULL;
  if (!list) {
    cJSON_Delete(o);
    eddy_store_list_free(entries, n);
    return EDDY_ERR_NOMEM;
  }
  cJSON_AddStringToObject(o, "model", eddy_store_model(store));
  uint64_t current = 0;
  for (size_t i = 0; i < n; i++) {
    if (entries[i].current) current = entries[i].version;
    if (i < limit) cJSON_AddItemToArray(list, version_entry_json(&entries[i]));
  }
  if (current)
    cJSON_AddNumberToObject(o, "current", (double)current);
  else
    cJSON_AddNullToObject(o, "current");
  cJSON_AddNumberToObject(o, "count", (double)n);
  eddy_store_list_free(entries, n);
  return send_json(resp, 200, o);
}

static int add_version_header(eddy_http_resp_t *resp, uint64_t version) {
  char v[32];
  snprintf(v, sizeof v, "%" PRIu64, version);
  return eddy_http_resp_header(resp, "X-Eddy-Version", v);
}

static int h_current(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  (void)req;
  eddy_store_t *store = eddy_trainer_store(ctx);
  char err[512], path[PATH_MAX];
  for (int attempt = 0; attempt < CURRENT_RETRIES; attempt++) {
    uint64_t version = 0;
    eddy_err_t e = eddy_store_current(store, &version, err, sizeof err);
    if (e == EDDY_ERR_NOT_FOUND)
      return eddy_http_resp_error(resp, 404, "no version is current yet");
    if (e != EDDY_OK) return eddy_http_resp_error(resp, 500, "reading CURRENT: %s", err);
    if (eddy_store_path(store, version, EDDY_STORE_MANIFEST, path, sizeof path) != EDDY_OK)
      return eddy_http_resp_error(resp, 500, "store path too long");
    e = eddy_http_resp_file(resp, JSON_TYPE, path);
    if (e == EDDY_OK) return add_version_header(resp, version);
    if (e != EDDY_ERR_NOT_FOUND)
      return eddy_http_resp_error(resp, 500, "reading the manifest of version %" PRIu64,
                                  version);
  }
  return eddy_http_resp_error(resp, 404, "the current version's manifest is gone");
}

static int h_snapshot_file(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  eddy_store_t *store = eddy_trainer_store(ctx);
  const char *vtext = eddy_http_req_param(req, "v");
  const char *file = eddy_http_req_param(req, "file");
  uint64_t version;
  if (parse_version_text(vtext, &version) != 0)
    return eddy_http_resp_error(resp, 404, "no such version: \"%.40s\"", vtext ? vtext : "");
  /* The manifest, and any file it lists (weights, state, the precisions' weights), whose checksum
   * (from the manifest) lets a replica verify what it downloaded. */
  const char *type = NULL;
  char sha[65] = "";
  if (file && strcmp(file, EDDY_STORE_MANIFEST) == 0) {
    type = JSON_TYPE;
  } else if (file) {
    eddy_manifest_t m;
    char err[256];
    if (eddy_store_load_manifest(store, version, &m, err, sizeof err) == EDDY_OK) {
      const eddy_manifest_file_t *f = eddy_manifest_file(&m, file);
      if (f) snprintf(sha, sizeof sha, "%s", f->sha256);
    }
    eddy_manifest_clear(&m);
    if (sha[0] || !strcmp(file, EDDY_STORE_WEIGHTS) || !strcmp(file, EDDY_STORE_STATE)) type = "application/octet-stream";
  }
  if (!type)
    return eddy_http_resp_error(resp, 404,
                                "no such snapshot file: \"%.64s\" (" EDDY_STORE_MANIFEST
                                " or a file its \"files\" lists)",
                                file ? file : "");
  char path[PATH_MAX];
  if (eddy_store_path(store, version, file, path, sizeof path) != EDDY_OK)
    return eddy_http_resp_error(resp, 500, "store path too long");
  eddy_err_t e = eddy_http_resp_file(resp, type, path);
  if (e == EDDY_ERR_NOT_FOUND)
    return eddy_http_resp_error(resp, 404, "version %" PRIu64 " has no %s", version, file);
  if (e != EDDY_OK)
    return eddy_http_resp_error(resp, 500, "reading %s of version %" PRIu64, file, version);
  if (sha[0]) eddy_http_resp_header(resp, "X-Eddy-Sha256", sha);
  return add_version_header(resp, version);
}

/* GET /v1/timeseries[?since_ms=T]: the sampler's points newer than T (all without it). */
static int h_timeseries(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  int64_t since = -1;
  const char *q = eddy_http_req_query(req, "since_ms");
  if (q) {
    uint64_t v = 0;
    size_t n = strlen(q);
    bool ok = n > 0 && n <= VERSION_DIGITS_MAX;
    for (size_t i = 0; ok && i < n; i++) {
      ok = q[i] >= '0' && q[i] <= '9' && v <= (EDDY_MANIFEST_MAX_INT - (uint64_t)(q[i] - '0')) / 10;
      if (ok) v = v * 10 + (uint64_t)(q[i] - '0');
    }
    if (!ok)
      return eddy_http_resp_error(resp, 400,
                                  "since_ms=\"%.32s\" is not a unix time in milliseconds (an integer "
                                  "from 0 to %llu)",
                                  q, (unsigned long long)EDDY_MANIFEST_MAX_INT);
    since = (int64_t)v;
  }
  char *text = eddy_timeseries_json(eddy_trainer_timeseries(ctx), since);
  if (!text) return EDDY_ERR_NOMEM;
  return eddy_http_resp_body_owned(resp, JSON_TYPE, text, strlen(text));
}

static int h_replicas(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  (void)req;
  char *text = eddy_replicas_json(eddy_trainer_replicas(ctx), eddy_clock_wall_ms());
  if (!text) return EDDY_ERR_NOMEM;
  return eddy_http_resp_body_owned(resp, JSON_TYPE, text, strlen(text));
}

/* ---- POST routes ---- */

static int h_rollback(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  static const char *const allowed[] = {"version", "retrain", "skip", NULL};
  int answered;
  cJSON *body = parse_body(req, resp, allowed, &answered);
  if (!body) return answered ? EDDY_OK : EDDY_ERR_NOMEM;
  const cJSON *jv = cJSON_GetObjectItemCaseSensitive(body, "version");
  const cJSON *jr = cJSON_GetObjectItemCaseSensitive(body, "retrain");
  const cJSON *js = cJSON_GetObjectItemCaseSensitive(body, "skip");
  uint64_t version = 0, skip_from = 1, skip_to = 0;
  bool retrain = false;
  int rc = EDDY_OK;
  if (!jv) {
    rc = eddy_http_resp_error(resp, 400, "request body: field \"version\" is required");
    goto out;
  }
  if (json_uint(jv, 1, EDDY_MANIFEST_MAX_INT, &version) != 0) {
    rc = eddy_http_resp_error(resp, 400,
                              "request body: field \"version\" must be an integer from 1 to %llu",
                              (unsigned long long)EDDY_MANIFEST_MAX_INT);
    goto out;
  }
  if (jr) {
    if (!cJSON_IsBool(jr)) {
      rc = eddy_http_resp_error(resp, 400, "request body: field \"retrain\" must be true or false");
      goto out;
    }
    retrain = cJSON_IsTrue(jr);
  }
  if (js && !cJSON_IsNull(js)) {
    uint64_t a, b;
    if (!cJSON_IsArray(js) || cJSON_GetArraySize(js) != 2 ||
        json_uint(cJSON_GetArrayItem(js, 0), 0, EDDY_MANIFEST_MAX_INT, &a) != 0 ||
        json_uint(cJSON_GetArrayItem(js, 1), 0, EDDY_MANIFEST_MAX_INT, &b) != 0) {
      rc = eddy_http_resp_error(resp, 400,
                                "request body: field \"skip\" must be [FROM_SEQ, TO_SEQ], two "
                                "integers from 0 to %llu",
                                (unsigned long long)EDDY_MANIFEST_MAX_INT);
      goto out;
    }
    if (a > b) {
      rc = eddy_http_resp_error(resp, 400,
                                "request body: field \"skip\" [%llu, %llu]: FROM_SEQ is after "
                                "TO_SEQ",
                                (unsigned long long)a, (unsigned long long)b);
      goto out;
    }
    if (!retrain) {
      rc = eddy_http_resp_error(resp, 400,
                                "request body: field \"skip\" needs \"retrain\": true (a "
                                "serve-only rollback trains nothing)");
      goto out;
    }
    skip_from = a;
    skip_to = b;
  }
  char err[512] = "";
  eddy_err_t e = eddy_trainer_rollback(ctx, version, retrain, skip_from, skip_to, err, sizeof err);
  if (e != EDDY_OK) {
    int status = e == EDDY_ERR_NOT_FOUND ? 404
                 : e == EDDY_ERR_STATE   ? 409
                 : e == EDDY_ERR_INVALID_ARG ? 400
                                             : 500;
    rc = eddy_http_resp_error(resp, status, "rollback to version %llu: %s",
                              (unsigned long long)version, err[0] ? err : eddy_err_str(e));
    goto out;
  }
  cJSON *o = cJSON_CreateObject();
  if (!o) {
    rc = EDDY_ERR_NOMEM;
    goto out;
  }
  cJSON_AddNumberToObject(o, "version", (double)version);
  cJSON_AddBoolToObject(o, "retrain", retrain);
  if (skip_to >= skip_from) {
    cJSON *s = cJSON_AddArrayToObject(o, "skip");
    if (s) {
      cJSON_AddItemToArray(s, cJSON_CreateNumber((double)skip_from));
      cJSON_AddItemToArray(s, cJSON_CreateNumber((double)skip_to));
    }
  } else {
    cJSON_AddNullToObject(o, "skip");
  }
  uint64_t current = 0;
  if (eddy_store_current(eddy_trainer_store(ctx), &current, err, sizeof err) == EDDY_OK)
    cJSON_AddNumberToObject(o, "current_version", (double)current);
  else
    cJSON_AddNullToObject(o, "current_version");
  cJSON *st = status_object(ctx);
  if (st) cJSON_AddItemToObject(o, "status", st);
  rc = send_json(resp, 200, o);
out:
  cJSON_Delete(body);
  return rc;
}

static int pause_resume(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp,
                        bool pause) {
  static const char *const allowed[] = {NULL};
  int answered;
  cJSON *body = parse_body(req, resp, allowed, &answered);
  if (!body) return answered ? EDDY_OK : EDDY_ERR_NOMEM;
  cJSON_Delete(body);
  if (pause)
    eddy_trainer_pause(ctx);
  else
    eddy_trainer_resume(ctx);
  char *text = eddy_trainer_status_json(ctx);
  if (!text) return eddy_http_resp_error(resp, 500, "the trainer status is not available");
  return eddy_http_resp_body_owned(resp, JSON_TYPE, text, strlen(text));
}

static int h_pause(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  return pause_resume(ctx, req, resp, true);
}

static int h_resume(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  return pause_resume(ctx, req, resp, false);
}

static int h_snapshot(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  static const char *const allowed[] = {"timeout_ms", NULL};
  int answered;
  cJSON *body = parse_body(req, resp, allowed, &answered);
  if (!body) return answered ? EDDY_OK : EDDY_ERR_NOMEM;
  uint64_t timeout_ms = EDDY_ADMIN_SNAPSHOT_TIMEOUT_MS;
  const cJSON *jt = cJSON_GetObjectItemCaseSensitive(body, "timeout_ms");
  int bad = jt && json_uint(jt, 1, EDDY_ADMIN_SNAPSHOT_TIMEOUT_MAX_MS, &timeout_ms) != 0;
  cJSON_Delete(body);
  if (bad)
    return eddy_http_resp_error(resp, 400,
                                "request body: field \"timeout_ms\" must be an integer from 1 "
                                "to %d",
                                EDDY_ADMIN_SNAPSHOT_TIMEOUT_MAX_MS);
  uint64_t version = 0;
  char err[512] = "";
  eddy_err_t e = eddy_trainer_snapshot(ctx, (int)timeout_ms, &version, err, sizeof err);
  if (e != EDDY_OK) {
    /* STATE: degraded, stopping, or not published within the wait: the service cannot now. */
    int status = e == EDDY_ERR_STATE ? 503 : 500;
    return eddy_http_resp_error(resp, status, "snapshot: %s", err[0] ? err : eddy_err_str(e));
  }
  cJSON *o = cJSON_CreateObject();
  if (!o) return EDDY_ERR_NOMEM;
  cJSON_AddNumberToObject(o, "version", (double)version);
  eddy_manifest_t m;
  if (eddy_store_load_manifest(eddy_trainer_store(ctx), version, &m, err, sizeof err) ==
      EDDY_OK) {
    cJSON_AddStringToObject(o, "status", eddy_version_status_name(m.status));
    if (m.reason[0])
      cJSON_AddStringToObject(o, "reason", m.reason);
    else
      cJSON_AddNullToObject(o, "reason");
    cJSON_AddNumberToObject(o, "step", (double)m.step);
    cJSON_AddNumberToObject(o, "examples", (double)m.examples);
  } else {
    /* Published, then removed by retention before we looked (a rejected version, most likely). */
    cJSON_AddNullToObject(o, "status");
    cJSON_AddStringToObject(o, "reason", err);
  }
  eddy_manifest_clear(&m);
  uint64_t current = 0;
  if (eddy_store_current(eddy_trainer_store(ctx), &current, err, sizeof err) == EDDY_OK)
    cJSON_AddNumberToObject(o, "current_version", (double)current);
  else
    cJSON_AddNullToObject(o, "current_version");
  return send_json(resp, 200, o);
}

/* A string of 1..max printable ASCII characters other than space; -1 otherwise. */
static int json_token(const cJSON *item, size_t max, const char **out) {
  if (!cJSON_IsString(item)) return -1;
  size_t n = strlen(item->valuestring);
  if (n == 0 || n > max) return -1;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)item->valuestring[i] <= 0x20 || (unsigned char)item->valuestring[i] >= 0x7f)
      return -1;
  *out = item->valuestring;
  return 0;
}

/* POST /v1/replicas/heartbeat: one replica reports what it serves (docs/admin-api.md). */
static int h_heartbeat(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  static const char *const allowed[] = {"id",       "url",   "version",   "loaded_at_ms",  "freshness_seconds",
                                        "predictions", "refusals", "state", "precision", "precision_why", NULL};
  int answered;
  cJSON *body = parse_body(req, resp, allowed, &answered);
  if (!body) return answered ? EDDY_OK : EDDY_ERR_NOMEM;
  eddy_replica_beat_t beat;
  memset(&beat, 0, sizeof beat);
  beat.loaded_at_ms = -1;
  beat.freshness_seconds = NAN;
  const char *bad = NULL, *text = NULL;
  const cJSON *f;
  uint64_t u;
#define FIELD(name) (f = cJSON_GetObjectItemCaseSensitive(body, name))
  if (!FIELD("id") || json_token(f, EDDY_REPLICA_ID_MAX, &text) != 0)
    bad = "\"id\" is required: the replica's host:port, 1 to 128 printable characters, no spaces";
  else
    snprintf(beat.id, sizeof beat.id, "%s", text);
  if (!bad && (!FIELD("url") || json_token(f, EDDY_REPLICA_URL_MAX, &text) != 0 ||
               (strncmp(text, "http://", 7) != 0 && strncmp(text, "https://", 8) != 0)))
    bad = "\"url\" is required: an http:// or https:// URL of at most 512 characters, no spaces";
  else if (!bad)
    snprintf(beat.url, sizeof beat.url, "%s", text);
  if (!bad && (!FIELD("version") ||
               (!cJSON_IsNull(f) && json_uint(f, 1, EDDY_MANIFEST_MAX_INT, &beat.version) != 0)))
    bad = "\"version\" is required: the version served, an integer from 1, or null before the "
          "first load";
  if (!bad && FIELD("loaded_at_ms") && !cJSON_IsNull(f)) {
    if (json_uint(f, 0, EDDY_MANIFEST_MAX_INT, &u) != 0)
      bad = "\"loaded_at_ms\" must be a unix time in milliseconds or null";
    else
      beat.loaded_at_ms = (int64_t)u;
  }
  if (!bad && FIELD("freshness_seconds") && !cJSON_IsNull(f)) {
    if (!cJSON_IsNumber(f) || !isfinite(f->valuedouble) || fabs(f->valuedouble) > 1e9)
      bad = "\"freshness_seconds\" must be a number of seconds or null";
    else
      beat.freshness_seconds = f->valuedouble;
  }
  if (!bad && FIELD("predictions") && json_uint(f, 0, EDDY_MANIFEST_MAX_INT, &beat.predictions) != 0)
    bad = "\"predictions\" must be a count (an integer from 0)";
  if (!bad && FIELD("refusals") && json_uint(f, 0, EDDY_MANIFEST_MAX_INT, &beat.refusals) != 0)
    bad = "\"refusals\" must be a count (an integer from 0)";
  if (!bad && (!FIELD("state") || !cJSON_IsString(f) ||
               (strcmp(f->valuestring, "serving") != 0 && strcmp(f->valuestring, "waiting") != 0)))
    bad = "\"state\" is required: \"serving\" or \"waiting\"";
  else if (!bad)
    snprintf(beat.state, sizeof beat.state, "%s", f->valuestring);
  if (!bad && FIELD("precision") && !cJSON_IsNull(f)) {
    if (!cJSON_IsString(f) || (f->valuestring[0] && eddy_infer_precision_parse(f->valuestring, NULL) != 0))
      bad = "\"precision\" must be fp32, bf16, fp16, int8, \"\" or null";
    else
      snprintf(beat.precision, sizeof beat.precision, "%s", f->valuestring);
  }
  if (!bad && FIELD("precision_why")) {
    bool printable = cJSON_IsString(f) && strlen(f->valuestring) <= EDDY_REPLICA_WHY_MAX;
    for (const char *c = printable ? f->valuestring : ""; *c && printable; c++) printable = (unsigned char)*c >= 0x20;
    if (!printable) bad = "\"precision_why\" must be a string of at most 512 characters, no control characters";
    else snprintf(beat.precision_why, sizeof beat.precision_why, "%s", f->valuestring);
  }
#undef FIELD
  cJSON_Delete(body);
  if (bad) return eddy_http_resp_error(resp, 400, "request body: field %s", bad);
  eddy_replicas_beat(eddy_trainer_replicas(ctx), &beat, eddy_clock_wall_ms());
  cJSON *o = cJSON_CreateObject();
  if (!o) return EDDY_ERR_NOMEM;
  cJSON_AddBoolToObject(o, "ok", true);
  return send_json(resp, 200, o);
}

/* ---- registration ---- */

eddy_err_t eddy_admin_register(eddy_http_t *http, eddy_trainer_t *t, eddy_registry_t *metrics,
                               char *errstr, size_t errstr_size) {
  if (!http || !t)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                     "admin: an HTTP server and a trainer are required");
  static const struct {
    const char *method, *pattern;
    unsigned flags;
    eddy_http_handler_fn handler;
    int metrics_ctx;
  } routes[] = {
      {"GET", "/", 0, h_index, 0},
      {"GET", "/assets/{file}", 0, h_asset, 0},
      {"GET", "/healthz", 0, h_healthz, 0},
      {"GET", "/metrics", 0, h_metrics, 1},
      {"GET", "/v1/status", 0, h_status, 0},
      {"GET", "/v1/versions", 0, h_versions, 0},
      {"GET", "/v1/versions/current", 0, h_current, 0},
      {"GET", "/v1/snapshots/{v}/{file}", 0, h_snapshot_file, 0},
      {"GET", "/v1/timeseries", 0, h_timeseries, 0},
      {"GET", "/v1/replicas", 0, h_replicas, 0},
      {"POST", "/v1/rollback", EDDY_HTTP_AUTH, h_rollback, 0},
      {"POST", "/v1/pause", EDDY_HTTP_AUTH, h_pause, 0},
      {"POST", "/v1/resume", EDDY_HTTP_AUTH, h_resume, 0},
      {"POST", "/v1/snapshot", EDDY_HTTP_AUTH, h_snapshot, 0},
      {"POST", "/v1/replicas/heartbeat", EDDY_HTTP_AUTH, h_heartbeat, 0},
  };
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
    void *ctx = routes[i].metrics_ctx ? (void *)metrics : (void *)t;
    eddy_err_t err = eddy_http_route(http, routes[i].method, routes[i].pattern, routes[i].flags,
                                     routes[i].handler, ctx, errstr, errstr_size);
    if (err) return err;
  }
  return EDDY_OK;
}

void eddy_admin_on_request(void *registry, const char *method, const char *route, int status,
                           double seconds) {
  (void)method;
  static const double buckets[] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30};
  if (!registry) return;
  /* eddy_registry_add returns the family already registered, so this is a lookup after the
   * first request. */
  eddy_metric_t *total = eddy_registry_add(
      registry, EDDY_METRIC_COUNTER, "eddy_http_requests_total",
      "HTTP requests answered, by route pattern and status code", "route,code", NULL, 0, NULL, 0);
  eddy_metric_t *duration = eddy_registry_add(
      registry, EDDY_METRIC_HISTOGRAM, "eddy_http_request_duration_seconds",
      "Time from the first byte of an HTTP request to its answer, by route pattern", "route",
      buckets, sizeof buckets / sizeof buckets[0], NULL, 0);
  char code[16];
  snprintf(code, sizeof code, "%d", status);
  const char *label = route ? route : "unmatched";
  const char *values[2] = {label, code};
  eddy_series_add(eddy_metric_series(total, values), 1);
  eddy_series_observe(eddy_metric_series(duration, values), seconds); /* reads route only */
}

eddy_http_t *eddy_admin_server_new(const eddy_config_t *cfg, eddy_registry_t *metrics,
                                   char *errstr, size_t errstr_size) {
  char token[EDDY_HTTP_TOKEN_MAX + 1] = "";
  if (cfg->http_token_file[0]) {
    char why[512];
    if (eddy_http_load_token(cfg->http_token_file, token, sizeof token, why, sizeof why) !=
        EDDY_OK) {
      eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "%s", why);
      return NULL;
    }
  } else {
    EDDY_WARN("admin", "http.token_file is empty: POST /v1/rollback, /v1/pause, /v1/resume, "
                       "/v1/snapshot and /v1/replicas/heartbeat answer 403 until a token is "
                       "configured");
  }
  eddy_http_opts_t opts = {0};
  opts.bind = cfg->http_bind;
  opts.max_body_bytes = cfg->http_max_body_bytes;
  opts.max_connections = cfg->http_max_connections;
  opts.max_per_client = cfg->http_max_connections_per_client;
  opts.header_timeout_s = cfg->http_header_timeout_seconds;
  opts.token = token;
  if (metrics) {
    opts.on_request = eddy_admin_on_request;
    opts.on_request_ctx = metrics;
  }
  eddy_http_t *http = eddy_http_new(&opts, errstr, errstr_size);
  memset(token, 0, sizeof token);
  return http;
}
