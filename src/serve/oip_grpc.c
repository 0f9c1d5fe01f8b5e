/* The replica's gRPC server (see oip_grpc.h) on gRPC's C core. Each worker thread owns a completion
 * queue on which it keeps requests for new calls outstanding (the methods registered so that the
 * request message comes with the call); a call is answered on that thread in one batch (initial
 * metadata, message, status), so a unary call costs two queue events. Health watches stay open on
 * their worker, which sends the status again when it changes (checked every TICK_MS) and ends them
 * when the server stops. Messages are protobuf-c code generated from src/serve/proto at build time. */
#include "serve/oip_grpc.h"

#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "grpc_service.pb-c.h"
#include "health.pb-c.h"
#include "serve/oip.h"
#include "serve/replica_internal.h"

#ifndef EDDY_VERSION
#define EDDY_VERSION "dev"
#endif

#define LOG_MOD "grpc"
#define TICK_MS 100         /* health watches are checked this often */
#define INFER_OUTSTANDING 8 /* ModelInfer requests kept outstanding per worker (others: 1) */
#define MSG_MAX 1024

enum {
  M_LIVE = 0,
  M_READY,
  M_MODEL_READY,
  M_SERVER_META,
  M_MODEL_META,
  M_INFER,
  M_CHECK,
  M_WATCH,
  M__REGISTERED,
  M_UNKNOWN = M__REGISTERED, /* any other method: UNIMPLEMENTED */
  M__COUNT
};

static const char *const method_paths[M__COUNT] = {
    "/inference.GRPCInferenceService/ServerLive",     "/inference.GRPCInferenceService/ServerReady",
    "/inference.GRPCInferenceService/ModelReady",     "/inference.GRPCInferenceService/ServerMetadata",
    "/inference.GRPCInferenceService/ModelMetadata",  "/inference.GRPCInferenceService/ModelInfer",
    "/grpc.health.v1.Health/Check",                   "/grpc.health.v1.Health/Watch",
    "unknown"};

