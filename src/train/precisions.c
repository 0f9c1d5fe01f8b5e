/* Serving precisions of a candidate (DESIGN "Serving precision and protocols"): on the training
 * thread, after the candidate's weights are written, the files of the other precisions of
 * snapshot.precisions go into the same transaction (bf16 and fp16 converted, int8 quantized with
 * activation ranges calibrated on the most recent trained events), and every precision, fp32
 * included, is scored on the gate's holdout events through the replicas' own forward pass
 * (eddy_infer), so the manifest says what each precision costs in accuracy. */
#include "train/trainer_state.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "model/evaluate.h"
#include "model/infer.h"

#define LOG_MOD "publish"
#define CALIB_EVENTS 1000 /* trained events before the cursor that calibrate int8 */
#define SCORE_BATCH 256 /* events per forward pass, at least */

/* Widens calib by the non-holdout events of the CALIB_EVENTS before the cursor; false when the
 * buffer gave none (evicted, or nothing trained yet). */
static bool calibrate_recent(eddy_trainer_t *t, const eddy_infer_t *fp, eddy_batch_t *b, float *scratch,
                             eddy_quant_calib_t *calib) {
  eddy_replay_stats_t bs = eddy_replay_stats(t->buffer);
  uint64_t from = t->cursor > CALIB_EVENTS ? t->cursor - CALIB_EVENTS : 0;
  if (from < bs.first_seq) from = bs.first_seq;
  char err[256];
  while (from < t->cursor) {
    size_t got = 0;
    if (eddy_replay_read(t->buffer, from, t->cfg.batch_size, t->rd, t->rd_seqs, &got) != EDDY_OK || !got) break;
    eddy_batch_clear(b);
    for (size_t i = 0; i < got && t->rd_seqs[i] < t->cursor; i++)
      if (!trainer_is_holdout(t, &t->rd[i], t->rd_seqs[i])) eddy_batch_push(b, &t->rd[i]);
    if (b->n) eddy_infer_calibrate(fp, b, scratch, calib, err, sizeof err);
    from = t->rd_seqs[got - 1] + 1;
  }
  eddy_batch_clear(b);
  return calib->events > 0;
}

/* hold through model m, with the gate's evaluation (eddy_eval_model): NaN with n = 0 when empty. */
static eddy_err_t score(const eddy_infer_t *m, const trainer_holdout_set_t *hold, eddy_metric_values_t *out,
                        char *errstr, size_t errstr_size) {
  out->logloss = out->accuracy = out->mse = NAN;
  out->n = 0;
  if (!hold->n) return EDDY_OK;
  eddy_eval_scores_t scores;
  eddy_err_t err = eddy_eval_model(m, hold->ev, hold->n, &scores, errstr, errstr_size);
  if (!err) *out = scores.metrics;
  eddy_eval_scores_free(&scores);
  return err;
}

/* Loads precision p's file from the transaction folder and scores it into m. */
static eddy_err_t measure(eddy_trainer_t *t, eddy_store_txn_t *txn, eddy_infer_precision_t p,
                          const trainer_holdout_set_t *hold, eddy_manifest_t *m, char *errstr, size_t errstr_size) {
  const char *file = eddy_store_precision_file(p);
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", eddy_store_txn_dir(txn), file);
  eddy_st_reader_t *r = eddy_st_reader_new(path, 0, errstr, errstr_size);
  if (!r) return EDDY_ERR_FORMAT;
  eddy_infer_t *model = eddy_infer_new(&t->cfg.spec, r, p, errstr, errstr_size);
  eddy_st_reader_destroy(r);
  if (!model) return EDDY_ERR_FORMAT;
  eddy_manifest_precision_t *pr = &m->precisions[p];
  eddy_err_t err = score(model, hold, &pr->holdout, errstr, errstr_size);
  eddy_infer_destroy(model);
  if (err) return err;
  pr->present = true;
  snprintf(pr->file, sizeof pr->file, "%s", file);
  return EDDY_OK;
}

