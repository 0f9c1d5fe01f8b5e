/* Inference model (src/model/infer.c) against the learner's own predictions: every head, with and
 * without embeddings, batch sizes around the 4-event block, fp32, bf16 and fp16 weights (every fp16
 * kernel this CPU runs); int8 (src/model/quant.c, qgemm.c): every int8 kernel this CPU runs gives
 * the same numbers as a plain-C reference of the documented formulas written here, and stays close
 * to the fp32 model of the dequantized weights; and the refusals (missing, extra, misshapen or
 * non-finite tensors, bad scales, kernels this CPU lacks). */
#include <math.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model/infer.h"
#include "model/learner.h"
#include "format/safetensors.h"
#include "testutil.h"

static uint64_t lcg_state;

static double rnd(void) {
  lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
  return (double)(lcg_state >> 11) * 0x1.0p-53;
}

static eddy_model_spec_t spec_of(eddy_head_t head, uint32_t embed_dim) {
  eddy_model_spec_t s;
  memset(&s, 0, sizeof s);
  s.hash_bits = 6;
  s.embed_dim = embed_dim;
  s.dense_dim = 37;
  s.n_hidden = 2;
  s.hidden[0] = 33;
  s.hidden[1] = 9;
  s.head = head;
  s.classes = 5;
  return s;
}

/* n random events; about a third of the dense values are exactly 0 (the skip path); the others in
 * [-1, 1), or in [0, 1) when nonneg. */
static eddy_batch_t *make_batch_range(const eddy_model_spec_t *s, size_t n, uint64_t seed, bool nonneg) {
  lcg_state = seed;
  eddy_batch_t *b = eddy_batch_new(s->dense_dim, n);
  assert_non_null(b);
  float dense[64], val[4];
  uint32_t idx[4];
  for (size_t i = 0; i < n; i++) {
    eddy_event_t ev;
    eddy_event_init(&ev);
    for (uint32_t j = 0; j < s->dense_dim; j++)
      dense[j] = rnd() < 0.33 ? 0.0f : nonneg ? (float)rnd() : (float)(rnd() * 2 - 1);
    uint32_t ns = 0;
    if (s->embed_dim)
      for (; ns < 3; ns++) idx[ns] = (uint32_t)(rnd() * (1u << s->hash_bits)), val[ns] = (float)(rnd() + 0.5);
    ev.dense = dense;
    ev.n_dense = s->dense_dim;
    ev.sparse_idx = idx;
    ev.sparse_val = val;
    ev.n_sparse = ns;
    ev.label = s->head == EDDY_HEAD_SOFTMAX ? (double)(uint32_t)(rnd() * s->classes) : (rnd() < 0.5 ? 0 : 1);
    ev.weight = 1.0f;
    assert_int_equal(eddy_batch_push(b, &ev), EDDY_OK);
  }
  return b;
}

static eddy_batch_t *make_batch(const eddy_model_spec_t *s, size_t n, uint64_t seed) {
  return make_batch_range(s, n, seed, false);
}

/* A learner trained a few steps (so biases are not zero), its weights saved as dtype. */
static eddy_learner_t *trained(const eddy_model_spec_t *s, const char *dir, const char *dtype, char *path,
                               size_t path_size) {
  eddy_train_opts_t o = eddy_train_opts_defaults();
  o.optimizer = EDDY_OPT_ADAM;
  o.lr = 0.01f;
  o.threads = 1;
  o.seed = 3;
  char err[256] = "";
  eddy_learner_t *l = eddy_learner_new(s, &o, "cpu", err, sizeof err);
  assert_non_null(l);
  for (int k = 0; k < 5; k++) {
    eddy_batch_t *b = make_batch(s, 16, 100 + (uint64_t)k);
    assert_int_equal(eddy_learner_accumulate(l, b, NULL, NULL), EDDY_OK);
    eddy_step_info_t info;
    assert_int_equal(eddy_learner_step(l, &info), EDDY_OK);
    assert_true(info.applied);
    eddy_batch_destroy(b);
  }
  snprintf(path, path_size, "%s/w-%s.safetensors", dir, dtype);
  assert_int_equal(eddy_learner_save_weights(l, path, dtype, NULL, 0, err, sizeof err), EDDY_OK);
  return l;
}

