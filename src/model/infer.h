/* Inference model: the read-only weights of one snapshot version, laid out for fast forward passes
 * (each layer's weight transposed to [in, out]), fp32 or bf16. Any number of threads may predict
 * with one model at once, each with its own scratch: nothing in the model changes after
 * eddy_infer_new. Same forward pass as the learner (embedding bag, ReLU MLP, head). */
#ifndef EDDY_INFER_H
#define EDDY_INFER_H

#include <stddef.h>

#include "core/errors.h"
#include "model/batch.h"
#include "model/spec.h"
#include "format/safetensors.h"

typedef enum { EDDY_INFER_F32 = 0, EDDY_INFER_BF16 } eddy_infer_precision_t;

typedef struct eddy_infer eddy_infer_t;

/* Builds the model of spec from a weights file (F32, F16 or BF16 tensors): every tensor of the
 * spec's layout must be present with its exact shape, nothing else, all values finite. precision:
 * how the layer weights are kept (bf16 halves the memory traffic; sums stay fp32). NULL + errstr
 * naming the tensor and the problem. The reader is not kept. */
eddy_infer_t *eddy_infer_new(const eddy_model_spec_t *spec, const eddy_st_reader_t *weights,
                             eddy_infer_precision_t precision, char *errstr, size_t errstr_size);
void eddy_infer_destroy(eddy_infer_t *m); /* NULL is a no-op */

const eddy_model_spec_t *eddy_infer_spec(const eddy_infer_t *m);
size_t eddy_infer_bytes(const eddy_infer_t *m); /* memory held by the weights */

/* Floats of scratch eddy_infer_predict needs for batches of up to n events. */
size_t eddy_infer_scratch_floats(const eddy_infer_t *m, size_t n);

/* pred (b->n × outputs) gets probabilities (logistic, softmax) or values (squared). scratch holds
 * eddy_infer_scratch_floats(m, b->n) floats, owned by the calling thread. EDDY_ERR_SHAPE with
 * errstr for a batch that does not fit the model (dense width, sparse index range). */
eddy_err_t eddy_infer_predict(const eddy_infer_t *m, const eddy_batch_t *b, float *scratch,
                              float *pred, char *errstr, size_t errstr_size);

#endif
