/* manifest.json: the record of one snapshot version, in cJSON. Writing and parsing apply the same
 * field rules (manifest_check), so whatever eddy writes it can read back, and a hand-edited or
 * damaged file fails with the field named. Integers are limited to 2^53 (exact in a JSON double);
 * non-finite metrics are written as null and read back as NaN. */
#include "snapshot/manifest.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/json.h"

#define MAX_OBJECT_KEYS 256

static const char *const status_names[] = {"candidate", "promoted", "rejected"};
static const char *const criterion_results[] = {"skipped", "passed", "failed"};
static const char *const gate_metrics[] = {"logloss", "mse"};
static const char *const precisions[] = {"fp32", "bf16", "fp16"};
static const char *const weight_dtypes[] = {"F32", "F16", "BF16"};

const char *eddy_version_status_name(eddy_version_status_t status) {
  return (unsigned)status < 3 ? status_names[status] : "unknown";
}

const char *eddy_criterion_result_name(eddy_criterion_result_t r) {
  return (unsigned)r < 3 ? criterion_results[r] : "unknown";
}

void eddy_manifest_add_criterion(eddy_manifest_t *m, const char *name, eddy_criterion_result_t result,
                                 double candidate, double reference, double value, double limit) {
  m->gate.present = true;
  if (m->gate.n_criteria >= EDDY_MANIFEST_MAX_CRITERIA) return;
  eddy_gate_criterion_t *c = &m->gate.criteria[m->gate.n_criteria++];
  snprintf(c->name, sizeof c->name, "%s", name);
  c->result = result;
  c->candidate = candidate;
  c->reference = reference;
  c->value = value;
  c->limit = limit;
}

int eddy_version_status_parse(const char *text, eddy_version_status_t *status) {
  for (int i = 0; text && i < 3; i++)
    if (!strcmp(text, status_names[i])) {
      *status = (eddy_version_status_t)i;
      return 0;
    }
  return -1;
}

static int in_list(const char *s, const char *const *list, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!strcmp(s, list[i])) return 1;
  return 0;
}

static void metrics_nan(eddy_metric_values_t *v) {
  v->logloss = v->accuracy = v->mse = NAN;
  v->n = 0;
}

void eddy_manifest_init(eddy_manifest_t *m) {
  memset(m, 0, sizeof *m);
  metrics_nan(&m->prequential);
  metrics_nan(&m->holdout);
  for (int p = 0; p < EDDY_INFER_PRECISIONS; p++) metrics_nan(&m->precisions[p].holdout);
  snprintf(m->precision, sizeof m->precision, "fp32");
  snprintf(m->weights_dtype, sizeof m->weights_dtype, "F32");
  m->status = EDDY_STATUS_CANDIDATE;
}

void eddy_manifest_clear(eddy_manifest_t *m) {
  if (!m) return;
  free(m->offsets);
  for (size_t i = 0; i < m->n_ranks; i++) free(m->ranks[i].offsets);
  free(m->ranks);
  eddy_manifest_init(m);
}

static eddy_manifest_offset_t *offsets_dup(const eddy_manifest_offset_t *src, size_t n) {
  if (!n) return NULL;
  eddy_manifest_offset_t *d = malloc(n * sizeof *d);
  if (d) memcpy(d, src, n * sizeof *d);
  return d;
}

eddy_err_t eddy_manifest_copy(eddy_manifest_t *dst, const eddy_manifest_t *src) {
  *dst = *src;
  dst->offsets = NULL;
  dst->ranks = NULL;
  dst->n_ranks = 0;
  if (src->n_offsets && !(dst->offsets = offsets_dup(src->offsets, src->n_offsets))) {
    dst->n_offsets = 0;
    return EDDY_ERR_NOMEM;
  }
  if (src->n_ranks) {
    if (!(dst->ranks = calloc(src->n_ranks, sizeof *dst->ranks))) return EDDY_ERR_NOMEM;
    for (size_t i = 0; i < src->n_ranks; i++, dst->n_ranks++) {
      dst->ranks[i] = src->ranks[i];
      dst->ranks[i].offsets = NULL;
      if (src->ranks[i].n_offsets &&
          !(dst->ranks[i].offsets = offsets_dup(src->ranks[i].offsets, src->ranks[i].n_offsets))) {
        dst->ranks[i].n_offsets = 0;
        dst->n_ranks++;
        return EDDY_ERR_NOMEM;
      }
    }
  }
  return EDDY_OK;
}

static int topic_ok(const char *t) {
  size_t n = t ? strlen(t) : 0;
  if (n == 0 || n >= EDDY_MANIFEST_TOPIC_MAX) return 0;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)t[i] < 0x20 || t[i] == 0x7f) return 0;
  return 1;
}

static eddy_err_t offset_append(eddy_manifest_offset_t **list, size_t *n, const char *topic, int32_t partition,
                                int64_t next_offset) {
  if (!topic_ok(topic) || partition < 0 || next_offset < 0) return EDDY_ERR_INVALID_ARG;
  if (*n >= EDDY_MANIFEST_MAX_OFFSETS) return EDDY_ERR_TOO_LARGE;
  eddy_manifest_offset_t *grown = realloc(*list, (*n + 1) * sizeof *grown);
  if (!grown) return EDDY_ERR_NOMEM;
  *list = grown;
  eddy_manifest_offset_t *o = &grown[(*n)++];
  memset(o, 0, sizeof *o);
  snprintf(o->topic, sizeof o->topic, "%s", topic);
  o->partition = partition;
  o->next_offset = next_offset;
  return EDDY_OK;
}

eddy_err_t eddy_manifest_add_offset(eddy_manifest_t *m, const char *topic, int32_t partition, int64_t next_offset) {
  return offset_append(&m->offsets, &m->n_offsets, topic, partition, next_offset);
}

eddy_err_t eddy_manifest_rank_add_offset(eddy_manifest_rank_t *r, const char *topic, int32_t partition,
                                         int64_t next_offset) {
  return offset_append(&r->offsets, &r->n_offsets, topic, partition, next_offset);
}

eddy_manifest_rank_t *eddy_manifest_add_rank(eddy_manifest_t *m) {
  if (m->n_ranks >= EDDY_MANIFEST_MAX_RANKS) return NULL;
  eddy_manifest_rank_t *grown = realloc(m->ranks, (m->n_ranks + 1) * sizeof *grown);
  if (!grown) return NULL;
  m->ranks = grown;
  eddy_manifest_rank_t *r = &grown[m->n_ranks++];
  memset(r, 0, sizeof *r);
  return r;
}

