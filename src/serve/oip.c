/* The Open Inference Protocol's tensors on a replica (see oip.h): one set of checks and one decoder
 * for the REST routes and the gRPC service. Sparse rows go through eddy_event_from_json as an
 * event's "sparse" object, so they hash exactly as on /v1/predict and on the stream. */
#include "serve/oip.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPARSE_WRAP_OPEN "{\"sparse\":"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "raw tensor data is little-endian: a host of that order");

size_t eddy_oip_inputs(const eddy_model_spec_t *spec, eddy_oip_meta_t in[2]) {
  size_t n = 0;
  if (spec->dense_dim > 0)
    in[n++] = (eddy_oip_meta_t){.name = "dense", .datatype = "FP32", .shape = {-1, spec->dense_dim}, .ndim = 2};
  if (spec->embed_dim > 0 && spec->hash_bits > 0)
    in[n++] = (eddy_oip_meta_t){.name = "sparse", .datatype = "BYTES", .shape = {-1}, .ndim = 1};
  return n;
}

size_t eddy_oip_outputs(const eddy_model_spec_t *spec, eddy_oip_meta_t out[2]) {
  size_t n = 0;
  out[n++] = (eddy_oip_meta_t){.name = "scores", .datatype = "FP32", .shape = {-1, eddy_model_outputs(spec)}, .ndim = 2};
  if (spec->head != EDDY_HEAD_SQUARED)
    out[n++] = (eddy_oip_meta_t){.name = "label", .datatype = "INT64", .shape = {-1}, .ndim = 1};
  return n;
}

/* "dense FP32 [-1, 784], sparse BYTES [-1]" */
static void describe(const eddy_oip_meta_t *t, size_t n, char *buf, size_t size) {
  size_t at = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < n && at < size; i++) {
    at += (size_t)snprintf(buf + at, size - at, "%s%s %s [%" PRId64, i ? ", " : "", t[i].name, t[i].datatype,
                           t[i].shape[0]);
    if (at < size && t[i].ndim == 2) at += (size_t)snprintf(buf + at, size - at, ", %" PRId64, t[i].shape[1]);
    if (at < size) at += (size_t)snprintf(buf + at, size - at, "]");
  }
}

static void shape_text(const int64_t *shape, size_t ndim, char *buf, size_t size) {
  size_t at = (size_t)snprintf(buf, size, "[");
  for (size_t d = 0; d < ndim && at < size; d++)
    at += (size_t)snprintf(buf + at, size - at, "%s%" PRId64, d ? ", " : "", shape[d]);
  if (at < size) snprintf(buf + at, size - at, "]");
}

int eddy_oip_check_model(eddy_replica_t *r, const eddy_served_t *s, const char *name, const char *version,
                         char *errstr, size_t errstr_size) {
  const char *model = eddy_replica_model_name(r);
  if (!name || strcmp(name, model) != 0) {
    snprintf(errstr, errstr_size, "unknown model \"%s\": this replica serves model \"%s\" (%s%s)", name ? name : "",
             model, s ? "version " : "no version loaded yet", s ? eddy_served_version_text(s) : "");
    return 404;
  }
  if (s && version && *version && strcmp(version, eddy_served_version_text(s)) != 0) {
    snprintf(errstr, errstr_size, "model \"%s\" version \"%s\" is not on this replica: it serves version %s", model,
             version, eddy_served_version_text(s));
    return 404;
  }
  return 0;
}

eddy_err_t eddy_oip_check_inputs(const eddy_served_t *s, const eddy_oip_input_t *in, size_t n_in,
                                 eddy_oip_plan_t *plan, char *errstr, size_t errstr_size) {
  const eddy_model_spec_t *spec = eddy_served_spec(s);
  eddy_oip_meta_t meta[2];
  const size_t n_meta = eddy_oip_inputs(spec, meta);
  char takes[160], got[160];
  describe(meta, n_meta, takes, sizeof takes);
  plan->n = 0;
  plan->dense = plan->sparse = -1;
  if (n_in == 0)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "no inputs: the model takes %s", takes);
  if (n_in > EDDY_OIP_MAX_INPUTS)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "%zu inputs: the model takes %s", n_in, takes);
  for (size_t i = 0; i < n_in; i++) {
    const eddy_oip_input_t *t = &in[i];
    const char *name = t->name ? t->name : "";
    const eddy_oip_meta_t *m = NULL;
    for (size_t k = 0; k < n_meta && !m; k++)
      if (strcmp(name, meta[k].name) == 0) m = &meta[k];
    if (!m)
      return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "input \"%s\" is not an input of the model (it takes %s)",
                       name, takes);
    int *slot = strcmp(m->name, "dense") == 0 ? &plan->dense : &plan->sparse;
    if (*slot >= 0) return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "input %s is given twice", name);
    *slot = (int)i;
    if (!t->datatype || strcmp(t->datatype, m->datatype) != 0)
      return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "input %s: datatype \"%s\", the model takes %s", name,
                       t->datatype ? t->datatype : "", m->datatype);
    bool fits = t->ndim == m->ndim && t->shape[0] >= 1;
    for (size_t d = 1; fits && d < m->ndim; d++) fits = t->shape[d] == m->shape[d];
    if (!fits) {
      shape_text(t->shape, t->ndim, got, sizeof got);
      char want[64];
      shape_text(m->shape, m->ndim, want, sizeof want);
      return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                       "input %s: shape %s, the model takes %s (-1: a batch of 1 or more)", name, got, want);
    }
    if (t->shape[0] > EDDY_REPLICA_MAX_INSTANCES)
      return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                       "input %s: a batch of %" PRId64 " events is over the limit of %d in one request", name,
                       t->shape[0], EDDY_REPLICA_MAX_INSTANCES);
    if (plan->n && plan->n != (size_t)t->shape[0])
      return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                       "input %s: a batch of %" PRId64 " events, the other input has %zu", name, t->shape[0], plan->n);
    plan->n = (size_t)t->shape[0];
  }
  if (spec->dense_dim > 0 && plan->dense < 0)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "input dense is missing: the model takes %s", takes);
  return EDDY_OK;
}

