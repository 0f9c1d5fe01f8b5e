/* The training thread: one optimizer step per loop over accum_steps micro-batches of fresh events
 * from the buffer cursor, each scored before it is trained on (prequential metrics, drift detector)
 * and followed by replay draws in the configured ratio. Held-out events (by a hash of the id) never
 * train: they fill the gate's holdout window. Between steps it publishes when due, parks for pause
 * and rollback, and waits on a condition variable (never spins) when there is nothing to train. */
#include "train/trainer_state.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <time.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/rng.h"

#define LOG_MOD "train"

static bool in_skip(const eddy_trainer_t *t, uint64_t seq) {
  return t->skip_to >= t->skip_from && seq >= t->skip_from && seq <= t->skip_to;
}

/* A balanced-reservoir draw the trainer may replay: trained already (seq before the cursor), not
 * held out, not in the skip range. */
static bool replayable(void *ctx, uint64_t seq, const eddy_event_t *ev) {
  const eddy_trainer_t *t = ctx;
  return seq < t->cursor && !in_skip(t, seq) && !trainer_is_holdout(t, ev, seq) && !trainer_ranks_foreign(t, ev, seq);
}

/* Up to n replay draws into t->replay: events already trained on (seq < cursor), never held out
 * and never in the skip range; a refused draw is redrawn. uniform / recent draw seqs over
 * [first_seq, cursor) themselves (recent: density growing linearly towards the cursor); balanced
 * draws from the buffer's class-balanced reservoir through the same filter. */
static eddy_err_t draw_replay(eddy_trainer_t *t, size_t n) {
  eddy_batch_clear(t->replay);
  if (n > t->replay->cap) n = t->replay->cap;
  if (!n) return EDDY_OK;
  if (t->cfg.replay_strategy == EDDY_REPLAY_BALANCED) {
    size_t got = 0;
    eddy_err_t err = eddy_replay_sample_where(t->buffer, EDDY_SAMPLE_BALANCED, &t->rng, n, t->samples, NULL,
                                              replayable, t, &got);
    if (err) return err;
    for (size_t i = 0; i < got; i++) eddy_batch_push(t->replay, &t->samples[i]);
    return EDDY_OK;
  }
  eddy_replay_stats_t bs = eddy_replay_stats(t->buffer);
  uint64_t lo = bs.first_seq, hi = t->cursor < bs.next_seq ? t->cursor : bs.next_seq;
  if (hi <= lo) return EDDY_OK;
  uint64_t span = hi - lo;
  bool recent = t->cfg.replay_strategy == EDDY_REPLAY_RECENT;
  for (size_t i = 0; i < n; i++) {
    for (int tries = 0; tries < TRAINER_SAMPLE_TRIES; tries++) {
      double u = eddy_rng_unit(&t->rng);
      uint64_t off = (uint64_t)((double)span * (recent ? sqrt(u) : u));
      if (off >= span) off = span - 1;
      uint64_t seq = 0;
      size_t got = 0;
      eddy_err_t err = eddy_replay_read(t->buffer, lo + off, 1, &t->sample, &seq, &got);
      if (err) return err;
      if (!got || seq >= hi || in_skip(t, seq) || trainer_is_holdout(t, &t->sample, seq) ||
          trainer_ranks_foreign(t, &t->sample, seq))
        continue;
      if (eddy_batch_push(t->replay, &t->sample) == EDDY_OK) break;
    }
  }
  return EDDY_OK;
}

void trainer_on_drift(eddy_trainer_t *t, uint64_t change_seq) {
  int64_t now = eddy_clock_wall_ms();
  size_t before = t->hold_n;
  trainer_holdout_rebase(t, change_seq);
  eddy_metric_values_t w = eddy_prequential_window(t->preq);
  pthread_mutex_lock(&t->mu);
  t->n_drift++;
  t->last_drift_seq = change_seq;
  t->last_drift_ms = now;
  pthread_mutex_unlock(&t->mu);
  eddy_series_add(t->mx.drift, 1);
  char text[EDDY_MARKER_TEXT_MAX];
  snprintf(text, sizeof text, "prequential loss rose from seq %" PRIu64 "; holdout re-based (%zu of %zu events kept)",
           change_seq, t->hold_n, before);
  eddy_timeseries_mark(t->series, now, "drift", 0, text);
  EDDY_WARN(LOG_MOD, "drift: the prequential %s rose from buffer seq %" PRIu64 " (window %s %.4f, accuracy %.4f); "
                     "the gate's holdout window restarts there (%zu of %zu events kept)",
            t->cfg.spec.head == EDDY_HEAD_SQUARED ? "squared error" : "log loss", change_seq,
            t->cfg.spec.head == EDDY_HEAD_SQUARED ? "mse" : "logloss",
            t->cfg.spec.head == EDDY_HEAD_SQUARED ? w.mse : w.logloss, w.accuracy, t->hold_n, before);
}

