/* The helpers every user of a collective shares (core/collective.h): the union of touched rows and
 * a byte string copied from one rank to all, built on the implementation's own operations. */
#include "core/collective.h"

#include <stdlib.h>
#include <string.h>

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

eddy_err_t eddy_collective_rows_union(const eddy_collective_t *c, const uint32_t *rows, size_t n, uint32_t **out,
                                      size_t *n_out, char *errstr, size_t errstr_size) {
  *out = NULL;
  *n_out = 0;
  size_t *sizes = calloc((size_t)c->ranks, sizeof *sizes);
  if (!sizes) return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "rows union: out of memory");
  void *all = NULL;
  eddy_err_t err = c->gather(c->ctx, rows, n * sizeof *rows, &all, sizes, errstr, errstr_size);
  if (err) {
    free(sizes);
    return err;
  }
  size_t total = 0;
  for (int r = 0; r < c->ranks; r++) total += sizes[r] / sizeof *rows;
  free(sizes);
  if (!total) {
    free(all);
    return EDDY_OK;
  }
  uint32_t *u = all;
  qsort(u, total, sizeof *u, cmp_u32);
  size_t k = 1;
  for (size_t i = 1; i < total; i++)
    if (u[i] != u[k - 1]) u[k++] = u[i];
  *out = u;
  *n_out = k;
  return EDDY_OK;
}

eddy_err_t eddy_collective_bcast_bytes(const eddy_collective_t *c, int root, char **data, size_t *len,
                                       char *errstr, size_t errstr_size) {
  uint64_t n = c->rank == root ? (uint64_t)*len : 0;
  eddy_err_t err = c->bcast(c->ctx, &n, sizeof n, root, errstr, errstr_size);
  if (err) return err;
  if (c->rank == root) return n ? c->bcast(c->ctx, *data, (size_t)n, root, errstr, errstr_size) : EDDY_OK;
  char *buf = malloc((size_t)n + 1);
  if (!buf) return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "broadcast of %llu bytes: out of memory",
                             (unsigned long long)n);
  if (n && (err = c->bcast(c->ctx, buf, (size_t)n, root, errstr, errstr_size))) {
    free(buf);
    return err;
  }
  buf[n] = '\0';
  *data = buf;
  *len = (size_t)n;
  return EDDY_OK;
}