/* Imports the weights of path (any dtype, read as fp32) into l, so l predicts with exactly them. */
static void import_file(eddy_learner_t *l, const char *path) {
  char err[256] = "";
  eddy_st_reader_t *r = eddy_st_reader_new(path, 0, err, sizeof err);
  assert_non_null(r);
  const eddy_tensor_info_t *ti;
  size_t nt = eddy_learner_tensors(l, &ti);
  for (size_t k = 0; k < nt; k++) {
    float *buf = malloc(ti[k].numel * sizeof(float));
    assert_int_equal(eddy_st_read_f32(eddy_st_find(r, ti[k].name), buf, ti[k].numel), EDDY_OK);
    assert_int_equal(eddy_learner_import(l, ti[k].name, buf, ti[k].numel), EDDY_OK);
    free(buf);
  }
  eddy_st_reader_destroy(r);
}

/* Largest |infer - learner| over batches of 1..9 events. */
static double max_diff(const eddy_model_spec_t *s, eddy_learner_t *l, const eddy_infer_t *m) {
  const uint32_t k = eddy_model_outputs(s);
  double worst = 0;
  for (size_t n = 1; n <= 9; n++) {
    eddy_batch_t *b = make_batch(s, n, 500 + n);
    float *want = malloc(n * k * sizeof(float)), *got = malloc(n * k * sizeof(float));
    float *scratch = malloc(eddy_infer_scratch_floats(m, n) * sizeof(float));
    assert_int_equal(eddy_learner_predict(l, b, want), EDDY_OK);
    char err[256] = "";
    assert_int_equal(eddy_infer_predict(m, b, scratch, got, err, sizeof err), EDDY_OK);
    for (size_t i = 0; i < n * k; i++) {
      assert_true(isfinite(got[i]));
      double d = fabs((double)got[i] - want[i]);
      if (d > worst) worst = d;
    }
    free(want);
    free(got);
    free(scratch);
    eddy_batch_destroy(b);
  }
  return worst;
}

static void check_head(eddy_head_t head, uint32_t embed_dim) {
  eddy_model_spec_t s = spec_of(head, embed_dim);
  char *dir = eddy_test_tmpdir(), path[512], err[256] = "";
  eddy_learner_t *l = trained(&s, dir, "F32", path, sizeof path);
  eddy_st_reader_t *r = eddy_st_reader_new(path, 0, err, sizeof err);
  assert_non_null(r);
  eddy_infer_t *m = eddy_infer_new(&s, r, EDDY_INFER_F32, err, sizeof err);
  if (!m) fprintf(stderr, "infer_new: %s\n", err);
  assert_non_null(m);
  double d = max_diff(&s, l, m);
  printf("head %s embed %u: fp32 max |diff| %.3g\n", eddy_head_name(head), embed_dim, d);
  assert_true(d <= 1e-5);
  eddy_infer_destroy(m);

  /* bf16 kept weights: a BF16 file (biases rounded too) in a bf16 model predicts what the learner
   * given the same rounded weights predicts; so does the same file in an fp32 model. */
  eddy_st_reader_destroy(r);
  char path16[512];
  eddy_learner_t *l16 = trained(&s, dir, "BF16", path16, sizeof path16);
  import_file(l16, path16);
  r = eddy_st_reader_new(path16, 0, err, sizeof err);
  assert_non_null(r);
  m = eddy_infer_new(&s, r, EDDY_INFER_BF16, err, sizeof err);
  assert_non_null(m);
  d = max_diff(&s, l16, m);
  printf("head %s embed %u: bf16 max |diff| %.3g\n", eddy_head_name(head), embed_dim, d);
  assert_true(d <= 1e-5);
  eddy_infer_destroy(m);
  m = eddy_infer_new(&s, r, EDDY_INFER_F32, err, sizeof err);
  assert_non_null(m);
  assert_true(max_diff(&s, l16, m) <= 1e-5);
  assert_true(eddy_infer_bytes(m) > 0);
  eddy_infer_destroy(m);
  eddy_st_reader_destroy(r);

  /* fp16 kept weights, with every fp16 kernel this CPU runs: an F16 file in an fp16 model
   * predicts what the learner given the same rounded weights predicts. */
  char pathh[512];
  eddy_learner_t *lh = trained(&s, dir, "F16", pathh, sizeof pathh);
  import_file(lh, pathh);
  r = eddy_st_reader_new(pathh, 0, err, sizeof err);
  assert_non_null(r);
  const char *kernels[4];
  size_t nk = eddy_infer_kernels(EDDY_INFER_F16, kernels, 4);
  assert_true(nk >= 1);
  assert_string_equal(kernels[nk - 1], "scalar");
  for (size_t k = 0; k < nk; k++) {
    m = eddy_infer_new_kernel(&s, r, EDDY_INFER_F16, kernels[k], err, sizeof err);
    assert_non_null(m);
    assert_string_equal(eddy_infer_kernel(m), kernels[k]);
    d = max_diff(&s, lh, m);
    printf("head %s embed %u: fp16 (%s) max |diff| %.3g\n", eddy_head_name(head), embed_dim, kernels[k], d);
    assert_true(d <= 1e-5);
    eddy_infer_destroy(m);
  }
  eddy_st_reader_destroy(r);
  eddy_learner_destroy(l);
  eddy_learner_destroy(l16);
  eddy_learner_destroy(lh);
  eddy_test_rmdir(dir);
}

