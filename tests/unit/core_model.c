/* Model spec (validation, layout, JSON), batches, the loss scaler on its own, and prequential
 * metrics against hand-computed values. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model/batch.h"
#include "model/optim.h"
#include "model/prequential.h"
#include "model/scaler.h"
#include "model/spec.h"

static eddy_model_spec_t spec_784(void) {
  eddy_model_spec_t s;
  memset(&s, 0, sizeof s);
  s.hash_bits = 4;
  s.embed_dim = 3;
  s.dense_dim = 5;
  s.n_hidden = 2;
  s.hidden[0] = 7;
  s.hidden[1] = 2;
  s.head = EDDY_HEAD_SOFTMAX;
  s.classes = 10;
  return s;
}

static void test_layout(void **state) {
  eddy_model_spec_t s = spec_784();
  eddy_tensor_info_t t[EDDY_MAX_TENSORS];
  size_t total = 0;
  size_t n = eddy_model_layout(&s, t, &total);
  assert_int_equal(n, 7);
  const char *names[] = {"emb.weight", "mlp.0.weight", "mlp.0.bias", "mlp.1.weight", "mlp.1.bias",
                         "head.weight", "head.bias"};
  const uint64_t shapes[][2] = {{16, 3}, {7, 8}, {7, 0}, {2, 7}, {2, 0}, {10, 2}, {10, 0}};
  size_t end = 0;
  for (size_t i = 0; i < n; i++) {
    assert_string_equal(t[i].name, names[i]);
    assert_int_equal(t[i].shape[0], shapes[i][0]);
    assert_int_equal(t[i].ndim, shapes[i][1] ? 2 : 1);
    if (shapes[i][1]) assert_int_equal(t[i].shape[1], shapes[i][1]);
    assert_int_equal(t[i].numel, shapes[i][0] * (shapes[i][1] ? shapes[i][1] : 1));
    assert_int_equal(t[i].offset % EDDY_PARAM_ALIGN, 0);
    assert_true(t[i].offset >= end);
    end = t[i].offset + t[i].numel;
  }
  assert_true(total >= end && total % EDDY_PARAM_ALIGN == 0);
  assert_int_equal(eddy_model_outputs(&s), 10);
  s.head = EDDY_HEAD_LOGISTIC;
  assert_int_equal(eddy_model_outputs(&s), 1);
  s.embed_dim = 0;
  s.n_hidden = 0;
  n = eddy_model_layout(&s, t, &total);
  assert_int_equal(n, 2);
  assert_string_equal(t[0].name, "head.weight");
  assert_int_equal(t[0].shape[1], 5);
  assert_int_equal(t[0].offset, 0);
}

/* The geometry every backend derives from the spec: widths, offsets and the dense region. */
static void test_geometry(void **state) {
  eddy_model_spec_t s = spec_784();
  eddy_model_geometry_t g;
  eddy_model_geometry(&s, &g);
  eddy_tensor_info_t t[EDDY_MAX_TENSORS];
  size_t total = 0;
  assert_int_equal(g.n_tensors, eddy_model_layout(&s, t, &total));
  assert_int_equal(g.total, total);
  for (size_t i = 0; i < g.n_tensors; i++) {
    assert_string_equal(g.tensors[i].name, t[i].name);
    assert_int_equal(g.tensors[i].offset, t[i].offset);
  }
  assert_int_equal(g.emb_rows, 16);
  assert_int_equal(g.emb_dim, 3);
  assert_int_equal(g.dense_dim, 5);
  assert_int_equal(g.in0, 8);
  assert_int_equal(g.outputs, 10);
  assert_int_equal(g.n_layers, 3);
  assert_int_equal(g.dense_begin, t[1].offset); /* mlp.0.weight: right after the embedding */
  assert_int_equal(g.max_width, 10);            /* the head's 10 outputs beat in0 = 8 and 7, 2 */
  const uint32_t in[] = {8, 7, 2}, out[] = {7, 2, 10};
  for (uint32_t i = 0; i < 3; i++) {
    assert_int_equal(g.layer[i].in, in[i]);
    assert_int_equal(g.layer[i].out, out[i]);
    assert_int_equal(g.layer[i].w_tensor, 1 + 2 * i);
    assert_int_equal(g.layer[i].b_tensor, 2 + 2 * i);
    assert_int_equal(g.layer[i].w_off, t[1 + 2 * i].offset);
    assert_int_equal(g.layer[i].b_off, t[2 + 2 * i].offset);
    assert_int_equal(t[1 + 2 * i].shape[0], out[i]);
    assert_int_equal(t[1 + 2 * i].shape[1], in[i]);
    assert_int_equal(g.layer[i].relu, i < 2);
  }
  /* No embedding, no hidden layer: the head reads the dense features; everything is dense. */
  s.embed_dim = 0;
  s.n_hidden = 0;
  s.dense_dim = 40;
  eddy_model_geometry(&s, &g);
  assert_int_equal(g.emb_rows, 0);
  assert_int_equal(g.dense_begin, 0);
  assert_int_equal(g.n_layers, 1);
  assert_int_equal(g.layer[0].in, 40);
  assert_int_equal(g.layer[0].out, 10);
  assert_int_equal(g.layer[0].w_tensor, 0);
  assert_false(g.layer[0].relu);
  assert_int_equal(g.max_width, 40);
}

