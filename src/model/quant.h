/* Serving precisions of a model: the names (fp32, bf16, fp16, int8), the int8 file layout
 * (per-output-channel symmetric I8 weights with F32 scales, asymmetric u8 activations with a
 * calibrated scale and zero point per layer; snapshots/README.md, "Precisions"), activation-range
 * calibration, and the writers that turn fp32 weights into each precision's tensors. The numbers
 * here are the contract between the trainer that writes the files and the replicas that load them. */
#ifndef EDDY_QUANT_H
#define EDDY_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"
#include "format/safetensors.h"
#include "model/spec.h"

/* Most precise first; eddy_infer_precision_rank gives the cost order that serve.precision = auto
 * and the load adaptation step through. */
typedef enum { EDDY_INFER_F32 = 0, EDDY_INFER_BF16, EDDY_INFER_F16, EDDY_INFER_INT8 } eddy_infer_precision_t;
#define EDDY_INFER_PRECISIONS 4
#define EDDY_INFER_ALL_PRECISIONS 0xfu /* a mask with every precision's bit (1u << precision) */

const char *eddy_infer_precision_name(eddy_infer_precision_t p); /* "fp32", "bf16", "fp16", "int8" */
int eddy_infer_precision_parse(const char *text, eddy_infer_precision_t *p); /* 0 ok, -1 unknown */
/* Relative cost rank, 0 = cheapest (int8), 3 = fp32: int8 < bf16 < fp16 < fp32. */
int eddy_infer_precision_rank(eddy_infer_precision_t p);
/* A mask as "fp32,bf16,int8" (most precise first) into buf; returns buf. */
const char *eddy_infer_precision_list(unsigned mask, char *buf, size_t size);
/* Parses a comma list ("fp32, int8") into a mask: every name known, none twice, at least one.
 * -1 with why ("\"int4\" is not one of fp32, bf16, fp16, int8") otherwise. */
int eddy_infer_precision_parse_list(const char *text, unsigned *mask, char *why, size_t why_size);

/* The widest layer input int8 serves: 255 × 127 × width must fit an int32 sum. */
#define EDDY_QUANT_MAX_WIDTH 65536u

/* The tensors of an int8 weights file: for emb.weight, I8 [rows, dim] and emb.weight_scale F32
 * [dim]; for each layer P (mlp.I, head): P.weight I8 [out, in], P.weight_scale F32 [out], P.bias
 * F32 [out], P.input_scale F32 [1], P.input_zero_point U8 [1]. */
#define EDDY_QUANT_MAX_TENSORS (2 + 5 * (EDDY_MAX_HIDDEN + 1))
typedef struct {
  char name[EDDY_TENSOR_NAME_MAX];
  eddy_dtype_t dtype;
  uint32_t ndim;
  uint64_t shape[2];
  size_t numel;
} eddy_quant_tensor_t;

/* Fills out[] (room for EDDY_QUANT_MAX_TENSORS) with the int8 layout of spec; returns the count. */
size_t eddy_quant_int8_layout(const eddy_model_spec_t *spec, eddy_quant_tensor_t *out);

/* The input range of every layer (layer 0 = [embedding sum | dense]; layer l > 0 = the ReLU
 * output of layer l - 1) seen by an fp32 forward pass over calibration events
 * (eddy_infer_calibrate). */
typedef struct {
  float lo[EDDY_MAX_HIDDEN + 1], hi[EDDY_MAX_HIDDEN + 1];
  uint32_t n_layers;
  uint64_t events;
} eddy_quant_calib_t;

void eddy_quant_calib_init(eddy_quant_calib_t *c);

/* A layer input's quantization from its range: q = clamp(round(x / scale) + zero, 0, 255). A range
 * within [0, hi] gives zero 0 and scale hi / 255; one reaching below 0 spreads [lo, max(hi, 0)]
 * over the 256 levels. An empty or zero range gives scale 1. */
void eddy_quant_input_params(float lo, float hi, float *scale, uint8_t *zero);

/* Weight scale of one output channel (row of [out, in], or column of the embedding): max |w| / 127
 * (1 when every weight is 0); q = clamp(round(w / scale), -127, 127). */
float eddy_quant_weight_scale(const float *w, size_t n, size_t stride);

/* Adds the spec's tensors from weights (F32, F16 or BF16, read as fp32) to w, stored as dtype
 * (F32, F16 or BF16). The caller adds the metadata and saves. EDDY_ERR_SHAPE / FORMAT with errstr
 * when weights lacks a tensor or holds one of another shape. */
eddy_err_t eddy_quant_write_float(const eddy_model_spec_t *spec, const eddy_st_reader_t *weights, eddy_dtype_t dtype,
                                  eddy_st_writer_t *w, char *errstr, size_t errstr_size);

/* Adds the int8 tensors (eddy_quant_int8_layout) of weights quantized with the activation ranges
 * of calib to w. EDDY_ERR_UNSUPPORTED for a layer wider than EDDY_QUANT_MAX_WIDTH, EDDY_ERR_STATE
 * when calib saw no events; errors of weights as above. */
eddy_err_t eddy_quant_write_int8(const eddy_model_spec_t *spec, const eddy_st_reader_t *weights,
                                 const eddy_quant_calib_t *calib, eddy_st_writer_t *w, char *errstr,
                                 size_t errstr_size);

#endif
