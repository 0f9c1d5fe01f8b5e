/* The public learner API: validates its arguments, picks the backend for the device string and
 * dispatches (learner_backend.h). The CPU backend is built in; others (the CUDA library) are
 * registered by the program that links them, so this file names no backend but the CPU's. A
 * registered backend whose devices are absent falls back to the CPU with one warning. */
#include "model/learner.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "model/learner_backend.h"
#include "model/learner_internal.h"

#define MAX_BACKENDS 8

/* Written only by eddy_learner_register, at start-up. */
static const eddy_learner_backend_t *registered[MAX_BACKENDS];
static size_t n_registered;

eddy_err_t eddy_learner_register(const eddy_learner_backend_t *backend) {
  if (!backend || !backend->name) return EDDY_ERR_INVALID_ARG;
  for (size_t i = 0; i < n_registered; i++)
    if (registered[i] == backend) return EDDY_OK;
  if (n_registered == MAX_BACKENDS) return EDDY_ERR_TOO_LARGE;
  registered[n_registered++] = backend;
  return EDDY_OK;
}

/* True when device is name itself or "name:..." */
static bool names_backend(const char *device, const char *name) {
  size_t len = strlen(name);
  return strncmp(device, name, len) == 0 && (device[len] == '\0' || device[len] == ':');
}

/* Picks the backend for device; NULL + errstr when the device string is unknown, malformed, or
 * names a backend this program was built without. */
static const eddy_learner_backend_t *pick_backend(const char *device, char *errstr, size_t errstr_size) {
  const eddy_learner_backend_t *cpu = eddy_learner_cpu_backend();
  if (!device || !strcmp(device, "cpu")) return cpu;
  for (size_t i = 0; i < n_registered; i++) {
    const eddy_learner_backend_t *be = registered[i];
    if (!names_backend(device, be->name)) continue;
    if (be->device_check && be->device_check(device, errstr, errstr_size) != EDDY_OK) return NULL;
    char why[256] = "";
    if (be->device_count && be->device_count(why, sizeof why) == 0) {
      EDDY_WARN("learner", "device \"%s\": no usable %s device (%s); training on the CPU backend", device, be->name,
                why);
      return cpu;
    }
    return be;
  }
  if (names_backend(device, "cuda")) {
    eddy_errf(EDDY_ERR_UNSUPPORTED, errstr, errstr_size,
              "device \"%s\": this build has no CUDA backend (configure with -DEDDY_CUDA=ON)", device);
    return NULL;
  }
  eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "device \"%s\": unknown (cpu | cuda | cuda:N | cuda:all)",
            device);
  return NULL;
}

eddy_learner_t *eddy_learner_new(const eddy_model_spec_t *spec, const eddy_train_opts_t *opts, const char *device,
                                 char *errstr, size_t errstr_size) {
  if (!spec || !opts) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "learner: spec and opts are required");
    return NULL;
  }
  if (eddy_model_spec_validate(spec, errstr, errstr_size) != EDDY_OK) return NULL;
  if (eddy_train_opts_check(opts, errstr, errstr_size) != EDDY_OK) return NULL;
  const eddy_learner_backend_t *vt = pick_backend(device, errstr, errstr_size);
  if (!vt) return NULL;
  eddy_learner_t *l = calloc(1, sizeof *l);
  if (!l) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "learner: out of memory");
    return NULL;
  }
  l->vt = vt;
  l->spec = *spec;
  l->impl = vt->create(spec, opts, device, errstr, errstr_size);
  if (!l->impl) {
    free(l);
    return NULL;
  }
  return l;
}

void eddy_learner_destroy(eddy_learner_t *l) {
  if (!l) return;
  l->vt->destroy(l->impl);
  free(l);
}

const eddy_model_spec_t *eddy_learner_spec(const eddy_learner_t *l) { return &l->spec; }
const char *eddy_learner_backend(const eddy_learner_t *l) { return l->vt->backend(l->impl); }
const char *eddy_learner_precision_info(const eddy_learner_t *l) { return l->vt->precision_info(l->impl); }
const char *eddy_learner_last_error(const eddy_learner_t *l) { return l->vt->last_error(l->impl); }
const eddy_scaler_t *eddy_learner_scaler(const eddy_learner_t *l) { return l->vt->scaler(l->impl); }
uint64_t eddy_learner_step_count(const eddy_learner_t *l) { return l->vt->step_count(l->impl); }

eddy_err_t eddy_learner_accumulate(eddy_learner_t *l, const eddy_batch_t *b, float *pred, double *loss_sum) {
  if (loss_sum) *loss_sum = 0;
  if (!l || !b) return EDDY_ERR_INVALID_ARG;
  return l->vt->accumulate(l->impl, b, pred, loss_sum);
}

eddy_err_t eddy_learner_step(eddy_learner_t *l, eddy_step_info_t *info) {
  if (!l) return EDDY_ERR_INVALID_ARG;
  return l->vt->step(l->impl, info);
}

eddy_err_t eddy_learner_predict(eddy_learner_t *l, const eddy_batch_t *b, float *pred) {
  if (!l || !b || !pred) return EDDY_ERR_INVALID_ARG;
  return l->vt->predict(l->impl, b, pred);
}

