/* libFuzzer harness for the safetensors reader: any bytes go to eddy_st_reader_new_mem with a small header
 * cap; whatever opens is walked completely (lookups by name, metadata, fp32 conversion of every
 * float tensor) so that the sanitizers see every byte the reader hands out. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "format/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t sink; /* keeps the byte reads below from being optimised away */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[512];
  eddy_st_reader_t *r = eddy_st_reader_new_mem(data, size, 1 << 16, err, sizeof err);
  if (!r) return 0;
  (void)eddy_st_meta(r, "eddy.spec");
  for (size_t i = 0; i < eddy_st_count(r); i++) {
    const eddy_st_tensor_t *t = eddy_st_at(r, i);
    if (eddy_st_find(r, t->name) != t) abort();
    size_t esize = eddy_dtype_size(t->dtype);
    if (esize == 0 || t->nbytes % esize != 0 || t->ndim > EDDY_ST_MAX_DIMS) abort();
    uint8_t sum = 0; /* touch every byte of the tensor */
    for (size_t k = 0; k < t->nbytes; k++) sum = (uint8_t)(sum + t->data[k]);
    sink = sum;
    size_t numel = t->nbytes / esize;
    float *dst = malloc(numel ? numel * sizeof(float) : 1);
    if (!dst) continue;
    eddy_err_t err_code = eddy_st_read_f32(t, dst, numel);
    int is_float = t->dtype == EDDY_DT_F32 || t->dtype == EDDY_DT_F16 || t->dtype == EDDY_DT_BF16;
    if (is_float ? err_code != EDDY_OK : err_code != EDDY_ERR_UNSUPPORTED) abort();
    if (is_float && eddy_st_read_f32(t, dst, numel + 1) != EDDY_ERR_SHAPE) abort();
    free(dst);
  }
  eddy_st_reader_destroy(r);
  return 0;
}
