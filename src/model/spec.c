/* Model spec: validation, the flat parameter layout (names, shapes, 16-float aligned offsets) and
 * the spec's JSON form used in safetensors metadata and manifests. The layout is a pure function of
 * the spec, so every backend and every file agrees on where a tensor lives. */
#include "model/spec.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPEC_MAX_WIDTH 65536u      /* hidden layer width, classes */
#define SPEC_MAX_DENSE (1u << 20)  /* dense features */
#define SPEC_MAX_EMBED 4096u       /* embedding dimension */
#define SPEC_MAX_PARAMS (1ull << 32) /* floats in the whole flat buffer (16 GiB) */

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

eddy_err_t eddy_model_spec_validate(const eddy_model_spec_t *spec, char *errstr, size_t errstr_size) {
  if (!spec) return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "model spec is NULL");
  if (spec->embed_dim > SPEC_MAX_EMBED)
    return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "model.embed_dim = %u: must be 0..%u",
                     spec->embed_dim, SPEC_MAX_EMBED);
  if (spec->embed_dim > 0 && (spec->hash_bits < 1 || spec->hash_bits > 30))
    return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size,
                     "model.hash_bits = %u: must be 1..30 when embed_dim > 0", spec->hash_bits);
  if (spec->dense_dim > SPEC_MAX_DENSE)
    return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "model.dense_dim = %u: must be 0..%u",
                     spec->dense_dim, SPEC_MAX_DENSE);
  if (spec->embed_dim == 0 && spec->dense_dim == 0)
    return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size,
                     "model has no inputs: embed_dim and dense_dim are both 0");
  if (spec->n_hidden > EDDY_MAX_HIDDEN)
    return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "model.hidden has %u layers: at most %d",
                     spec->n_hidden, EDDY_MAX_HIDDEN);
  for (uint32_t i = 0; i < spec->n_hidden; i++)
    if (spec->hidden[i] < 1 || spec->hidden[i] > SPEC_MAX_WIDTH)
      return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "model.hidden[%u] = %u: must be 1..%u",
                       i, spec->hidden[i], SPEC_MAX_WIDTH);
  if ((unsigned)spec->head > EDDY_HEAD_SQUARED)
    return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "model.head = %d: unknown head",
                     (int)spec->head);
  if (spec->head == EDDY_HEAD_SOFTMAX && (spec->classes < 2 || spec->classes > SPEC_MAX_WIDTH))
    return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size,
                     "model.classes = %u: softmax needs 2..%u", spec->classes, SPEC_MAX_WIDTH);
  eddy_tensor_info_t t[EDDY_MAX_TENSORS];
  size_t total = 0;
  eddy_model_layout(spec, t, &total);
  if (total > SPEC_MAX_PARAMS)
    return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size,
                     "model has %zu parameters: too large (at most %llu)", total,
                     (unsigned long long)SPEC_MAX_PARAMS);
  return EDDY_OK;
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

/* Reads an integer field in [lo, hi]; absent fields keep *out when optional. */
static eddy_err_t json_uint(const cJSON *o, const char *key, bool required, uint32_t lo, uint32_t hi,
                            uint32_t *out, char *errstr, size_t errstr_size) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  if (!v) {
    if (required)
      return eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "model spec JSON: \"%s\" missing", key);
    return EDDY_OK;
  }
  double d = cJSON_IsNumber(v) ? v->valuedouble : -1;
  if (!cJSON_IsNumber(v) || d != (double)(uint64_t)d || d < lo || d > hi)
    return eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size,
                     "model spec JSON: \"%s\" must be an integer %u..%u", key, lo, hi);
  *out = (uint32_t)d;
  return EDDY_OK;
}

eddy_err_t eddy_model_spec_from_json(const char *json, eddy_model_spec_t *spec, char *errstr,
                                     size_t errstr_size) {
  if (!json || !spec) return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "model spec JSON is NULL");
  cJSON *o = cJSON_Parse(json);
  if (!o || !cJSON_IsObject(o)) {
    cJSON_Delete(o);
    return eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "model spec is not a JSON object");
  }
  eddy_model_spec_t s;
  memset(&s, 0, sizeof s);
  eddy_err_t err = json_uint(o, "hash_bits", false, 0, 30, &s.hash_bits, errstr, errstr_size);
  if (!err) err = json_uint(o, "embed_dim", false, 0, SPEC_MAX_EMBED, &s.embed_dim, errstr, errstr_size);
  if (!err) err = json_uint(o, "dense_dim", false, 0, SPEC_MAX_DENSE, &s.dense_dim, errstr, errstr_size);
  if (!err) err = json_uint(o, "classes", false, 0, SPEC_MAX_WIDTH, &s.classes, errstr, errstr_size);
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
          const cJSON *v = cJSON_GetArrayItem(hidden, i);
          double d = cJSON_IsNumber(v) ? v->valuedouble : -1;
          if (!cJSON_IsNumber(v) || d != (double)(uint64_t)d || d < 1 || d > SPEC_MAX_WIDTH)
            err = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size,
                            "model spec JSON: hidden[%d] must be an integer 1..%u", i, SPEC_MAX_WIDTH);
          else
            s.hidden[i] = (uint32_t)d;
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
