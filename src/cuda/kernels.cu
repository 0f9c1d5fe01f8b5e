// The CUDA backend's fused kernels (see kernels.h): embedding-bag forward and scatter backward,
// bias + ReLU, the heads' loss and gradient with the loss scale, ReLU backward with the bias-gradient
// column sums, the gradient sum of squares (Inf/NaN detection), one optimizer kernel per flat
// region. Plain, conservative code: reductions run in a fixed order (deterministic), and this file
// is compiled with --fmad=false so the elementwise updates round like the CPU backend's.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

extern "C" {
#include "cuda/host.h"
#include "cuda/kernels.h"
#include "model/learner.h"
}

namespace {

constexpr int kThreads = 256;

template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }

unsigned grid_for(size_t work, unsigned per_block, unsigned max_blocks) {
  size_t b = (work + per_block - 1) / per_block;
  if (b < 1) b = 1;
  if (b > max_blocks) b = max_blocks;
  return (unsigned)b;
}

constexpr unsigned kMaxBlocks = 65535u * 16u;

// One warp per example: lanes stride over the embedding columns, then the dense columns.
template <typename T>
__global__ void k_embed_bag(int n, int E, int D, const uint32_t *csr, const uint32_t *idx, const float *val,
                            const float *emb, const float *dense, float *act, T *acth) {
  const int ex = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32), lane = threadIdx.x & 31;
  if (ex >= n) return;
  const size_t in0 = (size_t)E + D;
  float *x = act + (size_t)ex * in0;
  T *xh = acth ? acth + (size_t)ex * in0 : nullptr;
  if (E > 0) {
    const uint32_t b = csr[ex], e = csr[ex + 1];
    for (int k = lane; k < E; k += 32) {
      float s = 0.0f;
      for (uint32_t j = b; j < e; j++)
        s += val[j] * emb[(size_t)idx[j] * E + k];
      x[k] = s;
      if (xh) xh[k] = from_f<T>(s);
    }
  }
  for (int c = lane; c < D; c += 32) {
    const float v = dense[(size_t)ex * D + c];
    x[E + c] = v;
    if (xh) xh[E + c] = from_f<T>(v);
  }
}

template <typename T> __global__ void k_bias_act(size_t total, int out, float *y, const float *bias, int relu, T *yh) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    float v = y[i] + bias[i % (size_t)out];
    if (relu && v < 0.0f) v = 0.0f;
    y[i] = v;
    if (yh) yh[i] = from_f<T>(v);
  }
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float sigmoid(float x) {
  return x >= 0.0f ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
}

// One warp per example. Softmax: max and sum over the classes by warp reductions.
template <typename T>
__global__ void k_head(int head, int n, int O, const float *z, const float *label, const float *weight,
                       const float *scale_dev, int scaled, float *dz, T *dzh, float *pred, double *loss) {
  const int ex = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32), lane = threadIdx.x & 31;
  if (ex >= n) return;
  const float *zi = z + (size_t)ex * O;
  const bool train = label != nullptr;
  const float factor = scaled ? *scale_dev / (float)n : 1.0f;
  const float t = train ? label[ex] : 0.0f, w = train ? weight[ex] : 0.0f, wf = w * factor;
  if (head != EDDY_HEAD_SOFTMAX) {
    if (lane != 0) return;
    const float x = zi[0];
    double li;
    float p, d;
    if (head == EDDY_HEAD_LOGISTIC) {
      p = sigmoid(x);
      li = (x > 0 ? (double)x : 0.0) - (double)t * x + log1p(exp(-fabs((double)x)));
      d = wf * (p - t);
    } else {
      p = x;
      const float diff = x - t;
      li = 0.5 * (double)diff * diff;
      d = wf * diff;
    }
    if (pred) pred[ex] = p;
    if (train) {
      dz[ex] = d;
      if (dzh) dzh[ex] = from_f<T>(d);
      loss[ex] = (double)w * li;
    }
    return;
  }
  float mx = -INFINITY;
  for (int c = lane; c < O; c += 32)
    mx = fmaxf(mx, zi[c]);
  mx = warp_max(mx);
  float sum = 0.0f;
  for (int c = lane; c < O; c += 32)
    sum += expf(zi[c] - mx);
  sum = warp_sum(sum);
  const float inv = 1.0f / sum;
  const int y = (int)t;
  for (int c = lane; c < O; c += 32) {
    const float p = expf(zi[c] - mx) * inv;
    if (pred) pred[(size_t)ex * O + c] = p;
    if (train) {
      const float d = wf * (p - (c == y ? 1.0f : 0.0f));
      dz[(size_t)ex * O + c] = d;
      if (dzh) dzh[(size_t)ex * O + c] = from_f<T>(d);
    }
  }
  if (train && lane == 0) loss[ex] = (double)w * (log((double)sum) + mx - zi[y]);
}

