/* int8 kernels (see qgemm.h). Weights are packed per kernel as [kin / group][kout][group]: a VNNI
 * kernel loads the 4 weights of 16 outputs in one 64-byte vector and multiplies them with 4
 * activations broadcast to every lane (vpdpbusd: u8 × s8, summed in int32 without saturation);
 * the AVX2 kernel widens 2 weights of 8 outputs to int16 and uses vpmaddwd. Each weight load
 * serves up to EDDY_QK_ROWS events; groups of inputs that are zero in every event are skipped. */
#include "model/qgemm.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define EDDY_QK_X86 1
#endif

static const char *const kernel_names[EDDY_QK_COUNT] = {"scalar", "avx2", "avx-vnni", "avx512-vnni"};

const char *eddy_qkernel_name(eddy_qkernel_t k) { return (unsigned)k < EDDY_QK_COUNT ? kernel_names[k] : "?"; }

int eddy_qkernel_parse(const char *name, eddy_qkernel_t *k) {
  for (int i = 0; name && i < EDDY_QK_COUNT; i++)
    if (!strcmp(name, kernel_names[i])) {
      *k = (eddy_qkernel_t)i;
      return 0;
    }
  return -1;
}

bool eddy_qkernel_available(eddy_qkernel_t k) {
#ifdef EDDY_QK_X86
  __builtin_cpu_init();
  switch (k) {
    case EDDY_QK_SCALAR:
      return true;
    case EDDY_QK_AVX2:
      return __builtin_cpu_supports("avx2");
    case EDDY_QK_AVXVNNI:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avxvnni");
    case EDDY_QK_AVX512VNNI:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vnni");
    default:
      return false;
  }
#else
  return k == EDDY_QK_SCALAR;
#endif
}

eddy_qkernel_t eddy_qkernel_best(void) {
  for (int k = EDDY_QK_COUNT - 1; k > 0; k--)
    if (eddy_qkernel_available((eddy_qkernel_t)k)) return (eddy_qkernel_t)k;
  return EDDY_QK_SCALAR;
}

uint32_t eddy_qkernel_group(eddy_qkernel_t k) { return k == EDDY_QK_AVXVNNI || k == EDDY_QK_AVX512VNNI ? 4 : 2; }

static uint32_t round_up(uint32_t n, uint32_t to) { return (n + to - 1) / to * to; }

size_t eddy_qkernel_packed_bytes(eddy_qkernel_t k, uint32_t in, uint32_t out) {
  return (size_t)round_up(in, eddy_qkernel_group(k)) * round_up(out, EDDY_QK_OUT_ALIGN);
}

void eddy_qkernel_pack(eddy_qkernel_t k, const int8_t *w, uint32_t in, uint32_t out, int8_t *dst) {
  const uint32_t grp = eddy_qkernel_group(k), kin = round_up(in, grp), kout = round_up(out, EDDY_QK_OUT_ALIGN);
  memset(dst, 0, (size_t)kin * kout);
  for (uint32_t o = 0; o < out; o++)
    for (uint32_t i = 0; i < in; i++) dst[((size_t)(i / grp) * kout + o) * grp + i % grp] = w[(size_t)o * in + i];
}

/* The groups to visit: all of them, or those with a non-zero input in some row. */
static size_t active_groups(const uint8_t *x, size_t xs, int nr, uint32_t kin, uint32_t grp, bool skip_zero,
                            uint32_t *groups) {
  const uint32_t ng = kin / grp;
  size_t n = 0;
  if (!skip_zero) {
    for (uint32_t g = 0; g < ng; g++) groups[n++] = g;
    return n;
  }
  for (uint32_t g = 0; g < ng; g++) {
    uint32_t any = 0;
    for (int r = 0; r < nr; r++) {
      const uint8_t *p = x + (size_t)r * xs + (size_t)g * grp;
      if (grp == 4) {
        uint32_t v;
        memcpy(&v, p, 4);
        any |= v;
      } else {
        uint16_t v;
        memcpy(&v, p, 2);
        any |= v;
      }
    }
    if (any) groups[n++] = g;
  }
  return n;
}