static void test_softmax(void **state) {
  (void)state;
  check_head(EDDY_HEAD_SOFTMAX, 0);
  check_head(EDDY_HEAD_SOFTMAX, 4);
}

static void test_logistic_and_squared(void **state) {
  (void)state;
  check_head(EDDY_HEAD_LOGISTIC, 3);
  check_head(EDDY_HEAD_SQUARED, 0);
}

/* Writes a weights file with the spec's tensors, where `mutate` alters one of them. */
enum { OK_FILE, MISSING, EXTRA, BAD_SHAPE, NAN_VALUE, BAD_DTYPE };

static eddy_st_reader_t *weights_file(const eddy_model_spec_t *s, int mutate, const char *dir) {
  eddy_tensor_info_t ti[EDDY_MAX_TENSORS];
  size_t nt = eddy_model_layout(s, ti, NULL);
  eddy_st_writer_t *w = eddy_st_writer_new();
  for (size_t k = 0; k < nt; k++) {
    float *data = calloc(2 * ti[k].numel + 64, sizeof(float)); /* room for a grown shape */
    uint64_t shape[2] = {ti[k].shape[0], ti[k].shape[1]};
    if (mutate == MISSING && k == 1) {
      free(data);
      continue;
    }
    if (mutate == BAD_SHAPE && k == 2) shape[ti[k].ndim - 1] += 1;
    if (mutate == NAN_VALUE && k == 1) data[2] = NAN;
    if (mutate == BAD_DTYPE && k == 0) {
      assert_int_equal(eddy_st_writer_add(w, ti[k].name, EDDY_DT_U8, shape, ti[k].ndim, data), EDDY_OK);
    } else {
      assert_int_equal(eddy_st_writer_add_f32(w, ti[k].name, EDDY_DT_F32, shape, ti[k].ndim, data), EDDY_OK);
    }
    free(data);
  }
  if (mutate == EXTRA) {
    uint64_t shape[1] = {3};
    float x[3] = {0};
    assert_int_equal(eddy_st_writer_add_f32(w, "stray", EDDY_DT_F32, shape, 1, x), EDDY_OK);
  }
  char path[512], err[256] = "";
  snprintf(path, sizeof path, "%s/m%d.safetensors", dir, mutate);
  assert_int_equal(eddy_st_writer_save(w, path, NULL, err, sizeof err), EDDY_OK);
  eddy_st_writer_destroy(w);
  eddy_st_reader_t *r = eddy_st_reader_new(path, 0, err, sizeof err);
  assert_non_null(r);
  return r;
}