constexpr int kColChunks = 64; // row chunks of the column sums (partials per column)

// Stage 1: block (32, 8) covers 32 columns of one row chunk; writes one partial per column.
template <typename T>
__global__ void k_relu_bwd_colsum(int n, int width, int rows_per_chunk, const float *dx, const float *act, T *dzop,
                                  float *part) {
  __shared__ float sh[8][33];
  const int col = blockIdx.x * 32 + threadIdx.x;
  const int r0 = blockIdx.y * rows_per_chunk, r1 = min(n, r0 + rows_per_chunk);
  float s = 0.0f;
  if (col < width) {
    for (int r = r0 + threadIdx.y; r < r1; r += 8) {
      const size_t o = (size_t)r * width + col;
      float d = dx[o];
      if (act) d = act[o] > 0.0f ? d : 0.0f;
      if (dzop) dzop[o] = from_f<T>(d);
      s += d;
    }
  }
  sh[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && col < width) {
    float t = 0.0f;
    for (int k = 0; k < 8; k++)
      t += sh[k][threadIdx.x];
    part[(size_t)blockIdx.y * width + col] = t;
  }
}

__global__ void k_colsum_finish(int chunks, int width, const float *part, float scale, float *acc) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= width) return;
  float s = 0.0f;
  for (int c = 0; c < chunks; c++)
    s += part[(size_t)c * width + col];
  acc[col] += scale * s;
}

__global__ void k_embed_bag_bwd(int n, int E, const uint32_t *csr, const uint32_t *idx, const float *val, float scale,
                                const float *dx, float *g) {
  const int ex = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32), lane = threadIdx.x & 31;
  if (ex >= n) return;
  const float *dxe = dx + (size_t)ex * E;
  for (uint32_t j = csr[ex]; j < csr[ex + 1]; j++) {
    const float v = val[j] * scale;
    float *grow = g + (size_t)idx[j] * E;
    for (int k = lane; k < E; k += 32)
      atomicAdd(grow + k, v * dxe[k]);
  }
}

template <typename T> __global__ void k_to_op(size_t n, const float *src, T *dst) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    dst[i] = from_f<T>(src[i]);
}

__global__ void k_sumsq_part(const float *dense, size_t n_dense, const float *emb_g, const uint32_t *rows,
                             size_t n_rows, int E, double *part) {
  __shared__ double sh[kThreads];
  double s = 0.0;
  const size_t stride = (size_t)gridDim.x * blockDim.x, first = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
  for (size_t i = first; i < n_dense; i += stride)
    s += (double)dense[i] * (double)dense[i];
  const size_t n_emb = n_rows * (size_t)E;
  for (size_t t = first; t < n_emb; t += stride) {
    const double x = emb_g[(size_t)rows[t / E] * E + t % E];
    s += x * x;
  }
  sh[threadIdx.x] = s;
  __syncthreads();
  for (int o = kThreads / 2; o > 0; o >>= 1) {
    if ((int)threadIdx.x < o) sh[threadIdx.x] += sh[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) part[blockIdx.x] = sh[0];
}

__global__ void k_sumsq_final(const double *part, int n, double *out) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double s = 0.0;
  for (int i = 0; i < n; i++)
    s += part[i];
  out[0] = s;
}

