/* The inference replica (see replica.h). One follower thread decides which version to serve (the
 * newest announcement, or what the trainer or the store says is CURRENT at each poll), fetches it,
 * verifies it and swaps it in; a heartbeat thread reports to the trainer. Requests take a counted
 * reference to the served version under a mutex held for a pointer copy and an increment, so a
 * swap never waits for requests and a request never sees a half-built model. Before building a
 * new model the follower waits until the one it retired last has been freed: at most one extra
 * model is alive at any time. */
#include "serve/replica.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/event.h"
#include "core/log.h"
#include "http/client.h"
#include "model/batch.h"
#include "model/infer.h"
#include "serve/oip.h"
#include "serve/precision.h"
#include "serve/replica_internal.h"
#include "snapshot/manifest.h"
#include "snapshot/store.h"
#include "stream/follower.h"

#define LOG_MOD "serve"
#define FETCH_MAX_SMALL (EDDY_MANIFEST_MAX_BYTES) /* manifests */
#define PREDICT_CODES 7                           /* status codes with a series made up front */

/* One loaded version; freed when the last reference goes. */
typedef struct served {
  atomic_uint refs;
  eddy_replica_t *owner;
  eddy_infer_t *models[EDDY_INFER_PRECISIONS]; /* the precisions held (bit p of held) */
  unsigned held;
  eddy_prec_base_t base; /* what requests run at without a choice and without load */
  const eddy_model_spec_t *spec;
  uint64_t version;
  uint32_t outputs;
  eddy_head_t head;
  int64_t loaded_at_ms;
  char version_text[24];
  cJSON *model_obj; /* the static part of the /v1/model answer; read-only once loaded */
} served_t;

struct eddy_replica {
  eddy_config_t cfg; /* copy ([kafka] list borrowed from the caller's config, which outlives us) */
  eddy_registry_t *reg;
  eddy_prec_selector_t *sel; /* serving precisions: base, requests, load */
  char token[EDDY_HTTP_TOKEN_MAX + 1];
  char advertise[300];
  char source[EDDY_CONFIG_STR + 16]; /* "http://..." or "store:PATH", for /v1/model and logs */

  pthread_mutex_t cur_mu; /* guards cur (pointer copy + reference increment only) */
  served_t *cur;
  atomic_int live;        /* served_t objects not yet freed */
  atomic_uint_least64_t version;
  atomic_uint_least64_t predictions, refusals;
  atomic_int_least64_t freshness_ms; /* last swap's event-to-serve time; -1 = unknown */
  atomic_uint_least64_t seen_downs, seen_ups; /* load steps already counted in the metrics */
  pthread_mutex_t why_mu;
  char why_waiting[512];  /* /healthz before the first load */

  pthread_t follow_thread, beat_thread;
  bool follow_started, beat_started;
  atomic_bool stop;
  pthread_mutex_t stop_mu;
  pthread_cond_t stop_cv;

  pthread_key_t work_key;
  bool work_key_ok;

  /* metrics */
  eddy_series_t *m_version, *m_swaps, *m_refuse_fetch, *m_refuse_verify, *m_last_swap, *m_announcements,
      *m_beat_errors, *m_event_to_serve, *m_announce_to_serve, *m_load_seconds, *m_model_bytes;
  eddy_metric_t *m_requests, *m_latency, *m_instances, *m_queue, *m_http_total, *m_http_duration;
  eddy_series_t *m_steps_down, *m_steps_up, *m_load_steps;
  eddy_series_t *m_precision[EDDY_INFER_PRECISIONS]; /* 1: requests without a choice run at it now */
  /* by protocol; read-only after eddy_replica_new */
  eddy_series_t *m_latency_by[EDDY_PROTO__COUNT], *m_instances_by[EDDY_PROTO__COUNT], *m_queue_by[EDDY_PROTO__COUNT];
  eddy_series_t *m_by_precision[EDDY_PROTO__COUNT][EDDY_INFER_PRECISIONS][EDDY_PREC_WHY_COUNT]; /* requests */
  struct {
    int code;
    eddy_series_t *s;
  } predict_codes[EDDY_PROTO__COUNT][PREDICT_CODES];
};

static const char *const proto_names[EDDY_PROTO__COUNT] = {"v1", "v2", "grpc"};

/* Sleeps up to ms unless the replica is stopping; false when it is. */
static bool nap(eddy_replica_t *r, int ms) {
  struct timespec until = eddy_clock_deadline(CLOCK_REALTIME, ms); /* stop_cv: default clock */
  pthread_mutex_lock(&r->stop_mu);
  while (!atomic_load(&r->stop))
    if (pthread_cond_timedwait(&r->stop_cv, &r->stop_mu, &until) == ETIMEDOUT) break;
  pthread_mutex_unlock(&r->stop_mu);
  return !atomic_load(&r->stop);
}

static void set_waiting(eddy_replica_t *r, const char *fmt, const char *detail) {
  pthread_mutex_lock(&r->why_mu);
  snprintf(r->why_waiting, sizeof r->why_waiting, fmt, detail);
  pthread_mutex_unlock(&r->why_mu);
}

/* ---- served versions ---- */

static void served_free(served_t *s) {
  if (!s) return;
  eddy_replica_t *r = s->owner;
  for (int p = 0; p < EDDY_INFER_PRECISIONS; p++) eddy_infer_destroy(s->models[p]);
  cJSON_Delete(s->model_obj);
  free(s);
  atomic_fetch_sub(&r->live, 1);
}

static served_t *acquire(eddy_replica_t *r) {
  pthread_mutex_lock(&r->cur_mu);
  served_t *s = r->cur;
  if (s) atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
  pthread_mutex_unlock(&r->cur_mu);
  return s;
}

static void release(served_t *s) {
  if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) served_free(s);
}

eddy_served_t *eddy_replica_acquire(eddy_replica_t *r) { return acquire(r); }
void eddy_replica_release(eddy_served_t *s) { release(s); }
uint64_t eddy_served_version(const eddy_served_t *s) { return s->version; }
const char *eddy_served_version_text(const eddy_served_t *s) { return s->version_text; }
const eddy_model_spec_t *eddy_served_spec(const eddy_served_t *s) { return s->spec; }
uint32_t eddy_served_outputs(const eddy_served_t *s) { return s->outputs; }
const char *eddy_replica_model_name(const eddy_replica_t *r) { return r->cfg.model_name; }

void eddy_replica_waiting(eddy_replica_t *r, char *buf, size_t size) {
  pthread_mutex_lock(&r->why_mu);
  snprintf(buf, size, "%s", r->why_waiting);
  pthread_mutex_unlock(&r->why_mu);
}

/* ---- HTTP ---- */

/* GET url with an answer cap: the HTTP status, or -1 with errstr when no answer came. ans is
 * filled either way (free it); ans->too_large tells an answer over the cap. */
static long http_get(eddy_http_client_t *c, const char *url, size_t max, eddy_http_answer_t *ans, char *errstr,
                     size_t errstr_size) {
  eddy_http_request_t req = {.max_answer = max};
  if (eddy_http_client_call(c, url, &req, ans, errstr, errstr_size) != EDDY_OK) return -1;
  return ans->status;
}

/* ---- loading a version ---- */

typedef enum { LOAD_OK = 0, LOAD_FETCH, LOAD_VERIFY } load_result_t;

/* File name of the version m (its manifest is loaded) into ans, from the trainer or the store,
 * capped at the size the manifest lists plus one byte (so a longer file is caught). */