/* Which state each optimizer keeps, and the constants of step t. */
static void test_optim_consts(void **state) {
  eddy_train_opts_t o = eddy_train_opts_defaults();
  bool s1, s2;
  o.optimizer = EDDY_OPT_SGD;
  o.momentum = 0;
  eddy_optim_state(&o, &s1, &s2);
  assert_false(s1);
  assert_false(s2);
  o.momentum = 0.9f;
  eddy_optim_state(&o, &s1, &s2);
  assert_true(s1);
  assert_false(s2);
  o.optimizer = EDDY_OPT_ADAGRAD;
  eddy_optim_state(&o, &s1, &s2);
  assert_false(s1);
  assert_true(s2);
  o.optimizer = EDDY_OPT_ADAMW;
  eddy_optim_state(&o, &s1, &s2);
  assert_true(s1 && s2);
  o.lr = 0.01f;
  o.beta1 = 0.9f;
  o.beta2 = 0.999f;
  eddy_optim_consts_t c = eddy_optim_consts(&o, 1);
  assert_int_equal(c.kind, EDDY_OPT_ADAMW);
  assert_true(c.step_size == (float)(o.lr / (1.0 - o.beta1)));
  assert_true(c.bc2_sqrt == (float)sqrt(1.0 - o.beta2));
  c = eddy_optim_consts(&o, 1000); /* the corrections fade */
  assert_float_equal(c.step_size, 0.01, 1e-6);
  assert_float_equal(c.bc2_sqrt, sqrt(1 - pow(o.beta2, 1000)), 1e-6);
  o.optimizer = EDDY_OPT_SGD;
  c = eddy_optim_consts(&o, 3);
  assert_true(c.step_size == o.lr && c.bc2_sqrt == 1.0f && c.momentum == o.momentum);
  /* The step scalars: 8 examples at loss scale 4, sum of squares 64 × 16: norm 1. */
  eddy_optim_scalars_t sc = eddy_optim_step_scalars(8, 4.0, 64.0 * 16, 0);
  assert_false(sc.nonfinite);
  assert_float_equal(sc.norm, 1.0, 1e-12);
  assert_true(sc.gmul == (float)(1.0 / 32));
  sc = eddy_optim_step_scalars(8, 4.0, 64.0 * 16, 0.25f);
  assert_true(sc.gmul == (float)(1.0 / 32 * (0.25 / (1.0 + 1e-6))));
  assert_true(eddy_optim_step_scalars(8, 1.0, NAN, 0).nonfinite);
}

static void test_validate(void **state) {
  char err[256];
  eddy_model_spec_t s = spec_784();
  assert_int_equal(eddy_model_spec_validate(&s, err, sizeof err), EDDY_OK);
  eddy_model_spec_t b = s;
  b.hash_bits = 31;
  assert_int_equal(eddy_model_spec_validate(&b, err, sizeof err), EDDY_ERR_CONFIG);
  assert_non_null(strstr(err, "hash_bits"));
  b = s;
  b.classes = 1;
  assert_int_equal(eddy_model_spec_validate(&b, err, sizeof err), EDDY_ERR_CONFIG);
  assert_non_null(strstr(err, "classes"));
  b = s;
  b.embed_dim = 0;
  b.dense_dim = 0;
  assert_int_equal(eddy_model_spec_validate(&b, err, sizeof err), EDDY_ERR_CONFIG);
  b = s;
  b.hidden[1] = 0;
  assert_int_equal(eddy_model_spec_validate(&b, err, sizeof err), EDDY_ERR_CONFIG);
  assert_non_null(strstr(err, "hidden[1]"));
  b = s;
  b.n_hidden = EDDY_MAX_HIDDEN + 1;
  assert_int_equal(eddy_model_spec_validate(&b, err, sizeof err), EDDY_ERR_CONFIG);
  b = s;
  b.embed_dim = 0;
  b.hash_bits = 0; /* no embedding: hash_bits is irrelevant */
  assert_int_equal(eddy_model_spec_validate(&b, err, sizeof err), EDDY_OK);
  b = s;
  b.hash_bits = 30;
  b.embed_dim = 64; /* 2^36 floats */
  assert_int_equal(eddy_model_spec_validate(&b, err, sizeof err), EDDY_ERR_CONFIG);
  assert_non_null(strstr(err, "too large"));
}

