/* Forward passes for serving (see infer.h). Each layer is y = x·Wᵀ + b computed as a sum of weight
 * rows scaled by the inputs, over the transposed weight [in, out]: the inner loop is a plain
 * vertical multiply-add over the outputs (vectorised, AVX2 clone on x86-64), zero inputs are
 * skipped (half of a Fashion-MNIST image), and four events share each weight row load. */
#include "model/infer.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define EDDY_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define EDDY_CLONES
#endif

#define BLOCK 4 /* events sharing one pass over a layer's weights */

typedef struct {
  uint32_t in, out;
  void *wt;      /* [in, out]: float, or uint16_t bf16 */
  float *bias;   /* [out] */
} layer_t;

struct eddy_infer {
  eddy_model_spec_t spec;
  eddy_infer_precision_t precision;
  uint32_t n_layers, outputs, emb_dim, dense_dim, in0, max_width;
  size_t emb_rows;
  void *emb;     /* [emb_rows, emb_dim]: float or bf16, as the layers */
  layer_t layers[EDDY_MAX_HIDDEN + 1];
  size_t bytes;
};

static inline float bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

static eddy_err_t fail(eddy_err_t code, char *errstr, size_t errstr_size, const char *fmt, const char *name,
                       const char *detail) {
  return eddy_errf(code, errstr, errstr_size, fmt, name, detail);
}

/* Reads tensor name of numel floats into dst, checking shape and finiteness. */
static eddy_err_t read_tensor(const eddy_st_reader_t *r, const eddy_tensor_info_t *ti, float *dst,
                              char *errstr, size_t errstr_size) {
  const eddy_st_tensor_t *t = eddy_st_find(r, ti->name);
  if (!t) return fail(EDDY_ERR_SHAPE, errstr, errstr_size, "weights: tensor %s%s is missing", ti->name, "");
  int same = t->ndim == ti->ndim;
  for (uint32_t d = 0; same && d < t->ndim; d++) same = t->shape[d] == ti->shape[d];
  if (!same) {
    char got[96] = "", want[64];
    size_t o = 0;
    for (uint32_t d = 0; d < t->ndim && o < sizeof got; d++)
      o += (size_t)snprintf(got + o, sizeof got - o, "%s%llu", d ? ", " : "", (unsigned long long)t->shape[d]);
    if (ti->ndim == 2)
      snprintf(want, sizeof want, "[%llu, %llu]", (unsigned long long)ti->shape[0],
               (unsigned long long)ti->shape[1]);
    else
      snprintf(want, sizeof want, "[%llu]", (unsigned long long)ti->shape[0]);
    return eddy_errf(EDDY_ERR_SHAPE, errstr, errstr_size, "weights: tensor %s has shape [%s], the spec says %s",
                     ti->name, got, want);
  }
  if (t->dtype != EDDY_DT_F32 && t->dtype != EDDY_DT_F16 && t->dtype != EDDY_DT_BF16)
    return eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "weights: tensor %s has dtype %s (F32, F16 or BF16 expected)",
                     ti->name, eddy_dtype_name(t->dtype));
  eddy_err_t err = eddy_st_read_f32(t, dst, ti->numel);
  if (err) return eddy_errf(err, errstr, errstr_size, "weights: tensor %s cannot be read", ti->name);
  for (size_t i = 0; i < ti->numel; i++)
    if (!isfinite(dst[i]))
      return eddy_errf(EDDY_ERR_NONFINITE, errstr, errstr_size, "weights: tensor %s[%zu] is %s", ti->name, i,
                       isnan(dst[i]) ? "NaN" : "Inf");
  return EDDY_OK;
}

/* Stores n floats as the model's precision into dst (float or bf16). */
static void store_row(const eddy_infer_t *m, void *dst, size_t at, const float *src, size_t n) {
  if (m->precision == EDDY_INFER_BF16) {
    uint16_t *d = (uint16_t *)dst + at;
    for (size_t i = 0; i < n; i++) d[i] = eddy_f32_to_bf16(src[i]);
  } else {
    memcpy((float *)dst + at, src, n * sizeof(float));
  }
}