static load_result_t fetch_file(eddy_replica_t *r, eddy_http_client_t *c, eddy_store_t **store,
                                const eddy_manifest_t *m, const char *name, eddy_http_answer_t *ans, char *errstr,
                                size_t errstr_size) {
  memset(ans, 0, sizeof *ans);
  const eddy_manifest_file_t *f = eddy_manifest_file(m, name);
  if (!f) {
    eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "v%06" PRIu64 ": the manifest lists no %s", m->version, name);
    return LOAD_VERIFY;
  }
  if (f->bytes > EDDY_REPLICA_MAX_WEIGHTS) {
    eddy_errf(EDDY_ERR_TOO_LARGE, errstr, errstr_size, "v%06" PRIu64 ": %s of %" PRIu64 " bytes over the cap",
              m->version, name, f->bytes);
    return LOAD_VERIFY;
  }
  if (r->cfg.serve_store[0]) {
    char path[4096];
    if (eddy_store_path(*store, m->version, name, path, sizeof path) != EDDY_OK) {
      eddy_errf(EDDY_ERR_TOO_LARGE, errstr, errstr_size, "store path too long");
      return LOAD_FETCH;
    }
    FILE *fp = fopen(path, "rb");
    if (!fp) {
      eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "open %s: %s", path, strerror(errno));
      return LOAD_FETCH;
    }
    ans->body = malloc(f->bytes + 2);
    size_t got = ans->body ? fread(ans->body, 1, f->bytes + 1, fp) : 0;
    int bad = ans->body == NULL || ferror(fp);
    fclose(fp);
    if (bad) {
      eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "read %s failed", path);
      return LOAD_FETCH;
    }
    ans->len = got;
    return LOAD_OK;
  }
  char url[EDDY_CONFIG_STR + 160];
  const char *base = r->cfg.serve_trainer_url;
  size_t bl = strlen(base);
  while (bl && base[bl - 1] == '/') bl--;
  snprintf(url, sizeof url, "%.*s/v1/snapshots/%" PRIu64 "/%s", (int)bl, base, m->version, name);
  long st = http_get(c, url, (size_t)f->bytes + 1, ans, errstr, errstr_size);
  if (st < 0 && ans->too_large) {
    eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "%s: more than the %" PRIu64 " bytes the manifest says", name,
              f->bytes);
    return LOAD_VERIFY;
  }
  if (st != 200) {
    if (st > 0) eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "GET %s: HTTP %ld", url, st);
    return LOAD_FETCH;
  }
  return LOAD_OK;
}

/* The version's manifest and weights file, from the trainer or the store. */
static load_result_t fetch_version(eddy_replica_t *r, eddy_http_client_t *c, eddy_store_t **store,
                                   uint64_t version, eddy_manifest_t *m, eddy_http_answer_t *weights, char *errstr,
                                   size_t errstr_size) {
  memset(weights, 0, sizeof *weights);
  if (r->cfg.serve_store[0]) {
    eddy_err_t err = eddy_store_load_manifest(*store, version, m, errstr, errstr_size);
    if (err) return err == EDDY_ERR_FORMAT ? LOAD_VERIFY : LOAD_FETCH;
    return fetch_file(r, c, store, m, EDDY_STORE_WEIGHTS, weights, errstr, errstr_size);
  }
  char url[EDDY_CONFIG_STR + 96];
  const char *base = r->cfg.serve_trainer_url;
  size_t bl = strlen(base);
  while (bl && base[bl - 1] == '/') bl--;
  snprintf(url, sizeof url, "%.*s/v1/snapshots/%" PRIu64 "/%s", (int)bl, base, version, EDDY_STORE_MANIFEST);
  eddy_http_answer_t mb;
  long st = http_get(c, url, FETCH_MAX_SMALL, &mb, errstr, errstr_size);
  if (st != 200) {
    if (st > 0) eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "GET %s: HTTP %ld", url, st);
    eddy_http_answer_free(&mb);
    return LOAD_FETCH;
  }
  eddy_err_t err = eddy_manifest_parse(mb.body ? mb.body : "", mb.len, m, errstr, errstr_size);
  eddy_http_answer_free(&mb);
  if (err) return LOAD_VERIFY;
  return fetch_file(r, c, store, m, EDDY_STORE_WEIGHTS, weights, errstr, errstr_size);
}

static cJSON *metrics_obj(const eddy_metric_values_t *v) {
  cJSON *o = cJSON_CreateObject();
  const struct {
    const char *key;
    double value;
  } f[] = {{"accuracy", v->accuracy}, {"logloss", v->logloss}, {"mse", v->mse}};
  for (size_t i = 0; o && i < 3; i++)
    cJSON_AddItemToObject(o, f[i].key, isfinite(f[i].value) ? cJSON_CreateNumber(f[i].value) : cJSON_CreateNull());
  if (o) cJSON_AddNumberToObject(o, "n", (double)v->n);
  return o;
}

/* The static part of the /v1/model answer of s (version m); h_model adds the load's part. */
static cJSON *model_obj(const eddy_replica_t *r, const eddy_manifest_t *m, const served_t *s) {
  cJSON *o = cJSON_CreateObject();
  char when[40], created[40];
  eddy_manifest_format_time(s->loaded_at_ms, when, sizeof when);
  eddy_manifest_format_time(m->created_at_ms, created, sizeof created);
  char *spec_text = eddy_model_spec_to_json(&m->spec);
  cJSON *spec = spec_text ? cJSON_Parse(spec_text) : NULL;
  free(spec_text);
  if (!o || !spec) {
    cJSON_Delete(o);
    cJSON_Delete(spec);
    return NULL;
  }
  cJSON_AddStringToObject(o, "model", m->model);
  cJSON_AddNumberToObject(o, "version", (double)m->version);
  if (m->parent) cJSON_AddNumberToObject(o, "parent", (double)m->parent);
  else cJSON_AddNullToObject(o, "parent");
  cJSON_AddStringToObject(o, "loaded_at", when);
  cJSON_AddNumberToObject(o, "loaded_at_ms", (double)s->loaded_at_ms);
  cJSON_AddStringToObject(o, "created_at", created);
  cJSON_AddNumberToObject(o, "step", (double)m->step);
  cJSON_AddNumberToObject(o, "examples", (double)m->examples);
  cJSON_AddStringToObject(o, "weights_dtype", m->weights_dtype);
  cJSON_AddStringToObject(o, "source", r->source);
  /* Freshness of this version when it was swapped in: its newest trained event to serving. */
  if (m->newest_event_ms > 0) {
    cJSON_AddNumberToObject(o, "newest_event_ms", (double)m->newest_event_ms);
    cJSON_AddNumberToObject(o, "freshness_seconds", (double)(s->loaded_at_ms - m->newest_event_ms) / 1000.0);
  } else {
    cJSON_AddNullToObject(o, "newest_event_ms");
    cJSON_AddNullToObject(o, "freshness_seconds");
  }
  cJSON_AddItemToObject(o, "spec", spec);
  /* Each precision held: the kernel it runs, its memory, the holdout metrics the trainer measured. */
  cJSON *precs = cJSON_AddObjectToObject(o, "precisions");
  cJSON_AddStringToObject(precs, "base", eddy_infer_precision_name(s->base.precision));
  cJSON_AddStringToObject(precs, "base_why", s->base.text);
  cJSON_AddStringToObject(precs, "selection", eddy_prec_selector_fixed(r->sel) < 0 ? "auto" : "fixed");
  cJSON_AddNumberToObject(precs, "max_accuracy_drop", eddy_prec_selector_max_drop(r->sel));
  cJSON *held = cJSON_AddObjectToObject(precs, "held");
  for (int p = 0; held && p < EDDY_INFER_PRECISIONS; p++) {
    if (!s->models[p]) continue;
    cJSON *e = cJSON_AddObjectToObject(held, eddy_infer_precision_name((eddy_infer_precision_t)p));
    if (!e) continue;
    cJSON_AddStringToObject(e, "kernel", eddy_infer_kernel(s->models[p]));
    cJSON_AddNumberToObject(e, "bytes", (double)eddy_infer_bytes(s->models[p]));
    const eddy_manifest_precision_t *mp = &m->precisions[p];
    cJSON_AddStringToObject(e, "file", mp->present ? mp->file : EDDY_STORE_WEIGHTS);
    if (mp->present) cJSON_AddItemToObject(e, "holdout", metrics_obj(&mp->holdout));
    else cJSON_AddNullToObject(e, "holdout");
  }
  return o;
}