// The CPU's update rules (src/model/kernels.c), element by element.
__device__ __forceinline__ float optim_elem(const eddy_optim_consts_t &a, float gmul, float w, float g, float *s1,
                                            float *s2) {
  switch (a.kind) {
  case EDDY_OPT_SGD: {
    const float d = g * gmul + a.weight_decay * w;
    if (s1) {
      const float b = a.momentum * *s1 + d;
      *s1 = b;
      return w - a.lr * b;
    }
    return w - a.lr * d;
  }
  case EDDY_OPT_ADAM:
  case EDDY_OPT_ADAMW: {
    const float c1 = 1.0f - a.beta1, c2 = 1.0f - a.beta2;
    const float ss = a.step_size * a.bc2_sqrt, eps = a.eps * a.bc2_sqrt;
    const float wd = a.kind == EDDY_OPT_ADAM ? a.weight_decay : 0.0f;
    const float decay = a.kind == EDDY_OPT_ADAMW ? 1.0f - a.lr * a.weight_decay : 1.0f;
    const float wi = w * decay;
    const float d = g * gmul + wd * wi;
    const float m = a.beta1 * *s1 + c1 * d;
    const float v = a.beta2 * *s2 + c2 * d * d;
    *s1 = m;
    *s2 = v;
    return wi - (ss * m) / (sqrtf(v) + eps);
  }
  case EDDY_OPT_ADAGRAD: {
    const float d = g * gmul + a.weight_decay * w;
    const float s = *s2 + d * d;
    *s2 = s;
    return w - a.lr * (d / (sqrtf(s) + a.eps));
  }
  }
  return w;
}

template <typename T>
__global__ void k_optim_dense(eddy_k_optim_t a, size_t n, float *w, float *g, float *s1, float *s2, T *wh,
                              const double *stat) {
  const eddy_optim_scalars_t st = eddy_optim_step_scalars(a.examples, a.scale, stat[0], a.clip_norm);
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    if (!st.nonfinite) {
      float m = s1 ? s1[i] : 0.0f, v = s2 ? s2[i] : 0.0f;
      const float nw = optim_elem(a.c, st.gmul, w[i], g[i], s1 ? &m : nullptr, s2 ? &v : nullptr);
      w[i] = nw;
      if (s1) s1[i] = m;
      if (s2) s2[i] = v;
      if (wh) wh[i] = from_f<T>(nw);
    }
    g[i] = 0.0f;
  }
}

__global__ void k_optim_rows(eddy_k_optim_t a, const uint32_t *rows, size_t n_rows, int E, float *w, float *g,
                             float *s1, float *s2, const double *stat) {
  const eddy_optim_scalars_t st = eddy_optim_step_scalars(a.examples, a.scale, stat[0], a.clip_norm);
  const size_t total = n_rows * (size_t)E;
  for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total; t += (size_t)gridDim.x * blockDim.x) {
    const size_t i = (size_t)rows[t / E] * E + t % E;
    if (!st.nonfinite) {
      float m = s1 ? s1[i] : 0.0f, v = s2 ? s2[i] : 0.0f;
      w[i] = optim_elem(a.c, st.gmul, w[i], g[i], s1 ? &m : nullptr, s2 ? &v : nullptr);
      if (s1) s1[i] = m;
      if (s2) s2[i] = v;
    }
    g[i] = 0.0f;
  }
}

__global__ void k_fill(float *x, size_t n, float value) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    x[i] = value;
}

__global__ void k_fill_rows(float *g, const uint32_t *rows, size_t n_rows, int E, float value) {
  const size_t total = n_rows * (size_t)E;
  for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total; t += (size_t)gridDim.x * blockDim.x)
    g[(size_t)rows[t / E] * E + t % E] = value;
}

__global__ void k_rows_pack(float *g, const uint32_t *rows, size_t n_rows, int E, float *packed, int unpack) {
  const size_t total = n_rows * (size_t)E;
  for (size_t t = blockIdx.x * (size_t)blockDim.x + threadIdx.x; t < total; t += (size_t)gridDim.x * blockDim.x) {
    float *src = g + (size_t)rows[t / E] * E + t % E;
    if (unpack)
      *src = packed[t];
    else
      packed[t] = *src;
  }
}

unsigned warps_grid(int n) { return (unsigned)(((size_t)n * 32 + kThreads - 1) / kThreads); }

} // namespace

