/* Private to src/cuda: launchers of the CUDA backend's fused kernels (kernels.cu). Each enqueues on
 * stream s and returns the launch error (cudaGetLastError); nothing synchronises. "op" is the GEMM
 * operand type of the half-precision copies a kernel writes next to its fp32 output (NULL copies
 * are skipped). Row-major [n, width] layouts throughout, as the CPU backend. */
#ifndef EDDY_CUDA_KERNELS_H
#define EDDY_CUDA_KERNELS_H

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include "model/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { EDDY_OP_F32 = 0, EDDY_OP_BF16, EDDY_OP_F16 } eddy_op_type_t;

/* act[n, E + D] = [sum_j val_j × emb[idx_j] over each example's CSR range | dense]; acth (op) too. */
cudaError_t eddy_k_embed_bag(cudaStream_t s, int op, int n, int E, int D, const uint32_t *csr, const uint32_t *idx,
                             const float *val, const float *emb, const float *dense, float *act, void *acth);

/* y[n, out] += bias (broadcast over rows), then ReLU when relu; yh (op) gets a copy. In place. */
cudaError_t eddy_k_bias_act(cudaStream_t s, int op, int n, int out, float *y, const float *bias, int relu, void *yh);

/* Head over logits z[n, O] (head: eddy_head_t): pred (probabilities or values). With labels:
 * dz = weight × factor × dloss/dz (fp32, and dzh in op), loss[i] = weight × loss_i (double), where
 * factor = *scale_dev / n when scaled, else 1. */
cudaError_t eddy_k_head(cudaStream_t s, int op, int head, int n, int O, const float *z, const float *label,
                        const float *weight, const float *scale_dev, int scaled, float *dz, void *dzh, float *pred,
                        double *loss);

/* dz = dx where act > 0 (no mask when act is NULL), written as op into dzop (skipped when NULL);
 * acc[j] += scale × sum_i dz[i, j]. part: scratch of eddy_k_colsum_scratch(width) floats. */
cudaError_t eddy_k_relu_bwd_colsum(cudaStream_t s, int op, int n, int width, const float *dx, const float *act,
                                   void *dzop, float *part, float scale, float *acc);
size_t eddy_k_colsum_scratch(int width);

/* g[idx_j, :] += val_j × scale × dx[i, :] over each example's CSR range (atomic adds). */
cudaError_t eddy_k_embed_bag_bwd(cudaStream_t s, int n, int E, const uint32_t *csr, const uint32_t *idx,
                                 const float *val, float scale, const float *dx, float *g);

/* dst[0..n) = op(src). */
cudaError_t eddy_k_to_op(cudaStream_t s, int op, size_t n, const float *src, void *dst);

/* out[0] = sum of squares (double, fixed reduction order) of dense[0..n_dense) and of the rows
 * rows[0..n_rows) (width E) of emb_g. part: EDDY_K_SUMSQ_BLOCKS doubles of scratch. */
#define EDDY_K_SUMSQ_BLOCKS 264
cudaError_t eddy_k_sumsq(cudaStream_t s, const float *dense, size_t n_dense, const float *emb_g, const uint32_t *rows,
                         size_t n_rows, int E, double *part, double *out);

/* One optimizer step: the constants (eddy_optim_consts, as on the CPU) and what the kernel needs to
 * derive the gradient multiplier from the sum of squares itself (eddy_optim_step_scalars). */
typedef struct {
  eddy_optim_consts_t c;
  float clip_norm;
  uint64_t examples; /* accumulated examples, all devices */
  double scale;      /* loss scale the gradients carry */
} eddy_k_optim_t;

/* The update over w[0..n) from g and state s1/s2 (NULL where the optimizer keeps none), refreshing
 * the operand copy wh (op; NULL: none). When *stat (the sum of squares) is Inf/NaN nothing is
 * updated. Either way g is zeroed. */
cudaError_t eddy_k_optim_dense(cudaStream_t s, int op, const eddy_k_optim_t *a, size_t n, float *w, float *g, float *s1,
                               float *s2, void *wh, const double *stat);
/* The same over embedding rows rows[0..n_rows) of width E (w, g, s1, s2 point at the table). */
cudaError_t eddy_k_optim_rows(cudaStream_t s, const eddy_k_optim_t *a, const uint32_t *rows, size_t n_rows, int E,
                              float *w, float *g, float *s1, float *s2, const double *stat);

/* x[0..n) = value; and the rows rows[0..n_rows) of width E. */
cudaError_t eddy_k_fill(cudaStream_t s, float *x, size_t n, float value);
cudaError_t eddy_k_fill_rows(cudaStream_t s, float *g, const uint32_t *rows, size_t n_rows, int E, float value);

/* packed[r, :] = g[rows[r], :] (unpack = 0), or the reverse (unpack = 1). */
cudaError_t eddy_k_rows_pack(cudaStream_t s, float *g, const uint32_t *rows, size_t n_rows, int E, float *packed,
                             int unpack);

#ifdef __cplusplus
}
#endif

#endif