/* eddy_model_spec_check names the keys a failure is about, the one to blame first, and the
 * messages name keys and values. */
static void test_check_faults(void **state) {
  char err[512];
  eddy_fault_t f;
  eddy_model_spec_t d = eddy_model_spec_defaults();
  assert_int_equal(eddy_model_spec_check(&d, &f), EDDY_OK);
  assert_int_equal(eddy_model_spec_validate(&d, err, sizeof err), EDDY_OK);

  eddy_model_spec_t b = d;
  b.embed_dim = 4097;
  assert_int_equal(eddy_model_spec_check(&b, &f), EDDY_ERR_CONFIG);
  assert_string_equal(f.keys[0], "model.embed_dim");
  assert_null(f.keys[1]);
  assert_string_equal(f.why, "must be between 0 and 4096");
  assert_int_equal(eddy_model_spec_validate(&b, err, sizeof err), EDDY_ERR_CONFIG);
  assert_string_equal(err, "model.embed_dim = 4097: must be between 0 and 4096");

  b = d;
  b.head = EDDY_HEAD_SOFTMAX;
  b.classes = 1;
  assert_int_equal(eddy_model_spec_validate(&b, err, sizeof err), EDDY_ERR_CONFIG);
  assert_string_equal(err, "model.head = softmax, model.classes = 1: a softmax head needs model.classes >= 2");
  b.classes = 65537;
  assert_int_equal(eddy_model_spec_validate(&b, err, sizeof err), EDDY_ERR_CONFIG);
  assert_string_equal(err, "model.classes = 65537: must be between 1 and 65536");
  b.head = EDDY_HEAD_LOGISTIC; /* other heads ignore classes */
  assert_int_equal(eddy_model_spec_validate(&b, err, sizeof err), EDDY_OK);

  b = d;
  b.n_hidden = 2;
  b.hidden[1] = 65537;
  assert_int_equal(eddy_model_spec_validate(&b, err, sizeof err), EDDY_ERR_CONFIG);
  assert_string_equal(err, "model.hidden = 64,65537: each layer width must be between 1 and 65536 (hidden[1] is 65537)");

  b = d;
  b.embed_dim = 0;
  assert_int_equal(eddy_model_spec_check(&b, &f), EDDY_ERR_CONFIG);
  assert_string_equal(f.keys[0], "model.embed_dim");
  assert_string_equal(f.keys[1], "model.dense_dim");

  /* Too many parameters: the keys that shape the largest tensor. */
  b = d;
  b.n_hidden = 2;
  b.hidden[0] = b.hidden[1] = 65536;
  b.head = EDDY_HEAD_SOFTMAX;
  b.classes = 10;
  assert_int_equal(eddy_model_spec_check(&b, &f), EDDY_ERR_CONFIG);
  assert_string_equal(f.keys[0], "model.hidden");
  assert_null(f.keys[1]);
  assert_non_null(strstr(f.why, "mlp.1.weight"));
  b = d;
  b.hash_bits = 30;
  b.embed_dim = 64;
  assert_int_equal(eddy_model_spec_check(&b, &f), EDDY_ERR_CONFIG);
  assert_string_equal(f.keys[0], "model.embed_dim");
  assert_string_equal(f.keys[1], "model.hash_bits");
  assert_null(f.keys[2]);
  assert_string_equal(f.values, "model.embed_dim = 64, model.hash_bits = 30");
  b = d; /* one huge first layer: its width and the inputs */
  b.embed_dim = 4096;
  b.hash_bits = 10;
  b.dense_dim = 1048576;
  b.hidden[0] = 8192;
  assert_int_equal(eddy_model_spec_check(&b, &f), EDDY_ERR_CONFIG);
  assert_string_equal(f.keys[0], "model.hidden");
  assert_string_equal(f.keys[1], "model.embed_dim");
  assert_string_equal(f.keys[2], "model.dense_dim");
  assert_non_null(strstr(f.why, "mlp.0.weight"));
  b = d; /* a wide softmax head straight on the inputs */
  b.n_hidden = 0;
  b.embed_dim = 0;
  b.dense_dim = 1048576;
  b.head = EDDY_HEAD_SOFTMAX;
  b.classes = 8192;
  assert_int_equal(eddy_model_spec_check(&b, &f), EDDY_ERR_CONFIG);
  assert_string_equal(f.keys[0], "model.classes");
  assert_string_equal(f.keys[1], "model.dense_dim");
  assert_non_null(strstr(f.why, "head.weight"));
}

