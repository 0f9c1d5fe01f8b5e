/* Private to src/model: oneDNN matmul primitives created once per shape and cached, executed on
 * caller-owned buffers (no allocation per call once a shape has been seen). One context per
 * learner; not thread-safe. dst = src[m,k] x wei[k,n] (+ bias[n]) (ReLU) (+ dst when accumulating),
 * times a runtime scale when asked. Strides describe the row-major or transposed views. */
#ifndef EDDY_MODEL_MM_H
#define EDDY_MODEL_MM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"

typedef enum { EDDY_MM_F32 = 0, EDDY_MM_BF16 } eddy_mm_type_t;

typedef struct {
  int64_t m, k, n;
  int64_t src_stride[2], wei_stride[2], dst_stride[2];
  int32_t type;          /* eddy_mm_type_t of src and wei; dst and bias are always f32 */
  uint8_t bias, relu, accumulate, runtime_scale;
} eddy_mm_shape_t;

typedef struct eddy_mm eddy_mm_t;

/* threads: OpenMP threads for oneDNN (applied on every call). NULL + errstr on failure. */
eddy_mm_t *eddy_mm_new(int threads, char *errstr, size_t errstr_size);
void eddy_mm_destroy(eddy_mm_t *mm);

/* Sets the calling thread's OpenMP thread count to the context's. */
void eddy_mm_bind_threads(const eddy_mm_t *mm);

/* Name of the CPU instruction set the matmuls use ("avx2", "avx512_core_amx", ...; "reference" for
 * the plain-loop build). */
const char *eddy_mm_isa_name(void);

/* Whether a bf16 x bf16 -> f32 matmul can be created here; impl receives oneDNN's implementation
 * name ("brg:avx512_core_amx", ...) or the reason it cannot. */
bool eddy_mm_probe_bf16(eddy_mm_t *mm, char *impl, size_t impl_size);

/* Runs one matmul, creating and caching the primitive for this shape on first use. bias may be
 * NULL when shape->bias is 0; scale is used when shape->runtime_scale is 1. EDDY_ERR_BACKEND with
 * the failing oneDNN call in errstr. */
eddy_err_t eddy_mm_run(eddy_mm_t *mm, const eddy_mm_shape_t *shape, const void *src, const void *wei,
                       const float *bias, float *dst, float scale, char *errstr, size_t errstr_size);

#endif