eddy_infer_t *eddy_infer_new(const eddy_model_spec_t *spec, const eddy_st_reader_t *weights,
                             eddy_infer_precision_t precision, char *errstr, size_t errstr_size) {
  if (!spec || !weights) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "inference model: a spec and a weights file are required");
    return NULL;
  }
  if (eddy_model_spec_validate(spec, errstr, errstr_size) != EDDY_OK) return NULL;
  eddy_model_geometry_t geo;
  eddy_model_geometry(spec, &geo);
  const eddy_tensor_info_t *ti = geo.tensors;
  const size_t nt = geo.n_tensors;
  if (eddy_st_count(weights) != nt) {
    for (size_t i = 0; i < eddy_st_count(weights); i++) {
      const char *name = eddy_st_at(weights, i)->name;
      int known = 0;
      for (size_t k = 0; k < nt && !known; k++) known = strcmp(ti[k].name, name) == 0;
      if (!known) {
        eddy_errf(EDDY_ERR_SHAPE, errstr, errstr_size, "weights: tensor %s is not part of the spec", name);
        return NULL;
      }
    }
    eddy_errf(EDDY_ERR_SHAPE, errstr, errstr_size, "weights: %zu tensors, the spec has %zu", eddy_st_count(weights), nt);
    return NULL;
  }
  eddy_infer_t *m = calloc(1, sizeof *m);
  if (!m) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
    return NULL;
  }
  m->spec = *spec;
  m->precision = precision;
  m->outputs = geo.outputs;
  m->emb_dim = geo.emb_dim;
  m->dense_dim = geo.dense_dim;
  m->in0 = geo.in0;
  m->emb_rows = geo.emb_rows;
  m->n_layers = geo.n_layers;
  m->max_width = geo.max_width;
  const size_t esize = precision == EDDY_INFER_BF16 ? sizeof(uint16_t) : sizeof(float);
  size_t max_numel = 0;
  for (size_t k = geo.emb_dim ? 1 : 0; k < nt; k++) /* every tensor but emb.weight (tensor 0) */
    if (ti[k].numel > max_numel) max_numel = ti[k].numel;
  float *tmp = malloc((max_numel ? max_numel : 1) * sizeof(float));
  eddy_err_t err = tmp ? EDDY_OK : EDDY_ERR_NOMEM;
  if (!tmp) eddy_errf(err, errstr, errstr_size, "out of memory");
  if (!err && m->emb_dim) {
    /* The embedding is read row by row so a big table needs no second fp32 copy. */
    const eddy_tensor_info_t *e = &ti[0];
    m->emb = malloc(e->numel * esize);
    float *row = malloc(m->emb_dim * sizeof(float));
    const eddy_st_tensor_t *st = eddy_st_find(weights, e->name);
    if (!m->emb || !row) {
      err = eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory for %s (%zu values)", e->name, e->numel);
    } else if (!st || st->ndim != 2 || st->shape[0] != e->shape[0] || st->shape[1] != e->shape[1]) {
      err = read_tensor(weights, e, NULL, errstr, errstr_size); /* names the problem */
    } else if (st->dtype != EDDY_DT_F32 && st->dtype != EDDY_DT_F16 && st->dtype != EDDY_DT_BF16) {
      err = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "weights: tensor %s has dtype %s (F32, F16 or BF16 expected)",
                      e->name, eddy_dtype_name(st->dtype));
    } else {
      const size_t rb = m->emb_dim * eddy_dtype_size(st->dtype);
      for (size_t r = 0; r < m->emb_rows && !err; r++) {
        eddy_st_tensor_t one = *st;
        one.ndim = 1;
        one.shape[0] = m->emb_dim;
        one.data = st->data + r * rb;
        one.nbytes = rb;
        err = eddy_st_read_f32(&one, row, m->emb_dim);
        for (uint32_t c = 0; !err && c < m->emb_dim; c++)
          if (!isfinite(row[c]))
            err = eddy_errf(EDDY_ERR_NONFINITE, errstr, errstr_size, "weights: tensor emb.weight[%zu, %u] is %s", r,
                            c, isnan(row[c]) ? "NaN" : "Inf");
        if (!err) store_row(m, m->emb, r * m->emb_dim, row, m->emb_dim);
      }
      m->bytes += e->numel * esize;
    }
    free(row);
  }
  for (uint32_t i = 0; !err && i < m->n_layers; i++) {
    const eddy_tensor_info_t *w = &ti[geo.layer[i].w_tensor], *b = &ti[geo.layer[i].b_tensor];
    layer_t *ly = &m->layers[i];
    ly->out = geo.layer[i].out;
    ly->in = geo.layer[i].in;
    ly->wt = malloc(w->numel * esize);
    ly->bias = malloc(b->numel * sizeof(float));
    if (!ly->wt || !ly->bias) {
      err = eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory for %s", w->name);
      break;
    }
    if ((err = read_tensor(weights, b, ly->bias, errstr, errstr_size))) break;
    if ((err = read_tensor(weights, w, tmp, errstr, errstr_size))) break;
    /* tmp is [out, in] (torch.nn.Linear); the model keeps [in, out]. */
    float *col = malloc(ly->out * sizeof(float));
    if (!col) {
      err = eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
      break;
    }
    for (uint32_t r = 0; r < ly->in; r++) {
      for (uint32_t o = 0; o < ly->out; o++) col[o] = tmp[(size_t)o * ly->in + r];
      store_row(m, ly->wt, (size_t)r * ly->out, col, ly->out);
    }
    free(col);
    m->bytes += w->numel * esize + b->numel * sizeof(float);
  }
  free(tmp);
  if (err) {
    eddy_infer_destroy(m);
    return NULL;
  }
  return m;
}

