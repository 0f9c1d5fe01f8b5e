/* Precision names and the writers of each precision's tensors (see quant.h). Quantization rounds
 * to nearest, ties to even (lrintf in the default rounding mode), as the kernels do. */
#include "model/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const precision_names[EDDY_INFER_PRECISIONS] = {"fp32", "bf16", "fp16", "int8"};
static const int precision_rank[EDDY_INFER_PRECISIONS] = {3, 1, 2, 0};

const char *eddy_infer_precision_name(eddy_infer_precision_t p) {
  return (unsigned)p < EDDY_INFER_PRECISIONS ? precision_names[p] : "?";
}

int eddy_infer_precision_parse(const char *text, eddy_infer_precision_t *p) {
  for (int i = 0; text && i < EDDY_INFER_PRECISIONS; i++)
    if (!strcmp(text, precision_names[i])) {
      if (p) *p = (eddy_infer_precision_t)i;
      return 0;
    }
  return -1;
}

int eddy_infer_precision_rank(eddy_infer_precision_t p) {
  return (unsigned)p < EDDY_INFER_PRECISIONS ? precision_rank[p] : -1;
}

const char *eddy_infer_precision_list(unsigned mask, char *buf, size_t size) {
  size_t at = 0;
  if (size) buf[0] = '\0';
  for (int rank = EDDY_INFER_PRECISIONS - 1; rank >= 0; rank--)
    for (int p = 0; p < EDDY_INFER_PRECISIONS; p++)
      if (precision_rank[p] == rank && (mask & (1u << p)) && at < size)
        at += (size_t)snprintf(buf + at, size - at, "%s%s", at ? "," : "", precision_names[p]);
  return buf;
}

int eddy_infer_precision_parse_list(const char *text, unsigned *mask, char *why, size_t why_size) {
  unsigned got = 0;
  const char *p = text ? text : "";
  for (;;) {
    while (*p == ' ' || *p == '\t') p++;
    const char *start = p;
    while (*p && *p != ',') p++;
    const char *end = p;
    while (end > start && (end[-1] == ' ' || end[-1] == '\t')) end--;
    char name[16];
    size_t len = (size_t)(end - start);
    eddy_infer_precision_t prec;
    if (len == 0 || len >= sizeof name) {
      if (len == 0 && !*p && !got) snprintf(why, why_size, "expected a comma list of fp32, bf16, fp16, int8");
      else if (len == 0) snprintf(why, why_size, "empty entry in the list");
      else snprintf(why, why_size, "\"%.*s\" is not one of fp32, bf16, fp16, int8", (int)(len > 40 ? 40 : len), start);
      return -1;
    }
    memcpy(name, start, len);
    name[len] = '\0';
    if (eddy_infer_precision_parse(name, &prec) != 0) {
      snprintf(why, why_size, "\"%s\" is not one of fp32, bf16, fp16, int8", name);
      return -1;
    }
    if (got & (1u << prec)) {
      snprintf(why, why_size, "%s is listed twice", name);
      return -1;
    }
    got |= 1u << prec;
    if (!*p) break;
    p++;
  }
  *mask = got;
  return 0;
}

/* The layer prefixes ("mlp.0", ..., "head") of spec's geometry. */
static void layer_prefix(const eddy_model_geometry_t *g, uint32_t l, char *out, size_t size) {
  const char *name = g->tensors[g->layer[l].w_tensor].name;
  size_t n = strlen(name);
  const size_t suffix = sizeof ".weight" - 1;
  snprintf(out, size, "%.*s", (int)(n > suffix ? n - suffix : n), name);
}

static eddy_quant_tensor_t tensor(const char *prefix, const char *suffix, eddy_dtype_t dt, uint32_t ndim,
                                  uint64_t d0, uint64_t d1) {
  eddy_quant_tensor_t t;
  memset(&t, 0, sizeof t);
  snprintf(t.name, sizeof t.name, "%.12s%.19s", prefix, suffix); /* "mlp.7" + ".input_zero_point" */
  t.dtype = dt;
  t.ndim = ndim;
  t.shape[0] = d0;
  t.shape[1] = ndim == 2 ? d1 : 0;
  t.numel = (size_t)d0 * (ndim == 2 ? (size_t)d1 : 1);
  return t;
}

