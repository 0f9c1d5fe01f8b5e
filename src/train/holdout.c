/* The gate's holdout: events chosen by a hash of their id (or seq) never train. The newest of them
 * form the holdout window, the events the gate scores both the candidate and CURRENT on: a ring of
 * snapshot.gate.holdout_events in seq order, none older than gate.holdout_max_age seconds of event
 * time, none before the drift re-base point, none in a retrain rollback's skip range, each at most
 * once. The ring belongs to the training thread; the gate gets a frozen copy per candidate. With
 * trainer ranks every rank holds the same events out of training, but only rank 0, which gates,
 * keeps a window (of its own buffer's events). */
#include "train/trainer_state.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "core/log.h"
#include "data/dataset.h"
#include "format/safetensors.h"

#define LOG_MOD "train"
#define HOLDOUT_SEED 0x686f6c646f7574ull /* "holdout" */

bool trainer_is_holdout(const eddy_trainer_t *t, const eddy_event_t *ev, uint64_t seq) {
  if (!t->hold_threshold) return false;
  uint64_t h;
  if (ev->id[0]) {
    h = XXH3_64bits_withSeed(ev->id, strlen(ev->id), HOLDOUT_SEED);
  } else {
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)(seq >> (8 * i));
    h = XXH3_64bits_withSeed(le, sizeof le, HOLDOUT_SEED);
  }
  return h < t->hold_threshold;
}

/* Deep copy of src into dst (whose arrays are reused and grown). */
static bool event_copy(eddy_event_t *dst, const eddy_event_t *src) {
  if (src->n_dense > dst->dense_cap || (!dst->dense && src->n_dense)) {
    float *d = realloc(dst->dense, (size_t)src->n_dense * sizeof *d);
    if (!d) return false;
    dst->dense = d;
    dst->dense_cap = src->n_dense;
  }
  if (src->n_sparse > dst->sparse_cap || (!dst->sparse_idx && src->n_sparse)) {
    uint32_t *idx = realloc(dst->sparse_idx, (size_t)src->n_sparse * sizeof *idx);
    if (!idx) return false;
    dst->sparse_idx = idx;
    float *val = realloc(dst->sparse_val, (size_t)src->n_sparse * sizeof *val);
    if (!val) return false;
    dst->sparse_val = val;
    dst->sparse_cap = src->n_sparse;
  }
  memcpy(dst->id, src->id, sizeof dst->id);
  dst->ts = src->ts;
  dst->has_ts = src->has_ts;
  dst->label = src->label;
  dst->weight = src->weight;
  dst->n_dense = src->n_dense;
  dst->n_sparse = src->n_sparse;
  if (src->n_dense) memcpy(dst->dense, src->dense, (size_t)src->n_dense * sizeof *src->dense);
  if (src->n_sparse) {
    memcpy(dst->sparse_idx, src->sparse_idx, (size_t)src->n_sparse * sizeof *src->sparse_idx);
    memcpy(dst->sparse_val, src->sparse_val, (size_t)src->n_sparse * sizeof *src->sparse_val);
  }
  return true;
}

bool trainer_holdout_init(eddy_trainer_t *t) {
  t->hold_cap = t->cfg.gate_holdout_events;
  t->hold = calloc(t->hold_cap, sizeof *t->hold);
  t->hold_seq = calloc(t->hold_cap, sizeof *t->hold_seq);
  if (!t->hold || !t->hold_seq) return false;
  for (size_t i = 0; i < t->hold_cap; i++) eddy_event_init(&t->hold[i]);
  return true;
}

void trainer_holdout_free(eddy_trainer_t *t) {
  if (t->hold)
    for (size_t i = 0; i < t->hold_cap; i++) eddy_event_free(&t->hold[i]);
  free(t->hold);
  free(t->hold_seq);
  t->hold = NULL;
  t->hold_seq = NULL;
}

static size_t slot(const eddy_trainer_t *t, size_t i) { return (t->hold_head + i) % t->hold_cap; }

static bool in_skip(const eddy_trainer_t *t, uint64_t seq) {
  return t->skip_to >= t->skip_from && seq >= t->skip_from && seq <= t->skip_to;
}

/* Too old: more than gate.holdout_max_age seconds of event time before the newest trained event. */
static bool too_old(const eddy_trainer_t *t, const eddy_event_t *ev) {
  uint32_t age = t->cfg.gate_holdout_max_age;
  return age && ev->has_ts && t->newest_event_ms > 0 && ev->ts < t->newest_event_ms - (int64_t)age * 1000;
}

static void drop_oldest(eddy_trainer_t *t) {
  t->hold_head = (t->hold_head + 1) % t->hold_cap;
  t->hold_n--;
}

void trainer_holdout_add(eddy_trainer_t *t, const eddy_event_t *ev, uint64_t seq) {
  if (t->rk.rank != 0 || seq < t->hold_from || in_skip(t, seq)) return;
  if (t->hold_n && seq <= t->hold_seq[slot(t, t->hold_n - 1)]) return; /* never twice */
  while (t->hold_n && too_old(t, &t->hold[t->hold_head])) drop_oldest(t);
  if (t->hold_n == t->hold_cap) drop_oldest(t);
  size_t at = slot(t, t->hold_n);
  if (!event_copy(&t->hold[at], ev)) return; /* out of memory: one fewer holdout event */
  t->hold_seq[at] = seq;
  t->hold_n++;
}