/* Waits until no retired version is alive (at most one extra model in memory). */
static bool wait_retired(eddy_replica_t *r) {
  double start = eddy_clock_mono_s();
  bool told = false;
  while (atomic_load(&r->live) > 1) {
    if (!told && eddy_clock_mono_s() - start > 5) {
      EDDY_WARN(LOG_MOD, "a retired version is still in use by a request after 5 s; waiting before loading the next");
      told = true;
    }
    if (!nap(r, 2)) return false;
  }
  return true;
}

/* Hands the download of file name over to the verifier (which keeps it as the reader's image, so
 * the file is never held twice); w no longer owns it afterwards. */
static eddy_st_reader_t *verify_download(const eddy_manifest_t *m, const char *name, eddy_http_answer_t *w,
                                         char *errstr, size_t errstr_size) {
  uint8_t *data = (uint8_t *)w->body;
  w->body = NULL;
  if (!data && !(data = malloc(1))) { /* an empty body: the size check names it */
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
    return NULL;
  }
  return eddy_store_verify_file_mem(m, name, data, w->len, EDDY_REPLICA_MAX_HEADER, errstr, errstr_size);
}

/* Builds s's model in every precision of serve.precisions that version m has: fp32 from the
 * verified weights; bf16 and fp16 from their own files when m lists them (fetched and verified as
 * the weights are), else converted from the weights; int8 from its file only. Then the base. */
static load_result_t build_models(eddy_replica_t *r, eddy_http_client_t *c, eddy_store_t **store,
                                  const eddy_manifest_t *m, const eddy_st_reader_t *weights, served_t *s,
                                  char *errstr, size_t errstr_size) {
  const unsigned allowed = eddy_prec_selector_allowed(r->sel);
  eddy_metric_values_t measured[EDDY_INFER_PRECISIONS];
  for (int p = 0; p < EDDY_INFER_PRECISIONS; p++) {
    measured[p] = m->precisions[p].present ? m->precisions[p].holdout
                                           : (eddy_metric_values_t){.logloss = NAN, .accuracy = NAN, .mse = NAN};
    if (!(allowed & (1u << p))) continue;
    const bool own_file = p != EDDY_INFER_F32 && m->precisions[p].present;
    if (p == EDDY_INFER_INT8 && !own_file) continue; /* not in this version */
    eddy_st_reader_t *own = NULL;
    if (own_file) {
      eddy_http_answer_t ans;
      load_result_t res = fetch_file(r, c, store, m, m->precisions[p].file, &ans, errstr, errstr_size);
      if (res == LOAD_OK && !(own = verify_download(m, m->precisions[p].file, &ans, errstr, errstr_size)))
        res = LOAD_VERIFY;
      eddy_http_answer_free(&ans);
      if (res != LOAD_OK) return res;
    }
    s->models[p] = eddy_infer_new(&m->spec, own ? own : weights, (eddy_infer_precision_t)p, errstr, errstr_size);
    eddy_st_reader_destroy(own);
    if (!s->models[p]) return LOAD_VERIFY;
    s->held |= 1u << p;
  }
  if (!s->held) {
    char list[64];
    eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "v%06" PRIu64 " has none of serve.precisions (%s)", m->version,
              eddy_infer_precision_list(allowed, list, sizeof list));
    return LOAD_VERIFY;
  }
  s->base = eddy_prec_choose(eddy_prec_selector_fixed(r->sel), eddy_prec_selector_max_drop(r->sel), s->held, measured,
                             m->spec.head);
  s->spec = eddy_infer_spec(s->models[s->base.precision]);
  return LOAD_OK;
}

/* Fetches, verifies, builds and swaps in version. announced_ms: the announcement's timestamp
 * (-1 when the version came from a poll). */
static load_result_t load_version(eddy_replica_t *r, eddy_http_client_t *c, eddy_store_t **store, uint64_t version,
                                  int64_t announced_ms, char *errstr, size_t errstr_size) {
  if (!wait_retired(r)) return LOAD_FETCH;
  double t0 = eddy_clock_mono_s();
  eddy_manifest_t m;
  eddy_manifest_init(&m);
  eddy_http_answer_t w;
  eddy_st_reader_t *reader = NULL;
  served_t *s = NULL;
  load_result_t res = fetch_version(r, c, store, version, &m, &w, errstr, errstr_size);
  if (res == LOAD_OK) {
    res = LOAD_VERIFY;
    if (m.version != version) {
      eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "asked for v%06" PRIu64 ", got the manifest of v%06" PRIu64,
                version, m.version);
    } else if (strcmp(m.model, r->cfg.model_name) != 0) {
      eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "v%06" PRIu64 " is of model \"%s\", this replica serves \"%s\"",
                version, m.model, r->cfg.model_name);
    } else if (m.status == EDDY_STATUS_REJECTED) {
      eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "v%06" PRIu64 " was rejected by the gate: %s", version, m.reason);
    } else if ((reader = verify_download(&m, EDDY_STORE_WEIGHTS, &w, errstr, errstr_size)) != NULL) {
      s = calloc(1, sizeof *s);
      if (s) {
        atomic_fetch_add(&r->live, 1);
        s->owner = r;
        atomic_init(&s->refs, 1);
        s->version = version;
        s->outputs = eddy_model_outputs(&m.spec);
        s->head = m.spec.head;
        s->loaded_at_ms = eddy_clock_wall_ms();
        snprintf(s->version_text, sizeof s->version_text, "%" PRIu64, version);
        res = build_models(r, c, store, &m, reader, s, errstr, errstr_size);
        if (res == LOAD_OK && !(s->model_obj = model_obj(r, &m, s))) {
          eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
          res = LOAD_VERIFY;
        }
      } else {
        eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
      }
    }
  }
  eddy_st_reader_destroy(reader);
  eddy_http_answer_free(&w);
  if (res != LOAD_OK) {
    served_free(s);
    eddy_manifest_clear(&m);
    return res;
  }
  pthread_mutex_lock(&r->cur_mu);
  served_t *old = r->cur;
  r->cur = s;
  pthread_mutex_unlock(&r->cur_mu);
  uint64_t before = atomic_exchange(&r->version, version);
  release(old);
  const int64_t now = eddy_clock_wall_ms();
  eddy_series_set(r->m_version, (double)version);
  eddy_series_add(r->m_swaps, 1);
  eddy_series_set(r->m_last_swap, (double)now / 1000.0);
  eddy_series_observe(r->m_load_seconds, eddy_clock_mono_s() - t0);
  size_t bytes = 0;
  char kernels[160] = "", held[64];
  for (int p = 0, o = 0; p < EDDY_INFER_PRECISIONS; p++)
    if (s->models[p]) {
      bytes += eddy_infer_bytes(s->models[p]);
      o += snprintf(kernels + o, sizeof kernels - (size_t)o, "%s%s %s", o ? ", " : "",
                    eddy_infer_precision_name((eddy_infer_precision_t)p), eddy_infer_kernel(s->models[p]));
    }
  eddy_series_set(r->m_model_bytes, (double)bytes);
  if (announced_ms > 0 && now >= announced_ms) eddy_series_observe(r->m_announce_to_serve, (double)(now - announced_ms) / 1000.0);
  if (m.newest_event_ms > 0 && now >= m.newest_event_ms) {
    eddy_series_observe(r->m_event_to_serve, (double)(now - m.newest_event_ms) / 1000.0);
    atomic_store(&r->freshness_ms, now - m.newest_event_ms);
  } else {
    atomic_store(&r->freshness_ms, -1);
  }
  char how[64] = "polled";
  if (announced_ms > 0) snprintf(how, sizeof how, "announced %" PRId64 " ms before", now - announced_ms);
  EDDY_INFO(LOG_MOD, "serving v%06" PRIu64 " (was v%06" PRIu64 "; %s; %.1f ms to fetch, verify and build) in %s (%s); "
                     "holds %s; kernels: %s",
            version, before, how, (eddy_clock_mono_s() - t0) * 1000, eddy_infer_precision_name(s->base.precision),
            s->base.text, eddy_infer_precision_list(s->held, held, sizeof held), kernels);
  eddy_manifest_clear(&m);
  return LOAD_OK;
}

