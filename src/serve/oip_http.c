/* The Open Inference Protocol's REST routes on the replica's HTTP server (see oip.h): health,
 * server and model metadata, and inference with tensors as JSON or as binary data after the JSON
 * header (Triton's binary tensor data extension: Inference-Header-Content-Length, the inputs'
 * "binary_data_size", "binary_data" on an output or "binary_data_output" on the request). A
 * version in the path is answered only when it is the one served: 404 otherwise. */
#include "serve/oip.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef EDDY_VERSION
#define EDDY_VERSION "dev"
#endif

#define INFER_ROUTE "/v2/models/{model}/infer"
#define INFER_VERSION_ROUTE "/v2/models/{model}/versions/{version}/infer"
#define HEADER_LENGTH "Inference-Header-Content-Length"

/* A growing answer; oom once an append failed. */
typedef struct {
  char *p;
  size_t len, cap;
  bool oom;
} out_t;

static bool out_room(out_t *o, size_t n) {
  if (o->oom) return false;
  if (o->len + n + 1 <= o->cap) return true;
  size_t cap = o->cap ? o->cap : 1024;
  while (cap < o->len + n + 1) cap *= 2;
  char *p = realloc(o->p, cap);
  if (!p) {
    o->oom = true;
    return false;
  }
  o->p = p;
  o->cap = cap;
  return true;
}

static void out_put(out_t *o, const void *data, size_t n) {
  if (!out_room(o, n)) return;
  memcpy(o->p + o->len, data, n);
  o->len += n;
}

static void out_str(out_t *o, const char *s) { out_put(o, s, strlen(s)); }

static void out_fmt(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_fmt(out_t *o, const char *fmt, ...) {
  for (size_t room = 64;;) {
    if (!out_room(o, room)) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      o->oom = true;
      return;
    }
    if ((size_t)n < o->cap - o->len) {
      o->len += (size_t)n;
      return;
    }
    room = (size_t)n + 1;
  }
}

/* s as a JSON string, quoted and escaped. */
static void out_json_string(out_t *o, const char *s) {
  out_put(o, "\"", 1);
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    if (*c == '"' || *c == '\\') {
      char e[2] = {'\\', (char)*c};
      out_put(o, e, 2);
    } else if (*c < 0x20 || *c == 0x7f) {
      out_fmt(o, "\\u%04x", *c);
    } else {
      out_put(o, c, 1);
    }
  }
  out_put(o, "\"", 1);
}

static void out_meta(out_t *o, const eddy_oip_meta_t *t, size_t n) {
  for (size_t i = 0; i < n; i++) {
    out_str(o, i ? ",{\"name\":" : "{\"name\":");
    out_json_string(o, t[i].name);
    out_fmt(o, ",\"datatype\":\"%s\",\"shape\":[%" PRId64, t[i].datatype, t[i].shape[0]);
    if (t[i].ndim == 2) out_fmt(o, ",%" PRId64, t[i].shape[1]);
    out_str(o, "]}");
  }
}

static int send_error(eddy_http_resp_t *resp, const eddy_served_t *s, int status, const char *msg) {
  if (s) eddy_http_resp_header(resp, "X-Eddy-Version", eddy_served_version_text(s));
  return (int)eddy_http_resp_error(resp, status, "%s", msg);
}

static int send_out(eddy_http_resp_t *resp, out_t *o, const char *content_type) {
  if (o->oom) {
    free(o->p);
    return (int)eddy_http_resp_error(resp, 500, "out of memory");
  }
  return (int)eddy_http_resp_body_owned(resp, content_type, o->p, o->len);
}

/* 503 before the first version, with the reason. */
static int send_unavailable(eddy_replica_t *r, eddy_http_resp_t *resp) {
  char why[512];
  eddy_replica_waiting(r, why, sizeof why);
  eddy_http_resp_header(resp, "Retry-After", "1");
  return (int)eddy_http_resp_error(resp, 503, "%s", why);
}

