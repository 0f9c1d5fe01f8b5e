/* Model spec: validation, the flat parameter layout (names, shapes, 16-float aligned offsets) and
 * the spec's JSON form used in safetensors metadata and manifests. The layout is a pure function of
 * the spec, so every backend and every file agrees on where a tensor lives. */
#include "model/spec.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"

#define SPEC_MAX_PARAMS (1ull << 32) /* floats in the whole flat buffer (16 GiB) */

const eddy_spec_limits_t eddy_spec_limits = {
    .hash_bits = {0, 30, 0},
    .embed_dim = {0, 4096, 0},
    .dense_dim = {0, 1048576, 0},
    .hidden = {1, 65536, 0},
    .classes = {1, 65536, 0},
};

eddy_model_spec_t eddy_model_spec_defaults(void) {
  eddy_model_spec_t s;
  memset(&s, 0, sizeof s); /* padding too: configs holding a spec are compared byte for byte */
  s.hash_bits = 18;
  s.embed_dim = 16;
  s.n_hidden = 1;
  s.hidden[0] = 64;
  s.head = EDDY_HEAD_LOGISTIC;
  s.classes = 2;
  return s;
}

static const char *const head_names[] = {"logistic", "softmax", "squared"};

const char *eddy_head_name(eddy_head_t head) {
  if ((unsigned)head < sizeof head_names / sizeof head_names[0]) return head_names[head];
  return "unknown";
}

int eddy_head_parse(const char *text, eddy_head_t *head) {
  if (!text) return -1;
  for (unsigned i = 0; i < sizeof head_names / sizeof head_names[0]; i++) {
    if (!strcmp(text, head_names[i])) {
      if (head) *head = (eddy_head_t)i;
      return 0;
    }
  }
  return -1;
}

const char *eddy_model_hidden_text(const eddy_model_spec_t *spec, char *buf, size_t size) {
  size_t used = 0;
  if (size) buf[0] = '\0';
  for (uint32_t i = 0; i < spec->n_hidden && i < EDDY_MAX_HIDDEN && used < size; i++)
    used += (size_t)snprintf(buf + used, size - used, "%s%u", i ? "," : "", spec->hidden[i]);
  return buf;
}

uint32_t eddy_model_outputs(const eddy_model_spec_t *spec) {
  return spec->head == EDDY_HEAD_SOFTMAX ? spec->classes : 1;
}

static size_t align_up(size_t n) {
  return (n + EDDY_PARAM_ALIGN - 1) / EDDY_PARAM_ALIGN * EDDY_PARAM_ALIGN;
}

static void put_tensor(eddy_tensor_info_t *t, const char *name, uint32_t ndim, uint64_t d0,
                       uint64_t d1, size_t *offset) {
  memset(t, 0, sizeof *t);
  snprintf(t->name, sizeof t->name, "%s", name);
  t->ndim = ndim;
  t->shape[0] = d0;
  t->shape[1] = ndim == 2 ? d1 : 0;
  t->numel = (size_t)(ndim == 2 ? d0 * d1 : d0);
  t->offset = *offset;
  *offset = align_up(*offset + t->numel);
}

size_t eddy_model_layout(const eddy_model_spec_t *spec, eddy_tensor_info_t *out, size_t *total) {
  size_t n = 0, offset = 0;
  char name[EDDY_TENSOR_NAME_MAX];
  if (spec->embed_dim > 0)
    put_tensor(&out[n++], "emb.weight", 2, 1ull << spec->hash_bits, spec->embed_dim, &offset);
  uint64_t in = (uint64_t)spec->embed_dim + spec->dense_dim;
  for (uint32_t i = 0; i < spec->n_hidden && i < EDDY_MAX_HIDDEN; i++) {
    snprintf(name, sizeof name, "mlp.%u.weight", i);
    put_tensor(&out[n++], name, 2, spec->hidden[i], in, &offset);
    snprintf(name, sizeof name, "mlp.%u.bias", i);
    put_tensor(&out[n++], name, 1, spec->hidden[i], 0, &offset);
    in = spec->hidden[i];
  }
  uint32_t outputs = eddy_model_outputs(spec);
  put_tensor(&out[n++], "head.weight", 2, outputs, in, &offset);
  put_tensor(&out[n++], "head.bias", 1, outputs, 0, &offset);
  if (total) *total = offset;
  return n;
}