/* The plain-C quantization: adding and subtracting 1.5 × 2^23 rounds a float of magnitude below
 * 2^22 to nearest even in the default rounding mode, as lrintf and vcvtps2dq do. */
static void quantize_scalar(const float *x, uint32_t n, float inv_scale, uint8_t zero, uint8_t *q) {
  const float magic = 0x1.8p23f;
  for (uint32_t i = 0; i < n; i++) {
    float v = x[i] * inv_scale;
    v = v < -512.0f ? -512.0f : v > 512.0f ? 512.0f : v;
    const float rounded = (v + magic) - magic;
    const int32_t t = (int32_t)rounded + zero;
    q[i] = (uint8_t)(t < 0 ? 0 : t > 255 ? 255 : t);
  }
}

static void gemm_scalar(const int8_t *wp, uint32_t kout, const uint8_t *x, size_t xs, int nr, const uint32_t *groups,
                        size_t ng, int32_t *acc, size_t as) {
  for (int r = 0; r < nr; r++) memset(acc + (size_t)r * as, 0, kout * sizeof *acc);
  for (size_t k = 0; k < ng; k++) {
    const uint32_t g = groups[k];
    const int8_t *wg = wp + (size_t)g * kout * 2;
    for (int r = 0; r < nr; r++) {
      const int32_t a0 = x[(size_t)r * xs + 2 * g], a1 = x[(size_t)r * xs + 2 * g + 1];
      int32_t *ar = acc + (size_t)r * as;
      for (uint32_t o = 0; o < kout; o++) ar[o] += a0 * wg[2 * o] + a1 * wg[2 * o + 1];
    }
  }
}

#ifdef EDDY_QK_X86

#define AVX2_TARGET __attribute__((target("avx2")))
#define VNNI256_TARGET __attribute__((target("avx2,avxvnni")))
#define VNNI512_TARGET __attribute__((target("avx512f,avx512bw,avx512vnni")))
#define INLINE static inline __attribute__((always_inline))
/* Calls rows(args..., NR) with NR the constant 1..4 equal to nr, so each row count is compiled
 * with its accumulators in registers. */
#define FOR_ROWS(nr, rows, ...)          \
  switch (nr) {                          \
    case 4: rows(__VA_ARGS__, 4); break; \
    case 3: rows(__VA_ARGS__, 3); break; \
    case 2: rows(__VA_ARGS__, 2); break; \
    default: rows(__VA_ARGS__, 1); break; \
  }

static inline int32_t load_group(const uint8_t *p, uint32_t grp) {
  uint32_t v = 0;
  memcpy(&v, p, grp);
  return (int32_t)v;
}

/* Eight inputs at a time: multiply, clamp, round to nearest even (vcvtps2dq), add the zero point,
 * clamp to 0..255 and pack to bytes. */
AVX2_TARGET static void quantize_avx2(const float *x, uint32_t n, float inv_scale, uint8_t zero, uint8_t *q) {
  const __m256 inv = _mm256_set1_ps(inv_scale), lo = _mm256_set1_ps(-512.0f), hi = _mm256_set1_ps(512.0f);
  const __m256i z = _mm256_set1_epi32(zero), none = _mm256_setzero_si256(), most = _mm256_set1_epi32(255);
  uint32_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), inv);
    v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
    __m256i t = _mm256_add_epi32(_mm256_cvtps_epi32(v), z);
    t = _mm256_min_epi32(_mm256_max_epi32(t, none), most);
    const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
    _mm_storel_epi64((__m128i *)(q + i), _mm_packus_epi16(w, w));
  }
  quantize_scalar(x + i, n - i, inv_scale, zero, q + i);
}

