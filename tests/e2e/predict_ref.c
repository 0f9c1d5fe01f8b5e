/* Test helper for tests/e2e/serve_follow.sh: the trainer's own predictions for a snapshot version.
 * Loads the version's manifest and weights into a CPU learner (the trainer's forward pass) and
 * prints, for each event of a dataset, a line "EVENT_JSON<TAB>p0 p1 ..." (%.9g).
 *   predict_ref VERSION_DIR DATASET [LIMIT] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/dataset.h"
#include "model/learner.h"
#include "snapshot/manifest.h"
#include "format/safetensors.h"

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: predict_ref VERSION_DIR DATASET [LIMIT]\n");
    return 2;
  }
  long limit = argc > 3 ? atol(argv[3]) : -1;
  char path[4096], err[1024] = "";
  eddy_manifest_t m;
  snprintf(path, sizeof path, "%s/manifest.json", argv[1]);
  if (eddy_manifest_load(path, &m, err, sizeof err) != EDDY_OK) {
    fprintf(stderr, "predict_ref: %s\n", err);
    return 1;
  }
  eddy_train_opts_t o = eddy_train_opts_defaults();
  o.threads = 1;
  eddy_learner_t *l = eddy_learner_new(&m.spec, &o, "cpu", err, sizeof err);
  snprintf(path, sizeof path, "%s/weights.safetensors", argv[1]);
  eddy_st_reader_t *r = l ? eddy_st_reader_new(path, 0, err, sizeof err) : NULL;
  if (!r) {
    fprintf(stderr, "predict_ref: %s\n", err);
    return 1;
  }
  const eddy_tensor_info_t *ti;
  size_t nt = eddy_learner_tensors(l, &ti);
  for (size_t k = 0; k < nt; k++) {
    float *buf = malloc(ti[k].numel * sizeof(float));
    const eddy_st_tensor_t *t = eddy_st_find(r, ti[k].name);
    if (!buf || !t || eddy_st_read_f32(t, buf, ti[k].numel) != EDDY_OK ||
        eddy_learner_import(l, ti[k].name, buf, ti[k].numel) != EDDY_OK) {
      fprintf(stderr, "predict_ref: tensor %s cannot be loaded\n", ti[k].name);
      return 1;
    }
    free(buf);
  }
  eddy_st_reader_destroy(r);
  eddy_event_schema_t schema = eddy_model_event_schema(&m.spec);
  eddy_dataset_t *ds = eddy_dataset_new(argv[2], &schema, err, sizeof err);
  if (!ds) {
    fprintf(stderr, "predict_ref: %s\n", err);
    return 1;
  }
  const uint32_t k = eddy_model_outputs(&m.spec);
  eddy_batch_t *b = eddy_batch_new(m.spec.dense_dim, 1);
  eddy_event_t ev;
  eddy_event_init(&ev);
  float *pred = malloc(k * sizeof(float));
  bool eof = false;
  for (long n = 0; limit < 0 || n < limit; n++) {
    if (eddy_dataset_next(ds, &ev, &eof, err, sizeof err) != EDDY_OK || eof) break;
    eddy_batch_clear(b);
    char *json = eddy_event_to_json(&ev);
    if (!json || eddy_batch_push(b, &ev) != EDDY_OK || eddy_learner_predict(l, b, pred) != EDDY_OK) {
      fprintf(stderr, "predict_ref: event %ld cannot be predicted\n", n);
      return 1;
    }
    fputs(json, stdout);
    for (uint32_t j = 0; j < k; j++) printf("%c%.9g", j ? ' ' : '\t', (double)pred[j]);
    putchar('\n');
    free(json);
  }
  free(pred);
  eddy_event_free(&ev);
  eddy_batch_destroy(b);
  eddy_dataset_destroy(ds);
  eddy_learner_destroy(l);
  eddy_manifest_clear(&m);
  return 0;
}