/* What the trainer or the store says is CURRENT: 1 with *version, 0 when there is none yet, -1 on
 * an error (errstr). */
static int poll_current(eddy_replica_t *r, eddy_http_client_t *c, eddy_store_t **store, uint64_t *version, char *errstr,
                        size_t errstr_size) {
  if (r->cfg.serve_store[0]) {
    if (!*store) {
      *store = eddy_store_new(r->cfg.serve_store, r->cfg.model_name, EDDY_STORE_READONLY, errstr, errstr_size);
      if (!*store) return -1;
    }
    eddy_err_t err = eddy_store_current(*store, version, errstr, errstr_size);
    if (err == EDDY_ERR_NOT_FOUND) return 0;
    return err ? -1 : 1;
  }
  char url[EDDY_CONFIG_STR + 64];
  const char *base = r->cfg.serve_trainer_url;
  size_t bl = strlen(base);
  while (bl && base[bl - 1] == '/') bl--;
  snprintf(url, sizeof url, "%.*s/v1/versions/current", (int)bl, base);
  eddy_http_answer_t b;
  long st = http_get(c, url, FETCH_MAX_SMALL, &b, errstr, errstr_size);
  int rc = -1;
  if (st == 404) {
    rc = 0;
  } else if (st == 200) {
    eddy_manifest_t m;
    if (eddy_manifest_parse(b.body ? b.body : "", b.len, &m, errstr, errstr_size) == EDDY_OK) {
      *version = m.version;
      rc = 1;
    }
    eddy_manifest_clear(&m);
  } else if (st > 0) {
    eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "GET %s: HTTP %ld", url, st);
  }
  eddy_http_answer_free(&b);
  return rc;
}

static void *follow_main(void *arg) {
  eddy_replica_t *r = arg;
  eddy_http_client_t *c = eddy_http_client_new("eddy-serve");
  eddy_store_t *store = NULL;
  eddy_follower_t *fol = NULL;
  char errstr[1024];
  if (!c) {
    EDDY_ERROR(LOG_MOD, "libcurl could not start: the replica cannot fetch versions");
    set_waiting(r, "%s", "libcurl could not start");
    return NULL;
  }
  const bool kafka = eddy_config_kafka(&r->cfg, "bootstrap.servers") || eddy_config_kafka(&r->cfg, "metadata.broker.list");
  if (kafka) {
    if (!(fol = eddy_follower_new(&r->cfg, r->cfg.snapshot_topic, errstr, sizeof errstr)))
      EDDY_WARN(LOG_MOD, "announcements on %s not followed (%s); polling every %u s", r->cfg.snapshot_topic, errstr,
                r->cfg.serve_poll_seconds);
    else
      EDDY_INFO(LOG_MOD, "following announcements on %s (every partition, from its last message)",
                r->cfg.snapshot_topic);
  } else {
    EDDY_WARN(LOG_MOD, "no kafka.bootstrap.servers: following versions by polling %s every %u s", r->source,
              r->cfg.serve_poll_seconds);
  }
  uint64_t target = 0, failed = 0; /* failed: the version refused last */
  bool failed_final = false;        /* refused on a check: versions are immutable, so no retry
                                       until it is announced again */
  int64_t target_announced_ms = -1;
  double next_poll = 0, retry_at = 0;
  int64_t poll_sent_ms = 0; /* when the last answered poll was sent */
  char last_poll_error[1024] = "";
  while (!atomic_load(&r->stop)) {
    if (fol) {
      eddy_follower_msg_t msg;
      int got = eddy_follower_poll(fol, 100, &msg, errstr, sizeof errstr);
      if (got < 0) EDDY_WARN(LOG_MOD, "%s", errstr);
      if (got > 0) {
        eddy_manifest_t m;
        eddy_manifest_init(&m); /* cleared below also when another model's is skipped unparsed */
        if (strcmp(msg.key, r->cfg.model_name) != 0) {
          /* another model's announcement on a shared topic */
        } else if (eddy_manifest_parse(msg.value, msg.value_len, &m, errstr, sizeof errstr) != EDDY_OK) {
          EDDY_WARN(LOG_MOD, "announcement at %s [%d] offset %" PRId64 " ignored: %s", r->cfg.snapshot_topic,
                    (int)msg.partition, msg.offset, errstr);
        } else {
          eddy_series_add(r->m_announcements, 1);
          /* The trainer moves CURRENT before it announces, so an announcement made before the
           * last poll was sent is already reflected in that poll's answer: skip it rather than
           * step back to it (docs/replica.md, "Following versions"). */
          if (msg.timestamp_ms < 0 || msg.timestamp_ms >= poll_sent_ms) {
            target = m.version;
            target_announced_ms = msg.timestamp_ms;
            failed = 0; /* an announcement is worth a new try even of a version that failed before */
          }
        }
        eddy_manifest_clear(&m);
        eddy_follower_msg_free(&msg);
      }
    } else if (!nap(r, 100)) {
      break;
    }
    double now = eddy_clock_mono_s();
    if (now >= next_poll) {
      next_poll = now + r->cfg.serve_poll_seconds;
      uint64_t v = 0;
      const int64_t sent_ms = eddy_clock_wall_ms();
      int p = poll_current(r, c, &store, &v, errstr, sizeof errstr);
      if (p >= 0) poll_sent_ms = sent_ms;
      if (p < 0) {
        if (strcmp(errstr, last_poll_error) != 0) EDDY_WARN(LOG_MOD, "checking for the current version: %s", errstr);
        snprintf(last_poll_error, sizeof last_poll_error, "%s", errstr);
        if (!atomic_load(&r->version)) set_waiting(r, "no version loaded yet: %.400s", errstr);
      } else {
        last_poll_error[0] = '\0';
        if (p == 0 && !atomic_load(&r->version)) set_waiting(r, "%s", "no version promoted yet");
        if (p > 0 && v != target) {
          target = v;
          target_announced_ms = -1;
        }
        if (p > 0 && v == failed && !failed_final && now >= retry_at) failed = 0; /* a fetch: retried each poll */
      }
    }
    if (!target || target == atomic_load(&r->version) || target == failed) continue;
    if (r->cfg.serve_store[0] && !store) {
      store = eddy_store_new(r->cfg.serve_store, r->cfg.model_name, EDDY_STORE_READONLY, errstr, sizeof errstr);
      if (!store) {
        EDDY_WARN(LOG_MOD, "v%06" PRIu64 ": %s", target, errstr);
        failed = target;
        failed_final = false;
        retry_at = now + r->cfg.serve_poll_seconds;
        continue;
      }
    }
    load_result_t res = load_version(r, c, &store, target, target_announced_ms, errstr, sizeof errstr);
    if (res == LOAD_OK) continue;
    if (atomic_load(&r->stop)) break;
    eddy_series_add(res == LOAD_FETCH ? r->m_refuse_fetch : r->m_refuse_verify, 1);
    atomic_fetch_add(&r->refusals, 1);
    uint64_t serving = atomic_load(&r->version);
    EDDY_WARN(LOG_MOD, "v%06" PRIu64 " refused (%s): %s; %s", target, res == LOAD_FETCH ? "fetch" : "verify", errstr,
              serving ? "still serving the version loaded before" : "nothing loaded yet");
    if (!serving) set_waiting(r, "no version loaded yet: %.400s", errstr);
    failed = target;
    failed_final = res == LOAD_VERIFY;
    retry_at = eddy_clock_mono_s() + r->cfg.serve_poll_seconds;
  }
  eddy_follower_destroy(fol);
  eddy_store_destroy(store);
  eddy_http_client_destroy(c);
  return NULL;
}