void eddy_model_geometry(const eddy_model_spec_t *spec, eddy_model_geometry_t *g) {
  memset(g, 0, sizeof *g);
  g->n_tensors = eddy_model_layout(spec, g->tensors, &g->total);
  g->emb_dim = spec->embed_dim;
  g->dense_dim = spec->dense_dim;
  g->in0 = spec->embed_dim + spec->dense_dim;
  g->outputs = eddy_model_outputs(spec);
  g->emb_rows = spec->embed_dim ? (size_t)1 << spec->hash_bits : 0;
  size_t t = spec->embed_dim ? 1 : 0;
  g->dense_begin = g->tensors[t].offset;
  g->n_layers = spec->n_hidden + 1;
  g->max_width = g->in0;
  uint32_t in = g->in0;
  for (uint32_t i = 0; i < g->n_layers; i++, t += 2) {
    eddy_layer_geometry_t *ly = &g->layer[i];
    ly->in = in;
    ly->out = i < spec->n_hidden ? spec->hidden[i] : g->outputs;
    ly->w_tensor = t;
    ly->b_tensor = t + 1;
    ly->w_off = g->tensors[t].offset;
    ly->b_off = g->tensors[t + 1].offset;
    ly->relu = i < spec->n_hidden;
    if (ly->out > g->max_width) g->max_width = ly->out;
    in = ly->out;
  }
}

/* The keys that shape the largest tensor (the ones to shrink when the model is too large), in f;
 * its name in name. */
static void largest_tensor(const eddy_model_spec_t *spec, eddy_fault_t *f, char *name,
                           size_t name_size, uint64_t *numel) {
  enum { HASH = 1, EMBED = 2, DENSE = 4, HIDDEN = 8, CLASSES = 16 };
  unsigned keys = 0;
  uint64_t best = 0;
  if (spec->embed_dim > 0) {
    best = ((uint64_t)1 << spec->hash_bits) * spec->embed_dim;
    keys = HASH | EMBED;
    snprintf(name, name_size, "emb.weight");
  }
  const unsigned inputs = (spec->embed_dim ? EMBED : 0) | (spec->dense_dim ? DENSE : 0);
  uint64_t in = (uint64_t)spec->embed_dim + spec->dense_dim;
  for (uint32_t i = 0; i < spec->n_hidden; i++) {
    uint64_t n = (uint64_t)spec->hidden[i] * in;
    if (n > best) {
      best = n;
      keys = HIDDEN | (i == 0 ? inputs : 0);
      snprintf(name, name_size, "mlp.%u.weight", i);
    }
    in = spec->hidden[i];
  }
  uint64_t n = (uint64_t)eddy_model_outputs(spec) * in;
  if (n > best) {
    best = n;
    keys = (spec->head == EDDY_HEAD_SOFTMAX ? CLASSES : 0) | (spec->n_hidden ? HIDDEN : inputs);
    snprintf(name, name_size, "head.weight");
  }
  *numel = best;
  char hidden[EDDY_MAX_HIDDEN * 12];
  if (keys & HIDDEN)
    eddy_fault_key(f, "model.hidden", "%s", eddy_model_hidden_text(spec, hidden, sizeof hidden));
  if (keys & CLASSES) eddy_fault_key(f, "model.classes", "%u", spec->classes);
  if (keys & EMBED) eddy_fault_key(f, "model.embed_dim", "%u", spec->embed_dim);
  if (keys & HASH) eddy_fault_key(f, "model.hash_bits", "%u", spec->hash_bits);
  if (keys & DENSE) eddy_fault_key(f, "model.dense_dim", "%u", spec->dense_dim);
}