size_t eddy_quant_int8_layout(const eddy_model_spec_t *spec, eddy_quant_tensor_t *out) {
  eddy_model_geometry_t g;
  eddy_model_geometry(spec, &g);
  size_t n = 0;
  if (g.emb_dim) {
    out[n++] = tensor("emb", ".weight", EDDY_DT_I8, 2, g.emb_rows, g.emb_dim);
    out[n++] = tensor("emb", ".weight_scale", EDDY_DT_F32, 1, g.emb_dim, 0);
  }
  for (uint32_t l = 0; l < g.n_layers; l++) {
    char p[EDDY_TENSOR_NAME_MAX];
    layer_prefix(&g, l, p, sizeof p);
    out[n++] = tensor(p, ".weight", EDDY_DT_I8, 2, g.layer[l].out, g.layer[l].in);
    out[n++] = tensor(p, ".weight_scale", EDDY_DT_F32, 1, g.layer[l].out, 0);
    out[n++] = tensor(p, ".bias", EDDY_DT_F32, 1, g.layer[l].out, 0);
    out[n++] = tensor(p, ".input_scale", EDDY_DT_F32, 1, 1, 0);
    out[n++] = tensor(p, ".input_zero_point", EDDY_DT_U8, 1, 1, 0);
  }
  return n;
}

void eddy_quant_calib_init(eddy_quant_calib_t *c) {
  memset(c, 0, sizeof *c);
  for (int l = 0; l <= EDDY_MAX_HIDDEN; l++) {
    c->lo[l] = INFINITY;
    c->hi[l] = -INFINITY;
  }
}

void eddy_quant_input_params(float lo, float hi, float *scale, uint8_t *zero) {
  if (!(lo <= hi) || !isfinite(lo) || !isfinite(hi)) lo = hi = 0.0f; /* no events seen */
  if (lo >= 0.0f) {
    *zero = 0;
    *scale = hi > 0.0f ? hi / 255.0f : 1.0f;
    return;
  }
  if (hi < 0.0f) hi = 0.0f;
  float s = (hi - lo) / 255.0f;
  long z = lrintf(-lo / s);
  *scale = s;
  *zero = (uint8_t)(z < 0 ? 0 : z > 255 ? 255 : z);
}

float eddy_quant_weight_scale(const float *w, size_t n, size_t stride) {
  float mx = 0.0f;
  for (size_t i = 0; i < n; i++) {
    float a = fabsf(w[i * stride]);
    if (a > mx) mx = a;
  }
  return mx > 0.0f ? mx / 127.0f : 1.0f;
}

static int8_t quantize_weight(float w, float scale) {
  long q = lrintf(w / scale);
  return (int8_t)(q < -127 ? -127 : q > 127 ? 127 : q);
}

/* Reads tensor ti of weights into dst (numel floats), checking presence and shape. */
static eddy_err_t read_weights(const eddy_st_reader_t *weights, const eddy_tensor_info_t *ti, float *dst,
                               char *errstr, size_t errstr_size) {
  const eddy_st_tensor_t *t = eddy_st_find(weights, ti->name);
  if (!t) return eddy_errf(EDDY_ERR_SHAPE, errstr, errstr_size, "weights: tensor %s is missing", ti->name);
  bool same = t->ndim == ti->ndim;
  for (uint32_t d = 0; same && d < t->ndim; d++) same = t->shape[d] == ti->shape[d];
  if (!same) return eddy_errf(EDDY_ERR_SHAPE, errstr, errstr_size, "weights: tensor %s has another shape", ti->name);
  eddy_err_t err = eddy_st_read_f32(t, dst, ti->numel);
  if (err)
    return eddy_errf(err, errstr, errstr_size, "weights: tensor %s (dtype %s) cannot be read as fp32", ti->name,
                     eddy_dtype_name(t->dtype));
  return EDDY_OK;
}

static eddy_err_t add(eddy_st_writer_t *w, const eddy_quant_tensor_t *t, const void *data, char *errstr,
                      size_t errstr_size) {
  eddy_err_t err = eddy_st_writer_add(w, t->name, t->dtype, t->shape, t->ndim, data);
  if (err) return eddy_errf(err, errstr, errstr_size, "int8 weights: adding %s failed", t->name);
  return EDDY_OK;
}