/* ---- health and metadata ---- */

static int h_server_meta(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  (void)ctx;
  (void)req;
  out_t o = {0};
  out_str(&o, "{\"name\":\"" EDDY_OIP_SERVER_NAME "\",\"version\":\"" EDDY_VERSION "\",\"extensions\":[\""
              EDDY_OIP_EXTENSIONS "\"]}");
  return send_out(resp, &o, "application/json");
}

static int h_live(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  (void)ctx;
  (void)req;
  (void)resp;
  return 0; /* 200, empty body */
}

static int h_ready(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  (void)req;
  eddy_served_t *s = eddy_replica_acquire(ctx);
  if (s) eddy_http_resp_header(resp, "X-Eddy-Version", eddy_served_version_text(s));
  else eddy_http_resp_status(resp, 400); /* the protocol: 200 = ready, 4xx = not, empty body */
  eddy_replica_release(s);
  return 0;
}

static int h_model_ready(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  eddy_replica_t *r = ctx;
  eddy_served_t *s = eddy_replica_acquire(r);
  char err[512];
  int rc = 0;
  if (eddy_oip_check_model(r, s, eddy_http_req_param(req, "model"), eddy_http_req_param(req, "version"), err,
                           sizeof err))
    rc = send_error(resp, s, 404, err);
  else if (s)
    eddy_http_resp_header(resp, "X-Eddy-Version", eddy_served_version_text(s));
  else
    eddy_http_resp_status(resp, 400);
  eddy_replica_release(s);
  return rc;
}

static int h_model_meta(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  eddy_replica_t *r = ctx;
  eddy_served_t *s = eddy_replica_acquire(r);
  char err[512];
  int rc;
  if (eddy_oip_check_model(r, s, eddy_http_req_param(req, "model"), eddy_http_req_param(req, "version"), err,
                           sizeof err)) {
    rc = send_error(resp, s, 404, err);
  } else if (!s) {
    rc = send_unavailable(r, resp);
  } else {
    eddy_oip_meta_t in[2], outs[2];
    const eddy_model_spec_t *spec = eddy_served_spec(s);
    size_t n_in = eddy_oip_inputs(spec, in), n_out = eddy_oip_outputs(spec, outs);
    out_t o = {0};
    out_str(&o, "{\"name\":");
    out_json_string(&o, eddy_replica_model_name(r));
    out_fmt(&o, ",\"versions\":[\"%s\"],\"platform\":\"" EDDY_OIP_PLATFORM "\",\"inputs\":[",
            eddy_served_version_text(s));
    out_meta(&o, in, n_in);
    out_str(&o, "],\"outputs\":[");
    out_meta(&o, outs, n_out);
    out_str(&o, "]}");
    eddy_http_resp_header(resp, "X-Eddy-Version", eddy_served_version_text(s));
    rc = send_out(resp, &o, "application/json");
  }
  eddy_replica_release(s);
  return rc;
}

/* ---- inference ---- */

typedef struct {
  cJSON *root;
  eddy_oip_input_t in[EDDY_OIP_MAX_INPUTS];
  int64_t shapes[EDDY_OIP_MAX_INPUTS][EDDY_OIP_MAX_DIMS];
  const cJSON *data[EDDY_OIP_MAX_INPUTS]; /* JSON data, converted once the inputs are checked */
  size_t n_in;
  float *f32;               /* dense values given as JSON */
  eddy_oip_bytes_t *items;  /* sparse rows given as JSON strings */
  const char *id;
  const char *precision; /* the request's parameter "precision", or NULL */
  bool want[EDDY_OIP__OUTPUTS], binary[EDDY_OIP__OUTPUTS];
} request_t;

static void request_free(request_t *q) {
  cJSON_Delete(q->root);
  free(q->f32);
  free(q->items);
}

