/* Data-parallel learners (eddy_learner_join) on a collective made of threads: R ranks that each
 * accumulate their share of every step end bit-identical to each other and equal, up to rounding,
 * one learner that accumulated all the shares (dense layers and the embedding rows any rank
 * touched, Adam state, clipping); a rank with nothing contributes nothing; an Inf on one rank makes
 * every rank skip the step; sync_state copies a rank's whole state; the collective helpers. The
 * MPI collective itself is tested by dist_mpi (tests/unit/dist_mpi.c, under mpirun). */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/collective.h"
#include "model/learner.h"
#include "testutil.h"

#define MAX_RANKS EDDY_TEST_MAX_RANKS

/* ---- models and data ---- */

static uint64_t lcg_next(uint64_t *s) {
  *s = *s * 6364136223846793005ull + 1442695040888963407ull;
  return *s >> 11;
}

static double rnd(uint64_t *s) { return (double)lcg_next(s) * 0x1.0p-53; }

static eddy_model_spec_t spec_emb(void) {
  eddy_model_spec_t s;
  memset(&s, 0, sizeof s);
  s.hash_bits = 6;
  s.embed_dim = 3;
  s.dense_dim = 4;
  s.n_hidden = 1;
  s.hidden[0] = 8;
  s.head = EDDY_HEAD_SOFTMAX;
  s.classes = 3;
  return s;
}

static eddy_train_opts_t adam_opts(void) {
  eddy_train_opts_t o = eddy_train_opts_defaults();
  o.optimizer = EDDY_OPT_ADAM;
  o.lr = 0.01f;
  o.clip_norm = 0.5f; /* the norm of the summed gradient decides: exercised on every step */
  o.threads = 1;
  o.seed = 11;
  return o;
}

/* Batch (step k, share r) of n examples; sparse rows differ by share, so ranks touch different
 * embedding rows. */
static eddy_batch_t *share_batch(const eddy_model_spec_t *s, int k, int r, size_t n) {
  uint64_t st = 1000u * (uint64_t)k + 17u * (uint64_t)r + 5;
  eddy_batch_t *b = eddy_batch_new(s->dense_dim, n);
  float dense[16], val[2];
  uint32_t idx[2];
  for (size_t i = 0; i < n; i++) {
    eddy_event_t ev;
    eddy_event_init(&ev);
    for (uint32_t j = 0; j < s->dense_dim; j++) dense[j] = (float)(rnd(&st) * 2 - 1);
    idx[0] = (uint32_t)(r * 20 + lcg_next(&st) % 20);
    idx[1] = (uint32_t)(lcg_next(&st) % 64);
    val[0] = 1.0f;
    val[1] = (float)(rnd(&st) + 0.5);
    ev.dense = dense;
    ev.n_dense = s->dense_dim;
    ev.sparse_idx = idx;
    ev.sparse_val = val;
    ev.n_sparse = 2;
    ev.label = (double)(lcg_next(&st) % 3);
    ev.weight = 1.0f;
    eddy_batch_push(b, &ev);
  }
  return b;
}

#define STEPS 6
#define BATCH 8

/* Does share (k, r) exist? Rank 1 has nothing at step 3 (uneven arrival). */
static bool has_share(int k, int r) { return !(k == 3 && r == 1); }

static float *weights(eddy_learner_t *l, size_t *n_out) {
  const eddy_tensor_info_t *t;
  size_t nt = eddy_learner_tensors(l, &t), n = 0;
  for (size_t i = 0; i < nt; i++) n += t[i].numel;
  float *w = malloc(n * sizeof *w), *p = w;
  for (size_t i = 0; i < nt; i++) {
    eddy_learner_export(l, t[i].name, p, t[i].numel);
    p += t[i].numel;
  }
  *n_out = n;
  return w;
}

typedef struct {
  eddy_test_rank_t *rank;
  eddy_model_spec_t spec;
  eddy_train_opts_t opts;
  float *w;          /* final weights */
  size_t n;
  uint64_t examples[STEPS], steps;
  uint64_t bytes;
  eddy_err_t err;
  char msg[256];
  int poison_at;     /* this rank poisons its gradients at that step (-1 never) */
  bool applied[STEPS];
  float scale;
} work_t;