size_t eddy_learner_tensors(const eddy_learner_t *l, const eddy_tensor_info_t **tensors) {
  return l->vt->tensors(l->impl, tensors);
}

eddy_err_t eddy_learner_export(eddy_learner_t *l, const char *name, float *dst, size_t numel) {
  return l->vt->export_tensor(l->impl, name, dst, numel);
}

eddy_err_t eddy_learner_import(eddy_learner_t *l, const char *name, const float *src, size_t numel) {
  return l->vt->import_tensor(l->impl, name, src, numel);
}

eddy_err_t eddy_learner_export_grad(eddy_learner_t *l, const char *name, float *dst, size_t numel) {
  return l->vt->export_grad(l->impl, name, dst, numel);
}

void eddy_learner_poison_gradients(eddy_learner_t *l, float value) { l->vt->poison(l->impl, value); }

static void view_release(eddy_learner_t *l);

/* ---- ranks ---- */

eddy_err_t eddy_learner_join(eddy_learner_t *l, const eddy_collective_t *coll, char *errstr, size_t errstr_size) {
  if (!l) return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "learner: NULL");
  if (coll && coll->ranks <= 1) coll = NULL;
  if (coll && !l->vt->join)
    return eddy_errf(EDDY_ERR_UNSUPPORTED, errstr, errstr_size, "backend %s cannot train across ranks",
                     l->vt->backend(l->impl));
  eddy_err_t err = l->vt->join ? l->vt->join(l->impl, coll, errstr, errstr_size) : EDDY_OK;
  if (!err) l->coll = coll;
  return err;
}

/* The scalars of a training state, copied as one record. */
typedef struct {
  uint64_t steps;
  eddy_scaler_t scaler;
  uint64_t rng[4];
} sync_scalars_t;

eddy_err_t eddy_learner_sync_state(eddy_learner_t *l, int root, char *errstr, size_t errstr_size) {
  if (!l) return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "learner: NULL");
  const eddy_collective_t *c = l->coll;
  if (!c) return EDDY_OK;
  if (root < 0 || root >= c->ranks)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "sync_state: root %d of %d ranks", root, c->ranks);
  eddy_learner_view_t v;
  eddy_err_t err = l->vt->view_get(l->impl, &v, errstr, errstr_size);
  size_t total = 0;
  for (size_t i = 0; !err && i < v.n_tensors; i++)
    if (v.tensors[i].offset + v.tensors[i].numel > total) total = v.tensors[i].offset + v.tensors[i].numel;
  float *bufs[3] = {v.w, v.s1, v.s2};
  for (int b = 0; !err && b < 3; b++)
    if (bufs[b]) err = c->bcast(c->ctx, bufs[b], total * sizeof(float), root, errstr, errstr_size);
  sync_scalars_t sc;
  if (!err) {
    memset(&sc, 0, sizeof sc);
    sc.steps = *v.steps;
    sc.scaler = *v.scaler;
    memcpy(sc.rng, v.rng, sizeof sc.rng);
    err = c->bcast(c->ctx, &sc, sizeof sc, root, errstr, errstr_size);
  }
  if (!err && c->rank != root) {
    *v.steps = sc.steps;
    *v.scaler = sc.scaler;
    memcpy(v.rng, sc.rng, sizeof sc.rng);
  }
  /* Every rank takes the (copied) state over: this also drops what it had accumulated. */
  if (!err) err = l->vt->view_loaded(l->impl, errstr, errstr_size);
  view_release(l);
  return err;
}

/* ---- files ---- */

static void view_release(eddy_learner_t *l) {
  if (l->vt->view_release) l->vt->view_release(l->impl);
}

eddy_err_t eddy_learner_save_weights(eddy_learner_t *l, const char *path, const char *dtype, const char *const *meta_kv,
                                     size_t meta_pairs, char *errstr, size_t errstr_size) {
  eddy_learner_view_t v;
  eddy_err_t err = l->vt->view_get(l->impl, &v, errstr, errstr_size);
  if (!err) err = eddy_learner_files_save_weights(&v, path, dtype, meta_kv, meta_pairs, errstr, errstr_size);
  view_release(l);
  return err;
}

eddy_err_t eddy_learner_save_state(eddy_learner_t *l, const char *path, char *errstr, size_t errstr_size) {
  eddy_learner_view_t v;
  eddy_err_t err = l->vt->view_get(l->impl, &v, errstr, errstr_size);
  if (!err) err = eddy_learner_files_save_state(&v, path, errstr, errstr_size);
  view_release(l);
  return err;
}

eddy_err_t eddy_learner_load_state(eddy_learner_t *l, const char *path, char *errstr, size_t errstr_size) {
  eddy_learner_view_t v;
  eddy_err_t err = l->vt->view_get(l->impl, &v, errstr, errstr_size);
  if (!err) err = eddy_learner_files_load_state(&v, path, errstr, errstr_size);
  if (!err) err = l->vt->view_loaded(l->impl, errstr, errstr_size);
  view_release(l);
  return err;
}