/* An integer JSON number in [lo, hi] into *v. */
static bool json_int(const cJSON *x, double lo, double hi, int64_t *v) {
  if (!cJSON_IsNumber(x)) return false;
  double d = x->valuedouble;
  if (!(d >= lo && d <= hi) || d != floor(d)) return false;
  *v = (int64_t)d;
  return true;
}

static eddy_err_t bad(char *errstr, size_t errstr_size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static eddy_err_t bad(char *errstr, size_t errstr_size, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errstr, errstr_size, fmt, ap);
  va_end(ap);
  return EDDY_ERR_INVALID_ARG;
}

/* A parameter of an object's "parameters" that must be a boolean: *v unchanged when absent. */
static eddy_err_t bool_param(const cJSON *params, const char *key, const char *where, bool *v, char *errstr,
                             size_t errstr_size) {
  const cJSON *x = cJSON_GetObjectItemCaseSensitive(params, key);
  if (!x) return EDDY_OK;
  if (!cJSON_IsBool(x)) return bad(errstr, errstr_size, "%s: parameter %s must be true or false", where, key);
  *v = cJSON_IsTrue(x);
  return EDDY_OK;
}

/* One element of "inputs"; binary data is taken from body at *bin_at (the end of the body is end). */
static eddy_err_t parse_input(request_t *q, const cJSON *j, size_t i, const char *body, size_t *bin_at, size_t end,
                              bool have_header, char *errstr, size_t errstr_size) {
  eddy_oip_input_t *t = &q->in[i];
  const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name");
  const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(j, "datatype");
  const cJSON *shape = cJSON_GetObjectItemCaseSensitive(j, "shape");
  const cJSON *params = cJSON_GetObjectItemCaseSensitive(j, "parameters");
  const cJSON *data = cJSON_GetObjectItemCaseSensitive(j, "data");
  if (!cJSON_IsObject(j) || !cJSON_IsString(name))
    return bad(errstr, errstr_size, "inputs[%zu] is not an object with a \"name\" string", i);
  t->name = name->valuestring;
  if (!cJSON_IsString(dtype)) return bad(errstr, errstr_size, "input %s: no \"datatype\" string", t->name);
  t->datatype = dtype->valuestring;
  if (!cJSON_IsArray(shape)) return bad(errstr, errstr_size, "input %s: no \"shape\" array", t->name);
  const cJSON *d;
  cJSON_ArrayForEach(d, shape) {
    if (t->ndim == EDDY_OIP_MAX_DIMS)
      return bad(errstr, errstr_size, "input %s: more than %d dimensions", t->name, EDDY_OIP_MAX_DIMS);
    if (!json_int(d, 0, 9007199254740992.0, &q->shapes[i][t->ndim]))
      return bad(errstr, errstr_size, "input %s: shape[%zu] is not a whole number >= 0", t->name, t->ndim);
    t->ndim++;
  }
  t->shape = q->shapes[i];
  if (params && !cJSON_IsObject(params)) return bad(errstr, errstr_size, "input %s: \"parameters\" is not an object", t->name);
  const cJSON *size = cJSON_GetObjectItemCaseSensitive(params, "binary_data_size");
  if (size) {
    int64_t n;
    if (!json_int(size, 0, 9007199254740992.0, &n))
      return bad(errstr, errstr_size, "input %s: binary_data_size is not a whole number >= 0", t->name);
    if (data) return bad(errstr, errstr_size, "input %s: both \"data\" and binary_data_size", t->name);
    if (!have_header)
      return bad(errstr, errstr_size, "input %s: binary_data_size without an " HEADER_LENGTH " header", t->name);
    if ((uint64_t)n > end - *bin_at)
      return bad(errstr, errstr_size,
                 "input %s: binary_data_size %" PRId64 " is past the end of the body (%zu bytes of binary data left)",
                 t->name, n, end - *bin_at);
    t->kind = EDDY_OIP_DATA_RAW;
    t->raw = body + *bin_at;
    t->raw_len = (size_t)n;
    *bin_at += (size_t)n;
  } else if (data) {
    if (!cJSON_IsArray(data)) return bad(errstr, errstr_size, "input %s: \"data\" is not an array", t->name);
    q->data[i] = data;
  }
  return EDDY_OK;
}