/* Sparse row i (text of one JSON object) into ev, through the event decoder. */
static eddy_err_t decode_sparse_row(const eddy_model_spec_t *spec, const uint8_t *row, size_t len, size_t i,
                                    eddy_event_t *ev, char **wrap, size_t *wrap_cap, char *errstr, size_t errstr_size) {
  char msg[512];
  cJSON *obj = cJSON_ParseWithLength((const char *)row, len);
  bool is_obj = cJSON_IsObject(obj);
  cJSON_Delete(obj);
  if (!is_obj)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                     "input sparse: element %zu is not a JSON object of features (e.g. {\"user\": \"u42\"})", i);
  const size_t open = sizeof SPARSE_WRAP_OPEN - 1, need = open + len + 1;
  if (*wrap_cap < need) {
    char *w = realloc(*wrap, need);
    if (!w) return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
    *wrap = w;
    *wrap_cap = need;
  }
  memcpy(*wrap, SPARSE_WRAP_OPEN, open);
  memcpy(*wrap + open, row, len);
  (*wrap)[open + len] = '}';
  eddy_event_schema_t schema = eddy_model_event_schema(spec);
  schema.dense_dim = 0;
  schema.label_optional = true;
  if (eddy_event_from_json(*wrap, need, &schema, ev, msg, sizeof msg) != EDDY_OK)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "input sparse: element %zu: %s", i, msg);
  return EDDY_OK;
}

/* Where sparse row i is: from typed items, or walking the length-prefixed raw elements. */
static eddy_err_t sparse_row(const eddy_oip_input_t *t, size_t i, size_t *at, const uint8_t **row, size_t *len,
                             char *errstr, size_t errstr_size) {
  if (t->kind == EDDY_OIP_DATA_ITEMS) {
    *row = t->items[i].data;
    *len = t->items[i].len;
    return EDDY_OK;
  }
  const uint8_t *raw = t->raw;
  uint32_t n;
  if (t->raw_len - *at < 4)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                     "input sparse: the binary data ends before element %zu (%zu bytes)", i, t->raw_len);
  memcpy(&n, raw + *at, 4);
  if (t->raw_len - *at - 4 < n)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                     "input sparse: element %zu has a length of %" PRIu32 " bytes past the end of the binary data", i, n);
  *row = raw + *at + 4;
  *len = n;
  *at += 4 + (size_t)n;
  return EDDY_OK;
}

static eddy_err_t check_data(const eddy_oip_input_t *t, size_t n, size_t elems, const char *want,
                             char *errstr, size_t errstr_size) {
  switch (t->kind) {
    case EDDY_OIP_DATA_NONE:
      return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "input %s has no data", t->name);
    case EDDY_OIP_DATA_OTHER:
      return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "input %s: data in %s, the %s datatype takes %s",
                       t->name, t->other ? t->other : "another field", t->datatype, want);
    case EDDY_OIP_DATA_RAW:
      if (elems && t->raw_len != elems * 4)
        return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                         "input %s: %zu bytes of data, its shape takes %zu (%zu FP32 values)", t->name, t->raw_len,
                         elems * 4, elems);
      return EDDY_OK;
    case EDDY_OIP_DATA_F32:
      if (!elems) break;
      if (t->n_f32 != elems)
        return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "input %s: %zu values, its shape takes %zu",
                         t->name, t->n_f32, elems);
      return EDDY_OK;
    case EDDY_OIP_DATA_ITEMS:
      if (elems) break;
      if (t->n_items != n)
        return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "input %s: %zu elements, its shape takes %zu",
                         t->name, t->n_items, n);
      return EDDY_OK;
  }
  return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "input %s: data of the wrong type, the %s datatype takes %s",
                   t->name, t->datatype, want);
}

