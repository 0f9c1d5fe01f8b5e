/* The gate's holdout: events chosen by a hash of their id (or seq) never train; the newest
 * TRAINER_HOLDOUT_MAX of them stay in a ring, refilled from the buffer at the start, and the gate
 * scores each candidate on it. The ring belongs to the training thread. */
#include "train/trainer_state.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

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

void trainer_holdout_add(eddy_trainer_t *t, const eddy_event_t *ev) {
  if (!event_copy(&t->hold[t->hold_pos], ev)) return; /* out of memory: one fewer holdout event */
  t->hold_pos = (t->hold_pos + 1) % TRAINER_HOLDOUT_MAX;
  if (t->hold_n < TRAINER_HOLDOUT_MAX) t->hold_n++;
}

void trainer_holdout_refill(eddy_trainer_t *t) {
  eddy_replay_stats_t bs = eddy_replay_stats(t->buffer);
  uint64_t from = t->cursor > TRAINER_HOLDOUT_SCAN ? t->cursor - TRAINER_HOLDOUT_SCAN : 0;
  if (from < bs.first_seq) from = bs.first_seq;
  size_t cap = t->cfg.batch_size;
  while (from < t->cursor) {
    size_t got = 0;
    if (eddy_replay_read(t->buffer, from, cap, t->rd, t->rd_seqs, &got) != EDDY_OK || got == 0) break;
    for (size_t i = 0; i < got && t->rd_seqs[i] < t->cursor; i++)
      if (trainer_is_holdout(t, &t->rd[i], t->rd_seqs[i])) trainer_holdout_add(t, &t->rd[i]);
    from = t->rd_seqs[got - 1] + 1;
  }
}

eddy_err_t trainer_holdout_score(eddy_trainer_t *t, eddy_metric_values_t *out) {
  out->logloss = out->accuracy = out->mse = NAN;
  out->n = 0;
  if (!t->hold_n) return EDDY_OK;
  eddy_prequential_t *m = eddy_prequential_new(t->cfg.spec.head, eddy_model_outputs(&t->cfg.spec), 0);
  if (!m) return EDDY_ERR_NOMEM;
  eddy_batch_t *b = t->fresh;
  eddy_err_t err = EDDY_OK;
  for (size_t i = 0; i < t->hold_n && !err; i += b->cap) {
    eddy_batch_clear(b);
    for (size_t j = i; j < t->hold_n && j < i + b->cap && !err; j++) err = eddy_batch_push(b, &t->hold[j]);
    if (!err) err = eddy_learner_predict(t->learner, b, t->pred);
    if (!err) eddy_prequential_add(m, t->pred, b->label, b->weight, b->n);
  }
  eddy_batch_clear(b);
  if (!err) *out = eddy_prequential_cumulative(m);
  eddy_prequential_destroy(m);
  return err;
}
