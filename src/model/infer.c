/* Forward passes for serving (see infer.h). fp32, bf16, fp16: each layer is y = x·Wᵀ + b computed
 * as a sum of weight rows scaled by the inputs, over the transposed weight [in, out]: the inner
 * loop is a plain vertical multiply-add over the outputs (vectorised: an AVX2 clone on x86-64,
 * F16C conversions for fp16), zero inputs are skipped (half of a Fashion-MNIST image), and four
 * events share each weight row load. int8: each layer's input is quantized to u8 with the layer's
 * calibrated scale and zero point, multiplied with the s8 weights in int32 by an int8 kernel
 * (qgemm.h), then rescaled, biased, passed through the ReLU and quantized again for the next
 * layer; the head's sums become fp32 logits. The formulas are those of snapshots/README.md. */
#include "model/infer.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/qgemm.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define EDDY_INFER_X86 1
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define EDDY_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define EDDY_CLONES
#endif

#define BLOCK 4 /* events sharing one pass over a layer's weights (EDDY_QK_ROWS for int8) */
#define QALIGN 64 /* bytes: u8 activation rows start on cache lines */

typedef struct {
  uint32_t in, out;
  void *wt;      /* [in, out]: float, or uint16_t bf16 / fp16 bits */
  float *bias;   /* [out] */
} layer_t;

typedef struct {
  uint32_t in, out, kin, kout; /* kin, kout: padded for the kernel */
  int8_t *wq;                  /* packed for the kernel (eddy_qkernel_pack) */
  float *mul;                  /* [kout]: input_scale × weight_scale[o] */
  int32_t *comp;               /* [kout]: input_zero_point × sum_i w[o][i] */
  float *bias;                 /* [kout] */
  float in_scale, in_inv;      /* in_inv = 1 / in_scale, in fp32 */
  uint8_t in_zero;
} qlayer_t;

typedef enum { FK_CLONES = 0, FK_F16C, FK_SCALAR } float_kernel_t;

struct eddy_infer {
  eddy_model_spec_t spec;
  eddy_infer_precision_t precision;
  uint32_t n_layers, outputs, emb_dim, dense_dim, in0, max_width;
  size_t emb_rows;
  void *emb;        /* [emb_rows, emb_dim]: float, bf16, fp16 or int8, as the layers */
  float *emb_scale; /* int8: [emb_dim] */
  layer_t layers[EDDY_MAX_HIDDEN + 1];
  qlayer_t qlayers[EDDY_MAX_HIDDEN + 1];
  eddy_qkernel_t qk;
  float_kernel_t fk;
  uint32_t max_kin, max_kout; /* int8 */
  char kernel[24];
  size_t bytes;
};

static inline float bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

static uint32_t round_up(uint32_t n, uint32_t to) { return (n + to - 1) / to * to; }

/* ---- kernels on offer ---- */

static bool clones_v3(void) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("x86-64-v3");
#else
  return false;
#endif
}

