/* Weights and training-state files of a learner, shared by every backend through a host view of
 * its flat buffers (learner_backend.h): safetensors with the spec in __metadata__, written
 * atomically; a state file loads only into a learner of the same spec and optimizer, and training
 * then continues bit-identically (on the same backend). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/learner_backend.h"
#include "format/safetensors.h"

#define STATE_FORMAT "eddy-state-1"

static const char *optim_name(eddy_optim_t o) {
  switch (o) {
  case EDDY_OPT_SGD: return "sgd";
  case EDDY_OPT_ADAM: return "adam";
  case EDDY_OPT_ADAMW: return "adamw";
  case EDDY_OPT_ADAGRAD: return "adagrad";
  }
  return "unknown";
}

static const char *precision_name(eddy_precision_t p) {
  switch (p) {
  case EDDY_PREC_FP32: return "fp32";
  case EDDY_PREC_BF16: return "bf16";
  case EDDY_PREC_FP16: return "fp16";
  }
  return "unknown";
}

static eddy_err_t add_spec_meta(const eddy_learner_view_t *v, eddy_st_writer_t *w, char *errstr, size_t errstr_size) {
  char *json = eddy_model_spec_to_json(v->spec);
  if (!json) return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "model spec to JSON: out of memory");
  eddy_err_t err = eddy_st_writer_meta(w, "eddy.spec", json);
  free(json);
  if (err) return eddy_errf(err, errstr, errstr_size, "safetensors metadata eddy.spec: %s", eddy_err_str(err));
  return EDDY_OK;
}

eddy_err_t eddy_learner_files_save_weights(const eddy_learner_view_t *v, const char *path, const char *dtype,
                                           const char *const *meta_kv, size_t meta_pairs, char *errstr,
                                           size_t errstr_size) {
  eddy_dtype_t dt;
  if (!dtype || eddy_dtype_parse(dtype, &dt) != 0 || (dt != EDDY_DT_F32 && dt != EDDY_DT_F16 && dt != EDDY_DT_BF16))
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "weights dtype \"%s\": must be F32, F16 or BF16",
                     dtype ? dtype : "(null)");
  eddy_st_writer_t *w = eddy_st_writer_new();
  if (!w) return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "safetensors writer: out of memory");
  eddy_err_t err = add_spec_meta(v, w, errstr, errstr_size);
  for (size_t i = 0; !err && i < meta_pairs; i++) {
    err = eddy_st_writer_meta(w, meta_kv[2 * i], meta_kv[2 * i + 1]);
    if (err) eddy_errf(err, errstr, errstr_size, "safetensors metadata \"%s\": %s", meta_kv[2 * i], eddy_err_str(err));
  }
  for (size_t i = 0; !err && i < v->n_tensors; i++) {
    const eddy_tensor_info_t *t = &v->tensors[i];
    err = eddy_st_writer_add_f32(w, t->name, dt, t->shape, t->ndim, v->w + t->offset);
    if (err) eddy_errf(err, errstr, errstr_size, "safetensors tensor %s: %s", t->name, eddy_err_str(err));
  }
  if (!err) err = eddy_st_writer_save(w, path, NULL, errstr, errstr_size);
  eddy_st_writer_destroy(w);
  return err;
}

typedef struct {
  const char *prefix;
  float *buf;
} state_part_t;

/* The optimizer state tensors this learner keeps, by name prefix. */
static size_t state_parts(const eddy_learner_view_t *v, state_part_t parts[2]) {
  size_t n = 0;
  if (v->s1) parts[n++] = (state_part_t){"opt.m.", v->s1};
  if (v->s2) parts[n++] = (state_part_t){v->opts->optimizer == EDDY_OPT_ADAGRAD ? "opt.sum." : "opt.v.", v->s2};
  return n;
}

