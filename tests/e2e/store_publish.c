/* Test helper for tests/e2e/snapshot_verify.sh: publishes versions into a snapshot store through
 * eddy_store_publish with a real CPU learner (a few training steps between versions), or writes
 * the weights of a different model spec to a file (to forge a version with wrong shapes).
 *   store_publish ROOT MODEL N [DTYPE]         N versions, each promoted and made CURRENT
 *   store_publish --other-weights FILE VERSION weights of another spec, eddy.version = VERSION */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "snapshot/store.h"

static eddy_model_spec_t spec_with(uint32_t hidden) {
  eddy_model_spec_t s;
  memset(&s, 0, sizeof s);
  s.hash_bits = 6;
  s.embed_dim = 4;
  s.dense_dim = 5;
  s.n_hidden = 1;
  s.hidden[0] = hidden;
  s.head = EDDY_HEAD_SOFTMAX;
  s.classes = 4;
  return s;
}

static eddy_learner_t *learner_for(const eddy_model_spec_t *s) {
  eddy_train_opts_t o = eddy_train_opts_defaults();
  o.optimizer = EDDY_OPT_ADAM;
  o.lr = 0.01f;
  o.seed = 5;
  o.threads = 1;
  char err[256] = "";
  eddy_learner_t *l = eddy_learner_new(s, &o, "cpu", err, sizeof err);
  if (!l) fprintf(stderr, "store_publish: learner: %s\n", err);
  return l;
}

static int train(eddy_learner_t *l, int steps, unsigned *seed) {
  eddy_batch_t *b = eddy_batch_new(5, 16);
  if (!b) return -1;
  for (int k = 0; k < steps; k++) {
    eddy_batch_clear(b);
    for (int i = 0; i < 16; i++) {
      float dense[5];
      for (int j = 0; j < 5; j++) dense[j] = (float)(rand_r(seed) % 1000) / 500.0f - 1.0f;
      uint32_t idx[1] = {(uint32_t)(rand_r(seed) % 64)};
      float val[1] = {1};
      eddy_event_t ev;
      eddy_event_init(&ev);
      ev.dense = dense;
      ev.n_dense = 5;
      ev.sparse_idx = idx;
      ev.sparse_val = val;
      ev.n_sparse = 1;
      ev.label = dense[0] > 0 ? (dense[1] > 0 ? 0 : 1) : (dense[2] > 0 ? 2 : 3);
      ev.weight = 1;
      if (eddy_batch_push(b, &ev) != EDDY_OK) return -1;
    }
    eddy_step_info_t info;
    if (eddy_learner_accumulate(l, b, NULL, NULL) != EDDY_OK || eddy_learner_step(l, &info) != EDDY_OK) {
      eddy_batch_destroy(b);
      return -1;
    }
  }
  eddy_batch_destroy(b);
  return 0;
}

int main(int argc, char **argv) {
  char err[1024] = "";
  if (argc == 4 && !strcmp(argv[1], "--other-weights")) {
    eddy_model_spec_t other = spec_with(9);
    eddy_learner_t *l = learner_for(&other);
    const char *meta[] = {"eddy.model", "demo", "eddy.version", argv[3]};
    if (!l || eddy_learner_save_weights(l, argv[2], "F32", meta, 2, err, sizeof err) != EDDY_OK) {
      fprintf(stderr, "store_publish: %s\n", err);
      return 1;
    }
    eddy_learner_destroy(l);
    return 0;
  }
  if (argc < 4 || argc > 5) {
    fprintf(stderr, "usage: store_publish ROOT MODEL N [DTYPE] | store_publish --other-weights FILE VERSION\n");
    return 2;
  }
  int n = atoi(argv[3]);
  const char *dtype = argc == 5 ? argv[4] : "F32";
  eddy_store_t *s = eddy_store_new(argv[1], argv[2], EDDY_STORE_WRITER, err, sizeof err);
  eddy_model_spec_t spec = spec_with(8);
  eddy_learner_t *l = s ? learner_for(&spec) : NULL;
  if (!s || !l) {
    fprintf(stderr, "store_publish: %s\n", err);
    return 1;
  }
  unsigned seed = 3;
  uint64_t parent = 0;
  eddy_store_latest(s, &parent, err, sizeof err);
  for (int i = 0; i < n; i++) {
    if (train(l, 5, &seed) != 0) {
      fprintf(stderr, "store_publish: training failed: %s\n", eddy_learner_last_error(l));
      return 1;
    }
    eddy_manifest_t m;
    eddy_manifest_init(&m);
    m.parent = parent;
    m.step = eddy_learner_step_count(l);
    m.examples = m.step * 16;
    m.buffer_cursor = m.examples;
    eddy_manifest_add_offset(&m, "events", 0, (int64_t)m.examples);
    m.prequential = (eddy_metric_values_t){.logloss = 1.2 - 0.1 * i, .accuracy = 0.3 + 0.05 * i, .mse = NAN,
                                           .n = m.examples};
    m.holdout = (eddy_metric_values_t){.logloss = 1.1 - 0.1 * i, .accuracy = 0.35 + 0.05 * i, .mse = NAN, .n = 32};
    m.status = EDDY_STATUS_PROMOTED;
    uint64_t v = 0;
    if (eddy_store_publish(s, l, &m, dtype, &v, err, sizeof err) != EDDY_OK ||
        eddy_store_set_current(s, v, NULL, err, sizeof err) != EDDY_OK) {
      fprintf(stderr, "store_publish: %s\n", err);
      return 1;
    }
    eddy_manifest_clear(&m);
    printf("v%06llu\n", (unsigned long long)v);
    parent = v;
  }
  eddy_learner_destroy(l);
  eddy_store_destroy(s);
  return 0;
}
