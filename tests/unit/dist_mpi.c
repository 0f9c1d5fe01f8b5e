/* The MPI collective (src/dist) under `mpirun -np 2` (CTest runs it so): rank, size and local
 * rank; a barrier that waits for a late rank without spinning (its CPU time is a fraction of the
 * wait); float sums that are bit-identical on every rank (checked by gathering every rank's bits);
 * exact u64 sums; broadcasts; gathers of records of different sizes (an empty one included); the
 * rows union; and two learners joined over MPI that end bit-identical to each other and equal, up
 * to rounding, to one learner that accumulated both ranks' batches. A failed check prints
 * "FAIL rank R: ..." and ends the job with exit 1. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "dist/dist.h"
#include "model/learner.h"

static eddy_dist_t *dist;
static int checks;

#define CHECK(cond, ...)                                                                  \
  do {                                                                                    \
    checks++;                                                                             \
    if (!(cond)) {                                                                        \
      fprintf(stderr, "FAIL rank %d: %s:%d: %s: ", c->rank, __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                                       \
      fprintf(stderr, "\n");                                                              \
      eddy_dist_abort(dist, 1);                                                           \
    }                                                                                     \
  } while (0)

static eddy_model_spec_t spec(void) {
  eddy_model_spec_t s;
  memset(&s, 0, sizeof s);
  s.hash_bits = 8;
  s.embed_dim = 4;
  s.dense_dim = 6;
  s.n_hidden = 1;
  s.hidden[0] = 16;
  s.head = EDDY_HEAD_SOFTMAX;
  s.classes = 4;
  return s;
}

/* Batch of step k for rank r: each rank touches its own embedding rows and some shared ones. */
static eddy_batch_t *batch(const eddy_model_spec_t *s, int k, int r) {
  uint64_t st = 7919u * (uint64_t)k + 104729u * (uint64_t)r + 1;
  eddy_batch_t *b = eddy_batch_new(s->dense_dim, 16);
  float dense[8], val[2] = {1.0f, 0.5f};
  uint32_t idx[2];
  for (int i = 0; i < 16; i++) {
    eddy_event_t ev;
    eddy_event_init(&ev);
    for (uint32_t j = 0; j < s->dense_dim; j++) {
      st = st * 6364136223846793005ull + 1442695040888963407ull;
      dense[j] = (float)((double)(st >> 11) * 0x1.0p-53 * 2 - 1);
    }
    idx[0] = (uint32_t)(r * 100 + (st >> 40) % 50);
    idx[1] = (uint32_t)((st >> 20) % 256);
    ev.dense = dense;
    ev.n_dense = s->dense_dim;
    ev.sparse_idx = idx;
    ev.sparse_val = val;
    ev.n_sparse = 2;
    ev.label = (double)((st >> 30) % 4);
    eddy_batch_push(b, &ev);
  }
  return b;
}

static float *weights(eddy_learner_t *l, size_t *n_out) {
  const eddy_tensor_info_t *t;
  size_t nt = eddy_learner_tensors(l, &t), n = 0;
  for (size_t i = 0; i < nt; i++) n += t[i].numel;
  float *w = malloc(n * sizeof *w), *p = w;
  for (size_t i = 0; i < nt; i++, p += t[i - 1].numel) eddy_learner_export(l, t[i].name, p, t[i].numel);
  *n_out = n;
  return w;
}