/* "outputs" and the request's parameters: which outputs, which of them as binary data, and the
 * serving precision asked for. */
static eddy_err_t parse_outputs(request_t *q, const eddy_served_t *s, char *errstr, size_t errstr_size) {
  const cJSON *params = cJSON_GetObjectItemCaseSensitive(q->root, "parameters");
  if (params && !cJSON_IsObject(params)) return bad(errstr, errstr_size, "\"parameters\" is not an object");
  bool all_binary = false;
  eddy_err_t err = bool_param(params, "binary_data_output", "the request", &all_binary, errstr, errstr_size);
  if (err) return err;
  const cJSON *precision = cJSON_GetObjectItemCaseSensitive(params, EDDY_OIP_PRECISION_PARAM);
  if (precision && !cJSON_IsString(precision))
    return bad(errstr, errstr_size, "the request: parameter " EDDY_OIP_PRECISION_PARAM
                                    " must be a string (fp32, bf16, fp16 or int8)");
  q->precision = precision ? precision->valuestring : NULL;
  const cJSON *outs = cJSON_GetObjectItemCaseSensitive(q->root, "outputs");
  eddy_oip_meta_t meta[2];
  size_t n_meta = eddy_oip_outputs(eddy_served_spec(s), meta);
  for (size_t k = 0; k < EDDY_OIP__OUTPUTS; k++) q->binary[k] = all_binary;
  if (!outs) {
    for (size_t k = 0; k < n_meta; k++) q->want[k] = true;
    return EDDY_OK;
  }
  if (!cJSON_IsArray(outs)) return bad(errstr, errstr_size, "\"outputs\" is not an array");
  const cJSON *o;
  cJSON_ArrayForEach(o, outs) {
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
    if (!cJSON_IsString(name)) return bad(errstr, errstr_size, "an element of \"outputs\" has no \"name\" string");
    int k = eddy_oip_output_index(s, name->valuestring, errstr, errstr_size);
    if (k < 0) return EDDY_ERR_INVALID_ARG;
    if (q->want[k]) return bad(errstr, errstr_size, "output %s is asked for twice", name->valuestring);
    q->want[k] = true;
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(o, "parameters");
    if (op && !cJSON_IsObject(op)) return bad(errstr, errstr_size, "output %s: \"parameters\" is not an object", name->valuestring);
    if (cJSON_GetObjectItemCaseSensitive(op, "classification"))
      return bad(errstr, errstr_size, "output %s: the classification extension is not supported (label is the class)",
                 name->valuestring);
    if ((err = bool_param(op, "binary_data", name->valuestring, &q->binary[k], errstr, errstr_size))) return err;
  }
  return EDDY_OK;
}

/* Elements of a (nested) JSON array, counting the leaves. */
static size_t count_leaves(const cJSON *a) {
  size_t n = 0;
  const cJSON *x;
  cJSON_ArrayForEach(x, a) n += cJSON_IsArray(x) ? count_leaves(x) : 1;
  return n;
}

/* Flattens a (nested) JSON array of numbers into dst (room for cap); *n gets the count. */
static eddy_err_t flatten_f32(const cJSON *a, const char *name, float *dst, size_t cap, size_t *n, char *errstr,
                              size_t errstr_size) {
  const cJSON *x;
  cJSON_ArrayForEach(x, a) {
    if (cJSON_IsArray(x)) {
      eddy_err_t err = flatten_f32(x, name, dst, cap, n, errstr, errstr_size);
      if (err) return err;
      continue;
    }
    if (!cJSON_IsNumber(x)) return bad(errstr, errstr_size, "input %s: data element %zu is not a number", name, *n);
    double v = x->valuedouble; /* the /v1 decoder's float32 rule: finite and in range, then rounded */
    if (!isfinite(v) || fabs(v) >= 0x1.ffffffp+127)
      return bad(errstr, errstr_size, "input %s: data element %zu = %g overflows FP32", name, *n, v);
    if (*n == cap) return bad(errstr, errstr_size, "input %s: more than the %zu values its shape takes", name, cap);
    dst[(*n)++] = (float)v;
  }
  return EDDY_OK;
}