extern "C" {

cudaError_t eddy_k_embed_bag(cudaStream_t s, int op, int n, int E, int D, const uint32_t *csr, const uint32_t *idx,
                             const float *val, const float *emb, const float *dense, float *act, void *acth) {
  if (n <= 0) return cudaSuccess;
  const unsigned g = warps_grid(n);
  if (op == EDDY_OP_BF16)
    k_embed_bag<__nv_bfloat16>
        <<<g, kThreads, 0, s>>>(n, E, D, csr, idx, val, emb, dense, act, static_cast<__nv_bfloat16 *>(acth));
  else if (op == EDDY_OP_F16)
    k_embed_bag<__half><<<g, kThreads, 0, s>>>(n, E, D, csr, idx, val, emb, dense, act, static_cast<__half *>(acth));
  else
    k_embed_bag<float><<<g, kThreads, 0, s>>>(n, E, D, csr, idx, val, emb, dense, act, static_cast<float *>(acth));
  return cudaGetLastError();
}

cudaError_t eddy_k_bias_act(cudaStream_t s, int op, int n, int out, float *y, const float *bias, int relu, void *yh) {
  const size_t total = (size_t)n * out;
  if (!total) return cudaSuccess;
  const unsigned g = grid_for(total, kThreads, kMaxBlocks);
  if (op == EDDY_OP_BF16)
    k_bias_act<__nv_bfloat16><<<g, kThreads, 0, s>>>(total, out, y, bias, relu, static_cast<__nv_bfloat16 *>(yh));
  else if (op == EDDY_OP_F16)
    k_bias_act<__half><<<g, kThreads, 0, s>>>(total, out, y, bias, relu, static_cast<__half *>(yh));
  else
    k_bias_act<float><<<g, kThreads, 0, s>>>(total, out, y, bias, relu, static_cast<float *>(yh));
  return cudaGetLastError();
}

cudaError_t eddy_k_head(cudaStream_t s, int op, int head, int n, int O, const float *z, const float *label,
                        const float *weight, const float *scale_dev, int scaled, float *dz, void *dzh, float *pred,
                        double *loss) {
  if (n <= 0) return cudaSuccess;
  const unsigned g = warps_grid(n);
  if (op == EDDY_OP_BF16)
    k_head<__nv_bfloat16><<<g, kThreads, 0, s>>>(head, n, O, z, label, weight, scale_dev, scaled, dz,
                                                 static_cast<__nv_bfloat16 *>(dzh), pred, loss);
  else if (op == EDDY_OP_F16)
    k_head<__half><<<g, kThreads, 0, s>>>(head, n, O, z, label, weight, scale_dev, scaled, dz,
                                          static_cast<__half *>(dzh), pred, loss);
  else
    k_head<float><<<g, kThreads, 0, s>>>(head, n, O, z, label, weight, scale_dev, scaled, dz, static_cast<float *>(dzh),
                                         pred, loss);
  return cudaGetLastError();
}

size_t eddy_k_colsum_scratch(int width) { return (size_t)kColChunks * (size_t)(width > 0 ? width : 1); }

cudaError_t eddy_k_relu_bwd_colsum(cudaStream_t s, int op, int n, int width, const float *dx, const float *act,
                                   void *dzop, float *part, float scale, float *acc) {
  if (n <= 0 || width <= 0) return cudaSuccess;
  int rows = (n + kColChunks - 1) / kColChunks;
  if (rows < 8) rows = 8;
  const int chunks = (n + rows - 1) / rows;
  const dim3 grid((unsigned)((width + 31) / 32), (unsigned)chunks), block(32, 8);
  if (op == EDDY_OP_BF16)
    k_relu_bwd_colsum<__nv_bfloat16>
        <<<grid, block, 0, s>>>(n, width, rows, dx, act, static_cast<__nv_bfloat16 *>(dzop), part);
  else if (op == EDDY_OP_F16)
    k_relu_bwd_colsum<__half><<<grid, block, 0, s>>>(n, width, rows, dx, act, static_cast<__half *>(dzop), part);
  else
    k_relu_bwd_colsum<float><<<grid, block, 0, s>>>(n, width, rows, dx, act, static_cast<float *>(dzop), part);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  k_colsum_finish<<<(unsigned)((width + kThreads - 1) / kThreads), kThreads, 0, s>>>(chunks, width, part, scale, acc);
  return cudaGetLastError();
}

cudaError_t eddy_k_embed_bag_bwd(cudaStream_t s, int n, int E, const uint32_t *csr, const uint32_t *idx,
                                 const float *val, float scale, const float *dx, float *g) {
  if (n <= 0 || E <= 0) return cudaSuccess;
  k_embed_bag_bwd<<<warps_grid(n), kThreads, 0, s>>>(n, E, csr, idx, val, scale, dx, g);
  return cudaGetLastError();
}

cudaError_t eddy_k_to_op(cudaStream_t s, int op, size_t n, const float *src, void *dst) {
  if (!n) return cudaSuccess;
  const unsigned g = grid_for(n, kThreads, kMaxBlocks);
  if (op == EDDY_OP_BF16)
    k_to_op<__nv_bfloat16><<<g, kThreads, 0, s>>>(n, src, static_cast<__nv_bfloat16 *>(dst));
  else if (op == EDDY_OP_F16)
    k_to_op<__half><<<g, kThreads, 0, s>>>(n, src, static_cast<__half *>(dst));
  else
    k_to_op<float><<<g, kThreads, 0, s>>>(n, src, static_cast<float *>(dst));
  return cudaGetLastError();
}

cudaError_t eddy_k_sumsq(cudaStream_t s, const float *dense, size_t n_dense, const float *emb_g, const uint32_t *rows,
                         size_t n_rows, int E, double *part, double *out) {
  k_sumsq_part<<<EDDY_K_SUMSQ_BLOCKS, kThreads, 0, s>>>(dense, n_dense, emb_g, rows, n_rows, E, part);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  k_sumsq_final<<<1, 32, 0, s>>>(part, EDDY_K_SUMSQ_BLOCKS, out);
  return cudaGetLastError();
}

cudaError_t eddy_k_optim_dense(cudaStream_t s, int op, const eddy_k_optim_t *a, size_t n, float *w, float *g, float *s1,
                               float *s2, void *wh, const double *stat) {
  if (!n) return cudaSuccess;
  const unsigned gr = grid_for(n, kThreads, kMaxBlocks);
  if (op == EDDY_OP_BF16)
    k_optim_dense<__nv_bfloat16><<<gr, kThreads, 0, s>>>(*a, n, w, g, s1, s2, static_cast<__nv_bfloat16 *>(wh), stat);
  else if (op == EDDY_OP_F16)
    k_optim_dense<__half><<<gr, kThreads, 0, s>>>(*a, n, w, g, s1, s2, static_cast<__half *>(wh), stat);
  else
    k_optim_dense<float><<<gr, kThreads, 0, s>>>(*a, n, w, g, s1, s2, static_cast<float *>(wh), stat);
  return cudaGetLastError();
}

cudaError_t eddy_k_optim_rows(cudaStream_t s, const eddy_k_optim_t *a, const uint32_t *rows, size_t n_rows, int E,
                              float *w, float *g, float *s1, float *s2, const double *stat) {
  const size_t total = n_rows * (size_t)(E > 0 ? E : 0);
  if (!total) return cudaSuccess;
  k_optim_rows<<<grid_for(total, kThreads, kMaxBlocks), kThreads, 0, s>>>(*a, rows, n_rows, E, w, g, s1, s2, stat);
  return cudaGetLastError();
}

cudaError_t eddy_k_fill(cudaStream_t s, float *x, size_t n, float value) {
  if (!n) return cudaSuccess;
  k_fill<<<grid_for(n, kThreads, kMaxBlocks), kThreads, 0, s>>>(x, n, value);
  return cudaGetLastError();
}

cudaError_t eddy_k_fill_rows(cudaStream_t s, float *g, const uint32_t *rows, size_t n_rows, int E, float value) {
  const size_t total = n_rows * (size_t)(E > 0 ? E : 0);
  if (!total) return cudaSuccess;
  k_fill_rows<<<grid_for(total, kThreads, kMaxBlocks), kThreads, 0, s>>>(g, rows, n_rows, E, value);
  return cudaGetLastError();
}

cudaError_t eddy_k_rows_pack(cudaStream_t s, float *g, const uint32_t *rows, size_t n_rows, int E, float *packed,
                             int unpack) {
  const size_t total = n_rows * (size_t)(E > 0 ? E : 0);
  if (!total) return cudaSuccess;
  k_rows_pack<<<grid_for(total, kThreads, kMaxBlocks), kThreads, 0, s>>>(g, rows, n_rows, E, packed, unpack);
  return cudaGetLastError();
}

} // extern "C"
