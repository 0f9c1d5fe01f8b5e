/* The Open Inference Protocol (KServe v2, as Triton speaks it) on a replica: what the REST routes
 * (oip_http.c) and the gRPC service (oip_grpc.c) share. The model's tensors are input dense
 * FP32 [-1, dense_dim], input sparse BYTES [-1] (one JSON object per row, as an event's "sparse"),
 * output scores FP32 [-1, K] (the /v1/predict values) and, for classifiers, output label INT64
 * [-1]. A request's tensors are checked here, with the same messages on both protocols, and
 * decoded into the replica's batch for its one forward pass. A request may name its serving
 * precision in its parameter "precision"; the answer names the one that ran in the same parameter.
 * Private to src/serve. */
#ifndef EDDY_OIP_H
#define EDDY_OIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"
#include "http/server.h"
#include "serve/replica_internal.h"

#define EDDY_OIP_MAX_INPUTS 16 /* input tensors in one request (the model takes at most 2) */
#define EDDY_OIP_MAX_DIMS 8
#define EDDY_OIP_SERVER_NAME "eddy"
#define EDDY_OIP_PLATFORM "eddy_safetensors"
#define EDDY_OIP_EXTENSIONS "binary_tensor_data"
/* The request and response parameter that names a serving precision (fp32, bf16, fp16, int8). */
#define EDDY_OIP_PRECISION_PARAM "precision"

/* Where an input's elements are. */
typedef enum {
  EDDY_OIP_DATA_NONE = 0, /* none given */
  EDDY_OIP_DATA_RAW,      /* little-endian bytes (BYTES: each a 4-byte length, then its bytes) */
  EDDY_OIP_DATA_F32,      /* typed floats (JSON numbers, gRPC fp32_contents) */
  EDDY_OIP_DATA_ITEMS,    /* typed BYTES elements (JSON strings, gRPC bytes_contents) */
  EDDY_OIP_DATA_OTHER     /* elements of another type; other names the field */
} eddy_oip_data_t;

typedef struct {
  const uint8_t *data;
  size_t len;
} eddy_oip_bytes_t;

/* One input tensor of a request, as a view into the request (nothing is owned). */
typedef struct {
  const char *name, *datatype;
  const int64_t *shape;
  size_t ndim;
  eddy_oip_data_t kind;
  const void *raw; /* RAW */
  size_t raw_len;
  const float *f32; /* F32 */
  size_t n_f32;
  const eddy_oip_bytes_t *items; /* ITEMS */
  size_t n_items;
  const char *other; /* OTHER */
} eddy_oip_input_t;

/* What eddy_oip_check_inputs found: the batch size and which input is which (-1: absent). */
typedef struct {
  size_t n;
  int dense, sparse;
} eddy_oip_plan_t;

/* The model's outputs. */
typedef enum { EDDY_OIP_SCORES = 0, EDDY_OIP_LABEL, EDDY_OIP__OUTPUTS } eddy_oip_output_t;

/* A tensor's metadata (ModelMetadata); shape -1 = any size. */
typedef struct {
  const char *name, *datatype;
  int64_t shape[2];
  size_t ndim;
} eddy_oip_meta_t;

/* The model's inputs and outputs for spec, into in[2] and out[2]; their counts. */
size_t eddy_oip_inputs(const eddy_model_spec_t *spec, eddy_oip_meta_t in[2]);
size_t eddy_oip_outputs(const eddy_model_spec_t *spec, eddy_oip_meta_t out[2]);

/* Whether name (and version, "" or NULL = any) is what the replica serves as s (NULL before the
 * first version: the name alone is checked): 0, or 404 with a message that says what it serves. */
int eddy_oip_check_model(eddy_replica_t *r, const eddy_served_t *s, const char *name, const char *version,
                         char *errstr, size_t errstr_size);

/* Checks the inputs' names, datatypes and shapes against s's model (not their data): every input
 * is the model's, none twice, dense present when the model has dense features, one batch size
 * from 1 to EDDY_REPLICA_MAX_INSTANCES. EDDY_ERR_INVALID_ARG with errstr naming the input. */
eddy_err_t eddy_oip_check_inputs(const eddy_served_t *s, const eddy_oip_input_t *in, size_t n_in,
                                 eddy_oip_plan_t *plan, char *errstr, size_t errstr_size);

/* Decodes the checked inputs into the calling thread's batch (eddy_replica_batch): the element
 * counts or byte sizes must match the shapes, dense values be finite, each sparse row a JSON object
 * of features as an event's "sparse". *batch on success; EDDY_ERR_INVALID_ARG with errstr, or
 * EDDY_ERR_NOMEM. */
eddy_err_t eddy_oip_decode(eddy_replica_t *r, const eddy_served_t *s, const eddy_oip_input_t *in,
                           const eddy_oip_plan_t *plan, eddy_batch_t **batch, char *errstr, size_t errstr_size);

/* The output named name of s's model, or -1 with errstr listing the outputs. */
int eddy_oip_output_index(const eddy_served_t *s, const char *name, char *errstr, size_t errstr_size);

/* Bytes of output o for n events as raw (little-endian) data, and the data itself into dst. */
size_t eddy_oip_output_bytes(const eddy_served_t *s, eddy_oip_output_t o, size_t n);
void eddy_oip_output_write(const eddy_served_t *s, eddy_oip_output_t o, const float *pred, size_t n, uint8_t *dst);

/* The label of one event's predictions p (argmax for softmax, p >= 0.5 for logistic: the rule of
 * the prequential accuracy). */
int64_t eddy_oip_label(const eddy_model_spec_t *spec, const float *p);

/* Registers the REST routes (GET /v2, /v2/health/live, /v2/health/ready, /v2/models/{model}[/versions/
 * {version}][/ready], POST /v2/models/{model}[/versions/{version}]/infer) on http. */
eddy_err_t eddy_oip_http_register(eddy_replica_t *r, eddy_http_t *http, char *errstr, size_t errstr_size);

/* Whether pattern is one of the REST inference routes (their metrics are eddy_predict_*). */
bool eddy_oip_is_infer_route(const char *pattern);

#endif