static void test_json_round_trip(void **state) {
  char err[256];
  eddy_model_spec_t s = spec_784();
  char *json = eddy_model_spec_to_json(&s);
  assert_non_null(json);
  assert_string_equal(json, "{\"hash_bits\":4,\"embed_dim\":3,\"dense_dim\":5,\"hidden\":[7,2],"
                            "\"head\":\"softmax\",\"classes\":10}");
  eddy_model_spec_t back;
  assert_int_equal(eddy_model_spec_from_json(json, &back, err, sizeof err), EDDY_OK);
  assert_memory_equal(&back, &s, sizeof s);
  free(json);
  assert_int_equal(eddy_model_spec_from_json("{\"dense_dim\":3,\"head\":\"squared\"}", &back, err, sizeof err),
                   EDDY_OK);
  assert_int_equal(back.dense_dim, 3);
  assert_int_equal(back.head, EDDY_HEAD_SQUARED);
  assert_int_equal(back.n_hidden, 0);
  assert_int_equal(eddy_model_spec_from_json("[1]", &back, err, sizeof err), EDDY_ERR_FORMAT);
  assert_int_equal(eddy_model_spec_from_json("{\"dense_dim\":3,\"head\":\"tanh\"}", &back, err, sizeof err),
                   EDDY_ERR_FORMAT);
  assert_int_equal(eddy_model_spec_from_json("{\"dense_dim\":3.5,\"head\":\"squared\"}", &back, err, sizeof err),
                   EDDY_ERR_FORMAT);
  assert_non_null(strstr(err, "dense_dim"));
  assert_int_equal(
      eddy_model_spec_from_json("{\"dense_dim\":3,\"hidden\":[0],\"head\":\"squared\"}", &back, err, sizeof err),
      EDDY_ERR_FORMAT);
  assert_int_equal(eddy_model_spec_from_json("{\"dense_dim\":0,\"head\":\"squared\"}", &back, err, sizeof err),
                   EDDY_ERR_FORMAT);
  /* Numbers out of any integer type's range are refused before a conversion (UBSan checks it). */
  static const char *const huge[] = {
      "{\"dense_dim\":1e300,\"head\":\"squared\"}", "{\"dense_dim\":-1e300,\"head\":\"squared\"}",
      "{\"dense_dim\":3,\"hidden\":[1e20],\"head\":\"squared\"}",
      "{\"dense_dim\":3,\"hidden\":[-1e20],\"head\":\"squared\"}",
      "{\"dense_dim\":3,\"head\":\"softmax\",\"classes\":18446744073709551616}"};
  for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++)
    assert_int_equal(eddy_model_spec_from_json(huge[i], &back, err, sizeof err), EDDY_ERR_FORMAT);
  assert_int_equal(eddy_model_spec_from_json("{\"dense_dim\":3,\"head\":\"squared\"} x", &back, err, sizeof err),
                   EDDY_ERR_FORMAT);
  eddy_head_t h;
  assert_int_equal(eddy_head_parse("logistic", &h), 0);
  assert_int_equal(h, EDDY_HEAD_LOGISTIC);
  assert_int_equal(eddy_head_parse("Logistic", &h), -1);
  assert_string_equal(eddy_head_name(EDDY_HEAD_SQUARED), "squared");
  eddy_event_schema_t es = eddy_model_event_schema(&s);
  assert_int_equal(es.dense_dim, 5);
  assert_int_equal(es.hash_bits, 4);
  assert_int_equal(es.classes, 10);
  s.embed_dim = 0;
  es = eddy_model_event_schema(&s);
  assert_int_equal(es.hash_bits, 0);
}