/* 16 outputs from o0, NR rows: 2 × 8 int32 lanes per row. */
INLINE AVX2_TARGET void avx2_tile(const int8_t *wp, uint32_t kout, uint32_t o0, const uint8_t *x, size_t xs,
                                  const uint32_t *groups, size_t ng, int32_t *acc, size_t as, const int NR) {
  __m256i c[EDDY_QK_ROWS][2];
  for (int r = 0; r < NR; r++) c[r][0] = c[r][1] = _mm256_setzero_si256();
  for (size_t k = 0; k < ng; k++) {
    const uint32_t g = groups[k];
    const int8_t *wg = wp + ((size_t)g * kout + o0) * 2;
    const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)wg));
    const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(wg + 16)));
    for (int r = 0; r < NR; r++) {
      const uint8_t *xr = x + (size_t)r * xs + 2 * g;
      const __m256i a = _mm256_set1_epi32((int32_t)((uint32_t)xr[0] | (uint32_t)xr[1] << 16));
      c[r][0] = _mm256_add_epi32(c[r][0], _mm256_madd_epi16(w0, a));
      c[r][1] = _mm256_add_epi32(c[r][1], _mm256_madd_epi16(w1, a));
    }
  }
  for (int r = 0; r < NR; r++) {
    _mm256_storeu_si256((__m256i *)(acc + (size_t)r * as + o0), c[r][0]);
    _mm256_storeu_si256((__m256i *)(acc + (size_t)r * as + o0 + 8), c[r][1]);
  }
}

INLINE AVX2_TARGET void avx2_rows(const int8_t *wp, uint32_t kout, const uint8_t *x, size_t xs,
                                  const uint32_t *groups, size_t ng, int32_t *acc, size_t as, const int NR) {
  for (uint32_t o0 = 0; o0 < kout; o0 += 16) avx2_tile(wp, kout, o0, x, xs, groups, ng, acc, as, NR);
}

AVX2_TARGET static void gemm_avx2(const int8_t *wp, uint32_t kout, const uint8_t *x, size_t xs, int nr,
                                  const uint32_t *groups, size_t ng, int32_t *acc, size_t as) {
  FOR_ROWS(nr, avx2_rows, wp, kout, x, xs, groups, ng, acc, as)
}

/* 16 outputs from o0, NR rows: 2 × 8 int32 lanes per row. */
INLINE VNNI256_TARGET void vnni256_tile(const int8_t *wp, uint32_t kout, uint32_t o0, const uint8_t *x, size_t xs,
                                        const uint32_t *groups, size_t ng, int32_t *acc, size_t as, const int NR) {
  __m256i c[EDDY_QK_ROWS][2];
  for (int r = 0; r < NR; r++) c[r][0] = c[r][1] = _mm256_setzero_si256();
  for (size_t k = 0; k < ng; k++) {
    const uint32_t g = groups[k];
    const int8_t *wg = wp + ((size_t)g * kout + o0) * 4;
    const __m256i w0 = _mm256_loadu_si256((const __m256i *)wg);
    const __m256i w1 = _mm256_loadu_si256((const __m256i *)(wg + 32));
    for (int r = 0; r < NR; r++) {
      const __m256i a = _mm256_set1_epi32(load_group(x + (size_t)r * xs + 4 * g, 4));
      c[r][0] = _mm256_dpbusd_avx_epi32(c[r][0], a, w0);
      c[r][1] = _mm256_dpbusd_avx_epi32(c[r][1], a, w1);
    }
  }
  for (int r = 0; r < NR; r++) {
    _mm256_storeu_si256((__m256i *)(acc + (size_t)r * as + o0), c[r][0]);
    _mm256_storeu_si256((__m256i *)(acc + (size_t)r * as + o0 + 8), c[r][1]);
  }
}

INLINE VNNI256_TARGET void vnni256_rows(const int8_t *wp, uint32_t kout, const uint8_t *x, size_t xs,
                                        const uint32_t *groups, size_t ng, int32_t *acc, size_t as, const int NR) {
  for (uint32_t o0 = 0; o0 < kout; o0 += 16) vnni256_tile(wp, kout, o0, x, xs, groups, ng, acc, as, NR);
}