static bool has_f16c(void) {
#ifdef EDDY_INFER_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

size_t eddy_infer_kernels(eddy_infer_precision_t precision, const char **names, size_t max) {
  const char *list[EDDY_QK_COUNT];
  size_t n = 0;
  if (precision == EDDY_INFER_INT8) {
    for (int k = EDDY_QK_COUNT - 1; k >= 0; k--)
      if (eddy_qkernel_available((eddy_qkernel_t)k)) list[n++] = eddy_qkernel_name((eddy_qkernel_t)k);
  } else if (precision == EDDY_INFER_F16) {
    if (has_f16c()) list[n++] = "f16c";
    list[n++] = "scalar";
  } else {
    list[n++] = clones_v3() ? "x86-64-v3" : "generic";
  }
  for (size_t i = 0; i < n && i < max; i++) names[i] = list[i];
  return n < max ? n : max;
}

/* ---- loading ---- */

static eddy_err_t fail(eddy_err_t code, char *errstr, size_t errstr_size, const char *fmt, const char *name,
                       const char *detail) {
  return eddy_errf(code, errstr, errstr_size, fmt, name, detail);
}

static void shape_text(const uint64_t *shape, uint32_t ndim, char *out, size_t size) {
  size_t o = (size_t)snprintf(out, size, "[");
  for (uint32_t d = 0; d < ndim && o < size; d++)
    o += (size_t)snprintf(out + o, size - o, "%s%llu", d ? ", " : "", (unsigned long long)shape[d]);
  if (o < size) snprintf(out + o, size - o, "]");
}

/* Reads tensor name of numel floats into dst, checking shape and finiteness. */
static eddy_err_t read_tensor(const eddy_st_reader_t *r, const eddy_tensor_info_t *ti, float *dst,
                              char *errstr, size_t errstr_size) {
  const eddy_st_tensor_t *t = eddy_st_find(r, ti->name);
  if (!t) return fail(EDDY_ERR_SHAPE, errstr, errstr_size, "weights: tensor %s%s is missing", ti->name, "");
  int same = t->ndim == ti->ndim;
  for (uint32_t d = 0; same && d < t->ndim; d++) same = t->shape[d] == ti->shape[d];
  if (!same) {
    char got[96], want[64];
    shape_text(t->shape, t->ndim, got, sizeof got);
    shape_text(ti->shape, ti->ndim, want, sizeof want);
    return eddy_errf(EDDY_ERR_SHAPE, errstr, errstr_size, "weights: tensor %s has shape %s, the spec says %s",
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

/* Stores n floats as the model's precision into dst (float, bf16 or fp16). */
static void store_row(const eddy_infer_t *m, void *dst, size_t at, const float *src, size_t n) {
  if (m->precision == EDDY_INFER_BF16) {
    uint16_t *d = (uint16_t *)dst + at;
    for (size_t i = 0; i < n; i++) d[i] = eddy_f32_to_bf16(src[i]);
  } else if (m->precision == EDDY_INFER_F16) {
    uint16_t *d = (uint16_t *)dst + at;
    for (size_t i = 0; i < n; i++) d[i] = eddy_f32_to_f16(src[i]);
  } else {
    memcpy((float *)dst + at, src, n * sizeof(float));
  }
}

/* Every tensor of the file must be one of the names expected[0..n). */
static eddy_err_t check_names(const eddy_st_reader_t *weights, const char *const *expected, size_t n, char *errstr,
                              size_t errstr_size) {
  if (eddy_st_count(weights) == n) return EDDY_OK;
  for (size_t i = 0; i < eddy_st_count(weights); i++) {
    const char *name = eddy_st_at(weights, i)->name;
    int known = 0;
    for (size_t k = 0; k < n && !known; k++) known = strcmp(expected[k], name) == 0;
    if (!known) return eddy_errf(EDDY_ERR_SHAPE, errstr, errstr_size, "weights: tensor %s is not part of the spec", name);
  }
  return eddy_errf(EDDY_ERR_SHAPE, errstr, errstr_size, "weights: %zu tensors, the spec has %zu", eddy_st_count(weights),
                   n);
}

static eddy_err_t load_float(eddy_infer_t *m, const eddy_model_geometry_t *geo, const eddy_st_reader_t *weights,
                             char *errstr, size_t errstr_size) {
  const eddy_tensor_info_t *ti = geo->tensors;
  const size_t nt = geo->n_tensors;
  const size_t esize = m->precision == EDDY_INFER_F32 ? sizeof(float) : sizeof(uint16_t);
  size_t max_numel = 0;
  for (size_t k = geo->emb_dim ? 1 : 0; k < nt; k++) /* every tensor but emb.weight (tensor 0) */
    if (ti[k].numel > max_numel) max_numel = ti[k].numel;
  float *tmp = malloc((max_numel ? max_numel : 1) * sizeof(float));
  eddy_err_t err = tmp ? EDDY_OK : eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
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
    const eddy_tensor_info_t *w = &ti[geo->layer[i].w_tensor], *b = &ti[geo->layer[i].b_tensor];
    layer_t *ly = &m->layers[i];
    ly->out = geo->layer[i].out;
    ly->in = geo->layer[i].in;
    ly->wt = malloc(w->numel * esize);
    ly->bias = malloc(b->numel * sizeof(float));
    float *col = malloc(ly->out * sizeof(float));
    if (!ly->wt || !ly->bias || !col) err = eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory for %s", w->name);
    if (!err) err = read_tensor(weights, b, ly->bias, errstr, errstr_size);
    if (!err) err = read_tensor(weights, w, tmp, errstr, errstr_size);
    /* tmp is [out, in] (torch.nn.Linear); the model keeps [in, out]. */
    for (uint32_t r = 0; !err && r < ly->in; r++) {
      for (uint32_t o = 0; o < ly->out; o++) col[o] = tmp[(size_t)o * ly->in + r];
      store_row(m, ly->wt, (size_t)r * ly->out, col, ly->out);
    }
    free(col);
    m->bytes += w->numel * esize + b->numel * sizeof(float);
  }
  free(tmp);
  return err;
}

/* The int8 file's tensor name, checked against its entry of the layout. */
static const eddy_st_tensor_t *qtensor(const eddy_st_reader_t *weights, const eddy_quant_tensor_t *want,
                                       eddy_err_t *err, char *errstr, size_t errstr_size) {
  const eddy_st_tensor_t *t = eddy_st_find(weights, want->name);
  char got[96], exp[64];
  if (!t) {
    *err = fail(EDDY_ERR_SHAPE, errstr, errstr_size, "int8 weights: tensor %s%s is missing", want->name, "");
    return NULL;
  }
  shape_text(t->shape, t->ndim, got, sizeof got);
  shape_text(want->shape, want->ndim, exp, sizeof exp);
  if (strcmp(got, exp) != 0) {
    *err = eddy_errf(EDDY_ERR_SHAPE, errstr, errstr_size, "int8 weights: tensor %s has shape %s, the spec says %s",
                     want->name, got, exp);
    return NULL;
  }
  if (t->dtype != want->dtype) {
    *err = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "int8 weights: tensor %s has dtype %s (%s expected)",
                     want->name, eddy_dtype_name(t->dtype), eddy_dtype_name(want->dtype));
    return NULL;
  }
  return t;
}

/* An F32 tensor of positive finite scales (or any finite values: positive false) into dst. */
static eddy_err_t read_scales(const eddy_st_tensor_t *t, float *dst, size_t n, bool positive, char *errstr,
                              size_t errstr_size) {
  eddy_err_t err = eddy_st_read_f32(t, dst, n);
  if (err) return eddy_errf(err, errstr, errstr_size, "int8 weights: tensor %s cannot be read", t->name);
  for (size_t i = 0; i < n; i++)
    if (!isfinite(dst[i]) || (positive && !(dst[i] > 0.0f)))
      return eddy_errf(positive && isfinite(dst[i]) ? EDDY_ERR_FORMAT : EDDY_ERR_NONFINITE, errstr, errstr_size,
                       "int8 weights: tensor %s[%zu] is %g (%s expected)", t->name, i, (double)dst[i],
                       positive ? "a finite value > 0" : "a finite value");
  return EDDY_OK;
}

static eddy_err_t load_int8(eddy_infer_t *m, const eddy_model_geometry_t *geo, const eddy_st_reader_t *weights,
                            char *errstr, size_t errstr_size) {
  eddy_quant_tensor_t qt[EDDY_QUANT_MAX_TENSORS];
  const char *names[EDDY_QUANT_MAX_TENSORS];
  size_t nq = eddy_quant_int8_layout(&m->spec, qt);
  for (size_t k = 0; k < nq; k++) names[k] = qt[k].name;
  eddy_err_t err = check_names(weights, names, nq, errstr, errstr_size);
  const eddy_st_tensor_t *t[EDDY_QUANT_MAX_TENSORS] = {0};
  for (size_t k = 0; k < nq && !err; k++) t[k] = qtensor(weights, &qt[k], &err, errstr, errstr_size);
  if (err) return err;
  for (uint32_t l = 0; l < geo->n_layers; l++)
    if (geo->layer[l].in > EDDY_QUANT_MAX_WIDTH)
      return eddy_errf(EDDY_ERR_UNSUPPORTED, errstr, errstr_size, "int8: layer %u has %u inputs, at most %u", l,
                       geo->layer[l].in, EDDY_QUANT_MAX_WIDTH);
  size_t at = 0;
  if (m->emb_dim) {
    const size_t numel = qt[0].numel;
    m->emb = malloc(numel);
    m->emb_scale = malloc(m->emb_dim * sizeof(float));
    if (!m->emb || !m->emb_scale) return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory for emb.weight");
    memcpy(m->emb, t[0]->data, numel);
    if ((err = read_scales(t[1], m->emb_scale, m->emb_dim, true, errstr, errstr_size))) return err;
    m->bytes += numel + m->emb_dim * sizeof(float);
    at = 2;
  }
  const uint32_t grp = eddy_qkernel_group(m->qk);
  m->max_kin = round_up(m->in0, grp);
  for (uint32_t l = 0; l < m->n_layers; l++, at += 5) {
    qlayer_t *ly = &m->qlayers[l];
    ly->in = geo->layer[l].in;
    ly->out = geo->layer[l].out;
    ly->kin = round_up(ly->in, grp);
    ly->kout = round_up(ly->out, EDDY_QK_OUT_ALIGN);
    if (ly->kin > m->max_kin) m->max_kin = ly->kin;
    if (ly->kout > m->max_kout) m->max_kout = ly->kout;
    if (round_up(ly->out, grp) > m->max_kin) m->max_kin = round_up(ly->out, grp);
    ly->wq = malloc(eddy_qkernel_packed_bytes(m->qk, ly->in, ly->out));
    ly->mul = calloc(ly->kout, sizeof(float));
    ly->comp = calloc(ly->kout, sizeof(int32_t));
    ly->bias = calloc(ly->kout, sizeof(float));
    float *wscale = malloc(ly->out * sizeof(float));
    float in[1];
    if (!ly->wq || !ly->mul || !ly->comp || !ly->bias || !wscale)
      err = eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory for %s", qt[at].name);
    if (!err) err = read_scales(t[at + 1], wscale, ly->out, true, errstr, errstr_size);
    if (!err) err = read_scales(t[at + 2], ly->bias, ly->out, false, errstr, errstr_size);
    if (!err) err = read_scales(t[at + 3], in, 1, true, errstr, errstr_size);
    if (!err) {
      const int8_t *w = (const int8_t *)t[at]->data;
      ly->in_scale = in[0];
      ly->in_inv = 1.0f / in[0];
      ly->in_zero = t[at + 4]->data[0];
      eddy_qkernel_pack(m->qk, w, ly->in, ly->out, ly->wq);
      for (uint32_t o = 0; o < ly->out; o++) {
        int32_t sum = 0;
        for (uint32_t i = 0; i < ly->in; i++) sum += w[(size_t)o * ly->in + i];
        ly->comp[o] = (int32_t)ly->in_zero * sum;
        ly->mul[o] = ly->in_scale * wscale[o];
      }
      m->bytes += eddy_qkernel_packed_bytes(m->qk, ly->in, ly->out) + 2 * ly->out * sizeof(float) +
                  ly->out * sizeof(int32_t);
    }
    free(wscale);
    if (err) return err;
  }
  return EDDY_OK;
}

eddy_infer_t *eddy_infer_new_kernel(const eddy_model_spec_t *spec, const eddy_st_reader_t *weights,
                                    eddy_infer_precision_t precision, const char *kernel, char *errstr,
                                    size_t errstr_size) {
  if (!spec || !weights || (unsigned)precision >= EDDY_INFER_PRECISIONS) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
              "inference model: a spec, a weights file and a known precision are required");
    return NULL;
  }
  if (eddy_model_spec_validate(spec, errstr, errstr_size) != EDDY_OK) return NULL;
  const char *avail[EDDY_QK_COUNT];
  size_t na = eddy_infer_kernels(precision, avail, EDDY_QK_COUNT), pick = 0;
  if (kernel) {
    while (pick < na && strcmp(avail[pick], kernel) != 0) pick++;
    if (pick == na) {
      char list[96] = "";
      for (size_t i = 0, o = 0; i < na && o < sizeof list; i++)
        o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", i ? ", " : "", avail[i]);
      eddy_errf(EDDY_ERR_UNSUPPORTED, errstr, errstr_size, "%s kernel \"%s\" does not run on this CPU (it runs %s)",
                eddy_infer_precision_name(precision), kernel, list);
      return NULL;
    }
  }
  eddy_model_geometry_t geo;
  eddy_model_geometry(spec, &geo);
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
  snprintf(m->kernel, sizeof m->kernel, "%s", avail[pick]);
  m->fk = precision == EDDY_INFER_F16 && !strcmp(avail[pick], "f16c") ? FK_F16C
          : precision == EDDY_INFER_F16                               ? FK_SCALAR
                                                                      : FK_CLONES;
  if (precision == EDDY_INFER_INT8) eddy_qkernel_parse(avail[pick], &m->qk);
  eddy_err_t err;
  if (precision == EDDY_INFER_INT8) {
    err = load_int8(m, &geo, weights, errstr, errstr_size);
  } else {
    const char *names[EDDY_MAX_TENSORS];
    for (size_t k = 0; k < geo.n_tensors; k++) names[k] = geo.tensors[k].name;
    err = check_names(weights, names, geo.n_tensors, errstr, errstr_size);
    if (!err) err = load_float(m, &geo, weights, errstr, errstr_size);
  }
  if (err) {
    eddy_infer_destroy(m);
    return NULL;
  }
  return m;
}

