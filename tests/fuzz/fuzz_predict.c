/* libFuzzer harness for /v1/predict bodies, along the replica's path: eddy_event_split_request
 * cuts the body (and takes a "precision" out of it), eddy_batch_push_instances decodes every event (label optional, as a replica
 * does) into a batch, and a small softmax model predicts it in fp32 and bf16. Any input must
 * give a count or an error with a message; whatever is predicted must be finite probabilities
 * that sum to 1 (a replica writes them into JSON, where NaN has no spelling). */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/event.h"
#include "format/safetensors.h"
#include "model/batch.h"
#include "model/infer.h"
#include "model/spec.h"

#define MAX_INSTANCES 256

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what) {
  fprintf(stderr, "fuzz_predict: %s\n", what);
  abort();
}

static const eddy_model_spec_t spec = {
    .hash_bits = 6, .embed_dim = 2, .dense_dim = 3, .n_hidden = 1, .hidden = {4}, .head = EDDY_HEAD_SOFTMAX,
    .classes = 3};

/* The model, built once: weights with fixed, varied values, written as a file and read back. */
static eddy_infer_t *model_new(eddy_infer_precision_t precision) {
  eddy_tensor_info_t info[EDDY_MAX_TENSORS];
  size_t n = eddy_model_layout(&spec, info, NULL);
  eddy_st_writer_t *w = eddy_st_writer_new();
  if (!w) fail("writer");
  for (size_t i = 0; i < n; i++) {
    float *v = malloc(info[i].numel * sizeof *v);
    if (!v) fail("out of memory");
    for (size_t j = 0; j < info[i].numel; j++) v[j] = (float)sin((double)(i * 131 + j) * 0.7) * 0.5f;
    if (eddy_st_writer_add_f32(w, info[i].name, EDDY_DT_F32, info[i].shape, info[i].ndim, v) != EDDY_OK)
      fail("writer add");
    free(v);
  }
  char path[] = "/tmp/fuzz_predict-XXXXXX", err[256];
  int fd = mkstemp(path);
  if (fd < 0) fail("mkstemp");
  close(fd);
  if (eddy_st_writer_save(w, path, NULL, err, sizeof err) != EDDY_OK) fail(err);
  eddy_st_writer_destroy(w);
  eddy_st_reader_t *r = eddy_st_reader_new(path, 0, err, sizeof err);
  unlink(path);
  if (!r) fail(err);
  eddy_infer_t *m = eddy_infer_new(&spec, r, precision, err, sizeof err);
  eddy_st_reader_destroy(r);
  if (!m) fail(err);
  return m;
}

static void predict_checked(const eddy_infer_t *m, const eddy_batch_t *b) {
  static float scratch_buf[1 << 16], pred[MAX_INSTANCES * 3];
  if (eddy_infer_scratch_floats(m, b->n) > sizeof scratch_buf / sizeof scratch_buf[0]) fail("scratch too small");
  char err[256];
  if (eddy_infer_predict(m, b, scratch_buf, pred, err, sizeof err) != EDDY_OK) {
    fprintf(stderr, "%s\n", err);
    fail("predict refused a batch of decoded events");
  }
  for (size_t i = 0; i < b->n; i++) {
    double sum = 0;
    for (size_t k = 0; k < 3; k++) {
      float p = pred[i * 3 + k];
      if (!isfinite(p) || p < 0 || p > 1) fail("prediction is not a finite probability");
      sum += p;
    }
    if (fabs(sum - 1) > 1e-3) fail("probabilities do not sum to 1");
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static eddy_infer_t *f32, *bf16;
  static eddy_batch_t *batch;
  static eddy_event_t ev;
  if (!f32) {
    f32 = model_new(EDDY_INFER_F32);
    bf16 = model_new(EDDY_INFER_BF16);
    batch = eddy_batch_new(spec.dense_dim, MAX_INSTANCES);
    if (!batch) fail("batch");
    eddy_event_init(&ev);
  }
  eddy_event_schema_t schema = eddy_model_event_schema(&spec);
  schema.label_optional = true;
  const char *spans[2 * MAX_INSTANCES];
  bool wrapped = false;
  char why[640], precision[48];
  why[0] = '\0';
  long n = eddy_event_split_request((const char *)data, size, spans, MAX_INSTANCES, &wrapped, precision,
                                    sizeof precision, why, sizeof why);
  if (n < 0) {
    if (!why[0] || !memchr(why, 0, sizeof why)) fail("split failed without a message");
    return 0;
  }
  if (n == 0 || n > MAX_INSTANCES) fail("split count out of range");
  if (!memchr(precision, 0, sizeof precision)) fail("precision not terminated");
  why[0] = '\0';
  if (eddy_batch_push_instances(batch, spans, (size_t)n, !wrapped, &schema, &ev, why, sizeof why) != EDDY_OK) {
    if (!why[0] || !memchr(why, 0, sizeof why)) fail("decode failed without a message");
    if (wrapped && strncmp(why, "instances[", 10) != 0) fail("a wrapped body's error does not name the instance");
    return 0;
  }
  if (batch->n != (size_t)n) fail("batch holds another count than the body");
  predict_checked(f32, batch);
  predict_checked(bf16, batch);
  return 0;
}