static void test_refusals(void **state) {
  (void)state;
  eddy_model_spec_t s = spec_of(EDDY_HEAD_SOFTMAX, 0);
  char *dir = eddy_test_tmpdir(), err[256];
  static const struct {
    int mutate;
    eddy_err_t code;
    const char *needle;
  } cases[] = {
      {MISSING, EDDY_ERR_SHAPE, "5 tensors, the spec has 6"},
      {EXTRA, EDDY_ERR_SHAPE, "stray is not part of the spec"},
      {BAD_SHAPE, EDDY_ERR_SHAPE, "has shape [9, 34], the spec says [9, 33]"},
      {NAN_VALUE, EDDY_ERR_NONFINITE, "mlp.0.bias[2] is NaN"},
      {BAD_DTYPE, EDDY_ERR_FORMAT, "dtype U8"},
  };
  eddy_st_reader_t *r = weights_file(&s, OK_FILE, dir);
  eddy_infer_t *m = eddy_infer_new(&s, r, EDDY_INFER_F32, err, sizeof err);
  assert_non_null(m);
  eddy_infer_destroy(m);
  eddy_st_reader_destroy(r);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    r = weights_file(&s, cases[i].mutate, dir);
    err[0] = 0;
    m = eddy_infer_new(&s, r, EDDY_INFER_F32, err, sizeof err);
    printf("case %d: %s\n", cases[i].mutate, err);
    assert_null(m);
    assert_non_null(strstr(err, cases[i].needle));
    eddy_st_reader_destroy(r);
  }
  /* A batch of the wrong width is refused, not read past. */
  r = weights_file(&s, OK_FILE, dir);
  m = eddy_infer_new(&s, r, EDDY_INFER_F32, err, sizeof err);
  eddy_batch_t *b = eddy_batch_new(5, 1);
  float dense[5] = {0}, pred[5], scratch[4096];
  eddy_event_t ev;
  eddy_event_init(&ev);
  ev.dense = dense;
  ev.n_dense = 5;
  assert_int_equal(eddy_batch_push(b, &ev), EDDY_OK);
  assert_true(eddy_infer_scratch_floats(m, 1) <= 4096);
  assert_int_equal(eddy_infer_predict(m, b, scratch, pred, err, sizeof err), EDDY_ERR_SHAPE);
  eddy_batch_destroy(b);
  eddy_infer_destroy(m);
  eddy_st_reader_destroy(r);
  eddy_test_rmdir(dir);
}

/* ---- int8 ---- */

static float *predict_all(const eddy_infer_t *m, const eddy_batch_t *b) {
  const uint32_t k = eddy_model_outputs(eddy_infer_spec(m));
  float *pred = malloc(b->n * k * sizeof(float) + 1), *scratch = malloc(eddy_infer_scratch_floats(m, b->n) * sizeof(float));
  char err[256] = "";
  assert_int_equal(eddy_infer_predict(m, b, scratch, pred, err, sizeof err), EDDY_OK);
  free(scratch);
  return pred;
}

static eddy_st_reader_t *save_open(eddy_st_writer_t *w, const char *dir, const char *name) {
  char path[512], err[256] = "";
  snprintf(path, sizeof path, "%s/%s", dir, name);
  assert_int_equal(eddy_st_writer_save(w, path, NULL, err, sizeof err), EDDY_OK);
  eddy_st_writer_destroy(w);
  eddy_st_reader_t *r = eddy_st_reader_new(path, 0, err, sizeof err);
  assert_non_null(r);
  return r;
}

/* The int8 file of fp's weights, calibrated by its fp32 model on 3 batches. */
static eddy_st_reader_t *int8_file(const eddy_model_spec_t *s, const eddy_st_reader_t *fp, bool nonneg,
                                   const char *dir, const char *name) {
  char err[256] = "";
  eddy_infer_t *m = eddy_infer_new(s, fp, EDDY_INFER_F32, err, sizeof err);
  assert_non_null(m);
  eddy_quant_calib_t calib;
  eddy_quant_calib_init(&calib);
  for (int k = 0; k < 3; k++) {
    eddy_batch_t *b = make_batch_range(s, 40, 900 + (uint64_t)k, nonneg);
    float *scratch = malloc(eddy_infer_scratch_floats(m, b->n) * sizeof(float));
    assert_int_equal(eddy_infer_calibrate(m, b, scratch, &calib, err, sizeof err), EDDY_OK);
    free(scratch);
    eddy_batch_destroy(b);
  }
  assert_int_equal(calib.events, 120);
  assert_int_equal(calib.n_layers, s->n_hidden + 1);
  if (!s->embed_dim) assert_true(nonneg ? calib.lo[0] >= 0.0f : calib.lo[0] < 0.0f);
  for (uint32_t l = 1; l <= s->n_hidden; l++) assert_true(calib.lo[l] == 0.0f && calib.hi[l] > 0.0f);
  eddy_infer_destroy(m);
  eddy_st_writer_t *w = eddy_st_writer_new();
  assert_int_equal(eddy_quant_write_int8(s, fp, &calib, w, err, sizeof err), EDDY_OK);
  return save_open(w, dir, name);
}

static const float *f32_of(const eddy_st_reader_t *r, const char *name, float *buf, size_t n) {
  const eddy_st_tensor_t *t = eddy_st_find(r, name);
  assert_non_null(t);
  assert_int_equal(t->dtype, EDDY_DT_F32);
  assert_int_equal(eddy_st_read_f32(t, buf, n), EDDY_OK);
  return buf;
}

