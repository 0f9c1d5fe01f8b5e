/* Test helper for tests/e2e/snapshot_verify.sh and the replica tests: publishes versions into a
 * snapshot store through eddy_store_publish with a real CPU learner (a few training steps between
 * versions), or writes the weights of a different model spec to a file (to forge a version with
 * wrong shapes), or publishes one Fashion-MNIST model (784 pixels, by default a small embedding of
 * sparse features and 64 hidden units, 10 classes) trained on the first N training images.
 *   store_publish ROOT MODEL N [DTYPE]            N versions, each promoted and made CURRENT
 *   store_publish --other-weights FILE VERSION    weights of another spec, eddy.version = VERSION
 *   store_publish --fashion-mnist ROOT MODEL N [HIDDEN [EMBED_DIM]]
 *                                                 one Fashion-MNIST version, made CURRENT; HIDDEN
 *                                                 "256,128" (default 64), EMBED_DIM (default 4) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/dataset.h"
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

/* Publishes m (promoted) with l's weights and makes it CURRENT; prints the version. */
static int publish(eddy_store_t *s, eddy_learner_t *l, eddy_manifest_t *m, const char *dtype, uint64_t *v) {
  char err[1024] = "";
  m->status = EDDY_STATUS_PROMOTED;
  if (eddy_store_publish(s, l, m, dtype, v, err, sizeof err) != EDDY_OK ||
      eddy_store_set_current(s, *v, NULL, err, sizeof err) != EDDY_OK) {
    fprintf(stderr, "store_publish: %s\n", err);
    return 1;
  }
  printf("v%06llu\n", (unsigned long long)*v);
  return 0;
}

static int fashion_mnist(const char *root, const char *model, long n, const char *hidden, int embed_dim) {
  char err[1024] = "";
  eddy_model_spec_t spec;
  memset(&spec, 0, sizeof spec);
  spec.hash_bits = embed_dim ? 10 : 0;
  spec.embed_dim = (uint32_t)embed_dim;
  spec.dense_dim = 784;
  for (const char *p = hidden; *p && spec.n_hidden < EDDY_MAX_HIDDEN; p += strcspn(p, ","), p += *p == ',')
    spec.hidden[spec.n_hidden++] = (uint32_t)atoi(p);
  spec.head = EDDY_HEAD_SOFTMAX;
  spec.classes = 10;
  eddy_train_opts_t o = eddy_train_opts_defaults();
  o.optimizer = EDDY_OPT_ADAGRAD;
  o.lr = 0.02f;
  o.threads = 1;
  eddy_event_schema_t schema = eddy_model_event_schema(&spec);
  eddy_store_t *s = eddy_store_new(root, model, EDDY_STORE_WRITER, err, sizeof err);
  eddy_learner_t *l = s ? eddy_learner_new(&spec, &o, "cpu", err, sizeof err) : NULL;
  eddy_dataset_t *ds = l ? eddy_dataset_new("fashion-mnist:train", &schema, err, sizeof err) : NULL;
  eddy_batch_t *b = eddy_batch_new(spec.dense_dim, 32);
  if (!ds || !b) {
    fprintf(stderr, "store_publish: %s\n", err[0] ? err : "out of memory");
    return 1;
  }
  eddy_event_t ev;
  eddy_event_init(&ev);
  bool eof = false;
  long seen = 0;
  while (seen < n && !eof) {
    eddy_batch_clear(b);
    while (b->n < 32 && seen < n && eddy_dataset_next(ds, &ev, &eof, err, sizeof err) == EDDY_OK && !eof) {
      eddy_batch_push(b, &ev);
      seen++;
    }
    eddy_step_info_t info;
    if (b->n && (eddy_learner_accumulate(l, b, NULL, NULL) != EDDY_OK || eddy_learner_step(l, &info) != EDDY_OK)) {
      fprintf(stderr, "store_publish: training failed: %s\n", eddy_learner_last_error(l));
      return 1;
    }
  }
  eddy_manifest_t m;
  eddy_manifest_init(&m);
  m.step = eddy_learner_step_count(l);
  m.examples = m.buffer_cursor = (uint64_t)seen;
  eddy_manifest_add_offset(&m, "events", 0, seen);
  m.prequential = (eddy_metric_values_t){.logloss = NAN, .accuracy = NAN, .mse = NAN, .n = 0};
  m.holdout = m.prequential;
  uint64_t v = 0;
  int rc = publish(s, l, &m, "F32", &v);
  eddy_manifest_clear(&m);
  eddy_event_free(&ev);
  eddy_batch_destroy(b);
  eddy_dataset_destroy(ds);
  eddy_learner_destroy(l);
  eddy_store_destroy(s);
  return rc;
}

int main(int argc, char **argv) {
  char err[1024] = "";
  if (argc >= 5 && argc <= 7 && !strcmp(argv[1], "--fashion-mnist"))
    return fashion_mnist(argv[2], argv[3], atol(argv[4]), argc > 5 ? argv[5] : "64", argc > 6 ? atoi(argv[6]) : 4);
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
    fprintf(stderr, "usage: store_publish ROOT MODEL N [DTYPE] | store_publish --other-weights FILE VERSION | "
                    "store_publish --fashion-mnist ROOT MODEL N [HIDDEN [EMBED_DIM]]\n");
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
    uint64_t v = 0;
    if (publish(s, l, &m, dtype, &v) != 0) return 1;
    eddy_manifest_clear(&m);
    parent = v;
  }
  eddy_learner_destroy(l);
  eddy_store_destroy(s);
  return 0;
}