static eddy_err_t flatten_items(const cJSON *a, const char *name, eddy_oip_bytes_t *dst, size_t cap, size_t *n,
                                char *errstr, size_t errstr_size) {
  const cJSON *x;
  cJSON_ArrayForEach(x, a) {
    if (cJSON_IsArray(x)) {
      eddy_err_t err = flatten_items(x, name, dst, cap, n, errstr, errstr_size);
      if (err) return err;
      continue;
    }
    if (!cJSON_IsString(x))
      return bad(errstr, errstr_size, "input %s: data element %zu is not a string (BYTES)", name, *n);
    if (*n == cap) return bad(errstr, errstr_size, "input %s: more than the %zu elements its shape takes", name, cap);
    dst[(*n)++] = (eddy_oip_bytes_t){.data = (const uint8_t *)x->valuestring, .len = strlen(x->valuestring)};
  }
  return EDDY_OK;
}

/* The checked inputs' JSON data as typed elements. */
static eddy_err_t convert_json(request_t *q, const eddy_served_t *s, const eddy_oip_plan_t *plan, char *errstr,
                               size_t errstr_size) {
  const size_t n = plan->n, dim = eddy_served_spec(s)->dense_dim;
  eddy_err_t err = EDDY_OK;
  if (plan->dense >= 0 && q->data[plan->dense]) {
    eddy_oip_input_t *t = &q->in[plan->dense];
    const size_t given = count_leaves(q->data[plan->dense]); /* checked before the shape's size is allocated */
    if (given != n * dim)
      return bad(errstr, errstr_size, "input %s: %zu values, its shape takes %zu", t->name, given, n * dim);
    if (!(q->f32 = malloc(n * dim * sizeof *q->f32))) return EDDY_ERR_NOMEM;
    t->kind = EDDY_OIP_DATA_F32;
    t->f32 = q->f32;
    err = flatten_f32(q->data[plan->dense], t->name, q->f32, n * dim, &t->n_f32, errstr, errstr_size);
  }
  if (!err && plan->sparse >= 0 && q->data[plan->sparse]) {
    eddy_oip_input_t *t = &q->in[plan->sparse];
    if (!(q->items = malloc(n * sizeof *q->items))) return EDDY_ERR_NOMEM;
    t->kind = EDDY_OIP_DATA_ITEMS;
    t->items = q->items;
    err = flatten_items(q->data[plan->sparse], t->name, q->items, n, &t->n_items, errstr, errstr_size);
  }
  return err;
}