eddy_err_t eddy_quant_write_float(const eddy_model_spec_t *spec, const eddy_st_reader_t *weights, eddy_dtype_t dtype,
                                  eddy_st_writer_t *w, char *errstr, size_t errstr_size) {
  eddy_tensor_info_t ti[EDDY_MAX_TENSORS];
  size_t nt = eddy_model_layout(spec, ti, NULL), most = 1;
  for (size_t k = 0; k < nt; k++)
    if (ti[k].numel > most) most = ti[k].numel;
  float *buf = malloc(most * sizeof *buf);
  if (!buf) return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory (%zu values)", most);
  eddy_err_t err = EDDY_OK;
  for (size_t k = 0; k < nt && !err; k++) {
    err = read_weights(weights, &ti[k], buf, errstr, errstr_size);
    if (!err && (err = eddy_st_writer_add_f32(w, ti[k].name, dtype, ti[k].shape, ti[k].ndim, buf)))
      eddy_errf(err, errstr, errstr_size, "%s weights: adding %s failed", eddy_dtype_name(dtype), ti[k].name);
  }
  free(buf);
  return err;
}

eddy_err_t eddy_quant_write_int8(const eddy_model_spec_t *spec, const eddy_st_reader_t *weights,
                                 const eddy_quant_calib_t *calib, eddy_st_writer_t *w, char *errstr,
                                 size_t errstr_size) {
  eddy_model_geometry_t g;
  eddy_model_geometry(spec, &g);
  if (!calib->events)
    return eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "int8: no calibration events to set the input scales");
  for (uint32_t l = 0; l < g.n_layers; l++)
    if (g.layer[l].in > EDDY_QUANT_MAX_WIDTH)
      return eddy_errf(EDDY_ERR_UNSUPPORTED, errstr, errstr_size,
                       "int8: layer %u has %u inputs, at most %u fit an int32 sum", l, g.layer[l].in,
                       EDDY_QUANT_MAX_WIDTH);
  eddy_quant_tensor_t qt[EDDY_QUANT_MAX_TENSORS];
  eddy_quant_int8_layout(spec, qt);
  size_t most = 1;
  for (size_t k = 0; k < g.n_tensors; k++)
    if (g.tensors[k].numel > most) most = g.tensors[k].numel;
  float *buf = malloc(most * sizeof *buf), *scale = malloc(most * sizeof *scale);
  int8_t *q = malloc(most);
  eddy_err_t err = buf && scale && q ? EDDY_OK : eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
  size_t at = 0; /* next entry of qt */
  if (!err && g.emb_dim) {
    /* One scale per embedding column (the output channels of the lookup). */
    const eddy_tensor_info_t *e = &g.tensors[0];
    err = read_weights(weights, e, buf, errstr, errstr_size);
    for (uint32_t c = 0; !err && c < g.emb_dim; c++) scale[c] = eddy_quant_weight_scale(buf + c, g.emb_rows, g.emb_dim);
    for (size_t i = 0; !err && i < e->numel; i++) q[i] = quantize_weight(buf[i], scale[i % g.emb_dim]);
    if (!err) err = add(w, &qt[at++], q, errstr, errstr_size);
    if (!err) err = add(w, &qt[at++], scale, errstr, errstr_size);
  }
  for (uint32_t l = 0; !err && l < g.n_layers; l++) {
    const uint32_t in = g.layer[l].in, out = g.layer[l].out;
    if ((err = read_weights(weights, &g.tensors[g.layer[l].w_tensor], buf, errstr, errstr_size))) break;
    for (uint32_t o = 0; o < out; o++) {
      scale[o] = eddy_quant_weight_scale(buf + (size_t)o * in, in, 1);
      for (uint32_t i = 0; i < in; i++) q[(size_t)o * in + i] = quantize_weight(buf[(size_t)o * in + i], scale[o]);
    }
    if ((err = add(w, &qt[at++], q, errstr, errstr_size))) break;
    if ((err = add(w, &qt[at++], scale, errstr, errstr_size))) break;
    if ((err = read_weights(weights, &g.tensors[g.layer[l].b_tensor], buf, errstr, errstr_size))) break;
    if ((err = add(w, &qt[at++], buf, errstr, errstr_size))) break;
    float in_scale;
    uint8_t zero;
    eddy_quant_input_params(calib->lo[l], calib->hi[l], &in_scale, &zero);
    if ((err = add(w, &qt[at++], &in_scale, errstr, errstr_size))) break;
    err = add(w, &qt[at++], &zero, errstr, errstr_size);
  }
  free(buf);
  free(scale);
  free(q);
  return err;
}