const eddy_manifest_file_t *eddy_manifest_file(const eddy_manifest_t *m, const char *name) {
  for (size_t i = 0; i < m->n_files; i++)
    if (!strcmp(m->files[i].name, name)) return &m->files[i];
  return NULL;
}

unsigned eddy_manifest_precisions(const eddy_manifest_t *m) {
  unsigned mask = 0;
  for (int p = 0; p < EDDY_INFER_PRECISIONS; p++)
    if (m->precisions[p].present) mask |= 1u << p;
  return mask;
}

int eddy_manifest_precision_of(const eddy_manifest_t *m, const char *name) {
  for (int p = 0; p < EDDY_INFER_PRECISIONS; p++)
    if (m->precisions[p].present && !strcmp(m->precisions[p].file, name)) return p;
  return -1;
}

void eddy_manifest_format_time(int64_t ms, char *out, size_t out_size) {
  time_t secs = (time_t)(ms / 1000);
  int frac = (int)(ms % 1000);
  if (frac < 0) frac += 1000, secs -= 1;
  struct tm tm;
  char base[32] = "1970-01-01T00:00:00";
  if (gmtime_r(&secs, &tm)) strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out, out_size, "%s.%03dZ", base, frac);
}

int eddy_manifest_name_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n >= EDDY_MANIFEST_NAME_MAX || s[0] == '.') return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
          c == '-'))
      return 0;
  }
  return 1;
}

static int sha_hex_ok(const char *s) {
  if (strlen(s) != 64) return 0;
  for (int i = 0; i < 64; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
  return 1;
}

static int cmp_offset(const void *a, const void *b) {
  const eddy_manifest_offset_t *x = a, *y = b;
  int c = strcmp(x->topic, y->topic);
  if (c) return c;
  return (x->partition > y->partition) - (x->partition < y->partition);
}

/* A list of Kafka positions: printable topics, offsets in range, no partition twice. name is the
 * field's path in messages. */
static eddy_err_t offsets_check(const eddy_manifest_offset_t *list, size_t n, const char *name, eddy_err_t code,
                                char *errstr, size_t errstr_size) {
  if (n > EDDY_MANIFEST_MAX_OFFSETS)
    return eddy_errf(code, errstr, errstr_size, "manifest: \"%s\" has %zu entries: at most %d", name, n,
                     EDDY_MANIFEST_MAX_OFFSETS);
  for (size_t i = 0; i < n; i++) {
    const eddy_manifest_offset_t *o = &list[i];
    if (!topic_ok(o->topic))
      return eddy_errf(code, errstr, errstr_size, "manifest: \"%s[%zu].topic\" is empty or not printable", name, i);
    if (o->partition < 0 || o->next_offset < 0 || (uint64_t)o->next_offset > EDDY_MANIFEST_MAX_INT)
      return eddy_errf(code, errstr, errstr_size,
                       "manifest: \"%s[%zu]\" = %s/%" PRId32 " @ %" PRId64 ": negative or out of range", name, i,
                       o->topic, o->partition, o->next_offset);
  }
  if (n < 2) return EDDY_OK;
  eddy_manifest_offset_t *sorted = malloc(n * sizeof *sorted);
  if (!sorted) return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "manifest: out of memory");
  memcpy(sorted, list, n * sizeof *sorted);
  qsort(sorted, n, sizeof *sorted, cmp_offset);
  eddy_err_t err = EDDY_OK;
  for (size_t i = 1; !err && i < n; i++)
    if (!cmp_offset(&sorted[i - 1], &sorted[i]))
      err = eddy_errf(code, errstr, errstr_size, "manifest: \"%s\" lists %s/%" PRId32 " twice", name, sorted[i].topic,
                      sorted[i].partition);
  free(sorted);
  return err;
}

static int xxh3_hex_ok(const char *s) {
  if (!s[0]) return 1; /* not recorded */
  if (strlen(s) != 16) return 0;
  for (int i = 0; i < 16; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
  return 1;
}

/* The ranks: in rank order from 0, counters in range, each partition trained by one rank only. */
static eddy_err_t ranks_check(const eddy_manifest_t *m, eddy_err_t code, char *errstr, size_t errstr_size) {
  if (m->n_ranks > EDDY_MANIFEST_MAX_RANKS)
    return eddy_errf(code, errstr, errstr_size, "manifest: \"ranks\" has %zu entries: at most %d", m->n_ranks,
                     EDDY_MANIFEST_MAX_RANKS);
  size_t total = 0;
  for (size_t i = 0; i < m->n_ranks; i++) {
    const eddy_manifest_rank_t *r = &m->ranks[i];
    char name[64];
    snprintf(name, sizeof name, "ranks[%zu].trained_offsets", i);
    if (r->rank != i)
      return eddy_errf(code, errstr, errstr_size, "manifest: \"ranks[%zu].rank\" = %" PRIu32 ": must be %zu", i,
                       r->rank, i);
    if (r->buffer_id < 1 || r->buffer_id > EDDY_MANIFEST_MAX_INT || r->cursor > EDDY_MANIFEST_MAX_INT ||
        r->examples > EDDY_MANIFEST_MAX_INT)
      return eddy_errf(code, errstr, errstr_size,
                       "manifest: \"ranks[%zu]\": buffer_id %" PRIu64 ", cursor %" PRIu64 " or examples %" PRIu64
                       " out of range (buffer_id 1..2^53, the others 0..2^53)",
                       i, r->buffer_id, r->cursor, r->examples);
    if (memchr(r->weights_xxh3, 0, sizeof r->weights_xxh3) == NULL || !xxh3_hex_ok(r->weights_xxh3))
      return eddy_errf(code, errstr, errstr_size, "manifest: \"ranks[%zu].weights_xxh3\": not 16 lowercase hex digits",
                       i);
    eddy_err_t err = offsets_check(r->offsets, r->n_offsets, name, code, errstr, errstr_size);
    if (err) return err;
    total += r->n_offsets;
  }
  if (total > EDDY_MANIFEST_MAX_OFFSETS)
    return eddy_errf(code, errstr, errstr_size, "manifest: \"ranks\" list %zu trained offsets: at most %d", total,
                     EDDY_MANIFEST_MAX_OFFSETS);
  if (total < 2) return EDDY_OK;
  eddy_manifest_offset_t *all = malloc(total * sizeof *all);
  if (!all) return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "manifest: out of memory");
  size_t k = 0;
  for (size_t i = 0; i < m->n_ranks; i++)
    for (size_t j = 0; j < m->ranks[i].n_offsets; j++) all[k++] = m->ranks[i].offsets[j];
  eddy_err_t err = offsets_check(all, total, "ranks[].trained_offsets", code, errstr, errstr_size);
  free(all);
  return err;
}