static const int8_t *i8_of(const eddy_st_reader_t *r, const char *name) {
  const eddy_st_tensor_t *t = eddy_st_find(r, name);
  assert_non_null(t);
  assert_int_equal(t->dtype, EDDY_DT_I8);
  return (const int8_t *)t->data;
}

/* The int8 forward pass as snapshots/README.md writes it, one event at a time from the file's
 * tensors: no packing, no kernel, sums in int64. */
static void ref_int8(const eddy_model_spec_t *s, const eddy_st_reader_t *r, const eddy_batch_t *b, float *pred) {
  eddy_model_geometry_t g;
  eddy_model_geometry(s, &g);
  float x[128], y[128], scale[128], bias[128], in_scale;
  for (size_t e = 0; e < b->n; e++) {
    memset(x, 0, sizeof x);
    if (g.emb_dim) {
      const int8_t *q = i8_of(r, "emb.weight");
      f32_of(r, "emb.weight_scale", scale, g.emb_dim);
      for (size_t j = b->sparse_off[e]; j < b->sparse_off[e + 1]; j++)
        for (uint32_t c = 0; c < g.emb_dim; c++) x[c] += b->sparse_val[j] * (float)q[(size_t)b->sparse_idx[j] * g.emb_dim + c];
      for (uint32_t c = 0; c < g.emb_dim; c++) x[c] *= scale[c];
    }
    memcpy(x + g.emb_dim, b->dense + e * g.dense_dim, g.dense_dim * sizeof(float));
    for (uint32_t l = 0; l < g.n_layers; l++) {
      char name[64], p[32];
      snprintf(p, sizeof p, "%s", g.tensors[g.layer[l].w_tensor].name);
      p[strlen(p) - strlen(".weight")] = '\0';
      const uint32_t in = g.layer[l].in, out = g.layer[l].out;
      snprintf(name, sizeof name, "%s.weight", p);
      const int8_t *w = i8_of(r, name);
      snprintf(name, sizeof name, "%s.weight_scale", p);
      f32_of(r, name, scale, out);
      snprintf(name, sizeof name, "%s.bias", p);
      f32_of(r, name, bias, out);
      snprintf(name, sizeof name, "%s.input_scale", p);
      f32_of(r, name, &in_scale, 1);
      snprintf(name, sizeof name, "%s.input_zero_point", p);
      const eddy_st_tensor_t *zt = eddy_st_find(r, name);
      assert_non_null(zt);
      assert_int_equal(zt->dtype, EDDY_DT_U8);
      const int zero = zt->data[0];
      int qx[128];
      const float inv = 1.0f / in_scale;
      for (uint32_t i = 0; i < in; i++) {
        long q = lrintf(x[i] * inv) + zero;
        qx[i] = q < 0 ? 0 : q > 255 ? 255 : (int)q;
      }
      for (uint32_t o = 0; o < out; o++) {
        int64_t sum = 0, wsum = 0;
        for (uint32_t i = 0; i < in; i++) {
          sum += (int64_t)qx[i] * w[(size_t)o * in + i];
          wsum += w[(size_t)o * in + i];
        }
        const float mul = in_scale * scale[o];
        const float v = (float)(sum - zero * wsum) * mul;
        y[o] = v + bias[o];
        if (l + 1 < g.n_layers && y[o] < 0.0f) y[o] = 0.0f;
      }
      memcpy(x, y, out * sizeof(float));
    }
    float *pe = pred + e * g.outputs;
    if (s->head == EDDY_HEAD_SOFTMAX) {
      double mx = x[0], sum = 0;
      for (uint32_t c = 1; c < g.outputs; c++) mx = x[c] > mx ? x[c] : mx;
      for (uint32_t c = 0; c < g.outputs; c++) sum += exp((double)x[c] - mx);
      for (uint32_t c = 0; c < g.outputs; c++) pe[c] = (float)(exp((double)x[c] - mx) / sum);
    } else if (s->head == EDDY_HEAD_LOGISTIC) {
      pe[0] = (float)(1.0 / (1.0 + exp(-(double)x[0])));
    } else {
      pe[0] = x[0];
    }
  }
}