/* The precision requests without a choice run at on s at now, with why (optional); counts the
 * load's steps in the metrics and sets the eddy_replica_precision gauges. s NULL: counts only. */
static eddy_infer_precision_t sync_load(eddy_replica_t *r, const served_t *s, double now, char *why,
                                        size_t why_size) {
  const eddy_prec_load_info_t info = eddy_prec_load_info(r->sel, now);
  uint64_t before = atomic_exchange(&r->seen_downs, info.downs);
  if (info.downs > before) eddy_series_add(r->m_steps_down, (double)(info.downs - before));
  before = atomic_exchange(&r->seen_ups, info.ups);
  if (info.ups > before) eddy_series_add(r->m_steps_up, (double)(info.ups - before));
  eddy_series_set(r->m_load_steps, info.steps);
  if (!s) return EDDY_INFER_F32;
  const int cheaper = eddy_prec_cheaper(s->held, s->base.precision);
  const int steps = info.steps < cheaper ? info.steps : cheaper;
  const eddy_infer_precision_t p = eddy_prec_step_down(s->held, s->base.precision, steps);
  for (int q = 0; q < EDDY_INFER_PRECISIONS; q++) eddy_series_set(r->m_precision[q], q == (int)p ? 1 : 0);
  if (why && steps)
    snprintf(why, why_size,
             "load: requests waited %.2f ms on average for a processing slot (target %g ms), %d step%s below the "
             "base %s (%.200s)",
             info.last_wait_ms, eddy_prec_selector_target_ms(r->sel), steps, steps > 1 ? "s" : "",
             eddy_infer_precision_name(s->base.precision), s->base.text);
  else if (why)
    snprintf(why, why_size, "%s", s->base.text);
  return p;
}

/* ---- heartbeat ---- */

static void *beat_main(void *arg) {
  eddy_replica_t *r = arg;
  eddy_http_client_t *c = eddy_http_client_new("eddy-serve");
  if (!c) {
    EDDY_ERROR(LOG_MOD, "libcurl could not start: no heartbeats");
    return NULL;
  }
  char url[EDDY_CONFIG_STR + 64], body[2560], err[1024];
  const char *base = r->cfg.serve_trainer_url;
  size_t bl = strlen(base);
  while (bl && base[bl - 1] == '/') bl--;
  snprintf(url, sizeof url, "%.*s/v1/replicas/heartbeat", (int)bl, base);
  bool failing = false;
  do {
    served_t *s = acquire(r);
    char version[32] = "null", loaded[32] = "null", fresh[32] = "null", why[512] = ""; /* the trainer takes 512 */
    const char *prec = "";
    if (s) {
      snprintf(version, sizeof version, "%" PRIu64, s->version);
      snprintf(loaded, sizeof loaded, "%" PRId64, s->loaded_at_ms);
      prec = eddy_infer_precision_name(sync_load(r, s, eddy_clock_mono_s(), why, sizeof why));
    }
    int64_t f = atomic_load(&r->freshness_ms);
    if (s && f >= 0) snprintf(fresh, sizeof fresh, "%.3f", (double)f / 1000.0);
    cJSON *why_json = cJSON_CreateString(why);
    char *why_text = why_json ? cJSON_PrintUnformatted(why_json) : NULL;
    cJSON_Delete(why_json);
    snprintf(body, sizeof body,
             "{\"id\":\"%s\",\"url\":\"http://%s\",\"version\":%s,\"loaded_at_ms\":%s,\"freshness_seconds\":%s,"
             "\"predictions\":%" PRIu64 ",\"refusals\":%" PRIu64 ",\"state\":\"%s\",\"precision\":\"%s\","
             "\"precision_why\":%s}",
             r->advertise, r->advertise, version, loaded, fresh, (uint64_t)atomic_load(&r->predictions),
             (uint64_t)atomic_load(&r->refusals), s ? "serving" : "waiting", prec, why_text ? why_text : "\"\"");
    free(why_text);
    release(s);
    eddy_http_request_t req = {.body = body, .token = r->token, .max_answer = 65536, .connect_timeout_ms = 2000,
                               .timeout_ms = 5000};
    eddy_http_answer_t ans;
    eddy_err_t e = eddy_http_client_call(c, url, &req, &ans, err, sizeof err);
    if (e || ans.status != 200) {
      eddy_series_add(r->m_beat_errors, 1);
      if (!failing) {
        if (e) EDDY_WARN(LOG_MOD, "heartbeat failed: %s", err);
        else EDDY_WARN(LOG_MOD, "heartbeat to %s: HTTP %ld %.300s", url, ans.status, ans.body ? ans.body : "");
      }
      failing = true;
    } else if (failing) {
      EDDY_INFO(LOG_MOD, "heartbeats to %s go through again", url);
      failing = false;
    }
    eddy_http_answer_free(&ans);
  } while (nap(r, (int)r->cfg.serve_heartbeat_seconds * 1000));
  eddy_http_client_destroy(c);
  return NULL;
}

/* Per pool thread (HTTP or gRPC): reused across requests. */
typedef struct {
  eddy_batch_t *batch;
  uint32_t dense_dim;
  size_t batch_cap;
  eddy_event_t ev;
  float *scratch, *pred;
  size_t scratch_n, pred_n;
  const char **spans;
  char *out;
  size_t out_cap;
} work_t;

static void work_free(void *p) {
  work_t *w = p;
  if (!w) return;
  eddy_batch_destroy(w->batch);
  eddy_event_free(&w->ev);
  free(w->scratch);
  free(w->pred);
  free(w->spans);
  free(w->out);
  free(w);
}

static work_t *work_get(eddy_replica_t *r) {
  work_t *w = pthread_getspecific(r->work_key);
  if (w) return w;
  w = calloc(1, sizeof *w);
  if (!w) return NULL;
  eddy_event_init(&w->ev);
  w->spans = malloc(2 * EDDY_REPLICA_MAX_INSTANCES * sizeof *w->spans);
  if (!w->spans || pthread_setspecific(r->work_key, w) != 0) {
    work_free(w);
    return NULL;
  }
  return w;
}

static bool grow_floats(float **p, size_t *have, size_t need) {
  if (*have >= need) return true;
  float *q = realloc(*p, need * sizeof(float));
  if (!q) return false;
  *p = q;
  *have = need;
  return true;
}

eddy_batch_t *eddy_replica_batch(eddy_replica_t *r, const eddy_served_t *s, size_t n) {
  work_t *w = work_get(r);
  if (!w) return NULL;
  const uint32_t dense_dim = s->spec->dense_dim;
  if (!w->batch || w->dense_dim != dense_dim || w->batch_cap < n) {
    size_t cap = n < 64 ? 64 : n;
    eddy_batch_destroy(w->batch);
    w->batch = eddy_batch_new(dense_dim, cap);
    w->dense_dim = dense_dim;
    w->batch_cap = w->batch ? cap : 0;
    if (!w->batch) return NULL;
  }
  eddy_batch_clear(w->batch);
  return w->batch;
}

eddy_event_t *eddy_replica_event(eddy_replica_t *r) {
  work_t *w = work_get(r);
  return w ? &w->ev : NULL;
}

void eddy_replica_call_begin(eddy_replica_t *r, eddy_proto_t proto, eddy_predict_call_t *call) {
  *call = (eddy_predict_call_t){.proto = proto, .precision = EDDY_INFER_F32};
  call->waited_ms = eddy_prec_enter(r->sel, &call->slot_at_s);
}

void eddy_replica_call_end(eddy_replica_t *r) { eddy_prec_leave(r->sel); }