void eddy_infer_destroy(eddy_infer_t *m) {
  if (!m) return;
  free(m->emb);
  for (uint32_t i = 0; i < m->n_layers; i++) {
    free(m->layers[i].wt);
    free(m->layers[i].bias);
  }
  free(m);
}

const eddy_model_spec_t *eddy_infer_spec(const eddy_infer_t *m) { return &m->spec; }
size_t eddy_infer_bytes(const eddy_infer_t *m) { return m ? m->bytes : 0; }

size_t eddy_infer_scratch_floats(const eddy_infer_t *m, size_t n) {
  (void)n; /* events go through in blocks of BLOCK: scratch does not grow with the batch */
  return 2 * (size_t)BLOCK * m->max_width + BLOCK * 16;
}

/* y[r][0..out) = bias + sum_i x[r][i] · wt[i][0..out) for r < nr (nr <= BLOCK). */
EDDY_CLONES
static void layer_f32(const layer_t *ly, const float *x, size_t xs, float *y, size_t ys, int nr) {
  const uint32_t in = ly->in, out = ly->out;
  for (int r = 0; r < nr; r++) memcpy(y + (size_t)r * ys, ly->bias, out * sizeof(float));
  const float *wt = ly->wt;
  if (nr == BLOCK) {
    float *restrict y0 = y, *restrict y1 = y + ys, *restrict y2 = y + 2 * ys, *restrict y3 = y + 3 * ys;
    for (uint32_t i = 0; i < in; i++) {
      const float a0 = x[i], a1 = x[xs + i], a2 = x[2 * xs + i], a3 = x[3 * xs + i];
      if (a0 == 0.0f && a1 == 0.0f && a2 == 0.0f && a3 == 0.0f) continue;
      const float *restrict w = wt + (size_t)i * out;
#pragma omp simd
      for (uint32_t o = 0; o < out; o++) {
        const float v = w[o];
        y0[o] += a0 * v;
        y1[o] += a1 * v;
        y2[o] += a2 * v;
        y3[o] += a3 * v;
      }
    }
    return;
  }
  for (int r = 0; r < nr; r++) {
    float *restrict yr = y + (size_t)r * ys;
    const float *xr = x + (size_t)r * xs;
    for (uint32_t i = 0; i < in; i++) {
      const float a = xr[i];
      if (a == 0.0f) continue;
      const float *restrict w = wt + (size_t)i * out;
#pragma omp simd
      for (uint32_t o = 0; o < out; o++) yr[o] += a * w[o];
    }
  }
}

EDDY_CLONES
static void layer_bf16(const layer_t *ly, const float *x, size_t xs, float *y, size_t ys, int nr) {
  const uint32_t in = ly->in, out = ly->out;
  for (int r = 0; r < nr; r++) memcpy(y + (size_t)r * ys, ly->bias, out * sizeof(float));
  const uint16_t *wt = ly->wt;
  for (int r0 = 0; r0 < nr; r0 += 2) {
    const int two = r0 + 1 < nr;
    float *restrict ya = y + (size_t)r0 * ys, *restrict yb = y + (size_t)(r0 + two) * ys;
    const float *xa = x + (size_t)r0 * xs, *xb = x + (size_t)(r0 + two) * xs;
    for (uint32_t i = 0; i < in; i++) {
      const float a = xa[i], b = two ? xb[i] : 0.0f;
      if (a == 0.0f && b == 0.0f) continue;
      const uint16_t *restrict w = wt + (size_t)i * out;
#pragma omp simd
      for (uint32_t o = 0; o < out; o++) {
        const float v = bf16_to_f32(w[o]);
        ya[o] += a * v;
        if (two) yb[o] += b * v;
      }
    }
  }
}