eddy_err_t eddy_learner_files_save_state(const eddy_learner_view_t *v, const char *path, char *errstr,
                                         size_t errstr_size) {
  if (v->pending || v->poisoned)
    return eddy_errf(EDDY_ERR_STATE, errstr, errstr_size,
                     "save_state with %llu accumulated examples pending: call eddy_learner_step first",
                     (unsigned long long)v->pending);
  eddy_st_writer_t *w = eddy_st_writer_new();
  if (!w) return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "safetensors writer: out of memory");
  eddy_err_t err = add_spec_meta(v, w, errstr, errstr_size);
  char value[160];
  struct {
    const char *key;
    const char *fmt;
  } meta[] = {{"eddy.format", STATE_FORMAT},
              {"eddy.optimizer", NULL},
              {"eddy.precision", NULL},
              {"eddy.step", NULL},
              {"eddy.scaler.scale", NULL},
              {"eddy.scaler.good_steps", NULL},
              {"eddy.scaler.skipped_steps", NULL},
              {"eddy.rng", NULL}};
  for (size_t i = 0; !err && i < sizeof meta / sizeof meta[0]; i++) {
    switch (i) {
    case 0: snprintf(value, sizeof value, "%s", meta[i].fmt); break;
    case 1: snprintf(value, sizeof value, "%s", optim_name(v->opts->optimizer)); break;
    case 2: snprintf(value, sizeof value, "%s", precision_name(v->opts->precision)); break;
    case 3: snprintf(value, sizeof value, "%llu", (unsigned long long)*v->steps); break;
    case 4: snprintf(value, sizeof value, "%a", (double)v->scaler->scale); break;
    case 5: snprintf(value, sizeof value, "%u", v->scaler->good_steps); break;
    case 6: snprintf(value, sizeof value, "%llu", (unsigned long long)v->scaler->skipped_steps); break;
    case 7:
      snprintf(value, sizeof value, "%016llx%016llx%016llx%016llx", (unsigned long long)v->rng[0],
               (unsigned long long)v->rng[1], (unsigned long long)v->rng[2], (unsigned long long)v->rng[3]);
      break;
    }
    err = eddy_st_writer_meta(w, meta[i].key, value);
    if (err) eddy_errf(err, errstr, errstr_size, "safetensors metadata %s: %s", meta[i].key, eddy_err_str(err));
  }
  state_part_t parts[2];
  size_t n_parts = state_parts(v, parts);
  char name[EDDY_TENSOR_NAME_MAX + 16];
  for (size_t i = 0; !err && i < v->n_tensors; i++) {
    const eddy_tensor_info_t *t = &v->tensors[i];
    err = eddy_st_writer_add_f32(w, t->name, EDDY_DT_F32, t->shape, t->ndim, v->w + t->offset);
    for (size_t p = 0; !err && p < n_parts; p++) {
      snprintf(name, sizeof name, "%s%s", parts[p].prefix, t->name);
      err = eddy_st_writer_add_f32(w, name, EDDY_DT_F32, t->shape, t->ndim, parts[p].buf + t->offset);
    }
    if (err) eddy_errf(err, errstr, errstr_size, "safetensors tensor %s: %s", t->name, eddy_err_str(err));
  }
  if (!err) err = eddy_st_writer_save(w, path, NULL, errstr, errstr_size);
  eddy_st_writer_destroy(w);
  return err;
}

static eddy_err_t parse_u64(const char *text, int base, uint64_t *out) {
  if (!text || !*text) return EDDY_ERR_FORMAT;
  char *end;
  unsigned long long v = strtoull(text, &end, base);
  if (*end) return EDDY_ERR_FORMAT;
  *out = v;
  return EDDY_OK;
}

static eddy_err_t check_state_tensor(const eddy_st_reader_t *r, const char *name, const eddy_tensor_info_t *t,
                                     const char *path, char *errstr, size_t errstr_size) {
  const eddy_st_tensor_t *st = eddy_st_find(r, name);
  if (!st) return eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "%s: tensor %s missing", path, name);
  bool same = st->dtype == EDDY_DT_F32 && st->ndim == t->ndim && st->shape[0] == t->shape[0] &&
              (t->ndim < 2 || st->shape[1] == t->shape[1]);
  if (!same)
    return eddy_errf(EDDY_ERR_SHAPE, errstr, errstr_size, "%s: tensor %s is not F32 of the model's shape", path, name);
  return EDDY_OK;
}

