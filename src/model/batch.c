/* Micro-batches in struct-of-arrays form. Dense rows are fixed-size; sparse features are CSR and
 * grow on demand up to a hard cap, so a full batch costs no allocation once it has grown. */
#include "model/batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH_MAX_EVENTS (1u << 20)
#define BATCH_MAX_SPARSE (1ull << 28) /* sparse entries in one batch */

eddy_batch_t *eddy_batch_new(uint32_t dense_dim, size_t cap) {
  if (cap == 0 || cap > BATCH_MAX_EVENTS) return NULL;
  eddy_batch_t *b = calloc(1, sizeof *b);
  if (!b) return NULL;
  b->cap = cap;
  b->dense_dim = dense_dim;
  b->dense = malloc((dense_dim ? (size_t)dense_dim : 1) * cap * sizeof *b->dense);
  b->sparse_off = calloc(cap + 1, sizeof *b->sparse_off);
  b->label = malloc(cap * sizeof *b->label);
  b->weight = malloc(cap * sizeof *b->weight);
  if (!b->dense || !b->sparse_off || !b->label || !b->weight) {
    eddy_batch_destroy(b);
    return NULL;
  }
  return b;
}

void eddy_batch_destroy(eddy_batch_t *b) {
  if (!b) return;
  free(b->dense);
  free(b->sparse_off);
  free(b->sparse_idx);
  free(b->sparse_val);
  free(b->label);
  free(b->weight);
  free(b);
}

void eddy_batch_clear(eddy_batch_t *b) {
  b->n = 0;
  b->sparse_off[0] = 0;
}

static eddy_err_t grow_sparse(eddy_batch_t *b, size_t need) {
  if (need <= b->sparse_cap) return EDDY_OK;
  if (need > BATCH_MAX_SPARSE) return EDDY_ERR_TOO_LARGE;
  size_t cap = b->sparse_cap ? b->sparse_cap : 64;
  while (cap < need) cap *= 2;
  if (cap > BATCH_MAX_SPARSE) cap = BATCH_MAX_SPARSE;
  uint32_t *idx = realloc(b->sparse_idx, cap * sizeof *idx);
  if (!idx) return EDDY_ERR_NOMEM;
  b->sparse_idx = idx;
  float *val = realloc(b->sparse_val, cap * sizeof *val);
  if (!val) return EDDY_ERR_NOMEM;
  b->sparse_val = val;
  b->sparse_cap = cap;
  return EDDY_OK;
}

eddy_err_t eddy_batch_push_parts(eddy_batch_t *b, const void *dense, const uint32_t *sparse_idx,
                                 const float *sparse_val, uint32_t n_sparse) {
  if (b->n >= b->cap) return EDDY_ERR_TOO_LARGE;
  size_t start = b->sparse_off[b->n];
  eddy_err_t err = grow_sparse(b, start + n_sparse);
  if (err) return err;
  if (b->dense_dim) memcpy(b->dense + b->n * b->dense_dim, dense, b->dense_dim * sizeof *b->dense);
  if (n_sparse) {
    memcpy(b->sparse_idx + start, sparse_idx, n_sparse * sizeof *b->sparse_idx);
    memcpy(b->sparse_val + start, sparse_val, n_sparse * sizeof *b->sparse_val);
  }
  b->label[b->n] = 0.0f;
  b->weight[b->n] = 1.0f;
  b->n++;
  b->sparse_off[b->n] = start + n_sparse;
  return EDDY_OK;
}

eddy_err_t eddy_batch_push(eddy_batch_t *b, const eddy_event_t *ev) {
  if (b->n >= b->cap) return EDDY_ERR_TOO_LARGE;
  if (ev->n_dense != b->dense_dim) return EDDY_ERR_SHAPE;
  eddy_err_t err = eddy_batch_push_parts(b, ev->dense, ev->sparse_idx, ev->sparse_val, ev->n_sparse);
  if (err) return err;
  b->label[b->n - 1] = (float)ev->label;
  b->weight[b->n - 1] = ev->weight;
  return EDDY_OK;
}

eddy_err_t eddy_batch_push_instances(eddy_batch_t *b, const char *const *spans, size_t n, bool single,
                                     const eddy_event_schema_t *schema, eddy_event_t *ev, char *why,
                                     size_t why_size) {
  eddy_batch_clear(b);
  char msg[512];
  for (size_t i = 0; i < n; i++) {
    const char *text = spans[2 * i];
    eddy_err_t err = eddy_event_from_json(text, (size_t)(spans[2 * i + 1] - text), schema, ev, msg, sizeof msg);
    if (!err) {
      err = eddy_batch_push(b, ev);
      if (err) snprintf(msg, sizeof msg, "%s", err == EDDY_ERR_TOO_LARGE ? "more events than the batch holds"
                                                                           : eddy_err_str(err));
    }
    if (err) {
      if (single) eddy_errf(err, why, why_size, "%s", msg);
      else eddy_errf(err, why, why_size, "instances[%zu]: %s", i, msg);
      return err;
    }
  }
  return EDDY_OK;
}
