/* safetensors files (https://github.com/huggingface/safetensors format): 8-byte little-endian
 * header length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}},
 * then the data. The reader checks everything before handing out a tensor: header size cap,
 * JSON structure, dtypes, shapes × dtype size == byte range, ranges inside the file, no overlap,
 * no gaps. Writing is atomic (temp file in the same directory, fsync, rename, fsync dir). */
#ifndef EDDY_SAFETENSORS_H
#define EDDY_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"

#define EDDY_ST_MAX_HEADER (16u << 20) /* default cap of the JSON header: 16 MiB */
#define EDDY_ST_MAX_DIMS 8

typedef enum {
  EDDY_DT_F32 = 0,
  EDDY_DT_F16,
  EDDY_DT_BF16,
  EDDY_DT_F64,
  EDDY_DT_I64,
  EDDY_DT_U8,
  EDDY_DT_I8 /* int8 weights (snapshots/README.md, "Precisions") */
} eddy_dtype_t;

const char *eddy_dtype_name(eddy_dtype_t dt);     /* "F32" ... */
int eddy_dtype_parse(const char *name, eddy_dtype_t *dt); /* 0 ok, -1 unknown */
size_t eddy_dtype_size(eddy_dtype_t dt);

/* fp32 <-> half conversions (round to nearest even; NaN stays NaN). */
uint16_t eddy_f32_to_bf16(float x);
float eddy_bf16_to_f32(uint16_t h);
uint16_t eddy_f32_to_f16(float x);
float eddy_f16_to_f32(uint16_t h);

/* ---- writing ---- */
typedef struct eddy_st_writer eddy_st_writer_t;

eddy_st_writer_t *eddy_st_writer_new(void);
void eddy_st_writer_destroy(eddy_st_writer_t *w);
/* Adds a tensor; data (nbytes = numel × dtype size) is copied. Names must be unique. */
eddy_err_t eddy_st_writer_add(eddy_st_writer_t *w, const char *name, eddy_dtype_t dt,
                              const uint64_t *shape, uint32_t ndim, const void *data);
/* Adds an fp32 tensor stored as dt (F32, F16, BF16: converted). */
eddy_err_t eddy_st_writer_add_f32(eddy_st_writer_t *w, const char *name, eddy_dtype_t dt,
                                  const uint64_t *shape, uint32_t ndim, const float *data);
eddy_err_t eddy_st_writer_meta(eddy_st_writer_t *w, const char *key, const char *value);
/* Writes the file atomically; digest (optional, 32 bytes) receives the file's SHA-256. */
eddy_err_t eddy_st_writer_save(eddy_st_writer_t *w, const char *path, uint8_t *sha256_out,
                               char *errstr, size_t errstr_size);
/* The same without the fsyncs (file and folder), for a caller that makes the file durable itself
 * (a store transaction fsyncs its files at commit): a crash may leave it incomplete. */
eddy_err_t eddy_st_writer_save_unsynced(eddy_st_writer_t *w, const char *path, uint8_t *sha256_out, char *errstr,
                                        size_t errstr_size);

/* ---- reading ---- */
typedef struct {
  const char *name;
  eddy_dtype_t dtype;
  uint32_t ndim;
  uint64_t shape[EDDY_ST_MAX_DIMS];
  const uint8_t *data;   /* into the file image; valid while the reader lives */
  size_t nbytes;
} eddy_st_tensor_t;

typedef struct eddy_st_reader eddy_st_reader_t;

/* Reads and validates a whole file (max_header: 0 = EDDY_ST_MAX_HEADER). NULL + errstr that names
 * the file and the problem ("bad header length 9999999 > file size 120"). */
eddy_st_reader_t *eddy_st_reader_new(const char *path, size_t max_header, char *errstr, size_t errstr_size);
/* Same over a buffer in memory (copied). */
eddy_st_reader_t *eddy_st_reader_new_mem(const uint8_t *buf, size_t len, size_t max_header, char *errstr,
                                   size_t errstr_size);
/* Same over a malloc'ed buffer the reader takes over (freed by eddy_st_reader_destroy, or here on failure):
 * no copy, for images that are large. */
eddy_st_reader_t *eddy_st_reader_new_owned(uint8_t *buf, size_t len, size_t max_header, char *errstr,
                                     size_t errstr_size);
void eddy_st_reader_destroy(eddy_st_reader_t *r);
size_t eddy_st_count(const eddy_st_reader_t *r);
const eddy_st_tensor_t *eddy_st_at(const eddy_st_reader_t *r, size_t i);
const eddy_st_tensor_t *eddy_st_find(const eddy_st_reader_t *r, const char *name);
const char *eddy_st_meta(const eddy_st_reader_t *r, const char *key); /* NULL if absent */
/* Converts a tensor (F32/F16/BF16) to fp32 into dst of numel floats. */
eddy_err_t eddy_st_read_f32(const eddy_st_tensor_t *t, float *dst, size_t numel);

#endif