const float *eddy_replica_predict(eddy_replica_t *r, eddy_served_t *s, const eddy_batch_t *b, eddy_predict_call_t *call,
                                  eddy_err_t *err, char *errstr, size_t errstr_size) {
  eddy_infer_precision_t prec;
  eddy_prec_why_t reason;
  if (eddy_prec_pick(r->sel, &s->base, s->held, call->asked, call->waited_ms, call->slot_at_s, &prec, &reason, errstr,
                     errstr_size) != 0) {
    *err = EDDY_ERR_INVALID_ARG;
    return NULL;
  }
  if (eddy_prec_selector_target_ms(r->sel) > 0) eddy_series_observe(r->m_queue_by[call->proto], call->waited_ms / 1000.0);
  call->precision = prec;
  const eddy_infer_t *model = s->models[prec];
  work_t *w = work_get(r);
  const size_t n = b->n;
  if (!w || !grow_floats(&w->scratch, &w->scratch_n, eddy_infer_scratch_floats(model, n)) ||
      !grow_floats(&w->pred, &w->pred_n, n * s->outputs)) {
    *err = eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
    return NULL;
  }
  *err = eddy_infer_predict(model, b, w->scratch, w->pred, errstr, errstr_size);
  sync_load(r, s, call->slot_at_s, NULL, 0);
  if (*err) return NULL;
  atomic_fetch_add_explicit(&r->predictions, (uint64_t)n, memory_order_relaxed);
  eddy_series_add(r->m_instances_by[call->proto], (double)n);
  eddy_series_add(r->m_by_precision[call->proto][prec][reason], 1);
  return w->pred;
}

static eddy_err_t send_json_error(eddy_http_resp_t *resp, int status, const char *msg, const char *version) {
  if (version) eddy_http_resp_header(resp, "X-Eddy-Version", version);
  return eddy_http_resp_error(resp, status, "%s", msg);
}

static int h_predict(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  eddy_replica_t *r = ctx;
  served_t *s = acquire(r);
  if (!s) {
    char why[512];
    pthread_mutex_lock(&r->why_mu);
    snprintf(why, sizeof why, "%s", r->why_waiting);
    pthread_mutex_unlock(&r->why_mu);
    eddy_http_resp_header(resp, "Retry-After", "1");
    return send_json_error(resp, 503, why, NULL);
  }
  eddy_predict_call_t call;
  eddy_replica_call_begin(r, EDDY_PROTO_V1, &call);
  work_t *w = work_get(r);
  int rc = 0;
  if (!w) {
    send_json_error(resp, 500, "out of memory", s->version_text);
    goto out;
  }
  eddy_event_schema_t schema = eddy_model_event_schema(s->spec);
  schema.label_optional = true;
  size_t len = 0;
  const char *body = eddy_http_req_body(req, &len);
  char why[640], msg[512], asked[48];
  bool wrapped = false;
  /* A precision asked for: the body's "precision", else the X-Eddy-Precision header. */
  long n = eddy_event_split_request(body, len, w->spans, EDDY_REPLICA_MAX_INSTANCES, &wrapped, asked, sizeof asked,
                                    why, sizeof why);
  if (n < 0) {
    send_json_error(resp, 400, why, s->version_text);
    goto out;
  }
  const bool single = !wrapped;
  eddy_batch_t *batch = eddy_replica_batch(r, s, (size_t)n);
  if (!batch) {
    send_json_error(resp, 500, "out of memory", s->version_text);
    goto out;
  }
  if (eddy_batch_push_instances(batch, w->spans, (size_t)n, single, &schema, &w->ev, why, sizeof why) !=
      EDDY_OK) {
    send_json_error(resp, 400, why, s->version_text);
    goto out;
  }
  const char *header = eddy_http_req_header(req, "X-Eddy-Precision");
  call.asked = asked[0] || !header ? asked : header;
  const size_t k = s->outputs;
  eddy_err_t perr;
  const float *pred = eddy_replica_predict(r, s, batch, &call, &perr, msg, sizeof msg);
  if (!pred) {
    send_json_error(resp, perr == EDDY_ERR_NOMEM ? 500 : 400, msg, s->version_text);
    goto out;
  }
  const char *prec_name = eddy_infer_precision_name(call.precision);
  /* {"model":"m","version":N,"precision":"int8","predictions":[[p,...],...]} (a number per event for
   * one output). */
  size_t need = 160 + strlen(r->cfg.model_name) + (size_t)n * (k * 18 + 4);
  if (w->out_cap < need) {
    char *o = realloc(w->out, need);
    if (!o) {
      send_json_error(resp, 500, "out of memory", s->version_text);
      goto out;
    }
    w->out = o;
    w->out_cap = need;
  }
  char *o = w->out;
  size_t at = (size_t)snprintf(o, need, "{\"model\":\"%s\",\"version\":%s,\"precision\":\"%s\",\"predictions\":[",
                               r->cfg.model_name, s->version_text, prec_name);
  for (long i = 0; i < n; i++) {
    if (i) o[at++] = ',';
    const float *p = pred + (size_t)i * k;
    if (s->head == EDDY_HEAD_SOFTMAX) o[at++] = '[';
    for (size_t j = 0; j < k; j++) {
      if (j) o[at++] = ',';
      at += (size_t)snprintf(o + at, need - at, "%.9g", (double)p[j]);
    }
    if (s->head == EDDY_HEAD_SOFTMAX) o[at++] = ']';
  }
  at += (size_t)snprintf(o + at, need - at, "]}");
  eddy_http_resp_header(resp, "X-Eddy-Version", s->version_text);
  eddy_http_resp_header(resp, "X-Eddy-Precision", prec_name);
  if (eddy_http_resp_body(resp, "application/json", o, at) != EDDY_OK) rc = EDDY_ERR_NOMEM;
out:
  eddy_replica_call_end(r);
  release(s);
  return rc;
}

static int h_model(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  (void)req;
  eddy_replica_t *r = ctx;
  served_t *s = acquire(r);
  if (!s) {
    char why[512];
    pthread_mutex_lock(&r->why_mu);
    snprintf(why, sizeof why, "%s", r->why_waiting);
    pthread_mutex_unlock(&r->why_mu);
    eddy_http_resp_error(resp, 503, "%s", why);
    return 0;
  }
  /* The static part of the version, then what the load makes of it now. */
  char why[768];
  const eddy_infer_precision_t p = sync_load(r, s, eddy_clock_mono_s(), why, sizeof why);
  const eddy_prec_load_info_t info = eddy_prec_load_info(r->sel, eddy_clock_mono_s());
  cJSON *o = cJSON_Duplicate(s->model_obj, true);
  cJSON *precs = o ? cJSON_GetObjectItemCaseSensitive(o, "precisions") : NULL;
  cJSON *load = precs ? cJSON_AddObjectToObject(precs, "load") : NULL;
  if (load) {
    cJSON_AddNumberToObject(load, "latency_target_ms", eddy_prec_selector_target_ms(r->sel));
    cJSON_AddNumberToObject(load, "steps", info.steps);
    cJSON_AddNumberToObject(load, "steps_down_total", (double)info.downs);
    cJSON_AddNumberToObject(load, "steps_up_total", (double)info.ups);
    cJSON_AddNumberToObject(load, "last_wait_ms", info.last_wait_ms);
    cJSON_AddNumberToObject(load, "compute_slots", info.slots);
  }
  if (o) cJSON_AddStringToObject(o, "precision", eddy_infer_precision_name(p));
  if (o) cJSON_AddStringToObject(o, "precision_why", why);
  char *text = load ? cJSON_PrintUnformatted(o) : NULL;
  cJSON_Delete(o);
  eddy_http_resp_header(resp, "X-Eddy-Version", s->version_text);
  eddy_http_resp_header(resp, "X-Eddy-Precision", eddy_infer_precision_name(p));
  release(s);
  if (!text) return eddy_http_resp_error(resp, 500, "out of memory"), 0;
  eddy_err_t err = eddy_http_resp_body_owned(resp, "application/json", text, strlen(text));
  return err ? (int)err : 0;
}

