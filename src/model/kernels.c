/* Elementwise kernels of the CPU learner (see kernels.h). Each hot loop is a plain `omp simd` loop
 * compiled twice on x86-64 (baseline SSE2 and x86-64-v3 with AVX2), chosen at load time. The
 * build uses ISO C floating-point contraction rules, so no FMA is introduced behind our back. */
#include "model/kernels.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define EDDY_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define EDDY_CLONES
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define EDDY_HAVE_F16C_PATH 1 /* also gates the other AVX2 intrinsics paths */
#endif

static inline uint32_t f2u(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}

static inline float u2f(uint32_t u) {
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

EDDY_CLONES
static void optim_sgd(const eddy_optim_consts_t *p, float gmul, float *restrict w, const float *restrict g,
                      float *restrict buf, size_t n) {
  const float wd = p->weight_decay, lr = p->lr, mom = p->momentum;
  if (buf) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
      float d = g[i] * gmul + wd * w[i];
      float b = mom * buf[i] + d;
      buf[i] = b;
      w[i] = w[i] - lr * b;
    }
  } else {
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
      float d = g[i] * gmul + wd * w[i];
      w[i] = w[i] - lr * d;
    }
  }
}

/* torch's update w -= lr / bc1 * m / (sqrt(v) / bc2 + eps), rewritten with one division:
 * w -= (lr * bc2 / bc1) * m / (sqrt(v) + eps * bc2). The FP divider is this loop's bottleneck. */
EDDY_CLONES
static void optim_adam(const eddy_optim_consts_t *p, float gmul, float *restrict w, const float *restrict g,
                       float *restrict m, float *restrict v, size_t n) {
  const float b1 = p->beta1, b2 = p->beta2, c1 = 1.0f - p->beta1, c2 = 1.0f - p->beta2;
  const float ss = p->step_size * p->bc2_sqrt, eps = p->eps * p->bc2_sqrt;
  const float wd = p->kind == EDDY_OPT_ADAM ? p->weight_decay : 0.0f;
  const float decay = p->kind == EDDY_OPT_ADAMW ? 1.0f - p->lr * p->weight_decay : 1.0f;
#pragma omp simd
  for (size_t i = 0; i < n; i++) {
    float wi = w[i] * decay;
    float d = g[i] * gmul + wd * wi;
    float mi = b1 * m[i] + c1 * d;
    float vi = b2 * v[i] + c2 * d * d;
    m[i] = mi;
    v[i] = vi;
    w[i] = wi - (ss * mi) / (sqrtf(vi) + eps);
  }
}

EDDY_CLONES
static void optim_adagrad(const eddy_optim_consts_t *p, float gmul, float *restrict w, const float *restrict g,
                          float *restrict sum, size_t n) {
  const float wd = p->weight_decay, lr = p->lr, eps = p->eps;
#pragma omp simd
  for (size_t i = 0; i < n; i++) {
    float d = g[i] * gmul + wd * w[i];
    float s = sum[i] + d * d;
    sum[i] = s;
    w[i] = w[i] - lr * (d / (sqrtf(s) + eps));
  }
}

void eddy_kernel_optim(const eddy_optim_consts_t *p, float gmul, float *w, const float *g, float *s1, float *s2,
                       size_t n) {
  switch (p->kind) {
  case EDDY_OPT_SGD:
    optim_sgd(p, gmul, w, g, s1, n);
    break;
  case EDDY_OPT_ADAM:
  case EDDY_OPT_ADAMW:
    optim_adam(p, gmul, w, g, s1, s2, n);
    break;
  case EDDY_OPT_ADAGRAD:
    optim_adagrad(p, gmul, w, g, s2, n);
    break;
  }
}

void eddy_kernel_optim_rows(const eddy_optim_consts_t *p, float gmul, float *w, float *g, float *s1, float *s2,
                            const uint32_t *rows, size_t n_rows, uint32_t dim) {
  const size_t ahead = 4;
  for (size_t i = 0; i < n_rows; i++) {
    if (i + ahead < n_rows) {
      size_t next = (size_t)rows[i + ahead] * dim;
      __builtin_prefetch(w + next, 1);
      if (s1) __builtin_prefetch(s1 + next, 1);
      if (s2) __builtin_prefetch(s2 + next, 1);
    }
    size_t off = (size_t)rows[i] * dim;
    eddy_kernel_optim(p, gmul, w + off, g + off, s1 ? s1 + off : NULL, s2 ? s2 + off : NULL, dim);
    memset(g + off, 0, dim * sizeof *g);
  }
}