VNNI256_TARGET static void gemm_vnni256(const int8_t *wp, uint32_t kout, const uint8_t *x, size_t xs, int nr,
                                        const uint32_t *groups, size_t ng, int32_t *acc, size_t as) {
  FOR_ROWS(nr, vnni256_rows, wp, kout, x, xs, groups, ng, acc, as)
}

/* NT × 16 outputs from o0, NR rows. */
INLINE VNNI512_TARGET void vnni512_tile(const int8_t *wp, uint32_t kout, uint32_t o0, const uint8_t *x, size_t xs,
                                        const uint32_t *groups, size_t ng, int32_t *acc, size_t as, const int NR,
                                        const int NT) {
  __m512i c[EDDY_QK_ROWS][4];
  for (int r = 0; r < NR; r++)
    for (int t = 0; t < NT; t++) c[r][t] = _mm512_setzero_si512();
  for (size_t k = 0; k < ng; k++) {
    const uint32_t g = groups[k];
    const int8_t *wg = wp + ((size_t)g * kout + o0) * 4;
    __m512i w[4];
    for (int t = 0; t < NT; t++) w[t] = _mm512_loadu_si512((const void *)(wg + 64 * t));
    for (int r = 0; r < NR; r++) {
      const __m512i a = _mm512_set1_epi32(load_group(x + (size_t)r * xs + 4 * g, 4));
      for (int t = 0; t < NT; t++) c[r][t] = _mm512_dpbusd_epi32(c[r][t], a, w[t]);
    }
  }
  for (int r = 0; r < NR; r++)
    for (int t = 0; t < NT; t++) _mm512_storeu_si512((void *)(acc + (size_t)r * as + o0 + 16 * t), c[r][t]);
}

INLINE VNNI512_TARGET void vnni512_rows(const int8_t *wp, uint32_t kout, const uint8_t *x, size_t xs,
                                        const uint32_t *groups, size_t ng, int32_t *acc, size_t as, const int NR) {
  uint32_t o0 = 0;
  for (; o0 + 64 <= kout; o0 += 64) vnni512_tile(wp, kout, o0, x, xs, groups, ng, acc, as, NR, 4);
  for (; o0 < kout; o0 += 16) vnni512_tile(wp, kout, o0, x, xs, groups, ng, acc, as, NR, 1);
}

VNNI512_TARGET static void gemm_vnni512(const int8_t *wp, uint32_t kout, const uint8_t *x, size_t xs, int nr,
                                        const uint32_t *groups, size_t ng, int32_t *acc, size_t as) {
  FOR_ROWS(nr, vnni512_rows, wp, kout, x, xs, groups, ng, acc, as)
}

#endif

void eddy_qkernel_quantize(eddy_qkernel_t k, const float *x, uint32_t n, float inv_scale, uint8_t zero, uint8_t *q) {
#ifdef EDDY_QK_X86
  if (k != EDDY_QK_SCALAR) {
    quantize_avx2(x, n, inv_scale, zero, q);
    return;
  }
#endif
  (void)k;
  quantize_scalar(x, n, inv_scale, zero, q);
}

void eddy_qkernel_gemm(eddy_qkernel_t k, const int8_t *wp, uint32_t kin, uint32_t kout, const uint8_t *x, size_t xs,
                       int nr, bool skip_zero, uint32_t *groups, int32_t *acc, size_t as) {
  const size_t ng = active_groups(x, xs, nr, kin, eddy_qkernel_group(k), skip_zero, groups);
  switch (k) {
#ifdef EDDY_QK_X86
    case EDDY_QK_AVX512VNNI:
      gemm_vnni512(wp, kout, x, xs, nr, groups, ng, acc, as);
      return;
    case EDDY_QK_AVXVNNI:
      gemm_vnni256(wp, kout, x, xs, nr, groups, ng, acc, as);
      return;
    case EDDY_QK_AVX2:
      gemm_avx2(wp, kout, x, xs, nr, groups, ng, acc, as);
      return;
#endif
    default:
      gemm_scalar(wp, kout, x, xs, nr, groups, ng, acc, as);
  }
}