/* The request in req's body: JSON, or a JSON header and binary tensor data. */
static eddy_err_t parse_request(request_t *q, const eddy_served_t *s, const eddy_http_req_t *req, char *errstr,
                                size_t errstr_size) {
  size_t len = 0;
  const char *body = eddy_http_req_body(req, &len);
  const char *hdr = eddy_http_req_header(req, HEADER_LENGTH);
  size_t json_len = len;
  if (hdr) {
    char *e = NULL;
    errno = 0;
    unsigned long long v = strtoull(hdr, &e, 10);
    if (!*hdr || *e || errno || hdr[0] == '-' || hdr[0] == '+' || v > len)
      return bad(errstr, errstr_size, HEADER_LENGTH " \"%.40s\" is not a length within the body of %zu bytes", hdr, len);
    json_len = (size_t)v;
  }
  const char *end = NULL;
  q->root = cJSON_ParseWithLengthOpts(body, json_len, &end, 0);
  while (q->root && end < body + json_len && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')) end++;
  if (!cJSON_IsObject(q->root) || end != body + json_len)
    return bad(errstr, errstr_size, "the %s is not a JSON object (an inference request)%s",
               hdr ? "JSON header (" HEADER_LENGTH " bytes)" : "body",
               q->root && end != body + json_len ? ": there is more after it" : "");
  const cJSON *id = cJSON_GetObjectItemCaseSensitive(q->root, "id");
  if (id && !cJSON_IsString(id)) return bad(errstr, errstr_size, "\"id\" is not a string");
  q->id = id ? id->valuestring : NULL;
  const cJSON *inputs = cJSON_GetObjectItemCaseSensitive(q->root, "inputs");
  if (!cJSON_IsArray(inputs)) return bad(errstr, errstr_size, "no \"inputs\" array");
  size_t bin_at = json_len;
  const cJSON *j;
  eddy_err_t err;
  cJSON_ArrayForEach(j, inputs) {
    if (q->n_in == EDDY_OIP_MAX_INPUTS)
      return bad(errstr, errstr_size, "more than %d inputs", EDDY_OIP_MAX_INPUTS);
    if ((err = parse_input(q, j, q->n_in, body, &bin_at, len, hdr != NULL, errstr, errstr_size))) return err;
    q->n_in++;
  }
  if (bin_at != len)
    return bad(errstr, errstr_size,
               "binary tensor data: the inputs' binary_data_size add up to %zu bytes, the body has %zu after the "
               "JSON header",
               bin_at - json_len, len - json_len);
  return parse_outputs(q, s, errstr, errstr_size);
}

static void encode(out_t *o, const request_t *q, eddy_replica_t *r, const eddy_served_t *s,
                   const eddy_predict_call_t *call, const float *pred, size_t n, bool *binary) {
  const size_t k = eddy_served_outputs(s);
  const eddy_model_spec_t *spec = eddy_served_spec(s);
  eddy_oip_meta_t meta[2];
  size_t n_meta = eddy_oip_outputs(spec, meta);
  out_str(o, "{\"model_name\":");
  out_json_string(o, eddy_replica_model_name(r));
  out_fmt(o, ",\"model_version\":\"%s\"", eddy_served_version_text(s));
  if (q->id) {
    out_str(o, ",\"id\":");
    out_json_string(o, q->id);
  }
  out_fmt(o, ",\"parameters\":{\"" EDDY_OIP_PRECISION_PARAM "\":\"%s\"}",
          eddy_infer_precision_name(call->precision));
  out_str(o, ",\"outputs\":[");
  bool first = true;
  *binary = false;
  for (size_t m = 0; m < n_meta; m++) {
    if (!q->want[m]) continue;
    out_fmt(o, "%s{\"name\":\"%s\",\"datatype\":\"%s\",\"shape\":[%zu", first ? "" : ",", meta[m].name,
            meta[m].datatype, n);
    if (meta[m].ndim == 2) out_fmt(o, ",%zu", k);
    first = false;
    if (q->binary[m]) {
      out_fmt(o, "],\"parameters\":{\"binary_data_size\":%zu}}", eddy_oip_output_bytes(s, (eddy_oip_output_t)m, n));
      *binary = true;
      continue;
    }
    out_str(o, "],\"data\":[");
    if (m == EDDY_OIP_SCORES) {
      for (size_t i = 0; i < n * k; i++) out_fmt(o, i ? ",%.9g" : "%.9g", (double)pred[i]);
    } else {
      for (size_t i = 0; i < n; i++) out_fmt(o, i ? ",%" PRId64 : "%" PRId64, eddy_oip_label(spec, pred + i * k));
    }
    out_str(o, "]}");
  }
  out_str(o, "]}");
}

static int h_infer(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  eddy_replica_t *r = ctx;
  eddy_served_t *s = eddy_replica_acquire(r);
  char err[1024];
  int status;
  if (!s) {
    if (eddy_oip_check_model(r, NULL, eddy_http_req_param(req, "model"), NULL, err, sizeof err))
      return send_error(resp, NULL, 404, err);
    return send_unavailable(r, resp);
  }
  eddy_predict_call_t call;
  eddy_replica_call_begin(r, EDDY_PROTO_V2, &call);
  request_t q = {0};
  eddy_oip_plan_t plan;
  eddy_batch_t *batch = NULL;
  const float *pred = NULL;
  eddy_err_t e = EDDY_OK;
  int rc = 0;
  if ((status = eddy_oip_check_model(r, s, eddy_http_req_param(req, "model"), eddy_http_req_param(req, "version"),
                                     err, sizeof err))) {
    rc = send_error(resp, s, status, err);
    goto out;
  }
  if ((e = parse_request(&q, s, req, err, sizeof err)) || (e = eddy_oip_check_inputs(s, q.in, q.n_in, &plan, err, sizeof err)) ||
      (e = convert_json(&q, s, &plan, err, sizeof err)) || (e = eddy_oip_decode(r, s, q.in, &plan, &batch, err, sizeof err))) {
    rc = send_error(resp, s, e == EDDY_ERR_NOMEM ? 500 : 400, e == EDDY_ERR_NOMEM ? "out of memory" : err);
    goto out;
  }
  call.asked = q.precision;
  if (!(pred = eddy_replica_predict(r, s, batch, &call, &e, err, sizeof err))) {
    rc = send_error(resp, s, e == EDDY_ERR_NOMEM ? 500 : 400, e == EDDY_ERR_NOMEM ? "out of memory" : err);
    goto out;
  }
  out_t o = {0};
  bool binary;
  encode(&o, &q, r, s, &call, pred, plan.n, &binary);
  if (binary) {
    char hlen[24];
    snprintf(hlen, sizeof hlen, "%zu", o.len);
    eddy_http_resp_header(resp, HEADER_LENGTH, hlen);
    for (size_t m = 0; m < EDDY_OIP__OUTPUTS; m++) {
      if (!q.want[m] || !q.binary[m]) continue;
      size_t bytes = eddy_oip_output_bytes(s, (eddy_oip_output_t)m, plan.n);
      if (out_room(&o, bytes)) {
        eddy_oip_output_write(s, (eddy_oip_output_t)m, pred, plan.n, (uint8_t *)o.p + o.len);
        o.len += bytes;
      }
    }
  }
  eddy_http_resp_header(resp, "X-Eddy-Version", eddy_served_version_text(s));
  eddy_http_resp_header(resp, "X-Eddy-Precision", eddy_infer_precision_name(call.precision));
  rc = send_out(resp, &o, binary ? "application/octet-stream" : "application/json");
out:
  eddy_replica_call_end(r);
  request_free(&q);
  eddy_replica_release(s);
  return rc;
}

bool eddy_oip_is_infer_route(const char *pattern) {
  return strcmp(pattern, INFER_ROUTE) == 0 || strcmp(pattern, INFER_VERSION_ROUTE) == 0;
}

eddy_err_t eddy_oip_http_register(eddy_replica_t *r, eddy_http_t *http, char *errstr, size_t errstr_size) {
  static const struct {
    const char *method, *pattern;
    eddy_http_handler_fn fn;
  } routes[] = {{"GET", "/v2", h_server_meta},
                {"GET", "/v2/health/live", h_live},
                {"GET", "/v2/health/ready", h_ready},
                {"GET", "/v2/models/{model}", h_model_meta},
                {"GET", "/v2/models/{model}/versions/{version}", h_model_meta},
                {"GET", "/v2/models/{model}/ready", h_model_ready},
                {"GET", "/v2/models/{model}/versions/{version}/ready", h_model_ready},
                {"POST", INFER_ROUTE, h_infer},
                {"POST", INFER_VERSION_ROUTE, h_infer}};
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
    eddy_err_t err = eddy_http_route(http, routes[i].method, routes[i].pattern, 0, routes[i].fn, r, errstr, errstr_size);
    if (err) return err;
  }
  return EDDY_OK;
}
