/* Model spec and the flat parameter layout. Every parameter lives in one flat fp32 buffer of named
 * tensors whose names and shapes are the safetensors names (torch.nn.Linear layout for weights):
 *   emb.weight [2^hash_bits, embed_dim]   (only when embed_dim > 0)
 *   mlp.I.weight [out, in], mlp.I.bias [out]   for each hidden layer I
 *   head.weight [outputs, last], head.bias [outputs]
 * Input to the MLP is [embedding-bag sum (embed_dim) | dense (dense_dim)]. */
#ifndef EDDY_SPEC_H
#define EDDY_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"
#include "core/event.h"
#include "core/range.h"

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

/* The ranges of the spec's numbers: the one place they are written. The config loader checks the
 * [model] keys against them as it reads them; eddy_model_spec_check() uses them too. */
typedef struct {
  eddy_range_t hash_bits; /* when embed_dim > 0 it must also be >= 1 */
  eddy_range_t embed_dim;
  eddy_range_t dense_dim;
  eddy_range_t hidden;    /* each hidden layer's width; at most EDDY_MAX_HIDDEN layers */
  eddy_range_t classes;   /* a softmax head also needs >= 2 */
} eddy_spec_limits_t;

extern const eddy_spec_limits_t eddy_spec_limits;

/* The default spec (configs/reference.ini documents it): 2^18 hashed buckets into 16-wide
 * embeddings, no dense features, one hidden layer of 64, a logistic head. */
eddy_model_spec_t eddy_model_spec_defaults(void);

/* Checks every limit and rule of a spec: the ranges above, an input (embed_dim or dense_dim), a
 * softmax head with >= 2 classes, hash_bits >= 1 under an embedding, and at most 2^32 parameters.
 * On failure returns EDDY_ERR_CONFIG with fault naming the model.* keys that break the rule,
 * the one to blame first (for too many parameters: the keys that shape the largest tensor). */
eddy_err_t eddy_model_spec_check(const eddy_model_spec_t *spec, eddy_fault_t *fault);

/* eddy_model_spec_check with the fault as one message in errstr, naming keys and values:
 * "model.head = softmax, model.classes = 1: a softmax head needs model.classes >= 2". */
eddy_err_t eddy_model_spec_validate(const eddy_model_spec_t *spec, char *errstr, size_t errstr_size);

/* The hidden widths as a comma list ("256,128"; "" for none) in buf; returns buf. */
const char *eddy_model_hidden_text(const eddy_model_spec_t *spec, char *buf, size_t size);

/* Outputs of the head: classes for softmax, 1 otherwise. */
uint32_t eddy_model_outputs(const eddy_model_spec_t *spec);

/* Fills out[] (room for EDDY_MAX_TENSORS) with the layout; returns the tensor count.
 * *total (optional) gets the flat buffer length in floats, padding included. */
size_t eddy_model_layout(const eddy_model_spec_t *spec, eddy_tensor_info_t *out, size_t *total);

/* One layer of the MLP (the head is the last): y = x W^T + b, W [out, in] at w_off, b [out] at
 * b_off (floats into the flat buffer); w_tensor and b_tensor index the layout's tensor table. */
typedef struct {
  uint32_t in, out;
  size_t w_off, b_off;
  size_t w_tensor, b_tensor;
  bool relu; /* hidden layers; the head has none */
} eddy_layer_geometry_t;

/* Everything a backend derives from the spec, computed in one place (eddy_model_geometry) for the
 * CPU and CUDA learners and the inference model. */
typedef struct {
  eddy_tensor_info_t tensors[EDDY_MAX_TENSORS]; /* the layout (eddy_model_layout) */
  size_t n_tensors, total;                       /* tensors; flat buffer length in floats */
  size_t emb_rows;    /* 2^hash_bits rows of emb.weight (tensor 0), or 0 without an embedding */
  size_t dense_begin; /* offset of the first MLP tensor: [dense_begin, total) holds every MLP tensor */
  uint32_t emb_dim, dense_dim;
  uint32_t in0;       /* MLP input width: emb_dim + dense_dim */
  uint32_t outputs;   /* eddy_model_outputs */
  uint32_t max_width; /* widest of in0 and every layer's out */
  uint32_t n_layers;  /* n_hidden + 1 (the head) */
  eddy_layer_geometry_t layer[EDDY_MAX_HIDDEN + 1];
} eddy_model_geometry_t;

/* Fills g from spec (which eddy_model_spec_validate accepted). */
void eddy_model_geometry(const eddy_model_spec_t *spec, eddy_model_geometry_t *g);

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