/* The rules every manifest obeys, written or read. The message names the field. */
static eddy_err_t manifest_check(const eddy_manifest_t *m, eddy_err_t code, char *errstr, size_t errstr_size) {
  const uint64_t max = EDDY_MANIFEST_MAX_INT;
  if (m->version < 1 || m->version > max)
    return eddy_errf(code, errstr, errstr_size, "manifest: \"version\" = %" PRIu64 ": must be 1..2^53", m->version);
  if (m->parent >= m->version)
    return eddy_errf(code, errstr, errstr_size,
                     "manifest: \"parent\" = %" PRIu64 ": must be below \"version\" (%" PRIu64 ")", m->parent,
                     m->version);
  if (!eddy_manifest_name_ok(m->model))
    return eddy_errf(code, errstr, errstr_size,
                     "manifest: \"model\" = \"%s\": must be 1..63 characters of A-Z a-z 0-9 . _ - (not starting "
                     "with '.')",
                     m->model);
  if (m->created_at_ms < 0 || (uint64_t)m->created_at_ms > max)
    return eddy_errf(code, errstr, errstr_size, "manifest: \"created_at_ms\" = %" PRId64 ": out of range",
                     m->created_at_ms);
  if (m->newest_event_ms < 0 || (uint64_t)m->newest_event_ms > max)
    return eddy_errf(code, errstr, errstr_size, "manifest: \"newest_event_ms\" = %" PRId64 ": out of range",
                     m->newest_event_ms);
  const struct {
    const char *name;
    uint64_t value;
  } counters[] = {{"step", m->step},
                  {"examples", m->examples},
                  {"buffer_cursor", m->buffer_cursor},
                  {"metrics.prequential.n", m->prequential.n},
                  {"metrics.holdout.n", m->holdout.n}};
  for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
    if (counters[i].value > max)
      return eddy_errf(code, errstr, errstr_size, "manifest: \"%s\" = %" PRIu64 ": above 2^53", counters[i].name,
                       counters[i].value);
  eddy_err_t err = offsets_check(m->offsets, m->n_offsets, "kafka_offsets", code, errstr, errstr_size);
  if (!err) err = ranks_check(m, code, errstr, errstr_size);
  if (err) return err;
  if (!in_list(m->precision, precisions, 3))
    return eddy_errf(code, errstr, errstr_size, "manifest: \"precision\" = \"%s\": must be fp32, bf16 or fp16",
                     m->precision);
  if (!in_list(m->weights_dtype, weight_dtypes, 3))
    return eddy_errf(code, errstr, errstr_size, "manifest: \"weights_dtype\" = \"%s\": must be F32, F16 or BF16",
                     m->weights_dtype);
  char why[256] = "";
  if (eddy_model_spec_validate(&m->spec, why, sizeof why) != EDDY_OK)
    return eddy_errf(code, errstr, errstr_size, "manifest: \"spec\": %s", why);
  if (m->n_files > EDDY_MANIFEST_MAX_FILES)
    return eddy_errf(code, errstr, errstr_size, "manifest: \"files\" has %zu entries: at most %d", m->n_files,
                     EDDY_MANIFEST_MAX_FILES);
  for (size_t i = 0; i < m->n_files; i++) {
    const eddy_manifest_file_t *f = &m->files[i];
    if (!eddy_manifest_name_ok(f->name))
      return eddy_errf(code, errstr, errstr_size, "manifest: \"files\": bad file name \"%s\"", f->name);
    for (size_t j = 0; j < i; j++)
      if (!strcmp(f->name, m->files[j].name))
        return eddy_errf(code, errstr, errstr_size, "manifest: \"files\" lists %s twice", f->name);
    if (f->bytes > max)
      return eddy_errf(code, errstr, errstr_size, "manifest: \"files.%s.bytes\" = %" PRIu64 ": above 2^53", f->name,
                       f->bytes);
    if (!sha_hex_ok(f->sha256))
      return eddy_errf(code, errstr, errstr_size, "manifest: \"files.%s.sha256\" = \"%.80s\": not 64 lowercase hex",
                       f->name, f->sha256);
  }
  for (int p = 0; p < EDDY_INFER_PRECISIONS; p++) {
    const eddy_manifest_precision_t *pr = &m->precisions[p];
    const char *name = eddy_infer_precision_name((eddy_infer_precision_t)p);
    if (!pr->present) continue;
    if (memchr(pr->file, 0, sizeof pr->file) == NULL || !eddy_manifest_name_ok(pr->file))
      return eddy_errf(code, errstr, errstr_size, "manifest: \"precisions.%s.file\": bad file name", name);
    if (!eddy_manifest_file(m, pr->file))
      return eddy_errf(code, errstr, errstr_size, "manifest: \"precisions.%s.file\" = \"%s\" is not listed in \"files\"",
                       name, pr->file);
    const bool fp32 = p == EDDY_INFER_F32, weights = !strcmp(pr->file, "weights.safetensors");
    if (fp32 != weights || !strcmp(pr->file, "state.safetensors"))
      return eddy_errf(code, errstr, errstr_size,
                       "manifest: \"precisions.%s.file\" = \"%s\": fp32 is weights.safetensors, every other "
                       "precision has a file of its own",
                       name, pr->file);
    for (int q = 0; q < p; q++)
      if (m->precisions[q].present && !strcmp(m->precisions[q].file, pr->file))
        return eddy_errf(code, errstr, errstr_size, "manifest: \"precisions\": %s and %s name the same file %s",
                         eddy_infer_precision_name((eddy_infer_precision_t)q), name, pr->file);
    if (pr->holdout.n > max || pr->calibration_events > max)
      return eddy_errf(code, errstr, errstr_size, "manifest: \"precisions.%s\": a count above 2^53", name);
  }
  if ((unsigned)m->status > EDDY_STATUS_REJECTED)
    return eddy_errf(code, errstr, errstr_size, "manifest: \"status\" = %d: unknown", (int)m->status);
  if (m->gate.present) {
    const eddy_gate_verdict_t *g = &m->gate;
    if (!in_list(g->metric, gate_metrics, 2))
      return eddy_errf(code, errstr, errstr_size, "manifest: \"gate.metric\" = \"%.16s\": must be logloss or mse",
                       g->metric);
    if (g->current >= m->version && g->current)
      return eddy_errf(code, errstr, errstr_size,
                       "manifest: \"gate.current\" = %" PRIu64 ": must be below \"version\" (%" PRIu64 ")",
                       g->current, m->version);
    if (g->events > max || g->from_seq > max || g->to_seq > max || g->from_seq > g->to_seq)
      return eddy_errf(code, errstr, errstr_size,
                       "manifest: \"gate\": events %" PRIu64 ", holdout_seqs [%" PRIu64 ", %" PRIu64
                       "]: out of range",
                       g->events, g->from_seq, g->to_seq);
    if (g->n_criteria > EDDY_MANIFEST_MAX_CRITERIA)
      return eddy_errf(code, errstr, errstr_size, "manifest: \"gate.criteria\" has %zu entries: at most %d",
                       g->n_criteria, EDDY_MANIFEST_MAX_CRITERIA);
    for (size_t i = 0; i < g->n_criteria; i++) {
      const eddy_gate_criterion_t *c = &g->criteria[i];
      size_t len = strnlen(c->name, sizeof c->name);
      bool name_ok = len > 0 && len < sizeof c->name;
      for (size_t j = 0; name_ok && j < len; j++)
        name_ok = (c->name[j] >= 'a' && c->name[j] <= 'z') || c->name[j] == '_';
      if (!name_ok)
        return eddy_errf(code, errstr, errstr_size,
                         "manifest: \"gate.criteria[%zu].name\": must be 1..23 characters of a-z and _", i);
      if ((unsigned)c->result > EDDY_CRITERION_FAILED)
        return eddy_errf(code, errstr, errstr_size, "manifest: \"gate.criteria[%zu].result\" = %d: unknown", i,
                         (int)c->result);
    }
  }
  if (memchr(m->reason, 0, sizeof m->reason) == NULL)
    return eddy_errf(code, errstr, errstr_size, "manifest: \"reason\" is not terminated");
  return EDDY_OK;
}