void trainer_holdout_refill(eddy_trainer_t *t) {
  t->hold_n = t->hold_head = 0;
  if (t->rk.rank != 0) return;
  eddy_replay_stats_t bs = eddy_replay_stats(t->buffer);
  uint64_t from = t->cursor > TRAINER_HOLDOUT_SCAN ? t->cursor - TRAINER_HOLDOUT_SCAN : 0;
  if (from < bs.first_seq) from = bs.first_seq;
  if (from < t->hold_from) from = t->hold_from;
  size_t cap = t->cfg.batch_size;
  while (from < t->cursor) {
    size_t got = 0;
    if (eddy_replay_read(t->buffer, from, cap, t->rd, t->rd_seqs, &got) != EDDY_OK || got == 0) break;
    for (size_t i = 0; i < got && t->rd_seqs[i] < t->cursor; i++)
      if (trainer_is_holdout(t, &t->rd[i], t->rd_seqs[i])) trainer_holdout_add(t, &t->rd[i], t->rd_seqs[i]);
    from = t->rd_seqs[got - 1] + 1;
  }
}

void trainer_holdout_rebase(eddy_trainer_t *t, uint64_t seq) {
  t->hold_from = seq;
  while (t->hold_n && t->hold_seq[t->hold_head] < seq) drop_oldest(t);
  if (eddy_replay_meta_put(t->buffer, TRAINER_META_HOLD_FROM, seq) != EDDY_OK)
    EDDY_WARN(LOG_MOD, "holdout re-based at seq %" PRIu64 " but not recorded in the buffer's meta: a restart "
                       "rebuilds the holdout from older events", seq);
}

size_t trainer_holdout_usable(const eddy_trainer_t *t) {
  size_t n = 0;
  for (size_t i = 0; i < t->hold_n; i++) n += !too_old(t, &t->hold[slot(t, i)]);
  return n;
}

void trainer_holdout_set_free(trainer_holdout_set_t *set) {
  if (!set) return;
  if (set->ev)
    for (size_t i = 0; i < set->n; i++) eddy_event_free(&set->ev[i]);
  free(set->ev);
  free(set->seq);
  memset(set, 0, sizeof *set);
}

bool trainer_holdout_freeze(const eddy_trainer_t *t, trainer_holdout_set_t *set) {
  memset(set, 0, sizeof *set);
  size_t n = trainer_holdout_usable(t);
  if (!n) return true;
  set->ev = calloc(n, sizeof *set->ev);
  set->seq = calloc(n, sizeof *set->seq);
  if (!set->ev || !set->seq) {
    trainer_holdout_set_free(set);
    return false;
  }
  for (size_t i = 0; i < t->hold_n; i++) {
    const eddy_event_t *ev = &t->hold[slot(t, i)];
    if (too_old(t, ev)) continue;
    eddy_event_init(&set->ev[set->n]);
    set->n++; /* counted before the copy: set_free frees what a failed copy allocated */
    if (!event_copy(&set->ev[set->n - 1], ev)) {
      trainer_holdout_set_free(set);
      return false;
    }
    set->seq[set->n - 1] = t->hold_seq[slot(t, i)];
  }
  return true;
}

eddy_err_t trainer_holdout_score_file(const eddy_model_spec_t *spec, const char *path,
                                      eddy_infer_precision_t precision, const trainer_holdout_set_t *set,
                                      eddy_eval_scores_t *out, eddy_infer_t **model, char *errstr,
                                      size_t errstr_size) {
  char why[512];
  eddy_st_reader_t *r = eddy_st_reader_new(path, 0, why, sizeof why);
  if (!r) return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "%s: %s", path, why);
  eddy_infer_t *m = eddy_infer_new(spec, r, precision, why, sizeof why);
  eddy_st_reader_destroy(r);
  if (!m) return eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "%s: %s", path, why);
  eddy_err_t err = eddy_eval_model(m, set->ev, set->n, out, why, sizeof why);
  if (err) eddy_errf(err, errstr, errstr_size, "%s: %s", path, why);
  if (model && !err) *model = m;
  else eddy_infer_destroy(m);
  return err;
}

eddy_err_t trainer_validation_load(eddy_trainer_t *t, char *errstr, size_t errstr_size) {
  const char *name = t->cfg.gate_validation;
  if (!name[0]) return EDDY_OK;
  eddy_event_schema_t schema = eddy_model_event_schema(&t->cfg.spec);
  schema.max_bytes = t->cfg.max_event_bytes;
  char why[512];
  eddy_dataset_t *ds = eddy_dataset_new(name, &schema, why, sizeof why);
  if (!ds) return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "snapshot.gate.validation = \"%s\": %s", name, why);
  size_t cap = t->cfg.gate_holdout_events;
  t->val = calloc(cap, sizeof *t->val);
  if (!t->val) {
    eddy_dataset_destroy(ds);
    return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "snapshot.gate.validation: out of memory");
  }
  eddy_err_t err = EDDY_OK;
  size_t bad = 0;
  while (t->val_n < cap) {
    eddy_event_init(&t->val[t->val_n]);
    bool eof = false;
    err = eddy_dataset_next(ds, &t->val[t->val_n], &eof, why, sizeof why);
    if (eddy_err_is_bad_event(err)) {
      bad++;
      err = EDDY_OK;
      continue;
    }
    if (err || eof) {
      eddy_event_free(&t->val[t->val_n]);
      break;
    }
    t->val_n++;
  }
  eddy_dataset_destroy(ds);
  if (err) return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "snapshot.gate.validation = \"%s\": %s", name, why);
  if (!t->val_n)
    return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "snapshot.gate.validation = \"%s\": no valid events", name);
  EDDY_INFO(LOG_MOD, "gate: %zu validation events from %s%s", t->val_n, name, bad ? " (bad records skipped)" : "");
  return EDDY_OK;
}
