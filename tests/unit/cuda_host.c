/* Host-side logic of the CUDA backend, no GPU needed (built with EDDY_CUDA=ON): device strings,
 * the staging layout and packing, the touched-row set, batch sharding over devices, the step
 * scalars (averaging by the true example count, clipping, Inf/NaN), the CUDA-graph cache policy,
 * and the dispatcher's CPU fallback when the machine has no usable GPU. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cuda/cuda.h"
#include "cuda/host.h"
#include "model/learner.h"
#include "model/learner_backend.h"
#include "model/optim.h"

static void test_parse_device(void **state) {
  int index;
  bool all;
  char err[128];
  assert_int_equal(eddy_cuda_parse_device("cuda", &index, &all, err, sizeof err), EDDY_OK);
  assert_int_equal(index, 0);
  assert_false(all);
  assert_int_equal(eddy_cuda_parse_device("cuda:7", &index, &all, err, sizeof err), EDDY_OK);
  assert_int_equal(index, 7);
  assert_int_equal(eddy_cuda_parse_device("cuda:63", &index, &all, err, sizeof err), EDDY_OK);
  assert_int_equal(index, 63);
  assert_int_equal(eddy_cuda_parse_device("cuda:all", &index, &all, err, sizeof err), EDDY_OK);
  assert_true(all);
  const char *bad[] = {"cuda:", "cuda:64", "cuda:-1", "cuda:1x", "cuda:007", "cudax", "cpu", "cuda:ALL"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = 0;
    if (eddy_cuda_parse_device(bad[i], &index, &all, err, sizeof err) != EDDY_ERR_INVALID_ARG)
      fail_msg("device \"%s\" accepted", bad[i]);
    assert_non_null(strstr(err, bad[i]));
  }
}

static eddy_batch_t *sparse_batch(size_t n, uint32_t dense_dim) {
  eddy_batch_t *b = eddy_batch_new(dense_dim, n);
  float dense[8];
  uint32_t idx[4];
  float val[4];
  for (size_t i = 0; i < n; i++) {
    eddy_event_t ev;
    eddy_event_init(&ev);
    for (uint32_t k = 0; k < dense_dim; k++)
      dense[k] = (float)(i * 10 + k);
    uint32_t ns = (uint32_t)(i % 4);
    for (uint32_t j = 0; j < ns; j++)
      idx[j] = (uint32_t)(i * 3 + j) % 50, val[j] = (float)j + 0.5f;
    ev.dense = dense;
    ev.n_dense = dense_dim;
    ev.sparse_idx = idx;
    ev.sparse_val = val;
    ev.n_sparse = ns;
    ev.label = (double)(i % 3);
    ev.weight = 1.0f + (float)i;
    assert_int_equal(eddy_batch_push(b, &ev), EDDY_OK);
  }
  return b;
}

static void test_stage_layout_and_pack(void **state) {
  eddy_cuda_stage_t st;
  eddy_cuda_stage_layout(&st, 16, 64, 3);
  for (int s = 0; s < EDDY_STAGE_SECTIONS; s++) {
    assert_int_equal(st.offset[s] % 256, 0);
    size_t cap_used = eddy_cuda_stage_used(&st, s, st.cap_n, st.cap_nnz);
    size_t end = s + 1 < EDDY_STAGE_SECTIONS ? st.offset[s + 1] : st.bytes;
    assert_true(st.offset[s] + cap_used <= end); /* sections never overlap at full capacity */
  }
  /* Offsets depend on the capacities only, not on the batch. */
  eddy_cuda_stage_t again;
  eddy_cuda_stage_layout(&again, 16, 64, 3);
  assert_memory_equal(st.offset, again.offset, sizeof st.offset);

  eddy_batch_t *b = sparse_batch(9, 3);
  unsigned char *buf = malloc(st.bytes);
  memset(buf, 0xab, st.bytes);
  const size_t begin = 2, end = 7, nnz = b->sparse_off[end] - b->sparse_off[begin];
  eddy_cuda_stage_pack(&st, b, begin, end, buf);
  const float *dense = (const float *)(buf + st.offset[EDDY_STAGE_DENSE]);
  const float *label = (const float *)(buf + st.offset[EDDY_STAGE_LABEL]);
  const float *weight = (const float *)(buf + st.offset[EDDY_STAGE_WEIGHT]);
  const uint32_t *csr = (const uint32_t *)(buf + st.offset[EDDY_STAGE_CSR]);
  const uint32_t *idx = (const uint32_t *)(buf + st.offset[EDDY_STAGE_IDX]);
  const float *val = (const float *)(buf + st.offset[EDDY_STAGE_VAL]);
  assert_int_equal(csr[0], 0);
  assert_int_equal(csr[end - begin], nnz);
  for (size_t i = 0; i < end - begin; i++) {
    for (int k = 0; k < 3; k++)
      assert_float_equal(dense[i * 3 + k], (float)((begin + i) * 10 + k), 0);
    assert_float_equal(label[i], b->label[begin + i], 0);
    assert_float_equal(weight[i], b->weight[begin + i], 0);
    assert_int_equal(csr[i + 1] - csr[i], b->sparse_off[begin + i + 1] - b->sparse_off[begin + i]);
  }
  for (size_t j = 0; j < nnz; j++) {
    assert_int_equal(idx[j], b->sparse_idx[b->sparse_off[begin] + j]);
    assert_float_equal(val[j], b->sparse_val[b->sparse_off[begin] + j], 0);
  }
  /* A large dense section goes through the multi-threaded copy: same bytes. */
  {
    const uint32_t D = 300;
    const size_t n = 1100;
    eddy_batch_t *big = eddy_batch_new(D, n);
    float *row = malloc(D * sizeof *row);
    for (size_t i = 0; i < n; i++) {
      eddy_event_t ev;
      eddy_event_init(&ev);
      for (uint32_t k = 0; k < D; k++)
        row[k] = (float)(i * D + k);
      ev.dense = row;
      ev.n_dense = D;
      ev.label = 0;
      ev.weight = 1;
      assert_int_equal(eddy_batch_push(big, &ev), EDDY_OK);
    }
    eddy_cuda_stage_t bs;
    eddy_cuda_stage_layout(&bs, 2048, 64, D);
    unsigned char *bb = malloc(bs.bytes);
    eddy_cuda_stage_pack(&bs, big, 3, n, bb);
    assert_true((n - 3) * D * sizeof(float) >= (1u << 20));
    assert_memory_equal(bb + bs.offset[EDDY_STAGE_DENSE], big->dense + 3 * D, (n - 3) * D * sizeof(float));
    /* Packed in pieces (rest, then dense rows in uneven chunks): the same buffer. */
    unsigned char *pieces = malloc(bs.bytes);
    memcpy(pieces, bb, bs.bytes);
    memset(pieces + bs.offset[EDDY_STAGE_DENSE], 0, (n - 3) * D * sizeof(float));
    eddy_cuda_stage_pack_rest(&bs, big, 3, n, pieces);
    for (size_t r0 = 0; r0 < n - 3; r0 += 333)
      eddy_cuda_stage_pack_dense(&bs, big, 3, r0, r0 + 333 < n - 3 ? r0 + 333 : n - 3, pieces);
    assert_memory_equal(pieces, bb, bs.bytes);
    free(pieces);
    free(bb);
    free(row);
    eddy_batch_destroy(big);
  }
  /* A dense-free model (dense_dim 0) has an empty dense section. */
  eddy_cuda_stage_layout(&st, 8, 8, 0);
  assert_int_equal(eddy_cuda_stage_used(&st, EDDY_STAGE_DENSE, 8, 8), 0);
  assert_int_equal(eddy_cuda_stage_used(&st, EDDY_STAGE_CSR, 5, 3), 6 * sizeof(uint32_t));
  free(buf);
  eddy_batch_destroy(b);
}