/* ---- writing ---- */

static cJSON *metrics_json(const eddy_metric_values_t *v) {
  cJSON *o = cJSON_CreateObject();
  if (!o) return NULL;
  const struct {
    const char *key;
    double value;
  } fields[] = {{"logloss", v->logloss}, {"accuracy", v->accuracy}, {"mse", v->mse}};
  for (size_t i = 0; i < 3; i++) {
    cJSON *x = isfinite(fields[i].value) ? cJSON_CreateNumber(fields[i].value) : cJSON_CreateNull();
    if (!x) {
      cJSON_Delete(o);
      return NULL;
    }
    cJSON_AddItemToObject(o, fields[i].key, x);
  }
  if (!cJSON_AddNumberToObject(o, "n", (double)v->n)) {
    cJSON_Delete(o);
    return NULL;
  }
  return o;
}

static cJSON *num_or_null(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

/* The "gate" object (NULL when out of memory). */
static cJSON *gate_json(const eddy_gate_verdict_t *g) {
  cJSON *o = cJSON_CreateObject();
  bool ok = o && cJSON_AddStringToObject(o, "metric", g->metric);
  if (ok) ok = g->current ? cJSON_AddNumberToObject(o, "current", (double)g->current) != NULL
                          : cJSON_AddNullToObject(o, "current") != NULL;
  ok = ok && cJSON_AddNumberToObject(o, "events", (double)g->events);
  cJSON *seqs = ok ? cJSON_AddArrayToObject(o, "holdout_seqs") : NULL;
  ok = seqs != NULL;
  if (ok) {
    cJSON_AddItemToArray(seqs, cJSON_CreateNumber((double)g->from_seq));
    cJSON_AddItemToArray(seqs, cJSON_CreateNumber((double)g->to_seq));
  }
  cJSON *list = ok ? cJSON_AddArrayToObject(o, "criteria") : NULL;
  ok = list != NULL;
  for (size_t i = 0; ok && i < g->n_criteria; i++) {
    const eddy_gate_criterion_t *c = &g->criteria[i];
    cJSON *e = cJSON_CreateObject();
    ok = e != NULL;
    if (ok) cJSON_AddItemToArray(list, e);
    ok = ok && cJSON_AddStringToObject(e, "name", c->name);
    ok = ok && cJSON_AddStringToObject(e, "result", eddy_criterion_result_name(c->result));
    const struct {
      const char *key;
      double v;
    } nums[] = {{"candidate", c->candidate}, {"reference", c->reference}, {"value", c->value}, {"limit", c->limit}};
    for (size_t k = 0; ok && k < 4; k++) {
      cJSON *x = num_or_null(nums[k].v);
      ok = x != NULL;
      if (ok) cJSON_AddItemToObject(e, nums[k].key, x);
    }
  }
  if (!ok) {
    cJSON_Delete(o);
    return NULL;
  }
  return o;
}

char *eddy_manifest_gate_json(const eddy_manifest_t *m) {
  if (!m->gate.present) {
    char *s = malloc(5);
    if (s) memcpy(s, "null", 5);
    return s;
  }
  cJSON *o = gate_json(&m->gate);
  char *text = o ? cJSON_PrintUnformatted(o) : NULL;
  cJSON_Delete(o);
  return text;
}

/* Adds list as an array of {topic, partition, next_offset} named key to o. */
static bool offsets_json(cJSON *o, const char *key, const eddy_manifest_offset_t *list, size_t n) {
  cJSON *arr = cJSON_AddArrayToObject(o, key);
  bool ok = arr != NULL;
  for (size_t i = 0; ok && i < n; i++) {
    cJSON *e = cJSON_CreateObject();
    ok = e != NULL;
    if (ok) cJSON_AddItemToArray(arr, e);
    ok = ok && cJSON_AddStringToObject(e, "topic", list[i].topic);
    ok = ok && cJSON_AddNumberToObject(e, "partition", list[i].partition);
    ok = ok && cJSON_AddNumberToObject(e, "next_offset", (double)list[i].next_offset);
  }
  return ok;
}

eddy_err_t eddy_manifest_to_json(const eddy_manifest_t *m, char **json, char *errstr, size_t errstr_size) {
  *json = NULL;
  eddy_err_t err = manifest_check(m, EDDY_ERR_INVALID_ARG, errstr, errstr_size);
  if (err) return err;
  char when[40];
  eddy_manifest_format_time(m->created_at_ms, when, sizeof when);
  char *spec_text = eddy_model_spec_to_json(&m->spec);
  cJSON *spec = spec_text ? cJSON_Parse(spec_text) : NULL;
  free(spec_text);
  cJSON *o = cJSON_CreateObject();
  bool ok = o && spec;
  ok = ok && cJSON_AddNumberToObject(o, "format", EDDY_MANIFEST_FORMAT);
  ok = ok && cJSON_AddStringToObject(o, "model", m->model);
  ok = ok && cJSON_AddNumberToObject(o, "version", (double)m->version);
  if (ok) ok = m->parent ? cJSON_AddNumberToObject(o, "parent", (double)m->parent) != NULL
                         : cJSON_AddNullToObject(o, "parent") != NULL;
  ok = ok && cJSON_AddStringToObject(o, "status", eddy_version_status_name(m->status));
  ok = ok && cJSON_AddStringToObject(o, "reason", m->reason);
  if (ok && m->gate.present) {
    cJSON *g = gate_json(&m->gate);
    ok = g != NULL;
    if (ok) cJSON_AddItemToObject(o, "gate", g);
  }
  ok = ok && cJSON_AddStringToObject(o, "created_at", when);
  ok = ok && cJSON_AddNumberToObject(o, "created_at_ms", (double)m->created_at_ms);
  ok = ok && cJSON_AddNumberToObject(o, "step", (double)m->step);
  ok = ok && cJSON_AddNumberToObject(o, "examples", (double)m->examples);
  ok = ok && cJSON_AddNumberToObject(o, "buffer_cursor", (double)m->buffer_cursor);
  if (ok) ok = m->newest_event_ms > 0 ? cJSON_AddNumberToObject(o, "newest_event_ms", (double)m->newest_event_ms) != NULL
                                      : cJSON_AddNullToObject(o, "newest_event_ms") != NULL;
  ok = ok && offsets_json(o, "kafka_offsets", m->offsets, m->n_offsets);
  cJSON *ranks = ok && m->n_ranks ? cJSON_AddArrayToObject(o, "ranks") : NULL;
  ok = ok && (!m->n_ranks || ranks);
  for (size_t i = 0; ok && i < m->n_ranks; i++) {
    const eddy_manifest_rank_t *r = &m->ranks[i];
    cJSON *e = cJSON_CreateObject();
    ok = e != NULL;
    if (ok) cJSON_AddItemToArray(ranks, e);
    ok = ok && cJSON_AddNumberToObject(e, "rank", r->rank);
    ok = ok && cJSON_AddNumberToObject(e, "buffer_id", (double)r->buffer_id);
    ok = ok && cJSON_AddNumberToObject(e, "cursor", (double)r->cursor);
    ok = ok && cJSON_AddNumberToObject(e, "examples", (double)r->examples);
    if (ok) ok = r->weights_xxh3[0] ? cJSON_AddStringToObject(e, "weights_xxh3", r->weights_xxh3) != NULL
                                    : cJSON_AddNullToObject(e, "weights_xxh3") != NULL;
    ok = ok && offsets_json(e, "trained_offsets", r->offsets, r->n_offsets);
  }
  cJSON *metrics = ok ? cJSON_AddObjectToObject(o, "metrics") : NULL;
  cJSON *preq = metrics ? metrics_json(&m->prequential) : NULL;
  cJSON *hold = preq ? metrics_json(&m->holdout) : NULL;
  ok = hold != NULL;
  if (preq) cJSON_AddItemToObject(metrics, "prequential", preq);
  if (hold) cJSON_AddItemToObject(metrics, "holdout", hold);
  if (ok && eddy_manifest_precisions(m)) {
    cJSON *precs = cJSON_AddObjectToObject(o, "precisions");
    ok = precs != NULL;
    for (int p = 0; ok && p < EDDY_INFER_PRECISIONS; p++) {
      const eddy_manifest_precision_t *pr = &m->precisions[p];
      if (!pr->present) continue;
      cJSON *e = cJSON_AddObjectToObject(precs, eddy_infer_precision_name((eddy_infer_precision_t)p));
      cJSON *h = e ? metrics_json(&pr->holdout) : NULL;
      ok = h != NULL && cJSON_AddStringToObject(e, "file", pr->file);
      if (h) cJSON_AddItemToObject(e, "holdout", h);
      if (ok && p == EDDY_INFER_INT8)
        ok = cJSON_AddNumberToObject(e, "calibration_events", (double)pr->calibration_events) != NULL;
    }
  }
  ok = ok && cJSON_AddStringToObject(o, "precision", m->precision);
  ok = ok && cJSON_AddStringToObject(o, "weights_dtype", m->weights_dtype);
  if (ok) {
    cJSON_AddItemToObject(o, "spec", spec);
    spec = NULL;
  }
  cJSON *files = ok ? cJSON_AddObjectToObject(o, "files") : NULL;
  ok = files != NULL;
  for (size_t i = 0; ok && i < m->n_files; i++) {
    cJSON *f = cJSON_AddObjectToObject(files, m->files[i].name);
    ok = f && cJSON_AddNumberToObject(f, "bytes", (double)m->files[i].bytes) &&
         cJSON_AddStringToObject(f, "sha256", m->files[i].sha256);
  }
  char *text = ok ? cJSON_Print(o) : NULL;
  cJSON_Delete(o);
  cJSON_Delete(spec);
  if (!text) return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "manifest: out of memory building JSON");
  *json = text;
  return EDDY_OK;
}