/* Index of the first NaN or infinity of v[0..n), or n: a branch-free pass first (it vectorises),
 * the position only when there is one. */
static size_t first_nonfinite(const float *v, size_t n) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &v[i], sizeof u);
    bad |= (u & 0x7f800000u) == 0x7f800000u;
  }
  size_t i = 0;
  if (bad)
    while (i < n && isfinite(v[i])) i++;
  return bad ? i : n;
}

eddy_err_t eddy_oip_decode(eddy_replica_t *r, const eddy_served_t *s, const eddy_oip_input_t *in,
                           const eddy_oip_plan_t *plan, eddy_batch_t **batch, char *errstr, size_t errstr_size) {
  const eddy_model_spec_t *spec = eddy_served_spec(s);
  const size_t n = plan->n, dim = spec->dense_dim;
  const eddy_oip_input_t *dense = plan->dense >= 0 ? &in[plan->dense] : NULL;
  const eddy_oip_input_t *sparse = plan->sparse >= 0 ? &in[plan->sparse] : NULL;
  eddy_err_t err;
  if (dense && (err = check_data(dense, n, n * dim, "numbers (FP32)", errstr, errstr_size))) return err;
  if (sparse && (err = check_data(sparse, n, 0, "strings (BYTES)", errstr, errstr_size))) return err;
  eddy_batch_t *b = eddy_replica_batch(r, s, n);
  eddy_event_t *ev = eddy_replica_event(r);
  if (!b || !ev) return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
  const uint8_t *rows = dense ? (dense->kind == EDDY_OIP_DATA_RAW ? dense->raw : (const void *)dense->f32) : NULL;
  char *wrap = NULL;
  size_t wrap_cap = 0, at = 0;
  err = EDDY_OK;
  for (size_t i = 0; i < n && !err; i++) {
    uint32_t n_sparse = 0;
    if (sparse) {
      const uint8_t *row = NULL;
      size_t len = 0;
      err = sparse_row(sparse, i, &at, &row, &len, errstr, errstr_size);
      if (!err) err = decode_sparse_row(spec, row, len, i, ev, &wrap, &wrap_cap, errstr, errstr_size);
      n_sparse = ev->n_sparse;
    }
    if (!err) err = eddy_batch_push_parts(b, rows ? rows + i * dim * 4 : NULL, ev->sparse_idx, ev->sparse_val, n_sparse);
    if (err == EDDY_ERR_TOO_LARGE || err == EDDY_ERR_NOMEM)
      err = eddy_errf(err, errstr, errstr_size, "out of memory for the batch");
  }
  free(wrap);
  if (!err && sparse && sparse->kind == EDDY_OIP_DATA_RAW && at != sparse->raw_len)
    err = eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                    "input sparse: %zu bytes of binary data, its %zu elements take %zu", sparse->raw_len, n, at);
  size_t bad = err ? n * dim : first_nonfinite(b->dense, n * dim);
  if (bad < n * dim)
    err = eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "input dense: element [%zu, %zu] is %s", bad / dim,
                    bad % dim, isnan(b->dense[bad]) ? "NaN" : "infinite");
  if (!err) *batch = b;
  return err;
}

int eddy_oip_output_index(const eddy_served_t *s, const char *name, char *errstr, size_t errstr_size) {
  eddy_oip_meta_t meta[2];
  size_t n = eddy_oip_outputs(eddy_served_spec(s), meta);
  for (size_t i = 0; i < n; i++)
    if (name && strcmp(name, meta[i].name) == 0) return (int)i;
  char takes[160];
  describe(meta, n, takes, sizeof takes);
  snprintf(errstr, errstr_size, "output \"%s\" is not an output of the model (it has %s)", name ? name : "", takes);
  return -1;
}

int64_t eddy_oip_label(const eddy_model_spec_t *spec, const float *p) {
  if (spec->head == EDDY_HEAD_LOGISTIC) return p[0] >= 0.5f;
  uint32_t best = 0, k = eddy_model_outputs(spec);
  for (uint32_t c = 1; c < k; c++)
    if (p[c] > p[best]) best = c;
  return best;
}

size_t eddy_oip_output_bytes(const eddy_served_t *s, eddy_oip_output_t o, size_t n) {
  return o == EDDY_OIP_SCORES ? n * eddy_served_outputs(s) * sizeof(float) : n * sizeof(int64_t);
}

void eddy_oip_output_write(const eddy_served_t *s, eddy_oip_output_t o, const float *pred, size_t n, uint8_t *dst) {
  const size_t k = eddy_served_outputs(s);
  if (o == EDDY_OIP_SCORES) {
    memcpy(dst, pred, n * k * sizeof(float));
    return;
  }
  const eddy_model_spec_t *spec = eddy_served_spec(s);
  for (size_t i = 0; i < n; i++) {
    int64_t label = eddy_oip_label(spec, pred + i * k);
    memcpy(dst + i * sizeof label, &label, sizeof label);
  }
}