/* google.rpc.Code names (the metrics' grpc_code) and their HTTP equivalents (eddy_predict_*). */
static const char *const code_names[] = {"OK",        "CANCELLED",         "UNKNOWN",          "INVALID_ARGUMENT",
                                         "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED",
                                         "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
                                         "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
static const int code_http[] = {200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401};
#define N_CODES (sizeof code_names / sizeof code_names[0])

typedef struct call call_t;
typedef struct worker worker_t;

typedef struct {
  call_t *call;
  bool close; /* the watch's RECV_CLOSE_ON_SERVER */
} tag_t;

typedef enum { ST_REQUESTED = 0, ST_ANSWERING, ST_WATCHING } state_t;

struct call {
  tag_t tag, close_tag;
  worker_t *w;
  int method;
  state_t state;
  grpc_call *call;
  gpr_timespec deadline;
  grpc_metadata_array md;
  grpc_call_details details; /* M_UNKNOWN */
  grpc_byte_buffer *payload, *reply;
  grpc_slice status_text;
  bool has_status_text;
  grpc_status_code status;
  int cancelled;
  double t0;                 /* monotonic seconds when the call arrived */
  /* health watch */
  call_t *next;
  bool sending; /* a send is in flight */
  bool closed;  /* RECV_CLOSE_ON_SERVER completed: the call is over */
  bool gone;    /* a send failed: the client went away */
  bool ending;  /* the status is sent */
  int sent; /* the status last sent; -1 none */
  bool known; /* the watched service is known */
};

struct worker {
  eddy_grpc_t *g;
  grpc_completion_queue *cq;
  pthread_t thread;
  bool started;
  call_t *watches;
};

struct eddy_grpc {
  eddy_replica_t *r;
  grpc_server *server;
  grpc_completion_queue *shutdown_cq;
  void *methods[M__REGISTERED];
  worker_t *workers;
  unsigned n_workers, port, grace_ms;
  bool started;
  atomic_bool stopping;
  char bind[EDDY_CONFIG_STR];
  eddy_metric_t *m_calls;
  eddy_series_t *m_calls_ok[M__COUNT];
};

/* ---- replies ---- */

/* Sets c's status to code with msg as its text. */
static grpc_status_code fail(call_t *c, grpc_status_code code, const char *msg) {
  if (c->has_status_text) grpc_slice_unref(c->status_text);
  c->status = code;
  c->status_text = grpc_slice_from_copied_string(msg);
  c->has_status_text = true;
  return code;
}

/* Sets c's status to OK with msg packed as the reply. */
static void reply_message(call_t *c, const ProtobufCMessage *msg) {
  size_t len = protobuf_c_message_get_packed_size(msg);
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf) {
    fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  protobuf_c_message_pack(msg, buf);
  grpc_slice s = grpc_slice_new(buf, len, free);
  c->reply = grpc_raw_byte_buffer_create(&s, 1);
  grpc_slice_unref(s);
  c->status = GRPC_STATUS_OK;
}

/* The request message, contiguous: a slice to unref. */
static bool read_payload(call_t *c, grpc_slice *out) {
  grpc_byte_buffer_reader reader;
  if (!c->payload || !grpc_byte_buffer_reader_init(&reader, c->payload)) return false;
  *out = grpc_byte_buffer_reader_readall(&reader);
  grpc_byte_buffer_reader_destroy(&reader);
  return true;
}

/* ---- inference.GRPCInferenceService ---- */

static void fill_meta(Inference__ModelMetadataResponse__TensorMetadata *t, const eddy_oip_meta_t *m, int64_t *shape) {
  inference__model_metadata_response__tensor_metadata__init(t);
  t->name = (char *)m->name;
  t->datatype = (char *)m->datatype;
  memcpy(shape, m->shape, m->ndim * sizeof *shape);
  t->shape = shape;
  t->n_shape = m->ndim;
}

static void do_model_meta(eddy_grpc_t *g, call_t *c, const uint8_t *in, size_t len) {
  Inference__ModelMetadataRequest *q = inference__model_metadata_request__unpack(NULL, len, in);
  if (!q) {
    fail(c, GRPC_STATUS_INVALID_ARGUMENT, "ModelMetadataRequest: not a valid message");
    return;
  }
  char msg[MSG_MAX];
  eddy_served_t *s = eddy_replica_acquire(g->r);
  if (eddy_oip_check_model(g->r, s, q->name, q->version, msg, sizeof msg)) {
    fail(c, GRPC_STATUS_NOT_FOUND, msg);
  } else if (!s) {
    eddy_replica_waiting(g->r, msg, sizeof msg);
    fail(c, GRPC_STATUS_UNAVAILABLE, msg);
  } else {
    eddy_oip_meta_t in_meta[2], out_meta[2];
    const eddy_model_spec_t *spec = eddy_served_spec(s);
    size_t n_in = eddy_oip_inputs(spec, in_meta), n_out = eddy_oip_outputs(spec, out_meta);
    Inference__ModelMetadataResponse__TensorMetadata ins[2], outs[2], *pin[2], *pout[2];
    int64_t shapes[4][2];
    for (size_t i = 0; i < n_in; i++) fill_meta(&ins[i], &in_meta[i], shapes[i]), pin[i] = &ins[i];
    for (size_t i = 0; i < n_out; i++) fill_meta(&outs[i], &out_meta[i], shapes[2 + i]), pout[i] = &outs[i];
    char *versions[1] = {(char *)eddy_served_version_text(s)};
    Inference__ModelMetadataResponse a = INFERENCE__MODEL_METADATA_RESPONSE__INIT;
    a.name = (char *)eddy_replica_model_name(g->r);
    a.n_versions = 1;
    a.versions = versions;
    a.platform = EDDY_OIP_PLATFORM;
    a.n_inputs = n_in;
    a.inputs = pin;
    a.n_outputs = n_out;
    a.outputs = pout;
    reply_message(c, &a.base);
  }
  eddy_replica_release(s);
  inference__model_metadata_request__free_unpacked(q, NULL);
}

/* The request's inputs as views; items (for typed BYTES) is allocated into *items. */
static grpc_status_code infer_inputs(call_t *c, const Inference__ModelInferRequest *q, eddy_oip_input_t *in,
                                     eddy_oip_bytes_t **items) {
  char msg[MSG_MAX];
  if (q->n_inputs > EDDY_OIP_MAX_INPUTS) {
    snprintf(msg, sizeof msg, "%zu inputs: the model takes at most 2", q->n_inputs);
    return fail(c, GRPC_STATUS_INVALID_ARGUMENT, msg);
  }
  if (q->n_raw_input_contents && q->n_raw_input_contents != q->n_inputs) {
    snprintf(msg, sizeof msg, "raw_input_contents has %zu entries for %zu inputs (one per input, or none)",
             q->n_raw_input_contents, q->n_inputs);
    return fail(c, GRPC_STATUS_INVALID_ARGUMENT, msg);
  }
  for (size_t i = 0; i < q->n_inputs; i++) {
    const Inference__ModelInferRequest__InferInputTensor *t = q->inputs[i];
    const Inference__InferTensorContents *k = t->contents;
    eddy_oip_input_t *v = &in[i];
    memset(v, 0, sizeof *v);
    v->name = t->name;
    v->datatype = t->datatype;
    v->shape = t->shape;
    v->ndim = t->n_shape;
    if (q->n_raw_input_contents) {
      if (k) {
        snprintf(msg, sizeof msg, "input %s: contents and raw_input_contents are both given", t->name);
        return fail(c, GRPC_STATUS_INVALID_ARGUMENT, msg);
      }
      v->kind = EDDY_OIP_DATA_RAW;
      v->raw = q->raw_input_contents[i].data;
      v->raw_len = q->raw_input_contents[i].len;
    } else if (k && k->n_fp32_contents && !strcmp(t->datatype, "FP32")) {
      v->kind = EDDY_OIP_DATA_F32;
      v->f32 = k->fp32_contents;
      v->n_f32 = k->n_fp32_contents;
    } else if (k && k->n_bytes_contents && !strcmp(t->datatype, "BYTES")) {
      if (!*items && !(*items = malloc(k->n_bytes_contents * sizeof **items)))
        return fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      for (size_t e = 0; e < k->n_bytes_contents; e++)
        (*items)[e] = (eddy_oip_bytes_t){.data = k->bytes_contents[e].data, .len = k->bytes_contents[e].len};
      v->kind = EDDY_OIP_DATA_ITEMS;
      v->items = *items;
      v->n_items = k->n_bytes_contents;
    } else if (k) {
      const struct {
        size_t n;
        const char *field;
      } fields[] = {{k->n_bool_contents, "bool_contents"},   {k->n_int_contents, "int_contents"},
                    {k->n_int64_contents, "int64_contents"}, {k->n_uint_contents, "uint_contents"},
                    {k->n_uint64_contents, "uint64_contents"}, {k->n_fp32_contents, "fp32_contents"},
                    {k->n_fp64_contents, "fp64_contents"},   {k->n_bytes_contents, "bytes_contents"}};
      for (size_t f = 0; f < sizeof fields / sizeof fields[0] && !v->kind; f++)
        if (fields[f].n) v->kind = EDDY_OIP_DATA_OTHER, v->other = fields[f].field;
    }
  }
  return GRPC_STATUS_OK;
}

/* Which outputs the request asks for (all when none is named). */
static grpc_status_code infer_outputs(call_t *c, const Inference__ModelInferRequest *q, const eddy_served_t *s,
                                      bool want[EDDY_OIP__OUTPUTS]) {
  char msg[MSG_MAX];
  if (!q->n_outputs) {
    eddy_oip_meta_t meta[2];
    size_t n = eddy_oip_outputs(eddy_served_spec(s), meta);
    for (size_t k = 0; k < n; k++) want[k] = true;
    return GRPC_STATUS_OK;
  }
  for (size_t i = 0; i < q->n_outputs; i++) {
    const Inference__ModelInferRequest__InferRequestedOutputTensor *o = q->outputs[i];
    int k = eddy_oip_output_index(s, o->name, msg, sizeof msg);
    if (k < 0) return fail(c, GRPC_STATUS_INVALID_ARGUMENT, msg);
    if (want[k]) {
      snprintf(msg, sizeof msg, "output %s is asked for twice", o->name);
      return fail(c, GRPC_STATUS_INVALID_ARGUMENT, msg);
    }
    for (size_t p = 0; p < o->n_parameters; p++)
      if (!strcmp(o->parameters[p]->key, "classification")) {
        snprintf(msg, sizeof msg, "output %s: the classification extension is not supported (label is the class)",
                 o->name);
        return fail(c, GRPC_STATUS_INVALID_ARGUMENT, msg);
      }
    want[k] = true;
  }
  return GRPC_STATUS_OK;
}

/* The request's parameter "precision" (the last one, as for any map key) into *asked; NULL when
 * there is none. */
static grpc_status_code infer_precision(call_t *c, const Inference__ModelInferRequest *q, const char **asked) {
  *asked = NULL;
  for (size_t i = 0; i < q->n_parameters; i++) {
    const Inference__ModelInferRequest__ParametersEntry *e = q->parameters[i];
    if (strcmp(e->key, EDDY_OIP_PRECISION_PARAM) != 0) continue;
    if (!e->value || e->value->parameter_choice_case != INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM)
      return fail(c, GRPC_STATUS_INVALID_ARGUMENT,
                  "the request: parameter " EDDY_OIP_PRECISION_PARAM " must be a string_param (fp32, bf16, fp16 or int8)");
    *asked = e->value->string_param;
  }
  return GRPC_STATUS_OK;
}

static void do_infer(eddy_grpc_t *g, call_t *c, const uint8_t *data, size_t len) {
  char msg[MSG_MAX];
  eddy_predict_call_t pc;
  eddy_replica_call_begin(g->r, EDDY_PROTO_GRPC, &pc); /* the request is decoded in the slot too */
  Inference__ModelInferRequest *q = inference__model_infer_request__unpack(NULL, len, data);
  if (!q) {
    snprintf(msg, sizeof msg, "ModelInferRequest: %zu bytes that are not a valid message", len);
    fail(c, GRPC_STATUS_INVALID_ARGUMENT, msg);
    eddy_replica_call_end(g->r);
    return;
  }
  eddy_served_t *s = eddy_replica_acquire(g->r);
  eddy_oip_input_t in[EDDY_OIP_MAX_INPUTS];
  eddy_oip_bytes_t *items = NULL;
  uint8_t *labels = NULL;
  bool want[EDDY_OIP__OUTPUTS] = {false};
  eddy_oip_plan_t plan;
  eddy_batch_t *batch = NULL;
  const float *pred = NULL;
  eddy_err_t e = EDDY_OK;
  if (eddy_oip_check_model(g->r, s, q->model_name, q->model_version, msg, sizeof msg)) {
    fail(c, GRPC_STATUS_NOT_FOUND, msg);
    goto out;
  }
  if (!s) {
    eddy_replica_waiting(g->r, msg, sizeof msg);
    fail(c, GRPC_STATUS_UNAVAILABLE, msg);
    goto out;
  }
  if (infer_inputs(c, q, in, &items) || infer_outputs(c, q, s, want) || infer_precision(c, q, &pc.asked)) goto out;
  if ((e = eddy_oip_check_inputs(s, in, q->n_inputs, &plan, msg, sizeof msg)) ||
      (e = eddy_oip_decode(g->r, s, in, &plan, &batch, msg, sizeof msg)) ||
      !(pred = eddy_replica_predict(g->r, s, batch, &pc, &e, msg, sizeof msg))) {
    fail(c, e == EDDY_ERR_NOMEM ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_INVALID_ARGUMENT, msg);
    goto out;
  }
  eddy_oip_meta_t meta[2];
  size_t n_meta = eddy_oip_outputs(eddy_served_spec(s), meta), n_out = 0;
  Inference__ModelInferResponse__InferOutputTensor outs[2], *pouts[2];
  ProtobufCBinaryData raw[2];
  int64_t shapes[2][2];
  for (size_t m = 0; m < n_meta; m++) {
    if (!want[m]) continue;
    Inference__ModelInferResponse__InferOutputTensor *t = &outs[n_out];
    inference__model_infer_response__infer_output_tensor__init(t);
    t->name = (char *)meta[m].name;
    t->datatype = (char *)meta[m].datatype;
    shapes[n_out][0] = (int64_t)plan.n;
    shapes[n_out][1] = meta[m].shape[1];
    t->shape = shapes[n_out];
    t->n_shape = meta[m].ndim;
    raw[n_out].len = eddy_oip_output_bytes(s, (eddy_oip_output_t)m, plan.n);
    if (m == EDDY_OIP_SCORES) {
      raw[n_out].data = (uint8_t *)pred; /* the thread's predictions, packed below */
    } else {
      if (!(labels = malloc(raw[n_out].len))) {
        fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
      }
      eddy_oip_output_write(s, EDDY_OIP_LABEL, pred, plan.n, labels);
      raw[n_out].data = labels;
    }
    pouts[n_out] = t;
    n_out++;
  }
  /* The precision that ran, as the response's parameter "precision". */
  Inference__InferParameter prec = INFERENCE__INFER_PARAMETER__INIT;
  prec.parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM;
  prec.string_param = (char *)eddy_infer_precision_name(pc.precision);
  Inference__ModelInferResponse__ParametersEntry prec_entry = INFERENCE__MODEL_INFER_RESPONSE__PARAMETERS_ENTRY__INIT,
                                                 *params[1] = {&prec_entry};
  prec_entry.key = EDDY_OIP_PRECISION_PARAM;
  prec_entry.value = &prec;
  Inference__ModelInferResponse a = INFERENCE__MODEL_INFER_RESPONSE__INIT;
  a.model_name = (char *)eddy_replica_model_name(g->r);
  a.model_version = (char *)eddy_served_version_text(s);
  a.id = q->id;
  a.n_parameters = 1;
  a.parameters = params;
  a.n_outputs = n_out;
  a.outputs = pouts;
  a.n_raw_output_contents = n_out;
  a.raw_output_contents = raw;
  reply_message(c, &a.base);
out:
  free(labels);
  free(items);
  eddy_replica_release(s);
  inference__model_infer_request__free_unpacked(q, NULL);
  eddy_replica_call_end(g->r);
}

static void do_simple(eddy_grpc_t *g, call_t *c, const uint8_t *in, size_t len) {
  char msg[MSG_MAX];
  switch (c->method) {
    case M_LIVE: {
      Inference__ServerLiveResponse a = INFERENCE__SERVER_LIVE_RESPONSE__INIT;
      a.live = 1;
      reply_message(c, &a.base);
      break;
    }
    case M_READY: {
      Inference__ServerReadyResponse a = INFERENCE__SERVER_READY_RESPONSE__INIT;
      a.ready = eddy_replica_version(g->r) != 0;
      reply_message(c, &a.base);
      break;
    }
    case M_MODEL_READY: {
      Inference__ModelReadyRequest *q = inference__model_ready_request__unpack(NULL, len, in);
      if (!q) {
        fail(c, GRPC_STATUS_INVALID_ARGUMENT, "ModelReadyRequest: not a valid message");
        break;
      }
      eddy_served_t *s = eddy_replica_acquire(g->r);
      if (eddy_oip_check_model(g->r, s, q->name, q->version, msg, sizeof msg)) {
        fail(c, GRPC_STATUS_NOT_FOUND, msg);
      } else {
        Inference__ModelReadyResponse a = INFERENCE__MODEL_READY_RESPONSE__INIT;
        a.ready = s != NULL;
        reply_message(c, &a.base);
      }
      eddy_replica_release(s);
      inference__model_ready_request__free_unpacked(q, NULL);
      break;
    }
    case M_SERVER_META: {
      char *ext[] = {EDDY_OIP_EXTENSIONS};
      Inference__ServerMetadataResponse a = INFERENCE__SERVER_METADATA_RESPONSE__INIT;
      a.name = EDDY_OIP_SERVER_NAME;
      a.version = EDDY_VERSION;
      a.n_extensions = 1;
      a.extensions = ext;
      reply_message(c, &a.base);
      break;
    }
    case M_CHECK: {
      Grpc__Health__V1__HealthCheckRequest *q = grpc__health__v1__health_check_request__unpack(NULL, len, in);
      if (!q) {
        fail(c, GRPC_STATUS_INVALID_ARGUMENT, "HealthCheckRequest: not a valid message");
        break;
      }
      if (q->service[0] && strcmp(q->service, "inference.GRPCInferenceService") != 0) {
        snprintf(msg, sizeof msg, "unknown service \"%.200s\" (known: \"\", inference.GRPCInferenceService)",
                 q->service);
        fail(c, GRPC_STATUS_NOT_FOUND, msg);
      } else {
        Grpc__Health__V1__HealthCheckResponse a = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
        a.status = eddy_replica_version(g->r) ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                                              : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
        reply_message(c, &a.base);
      }
      grpc__health__v1__health_check_request__free_unpacked(q, NULL);
      break;
    }
    default:
      break;
  }
}

/* ---- calls ---- */

static void call_free(call_t *c) {
  if (c->call) grpc_call_unref(c->call);
  grpc_metadata_array_destroy(&c->md);
  if (c->method == M_UNKNOWN) grpc_call_details_destroy(&c->details);
  if (c->payload) grpc_byte_buffer_destroy(c->payload);
  if (c->reply) grpc_byte_buffer_destroy(c->reply);
  if (c->has_status_text) grpc_slice_unref(c->status_text);
  free(c);
}

/* Keeps one more request for a new call of method outstanding on w's queue. */
static void request_call(worker_t *w, int method) {
  eddy_grpc_t *g = w->g;
  if (atomic_load(&g->stopping)) return;
  call_t *c = calloc(1, sizeof *c);
  if (!c) {
    EDDY_ERROR(LOG_MOD, "out of memory: one fewer outstanding request for %s", method_paths[method]);
    return;
  }
  c->tag.call = c->close_tag.call = c;
  c->close_tag.close = true;
  c->w = w;
  c->method = method;
  c->sent = -1;
  grpc_metadata_array_init(&c->md);
  grpc_call_error e;
  if (method == M_UNKNOWN) {
    grpc_call_details_init(&c->details);
    e = grpc_server_request_call(g->server, &c->call, &c->details, &c->md, w->cq, w->cq, &c->tag);
  } else {
    e = grpc_server_request_registered_call(g->server, g->methods[method], &c->call, &c->deadline, &c->md,
                                            &c->payload, w->cq, w->cq, &c->tag);
  }
  if (e != GRPC_CALL_OK) {
    if (!atomic_load(&g->stopping))
      EDDY_WARN(LOG_MOD, "requesting a call of %s: %s", method_paths[method], grpc_call_error_to_string(e));
    call_free(c);
  }
}

static void count_call(eddy_grpc_t *g, const call_t *c) {
  eddy_series_t *s = c->status == GRPC_STATUS_OK ? g->m_calls_ok[c->method] : NULL;
  if (!s && (size_t)c->status < N_CODES) {
    const char *v[] = {method_paths[c->method][0] == '/' ? method_paths[c->method] + 1 : method_paths[c->method],
                       code_names[c->status]};
    s = eddy_metric_series(g->m_calls, v);
  }
  eddy_series_add(s, 1);
  if (c->method == M_INFER)
    eddy_replica_count_predict(g->r, EDDY_PROTO_GRPC, (size_t)c->status < N_CODES ? code_http[c->status] : 500,
                               eddy_clock_mono_s() - c->t0);
}

/* Answers c in one batch: initial metadata, the reply (when OK) and the status. */
static void answer(call_t *c) {
  grpc_op ops[4];
  memset(ops, 0, sizeof ops);
  size_t n = 0;
  ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
  if (c->status == GRPC_STATUS_OK && c->reply) {
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = c->reply;
  }
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n].data.send_status_from_server.status = c->status;
  ops[n++].data.send_status_from_server.status_details = c->has_status_text ? &c->status_text : NULL;
  ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;
  c->state = ST_ANSWERING;
  grpc_call_error e = grpc_call_start_batch(c->call, ops, n, &c->tag, NULL);
  if (e != GRPC_CALL_OK) {
    EDDY_WARN(LOG_MOD, "%s: answering failed: %s", method_paths[c->method], grpc_call_error_to_string(e));
    count_call(c->w->g, c);
    call_free(c);
  }
}

