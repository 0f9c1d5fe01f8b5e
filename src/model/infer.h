/* Inference model: the read-only weights of one snapshot version in one serving precision, laid out
 * for fast forward passes: fp32, bf16 or fp16 layer weights transposed to [in, out] and widened to
 * fp32 as they are used, or int8 weights packed for the int8 kernel this CPU runs best (quant.h
 * has the numbers). Any number of threads may predict with one model at once, each with its own
 * scratch: nothing in the model changes after eddy_infer_new. Same forward pass as the learner
 * (embedding bag, ReLU MLP, head). */
#ifndef EDDY_INFER_H
#define EDDY_INFER_H

#include <stddef.h>

#include "core/errors.h"
#include "model/batch.h"
#include "model/quant.h"
#include "model/spec.h"
#include "format/safetensors.h"

typedef struct eddy_infer eddy_infer_t;

/* Builds the model of spec from a weights file. fp32, bf16, fp16: a file of the spec's tensors
 * (F32, F16 or BF16, any of them), kept as that precision (bf16 and fp16 halve the memory traffic;
 * sums stay fp32). int8: an int8 file (eddy_quant_int8_layout: exactly those tensors, dtypes and
 * shapes; scales finite and > 0). Every tensor must be present with its exact shape, nothing
 * else, all values finite. NULL + errstr naming the tensor and the problem. The reader is not
 * kept. The kernel is the best this CPU runs (eddy_infer_kernel names it). */
eddy_infer_t *eddy_infer_new(const eddy_model_spec_t *spec, const eddy_st_reader_t *weights,
                             eddy_infer_precision_t precision, char *errstr, size_t errstr_size);
/* Same with the kernel named (one of eddy_infer_kernels(precision); NULL = the best):
 * EDDY_ERR_UNSUPPORTED with errstr for one this CPU does not run. For tests and benchmarks. */
eddy_infer_t *eddy_infer_new_kernel(const eddy_model_spec_t *spec, const eddy_st_reader_t *weights,
                                    eddy_infer_precision_t precision, const char *kernel, char *errstr,
                                    size_t errstr_size);
void eddy_infer_destroy(eddy_infer_t *m); /* NULL is a no-op */

/* The kernels that run precision on this CPU, fastest first, into names (room for max); returns
 * the count. int8: "avx512-vnni", "avx-vnni", "avx2", "scalar"; fp16: "f16c", "scalar"; fp32 and
 * bf16: "x86-64-v3" (the AVX2 + FMA clone) or "generic". */
size_t eddy_infer_kernels(eddy_infer_precision_t precision, const char **names, size_t max);

const eddy_model_spec_t *eddy_infer_spec(const eddy_infer_t *m);
eddy_infer_precision_t eddy_infer_precision(const eddy_infer_t *m);
const char *eddy_infer_kernel(const eddy_infer_t *m); /* the kernel it runs, as eddy_infer_kernels */
size_t eddy_infer_bytes(const eddy_infer_t *m); /* memory held by the weights */

/* Floats of scratch eddy_infer_predict needs for batches of up to n events. */
size_t eddy_infer_scratch_floats(const eddy_infer_t *m, size_t n);

/* pred (b->n × outputs) gets probabilities (logistic, softmax) or values (squared). scratch holds
 * eddy_infer_scratch_floats(m, b->n) floats, owned by the calling thread. EDDY_ERR_SHAPE with
 * errstr for a batch that does not fit the model (dense width, sparse index range). */
eddy_err_t eddy_infer_predict(const eddy_infer_t *m, const eddy_batch_t *b, float *scratch,
                              float *pred, char *errstr, size_t errstr_size);

/* Runs the forward pass of b through m (fp32, bf16 or fp16) and widens calib's range of every
 * layer's input by what it sees (eddy_quant_write_int8 turns the ranges into input scales).
 * EDDY_ERR_INVALID_ARG for an int8 model; batch errors as eddy_infer_predict. */
eddy_err_t eddy_infer_calibrate(const eddy_infer_t *m, const eddy_batch_t *b, float *scratch,
                                eddy_quant_calib_t *calib, char *errstr, size_t errstr_size);

#endif