/* Feeds the per-event prequential losses of t->fresh (predictions in t->pred) to the detector.
 * With ranks only rank 0 watches (its events): its alarm re-bases the holdout window it gates on. */
static void watch_drift(eddy_trainer_t *t) {
  if (t->rk.rank != 0) return;
  uint32_t outputs = eddy_model_outputs(&t->cfg.spec);
  for (size_t i = 0; i < t->fresh->n; i++) {
    double l = eddy_prequential_loss(t->cfg.spec.head, outputs, t->pred + i * outputs, t->fresh->label[i], NULL,
                                     NULL);
    uint64_t change = 0;
    if (eddy_drift_add(&t->drift, l, t->fresh_seqs[i], &change)) trainer_on_drift(t, change);
  }
}

static int fail_learner(eddy_trainer_t *t, const char *what, eddy_err_t err) {
  trainer_set_fatal(t, err, "training stopped: %s failed: %s: %s", what, eddy_err_str(err),
                    eddy_learner_last_error(t->learner));
  return -1;
}

/* Accumulates t->replay (no predictions: replay does not count in the prequential metrics). */
static int train_replay(eddy_trainer_t *t, size_t *replay_n, double *loss) {
  if (!t->replay->n) return 0;
  double l = 0;
  eddy_err_t err = eddy_learner_accumulate(t->learner, t->replay, NULL, &l);
  if (err) return fail_learner(t, "accumulate (replay)", err);
  *loss += l;
  *replay_n += t->replay->n;
  return 0;
}

int trainer_accumulate(eddy_trainer_t *t, trainer_acc_t *acc) {
  const eddy_config_t *c = &t->cfg;
  uint64_t missed = 0, skipped_events = 0;
  eddy_err_t err;
  *acc = (trainer_acc_t){0};
  for (uint32_t k = 0; k < c->accum_steps; k++) {
    size_t got = 0;
    if ((err = eddy_replay_read(t->buffer, t->cursor, c->batch_size, t->rd, t->rd_seqs, &got))) {
      trainer_set_fatal(t, err, "training stopped: reading the replay buffer at seq %" PRIu64 ": %s",
                        t->cursor, eddy_err_str(err));
      return -1;
    }
    if (!got) break;
    acc->read_any = true;
    if (t->rd_seqs[0] > t->cursor) missed += t->rd_seqs[0] - t->cursor;
    eddy_batch_clear(t->fresh);
    for (size_t i = 0; i < got; i++) {
      uint64_t seq = t->rd_seqs[i];
      if (i && seq > t->rd_seqs[i - 1] + 1) missed += seq - t->rd_seqs[i - 1] - 1;
      if (!trainer_ranks_take(t, &t->rd[i], seq)) continue; /* another rank's partition */
      if (in_skip(t, seq)) {
        skipped_events++;
      } else if (trainer_is_holdout(t, &t->rd[i], seq)) {
        trainer_holdout_add(t, &t->rd[i], seq);
      } else if ((err = eddy_batch_push(t->fresh, &t->rd[i])) != EDDY_OK) {
        EDDY_WARN(LOG_MOD, "buffer seq %" PRIu64 " does not fit the model (%s): not trained", seq,
                  eddy_err_str(err));
      } else {
        t->fresh_seqs[t->fresh->n - 1] = seq;
        if (t->rd[i].has_ts && t->rd[i].ts > t->newest_event_ms) t->newest_event_ms = t->rd[i].ts;
      }
    }
    t->cursor = t->rd_seqs[got - 1] + 1;
    if (t->fresh->n) {
      double l = 0;
      if ((err = eddy_learner_accumulate(t->learner, t->fresh, t->pred, &l)))
        return fail_learner(t, "accumulate", err);
      eddy_prequential_add(t->preq, t->pred, t->fresh->label, t->fresh->weight, t->fresh->n);
      watch_drift(t);
      acc->loss += l;
      acc->fresh_n += t->fresh->n;
      double ratio = c->replay_ratio;
      size_t want = ratio > 0 ? (size_t)lround(ratio / (1.0 - ratio) * (double)t->fresh->n) : 0;
      if ((err = draw_replay(t, want))) {
        trainer_set_fatal(t, err, "training stopped: replay draw: %s", eddy_err_str(err));
        return -1;
      }
      if (train_replay(t, &acc->replay_n, &acc->loss)) return -1;
    }
    if (got < c->batch_size) break; /* caught up: step now rather than wait */
  }
  if (missed) eddy_series_add(t->mx.missed, (double)missed);
  if (skipped_events) eddy_series_add(t->mx.skip_range, (double)skipped_events);
  if (!acc->read_any) {
    if (!c->replay_idle_steps || t->idle_done >= c->replay_idle_steps) return 0;
    for (uint32_t k = 0; k < c->accum_steps; k++) {
      if ((err = draw_replay(t, c->batch_size))) {
        trainer_set_fatal(t, err, "training stopped: replay draw: %s", eddy_err_str(err));
        return -1;
      }
      if (train_replay(t, &acc->replay_n, &acc->loss)) return -1;
    }
    if (!acc->replay_n) return 0;
    t->idle_done++;
  } else {
    t->idle_done = 0;
  }
  return 1;
}