/* ---- health watches ---- */

static int watch_status(const call_t *c) {
  if (!c->known) return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
  return eddy_replica_version(c->w->g->r) ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                                          : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
}

/* Sends the watched status (the first time with the initial metadata). */
static void watch_send(call_t *c, int status) {
  Grpc__Health__V1__HealthCheckResponse a = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  a.status = status;
  if (c->reply) grpc_byte_buffer_destroy(c->reply);
  c->reply = NULL;
  reply_message(c, &a.base);
  if (!c->reply) return;
  grpc_op ops[2];
  memset(ops, 0, sizeof ops);
  size_t n = 0;
  if (c->sent < 0) ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[n].op = GRPC_OP_SEND_MESSAGE;
  ops[n++].data.send_message.send_message = c->reply;
  if (grpc_call_start_batch(c->call, ops, n, &c->tag, NULL) == GRPC_CALL_OK) {
    c->sending = true;
    c->sent = status;
  }
}

/* Ends a watch from the server's side (the replica is stopping). */
static void watch_end(call_t *c) {
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  op.data.send_status_from_server.status = GRPC_STATUS_UNAVAILABLE;
  grpc_slice text = grpc_slice_from_static_string("the replica is stopping");
  op.data.send_status_from_server.status_details = &text;
  c->ending = true;
  if (grpc_call_start_batch(c->call, &op, 1, &c->tag, NULL) == GRPC_CALL_OK) c->sending = true;
}

