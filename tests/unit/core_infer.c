/* Inference model (src/model/infer.c) against the learner's own predictions: every head, with and
 * without embeddings, batch sizes around the 4-event block, fp32 and bf16 weights; and the refusals
 * (missing, extra, misshapen or non-finite tensors). */
#include <math.h>
#include <setjmp.h>
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

/* n random events; about a third of the dense values are exactly 0 (the skip path). */
static eddy_batch_t *make_batch(const eddy_model_spec_t *s, size_t n, uint64_t seed) {
  lcg_state = seed;
  eddy_batch_t *b = eddy_batch_new(s->dense_dim, n);
  assert_non_null(b);
  float dense[64], val[4];
  uint32_t idx[4];
  for (size_t i = 0; i < n; i++) {
    eddy_event_t ev;
    eddy_event_init(&ev);
    for (uint32_t j = 0; j < s->dense_dim; j++) dense[j] = rnd() < 0.33 ? 0.0f : (float)(rnd() * 2 - 1);
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
  eddy_learner_destroy(l);
  eddy_learner_destroy(l16);
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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_softmax),
      cmocka_unit_test(test_logistic_and_squared),
      cmocka_unit_test(test_refusals),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