eddy_infer_t *eddy_infer_new(const eddy_model_spec_t *spec, const eddy_st_reader_t *weights,
                             eddy_infer_precision_t precision, char *errstr, size_t errstr_size) {
  return eddy_infer_new_kernel(spec, weights, precision, NULL, errstr, errstr_size);
}

void eddy_infer_destroy(eddy_infer_t *m) {
  if (!m) return;
  free(m->emb);
  free(m->emb_scale);
  for (uint32_t i = 0; i < m->n_layers; i++) {
    free(m->layers[i].wt);
    free(m->layers[i].bias);
    free(m->qlayers[i].wq);
    free(m->qlayers[i].mul);
    free(m->qlayers[i].comp);
    free(m->qlayers[i].bias);
  }
  free(m);
}

const eddy_model_spec_t *eddy_infer_spec(const eddy_infer_t *m) { return &m->spec; }
eddy_infer_precision_t eddy_infer_precision(const eddy_infer_t *m) { return m->precision; }
const char *eddy_infer_kernel(const eddy_infer_t *m) { return m->kernel; }
size_t eddy_infer_bytes(const eddy_infer_t *m) { return m ? m->bytes : 0; }

/* int8 scratch, after the BLOCK × max_width floats every precision uses: two u8 activation blocks,
 * the int32 sums and the kernel's group list. */
