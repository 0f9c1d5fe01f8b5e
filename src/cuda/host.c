/* Host-side logic of the CUDA backend (see host.h): plain C, no CUDA calls. */
#include "cuda/host.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#define PACK_PARALLEL_BYTES ((size_t)1 << 20) /* dense sections above this are copied by several threads */
#define PACK_MAX_THREADS 8

eddy_err_t eddy_cuda_parse_device(const char *device, int *index, bool *all, char *errstr, size_t errstr_size) {
  *index = 0;
  *all = false;
  if (!device || strncmp(device, "cuda", 4) != 0)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "device \"%s\": not a CUDA device",
                     device ? device : "(null)");
  const char *rest = device + 4;
  if (!*rest) return EDDY_OK;
  if (*rest != ':' || !rest[1])
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "device \"%s\": expected cuda, cuda:N or cuda:all",
                     device);
  rest++;
  if (!strcmp(rest, "all")) {
    *all = true;
    return EDDY_OK;
  }
  int v = 0;
  for (const char *p = rest; *p; p++) {
    if (*p < '0' || *p > '9' || p - rest >= 2)
      return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                       "device \"%s\": expected cuda, cuda:N (N 0..63) or cuda:all", device);
    v = v * 10 + (*p - '0');
  }
  if (v > 63) return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "device \"%s\": N must be 0..63", device);
  *index = v;
  return EDDY_OK;
}

static size_t align256(size_t x) { return (x + 255) / 256 * 256; }

void eddy_cuda_stage_layout(eddy_cuda_stage_t *st, size_t cap_n, size_t cap_nnz, uint32_t dense_dim) {
  memset(st, 0, sizeof *st);
  st->cap_n = cap_n;
  st->cap_nnz = cap_nnz;
  st->dense_dim = dense_dim;
  size_t size[EDDY_STAGE_SECTIONS] = {
      [EDDY_STAGE_DENSE] = cap_n * dense_dim * sizeof(float),
      [EDDY_STAGE_LABEL] = cap_n * sizeof(float),
      [EDDY_STAGE_WEIGHT] = cap_n * sizeof(float),
      [EDDY_STAGE_CSR] = (cap_n + 1) * sizeof(uint32_t),
      [EDDY_STAGE_IDX] = cap_nnz * sizeof(uint32_t),
      [EDDY_STAGE_VAL] = cap_nnz * sizeof(float),
  };
  size_t off = 0;
  for (int s = 0; s < EDDY_STAGE_SECTIONS; s++) {
    st->offset[s] = off;
    off = align256(off + size[s]);
  }
  st->bytes = off ? off : 256;
}

size_t eddy_cuda_stage_used(const eddy_cuda_stage_t *st, int section, size_t n, size_t nnz) {
  switch (section) {
  case EDDY_STAGE_DENSE: return n * st->dense_dim * sizeof(float);
  case EDDY_STAGE_LABEL:
  case EDDY_STAGE_WEIGHT: return n * sizeof(float);
  case EDDY_STAGE_CSR: return (n + 1) * sizeof(uint32_t);
  case EDDY_STAGE_IDX: return nnz * sizeof(uint32_t);
  case EDDY_STAGE_VAL: return nnz * sizeof(float);
  }
  return 0;
}

/* memcpy, split over a few threads for large copies: one core's copy into pinned memory is the
 * input pipeline's bottleneck at large batches. */
static void copy_bytes(void *dst, const void *src, size_t bytes) {
#ifdef _OPENMP
  if (bytes >= PACK_PARALLEL_BYTES) {
    int threads = omp_get_num_procs();
    threads = threads < PACK_MAX_THREADS ? threads : PACK_MAX_THREADS;
    const size_t chunk = (bytes / (size_t)threads + 63) / 64 * 64;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int t = 0; t < threads; t++) {
      size_t lo = (size_t)t * chunk;
      if (lo >= bytes) continue;
      size_t len = bytes - lo < chunk ? bytes - lo : chunk;
      memcpy((char *)dst + lo, (const char *)src + lo, len);
    }
    return;
  }
#endif
  memcpy(dst, src, bytes);
}

void eddy_cuda_stage_pack_rest(const eddy_cuda_stage_t *st, const eddy_batch_t *b, size_t begin, size_t end,
                               void *dst) {
  unsigned char *base = dst;
  const size_t n = end - begin;
  memcpy(base + st->offset[EDDY_STAGE_LABEL], b->label + begin, n * sizeof(float));
  memcpy(base + st->offset[EDDY_STAGE_WEIGHT], b->weight + begin, n * sizeof(float));
  uint32_t *csr = (uint32_t *)(base + st->offset[EDDY_STAGE_CSR]);
  const size_t first = b->sparse_off[begin];
  for (size_t i = 0; i <= n; i++)
    csr[i] = (uint32_t)(b->sparse_off[begin + i] - first);
  const size_t nnz = b->sparse_off[end] - first;
  if (nnz) {
    memcpy(base + st->offset[EDDY_STAGE_IDX], b->sparse_idx + first, nnz * sizeof(uint32_t));
    memcpy(base + st->offset[EDDY_STAGE_VAL], b->sparse_val + first, nnz * sizeof(float));
  }
}

void eddy_cuda_stage_pack_dense(const eddy_cuda_stage_t *st, const eddy_batch_t *b, size_t begin, size_t row0,
                                size_t row1, void *dst) {
  const size_t D = st->dense_dim;
  if (!D || row1 <= row0) return;
  unsigned char *base = (unsigned char *)dst + st->offset[EDDY_STAGE_DENSE] + row0 * D * sizeof(float);
  copy_bytes(base, b->dense + (begin + row0) * D, (row1 - row0) * D * sizeof(float));
}