/* ---- parsing ---- */

typedef struct {
  char *errstr;
  size_t errstr_size;
} pctx_t;

static eddy_err_t bad(pctx_t *p, const char *fmt, const char *field, const char *detail) {
  char msg[512];
  snprintf(msg, sizeof msg, fmt, field, detail ? detail : "");
  return eddy_errf(EDDY_ERR_FORMAT, p->errstr, p->errstr_size, "manifest: %s", msg);
}

static eddy_err_t check_object(pctx_t *p, const cJSON *o, const char *field) {
  if (!cJSON_IsObject(o)) return bad(p, "\"%s\" must be an object%s", field, NULL);
  size_t n = 0;
  for (const cJSON *a = o->child; a; a = a->next)
    if (++n > MAX_OBJECT_KEYS) return bad(p, "\"%s\" has more than 256 fields%s", field, NULL);
  for (const cJSON *a = o->child; a; a = a->next)
    for (const cJSON *b = a->next; b; b = b->next)
      if (!strcmp(a->string, b->string)) {
        char f[160];
        snprintf(f, sizeof f, "%s.%s", field, a->string);
        return bad(p, "\"%s\" appears twice%s", f, NULL);
      }
  return EDDY_OK;
}

static const cJSON *field(const cJSON *o, const char *key) { return cJSON_GetObjectItemCaseSensitive(o, key); }

/* An integer in [0, 2^53]; name is the field's path in messages. */
static eddy_err_t get_uint(pctx_t *p, const cJSON *o, const char *key, const char *name, uint64_t *out) {
  const cJSON *v = field(o, key);
  if (!v) return bad(p, "\"%s\" missing%s", name, NULL);
  if (!cJSON_IsNumber(v)) return bad(p, "\"%s\" must be a number%s", name, NULL);
  double d = v->valuedouble;
  if (!(d >= 0) || d > (double)EDDY_MANIFEST_MAX_INT || d != floor(d))
    return bad(p, "\"%s\" must be an integer in 0..2^53%s", name, NULL);
  *out = (uint64_t)d;
  return EDDY_OK;
}

