/* The CUDA backend's face to the rest of eddy, with no CUDA types: the learner backend table that
 * a program registers (eddy_learner_register(eddy_cuda_backend()) makes "cuda", "cuda:N" and
 * "cuda:all" learners run here), and the device probe. */
#ifndef EDDY_CUDA_H
#define EDDY_CUDA_H

#include <stddef.h>

#include "model/learner.h"

const eddy_learner_backend_t *eddy_cuda_backend(void);

/* Number of usable CUDA devices; 0 with the reason in why when there is none (no driver, no
 * device). Never fails otherwise. */
int eddy_cuda_device_count(char *why, size_t why_size);

/* For tests: the nth device allocation (1 = the next) that learner l makes from now on fails as out
 * of memory, as on a full GPU; 0 cancels. EDDY_ERR_INVALID_ARG when l is not a CUDA learner. */
eddy_err_t eddy_cuda_fail_alloc(eddy_learner_t *l, unsigned nth);

#endif