static int h_healthz(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  (void)req;
  eddy_replica_t *r = ctx;
  served_t *s = acquire(r);
  char body[768];
  int n;
  if (s) {
    n = snprintf(body, sizeof body, "{\"status\":\"ok\",\"model\":\"%s\",\"version\":%s}", r->cfg.model_name,
                 s->version_text);
    eddy_http_resp_header(resp, "X-Eddy-Version", s->version_text);
    release(s);
  } else {
    char why[512];
    pthread_mutex_lock(&r->why_mu);
    snprintf(why, sizeof why, "%s", r->why_waiting);
    pthread_mutex_unlock(&r->why_mu);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", "waiting");
    cJSON_AddStringToObject(o, "error", why);
    char *t = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    n = snprintf(body, sizeof body, "%s", t ? t : "{\"status\":\"waiting\"}");
    free(t);
    eddy_http_resp_status(resp, 503);
  }
  if (n < 0 || (size_t)n >= sizeof body) n = (int)strlen(body);
  return (int)eddy_http_resp_body(resp, "application/json", body, (size_t)n);
}

static int h_metrics(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  (void)req;
  eddy_replica_t *r = ctx;
  served_t *s = acquire(r);
  sync_load(r, s, eddy_clock_mono_s(), NULL, 0); /* windows closed while idle count too */
  release(s);
  size_t len = 0;
  char *text = eddy_registry_render(r->reg, &len);
  if (!text) return eddy_http_resp_error(resp, 500, "metrics could not be rendered"), 0;
  return (int)eddy_http_resp_body_owned(resp, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

/* ---- metrics and lifecycle ---- */

void eddy_replica_count_predict(eddy_replica_t *r, eddy_proto_t proto, int status, double seconds) {
  eddy_series_t *s = NULL;
  for (int i = 0; i < PREDICT_CODES && !s; i++)
    if (r->predict_codes[proto][i].code == status) s = r->predict_codes[proto][i].s;
  if (!s) {
    char code[8];
    snprintf(code, sizeof code, "%d", status);
    const char *v[] = {proto_names[proto], code};
    s = eddy_metric_series(r->m_requests, v);
  }
  eddy_series_add(s, 1);
  eddy_series_observe(r->m_latency_by[proto], seconds);
}

void eddy_replica_on_request(void *replica, const char *method, const char *route, int status, double seconds) {
  (void)method;
  eddy_replica_t *r = replica;
  if (!r) return;
  const char *rt = route ? route : "unmatched";
  char code[8];
  snprintf(code, sizeof code, "%d", status);
  const bool predict_v1 = route && strcmp(route, "/v1/predict") == 0;
  if (predict_v1 || (route && eddy_oip_is_infer_route(route))) {
    eddy_replica_count_predict(r, predict_v1 ? EDDY_PROTO_V1 : EDDY_PROTO_V2, status, seconds);
    return; /* predictions have their own families; the generic ones cover the other routes */
  }
  const char *v2[] = {rt, code};
  eddy_series_add(eddy_metric_series(r->m_http_total, v2), 1);
  const char *v1[] = {rt};
  eddy_series_observe(eddy_metric_series(r->m_http_duration, v1), seconds);
}

static int add_metrics(eddy_replica_t *r, char *errstr, size_t errstr_size) {
  static const double lat[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1};
  static const double fresh[] = {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600};
  static const double load[] = {0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 120};
  static const double http_b[] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30};
  eddy_registry_t *g = r->reg;
#define ADD(type, name, help, labels, b, nb) eddy_registry_add(g, type, name, help, labels, b, nb, errstr, errstr_size)
#define ONE(m) ((m) ? eddy_metric_series((m), NULL) : NULL)
  const char *fetch[] = {"fetch"}, *verify[] = {"verify"};
  eddy_metric_t *refusals = ADD(EDDY_METRIC_COUNTER, "eddy_replica_refusals_total",
                                "Versions not loaded: reason fetch (download or read failed) or verify (size, "
                                "sha256, structure, shapes, spec or values wrong); the old version keeps serving",
                                "reason", NULL, 0);
  r->m_refuse_fetch = refusals ? eddy_metric_series(refusals, fetch) : NULL;
  r->m_refuse_verify = refusals ? eddy_metric_series(refusals, verify) : NULL;
  r->m_version = ONE(ADD(EDDY_METRIC_GAUGE, "eddy_replica_model_version", "Version this replica serves (0: none yet)",
                         NULL, NULL, 0));
  r->m_swaps = ONE(ADD(EDDY_METRIC_COUNTER, "eddy_replica_swaps_total", "Versions swapped in", NULL, NULL, 0));
  r->m_last_swap = ONE(ADD(EDDY_METRIC_GAUGE, "eddy_replica_last_swap_timestamp_seconds",
                           "Unix time of the last swap", NULL, NULL, 0));
  r->m_announcements = ONE(ADD(EDDY_METRIC_COUNTER, "eddy_replica_announcements_total",
                               "Announcements of this model read from snapshot.topic", NULL, NULL, 0));
  r->m_beat_errors = ONE(ADD(EDDY_METRIC_COUNTER, "eddy_replica_heartbeat_errors_total",
                             "Heartbeats the trainer did not accept", NULL, NULL, 0));
  r->m_model_bytes = ONE(ADD(EDDY_METRIC_GAUGE, "eddy_replica_model_bytes", "Memory held by the served weights",
                             NULL, NULL, 0));
  r->m_load_seconds = ONE(ADD(EDDY_METRIC_HISTOGRAM, "eddy_replica_load_seconds",
                              "Time to fetch, verify and build a version", NULL, load, sizeof load / sizeof load[0]));
  r->m_announce_to_serve = ONE(ADD(EDDY_METRIC_HISTOGRAM, "eddy_replica_announce_to_serve_seconds",
                                   "Announcement timestamp to this replica serving the version", NULL, fresh,
                                   sizeof fresh / sizeof fresh[0]));
  r->m_event_to_serve = ONE(ADD(EDDY_METRIC_HISTOGRAM, "eddy_event_to_serve_seconds",
                                "Newest trained event's timestamp to this replica serving the version", NULL, fresh,
                                sizeof fresh / sizeof fresh[0]));
  r->m_requests = ADD(EDDY_METRIC_COUNTER, "eddy_predict_requests_total",
                      "Prediction requests by protocol (v1: POST /v1/predict, v2: POST /v2/.../infer, grpc: "
                      "ModelInfer) and status code (gRPC statuses as their HTTP equivalents)",
                      "protocol,code", NULL, 0);
  r->m_instances = ADD(EDDY_METRIC_COUNTER, "eddy_predict_instances_total", "Events predicted, by protocol",
                       "protocol", NULL, 0);
  r->m_latency = ADD(EDDY_METRIC_HISTOGRAM, "eddy_predict_latency_seconds",
                     "Prediction request time from its first byte to the answer, by protocol", "protocol", lat,
                     sizeof lat / sizeof lat[0]);
  static const int codes[PREDICT_CODES] = {200, 400, 404, 405, 413, 500, 503};
  for (int p = 0; p < EDDY_PROTO__COUNT; p++) {
    const char *pv[] = {proto_names[p]};
    r->m_latency_by[p] = r->m_latency ? eddy_metric_series(r->m_latency, pv) : NULL;
    r->m_instances_by[p] = r->m_instances ? eddy_metric_series(r->m_instances, pv) : NULL;
    if (!r->m_latency_by[p] || !r->m_instances_by[p]) return -1;
    for (int i = 0; i < PREDICT_CODES && r->m_requests; i++) {
      char text[8];
      snprintf(text, sizeof text, "%d", codes[i]);
      const char *v[] = {proto_names[p], text};
      r->predict_codes[p][i].code = codes[i];
      r->predict_codes[p][i].s = eddy_metric_series(r->m_requests, v);
    }
  }
  r->m_http_total = ADD(EDDY_METRIC_COUNTER, "eddy_http_requests_total",
                        "HTTP requests answered, by route pattern and status code (predict: "
                        "eddy_predict_requests_total)",
                        "route,code", NULL, 0);
  r->m_http_duration = ADD(EDDY_METRIC_HISTOGRAM, "eddy_http_request_duration_seconds",
                           "Time from the first byte of an HTTP request to its answer, by route pattern", "route",
                           http_b, sizeof http_b / sizeof http_b[0]);
  /* Serving precisions: what each request ran at and why (by protocol: 3 x 4 x 4 series at most),
   * and the load's steps. */
  eddy_metric_t *by_prec = ADD(EDDY_METRIC_COUNTER, "eddy_predict_precision_requests_total",
                               "Prediction requests answered, by protocol, the precision they ran at and why: config "
                               "(serve.precision), auto (the version's choice), load (stepped down), request (asked)",
                               "protocol,precision,reason", NULL, 0);
  eddy_metric_t *now_prec = ADD(EDDY_METRIC_GAUGE, "eddy_replica_precision",
                                "1 for the precision requests without a choice run at now", "precision", NULL, 0);
  r->m_queue = ADD(EDDY_METRIC_HISTOGRAM, "eddy_predict_queue_seconds",
                   "Time a prediction request waited for a processing slot (with serve.latency_target_ms set), by "
                   "protocol",
                   "protocol", lat, sizeof lat / sizeof lat[0]);
  for (int p = 0; p < EDDY_INFER_PRECISIONS && by_prec && now_prec; p++) {
    const char *name = eddy_infer_precision_name((eddy_infer_precision_t)p);
    for (int q = 0; q < EDDY_PROTO__COUNT; q++)
      for (int w = 0; w < EDDY_PREC_WHY_COUNT; w++) {
        const char *v[] = {proto_names[q], name, eddy_prec_why_name((eddy_prec_why_t)w)};
        if (!(r->m_by_precision[q][p][w] = eddy_metric_series(by_prec, v))) return -1;
      }
    const char *v1[] = {name};
    r->m_precision[p] = eddy_metric_series(now_prec, v1);
  }
  for (int q = 0; q < EDDY_PROTO__COUNT && r->m_queue; q++) {
    const char *v[] = {proto_names[q]};
    if (!(r->m_queue_by[q] = eddy_metric_series(r->m_queue, v))) return -1;
  }
  eddy_metric_t *steps = ADD(EDDY_METRIC_COUNTER, "eddy_replica_precision_steps_total",
                             "Load steps of the serving precision: down (requests waited over serve.latency_target_ms "
                             "for a processing slot) and up (the wait stayed low)",
                             "direction", NULL, 0);
  const char *down[] = {"down"}, *up[] = {"up"};
  r->m_steps_down = steps ? eddy_metric_series(steps, down) : NULL;
  r->m_steps_up = steps ? eddy_metric_series(steps, up) : NULL;
  r->m_load_steps = ONE(ADD(EDDY_METRIC_GAUGE, "eddy_replica_precision_load_steps",
                            "Precisions below the version's base that the load has stepped down", NULL, NULL, 0));
#undef ONE
#undef ADD
  if (!by_prec || !now_prec || !r->m_steps_down || !r->m_steps_up || !r->m_load_steps || !r->m_queue) return -1;
  if (!r->m_version || !r->m_swaps || !r->m_refuse_fetch || !r->m_refuse_verify || !r->m_last_swap ||
      !r->m_announcements || !r->m_beat_errors || !r->m_model_bytes || !r->m_load_seconds ||
      !r->m_announce_to_serve || !r->m_event_to_serve || !r->m_requests || !r->m_instances || !r->m_latency ||
      !r->m_http_total || !r->m_http_duration)
    return -1;
  return 0;
}

eddy_replica_t *eddy_replica_new(const eddy_config_t *cfg, eddy_registry_t *metrics, char *errstr,
                                 size_t errstr_size) {
  if (!cfg || !metrics) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "replica: a config and a metrics registry are required");
    return NULL;
  }
  eddy_replica_t *r = calloc(1, sizeof *r);
  if (!r) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
    return NULL;
  }
  r->cfg = *cfg;
  r->reg = metrics;
  pthread_mutex_init(&r->cur_mu, NULL);
  pthread_mutex_init(&r->why_mu, NULL);
  pthread_mutex_init(&r->stop_mu, NULL);
  pthread_cond_init(&r->stop_cv, NULL);
  if (!(r->sel = eddy_prec_selector_new(cfg, errstr, errstr_size))) goto fail;
  atomic_init(&r->freshness_ms, -1);
  snprintf(r->why_waiting, sizeof r->why_waiting, "no version loaded yet: starting");
  if (cfg->serve_store[0])
    snprintf(r->source, sizeof r->source, "store:%s", cfg->serve_store);
  else
    snprintf(r->source, sizeof r->source, "%s", cfg->serve_trainer_url);
  if (pthread_key_create(&r->work_key, work_free) != 0) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "replica: pthread_key_create failed");
    goto fail;
  }
  r->work_key_ok = true;
  if (cfg->http_token_file[0]) {
    char why[512];
    if (eddy_http_load_token(cfg->http_token_file, r->token, sizeof r->token, why, sizeof why) != EDDY_OK) {
      eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "%s", why);
      goto fail;
    }
  }
  if (add_metrics(r, errstr, errstr_size) != 0) goto fail;
  return r;