static void watch_done(call_t *c) {
  call_t **p = &c->w->watches;
  while (*p && *p != c) p = &(*p)->next;
  if (*p) *p = c->next;
  c->status = c->ending ? GRPC_STATUS_UNAVAILABLE : GRPC_STATUS_CANCELLED; /* we ended it, or the client did */
  count_call(c->w->g, c);
  call_free(c);
}

/* Sends changed statuses, or ends the watches when the server stops. */
static void watch_tick(worker_t *w) {
  const bool stopping = atomic_load(&w->g->stopping);
  for (call_t *c = w->watches; c; c = c->next) {
    if (c->sending || c->closed || c->gone || c->ending) continue;
    if (stopping) {
      watch_end(c);
      continue;
    }
    int st = watch_status(c);
    if (st != c->sent) watch_send(c, st);
  }
}

static void watch_start(call_t *c, const uint8_t *in, size_t len) {
  Grpc__Health__V1__HealthCheckRequest *q = grpc__health__v1__health_check_request__unpack(NULL, len, in);
  if (!q) {
    fail(c, GRPC_STATUS_INVALID_ARGUMENT, "HealthCheckRequest: not a valid message");
    answer(c);
    return;
  }
  c->known = !q->service[0] || !strcmp(q->service, "inference.GRPCInferenceService");
  grpc__health__v1__health_check_request__free_unpacked(q, NULL);
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  op.data.recv_close_on_server.cancelled = &c->cancelled;
  if (grpc_call_start_batch(c->call, &op, 1, &c->close_tag, NULL) != GRPC_CALL_OK) {
    fail(c, GRPC_STATUS_INTERNAL, "cannot watch");
    answer(c);
    return;
  }
  c->state = ST_WATCHING;
  c->next = c->w->watches;
  c->w->watches = c;
  watch_send(c, watch_status(c));
}