static void *rank_main(void *arg) {
  work_t *w = arg;
  eddy_learner_t *l = eddy_learner_new(&w->spec, &w->opts, "cpu", w->msg, sizeof w->msg);
  if (!l) {
    w->err = EDDY_ERR_STATE;
    return NULL;
  }
  if ((w->err = eddy_learner_join(l, &w->rank->c, w->msg, sizeof w->msg))) goto out;
  for (int k = 0; k < STEPS; k++) {
    int r = w->rank->c.rank;
    if (has_share(k, r)) {
      eddy_batch_t *b = share_batch(&w->spec, k, r, BATCH);
      w->err = eddy_learner_accumulate(l, b, NULL, NULL);
      eddy_batch_destroy(b);
      if (w->err) goto out;
    }
    if (k == w->poison_at) eddy_learner_poison_gradients(l, INFINITY);
    eddy_step_info_t info;
    if ((w->err = eddy_learner_step(l, &info))) goto out;
    w->examples[k] = info.examples;
    w->applied[k] = info.applied;
    w->bytes += info.exchanged_bytes;
  }
  w->steps = eddy_learner_step_count(l);
  w->scale = eddy_learner_scaler(l)->scale;
  w->w = weights(l, &w->n);
out:
  eddy_learner_destroy(l);
  return NULL;
}

static void run_ranks(int ranks, work_t *w, const eddy_model_spec_t *s, const eddy_train_opts_t *o, int poison_rank,
                      int poison_at) {
  eddy_test_ranks_t sh;
  eddy_test_rank_t t[MAX_RANKS];
  pthread_t th[MAX_RANKS];
  eddy_test_ranks_init(&sh, t, ranks);
  for (int r = 0; r < ranks; r++) {
    memset(&w[r], 0, sizeof w[r]);
    w[r].rank = &t[r];
    w[r].spec = *s;
    w[r].opts = *o;
    w[r].poison_at = r == poison_rank ? poison_at : -1;
    pthread_create(&th[r], NULL, rank_main, &w[r]);
  }
  for (int r = 0; r < ranks; r++) pthread_join(th[r], NULL);
  eddy_test_ranks_free(&sh);
  for (int r = 0; r < ranks; r++) {
    if (w[r].err) fprintf(stderr, "rank %d: %s: %s\n", r, eddy_err_str(w[r].err), w[r].msg);
    assert_int_equal(w[r].err, EDDY_OK);
  }
}

/* One learner that accumulates every share of every step. */
static float *single(const eddy_model_spec_t *s, const eddy_train_opts_t *o, int ranks, size_t *n,
                     uint64_t *steps) {
  char msg[256];
  eddy_learner_t *l = eddy_learner_new(s, o, "cpu", msg, sizeof msg);
  assert_non_null(l);
  for (int k = 0; k < STEPS; k++) {
    for (int r = 0; r < ranks; r++) {
      if (!has_share(k, r)) continue;
      eddy_batch_t *b = share_batch(s, k, r, BATCH);
      assert_int_equal(eddy_learner_accumulate(l, b, NULL, NULL), EDDY_OK);
      eddy_batch_destroy(b);
    }
    assert_int_equal(eddy_learner_step(l, NULL), EDDY_OK);
  }
  *steps = eddy_learner_step_count(l);
  float *w = weights(l, n);
  eddy_learner_destroy(l);
  return w;
}