static size_t qa_stride(const eddy_infer_t *m) { return round_up(m->max_kin, QALIGN); }

size_t eddy_infer_scratch_floats(const eddy_infer_t *m, size_t n) {
  (void)n; /* events go through in blocks of BLOCK: scratch does not grow with the batch */
  size_t floats = 2 * (size_t)BLOCK * m->max_width + BLOCK * 16;
  if (m->precision == EDDY_INFER_INT8)
    floats += (2 * BLOCK * qa_stride(m) + QALIGN) / sizeof(float) + (size_t)BLOCK * m->max_kout + m->max_kin;
  return floats;
}

/* ---- float forward pass ---- */

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

static void layer_f16_scalar(const layer_t *ly, const float *x, size_t xs, float *y, size_t ys, int nr) {
  const uint32_t in = ly->in, out = ly->out;
  for (int r = 0; r < nr; r++) memcpy(y + (size_t)r * ys, ly->bias, out * sizeof(float));
  const uint16_t *wt = ly->wt;
  for (int r = 0; r < nr; r++) {
    float *yr = y + (size_t)r * ys;
    const float *xr = x + (size_t)r * xs;
    for (uint32_t i = 0; i < in; i++) {
      const float a = xr[i];
      if (a == 0.0f) continue;
      const uint16_t *w = wt + (size_t)i * out;
      for (uint32_t o = 0; o < out; o++) yr[o] += a * eddy_f16_to_f32(w[o]);
    }
  }
}