eddy_err_t eddy_model_spec_check(const eddy_model_spec_t *spec, eddy_fault_t *f) {
  const eddy_spec_limits_t *lim = &eddy_spec_limits;
  eddy_fault_clear(f);
  if (!spec) {
    eddy_fault_why(f, "model spec is NULL");
    return EDDY_ERR_INVALID_ARG;
  }
  /* Each number in its range. */
  if (!eddy_range_holds(&lim->embed_dim, spec->embed_dim)) {
    eddy_fault_key(f, "model.embed_dim", "%u", spec->embed_dim);
    return eddy_fault_range(f, &lim->embed_dim);
  }
  if (spec->embed_dim > 0 && !eddy_range_holds(&lim->hash_bits, spec->hash_bits)) {
    eddy_fault_key(f, "model.hash_bits", "%u", spec->hash_bits);
    return eddy_fault_range(f, &lim->hash_bits);
  }
  if (!eddy_range_holds(&lim->dense_dim, spec->dense_dim)) {
    eddy_fault_key(f, "model.dense_dim", "%u", spec->dense_dim);
    return eddy_fault_range(f, &lim->dense_dim);
  }
  if (spec->n_hidden > EDDY_MAX_HIDDEN) {
    eddy_fault_key(f, "model.hidden", "(%u layers)", spec->n_hidden);
    return eddy_fault_why(f, "at most %d hidden layers", EDDY_MAX_HIDDEN);
  }
  for (uint32_t i = 0; i < spec->n_hidden; i++) {
    if (!eddy_range_holds(&lim->hidden, spec->hidden[i])) {
      char text[EDDY_MAX_HIDDEN * 12], reason[64];
      eddy_fault_key(f, "model.hidden", "%s", eddy_model_hidden_text(spec, text, sizeof text));
      return eddy_fault_why(f, "each layer width %s (hidden[%u] is %u)",
                            eddy_range_reason(&lim->hidden, reason, sizeof reason), i, spec->hidden[i]);
    }
  }
  if ((unsigned)spec->head > EDDY_HEAD_SQUARED) {
    eddy_fault_key(f, "model.head", "%d", (int)spec->head);
    return eddy_fault_why(f, "expected one of logistic, softmax, squared");
  }
  /* Rules that tie keys together. */
  if (spec->head == EDDY_HEAD_SOFTMAX && spec->classes < 2) {
    eddy_fault_key(f, "model.head", "%s", eddy_head_name(spec->head));
    eddy_fault_key(f, "model.classes", "%u", spec->classes);
    return eddy_fault_why(f, "a softmax head needs model.classes >= 2");
  }
  if (spec->head == EDDY_HEAD_SOFTMAX && !eddy_range_holds(&lim->classes, spec->classes)) {
    eddy_fault_key(f, "model.classes", "%u", spec->classes);
    return eddy_fault_range(f, &lim->classes);
  }
  if (spec->embed_dim == 0 && spec->dense_dim == 0) {
    eddy_fault_key(f, "model.embed_dim", "%u", spec->embed_dim);
    eddy_fault_key(f, "model.dense_dim", "%u", spec->dense_dim);
    return eddy_fault_why(f, "the model needs an input: model.embed_dim or model.dense_dim must be > 0");
  }
  if (spec->embed_dim > 0 && spec->hash_bits == 0) {
    eddy_fault_key(f, "model.embed_dim", "%u", spec->embed_dim);
    eddy_fault_key(f, "model.hash_bits", "%u", spec->hash_bits);
    return eddy_fault_why(f, "model.embed_dim > 0 needs model.hash_bits between 1 and %.0f",
                          lim->hash_bits.max);
  }
  eddy_tensor_info_t t[EDDY_MAX_TENSORS];
  size_t total = 0;
  eddy_model_layout(spec, t, &total);
  if (total > SPEC_MAX_PARAMS) {
    char name[EDDY_TENSOR_NAME_MAX];
    uint64_t numel = 0;
    largest_tensor(spec, f, name, sizeof name, &numel);
    return eddy_fault_why(f,
                          "the model has %zu parameters: too large (at most %llu; the largest tensor, "
                          "%s, has %llu)",
                          total, (unsigned long long)SPEC_MAX_PARAMS, name, (unsigned long long)numel);
  }
  return EDDY_OK;
}

eddy_err_t eddy_model_spec_validate(const eddy_model_spec_t *spec, char *errstr, size_t errstr_size) {
  eddy_fault_t f;
  eddy_err_t err = eddy_model_spec_check(spec, &f);
  if (err == EDDY_OK) return EDDY_OK;
  if (err != EDDY_ERR_CONFIG) return eddy_errf(err, errstr, errstr_size, "%s", f.why);
  return eddy_fault_message(&f, errstr, errstr_size);
}

eddy_event_schema_t eddy_model_event_schema(const eddy_model_spec_t *spec) {
  eddy_event_schema_t s;
  memset(&s, 0, sizeof s);
  s.dense_dim = spec->dense_dim;
  s.hash_bits = spec->embed_dim > 0 ? spec->hash_bits : 0;
  s.head = spec->head;
  s.classes = spec->head == EDDY_HEAD_SOFTMAX ? spec->classes : 0;
  s.max_bytes = 0;
  return s;
}

char *eddy_model_spec_to_json(const eddy_model_spec_t *spec) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  uint32_t n_hidden = spec->n_hidden <= EDDY_MAX_HIDDEN ? spec->n_hidden : EDDY_MAX_HIDDEN;
  bool ok = cJSON_AddNumberToObject(o, "hash_bits", spec->embed_dim > 0 ? spec->hash_bits : 0);
  ok = ok && cJSON_AddNumberToObject(o, "embed_dim", spec->embed_dim);
  ok = ok && cJSON_AddNumberToObject(o, "dense_dim", spec->dense_dim);
  cJSON *hidden = ok ? cJSON_AddArrayToObject(o, "hidden") : NULL;
  ok = hidden != NULL;
  for (uint32_t i = 0; ok && i < n_hidden; i++) {
    cJSON *v = cJSON_CreateNumber(spec->hidden[i]);
    ok = v != NULL;
    if (ok) cJSON_AddItemToArray(hidden, v);
  }
  ok = ok && cJSON_AddStringToObject(o, "head", eddy_head_name(spec->head));
  ok = ok && cJSON_AddNumberToObject(o, "classes", eddy_model_outputs(spec));
  char *text = ok ? cJSON_PrintUnformatted(o) : NULL;
  cJSON_Delete(o);
  return text;
}