/* ---- the worker loop ---- */

static void on_event(worker_t *w, tag_t *t, bool ok) {
  eddy_grpc_t *g = w->g;
  call_t *c = t->call;
  switch (c->state) {
    case ST_REQUESTED: {
      if (!ok) { /* the server is shutting down */
        call_free(c);
        return;
      }
      c->t0 = eddy_clock_mono_s();
      request_call(w, c->method);
      if (c->method == M_UNKNOWN) {
        char msg[MSG_MAX];
        char *method = grpc_slice_to_c_string(c->details.method);
        snprintf(msg, sizeof msg, "unknown method %.300s (this replica serves inference.GRPCInferenceService and "
                                  "grpc.health.v1.Health)",
                 method ? method : "?");
        gpr_free(method);
        fail(c, GRPC_STATUS_UNIMPLEMENTED, msg);
        answer(c);
        return;
      }
      grpc_slice payload;
      if (!read_payload(c, &payload)) {
        fail(c, GRPC_STATUS_INVALID_ARGUMENT, "no request message");
        answer(c);
        return;
      }
      const uint8_t *in = GRPC_SLICE_START_PTR(payload);
      size_t len = GRPC_SLICE_LENGTH(payload);
      if (c->method == M_WATCH) {
        watch_start(c, in, len);
      } else {
        if (c->method == M_INFER) do_infer(g, c, in, len);
        else if (c->method == M_MODEL_META) do_model_meta(g, c, in, len);
        else do_simple(g, c, in, len);
        answer(c);
      }
      grpc_slice_unref(payload);
      return;
    }
    case ST_ANSWERING:
      count_call(g, c);
      call_free(c);
      return;
    case ST_WATCHING:
      if (t->close) {
        c->closed = true;
      } else {
        c->sending = false;
        if (!ok) c->gone = true;
      }
      if (c->closed && !c->sending) watch_done(c);
      else watch_tick(w);
      return;
  }
}