static void test_rows(void **state) {
  eddy_cuda_rows_t r;
  assert_int_equal(eddy_cuda_rows_init(&r, 5000), EDDY_OK);
  eddy_batch_t *b = eddy_batch_new(0, 4096);
  uint32_t idx[2];
  float val[2] = {1, 1};
  for (uint32_t i = 0; i < 3000; i++) { /* rows 0..2999, each twice, plus one repeat per pair */
    eddy_event_t ev;
    eddy_event_init(&ev);
    idx[0] = i;
    idx[1] = i / 2;
    ev.sparse_idx = idx;
    ev.sparse_val = val;
    ev.n_sparse = 2;
    ev.label = 0;
    ev.weight = 1;
    assert_int_equal(eddy_batch_push(b, &ev), EDDY_OK);
  }
  char err[256] = "";
  assert_int_equal(eddy_cuda_rows_add_batch(&r, b, err, sizeof err), EDDY_OK);
  assert_int_equal(r.n, 3000);
  for (uint32_t i = 0; i < 10; i++)
    assert_int_equal(r.rows[i], i); /* first-seen order */
  assert_int_equal(eddy_cuda_rows_add_batch(&r, b, err, sizeof err), EDDY_OK);
  assert_int_equal(r.n, 3000);
  eddy_cuda_rows_clear(&r);
  assert_int_equal(r.n, 0);
  for (size_t w = 0; w < (5000 + 63) / 64; w++)
    assert_int_equal(r.mark[w], 0);
  /* An index out of the table, after 2000 new rows of the same batch: a shape error that names the
   * index (not "out of memory"), and the set keeps only what it had before the batch. */
  eddy_batch_t *one = eddy_batch_new(0, 1);
  eddy_event_t ev;
  eddy_event_init(&ev);
  idx[0] = 4999;
  ev.sparse_idx = idx;
  ev.sparse_val = val;
  ev.n_sparse = 1;
  ev.label = 0;
  ev.weight = 1;
  assert_int_equal(eddy_batch_push(one, &ev), EDDY_OK);
  assert_int_equal(eddy_cuda_rows_add_batch(&r, one, err, sizeof err), EDDY_OK);
  b->sparse_idx[4000] = 5000; /* entry 4000: example 2000's first index */
  assert_int_equal(eddy_cuda_rows_add_batch(&r, b, err, sizeof err), EDDY_ERR_SHAPE);
  assert_non_null(strstr(err, "sparse index 5000 (entry 4000"));
  assert_non_null(strstr(err, "5000 rows"));
  assert_int_equal(r.n, 1);
  assert_int_equal(r.rows[0], 4999);
  for (size_t w = 0; w < (5000 + 63) / 64; w++)
    assert_int_equal(r.mark[w], w == 4999 / 64 ? 1ull << (4999 % 64) : 0);
  b->sparse_idx[4000] = 2000;
  assert_int_equal(eddy_cuda_rows_add_batch(&r, b, err, sizeof err), EDDY_OK);
  assert_int_equal(r.n, 3001);
  eddy_batch_destroy(one);
  eddy_batch_destroy(b);
  eddy_cuda_rows_free(&r);
}