static eddy_err_t get_string(pctx_t *p, const cJSON *o, const char *key, const char *name, char *out,
                             size_t out_size) {
  const cJSON *v = field(o, key);
  if (!v) return bad(p, "\"%s\" missing%s", name, NULL);
  if (!cJSON_IsString(v) || !v->valuestring) return bad(p, "\"%s\" must be a string%s", name, NULL);
  if (strlen(v->valuestring) >= out_size) return bad(p, "\"%s\" is too long%s", name, NULL);
  memcpy(out, v->valuestring, strlen(v->valuestring) + 1);
  return EDDY_OK;
}

/* A number or null (NaN) at o.key, name being its path. */
static eddy_err_t get_num_or_null(pctx_t *p, const cJSON *o, const char *key, const char *name, double *out) {
  const cJSON *v = field(o, key);
  if (!v) return bad(p, "\"%s\" missing%s", name, NULL);
  if (cJSON_IsNull(v)) {
    *out = NAN;
    return EDDY_OK;
  }
  if (!cJSON_IsNumber(v)) return bad(p, "\"%s\" must be a number or null%s", name, NULL);
  *out = v->valuedouble;
  return EDDY_OK;
}

/* A metric: a number or null (NaN); path is its object's path ("metrics.holdout"). */
static eddy_err_t get_metric(pctx_t *p, const cJSON *o, const char *key, const char *path, double *out) {
  char name[96];
  snprintf(name, sizeof name, "%s.%s", path, key);
  return get_num_or_null(p, o, key, name, out);
}

/* The metrics object parent.key, named path in messages ("metrics.holdout"). */
static eddy_err_t get_metrics(pctx_t *p, const cJSON *parent, const char *key, const char *path,
                              eddy_metric_values_t *out) {
  char name[96];
  const cJSON *o = field(parent, key);
  if (!o) return bad(p, "\"%s\" missing%s", path, NULL);
  eddy_err_t err = check_object(p, o, path);
  if (!err) err = get_metric(p, o, "logloss", path, &out->logloss);
  if (!err) err = get_metric(p, o, "accuracy", path, &out->accuracy);
  if (!err) err = get_metric(p, o, "mse", path, &out->mse);
  snprintf(name, sizeof name, "%s.n", path);
  if (!err) err = get_uint(p, o, "n", name, &out->n);
  return err;
}

/* "precisions" (optional): {"fp32": {"file": ..., "holdout": {...}}, "int8": {..., "calibration_events": N}}. */
static eddy_err_t parse_precisions(pctx_t *p, const cJSON *precs, eddy_manifest_t *m) {
  if (!precs) return EDDY_OK;
  eddy_err_t err = check_object(p, precs, "precisions");
  for (const cJSON *e = precs->child; !err && e; e = e->next) {
    eddy_infer_precision_t prec;
    char path[64], name[96];
    if (eddy_infer_precision_parse(e->string, &prec) != 0)
      return bad(p, "\"precisions\": \"%.32s\" is not one of fp32, bf16, fp16, int8%s", e->string, NULL);
    eddy_manifest_precision_t *out = &m->precisions[prec];
    snprintf(path, sizeof path, "precisions.%s", e->string);
    if ((err = check_object(p, e, path))) break;
    snprintf(name, sizeof name, "%s.file", path);
    if ((err = get_string(p, e, "file", name, out->file, sizeof out->file))) break;
    snprintf(name, sizeof name, "%s.holdout", path);
    if ((err = get_metrics(p, e, "holdout", name, &out->holdout))) break;
    if (prec == EDDY_INFER_INT8) {
      snprintf(name, sizeof name, "%s.calibration_events", path);
      if ((err = get_uint(p, e, "calibration_events", name, &out->calibration_events))) break;
    }
    out->present = true;
  }
  return err;
}

/* An array of {topic, partition, next_offset} at field (its path in messages) into list/n. */
static eddy_err_t parse_offsets(pctx_t *p, const cJSON *arr, const char *field_name, eddy_manifest_offset_t **list,
                                size_t *n) {
  if (!arr) return bad(p, "\"%s\" missing%s", field_name, NULL);
  if (!cJSON_IsArray(arr)) return bad(p, "\"%s\" must be an array%s", field_name, NULL);
  size_t i = 0;
  for (const cJSON *e = arr->child; e; e = e->next, i++) {
    char name[96], sub[128];
    snprintf(name, sizeof name, "%s[%zu]", field_name, i);
    if (i >= EDDY_MANIFEST_MAX_OFFSETS) return bad(p, "\"%s\": more than 4096 entries%s", field_name, NULL);
    eddy_err_t err = check_object(p, e, name);
    char topic[EDDY_MANIFEST_TOPIC_MAX];
    uint64_t partition = 0, next = 0;
    snprintf(sub, sizeof sub, "%s.topic", name);
    if (!err) err = get_string(p, e, "topic", sub, topic, sizeof topic);
    snprintf(sub, sizeof sub, "%s.partition", name);
    if (!err) err = get_uint(p, e, "partition", sub, &partition);
    if (!err && partition > INT32_MAX) err = bad(p, "\"%s\" is above 2^31-1%s", sub, NULL);
    snprintf(sub, sizeof sub, "%s.next_offset", name);
    if (!err) err = get_uint(p, e, "next_offset", sub, &next);
    if (err) return err;
    err = offset_append(list, n, topic, (int32_t)partition, (int64_t)next);
    if (err == EDDY_ERR_NOMEM) return eddy_errf(err, p->errstr, p->errstr_size, "manifest: out of memory");
    if (err) return bad(p, "\"%s.topic\" is empty or not printable%s", name, NULL);
  }
  return EDDY_OK;
}

