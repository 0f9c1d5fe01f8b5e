/* Private to src/model: the CPU learner's elementwise kernels (optimizer updates, gradient norms,
 * half-precision rounding, bias and ReLU backward). Plain loops that vectorise; on x86-64 an AVX2
 * clone is picked at run time. Results are deterministic for a given machine and thread count. */
#ifndef EDDY_MODEL_KERNELS_H
#define EDDY_MODEL_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "model/learner.h"
#include "model/optim.h"

/* Updates w[0..n) from g (times gmul: eddy_optim_step_scalars) with step constants p and the state
 * s1/s2 (NULL where the optimizer keeps none: s1 = momentum buffer or Adam m, s2 = Adam v or
 * Adagrad sum). g is left as it was. */
void eddy_kernel_optim(const eddy_optim_consts_t *p, float gmul, float *w, const float *g, float *s1, float *s2,
                       size_t n);

/* The same update over embedding rows: for each rows[i], the dim floats at rows[i] * dim of w, g,
 * s1, s2. Zeroes those gradient rows afterwards. Prefetches ahead: rows are scattered. */
void eddy_kernel_optim_rows(const eddy_optim_consts_t *p, float gmul, float *w, float *g, float *s1, float *s2,
                            const uint32_t *rows, size_t n_rows, uint32_t dim);

/* Sum of squares in double (no overflow for finite floats); Inf/NaN propagate. */
double eddy_kernel_sumsq(const float *x, size_t n);

/* Sum of squares of the gradient rows rows[0..n_rows) of width dim. */
double eddy_kernel_sumsq_rows(const float *g, const uint32_t *rows, size_t n_rows, uint32_t dim);

/* Rounds x[0..n) to the nearest bf16 / fp16 value (ties to even; fp16 overflow gives Inf) into
 * dst as floats, or into bf16 storage (uint16). dst may equal x for the float versions. */
void eddy_kernel_round_bf16(float *dst, const float *x, size_t n);
void eddy_kernel_round_f16(float *dst, const float *x, size_t n);
void eddy_kernel_to_bf16(uint16_t *dst, const float *x, size_t n);

/* acc[j] (+)= sum_i scale × x[i*cols + j] over rows i; overwrite: acc is replaced, not added to. */
void eddy_kernel_colsum(float *acc, const float *x, size_t rows, size_t cols, float scale, int overwrite);

/* dz[i] = dx[i] where act[i] > 0, else 0. */
void eddy_kernel_relu_mask(float *dz, const float *dx, const float *act, size_t n);

#endif