/* The union of the ranks' rows replaces the set: exactly that list, marks included; a row outside
 * the table empties it with a shape error; adding a batch afterwards knows the union's rows. */
static void test_rows_set(void **state) {
  eddy_cuda_rows_t r;
  assert_int_equal(eddy_cuda_rows_init(&r, 3000), EDDY_OK);
  char err[256] = "";
  uint32_t first[] = {7, 9};
  assert_int_equal(eddy_cuda_rows_set(&r, first, 2, err, sizeof err), EDDY_OK);
  uint32_t *many = malloc(2500 * sizeof *many);
  for (uint32_t i = 0; i < 2500; i++) many[i] = i + 100; /* beyond the initial list capacity */
  assert_int_equal(eddy_cuda_rows_set(&r, many, 2500, err, sizeof err), EDDY_OK);
  assert_int_equal(r.n, 2500);
  assert_memory_equal(r.rows, many, 2500 * sizeof *many);
  assert_int_equal(r.mark[7 / 64] & (1ull << 7), 0); /* the old list's rows are gone */
  assert_true(r.mark[150 / 64] & (1ull << (150 % 64)));
  eddy_batch_t *b = eddy_batch_new(0, 1);
  uint32_t idx[2] = {150, 5};
  float val[2] = {1, 1};
  eddy_event_t ev;
  eddy_event_init(&ev);
  ev.sparse_idx = idx;
  ev.sparse_val = val;
  ev.n_sparse = 2;
  assert_int_equal(eddy_batch_push(b, &ev), EDDY_OK);
  assert_int_equal(eddy_cuda_rows_add_batch(&r, b, err, sizeof err), EDDY_OK);
  assert_int_equal(r.n, 2501); /* 150 was in the union already; 5 is new */
  assert_int_equal(r.rows[2500], 5);
  many[10] = 3000;
  assert_int_equal(eddy_cuda_rows_set(&r, many, 2500, err, sizeof err), EDDY_ERR_SHAPE);
  assert_non_null(strstr(err, "row 3000"));
  assert_int_equal(r.n, 0);
  for (size_t w = 0; w < (3000 + 63) / 64; w++) assert_int_equal(r.mark[w], 0);
  free(many);
  eddy_batch_destroy(b);
  eddy_cuda_rows_free(&r);
}