int main(void) {
  char err[512] = "";
  dist = eddy_dist_new(err, sizeof err);
  if (!dist) {
    fprintf(stderr, "dist_mpi: %s\n", err);
    return 1;
  }
  const eddy_collective_t *c = eddy_dist_collective(dist);
  CHECK(c->ranks == 2, "run me with mpirun -np 2 (size %d)", c->ranks);
  CHECK(c->local_rank == c->rank, "one machine: local rank %d, rank %d", c->local_rank, c->rank);

  /* float sums: the same bits everywhere (values whose sum rounds) */
  enum { N = 100003 };
  float *x = malloc(N * sizeof *x);
  for (int i = 0; i < N; i++) x[i] = (float)(c->rank ? 1e-3 * i : 1.0 / (i + 3));
  CHECK(c->sum_f32(c->ctx, x, N, err, sizeof err) == EDDY_OK, "%s", err);
  for (int i = 0; i < N; i += 997) {
    float want = (float)(1.0 / (i + 3)) + (float)(1e-3 * i);
    CHECK(fabsf(x[i] - want) <= 1e-6f * fabsf(want), "sum[%d] = %g, want %g", i, x[i], want);
  }
  void *all = NULL;
  size_t sizes[2];
  CHECK(c->gather(c->ctx, x, N * sizeof *x, &all, sizes, err, sizeof err) == EDDY_OK, "%s", err);
  CHECK(sizes[0] == N * sizeof *x && sizes[1] == sizes[0], "sizes %zu %zu", sizes[0], sizes[1]);
  CHECK(!memcmp(all, (char *)all + sizes[0], sizes[0]), "the ranks' float sums differ in their bits");
  free(all);

  /* a barrier where rank 1 comes late: rank 0 waits for it (and sleeps while it does) */
  if (c->rank == 1) {
    struct timespec ts = {0, 200 * 1000000L};
    nanosleep(&ts, NULL);
  }
  double cpu0 = (double)clock() / CLOCKS_PER_SEC, wall0 = eddy_clock_mono_s();
  CHECK(c->barrier(c->ctx, err, sizeof err) == EDDY_OK, "%s", err);
  double cpu = (double)clock() / CLOCKS_PER_SEC - cpu0, wall = eddy_clock_mono_s() - wall0;
  if (c->rank == 0) CHECK(wall > 0.15 && cpu < 0.5 * wall, "barrier: waited %.3f s, %.3f s of CPU", wall, cpu);

  /* u64 sums, broadcast */
  uint64_t u[3] = {1ull << 40, (uint64_t)c->rank, 5};
  CHECK(c->sum_u64(c->ctx, u, 3, err, sizeof err) == EDDY_OK, "%s", err);
  CHECK(u[0] == 1ull << 41 && u[1] == 1 && u[2] == 10, "u64 sums %llu %llu %llu", (unsigned long long)u[0],
        (unsigned long long)u[1], (unsigned long long)u[2]);
  char text[32];
  snprintf(text, sizeof text, "from rank %d", c->rank);
  CHECK(c->bcast(c->ctx, text, sizeof text, 1, err, sizeof err) == EDDY_OK, "%s", err);
  CHECK(!strcmp(text, "from rank 1"), "bcast gave \"%s\"", text);

  /* gathers of different sizes, one empty; the rows union */
  const char *mine = c->rank ? "rank one" : "";
  CHECK(c->gather(c->ctx, mine, strlen(mine), &all, sizes, err, sizeof err) == EDDY_OK, "%s", err);
  CHECK(sizes[0] == 0 && sizes[1] == 8 && all && !memcmp(all, "rank one", 8), "gather %zu %zu", sizes[0], sizes[1]);
  free(all);
  uint32_t rows[2][3] = {{40, 2, 40}, {7, 2, 90}};
  uint32_t *un = NULL;
  size_t nu = 0;
  CHECK(eddy_collective_rows_union(c, rows[c->rank], 3, &un, &nu, err, sizeof err) == EDDY_OK, "%s", err);
  CHECK(nu == 4 && un[0] == 2 && un[1] == 7 && un[2] == 40 && un[3] == 90, "union of %zu rows", nu);
  free(un);

  /* learners joined over MPI */
  eddy_model_spec_t s = spec();
  eddy_train_opts_t o = eddy_train_opts_defaults();
  o.optimizer = EDDY_OPT_ADAM;
  o.lr = 0.01f;
  o.threads = 1;
  eddy_learner_t *l = eddy_learner_new(&s, &o, "cpu", err, sizeof err), *ref = eddy_learner_new(&s, &o, "cpu", err,
                                                                                                sizeof err);
  CHECK(l && ref, "%s", err);
  CHECK(eddy_learner_join(l, c, err, sizeof err) == EDDY_OK, "%s", err);
  uint64_t bytes = 0;
  for (int k = 0; k < 5; k++) {
    eddy_batch_t *mine_b = batch(&s, k, c->rank);
    CHECK(eddy_learner_accumulate(l, mine_b, NULL, NULL) == EDDY_OK, "accumulate");
    eddy_step_info_t info;
    CHECK(eddy_learner_step(l, &info) == EDDY_OK, "step: %s", eddy_learner_last_error(l));
    CHECK(info.applied && info.examples == 32, "step %d: applied %d, %llu examples", k, info.applied,
          (unsigned long long)info.examples);
    bytes += info.exchanged_bytes;
    for (int r = 0; r < 2; r++) { /* the reference sees both ranks' batches */
      eddy_batch_t *b = batch(&s, k, r);
      eddy_learner_accumulate(ref, b, NULL, NULL);
      eddy_batch_destroy(b);
    }
    eddy_learner_step(ref, NULL);
    eddy_batch_destroy(mine_b);
  }
  CHECK(bytes > 0, "no gradient bytes counted");
  size_t n = 0, nr = 0;
  float *w = weights(l, &n), *wr = weights(ref, &nr);
  CHECK(c->gather(c->ctx, w, n * sizeof *w, &all, sizes, err, sizeof err) == EDDY_OK, "%s", err);
  CHECK(!memcmp(all, (char *)all + sizes[0], sizes[0]), "the ranks' weights differ");
  free(all);
  double worst = 0;
  size_t moved = 0;
  eddy_learner_t *fresh = eddy_learner_new(&s, &o, "cpu", err, sizeof err);
  size_t n0 = 0;
  float *w0 = weights(fresh, &n0);
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)w[i] - wr[i]) / (fabs(wr[i]) + 1e-3);
    if (d > worst) worst = d;
    moved += w[i] != w0[i];
  }
  CHECK(moved > n / 20, "only %zu of %zu weights moved", moved, n);
  CHECK(worst <= 1e-4, "2 ranks vs one learner: worst relative difference %g", worst);
  free(w);
  free(wr);
  free(w0);
  eddy_learner_destroy(l);
  eddy_learner_destroy(ref);
  eddy_learner_destroy(fresh);
  free(x);
  if (c->rank == 0) printf("dist_mpi: %d checks passed on each of 2 ranks\n", checks);
  eddy_dist_destroy(dist);
  return 0;
}