static void *worker_main(void *arg) {
  worker_t *w = arg;
  for (int m = 0; m < M__COUNT; m++)
    for (int i = 0; i < (m == M_INFER ? INFER_OUTSTANDING : 1); i++) request_call(w, m);
  for (;;) {
    gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(TICK_MS, GPR_TIMESPAN));
    grpc_event ev = grpc_completion_queue_next(w->cq, until, NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
    if (ev.type == GRPC_OP_COMPLETE) on_event(w, ev.tag, ev.success != 0);
    else if (w->watches) watch_tick(w);
  }
  return NULL;
}

/* ---- lifecycle ---- */

static void on_grpc_log(gpr_log_func_args *a) {
  if (a->severity == GPR_LOG_SEVERITY_ERROR) EDDY_WARN(LOG_MOD, "%s", a->message);
  else EDDY_DEBUG(LOG_MOD, "%s", a->message);
}

/* Why host:port cannot be bound, from a plain socket's bind (gRPC only says that it failed). */
static void bind_reason(const char *spec, char *buf, size_t size) {
  snprintf(buf, size, "gRPC could not listen there");
  const char *colon = strrchr(spec, ':');
  if (!colon) return;
  char host[256];
  snprintf(host, sizeof host, "%.*s", (int)(colon - spec), spec);
  size_t hl = strlen(host);
  if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') memmove(host, host + 1, hl - 2), host[hl - 2] = '\0';
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res;
  int gai = getaddrinfo(host, colon + 1, &hints, &res);
  if (gai) {
    snprintf(buf, size, "host \"%s\": %s", host, gai_strerror(gai));
    return;
  }
  int fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
  if (fd >= 0 && bind(fd, res->ai_addr, res->ai_addrlen) != 0)
    snprintf(buf, size, "%s%s", strerror(errno), errno == EADDRINUSE ? " (change serve.grpc_bind)" : "");
  if (fd >= 0) close(fd);
  freeaddrinfo(res);
}