#ifdef EDDY_INFER_X86
#define F16C_TARGET __attribute__((target("avx2,fma,f16c")))

/* NR rows (the compiler unrolls them): each weight row widened 8 at a time by vcvtph2ps (F16C) and
 * multiply-added in fp32 into every row's outputs. */
static inline __attribute__((always_inline)) F16C_TARGET void f16c_rows(const layer_t *ly, const float *x, size_t xs,
                                                                         float *y, size_t ys, const int NR) {
  const uint32_t in = ly->in, out = ly->out, out8 = out & ~7u;
  const uint16_t *wt = ly->wt;
  for (uint32_t i = 0; i < in; i++) {
    float a[BLOCK];
    bool any = false;
    for (int r = 0; r < NR; r++) any |= (a[r] = x[(size_t)r * xs + i]) != 0.0f;
    if (!any) continue;
    __m256 av[BLOCK];
    for (int r = 0; r < NR; r++) av[r] = _mm256_set1_ps(a[r]);
    const uint16_t *w = wt + (size_t)i * out;
    for (uint32_t o = 0; o < out8; o += 8) {
      const __m256 wv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + o)));
      for (int r = 0; r < NR; r++) {
        float *yr = y + (size_t)r * ys + o;
        _mm256_storeu_ps(yr, _mm256_fmadd_ps(av[r], wv, _mm256_loadu_ps(yr)));
      }
    }
    for (uint32_t o = out8; o < out; o++) {
      const float v = _cvtsh_ss(w[o]);
      for (int r = 0; r < NR; r++) y[(size_t)r * ys + o] += a[r] * v;
    }
  }
}