static void test_ranks_equal_union(void **state) {
  const eddy_model_spec_t s = spec_emb();
  const eddy_train_opts_t o = adam_opts();
  for (int ranks = 2; ranks <= 3; ranks++) {
    work_t w[MAX_RANKS];
    run_ranks(ranks, w, &s, &o, -1, -1);
    size_t n;
    uint64_t steps;
    float *ref = single(&s, &o, ranks, &n, &steps);
    for (int r = 0; r < ranks; r++) {
      assert_int_equal(w[r].n, n);
      assert_int_equal(w[r].steps, steps);
      assert_int_equal(w[r].steps, STEPS);
      for (int k = 0; k < STEPS; k++) /* summed example counts: every rank sees the total */
        assert_int_equal(w[r].examples[k], (uint64_t)BATCH * (uint64_t)(ranks - (k == 3)));
      assert_true(w[r].bytes > 0);
      /* identical weights on every rank, bit for bit */
      assert_memory_equal(w[r].w, w[0].w, n * sizeof(float));
    }
    double worst = 0;
    size_t changed = 0;
    for (size_t i = 0; i < n; i++) {
      double d = fabs((double)w[0].w[i] - ref[i]) / (fabs(ref[i]) + 1e-3);
      if (d > worst) worst = d;
    }
    /* the ranks trained: their weights moved away from a fresh learner's */
    eddy_learner_t *fresh = eddy_learner_new(&s, &o, "cpu", NULL, 0);
    size_t n0;
    float *w0 = weights(fresh, &n0);
    for (size_t i = 0; i < n; i++) changed += w0[i] != w[0].w[i];
    free(w0);
    eddy_learner_destroy(fresh);
    assert_true(changed > n / 10);
    if (worst > 1e-4) fprintf(stderr, "%d ranks vs one learner: worst relative difference %g\n", ranks, worst);
    assert_true(worst <= 1e-4);
    for (int r = 0; r < ranks; r++) free(w[r].w);
    free(ref);
  }
}

/* Rank 1 alone has an Inf at step 2: both ranks skip that step together (and the fp16 scaler backs
 * off on both), and their weights stay identical. */
static void test_nonfinite_verdict_shared(void **state) {
  const eddy_model_spec_t s = spec_emb();
  eddy_train_opts_t o = adam_opts();
  o.precision = EDDY_PREC_FP16; /* dynamic loss scaling */
  work_t w[2];
  run_ranks(2, w, &s, &o, 1, 2);
  for (int r = 0; r < 2; r++) {
    assert_false(w[r].applied[2]);
    assert_true(w[r].applied[1] && w[r].applied[4]);
    assert_int_equal(w[r].steps, STEPS - 1);
  }
  assert_true(w[0].scale == w[1].scale);
  assert_true(w[0].scale < o.loss_scale.init_scale);
  assert_memory_equal(w[0].w, w[1].w, w[0].n * sizeof(float));
  free(w[0].w);
  free(w[1].w);
}

typedef struct {
  eddy_test_rank_t *rank;
  eddy_model_spec_t spec;
  float *w;
  size_t n;
  uint64_t steps;
  eddy_err_t err;
  char msg[256];
} sync_work_t;

/* Rank 0 trained two steps alone first; the others have other seeds. After sync_state every rank
 * holds rank 0's weights, optimizer state and step count: one more identical step keeps them
 * bit-identical. */
static void *sync_main(void *arg) {
  sync_work_t *w = arg;
  int r = w->rank->c.rank;
  eddy_train_opts_t o = adam_opts();
  o.seed = 100 + (uint64_t)r;
  eddy_learner_t *l = eddy_learner_new(&w->spec, &o, "cpu", w->msg, sizeof w->msg);
  if (!l) {
    w->err = EDDY_ERR_STATE;
    return NULL;
  }
  if (r == 0)
    for (int k = 0; k < 2; k++) {
      eddy_batch_t *b = share_batch(&w->spec, k, 0, BATCH);
      eddy_learner_accumulate(l, b, NULL, NULL);
      eddy_batch_destroy(b);
      eddy_learner_step(l, NULL);
    }
  else { /* something accumulated and never stepped: sync drops it */
    eddy_batch_t *b = share_batch(&w->spec, 9, r, BATCH);
    eddy_learner_accumulate(l, b, NULL, NULL);
    eddy_batch_destroy(b);
  }
  if ((w->err = eddy_learner_join(l, &w->rank->c, w->msg, sizeof w->msg)) ||
      (w->err = eddy_learner_sync_state(l, 0, w->msg, sizeof w->msg)))
    goto out;
  eddy_batch_t *b = share_batch(&w->spec, 5, r, BATCH);
  eddy_learner_accumulate(l, b, NULL, NULL);
  eddy_batch_destroy(b);
  if ((w->err = eddy_learner_step(l, NULL))) goto out;
  w->steps = eddy_learner_step_count(l);
  w->w = weights(l, &w->n);
out:
  eddy_learner_destroy(l);
  return NULL;
}