eddy_grpc_t *eddy_grpc_new(eddy_replica_t *r, eddy_registry_t *metrics, const eddy_grpc_opts_t *opts, char *errstr,
                           size_t errstr_size) {
  if (!r || !metrics || !opts || !opts->bind || !*opts->bind) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "grpc: a replica, a registry and serve.grpc_bind are required");
    return NULL;
  }
  eddy_grpc_t *g = calloc(1, sizeof *g);
  if (!g) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
    return NULL;
  }
  gpr_set_log_function(on_grpc_log);
  grpc_init();
  g->r = r;
  g->n_workers = opts->threads ? opts->threads : 1;
  g->grace_ms = opts->grace_ms ? opts->grace_ms : EDDY_GRPC_DEFAULT_GRACE_MS;
  snprintf(g->bind, sizeof g->bind, "%s", opts->bind);
  g->m_calls = eddy_registry_add(metrics, EDDY_METRIC_COUNTER, "eddy_grpc_requests_total",
                                 "gRPC calls answered, by method and status (ModelInfer: also eddy_predict_*)",
                                 "method,grpc_code", NULL, 0, errstr, errstr_size);
  if (!g->m_calls) goto fail;
  for (int m = 0; m < M__REGISTERED; m++) {
    const char *v[] = {method_paths[m] + 1, "OK"};
    g->m_calls_ok[m] = eddy_metric_series(g->m_calls, v);
  }
  grpc_arg args[2];
  size_t n_args = 0;
  if (opts->max_message_bytes) {
    args[n_args].type = GRPC_ARG_INTEGER;
    args[n_args].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[n_args++].value.integer = opts->max_message_bytes > INT32_MAX ? INT32_MAX : (int)opts->max_message_bytes;
  }
  args[n_args].type = GRPC_ARG_INTEGER;
  args[n_args].key = GRPC_ARG_ALLOW_REUSEPORT; /* a port in use must fail, not be shared */
  args[n_args++].value.integer = 0;
  grpc_channel_args channel_args = {.num_args = n_args, .args = args};
  g->server = grpc_server_create(&channel_args, NULL);
  if (!g->server) {
    eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size, "grpc: the server could not be created");
    goto fail;
  }
  for (int m = 0; m < M__REGISTERED; m++) {
    g->methods[m] = grpc_server_register_method(g->server, method_paths[m], NULL,
                                                GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    if (!g->methods[m]) {
      eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size, "grpc: cannot register %s", method_paths[m]);
      goto fail;
    }
  }
  g->workers = calloc(g->n_workers, sizeof *g->workers);
  if (!g->workers) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
    goto fail;
  }
  for (unsigned i = 0; i < g->n_workers; i++) {
    g->workers[i].g = g;
    g->workers[i].cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(g->server, g->workers[i].cq, NULL);
  }
  grpc_completion_queue_attributes attr = {.version = 1, .cq_completion_type = GRPC_CQ_NEXT,
                                           .cq_polling_type = GRPC_CQ_NON_POLLING};
  g->shutdown_cq = grpc_completion_queue_create(grpc_completion_queue_factory_lookup(&attr), &attr, NULL);
  grpc_server_register_completion_queue(g->server, g->shutdown_cq, NULL);
  grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
  int port = grpc_server_add_http2_port(g->server, g->bind, creds);
  grpc_server_credentials_release(creds);
  if (port <= 0) {
    char why[512];
    bind_reason(g->bind, why, sizeof why);
    eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "serve.grpc_bind \"%s\": %s", g->bind, why);
    goto fail;
  }
  g->port = (unsigned)port;
  return g;
