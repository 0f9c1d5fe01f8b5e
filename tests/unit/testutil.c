/* Helpers for unit tests: temporary directories and files, and ranks made of threads. */
#include "testutil.h"

#include <ftw.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *eddy_test_tmpdir(void) {
  const char *base = getenv("TMPDIR");
  char tmpl[512];
  snprintf(tmpl, sizeof tmpl, "%s/eddy-test-XXXXXX", base && *base ? base : "/tmp");
  char *dir = mkdtemp(tmpl);
  if (!dir) {
    perror("mkdtemp");
    abort();
  }
  return strdup(dir);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

void eddy_test_rmdir(char *dir) {
  if (!dir) return;
  nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  free(dir);
}

char *eddy_test_write_file(const char *dir, const char *name, const void *data, size_t len) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *path = malloc(n);
  snprintf(path, n, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
    perror(path);
    abort();
  }
  return path;
}

/* ---- ranks made of threads ---- */

static void post(eddy_test_rank_t *t, const void *p, size_t len) {
  t->sh->ptr[t->c.rank] = p;
  t->sh->len[t->c.rank] = len;
  pthread_barrier_wait(&t->sh->bar);
}

static eddy_err_t t_barrier(void *ctx, char *errstr, size_t errstr_size) {
  pthread_barrier_wait(&((eddy_test_rank_t *)ctx)->sh->bar);
  return EDDY_OK;
}

static eddy_err_t t_sum_f32(void *ctx, float *buf, size_t n, char *errstr, size_t errstr_size) {
  eddy_test_rank_t *t = ctx;
  post(t, buf, n);
  float *tmp = malloc((n ? n : 1) * sizeof *tmp);
  for (size_t i = 0; i < n; i++) {
    float s = 0;
    for (int r = 0; r < t->sh->ranks; r++) s += ((const float *)t->sh->ptr[r])[i];
    tmp[i] = s;
  }
  pthread_barrier_wait(&t->sh->bar);
  memcpy(buf, tmp, n * sizeof *tmp);
  free(tmp);
  return EDDY_OK;
}

static eddy_err_t t_sum_u64(void *ctx, uint64_t *buf, size_t n, char *errstr, size_t errstr_size) {
  eddy_test_rank_t *t = ctx;
  post(t, buf, n);
  uint64_t *tmp = malloc((n ? n : 1) * sizeof *tmp);
  for (size_t i = 0; i < n; i++) {
    tmp[i] = 0;
    for (int r = 0; r < t->sh->ranks; r++) tmp[i] += ((const uint64_t *)t->sh->ptr[r])[i];
  }
  pthread_barrier_wait(&t->sh->bar);
  memcpy(buf, tmp, n * sizeof *tmp);
  free(tmp);
  return EDDY_OK;
}

static eddy_err_t t_bcast(void *ctx, void *buf, size_t bytes, int root, char *errstr, size_t errstr_size) {
  eddy_test_rank_t *t = ctx;
  post(t, buf, bytes);
  if (t->c.rank != root) memcpy(buf, t->sh->ptr[root], bytes);
  pthread_barrier_wait(&t->sh->bar);
  return EDDY_OK;
}

static eddy_err_t t_gather(void *ctx, const void *mine, size_t bytes, void **all, size_t *sizes, char *errstr,
                           size_t errstr_size) {
  eddy_test_rank_t *t = ctx;
  post(t, mine, bytes);
  size_t total = 0;
  for (int r = 0; r < t->sh->ranks; r++) total += sizes[r] = t->sh->len[r];
  char *out = total ? malloc(total) : NULL;
  for (size_t r = 0, off = 0; r < (size_t)t->sh->ranks; off += sizes[r], r++)
    if (sizes[r]) memcpy(out + off, t->sh->ptr[r], sizes[r]);
  pthread_barrier_wait(&t->sh->bar);
  *all = out;
  return EDDY_OK;
}

void eddy_test_ranks_init(eddy_test_ranks_t *sh, eddy_test_rank_t *t, int ranks) {
  memset(sh, 0, sizeof *sh);
  sh->ranks = ranks;
  pthread_barrier_init(&sh->bar, NULL, (unsigned)ranks);
  for (int r = 0; r < ranks; r++) {
    t[r].sh = sh;
    t[r].c = (eddy_collective_t){.ctx = &t[r], .rank = r, .ranks = ranks, .local_rank = r, .barrier = t_barrier,
                                 .sum_f32 = t_sum_f32, .sum_u64 = t_sum_u64, .bcast = t_bcast, .gather = t_gather};
  }
}

void eddy_test_ranks_free(eddy_test_ranks_t *sh) { pthread_barrier_destroy(&sh->bar); }