static void test_batch(void **state) {
  eddy_batch_t *b = eddy_batch_new(2, 3);
  assert_non_null(b);
  float d[2] = {1, 2}, v[100];
  uint32_t idx[100];
  for (int i = 0; i < 100; i++) idx[i] = (uint32_t)i, v[i] = (float)i;
  eddy_event_t ev;
  eddy_event_init(&ev);
  ev.dense = d;
  ev.n_dense = 2;
  ev.sparse_idx = idx;
  ev.sparse_val = v;
  ev.n_sparse = 100;
  ev.label = 3;
  ev.weight = 0.5f;
  assert_int_equal(eddy_batch_push(b, &ev), EDDY_OK);
  ev.n_sparse = 1;
  ev.sparse_idx = idx + 7;
  ev.sparse_val = v + 7;
  assert_int_equal(eddy_batch_push(b, &ev), EDDY_OK);
  assert_int_equal(b->n, 2);
  assert_int_equal(b->sparse_off[1], 100);
  assert_int_equal(b->sparse_off[2], 101);
  assert_int_equal(b->sparse_idx[100], 7);
  assert_float_equal(b->dense[3], 2, 0);
  assert_float_equal(b->label[1], 3, 0);
  assert_float_equal(b->weight[0], 0.5, 0);
  ev.n_dense = 3;
  assert_int_equal(eddy_batch_push(b, &ev), EDDY_ERR_SHAPE);
  ev.n_dense = 2;
  assert_int_equal(eddy_batch_push(b, &ev), EDDY_OK);
  assert_int_equal(eddy_batch_push(b, &ev), EDDY_ERR_TOO_LARGE);
  eddy_batch_clear(b);
  assert_int_equal(b->n, 0);
  assert_int_equal(eddy_batch_push(b, &ev), EDDY_OK);
  assert_int_equal(b->sparse_off[1], 1);
  eddy_batch_destroy(b);
  eddy_batch_destroy(NULL);
  assert_null(eddy_batch_new(2, 0));
}

static void test_scaler(void **state) {
  eddy_scaler_opts_t o = eddy_scaler_defaults();
  assert_true(o.enabled);
  assert_float_equal(o.init_scale, 65536, 0);
  assert_float_equal(o.growth, 2, 0);
  assert_float_equal(o.backoff, 0.5, 0);
  assert_int_equal(o.interval, 2000);
  o.interval = 3;
  o.min_scale = 16384;
  eddy_scaler_t s;
  eddy_scaler_init(&s, &o);
  assert_float_equal(s.scale, 65536, 0);
  assert_false(eddy_scaler_update(&s, true));
  assert_float_equal(s.scale, 32768, 0);
  assert_int_equal(s.skipped_steps, 1);
  assert_true(eddy_scaler_update(&s, false));
  assert_true(eddy_scaler_update(&s, false));
  assert_false(eddy_scaler_update(&s, true)); /* resets the clean run */
  assert_float_equal(s.scale, 16384, 0);
  assert_false(eddy_scaler_update(&s, true));
  assert_float_equal(s.scale, 16384, 0); /* floor */
  assert_int_equal(s.skipped_steps, 3);
  assert_true(eddy_scaler_update(&s, false));
  assert_true(eddy_scaler_update(&s, false));
  assert_float_equal(s.scale, 16384, 0);
  assert_true(eddy_scaler_update(&s, false));
  assert_float_equal(s.scale, 32768, 0);
  assert_int_equal(s.good_steps, 0);
  /* Growth stops short of infinity. */
  s.scale = 3e38f;
  for (int i = 0; i < 3; i++) eddy_scaler_update(&s, false);
  assert_true(isfinite(s.scale));
  /* Disabled: scale 1 forever, non-finite steps still skipped and counted. */
  o.enabled = false;
  eddy_scaler_init(&s, &o);
  assert_float_equal(s.scale, 1, 0);
  assert_false(eddy_scaler_update(&s, true));
  assert_float_equal(s.scale, 1, 0);
  for (int i = 0; i < 10; i++) assert_true(eddy_scaler_update(&s, false));
  assert_float_equal(s.scale, 1, 0);
  assert_int_equal(s.skipped_steps, 1);
}