eddy_err_t eddy_learner_files_load_state(eddy_learner_view_t *v, const char *path, char *errstr, size_t errstr_size) {
  eddy_st_reader_t *r = eddy_st_reader_new(path, 0, errstr, errstr_size);
  if (!r) return EDDY_ERR_FORMAT;
  eddy_err_t err = EDDY_OK;
  const char *format = eddy_st_meta(r, "eddy.format");
  const char *spec_json = eddy_st_meta(r, "eddy.spec");
  const char *optimizer = eddy_st_meta(r, "eddy.optimizer");
  char *mine = eddy_model_spec_to_json(v->spec), *theirs = NULL;
  eddy_model_spec_t spec;
  if (!format || strcmp(format, STATE_FORMAT) != 0) {
    err = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "%s: not an eddy training state (eddy.format = %s)", path,
                    format ? format : "missing");
  } else if (!spec_json || eddy_model_spec_from_json(spec_json, &spec, errstr, errstr_size) != EDDY_OK) {
    err = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "%s: eddy.spec missing or invalid", path);
  } else if (!mine || !(theirs = eddy_model_spec_to_json(&spec)) || strcmp(mine, theirs) != 0) {
    err = eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "%s: saved for model %s, this learner is %s", path, spec_json,
                    mine ? mine : "?");
  } else if (!optimizer || strcmp(optimizer, optim_name(v->opts->optimizer)) != 0) {
    err = eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "%s: saved with optimizer %s, this learner uses %s", path,
                    optimizer ? optimizer : "(missing)", optim_name(v->opts->optimizer));
  }
  free(mine);
  free(theirs);
  uint64_t step = 0, good = 0, skipped = 0, rng[4] = {0};
  double scale = 0;
  const char *saved_prec = eddy_st_meta(r, "eddy.precision");
  bool saved_fp16 = saved_prec && !strcmp(saved_prec, "fp16");
  if (!err) {
    const char *s_step = eddy_st_meta(r, "eddy.step"), *s_scale = eddy_st_meta(r, "eddy.scaler.scale");
    const char *s_good = eddy_st_meta(r, "eddy.scaler.good_steps");
    const char *s_skip = eddy_st_meta(r, "eddy.scaler.skipped_steps"), *s_rng = eddy_st_meta(r, "eddy.rng");
    char *end = NULL;
    if (s_scale) scale = strtod(s_scale, &end);
    bool ok = parse_u64(s_step, 10, &step) == EDDY_OK && parse_u64(s_good, 10, &good) == EDDY_OK &&
              good <= UINT32_MAX && parse_u64(s_skip, 10, &skipped) == EDDY_OK && s_scale && end && !*end &&
              isfinite(scale) && scale > 0 && s_rng && strlen(s_rng) == 64;
    for (int i = 0; ok && i < 4; i++) {
      char word[17];
      memcpy(word, s_rng + 16 * i, 16);
      word[16] = 0;
      ok = parse_u64(word, 16, &rng[i]) == EDDY_OK;
    }
    if (!ok) err = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "%s: step, scaler or rng metadata invalid", path);
  }
  state_part_t parts[2];
  size_t n_parts = state_parts(v, parts);
  char name[EDDY_TENSOR_NAME_MAX + 16];
  size_t expected = v->n_tensors * (1 + n_parts);
  if (!err && eddy_st_count(r) != expected)
    err = eddy_errf(EDDY_ERR_STATE, errstr, errstr_size,
                    "%s: holds %zu tensors, this learner's state has %zu (different optimizer settings?)", path,
                    eddy_st_count(r), expected);
  for (size_t i = 0; !err && i < v->n_tensors; i++) {
    err = check_state_tensor(r, v->tensors[i].name, &v->tensors[i], path, errstr, errstr_size);
    for (size_t p = 0; !err && p < n_parts; p++) {
      snprintf(name, sizeof name, "%s%s", parts[p].prefix, v->tensors[i].name);
      err = check_state_tensor(r, name, &v->tensors[i], path, errstr, errstr_size);
    }
  }
  /* Everything checked: now overwrite the learner. */
  for (size_t i = 0; !err && i < v->n_tensors; i++) {
    const eddy_tensor_info_t *t = &v->tensors[i];
    err = eddy_st_read_f32(eddy_st_find(r, t->name), v->w + t->offset, t->numel);
    for (size_t p = 0; !err && p < n_parts; p++) {
      snprintf(name, sizeof name, "%s%s", parts[p].prefix, t->name);
      err = eddy_st_read_f32(eddy_st_find(r, name), parts[p].buf + t->offset, t->numel);
    }
    if (err) eddy_errf(err, errstr, errstr_size, "%s: reading tensor %s: %s", path, t->name, eddy_err_str(err));
  }
  eddy_st_reader_destroy(r);
  if (err) return err;
  /* The scale only means something between fp16 learners: others run at 1, and an fp16 learner
   * loading a file saved without loss scaling starts from its initial scale. */
  *v->steps = step;
  v->scaler->scale = !v->scaler->opts.enabled ? 1.0f : saved_fp16 ? (float)scale : v->scaler->opts.init_scale;
  v->scaler->good_steps = saved_fp16 && v->scaler->opts.enabled ? (uint32_t)good : 0;
  v->scaler->skipped_steps = skipped;
  memcpy(v->rng, rng, sizeof rng);
  return EDDY_OK;
}