/* v is a JSON number holding an integer in [lo, hi]: *out gets it. The range is checked before
 * the conversion: casting a double outside the target type's range is undefined. */
static bool json_int_in(const cJSON *v, uint32_t lo, uint32_t hi, uint32_t *out) {
  if (!cJSON_IsNumber(v)) return false;
  double d = v->valuedouble;
  if (!(d >= lo && d <= hi) || d != floor(d)) return false;
  *out = (uint32_t)d;
  return true;
}

/* Reads an integer field in [lo, hi]; absent fields keep *out when optional. */
static eddy_err_t json_uint(const cJSON *o, const char *key, bool required, uint32_t lo, uint32_t hi,
                            uint32_t *out, char *errstr, size_t errstr_size) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!v) {
    if (required)
      return eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "model spec JSON: \"%s\" missing", key);
    return EDDY_OK;
  }
  if (!json_int_in(v, lo, hi, out))
    return eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size,
                     "model spec JSON: \"%s\" must be an integer %u..%u", key, lo, hi);
  return EDDY_OK;
}

eddy_err_t eddy_model_spec_from_json(const char *json, eddy_model_spec_t *spec, char *errstr,
                                     size_t errstr_size) {
  if (!json || !spec) return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "model spec JSON is NULL");
  cJSON *o = eddy_json_parse(json, strlen(json), NULL, 0);
  if (!o || !cJSON_IsObject(o)) {
    cJSON_Delete(o);
    return eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "model spec is not a JSON object");
  }
  eddy_model_spec_t s;
  memset(&s, 0, sizeof s);
  const eddy_spec_limits_t *lim = &eddy_spec_limits;
  /* classes may be 0 here: heads other than softmax ignore it. */
  eddy_err_t err =
      json_uint(o, "hash_bits", false, 0, (uint32_t)lim->hash_bits.max, &s.hash_bits, errstr, errstr_size);
  if (!err)
    err = json_uint(o, "embed_dim", false, 0, (uint32_t)lim->embed_dim.max, &s.embed_dim, errstr, errstr_size);
  if (!err)
    err = json_uint(o, "dense_dim", false, 0, (uint32_t)lim->dense_dim.max, &s.dense_dim, errstr, errstr_size);
  if (!err) err = json_uint(o, "classes", false, 0, (uint32_t)lim->classes.max, &s.classes, errstr, errstr_size);
  if (!err) {
    const cJSON *head = cJSON_GetObjectItemCaseSensitive(o, "head");
    if (!cJSON_IsString(head) || eddy_head_parse(head->valuestring, &s.head) != 0)
      err = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size,
                      "model spec JSON: \"head\" must be \"logistic\", \"softmax\" or \"squared\"");
  }
  if (!err) {
    const cJSON *hidden = cJSON_GetObjectItemCaseSensitive(o, "hidden");
    if (hidden && !cJSON_IsArray(hidden)) {
      err = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "model spec JSON: \"hidden\" must be an array");
    } else if (hidden) {
      int count = cJSON_GetArraySize(hidden);
      if (count > EDDY_MAX_HIDDEN) {
        err = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size,
                        "model spec JSON: \"hidden\" has %d layers: at most %d", count, EDDY_MAX_HIDDEN);
      } else {
        s.n_hidden = (uint32_t)count;
        for (int i = 0; i < count && !err; i++) {
          if (!json_int_in(cJSON_GetArrayItem(hidden, i), (uint32_t)lim->hidden.min, (uint32_t)lim->hidden.max,
                           &s.hidden[i]))
            err = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size,
                            "model spec JSON: hidden[%d] must be an integer %.0f..%.0f", i, lim->hidden.min,
                            lim->hidden.max);
        }
      }
    }
  }
  cJSON_Delete(o);
  if (err) return err;
  if (s.head != EDDY_HEAD_SOFTMAX) s.classes = 0;
  if (s.embed_dim == 0) s.hash_bits = 0;
  err = eddy_model_spec_validate(&s, errstr, errstr_size);
  if (err) return EDDY_ERR_FORMAT;
  *spec = s;
  return EDDY_OK;
}
