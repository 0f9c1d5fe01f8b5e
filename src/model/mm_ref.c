/* Plain-loop matmuls behind mm.h, for builds without oneDNN (-DEDDY_ONEDNN=OFF): the GPU machine's
 * image has no libdnnl, and its CPU learner is only the reference the CUDA backend is checked
 * against. Same semantics as mm.c (strided views, bias, ReLU, runtime scale, accumulate), fp32 only:
 * probe_bf16 says no, so bf16 runs emulated (rounded operands). Slow but exact enough. */
#include "model/mm.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

struct eddy_mm {
  int threads;
  float *row; /* one output row per thread, grown on demand */
  size_t row_cap;
};

const char *eddy_mm_isa_name(void) { return "reference"; }

eddy_mm_t *eddy_mm_new(int threads, char *errstr, size_t errstr_size) {
  eddy_mm_t *mm = calloc(1, sizeof *mm);
  if (!mm) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
    return NULL;
  }
  mm->threads = threads > 0 ? threads : 1;
  return mm;
}

void eddy_mm_destroy(eddy_mm_t *mm) {
  if (!mm) return;
  free(mm->row);
  free(mm);
}

void eddy_mm_bind_threads(const eddy_mm_t *mm) { omp_set_num_threads(mm->threads); }

bool eddy_mm_probe_bf16(eddy_mm_t *mm, char *impl, size_t impl_size) {
  eddy_errf(EDDY_OK, impl, impl_size, "built without oneDNN (EDDY_ONEDNN=OFF): plain-loop fp32 matmul");
  return false;
}

eddy_err_t eddy_mm_run(eddy_mm_t *mm, const eddy_mm_shape_t *s, const void *src, const void *wei, const float *bias,
                       float *dst, float scale, char *errstr, size_t errstr_size) {
  if (s->type != EDDY_MM_F32)
    return eddy_errf(EDDY_ERR_UNSUPPORTED, errstr, errstr_size,
                     "reference matmul %lldx%lldx%lld: only f32 operands (built without oneDNN)", (long long)s->m,
                     (long long)s->k, (long long)s->n);
  const int64_t M = s->m, K = s->k, N = s->n;
  size_t need = (size_t)N * (size_t)mm->threads;
  if (need > mm->row_cap) {
    float *row = realloc(mm->row, (need ? need : 1) * sizeof *row);
    if (!row) return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "reference matmul: out of memory");
    mm->row = row;
    mm->row_cap = need;
  }
  const float *a = src, *b = wei;
  const float mul = s->runtime_scale ? scale : 1.0f;
  eddy_mm_bind_threads(mm);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < M; i++) {
    float *acc = mm->row + (size_t)omp_get_thread_num() * (size_t)N;
    memset(acc, 0, (size_t)N * sizeof *acc);
    for (int64_t k = 0; k < K; k++) {
      const float x = a[i * s->src_stride[0] + k * s->src_stride[1]];
      const float *bk = b + k * s->wei_stride[0];
      for (int64_t j = 0; j < N; j++)
        acc[j] += x * bk[j * s->wei_stride[1]];
    }
    float *d = dst + i * s->dst_stride[0];
    for (int64_t j = 0; j < N; j++) {
      float v = mul * acc[j];
      if (s->bias) v += bias[j];
      if (s->relu && v < 0.0f) v = 0.0f;
      float *o = d + j * s->dst_stride[1];
      *o = s->accumulate ? *o + v : v;
    }
  }
  return EDDY_OK;
}