static void test_shard(void **state) {
  const size_t sizes[] = {0, 1, 3, 7, 8, 1000, 4097};
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    for (int devices = 1; devices <= 8; devices++) {
      size_t covered = 0, lo = SIZE_MAX, hi = 0;
      for (int i = 0; i < devices; i++) {
        size_t b, e;
        eddy_cuda_shard(sizes[s], devices, i, &b, &e);
        assert_int_equal(b, covered); /* contiguous, in order */
        covered = e;
        lo = e - b < lo ? e - b : lo;
        hi = e - b > hi ? e - b : hi;
      }
      assert_int_equal(covered, sizes[s]);
      assert_true(hi - lo <= 1);
    }
  }
  size_t b, e;
  eddy_cuda_shard(3, 8, 5, &b, &e); /* more devices than examples: an empty share */
  assert_int_equal(b, e);
}

static void test_step_scalars(void **state) {
  /* Two devices: 3 and 5 examples; the all-reduced sum is divided by 8, not by a device count. */
  eddy_optim_scalars_t s = eddy_optim_step_scalars(3 + 5, 1.0, 64.0, 0.0f);
  assert_false(s.nonfinite);
  assert_float_equal(s.inv, 1.0 / 8.0, 0);
  assert_float_equal(s.norm, 1.0, 1e-15);
  assert_float_equal(s.gmul, 0.125f, 0);
  /* Loss scale 1024 is divided out; clipping at 0.5 of a norm of 1 gives coefficient 0.5/(1+1e-6). */
  s = eddy_optim_step_scalars(8, 1024.0, 64.0 * 1024 * 1024, 0.5f);
  assert_float_equal(s.norm, 1.0, 1e-12);
  assert_float_equal(s.gmul, (float)(1.0 / (8.0 * 1024.0) * (0.5 / (1.0 + 1e-6))), 0);
  /* Clipping does not act below the threshold. */
  s = eddy_optim_step_scalars(8, 1.0, 64.0, 2.0f);
  assert_float_equal(s.gmul, 0.125f, 0);
  assert_true(eddy_optim_step_scalars(8, 1.0, INFINITY, 0).nonfinite);
  assert_true(eddy_optim_step_scalars(8, 1.0, NAN, 0).nonfinite);
  assert_false(eddy_optim_step_scalars(8, 1.0, 1e300, 0).nonfinite);
  /* Nothing accumulated but poisoned: divides by 1, like the CPU. */
  assert_float_equal(eddy_optim_step_scalars(0, 2.0, 4.0, 0).inv, 0.5, 0);
}

