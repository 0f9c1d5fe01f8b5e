/* Checked calls for the CUDA backend: every CUDA runtime, cuBLAS and NCCL call goes through one of
 * these macros, which on failure write "file:line: call: message" into an error buffer and return
 * EDDY_ERR_BACKEND from the calling function. The service never aborts on a GPU error. */
#ifndef EDDY_CUDA_CHECK_H
#define EDDY_CUDA_CHECK_H

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdio.h>

#include "core/errors.h"

#ifdef EDDY_NCCL
#include <nccl.h>
#endif

static inline eddy_err_t eddy_cuda_record(char *buf, size_t size, const char *file, int line, const char *call,
                                          const char *msg) {
  const char *base = file;
  for (const char *p = file; *p; p++)
    if (*p == '/') base = p + 1;
  snprintf(buf, size, "%s:%d: %s: %s", base, line, call, msg);
  return EDDY_ERR_BACKEND;
}

/* buf must be a char array (sizeof gives its size). */
#define EDDY_CUDA_CHECK(buf, call)                                                                                     \
  do {                                                                                                                 \
    cudaError_t eddy_e_ = (call);                                                                                      \
    if (eddy_e_ != cudaSuccess)                                                                                        \
      return eddy_cuda_record((buf), sizeof(buf), __FILE__, __LINE__, #call, cudaGetErrorString(eddy_e_));             \
  } while (0)

#define EDDY_CUBLAS_CHECK(buf, call)                                                                                   \
  do {                                                                                                                 \
    cublasStatus_t eddy_s_ = (call);                                                                                   \
    if (eddy_s_ != CUBLAS_STATUS_SUCCESS)                                                                              \
      return eddy_cuda_record((buf), sizeof(buf), __FILE__, __LINE__, #call, cublasGetStatusString(eddy_s_));          \
  } while (0)

#ifdef EDDY_NCCL
#define EDDY_NCCL_CHECK(buf, call)                                                                                     \
  do {                                                                                                                 \
    ncclResult_t eddy_r_ = (call);                                                                                     \
    if (eddy_r_ != ncclSuccess)                                                                                        \
      return eddy_cuda_record((buf), sizeof(buf), __FILE__, __LINE__, #call, ncclGetErrorString(eddy_r_));             \
  } while (0)
#endif

/* After a kernel launch: the launch error (bad configuration), not the kernel's completion. */
#define EDDY_CUDA_CHECK_LAUNCH(buf) EDDY_CUDA_CHECK(buf, cudaGetLastError())

#endif