/* "ranks" (optional: manifests written before ranks existed have none). */
static eddy_err_t parse_ranks(pctx_t *p, const cJSON *arr, eddy_manifest_t *m) {
  if (!arr) return EDDY_OK;
  if (!cJSON_IsArray(arr)) return bad(p, "\"%s\" must be an array%s", "ranks", NULL);
  size_t i = 0;
  for (const cJSON *e = arr->child; e; e = e->next, i++) {
    char name[64], sub[96];
    snprintf(name, sizeof name, "ranks[%zu]", i);
    eddy_err_t err = check_object(p, e, name);
    if (err) return err;
    eddy_manifest_rank_t *r = eddy_manifest_add_rank(m);
    if (!r) return bad(p, "\"%s\": more than 4096 entries (or out of memory)%s", "ranks", NULL);
    uint64_t rank = 0;
    snprintf(sub, sizeof sub, "%s.rank", name);
    if (!err) err = get_uint(p, e, "rank", sub, &rank);
    if (!err && rank > UINT32_MAX) err = bad(p, "\"%s\" is above 2^32-1%s", sub, NULL);
    r->rank = (uint32_t)rank;
    snprintf(sub, sizeof sub, "%s.buffer_id", name);
    if (!err) err = get_uint(p, e, "buffer_id", sub, &r->buffer_id);
    snprintf(sub, sizeof sub, "%s.cursor", name);
    if (!err) err = get_uint(p, e, "cursor", sub, &r->cursor);
    snprintf(sub, sizeof sub, "%s.examples", name);
    if (!err) err = get_uint(p, e, "examples", sub, &r->examples);
    const cJSON *sum = field(e, "weights_xxh3");
    snprintf(sub, sizeof sub, "%s.weights_xxh3", name);
    if (!err && !sum) err = bad(p, "\"%s\" missing%s", sub, NULL);
    if (!err && !cJSON_IsNull(sum)) err = get_string(p, e, "weights_xxh3", sub, r->weights_xxh3, sizeof r->weights_xxh3);
    snprintf(sub, sizeof sub, "%s.trained_offsets", name);
    if (!err) err = parse_offsets(p, field(e, "trained_offsets"), sub, &r->offsets, &r->n_offsets);
    if (err) return err;
  }
  return EDDY_OK;
}

static eddy_err_t parse_files(pctx_t *p, const cJSON *files, eddy_manifest_t *m) {
  if (!files) return bad(p, "\"%s\" missing%s", "files", NULL);
  eddy_err_t err = check_object(p, files, "files");
  for (const cJSON *f = files ? files->child : NULL; !err && f; f = f->next) {
    if (m->n_files >= EDDY_MANIFEST_MAX_FILES) return bad(p, "\"%s\" has more than 8 entries%s", "files", NULL);
    eddy_manifest_file_t *out = &m->files[m->n_files];
    char name[128];
    if (strlen(f->string) >= sizeof out->name || !eddy_manifest_name_ok(f->string))
      return bad(p, "\"files\": bad file name \"%.64s\"%s", f->string, NULL);
    snprintf(out->name, sizeof out->name, "%s", f->string);
    snprintf(name, sizeof name, "files.%s", f->string);
    err = check_object(p, f, name);
    snprintf(name, sizeof name, "files.%s.bytes", f->string);
    if (!err) err = get_uint(p, f, "bytes", name, &out->bytes);
    snprintf(name, sizeof name, "files.%s.sha256", f->string);
    if (!err) err = get_string(p, f, "sha256", name, out->sha256, sizeof out->sha256);
    if (!err && !sha_hex_ok(out->sha256)) err = bad(p, "\"%s\" must be 64 lowercase hex digits%s", name, NULL);
    m->n_files++;
  }
  return err;
}

static eddy_err_t parse_gate(pctx_t *p, const cJSON *o, eddy_gate_verdict_t *g) {
  eddy_err_t err = check_object(p, o, "gate");
  if (err) return err;
  g->present = true;
  if ((err = get_string(p, o, "metric", "gate.metric", g->metric, sizeof g->metric))) return err;
  const cJSON *cur = field(o, "current");
  if (!cur) return bad(p, "\"%s\" missing%s", "gate.current", NULL);
  if (!cJSON_IsNull(cur) && (err = get_uint(p, o, "current", "gate.current", &g->current))) return err;
  if ((err = get_uint(p, o, "events", "gate.events", &g->events))) return err;
  const cJSON *seqs = field(o, "holdout_seqs");
  if (!cJSON_IsArray(seqs) || cJSON_GetArraySize(seqs) != 2)
    return bad(p, "\"%s\" must be an array of two seqs%s", "gate.holdout_seqs", NULL);
  uint64_t *ends[2] = {&g->from_seq, &g->to_seq};
  for (int i = 0; i < 2; i++) {
    const cJSON *v = cJSON_GetArrayItem(seqs, i);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0) || v->valuedouble > (double)EDDY_MANIFEST_MAX_INT ||
        v->valuedouble != floor(v->valuedouble))
      return bad(p, "\"%s\" must hold integers in 0..2^53%s", "gate.holdout_seqs", NULL);
    *ends[i] = (uint64_t)v->valuedouble;
  }
  const cJSON *list = field(o, "criteria");
  if (!cJSON_IsArray(list)) return bad(p, "\"%s\" must be an array%s", "gate.criteria", NULL);
  size_t i = 0;
  for (const cJSON *e = list->child; e; e = e->next, i++) {
    if (i >= EDDY_MANIFEST_MAX_CRITERIA) return bad(p, "\"%s\" has more than 8 entries%s", "gate.criteria", NULL);
    eddy_gate_criterion_t *c = &g->criteria[i];
    char name[64], sub[96], result[16];
    snprintf(name, sizeof name, "gate.criteria[%zu]", i);
    if ((err = check_object(p, e, name))) return err;
    snprintf(sub, sizeof sub, "%s.name", name);
    if ((err = get_string(p, e, "name", sub, c->name, sizeof c->name))) return err;
    snprintf(sub, sizeof sub, "%s.result", name);
    if ((err = get_string(p, e, "result", sub, result, sizeof result))) return err;
    int r = -1;
    for (int k = 0; k < 3; k++)
      if (!strcmp(result, criterion_results[k])) r = k;
    if (r < 0) return bad(p, "\"%s\" must be \"skipped\", \"passed\" or \"failed\"%s", sub, NULL);
    c->result = (eddy_criterion_result_t)r;
    const char *keys[4] = {"candidate", "reference", "value", "limit"};
    double *dst[4] = {&c->candidate, &c->reference, &c->value, &c->limit};
    for (int k = 0; k < 4; k++) {
      snprintf(sub, sizeof sub, "%s.%s", name, keys[k]);
      if ((err = get_num_or_null(p, e, keys[k], sub, dst[k]))) return err;
    }
    g->n_criteria = i + 1;
  }
  return EDDY_OK;
}