double eddy_kernel_sumsq_rows(const float *g, const uint32_t *rows, size_t n_rows, uint32_t dim) {
  double s = 0.0;
  for (size_t i = 0; i < n_rows; i++) {
    const float *row = g + (size_t)rows[i] * dim;
    double r = 0.0;
#pragma omp simd reduction(+ : r)
    for (uint32_t k = 0; k < dim; k++) r += (double)row[k] * (double)row[k];
    s += r;
  }
  return s;
}

static double sumsq_plain(const float *restrict x, size_t n) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (size_t i = 0; i < n; i++) s += (double)x[i] * (double)x[i];
  return s;
}

#ifdef EDDY_HAVE_F16C_PATH
/* Four independent vector accumulators: the plain loop is bound by one add chain's latency. */
__attribute__((target("avx2,fma"))) static double sumsq_avx2(const float *x, size_t n) {
  __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256d v0 = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
    __m256d v1 = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4));
    __m256d v2 = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 8));
    __m256d v3 = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 12));
    a0 = _mm256_fmadd_pd(v0, v0, a0);
    a1 = _mm256_fmadd_pd(v1, v1, a1);
    a2 = _mm256_fmadd_pd(v2, v2, a2);
    a3 = _mm256_fmadd_pd(v3, v3, a3);
  }
  double lanes[4];
  _mm256_storeu_pd(lanes, _mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3)));
  return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]) + sumsq_plain(x + i, n - i);
}
#endif

double eddy_kernel_sumsq(const float *x, size_t n) {
#ifdef EDDY_HAVE_F16C_PATH
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return sumsq_avx2(x, n);
#endif
  return sumsq_plain(x, n);
}

static inline uint32_t bf16_bits(uint32_t u) {
  uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  uint32_t nan = (u | 0x00400000u) & 0xffff0000u;
  return (u & 0x7fffffffu) > 0x7f800000u ? nan : rounded;
}

EDDY_CLONES
void eddy_kernel_round_bf16(float *dst, const float *x, size_t n) {
#pragma omp simd
  for (size_t i = 0; i < n; i++) dst[i] = u2f(bf16_bits(f2u(x[i])));
}

EDDY_CLONES
void eddy_kernel_to_bf16(uint16_t *restrict dst, const float *restrict x, size_t n) {
#pragma omp simd
  for (size_t i = 0; i < n; i++) dst[i] = (uint16_t)(bf16_bits(f2u(x[i])) >> 16);
}

static float round_f16_scalar(float x) {
  uint32_t u = f2u(x), a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) return x;                        /* Inf, NaN */
  if (a >= 0x477ff000u) return x > 0 ? INFINITY : -INFINITY; /* >= 65520 rounds past 65504 */
  if (a < 0x38800000u) return rintf(x * 16777216.0f) * 5.9604644775390625e-8f; /* subnormal */
  return u2f((u + 0xfffu + ((u >> 13) & 1u)) & 0xffffe000u);
}

#ifdef EDDY_HAVE_F16C_PATH
__attribute__((target("avx,f16c"))) static void round_f16_f16c(float *dst, const float *x, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; i++) dst[i] = round_f16_scalar(x[i]);
}
#endif

void eddy_kernel_round_f16(float *dst, const float *x, size_t n) {
#ifdef EDDY_HAVE_F16C_PATH
  if (__builtin_cpu_supports("avx2")) { /* x86-64-v3: every AVX2 CPU has F16C */
    round_f16_f16c(dst, x, n);
    return;
  }
#endif
  for (size_t i = 0; i < n; i++) dst[i] = round_f16_scalar(x[i]);
}

EDDY_CLONES
void eddy_kernel_colsum(float *restrict acc, const float *restrict x, size_t rows, size_t cols, float scale,
                        int overwrite) {
  if (overwrite) {
    if (rows == 0) {
      memset(acc, 0, cols * sizeof *acc);
      return;
    }
#pragma omp simd
    for (size_t j = 0; j < cols; j++) acc[j] = scale * x[j];
    x += cols;
    rows--;
  }
  for (size_t i = 0; i < rows; i++) {
    const float *row = x + i * cols;
#pragma omp simd
    for (size_t j = 0; j < cols; j++) acc[j] += scale * row[j];
  }
}

EDDY_CLONES
void eddy_kernel_relu_mask(float *restrict dz, const float *restrict dx, const float *restrict act,
                           size_t n) {
#pragma omp simd
  for (size_t i = 0; i < n; i++) dz[i] = act[i] > 0.0f ? dx[i] : 0.0f;
}