int trainer_apply(eddy_trainer_t *t, uint64_t fresh_n, uint64_t replay_n, double loss) {
  const eddy_config_t *c = &t->cfg;
  if (fresh_n + replay_n > 0) {
    eddy_step_info_t info;
    eddy_err_t err;
    if ((err = eddy_learner_step(t->learner, &info))) return fail_learner(t, "optimizer step", err);
    if (info.applied) {
      t->skipped_run = 0;
      t->examples += fresh_n;
      t->replay_examples += replay_n;
      if (!isfinite(loss))
        trainer_degrade(t, "non-finite training loss (%g) at step %" PRIu64, loss, info.step);
    } else if (++t->skipped_run > c->max_skipped_steps) {
      trainer_degrade(t, "%u optimizer steps in a row skipped for Inf/NaN gradients "
                         "(train.max_skipped_steps = %u; loss scale %g)",
                      t->skipped_run, c->max_skipped_steps, info.loss_scale);
    }
  }
  trainer_publish_status(t);
  eddy_replay_stats_t bs = eddy_replay_stats(t->buffer);
  eddy_series_set(t->mx.lag, (double)(bs.next_seq > t->cursor ? bs.next_seq - t->cursor : 0));
  return 1;
}

/* One optimizer step. 1: trained or consumed events; 0: nothing to do (idle); -1: fatal. */
static int train_step(eddy_trainer_t *t) {
  trainer_acc_t acc;
  int r = trainer_accumulate(t, &acc);
  if (r <= 0) return r;
  return trainer_apply(t, acc.fresh_n, acc.replay_n, acc.loss);
}

void trainer_wait_ms(eddy_trainer_t *t, int ms) {
  struct timespec ts = eddy_clock_deadline(CLOCK_MONOTONIC, ms);
  pthread_mutex_lock(&t->mu);
  if (!t->stop && !t->hold_count && t->snap_requested <= t->snap_taken)
    pthread_cond_timedwait(&t->cv, &t->mu, &ts);
  pthread_mutex_unlock(&t->mu);
}

void *trainer_train_main(void *arg) {
  eddy_trainer_t *t = arg;
  const eddy_config_t *c = &t->cfg;
  for (;;) {
    pthread_mutex_lock(&t->mu);
    for (;;) {
      bool snap = t->snap_requested > t->snap_taken;
      if (t->stop) break;
      if (t->hold_count > 0 || (t->paused && !(snap && !t->pub_busy))) {
        if (!t->parked) {
          t->parked = true;
          pthread_cond_broadcast(&t->parked_cv);
        }
        pthread_cond_wait(&t->cv, &t->mu);
        continue;
      }
      break;
    }
    t->parked = false;
    if (t->stop) {
      pthread_mutex_unlock(&t->mu);
      break;
    }
    uint64_t ticket = t->snap_requested > t->snap_taken ? t->snap_requested : 0;
    bool paused = t->paused, degraded = t->degraded, busy = t->pub_busy;
    if (ticket && degraded) {
      t->snap_taken = t->snap_done = ticket;
      t->snap_err = EDDY_ERR_STATE;
      snprintf(t->snap_msg, sizeof t->snap_msg, "trainer degraded (%s): publishing stopped", t->degraded_why);
      pthread_cond_broadcast(&t->done_cv);
      ticket = 0;
    }
    pthread_mutex_unlock(&t->mu);

    if (!busy && !degraded) {
      uint64_t step = eddy_learner_step_count(t->learner);
      double now = eddy_clock_mono_s();
      bool due = ticket ||
                 (c->snapshot_every_steps && step - t->last_pub_step >= c->snapshot_every_steps) ||
                 (c->snapshot_every_seconds && step > t->last_pub_step &&
                  now - t->last_pub_time >= c->snapshot_every_seconds);
      if (due) trainer_write_candidate(t, ticket);
    }
    if (paused) {
      if (ticket && busy) trainer_wait_ms(t, TRAINER_IDLE_WAIT_MS);
      continue;
    }
    int r = train_step(t);
    if (r < 0) break;
    if (r == 0) trainer_wait_ms(t, TRAINER_IDLE_WAIT_MS);
  }
  pthread_mutex_lock(&t->mu);
  t->train_running = false;
  t->parked = false;
  pthread_cond_broadcast(&t->parked_cv);
  pthread_cond_broadcast(&t->done_cv);
  pthread_mutex_unlock(&t->mu);
  return NULL;
}
