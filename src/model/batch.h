/* A micro-batch in struct-of-arrays form, built from decoded events; the learner API's input. */
#ifndef EDDY_BATCH_H
#define EDDY_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"
#include "core/event.h"

typedef struct {
  size_t n, cap;
  uint32_t dense_dim;
  float *dense;          /* n × dense_dim, row-major */
  size_t *sparse_off;    /* n + 1 offsets into sparse_idx/sparse_val (CSR) */
  uint32_t *sparse_idx;
  float *sparse_val;
  size_t sparse_cap;
  float *label;          /* class index (softmax), 0/1 (logistic), value (squared) */
  float *weight;         /* example weight */
} eddy_batch_t;

/* Batch for up to cap events of dense_dim features. NULL on allocation failure. */
eddy_batch_t *eddy_batch_new(uint32_t dense_dim, size_t cap);
void eddy_batch_destroy(eddy_batch_t *b);
void eddy_batch_clear(eddy_batch_t *b);
/* Appends a copy of ev. EDDY_ERR_TOO_LARGE when full, EDDY_ERR_SHAPE on a dense length mismatch. */
eddy_err_t eddy_batch_push(eddy_batch_t *b, const eddy_event_t *ev);
/* Appends an unlabeled event (label 0, weight 1) from its parts: dense_dim floats at dense (any
 * alignment; NULL only when dense_dim is 0) and n_sparse features. EDDY_ERR_TOO_LARGE when full. */
eddy_err_t eddy_batch_push_parts(eddy_batch_t *b, const void *dense, const uint32_t *sparse_idx,
                                 const float *sparse_val, uint32_t n_sparse);
/* The events of a prediction request, as eddy_event_split_instances cut them into spans (n of
 * them; single: the body was one event, not a wrapper), decoded against schema and appended to b
 * (cleared first; room for n events). ev is scratch. On failure why names the instance and the
 * problem ("instances[2]: dense[0] is NaN"; no prefix when single) and the error is returned. */
eddy_err_t eddy_batch_push_instances(eddy_batch_t *b, const char *const *spans, size_t n, bool single,
                                     const eddy_event_schema_t *schema, eddy_event_t *ev, char *why,
                                     size_t why_size);

#endif