static void test_graph_cache(void **state) {
  eddy_cuda_graph_cache_t c;
  memset(&c, 0, sizeof c);
  void *evicted;
  uint64_t k32 = eddy_cuda_graph_key(32, 0, 0, 1), k32b = eddy_cuda_graph_key(32, 1, 0, 1);
  assert_true(k32 != k32b);
  assert_true(eddy_cuda_graph_key(32, 0, 0, 2) != k32);
  eddy_cuda_graph_entry_t *e = eddy_cuda_graph_lookup(&c, k32, &evicted);
  assert_null(evicted);
  assert_int_equal(eddy_cuda_graph_action(e), EDDY_GRAPH_EAGER);
  e = eddy_cuda_graph_lookup(&c, k32, &evicted);
  assert_int_equal(eddy_cuda_graph_action(e), EDDY_GRAPH_CAPTURE);
  static int exec_token;
  e->exec = &exec_token;
  e = eddy_cuda_graph_lookup(&c, k32, &evicted);
  assert_int_equal(eddy_cuda_graph_action(e), EDDY_GRAPH_REPLAY);
  /* A failed capture stays eager. */
  eddy_cuda_graph_entry_t *f = eddy_cuda_graph_lookup(&c, k32b, &evicted);
  f = eddy_cuda_graph_lookup(&c, k32b, &evicted);
  f->failed = true;
  f = eddy_cuda_graph_lookup(&c, k32b, &evicted);
  assert_int_equal(eddy_cuda_graph_action(f), EDDY_GRAPH_EAGER);
  /* Filling the cache evicts the least recently used entry and hands back its exec. */
  int evictions = 0;
  bool got_token = false;
  for (size_t n = 100; n < 100 + EDDY_CUDA_GRAPH_CACHE; n++) {
    eddy_cuda_graph_lookup(&c, eddy_cuda_graph_key(n, 0, 0, 1), &evicted);
    if (evicted == &exec_token) got_token = true;
    evictions += evicted != NULL;
  }
  assert_true(got_token);
  assert_int_equal(evictions, 1); /* only k32 carried an exec */
  e = eddy_cuda_graph_lookup(&c, k32, &evicted);
  assert_int_equal(e->seen, 1); /* forgotten: starts over */
}

/* Without a usable GPU, "cuda" learners train on the CPU backend; malformed strings still fail. */
static void test_fallback(void **state) {
  eddy_model_spec_t s;
  memset(&s, 0, sizeof s);
  s.dense_dim = 4;
  s.n_hidden = 1;
  s.hidden[0] = 3;
  s.head = EDDY_HEAD_LOGISTIC;
  eddy_train_opts_t o = eddy_train_opts_defaults();
  char err[256] = "", why[256] = "";
  /* Unregistered, "cuda" is a build without the backend; registered, it runs or falls back. */
  assert_null(eddy_learner_new(&s, &o, "cuda", err, sizeof err));
  assert_non_null(strstr(err, "no CUDA backend"));
  assert_int_equal(eddy_learner_register(eddy_cuda_backend()), EDDY_OK);
  int devices = eddy_cuda_device_count(why, sizeof why);
  printf("CUDA devices here: %d%s%s\n", devices, devices ? "" : ": ", why);
  eddy_learner_t *l = eddy_learner_new(&s, &o, "cuda", err, sizeof err);
  if (!l) fail_msg("learner_new(cuda): %s", err);
  if (devices == 0)
    assert_string_equal(eddy_learner_backend(l), "cpu");
  else
    assert_non_null(strstr(eddy_learner_backend(l), "cuda:0"));
  eddy_learner_destroy(l);
  assert_null(eddy_learner_new(&s, &o, "cuda:banana", err, sizeof err));
  assert_non_null(strstr(err, "cuda:banana"));
  assert_null(eddy_learner_new(&s, &o, "gpu", err, sizeof err));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_device), cmocka_unit_test(test_stage_layout_and_pack),
      cmocka_unit_test(test_rows),         cmocka_unit_test(test_rows_set),     cmocka_unit_test(test_shard),
      cmocka_unit_test(test_step_scalars), cmocka_unit_test(test_graph_cache),
      cmocka_unit_test(test_fallback),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