/* An fp32 weights file holding the int8 file's weights dequantized (q × scale), biases as they are. */
static eddy_st_reader_t *dequantized(const eddy_model_spec_t *s, const eddy_st_reader_t *q, const char *dir) {
  eddy_tensor_info_t ti[EDDY_MAX_TENSORS];
  size_t nt = eddy_model_layout(s, ti, NULL);
  eddy_st_writer_t *w = eddy_st_writer_new();
  for (size_t k = 0; k < nt; k++) {
    float *v = malloc(ti[k].numel * sizeof(float)), scale[128];
    const eddy_st_tensor_t *t = eddy_st_find(q, ti[k].name);
    assert_non_null(t);
    if (t->dtype == EDDY_DT_F32) {
      assert_int_equal(eddy_st_read_f32(t, v, ti[k].numel), EDDY_OK);
    } else {
      char name[64];
      snprintf(name, sizeof name, "%s_scale", ti[k].name);
      const bool emb = !strcmp(ti[k].name, "emb.weight");
      const size_t cols = (size_t)ti[k].shape[1];
      f32_of(q, name, scale, emb ? cols : (size_t)ti[k].shape[0]);
      for (size_t i = 0; i < ti[k].numel; i++)
        v[i] = (float)((const int8_t *)t->data)[i] * scale[emb ? i % cols : i / cols];
    }
    assert_int_equal(eddy_st_writer_add_f32(w, ti[k].name, EDDY_DT_F32, ti[k].shape, ti[k].ndim, v), EDDY_OK);
    free(v);
  }
  return save_open(w, dir, "dequantized.safetensors");
}

static void check_int8(eddy_head_t head, uint32_t embed_dim, bool nonneg, double close) {
  eddy_model_spec_t s = spec_of(head, embed_dim);
  char *dir = eddy_test_tmpdir(), path[512], err[256] = "";
  eddy_learner_t *l = trained(&s, dir, "F32", path, sizeof path);
  eddy_st_reader_t *fp = eddy_st_reader_new(path, 0, err, sizeof err);
  assert_non_null(fp);
  eddy_st_reader_t *q = int8_file(&s, fp, nonneg, dir, "int8.safetensors");
  eddy_st_reader_t *dq = dequantized(&s, q, dir);
  eddy_infer_t *deq = eddy_infer_new(&s, dq, EDDY_INFER_F32, err, sizeof err);
  assert_non_null(deq);
  const char *kernels[4];
  size_t nk = eddy_infer_kernels(EDDY_INFER_INT8, kernels, 4);
  assert_true(nk >= 1);
  assert_string_equal(kernels[nk - 1], "scalar");
  const uint32_t k = eddy_model_outputs(&s);
  for (size_t n = 1; n <= 33; n += n < 9 ? 1 : 24) {
    eddy_batch_t *b = make_batch_range(&s, n, 700 + n, nonneg);
    float *want = malloc(n * k * sizeof(float));
    ref_int8(&s, q, b, want);
    float *first = NULL, *approx = predict_all(deq, b);
    for (size_t kk = 0; kk < nk; kk++) {
      eddy_infer_t *m = eddy_infer_new_kernel(&s, q, EDDY_INFER_INT8, kernels[kk], err, sizeof err);
      if (!m) fprintf(stderr, "int8 %s: %s\n", kernels[kk], err);
      assert_non_null(m);
      assert_int_equal(eddy_infer_precision(m), EDDY_INFER_INT8);
      float *got = predict_all(m, b);
      double ref = 0, deqd = 0;
      for (size_t i = 0; i < n * k; i++) {
        assert_true(isfinite(got[i]));
        ref = fmax(ref, fabs((double)got[i] - want[i]));
        deqd = fmax(deqd, fabs((double)got[i] - approx[i]));
      }
      if (n == 33)
        printf("int8 %s head %s embed %u %s inputs: vs reference %.3g, vs dequantized fp32 %.3g\n", kernels[kk],
               eddy_head_name(head), embed_dim, nonneg ? "non-negative" : "signed", ref, deqd);
      assert_true(ref <= 1e-6);
      assert_true(deqd <= close);
      /* Every kernel computes the same integers: identical predictions. */
      if (first) assert_memory_equal(first, got, n * k * sizeof(float));
      else first = got, got = NULL;
      free(got);
      eddy_infer_destroy(m);
    }
    free(first);
    free(approx);
    free(want);
    eddy_batch_destroy(b);
  }
  eddy_infer_destroy(deq);
  eddy_st_reader_destroy(dq);
  eddy_st_reader_destroy(q);
  eddy_st_reader_destroy(fp);
  eddy_learner_destroy(l);
  eddy_test_rmdir(dir);
}