F16C_TARGET static void layer_f16_f16c(const layer_t *ly, const float *x, size_t xs, float *y, size_t ys, int nr) {
  for (int r = 0; r < nr; r++) memcpy(y + (size_t)r * ys, ly->bias, ly->out * sizeof(float));
  switch (nr) {
    case 4: f16c_rows(ly, x, xs, y, ys, 4); break;
    case 3: f16c_rows(ly, x, xs, y, ys, 3); break;
    case 2: f16c_rows(ly, x, xs, y, ys, 2); break;
    default: f16c_rows(ly, x, xs, y, ys, 1); break;
  }
}
#endif

static void layer_float(const eddy_infer_t *m, const layer_t *ly, const float *x, size_t xs, float *y, size_t ys,
                        int nr) {
  if (m->precision == EDDY_INFER_BF16) {
    layer_bf16(ly, x, xs, y, ys, nr);
  } else if (m->precision == EDDY_INFER_F16) {
#ifdef EDDY_INFER_X86
    if (m->fk == FK_F16C) {
      layer_f16_f16c(ly, x, xs, y, ys, nr);
      return;
    }
#endif
    layer_f16_scalar(ly, x, xs, y, ys, nr);
  } else {
    layer_f32(ly, x, xs, y, ys, nr);
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

/* Rows [i0, i0 + nr) of b as MLP inputs [embedding-bag sum | dense] into x (row stride W). */
static void input_rows(const eddy_infer_t *m, const eddy_batch_t *b, size_t i0, int nr, float *x, size_t W) {
  for (int r = 0; r < nr; r++) {
    const size_t i = i0 + (size_t)r;
    float *xr = x + (size_t)r * W;
    if (m->emb_dim) {
      memset(xr, 0, m->emb_dim * sizeof(float));
      for (size_t j = b->sparse_off[i]; j < b->sparse_off[i + 1]; j++) {
        const float v = b->sparse_val[j];
        const size_t at = (size_t)b->sparse_idx[j] * m->emb_dim;
        if (m->precision == EDDY_INFER_BF16) {
          const uint16_t *row = (const uint16_t *)m->emb + at;
          for (uint32_t c = 0; c < m->emb_dim; c++) xr[c] += v * bf16_to_f32(row[c]);
        } else if (m->precision == EDDY_INFER_F16) {
          const uint16_t *row = (const uint16_t *)m->emb + at;
          for (uint32_t c = 0; c < m->emb_dim; c++) xr[c] += v * eddy_f16_to_f32(row[c]);
        } else if (m->precision == EDDY_INFER_INT8) {
          const int8_t *row = (const int8_t *)m->emb + at;
          for (uint32_t c = 0; c < m->emb_dim; c++) xr[c] += v * (float)row[c];
        } else {
          const float *row = (const float *)m->emb + at;
          for (uint32_t c = 0; c < m->emb_dim; c++) xr[c] += v * row[c];
        }
      }
      if (m->precision == EDDY_INFER_INT8)
        for (uint32_t c = 0; c < m->emb_dim; c++) xr[c] *= m->emb_scale[c];
    }
    if (m->dense_dim) memcpy(xr + m->emb_dim, b->dense + i * m->dense_dim, m->dense_dim * sizeof(float));
  }
}

/* Widens calib's range of layer l's input by nr rows of width n. */
static void observe(eddy_quant_calib_t *calib, uint32_t l, const float *x, size_t xs, int nr, uint32_t n) {
  float lo = calib->lo[l], hi = calib->hi[l];
  for (int r = 0; r < nr; r++)
    for (uint32_t i = 0; i < n; i++) {
      const float v = x[(size_t)r * xs + i];
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  calib->lo[l] = lo;
  calib->hi[l] = hi;
}

/* The float forward pass; pred NULL (calibration) skips the head. */
static void forward_float(const eddy_infer_t *m, const eddy_batch_t *b, float *scratch, float *pred,
                          eddy_quant_calib_t *calib) {
  const size_t W = m->max_width;
  float *bufA = scratch, *bufB = scratch + (size_t)BLOCK * W;
  for (size_t i0 = 0; i0 < b->n; i0 += BLOCK) {
    const int nr = (int)(b->n - i0 < BLOCK ? b->n - i0 : BLOCK);
    input_rows(m, b, i0, nr, bufA, W);
    float *x = bufA, *y = bufB;
    for (uint32_t l = 0; l < m->n_layers; l++) {
      const layer_t *ly = &m->layers[l];
      if (calib) observe(calib, l, x, W, nr, ly->in);
      layer_float(m, ly, x, W, y, W, nr);
      if (l + 1 < m->n_layers)
        for (int r = 0; r < nr; r++) {
          float *yr = y + (size_t)r * W;
          for (uint32_t o = 0; o < ly->out; o++) yr[o] = yr[o] > 0.0f ? yr[o] : 0.0f;
        }
      float *t = x;
      x = y;
      y = t;
    }
    if (pred)
      for (int r = 0; r < nr; r++) head(m, x + (size_t)r * W, pred + (i0 + (size_t)r) * m->outputs);
  }
}

/* ---- int8 forward pass ---- */

/* y[o] = (acc[o] - comp[o]) × mul[o] + bias[o], then the ReLU for a hidden layer. */
EDDY_CLONES
static void rescale_row(const qlayer_t *ly, const int32_t *acc, bool relu, float *y) {
  for (uint32_t o = 0; o < ly->out; o++) {
    const float scaled = (float)(acc[o] - ly->comp[o]) * ly->mul[o];
    const float v = scaled + ly->bias[o];
    y[o] = relu && v < 0.0f ? 0.0f : v;
  }
}

static void forward_int8(const eddy_infer_t *m, const eddy_batch_t *b, float *scratch, float *pred) {
  const size_t W = m->max_width, QS = qa_stride(m);
  float *xf = scratch; /* inputs, then each layer's outputs */
  uintptr_t base = (uintptr_t)(scratch + 2 * (size_t)BLOCK * W + BLOCK * 16);
  uint8_t *qa = (uint8_t *)((base + QALIGN - 1) / QALIGN * QALIGN), *qb = qa + BLOCK * QS;
  int32_t *acc = (int32_t *)(qb + BLOCK * QS);
  uint32_t *groups = (uint32_t *)(acc + (size_t)BLOCK * m->max_kout);
  for (size_t i0 = 0; i0 < b->n; i0 += BLOCK) {
    const int nr = (int)(b->n - i0 < BLOCK ? b->n - i0 : BLOCK);
    input_rows(m, b, i0, nr, xf, W);
    const qlayer_t *first = &m->qlayers[0];
    for (int r = 0; r < nr; r++) {
      uint8_t *q = qa + (size_t)r * QS;
      eddy_qkernel_quantize(m->qk, xf + (size_t)r * W, first->in, first->in_inv, first->in_zero, q);
      memset(q + first->in, 0, first->kin - first->in);
    }
    for (uint32_t l = 0; l < m->n_layers; l++) {
      const qlayer_t *ly = &m->qlayers[l];
      eddy_qkernel_gemm(m->qk, ly->wq, ly->kin, ly->kout, qa, QS, nr, ly->in_zero == 0, groups, acc, m->max_kout);
      const bool last = l + 1 == m->n_layers;
      const qlayer_t *next = last ? NULL : &m->qlayers[l + 1];
      for (int r = 0; r < nr; r++) {
        float *yr = xf + (size_t)r * W;
        rescale_row(ly, acc + (size_t)r * m->max_kout, !last, yr);
        if (last) continue;
        uint8_t *q = qb + (size_t)r * QS;
        eddy_qkernel_quantize(m->qk, yr, ly->out, next->in_inv, next->in_zero, q);
        memset(q + ly->out, 0, next->kin - ly->out);
      }
      uint8_t *t = qa;
      qa = qb;
      qb = t;
    }
    for (int r = 0; r < nr; r++) head(m, xf + (size_t)r * W, pred + (i0 + (size_t)r) * m->outputs);
  }
}

static eddy_err_t check_batch(const eddy_infer_t *m, const eddy_batch_t *b, char *errstr, size_t errstr_size) {
  if (b->dense_dim != m->dense_dim)
    return eddy_errf(EDDY_ERR_SHAPE, errstr, errstr_size, "batch has %u dense features, the model %u", b->dense_dim,
                     m->dense_dim);
  for (size_t j = b->sparse_off[0]; j < b->sparse_off[b->n]; j++)
    if (b->sparse_idx[j] >= m->emb_rows)
      return eddy_errf(EDDY_ERR_SHAPE, errstr, errstr_size, "sparse index %u is outside the model's %zu buckets",
                       b->sparse_idx[j], m->emb_rows);
  return EDDY_OK;
}

eddy_err_t eddy_infer_predict(const eddy_infer_t *m, const eddy_batch_t *b, float *scratch,
                              float *pred, char *errstr, size_t errstr_size) {
  if (!m || !b || !scratch || !pred)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "predict: model, batch, scratch and pred are required");
  eddy_err_t err = check_batch(m, b, errstr, errstr_size);
  if (err) return err;
  if (m->precision == EDDY_INFER_INT8) forward_int8(m, b, scratch, pred);
  else forward_float(m, b, scratch, pred, NULL);
  return EDDY_OK;
}

eddy_err_t eddy_infer_calibrate(const eddy_infer_t *m, const eddy_batch_t *b, float *scratch,
                                eddy_quant_calib_t *calib, char *errstr, size_t errstr_size) {
  if (!m || !b || !scratch || !calib)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "calibrate: model, batch, scratch and calib are required");
  if (m->precision == EDDY_INFER_INT8)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "calibrate: needs an fp32, bf16 or fp16 model, not int8");
  eddy_err_t err = check_batch(m, b, errstr, errstr_size);
  if (err) return err;
  forward_float(m, b, scratch, NULL, calib);
  calib->n_layers = m->n_layers;
  calib->events += b->n;
  return EDDY_OK;
}