void eddy_cuda_stage_pack(const eddy_cuda_stage_t *st, const eddy_batch_t *b, size_t begin, size_t end, void *dst) {
  eddy_cuda_stage_pack_dense(st, b, begin, 0, end - begin, dst);
  eddy_cuda_stage_pack_rest(st, b, begin, end, dst);
}

eddy_err_t eddy_cuda_rows_init(eddy_cuda_rows_t *r, size_t max_rows) {
  memset(r, 0, sizeof *r);
  r->max_rows = max_rows;
  if (!max_rows) return EDDY_OK;
  r->cap = max_rows < 1024 ? max_rows : 1024;
  r->mark = calloc((max_rows + 63) / 64, sizeof *r->mark);
  r->rows = malloc(r->cap * sizeof *r->rows);
  if (!r->mark || !r->rows) {
    eddy_cuda_rows_free(r);
    return EDDY_ERR_NOMEM;
  }
  return EDDY_OK;
}

void eddy_cuda_rows_free(eddy_cuda_rows_t *r) {
  free(r->mark);
  free(r->rows);
  memset(r, 0, sizeof *r);
}

/* Forgets the rows added after the first `keep`. */
static void rows_truncate(eddy_cuda_rows_t *r, size_t keep) {
  for (size_t i = keep; i < r->n; i++)
    r->mark[r->rows[i] >> 6] &= ~(1ull << (r->rows[i] & 63));
  r->n = keep;
}

eddy_err_t eddy_cuda_rows_add_batch(eddy_cuda_rows_t *r, const eddy_batch_t *b, char *errstr, size_t errstr_size) {
  const size_t before = r->n;
  for (size_t j = b->sparse_off[0]; j < b->sparse_off[b->n]; j++) {
    const uint32_t row = b->sparse_idx[j];
    if (row >= r->max_rows) {
      rows_truncate(r, before);
      return eddy_errf(EDDY_ERR_SHAPE, errstr, errstr_size,
                       "sparse index %u (entry %zu of the batch): outside the embedding table's %zu rows", row, j,
                       r->max_rows);
    }
    const uint64_t bit = 1ull << (row & 63);
    if (r->mark[row >> 6] & bit) continue;
    if (r->n == r->cap) {
      size_t cap = r->cap * 2;
      if (cap > r->max_rows) cap = r->max_rows;
      uint32_t *rows = realloc(r->rows, cap * sizeof *rows);
      if (!rows) {
        rows_truncate(r, before);
        return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory for a list of %zu touched embedding rows",
                         cap);
      }
      r->rows = rows;
      r->cap = cap;
    }
    r->mark[row >> 6] |= bit;
    r->rows[r->n++] = row;
  }
  return EDDY_OK;
}

void eddy_cuda_rows_clear(eddy_cuda_rows_t *r) {
  for (size_t i = 0; i < r->n; i++)
    r->mark[r->rows[i] >> 6] = 0;
  r->n = 0;
}

eddy_err_t eddy_cuda_rows_set(eddy_cuda_rows_t *r, const uint32_t *rows, size_t n, char *errstr, size_t errstr_size) {
  eddy_cuda_rows_clear(r);
  if (n > r->cap) {
    uint32_t *grown = realloc(r->rows, n * sizeof *grown);
    if (!grown)
      return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory for a list of %zu touched embedding rows", n);
    r->rows = grown;
    r->cap = n;
  }
  for (size_t i = 0; i < n; i++) {
    if (rows[i] >= r->max_rows) {
      eddy_cuda_rows_clear(r);
      return eddy_errf(EDDY_ERR_SHAPE, errstr, errstr_size, "embedding row %u: outside the table's %zu rows", rows[i],
                       r->max_rows);
    }
    r->mark[rows[i] >> 6] |= 1ull << (rows[i] & 63);
    r->rows[i] = rows[i];
    r->n = i + 1;
  }
  return EDDY_OK;
}

void eddy_cuda_shard(size_t n, int devices, int i, size_t *begin, size_t *end) {
  if (devices < 1) devices = 1;
  const size_t d = (size_t)devices, base = n / d, extra = n % d, k = (size_t)i;
  *begin = k * base + (k < extra ? k : extra);
  *end = *begin + base + (k < extra ? 1 : 0);
}

uint64_t eddy_cuda_graph_key(size_t n, int slot, int kind, uint32_t generation) {
  return ((uint64_t)n & 0xffffffffull) | ((uint64_t)(slot & 0xff) << 32) | ((uint64_t)(kind & 0xff) << 40) |
         ((uint64_t)(generation & 0xffff) << 48);
}

eddy_cuda_graph_entry_t *eddy_cuda_graph_lookup(eddy_cuda_graph_cache_t *c, uint64_t key, void **evicted) {
  *evicted = NULL;
  eddy_cuda_graph_entry_t *victim = &c->e[0];
  for (size_t i = 0; i < EDDY_CUDA_GRAPH_CACHE; i++) {
    eddy_cuda_graph_entry_t *e = &c->e[i];
    if (e->used && e->key == key) {
      e->seen++;
      e->last_used = ++c->clock;
      return e;
    }
    if (!e->used) {
      if (victim->used) victim = e;
    } else if (victim->used && e->last_used < victim->last_used) {
      victim = e;
    }
  }
  if (victim->used) *evicted = victim->exec;
  memset(victim, 0, sizeof *victim);
  victim->used = true;
  victim->key = key;
  victim->seen = 1;
  victim->last_used = ++c->clock;
  return victim;
}

eddy_cuda_graph_action_t eddy_cuda_graph_action(const eddy_cuda_graph_entry_t *e) {
  if (e->failed || e->seen < 2) return EDDY_GRAPH_EAGER;
  return e->exec ? EDDY_GRAPH_REPLAY : EDDY_GRAPH_CAPTURE;
}