static eddy_err_t parse_root(pctx_t *p, const cJSON *o, eddy_manifest_t *m) {
  eddy_err_t err = check_object(p, o, "(top level)");
  if (err) return err;
  uint64_t format = 0, created = 0;
  if ((err = get_uint(p, o, "format", "format", &format))) return err;
  if (format != EDDY_MANIFEST_FORMAT) {
    char detail[64];
    snprintf(detail, sizeof detail, " = %" PRIu64 ": this build reads format %d", format, EDDY_MANIFEST_FORMAT);
    return bad(p, "\"%s\"%s", "format", detail);
  }
  if ((err = get_string(p, o, "model", "model", m->model, sizeof m->model))) return err;
  if ((err = get_uint(p, o, "version", "version", &m->version))) return err;
  const cJSON *parent = field(o, "parent");
  if (!parent) return bad(p, "\"%s\" missing%s", "parent", NULL);
  if (!cJSON_IsNull(parent) && (err = get_uint(p, o, "parent", "parent", &m->parent))) return err;
  if (!cJSON_IsNull(parent) && m->parent == 0) return bad(p, "\"%s\" must be null or >= 1%s", "parent", NULL);
  char status[32];
  if ((err = get_string(p, o, "status", "status", status, sizeof status))) return err;
  if (eddy_version_status_parse(status, &m->status) != 0)
    return bad(p, "\"%s\" must be \"candidate\", \"promoted\" or \"rejected\"%s", "status", NULL);
  if ((err = get_string(p, o, "reason", "reason", m->reason, sizeof m->reason))) return err;
  /* Optional (manifests written before the champion/challenger gate have none). */
  const cJSON *gate = field(o, "gate");
  if (gate && !cJSON_IsNull(gate) && (err = parse_gate(p, gate, &m->gate))) return err;
  char when[40], expect[40];
  if ((err = get_string(p, o, "created_at", "created_at", when, sizeof when))) return err;
  if ((err = get_uint(p, o, "created_at_ms", "created_at_ms", &created))) return err;
  m->created_at_ms = (int64_t)created;
  eddy_manifest_format_time(m->created_at_ms, expect, sizeof expect);
  if (strcmp(when, expect) != 0) return bad(p, "\"%s\" does not match created_at_ms (%s)", "created_at", expect);
  if ((err = get_uint(p, o, "step", "step", &m->step))) return err;
  if ((err = get_uint(p, o, "examples", "examples", &m->examples))) return err;
  if ((err = get_uint(p, o, "buffer_cursor", "buffer_cursor", &m->buffer_cursor))) return err;
  /* Optional (manifests written before it existed have none): absent or null = unknown. */
  const cJSON *newest = field(o, "newest_event_ms");
  if (newest && !cJSON_IsNull(newest)) {
    uint64_t ms = 0;
    if ((err = get_uint(p, o, "newest_event_ms", "newest_event_ms", &ms))) return err;
    m->newest_event_ms = (int64_t)ms;
  }
  if ((err = parse_offsets(p, field(o, "kafka_offsets"), "kafka_offsets", &m->offsets, &m->n_offsets))) return err;
  if ((err = parse_ranks(p, field(o, "ranks"), m))) return err;
  const cJSON *metrics = field(o, "metrics");
  if (!metrics) return bad(p, "\"%s\" missing%s", "metrics", NULL);
  if ((err = check_object(p, metrics, "metrics"))) return err;
  if ((err = get_metrics(p, metrics, "prequential", "metrics.prequential", &m->prequential))) return err;
  if ((err = get_metrics(p, metrics, "holdout", "metrics.holdout", &m->holdout))) return err;
  if ((err = parse_precisions(p, field(o, "precisions"), m))) return err;
  if ((err = get_string(p, o, "precision", "precision", m->precision, sizeof m->precision))) return err;
  if ((err = get_string(p, o, "weights_dtype", "weights_dtype", m->weights_dtype, sizeof m->weights_dtype)))
    return err;
  const cJSON *spec = field(o, "spec");
  if (!spec) return bad(p, "\"%s\" missing%s", "spec", NULL);
  if (!cJSON_IsObject(spec)) return bad(p, "\"%s\" must be an object%s", "spec", NULL);
  char *spec_text = cJSON_PrintUnformatted(spec);
  if (!spec_text) return eddy_errf(EDDY_ERR_NOMEM, p->errstr, p->errstr_size, "manifest: out of memory");
  char why[256] = "";
  err = eddy_model_spec_from_json(spec_text, &m->spec, why, sizeof why);
  free(spec_text);
  if (err) return bad(p, "\"%s\": %s", "spec", why);
  return parse_files(p, field(o, "files"), m);
}

eddy_err_t eddy_manifest_parse(const char *json, size_t len, eddy_manifest_t *m, char *errstr, size_t errstr_size) {
  eddy_manifest_init(m);
  if (!json) return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "manifest: NULL text");
  if (len > EDDY_MANIFEST_MAX_BYTES)
    return eddy_errf(EDDY_ERR_TOO_LARGE, errstr, errstr_size, "manifest: %zu bytes, over the cap of %u", len,
                     (unsigned)EDDY_MANIFEST_MAX_BYTES);
  char why[128];
  cJSON *root = eddy_json_parse(json, len, why, sizeof why);
  if (!root) return eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "manifest: %s", why);
  pctx_t p = {errstr, errstr_size};
  eddy_err_t err = parse_root(&p, root, m);
  cJSON_Delete(root);
  if (!err) err = manifest_check(m, EDDY_ERR_FORMAT, errstr, errstr_size);
  return err;
}

eddy_err_t eddy_manifest_load(const char *path, eddy_manifest_t *m, char *errstr, size_t errstr_size) {
  eddy_manifest_init(m);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    return eddy_errf(e == ENOENT ? EDDY_ERR_NOT_FOUND : EDDY_ERR_IO, errstr, errstr_size, "%s: %s", path,
                     strerror(e));
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "%s: not a regular file", path);
  }
  if ((uint64_t)st.st_size > EDDY_MANIFEST_MAX_BYTES) {
    close(fd);
    return eddy_errf(EDDY_ERR_TOO_LARGE, errstr, errstr_size, "%s: %lld bytes, over the manifest cap of %u", path,
                     (long long)st.st_size, (unsigned)EDDY_MANIFEST_MAX_BYTES);
  }
  size_t cap = (size_t)st.st_size + 1, len = 0;
  char *buf = malloc(cap);
  if (!buf) {
    close(fd);
    return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "%s: out of memory", path);
  }
  for (;;) {
    ssize_t k = read(fd, buf + len, cap - len);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) {
      int e = errno;
      close(fd);
      free(buf);
      return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "%s: read: %s", path, strerror(e));
    }
    if (k == 0) break;
    len += (size_t)k;
    if (len == cap) { /* grew while we read: refuse rather than chase it */
      close(fd);
      free(buf);
      return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "%s: changed while being read", path);
    }
  }
  close(fd);
  char msg[600] = "";
  eddy_err_t err = eddy_manifest_parse(buf, len, m, msg, sizeof msg);
  free(buf);
  if (err) {
    const char *text = strncmp(msg, "manifest: ", 10) == 0 ? msg + 10 : msg;
    eddy_errf(err, errstr, errstr_size, "%s: %s", path, text);
  }
  return err;
}