static void test_int8_kernels(void **state) {
  (void)state;
  check_int8(EDDY_HEAD_SOFTMAX, 0, true, 0.05);
  check_int8(EDDY_HEAD_SOFTMAX, 0, false, 0.05);
  check_int8(EDDY_HEAD_LOGISTIC, 3, false, 0.05);
  check_int8(EDDY_HEAD_SQUARED, 4, true, 0.1);
}

static void test_quant_numbers(void **state) {
  (void)state;
  eddy_infer_precision_t p;
  assert_int_equal(eddy_infer_precision_parse("int8", &p), 0);
  assert_int_equal(p, EDDY_INFER_INT8);
  assert_int_equal(eddy_infer_precision_parse("int4", &p), -1);
  assert_true(eddy_infer_precision_rank(EDDY_INFER_INT8) < eddy_infer_precision_rank(EDDY_INFER_BF16));
  assert_true(eddy_infer_precision_rank(EDDY_INFER_F16) < eddy_infer_precision_rank(EDDY_INFER_F32));
  unsigned mask = 0;
  char why[128], list[64];
  assert_int_equal(eddy_infer_precision_parse_list("int8, fp32", &mask, why, sizeof why), 0);
  assert_int_equal(mask, (1u << EDDY_INFER_INT8) | (1u << EDDY_INFER_F32));
  assert_string_equal(eddy_infer_precision_list(EDDY_INFER_ALL_PRECISIONS, list, sizeof list), "fp32,fp16,bf16,int8");
  assert_int_equal(eddy_infer_precision_parse_list("fp32,fp32", &mask, why, sizeof why), -1);
  assert_string_equal(why, "fp32 is listed twice");
  assert_int_equal(eddy_infer_precision_parse_list("fp32,int4", &mask, why, sizeof why), -1);
  assert_string_equal(why, "\"int4\" is not one of fp32, bf16, fp16, int8");
  assert_int_equal(eddy_infer_precision_parse_list("", &mask, why, sizeof why), -1);
  assert_int_equal(eddy_infer_precision_parse_list("fp32,", &mask, why, sizeof why), -1);
  /* Input ranges: non-negative (zero point 0) and signed (asymmetric). */
  float scale;
  uint8_t zero;
  eddy_quant_input_params(0.0f, 2.55f, &scale, &zero);
  assert_int_equal(zero, 0);
  assert_float_equal(scale, 0.01f, 1e-7);
  eddy_quant_input_params(-0.5f, 1.5f, &scale, &zero);
  assert_float_equal(scale, 2.0f / 255, 1e-7);
  assert_int_equal(zero, 64); /* 0.5 / (2 / 255) = 63.75 */
  eddy_quant_input_params(-3.0f, -1.0f, &scale, &zero);
  assert_float_equal(scale, 3.0f / 255, 1e-7);
  assert_int_equal(zero, 255);
  eddy_quant_input_params(INFINITY, -INFINITY, &scale, &zero); /* nothing seen */
  assert_float_equal(scale, 1.0f, 0);
  const float w[] = {0.5f, -1.27f, 0.0f};
  assert_float_equal(eddy_quant_weight_scale(w, 3, 1), 0.01f, 1e-7);
  assert_float_equal(eddy_quant_weight_scale(w + 2, 1, 1), 1.0f, 0);
  /* The int8 layout of a spec with an embedding and two hidden layers. */
  eddy_model_spec_t s = spec_of(EDDY_HEAD_SOFTMAX, 4);
  eddy_quant_tensor_t t[EDDY_QUANT_MAX_TENSORS];
  size_t n = eddy_quant_int8_layout(&s, t);
  assert_int_equal(n, 2 + 3 * 5);
  assert_string_equal(t[0].name, "emb.weight");
  assert_int_equal(t[0].dtype, EDDY_DT_I8);
  assert_int_equal(t[1].shape[0], 4);
  assert_string_equal(t[2].name, "mlp.0.weight");
  assert_int_equal(t[2].shape[0], 33);
  assert_int_equal(t[2].shape[1], 41);
  assert_string_equal(t[16].name, "head.input_zero_point");
  assert_int_equal(t[16].dtype, EDDY_DT_U8);
}

/* An int8 file of s (all weights 1, scales 0.5) with tensor name dropped or replaced by one of
 * dtype dt holding value. */