static void test_sync_state(void **state) {
  eddy_test_ranks_t sh;
  eddy_test_rank_t t[3];
  pthread_t th[3];
  sync_work_t w[3];
  eddy_test_ranks_init(&sh, t, 3);
  for (int r = 0; r < 3; r++) {
    memset(&w[r], 0, sizeof w[r]);
    w[r].rank = &t[r];
    w[r].spec = spec_emb();
    pthread_create(&th[r], NULL, sync_main, &w[r]);
  }
  for (int r = 0; r < 3; r++) pthread_join(th[r], NULL);
  eddy_test_ranks_free(&sh);
  for (int r = 0; r < 3; r++) {
    if (w[r].err) fprintf(stderr, "rank %d: %s\n", r, w[r].msg);
    assert_int_equal(w[r].err, EDDY_OK);
    assert_int_equal(w[r].steps, 3);
    assert_memory_equal(w[r].w, w[0].w, w[0].n * sizeof(float));
  }
  for (int r = 0; r < 3; r++) free(w[r].w);
}

/* ---- the helpers ---- */

typedef struct {
  eddy_test_rank_t *rank;
  uint32_t *u;
  size_t n;
  char *text;
  size_t len;
  eddy_err_t err;
} helper_work_t;

static void *helper_main(void *arg) {
  helper_work_t *w = arg;
  int r = w->rank->c.rank;
  uint32_t rows[3][4] = {{9, 3, 3, 7}, {}, {7, 1, 12, 9}};
  size_t n[3] = {4, 0, 4};
  char msg[128];
  w->err = eddy_collective_rows_union(&w->rank->c, rows[r], n[r], &w->u, &w->n, msg, sizeof msg);
  char root_text[] = "manifest of rank 2";
  w->text = r == 2 ? root_text : NULL;
  w->len = r == 2 ? strlen(root_text) : 0;
  if (!w->err) w->err = eddy_collective_bcast_bytes(&w->rank->c, 2, &w->text, &w->len, msg, sizeof msg);
  if (r == 2) w->text = strdup(w->text);
  return NULL;
}

static void test_helpers(void **state) {
  eddy_test_ranks_t sh;
  eddy_test_rank_t t[3];
  pthread_t th[3];
  helper_work_t w[3];
  eddy_test_ranks_init(&sh, t, 3);
  for (int r = 0; r < 3; r++) {
    memset(&w[r], 0, sizeof w[r]);
    w[r].rank = &t[r];
    pthread_create(&th[r], NULL, helper_main, &w[r]);
  }
  for (int r = 0; r < 3; r++) pthread_join(th[r], NULL);
  eddy_test_ranks_free(&sh);
  const uint32_t want[] = {1, 3, 7, 9, 12};
  for (int r = 0; r < 3; r++) {
    assert_int_equal(w[r].err, EDDY_OK);
    assert_int_equal(w[r].n, 5);
    assert_memory_equal(w[r].u, want, sizeof want);
    assert_int_equal(w[r].len, 18);
    assert_string_equal(w[r].text, "manifest of rank 2");
    free(w[r].u);
    free(w[r].text);
  }
}

/* Joining one rank (or none) is being alone: steps are the plain ones. */
static void test_join_alone(void **state) {
  eddy_model_spec_t s = spec_emb();
  eddy_train_opts_t o = adam_opts();
  eddy_learner_t *l = eddy_learner_new(&s, &o, "cpu", NULL, 0);
  eddy_collective_t one = {.ranks = 1};
  char msg[128];
  assert_int_equal(eddy_learner_join(l, &one, msg, sizeof msg), EDDY_OK);
  assert_int_equal(eddy_learner_sync_state(l, 0, msg, sizeof msg), EDDY_OK);
  eddy_batch_t *b = share_batch(&s, 0, 0, BATCH);
  assert_int_equal(eddy_learner_accumulate(l, b, NULL, NULL), EDDY_OK);
  eddy_step_info_t info;
  assert_int_equal(eddy_learner_step(l, &info), EDDY_OK);
  assert_true(info.applied);
  assert_int_equal(info.examples, BATCH);
  assert_int_equal(info.exchanged_bytes, 0);
  eddy_batch_destroy(b);
  eddy_learner_destroy(l);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ranks_equal_union), cmocka_unit_test(test_nonfinite_verdict_shared),
      cmocka_unit_test(test_sync_state),        cmocka_unit_test(test_helpers),
      cmocka_unit_test(test_join_alone),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
