/* Model spec and the flat parameter layout. Every parameter lives in one flat fp32 buffer of named
 * tensors whose names and shapes are the safetensors names (torch.nn.Linear layout for weights):
 *   emb.weight [2^hash_bits, embed_dim]   (only when embed_dim > 0)
 *   mlp.I.weight [out, in], mlp.I.bias [out]   for each hidden layer I
 *   head.weight [outputs, last], head.bias [outputs]
 * Input to the MLP is [embedding-bag sum (embed_dim) | dense (dense_dim)]. */
#ifndef EDDY_SPEC_H
#define EDDY_SPEC_H

#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"
#include "core/event.h"

#define EDDY_MAX_HIDDEN 8
#define EDDY_MAX_TENSORS (2 + 2 * EDDY_MAX_HIDDEN + 2)
#define EDDY_TENSOR_NAME_MAX 32
#define EDDY_PARAM_ALIGN 16 /* tensor offsets in the flat buffer are multiples of 16 floats */

typedef struct {
  uint32_t hash_bits;  /* 1..30 when embed_dim > 0 */
  uint32_t embed_dim;  /* 0 = no sparse features / no embedding table */
  uint32_t dense_dim;
  uint32_t n_hidden;
  uint32_t hidden[EDDY_MAX_HIDDEN];
  eddy_head_t head;
  uint32_t classes;    /* softmax: >= 2; otherwise ignored (outputs = 1) */
} eddy_model_spec_t;

typedef struct {
  char name[EDDY_TENSOR_NAME_MAX];
  uint32_t ndim;       /* 1 or 2 */
  uint64_t shape[2];
  size_t offset;       /* in floats, into the flat buffer */
  size_t numel;
} eddy_tensor_info_t;

/* Checks ranges and that the model has at least one input; errstr names the offending field. */
eddy_err_t eddy_model_spec_validate(const eddy_model_spec_t *spec, char *errstr, size_t errstr_size);

/* Outputs of the head: classes for softmax, 1 otherwise. */
uint32_t eddy_model_outputs(const eddy_model_spec_t *spec);

/* Fills out[] (room for EDDY_MAX_TENSORS) with the layout; returns the tensor count.
 * *total (optional) gets the flat buffer length in floats, padding included. */
size_t eddy_model_layout(const eddy_model_spec_t *spec, eddy_tensor_info_t *out, size_t *total);

/* Event schema implied by the spec (dense_dim, hash_bits or 0, head, classes). */
eddy_event_schema_t eddy_model_event_schema(const eddy_model_spec_t *spec);

/* Spec as compact JSON ({"hash_bits":..,"hidden":[..],"head":"softmax",..}) and back; used in
 * safetensors __metadata__ and manifests. to_json: caller frees. from_json: errstr on failure. */
char *eddy_model_spec_to_json(const eddy_model_spec_t *spec);
eddy_err_t eddy_model_spec_from_json(const char *json, eddy_model_spec_t *spec, char *errstr,
                                     size_t errstr_size);

const char *eddy_head_name(eddy_head_t head);
int eddy_head_parse(const char *text, eddy_head_t *head); /* 0 ok, -1 unknown */

#endif