fail:
  eddy_grpc_destroy(g);
  return NULL;
}

unsigned eddy_grpc_port(const eddy_grpc_t *g) { return g ? g->port : 0; }

eddy_err_t eddy_grpc_start(eddy_grpc_t *g, char *errstr, size_t errstr_size) {
  if (!g) return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "grpc start: no server");
  if (g->started) return eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "grpc server on %s already started", g->bind);
  grpc_server_start(g->server);
  g->started = true;
  for (unsigned i = 0; i < g->n_workers; i++) {
    if (pthread_create(&g->workers[i].thread, NULL, worker_main, &g->workers[i]) != 0)
      return eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size, "grpc: cannot start worker thread %u", i);
    g->workers[i].started = true;
  }
  EDDY_INFO(LOG_MOD, "listening on %s, port %u (%u threads; gRPC core %s)", g->bind, g->port, g->n_workers,
            grpc_version_string());
  return EDDY_OK;
}

void eddy_grpc_destroy(eddy_grpc_t *g) {
  if (!g) return;
  atomic_store(&g->stopping, true);
  if (g->server) {
    if (g->started) {
      grpc_server_shutdown_and_notify(g->server, g->shutdown_cq, NULL);
      gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(g->grace_ms, GPR_TIMESPAN));
      grpc_event ev = grpc_completion_queue_next(g->shutdown_cq, until, NULL);
      if (ev.type != GRPC_OP_COMPLETE) {
        EDDY_WARN(LOG_MOD, "stopping %s with calls still in flight after %u ms: cancelling them", g->bind, g->grace_ms);
        grpc_server_cancel_all_calls(g->server);
        grpc_completion_queue_next(g->shutdown_cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
      }
    }
    for (unsigned i = 0; g->workers && i < g->n_workers; i++)
      if (g->workers[i].cq) grpc_completion_queue_shutdown(g->workers[i].cq);
    for (unsigned i = 0; g->workers && i < g->n_workers; i++)
      if (g->workers[i].started) pthread_join(g->workers[i].thread, NULL);
    if (!g->started) { /* a server never started still needs a shutdown before it is destroyed */
      grpc_server_shutdown_and_notify(g->server, g->shutdown_cq, NULL);
      grpc_server_cancel_all_calls(g->server);
      grpc_completion_queue_next(g->shutdown_cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    }
    grpc_server_destroy(g->server);
  }
  for (unsigned i = 0; g->workers && i < g->n_workers; i++) {
    if (!g->workers[i].cq) continue;
    if (!g->workers[i].started) /* drain what a worker never ran */
      while (grpc_completion_queue_next(g->workers[i].cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
             GRPC_QUEUE_SHUTDOWN) {
      }
    grpc_completion_queue_destroy(g->workers[i].cq);
  }
  if (g->shutdown_cq) {
    grpc_completion_queue_shutdown(g->shutdown_cq);
    while (grpc_completion_queue_next(g->shutdown_cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(g->shutdown_cq);
  }
  free(g->workers);
  free(g);
  grpc_shutdown();
}