static void head(const eddy_infer_t *m, const float *z, float *p) {
  const uint32_t k = m->outputs;
  switch (m->spec.head) {
    case EDDY_HEAD_SOFTMAX: {
      float mx = z[0];
      for (uint32_t c = 1; c < k; c++)
        if (z[c] > mx) mx = z[c];
      double sum = 0;
      for (uint32_t c = 0; c < k; c++) sum += exp((double)z[c] - mx);
      for (uint32_t c = 0; c < k; c++) p[c] = (float)(exp((double)z[c] - mx) / sum);
      break;
    }
    case EDDY_HEAD_LOGISTIC:
      p[0] = (float)(1.0 / (1.0 + exp(-(double)z[0])));
      break;
    default:
      p[0] = z[0];
  }
}

eddy_err_t eddy_infer_predict(const eddy_infer_t *m, const eddy_batch_t *b, float *scratch,
                              float *pred, char *errstr, size_t errstr_size) {
  if (!m || !b || !scratch || !pred)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "predict: model, batch, scratch and pred are required");
  if (b->dense_dim != m->dense_dim)
    return eddy_errf(EDDY_ERR_SHAPE, errstr, errstr_size, "batch has %u dense features, the model %u", b->dense_dim,
                     m->dense_dim);
  for (size_t j = b->sparse_off[0]; j < b->sparse_off[b->n]; j++)
    if (b->sparse_idx[j] >= m->emb_rows)
      return eddy_errf(EDDY_ERR_SHAPE, errstr, errstr_size, "sparse index %u is outside the model's %zu buckets",
                       b->sparse_idx[j], m->emb_rows);
  const size_t W = m->max_width;
  float *bufA = scratch, *bufB = scratch + (size_t)BLOCK * W;
  for (size_t i0 = 0; i0 < b->n; i0 += BLOCK) {
    const int nr = (int)(b->n - i0 < BLOCK ? b->n - i0 : BLOCK);
    /* Input rows: [embedding-bag sum | dense]. */
    for (int r = 0; r < nr; r++) {
      const size_t i = i0 + (size_t)r;
      float *x = bufA + (size_t)r * W;
      if (m->emb_dim) {
        memset(x, 0, m->emb_dim * sizeof(float));
        for (size_t j = b->sparse_off[i]; j < b->sparse_off[i + 1]; j++) {
          const float v = b->sparse_val[j];
          const size_t at = (size_t)b->sparse_idx[j] * m->emb_dim;
          if (m->precision == EDDY_INFER_BF16) {
            const uint16_t *row = (const uint16_t *)m->emb + at;
            for (uint32_t c = 0; c < m->emb_dim; c++) x[c] += v * bf16_to_f32(row[c]);
          } else {
            const float *row = (const float *)m->emb + at;
            for (uint32_t c = 0; c < m->emb_dim; c++) x[c] += v * row[c];
          }
        }
      }
      if (m->dense_dim) memcpy(x + m->emb_dim, b->dense + i * m->dense_dim, m->dense_dim * sizeof(float));
    }
    float *x = bufA, *y = bufB;
    for (uint32_t l = 0; l < m->n_layers; l++) {
      const layer_t *ly = &m->layers[l];
      if (m->precision == EDDY_INFER_BF16)
        layer_bf16(ly, x, W, y, W, nr);
      else
        layer_f32(ly, x, W, y, W, nr);
      if (l + 1 < m->n_layers)
        for (int r = 0; r < nr; r++) {
          float *yr = y + (size_t)r * W;
          for (uint32_t o = 0; o < ly->out; o++) yr[o] = yr[o] > 0.0f ? yr[o] : 0.0f;
        }
      float *t = x;
      x = y;
      y = t;
    }
    for (int r = 0; r < nr; r++) head(m, x + (size_t)r * W, pred + (i0 + (size_t)r) * m->outputs);
  }
  return EDDY_OK;
}