static void test_metrics_softmax(void **state) {
  eddy_prequential_t *m = eddy_prequential_new(EDDY_HEAD_SOFTMAX, 3, 2);
  assert_non_null(m);
  eddy_metric_values_t v = eddy_prequential_cumulative(m);
  assert_true(isnan(v.logloss) && isnan(v.accuracy) && isnan(v.mse));
  assert_int_equal(v.n, 0);
  const float pred[] = {0.7f, 0.2f, 0.1f, /* label 0: right */
                        0.1f, 0.3f, 0.6f, /* label 1: wrong */
                        0.0f, 0.0f, 1.0f}; /* label 2: right, p = 1 clamped */
  const float label[] = {0, 1, 2}, weight[] = {1, 2, 1};
  eddy_prequential_add(m, pred, label, weight, 3);
  v = eddy_prequential_cumulative(m);
  double ll = (-log(0.7) + 2 * -log(0.3) + -log(1 - 1e-7)) / 4;
  assert_float_equal(v.logloss, ll, 1e-6);
  assert_float_equal(v.accuracy, 2.0 / 4, 1e-12);
  assert_true(isnan(v.mse));
  assert_int_equal(v.n, 3);
  eddy_metric_values_t w = eddy_prequential_window(m); /* last two events */
  assert_int_equal(w.n, 2);
  assert_float_equal(w.logloss, (2 * -log(0.3) + -log(1 - 1e-7)) / 3, 1e-6);
  assert_float_equal(w.accuracy, 1.0 / 3, 1e-9);
  /* p = 0 for the true class is clamped to 1e-7. */
  const float zero[] = {0.0f, 1.0f, 0.0f};
  const float l0[] = {0};
  eddy_prequential_add(m, zero, l0, NULL, 1);
  w = eddy_prequential_window(m);
  assert_float_equal(w.logloss, (-log(1 - 1e-7) + -log(1e-7)) / 2, 1e-5);
  eddy_prequential_reset(m);
  assert_int_equal(eddy_prequential_cumulative(m).n, 0);
  assert_int_equal(eddy_prequential_window(m).n, 0);
  eddy_prequential_destroy(m);
  eddy_prequential_destroy(NULL);
}

static void test_metrics_logistic_squared(void **state) {
  eddy_prequential_t *m = eddy_prequential_new(EDDY_HEAD_LOGISTIC, 1, 0);
  const float p[] = {0.9f, 0.4f, 0.2f}, y[] = {1, 1, 0};
  eddy_prequential_add(m, p, y, NULL, 3);
  eddy_metric_values_t v = eddy_prequential_cumulative(m);
  assert_float_equal(v.logloss, (-log(0.9) - log(0.4) - log(0.8)) / 3, 1e-6);
  assert_float_equal(v.accuracy, 2.0 / 3, 1e-9);
  assert_int_equal(eddy_prequential_window(m).n, 0); /* window 0: none kept */
  assert_true(isnan(eddy_prequential_window(m).logloss));
  eddy_prequential_destroy(m);

  m = eddy_prequential_new(EDDY_HEAD_SQUARED, 1, 100);
  const float yhat[] = {1.0f, 2.0f, -1.0f}, t[] = {0.5f, 2.0f, 1.0f}, wt[] = {1, 1, 2};
  eddy_prequential_add(m, yhat, t, wt, 3);
  v = eddy_prequential_cumulative(m);
  assert_float_equal(v.mse, (0.25 + 0 + 2 * 4.0) / 4, 1e-9);
  assert_true(isnan(v.logloss) && isnan(v.accuracy));
  eddy_prequential_destroy(m);
}

/* The window's running sums stay exact over many wrap-arounds. */
static void test_metrics_window_long_run(void **state) {
  eddy_prequential_t *m = eddy_prequential_new(EDDY_HEAD_SQUARED, 1, 10);
  for (int i = 0; i < 100000; i++) {
    float y = (float)(i % 7), t = 0;
    eddy_prequential_add(m, &y, &t, NULL, 1);
  }
  double want = 0;
  for (int i = 100000 - 10; i < 100000; i++) want += (double)(i % 7) * (i % 7);
  eddy_metric_values_t w = eddy_prequential_window(m);
  assert_int_equal(w.n, 10);
  assert_float_equal(w.mse, want / 10, 1e-9);
  assert_int_equal(eddy_prequential_cumulative(m).n, 100000);
  eddy_prequential_destroy(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_layout),
      cmocka_unit_test(test_geometry),
      cmocka_unit_test(test_optim_consts),
      cmocka_unit_test(test_validate),
      cmocka_unit_test(test_check_faults),
      cmocka_unit_test(test_json_round_trip),
      cmocka_unit_test(test_batch),
      cmocka_unit_test(test_scaler),
      cmocka_unit_test(test_metrics_softmax),
      cmocka_unit_test(test_metrics_logistic_squared),
      cmocka_unit_test(test_metrics_window_long_run),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