static eddy_st_reader_t *int8_mutant(const eddy_model_spec_t *s, const char *name, bool drop, eddy_dtype_t dt,
                                     float value, const char *dir) {
  eddy_quant_tensor_t t[EDDY_QUANT_MAX_TENSORS];
  size_t n = eddy_quant_int8_layout(s, t);
  eddy_st_writer_t *w = eddy_st_writer_new();
  for (size_t k = 0; k < n; k++) {
    const bool hit = name && !strcmp(t[k].name, name);
    if (hit && drop) continue;
    float *f = malloc(t[k].numel * sizeof(float));
    for (size_t i = 0; i < t[k].numel; i++) f[i] = hit ? value : 0.5f;
    if (t[k].dtype == EDDY_DT_F32 || (hit && dt == EDDY_DT_F32)) {
      assert_int_equal(eddy_st_writer_add_f32(w, t[k].name, EDDY_DT_F32, t[k].shape, t[k].ndim, f), EDDY_OK);
    } else {
      int8_t *b = malloc(t[k].numel);
      memset(b, 1, t[k].numel);
      assert_int_equal(eddy_st_writer_add(w, t[k].name, t[k].dtype, t[k].shape, t[k].ndim, b), EDDY_OK);
      free(b);
    }
    free(f);
  }
  return save_open(w, dir, "mutant.safetensors");
}

static void test_int8_refusals(void **state) {
  (void)state;
  eddy_model_spec_t s = spec_of(EDDY_HEAD_SOFTMAX, 0);
  char *dir = eddy_test_tmpdir(), err[256];
  static const struct {
    const char *tensor;
    bool drop;
    eddy_dtype_t dt;
    float value;
    const char *needle; /* NULL: accepted */
  } cases[] = {
      {NULL, false, EDDY_DT_F32, 0, NULL},
      {"head.input_scale", true, EDDY_DT_F32, 0, "14 tensors, the spec has 15"},
      {"mlp.1.weight_scale", false, EDDY_DT_F32, 0.0f, "mlp.1.weight_scale[0] is 0 (a finite value > 0"},
      {"mlp.0.input_scale", false, EDDY_DT_F32, INFINITY, "mlp.0.input_scale[0] is inf"},
      {"mlp.0.bias", false, EDDY_DT_F32, NAN, "mlp.0.bias[0] is nan"},
      {"head.weight", false, EDDY_DT_F32, 0.25f, "head.weight has dtype F32 (I8 expected)"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    eddy_st_reader_t *r = int8_mutant(&s, cases[i].tensor, cases[i].drop, cases[i].dt, cases[i].value, dir);
    err[0] = 0;
    eddy_infer_t *m = eddy_infer_new(&s, r, EDDY_INFER_INT8, err, sizeof err);
    printf("int8 case %zu: %s\n", i, err);
    if (!cases[i].needle) {
      assert_non_null(m);
      assert_true(eddy_infer_bytes(m) > 0);
      /* An int8 model cannot calibrate; a kernel this CPU lacks is refused by name. */
      eddy_batch_t *b = make_batch(&s, 2, 1);
      float *scratch = malloc(eddy_infer_scratch_floats(m, 2) * sizeof(float));
      eddy_quant_calib_t c;
      eddy_quant_calib_init(&c);
      assert_int_equal(eddy_infer_calibrate(m, b, scratch, &c, err, sizeof err), EDDY_ERR_INVALID_ARG);
      free(scratch);
      eddy_batch_destroy(b);
      assert_null(eddy_infer_new_kernel(&s, r, EDDY_INFER_INT8, "amx", err, sizeof err));
      assert_non_null(strstr(err, "int8 kernel \"amx\" does not run on this CPU (it runs "));
    } else {
      assert_null(m);
      assert_non_null(strstr(err, cases[i].needle));
    }
    eddy_infer_destroy(m);
    eddy_st_reader_destroy(r);
  }
  /* An fp32 file is not an int8 file, nor the other way round. */
  eddy_st_reader_t *r = weights_file(&s, OK_FILE, dir);
  assert_null(eddy_infer_new(&s, r, EDDY_INFER_INT8, err, sizeof err));
  assert_non_null(strstr(err, "6 tensors, the spec has 15"));
  eddy_st_reader_destroy(r);
  r = int8_mutant(&s, NULL, false, EDDY_DT_F32, 0, dir);
  assert_null(eddy_infer_new(&s, r, EDDY_INFER_F32, err, sizeof err));
  assert_non_null(strstr(err, "is not part of the spec"));
  eddy_st_reader_destroy(r);
  eddy_test_rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_softmax),
      cmocka_unit_test(test_logistic_and_squared),
      cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_quant_numbers),
      cmocka_unit_test(test_int8_kernels),
      cmocka_unit_test(test_int8_refusals),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