fail:
  eddy_replica_destroy(r);
  return NULL;
}

eddy_err_t eddy_replica_register(eddy_replica_t *r, eddy_http_t *http, char *errstr, size_t errstr_size) {
  static const struct {
    const char *method, *pattern;
    eddy_http_handler_fn fn;
  } routes[] = {{"GET", "/healthz", h_healthz},
                {"GET", "/metrics", h_metrics},
                {"GET", "/v1/model", h_model},
                {"POST", "/v1/predict", h_predict}};
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
    eddy_err_t err = eddy_http_route(http, routes[i].method, routes[i].pattern, 0, routes[i].fn, r, errstr, errstr_size);
    if (err) return err;
  }
  return eddy_oip_http_register(r, http, errstr, errstr_size);
}

eddy_err_t eddy_replica_start(eddy_replica_t *r, const char *advertise, char *errstr, size_t errstr_size) {
  snprintf(r->advertise, sizeof r->advertise, "%s", advertise ? advertise : "");
  if (pthread_create(&r->follow_thread, NULL, follow_main, r) != 0)
    return eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size, "replica: cannot start the follower thread");
  r->follow_started = true;
  if (r->cfg.serve_store[0] && !strcmp(r->cfg.serve_trainer_url, "")) {
    EDDY_INFO(LOG_MOD, "no serve.trainer_url: no heartbeats");
  } else if (!r->token[0]) {
    EDDY_WARN(LOG_MOD, "http.token_file is empty: no heartbeats to %s (the trainer's dashboard will not list this "
                       "replica)",
              r->cfg.serve_trainer_url);
  } else {
    if (pthread_create(&r->beat_thread, NULL, beat_main, r) != 0)
      return eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size, "replica: cannot start the heartbeat thread");
    r->beat_started = true;
  }
  return EDDY_OK;
}

uint64_t eddy_replica_version(eddy_replica_t *r) { return r ? atomic_load(&r->version) : 0; }

void eddy_replica_destroy(eddy_replica_t *r) {
  if (!r) return;
  pthread_mutex_lock(&r->stop_mu);
  atomic_store(&r->stop, true);
  pthread_cond_broadcast(&r->stop_cv);
  pthread_mutex_unlock(&r->stop_mu);
  if (r->follow_started) pthread_join(r->follow_thread, NULL);
  if (r->beat_started) pthread_join(r->beat_thread, NULL);
  pthread_mutex_lock(&r->cur_mu);
  served_t *s = r->cur;
  r->cur = NULL;
  pthread_mutex_unlock(&r->cur_mu);
  release(s);
  if (r->work_key_ok) {
    work_free(pthread_getspecific(r->work_key));
    pthread_key_delete(r->work_key);
  }
  memset(r->token, 0, sizeof r->token);
  pthread_mutex_destroy(&r->cur_mu);
  pthread_mutex_destroy(&r->why_mu);
  pthread_mutex_destroy(&r->stop_mu);
  pthread_cond_destroy(&r->stop_cv);
  eddy_prec_selector_destroy(r->sel);
  free(r);
}
