/* For learner backends (src/model, src/cuda) only: the table a backend fills, behind the public
 * eddy_learner_* functions (learner.c dispatches; eddy_learner_register adds a backend), and what
 * every backend shares: the file code (weights, training state) through a host view of its flat
 * buffers, option and batch checks, the seeded initialisation. Carries no CUDA types. */
#ifndef EDDY_MODEL_LEARNER_BACKEND_H
#define EDDY_MODEL_LEARNER_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/learner.h"

/* Host view of a learner's state for the file code: flat fp32 buffers laid out as the tensor
 * table says (s1/s2 NULL where the optimizer keeps none), counters the state file carries. */
typedef struct {
  const eddy_model_spec_t *spec;
  const eddy_train_opts_t *opts;
  const eddy_tensor_info_t *tensors;
  size_t n_tensors;
  float *w, *s1, *s2;
  uint64_t *steps;
  eddy_scaler_t *scaler;
  uint64_t *rng;    /* 4 words */
  uint64_t pending; /* examples accumulated and not stepped: save_state refuses them */
  bool poisoned;
} eddy_learner_view_t;

/* One backend. impl is the backend's own object; every entry gets it. create fails with NULL +
 * errstr; the dispatcher has validated spec and opts already. */
struct eddy_learner_backend {
  const char *name; /* device strings it serves: name itself and "name:..." */
  /* EDDY_OK when device is well-formed for this backend (NULL: any "name..." is). */
  eddy_err_t (*device_check)(const char *device, char *errstr, size_t errstr_size);
  /* Usable devices here; 0 with the reason in why sends learners to the CPU with a warning (NULL:
   * always available). Never fails otherwise. */
  int (*device_count)(char *why, size_t why_size);
  void *(*create)(const eddy_model_spec_t *spec, const eddy_train_opts_t *opts, const char *device, char *errstr,
                  size_t errstr_size);
  void (*destroy)(void *impl);
  const char *(*backend)(const void *impl);
  const char *(*precision_info)(const void *impl);
  eddy_err_t (*accumulate)(void *impl, const eddy_batch_t *b, float *pred, double *loss_sum);
  eddy_err_t (*step)(void *impl, eddy_step_info_t *info);
  eddy_err_t (*predict)(void *impl, const eddy_batch_t *b, float *pred);
  size_t (*tensors)(const void *impl, const eddy_tensor_info_t **tensors);
  eddy_err_t (*export_tensor)(void *impl, const char *name, float *dst, size_t numel);
  eddy_err_t (*import_tensor)(void *impl, const char *name, const float *src, size_t numel);
  eddy_err_t (*export_grad)(void *impl, const char *name, float *dst, size_t numel);
  /* Fills view with host buffers holding the current state (a backend whose state lives elsewhere
   * copies it out). */
  eddy_err_t (*view_get)(void *impl, eddy_learner_view_t *view, char *errstr, size_t errstr_size);
  /* After the file code wrote new state into the view's buffers: take it over (copy it in, drop
   * gradients and operand copies). */
  eddy_err_t (*view_loaded)(void *impl, char *errstr, size_t errstr_size);
  /* Releases what view_get allocated (may be NULL). */
  void (*view_release)(void *impl);
  const char *(*last_error)(const void *impl);
  const eddy_scaler_t *(*scaler)(const void *impl);
  uint64_t (*step_count)(const void *impl);
  void (*poison)(void *impl, float value);
  /* Data parallel across processes (eddy_learner_join): from now on step sums over coll's ranks
   * (NULL: alone again). May be collective (a backend building its own communicator). NULL entry:
   * the backend cannot. */
  eddy_err_t (*join)(void *impl, const eddy_collective_t *coll, char *errstr, size_t errstr_size);
};

struct eddy_learner {
  const eddy_learner_backend_t *vt;
  void *impl;
  eddy_model_spec_t spec;
  const eddy_collective_t *coll; /* joined ranks; NULL alone */
};

/* The built-in CPU backend (learner_cpu.c). */
const eddy_learner_backend_t *eddy_learner_cpu_backend(void);

/* The file code, shared by the backends (learner_files.c). */
eddy_err_t eddy_learner_files_save_weights(const eddy_learner_view_t *v, const char *path, const char *dtype,
                                           const char *const *meta_kv, size_t meta_pairs, char *errstr,
                                           size_t errstr_size);
eddy_err_t eddy_learner_files_save_state(const eddy_learner_view_t *v, const char *path, char *errstr,
                                         size_t errstr_size);
/* Checks the file against the view's spec and optimizer, then overwrites the view's buffers and
 * counters; on an error before the overwrite nothing changes. */
eddy_err_t eddy_learner_files_load_state(eddy_learner_view_t *v, const char *path, char *errstr, size_t errstr_size);

/* Fills the flat buffer w (laid out by eddy_model_layout, padding left as it is) with the initial
 * weights for seed; rng receives the generator state afterwards. Every backend starts from these
 * values, so the same seed gives the same initial model on the CPU and on a GPU. */
void eddy_learner_init_weights(const eddy_model_spec_t *spec, uint64_t seed, float *w, uint64_t rng[4]);

/* Checks a batch against the spec (dense width, sparse indices, with labels: label range and
 * weights); the message names the example and the value. */
eddy_err_t eddy_learner_check_batch(const eddy_model_spec_t *spec, const eddy_batch_t *b, bool labels, char *errstr,
                                    size_t errstr_size);

#endif