/* Writes and measures every precision; on error the caller removes what was written. */
static eddy_err_t produce(eddy_trainer_t *t, eddy_store_txn_t *txn, const trainer_holdout_set_t *hold,
                          eddy_manifest_t *m, char *errstr, size_t errstr_size) {
  const eddy_model_spec_t *spec = &t->cfg.spec;
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", eddy_store_txn_dir(txn), EDDY_STORE_WEIGHTS);
  eddy_st_reader_t *w = eddy_st_reader_new(path, 0, errstr, errstr_size);
  if (!w) return EDDY_ERR_FORMAT;
  eddy_infer_t *fp = eddy_infer_new(spec, w, EDDY_INFER_F32, errstr, errstr_size);
  const size_t cap = t->cfg.batch_size > SCORE_BATCH ? t->cfg.batch_size : SCORE_BATCH; /* a buffer read fits */
  eddy_batch_t *b = eddy_batch_new(spec->dense_dim, cap);
  size_t scratch_n = fp ? eddy_infer_scratch_floats(fp, cap) : 0;
  float *scratch = malloc((scratch_n ? scratch_n : 1) * sizeof(float));
  float *pred = malloc(cap * eddy_model_outputs(spec) * sizeof(float));
  eddy_err_t err = fp ? EDDY_OK : EDDY_ERR_FORMAT;
  if (!err && (!b || !scratch || !pred)) err = eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
  unsigned want = t->cfg.snapshot_precisions;
  eddy_quant_calib_t calib;
  eddy_quant_calib_init(&calib);
  if (!err && (want & (1u << EDDY_INFER_INT8)) && !calibrate_recent(t, fp, b, scratch, &calib)) {
    /* Nothing trained left in the buffer: the holdout events are the recent window there is. */
    for (size_t i = 0; i < hold->n && !err; i += b->cap) {
      eddy_batch_clear(b);
      for (size_t j = i; j < hold->n && j < i + b->cap; j++) eddy_batch_push(b, &hold->ev[j]);
      err = eddy_infer_calibrate(fp, b, scratch, &calib, errstr, errstr_size);
    }
    if (!err && !calib.events) {
      want &= ~(1u << EDDY_INFER_INT8);
      EDDY_WARN(LOG_MOD, "v%06" PRIu64 ": no events to calibrate int8 on yet: no int8 in this version",
                eddy_store_txn_version(txn));
    }
  }
  for (int p = EDDY_INFER_BF16; !err && p < EDDY_INFER_PRECISIONS; p++)
    if (want & (1u << p))
      err = eddy_store_txn_write_precision(txn, w, spec, (eddy_infer_precision_t)p, &calib, errstr, errstr_size);
  want |= 1u << EDDY_INFER_F32;
  for (int p = 0; !err && p < EDDY_INFER_PRECISIONS; p++)
    if (want & (1u << p))
      err = measure(t, txn, (eddy_infer_precision_t)p, hold, m, errstr, errstr_size);
  m->precisions[EDDY_INFER_INT8].calibration_events = calib.events;
  free(pred);
  free(scratch);
  eddy_batch_destroy(b);
  eddy_infer_destroy(fp);
  eddy_st_reader_destroy(w);
  return err;
}

void trainer_precisions_write(eddy_trainer_t *t, eddy_store_txn_t *txn, eddy_manifest_t *m,
                              const trainer_holdout_set_t *hold, uint64_t nonfinite) {
  const uint64_t v = eddy_store_txn_version(txn);
  if (nonfinite) return; /* rejected by the gate: nothing to serve in any precision */
  double t0 = eddy_clock_mono_s();
  char why[1024] = "";
  eddy_err_t err = produce(t, txn, hold, m, why, sizeof why);
  if (err) {
    for (int p = EDDY_INFER_BF16; p < EDDY_INFER_PRECISIONS; p++) {
      char path[4096];
      snprintf(path, sizeof path, "%s/%s", eddy_store_txn_dir(txn), eddy_store_precision_file((eddy_infer_precision_t)p));
      unlink(path);
    }
    for (int p = 0; p < EDDY_INFER_PRECISIONS; p++) {
      memset(&m->precisions[p], 0, sizeof m->precisions[p]);
      m->precisions[p].holdout.logloss = m->precisions[p].holdout.accuracy = m->precisions[p].holdout.mse = NAN;
    }
    EDDY_WARN(LOG_MOD, "v%06" PRIu64 ": serving precisions not written (%s): fp32 only", v, why);
    return;
  }
  char line[512];
  size_t at = 0;
  const double base = m->precisions[EDDY_INFER_F32].holdout.accuracy;
  for (int p = 0; p < EDDY_INFER_PRECISIONS && at < sizeof line; p++) {
    const eddy_manifest_precision_t *pr = &m->precisions[p];
    if (!pr->present) continue;
    at += (size_t)snprintf(line + at, sizeof line - at, "%s%s accuracy %.4f", at ? ", " : "",
                           eddy_infer_precision_name((eddy_infer_precision_t)p), pr->holdout.accuracy);
    if (p && at < sizeof line && isfinite(base))
      at += (size_t)snprintf(line + at, sizeof line - at, " (%+.2f points)", (pr->holdout.accuracy - base) * 100);
  }
  char calib[64] = "";
  if (m->precisions[EDDY_INFER_INT8].present)
    snprintf(calib, sizeof calib, "; int8 calibrated on %" PRIu64 " events",
             m->precisions[EDDY_INFER_INT8].calibration_events);
  EDDY_INFO(LOG_MOD, "v%06" PRIu64 " precisions on %zu holdout events: %s%s; %.0f ms", v, hold->n, line, calib,
            (eddy_clock_mono_s() - t0) * 1e3);
}
