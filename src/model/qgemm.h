/* int8 matrix kernels of the inference model: u8 activations times s8 weights summed exactly in
 * int32, one kernel per CPU feature level (AVX-512 VNNI, AVX-VNNI, AVX2, plain C), chosen when a
 * model is built. Every kernel computes the same integers, so a model's predictions do not depend
 * on the CPU. Internal to src/model (infer.c). */
#ifndef EDDY_QGEMM_H
#define EDDY_QGEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
  EDDY_QK_SCALAR = 0, /* plain C, any CPU */
  EDDY_QK_AVX2,       /* vpmovsxbw + vpmaddwd, 8 outputs per instruction */
  EDDY_QK_AVXVNNI,    /* vpdpbusd on 256 bits (AVX-VNNI) */
  EDDY_QK_AVX512VNNI, /* vpdpbusd on 512 bits (AVX-512 VNNI) */
  EDDY_QK_COUNT
} eddy_qkernel_t;

#define EDDY_QK_OUT_ALIGN 16 /* packed outputs are padded to a multiple of this */
#define EDDY_QK_ROWS 4       /* events one weight load serves */

const char *eddy_qkernel_name(eddy_qkernel_t k); /* "avx512-vnni", "avx-vnni", "avx2", "scalar" */
int eddy_qkernel_parse(const char *name, eddy_qkernel_t *k); /* 0 ok, -1 unknown */
bool eddy_qkernel_available(eddy_qkernel_t k);   /* this CPU (and OS) runs it */
eddy_qkernel_t eddy_qkernel_best(void);          /* the fastest available */
uint32_t eddy_qkernel_group(eddy_qkernel_t k);   /* inputs per packed group: 4 (VNNI) or 2 */

/* Bytes of w [out, in] packed for k: kin (in rounded up to the group) × kout (out rounded up to
 * EDDY_QK_OUT_ALIGN). */
size_t eddy_qkernel_packed_bytes(eddy_qkernel_t k, uint32_t in, uint32_t out);
/* Packs w [out, in] into dst (eddy_qkernel_packed_bytes, zero padding): [kin / group][kout][group]. */
void eddy_qkernel_pack(eddy_qkernel_t k, const int8_t *w, uint32_t in, uint32_t out, int8_t *dst);

/* q[i] = clamp(round(x[i] · inv_scale) + zero, 0, 255) for i < n, rounding to nearest even (the
 * default rounding mode), the same bytes on every kernel. */
void eddy_qkernel_quantize(eddy_qkernel_t k, const float *x, uint32_t n, float inv_scale, uint8_t zero, uint8_t *q);

/* acc[r * as + o] = sum over i < kin of x[r * xs + i] · w[o][i] for rows r < nr (1..EDDY_QK_ROWS)
 * and o < kout. x rows hold kin bytes (the padding's value does not matter: its weights are 0).
 * skip_zero: groups of inputs that are 0 in every row are skipped (exact when zero is the
 * quantized 0, as for ReLU outputs). groups: scratch of kin / group entries. */
void eddy_qkernel_gemm(eddy_qkernel_t k, const int8_t *wp, uint32_t kin, uint32_t kout, const uint8_t *x, size_t xs,
                       int nr, bool skip_zero, uint32_t *groups, int32_t *acc, size_t as);

#endif
