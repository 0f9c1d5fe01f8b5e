/* Host-side logic of the CUDA backend in plain C (no CUDA types), unit-tested without a GPU
 * (tests/unit/cuda_host.c): device strings, the pinned staging layout a micro-batch is packed into,
 * the touched-embedding-row set, splitting a batch over devices, the CUDA-graph cache keyed by
 * batch shape. */
#ifndef EDDY_CUDA_HOST_H
#define EDDY_CUDA_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"
#include "model/batch.h"

#define EDDY_CUDA_MAX_DEVICES 16
#define EDDY_CUDA_GRAPH_CACHE 32

/* "cuda" (= device 0), "cuda:N" (0..63) or "cuda:all". *index gets N (0 for all). */
eddy_err_t eddy_cuda_parse_device(const char *device, int *index, bool *all, char *errstr, size_t errstr_size);

/* Staging layout of one micro-batch (host pinned buffer and its device twin). Sections sit at
 * offsets fixed by the capacities, so device pointers stay the same for every batch that fits:
 * what a captured CUDA graph needs. CSR offsets are rebased to 0 and stored as uint32. */
enum {
  EDDY_STAGE_DENSE = 0,
  EDDY_STAGE_LABEL,
  EDDY_STAGE_WEIGHT,
  EDDY_STAGE_CSR,
  EDDY_STAGE_IDX,
  EDDY_STAGE_VAL,
  EDDY_STAGE_SECTIONS
};

typedef struct {
  size_t cap_n, cap_nnz;
  uint32_t dense_dim;
  size_t offset[EDDY_STAGE_SECTIONS]; /* bytes from the buffer start, 256-byte aligned */
  size_t bytes;                       /* whole buffer */
} eddy_cuda_stage_t;

void eddy_cuda_stage_layout(eddy_cuda_stage_t *st, size_t cap_n, size_t cap_nnz, uint32_t dense_dim);
/* Bytes of section s used by a batch of n examples with nnz sparse entries. */
size_t eddy_cuda_stage_used(const eddy_cuda_stage_t *st, int section, size_t n, size_t nnz);
/* Packs examples [begin, end) of b into dst (st->bytes long); the slice must fit the capacities. */
void eddy_cuda_stage_pack(const eddy_cuda_stage_t *st, const eddy_batch_t *b, size_t begin, size_t end, void *dst);
/* Its two halves, so that large dense sections can be copied to the device in pieces while the
 * rest is packed: every section but the dense one; dense rows [row0, row1) of the slice. */
void eddy_cuda_stage_pack_rest(const eddy_cuda_stage_t *st, const eddy_batch_t *b, size_t begin, size_t end,
                               void *dst);
void eddy_cuda_stage_pack_dense(const eddy_cuda_stage_t *st, const eddy_batch_t *b, size_t begin, size_t row0,
                                size_t row1, void *dst);

/* The embedding rows with gradient since the last optimizer step: a bitmap plus the list in first-
 * seen order, as on the CPU. Growable up to the table's row count. */
typedef struct {
  uint64_t *mark;
  uint32_t *rows;
  size_t n, cap, max_rows;
} eddy_cuda_rows_t;

eddy_err_t eddy_cuda_rows_init(eddy_cuda_rows_t *r, size_t max_rows);
void eddy_cuda_rows_free(eddy_cuda_rows_t *r);
/* Adds every index of b's sparse entries [sparse_off[0], sparse_off[n]). All or nothing: on an error
 * the set is as it was, and errstr names the problem (EDDY_ERR_SHAPE: an index outside the table,
 * EDDY_ERR_NOMEM: no memory to grow the list). */
eddy_err_t eddy_cuda_rows_add_batch(eddy_cuda_rows_t *r, const eddy_batch_t *b, char *errstr, size_t errstr_size);
void eddy_cuda_rows_clear(eddy_cuda_rows_t *r);
/* Makes the set exactly rows[0..n) in that order (distinct rows below max_rows: the union every
 * data-parallel rank agrees on). EDDY_ERR_SHAPE for a row outside the table, EDDY_ERR_NOMEM; on an
 * error the set is empty. */
eddy_err_t eddy_cuda_rows_set(eddy_cuda_rows_t *r, const uint32_t *rows, size_t n, char *errstr, size_t errstr_size);

/* Contiguous share of n examples for device i of devices: sizes differ by at most one, the first
 * devices take the extra ones; a device may get none. */
void eddy_cuda_shard(size_t n, int devices, int i, size_t *begin, size_t *end);

/* CUDA-graph cache: one entry per key (batch size, staging slot, kind, buffer generation). The
 * first sighting of a key runs eagerly (it warms up cuBLAS), the second captures, later ones
 * replay. exec is the backend's cudaGraphExec_t, opaque here. */
typedef struct {
  uint64_t key;
  void *exec;
  uint32_t seen;
  bool failed; /* capture failed once: always eager */
  bool used;
  uint64_t last_used;
} eddy_cuda_graph_entry_t;

typedef struct {
  eddy_cuda_graph_entry_t e[EDDY_CUDA_GRAPH_CACHE];
  uint64_t clock;
} eddy_cuda_graph_cache_t;

typedef enum { EDDY_GRAPH_EAGER = 0, EDDY_GRAPH_CAPTURE, EDDY_GRAPH_REPLAY } eddy_cuda_graph_action_t;

uint64_t eddy_cuda_graph_key(size_t n, int slot, int kind, uint32_t generation);
/* Finds or makes the entry for key and counts this sighting. When the least recently used entry
 * is replaced, *evicted receives its exec (to destroy; NULL if none). */
eddy_cuda_graph_entry_t *eddy_cuda_graph_lookup(eddy_cuda_graph_cache_t *c, uint64_t key, void **evicted);
/* What to do with an entry just looked up. */
eddy_cuda_graph_action_t eddy_cuda_graph_action(const eddy_cuda_graph_entry_t *e);

#endif
