/* What the Open Inference Protocol front ends (oip_http.c, oip_grpc.c) take from the replica: a
 * counted reference to the served version, the calling thread's batch, the one forward pass that
 * /v1/predict runs too (so that every protocol answers bit for bit the same), with the one choice
 * of its serving precision (serve/precision.h: the request's own, else the version's base stepped
 * down by load), and the prediction metrics they share (labels protocol and precision). Private to
 * src/serve. */
#ifndef EDDY_REPLICA_INTERNAL_H
#define EDDY_REPLICA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/event.h"
#include "model/batch.h"
#include "model/quant.h"
#include "model/spec.h"
#include "serve/replica.h"

/* The protocols a prediction comes in by: the label values of the eddy_predict_* metrics. */
typedef enum { EDDY_PROTO_V1 = 0, EDDY_PROTO_V2, EDDY_PROTO_GRPC, EDDY_PROTO__COUNT } eddy_proto_t;

typedef struct served eddy_served_t; /* one loaded version, read-only */

/* The served version with a reference taken (release it), or NULL before the first version. A
 * request runs on the version it acquired even when a newer one is swapped in meanwhile. */
eddy_served_t *eddy_replica_acquire(eddy_replica_t *r);
void eddy_replica_release(eddy_served_t *s); /* NULL is a no-op */

uint64_t eddy_served_version(const eddy_served_t *s);
const char *eddy_served_version_text(const eddy_served_t *s); /* decimal */
const eddy_model_spec_t *eddy_served_spec(const eddy_served_t *s);
uint32_t eddy_served_outputs(const eddy_served_t *s); /* values per event */

const char *eddy_replica_model_name(const eddy_replica_t *r);
/* Why nothing is served yet (for a 503 or UNAVAILABLE answer), into buf. */
void eddy_replica_waiting(eddy_replica_t *r, char *buf, size_t size);

/* The calling thread's batch, emptied, with room for n events of s's dense width; owned by the
 * thread and valid until its next call. NULL when out of memory. */
eddy_batch_t *eddy_replica_batch(eddy_replica_t *r, const eddy_served_t *s, size_t n);
/* The calling thread's event, for decoding (owned by the thread). NULL when out of memory. */
eddy_event_t *eddy_replica_event(eddy_replica_t *r);

/* One prediction request of any protocol, from eddy_replica_call_begin to eddy_replica_call_end. */
typedef struct {
  eddy_proto_t proto;
  const char *asked;                /* the precision the request asks for (NULL or "" = none); the caller's */
  double waited_ms, slot_at_s;      /* set by begin: the wait for a processing slot, and when it got one */
  eddy_infer_precision_t precision; /* set by eddy_replica_predict: the precision that ran */
} eddy_predict_call_t;

/* Starts a prediction request of proto: with serve.latency_target_ms set, waits for one of the
 * replica's processing slots (shared by every protocol; the wait is the queueing delay that steps
 * the precision down under load), in which the request is decoded, predicted and answered. Pair
 * it with eddy_replica_call_end, which gives the slot back. */
void eddy_replica_call_begin(eddy_replica_t *r, eddy_proto_t proto, eddy_predict_call_t *call);
void eddy_replica_call_end(eddy_replica_t *r);

/* Runs s's forward pass on b (from eddy_replica_batch) in the precision chosen for call (its
 * asked, else the version's base stepped down by load; call->precision gets it) and counts its
 * events under call->proto and that precision: b->n × eddy_served_outputs(s) floats owned by the
 * calling thread, valid until its next call. NULL with errstr for a precision asked that is unknown
 * or not held (EDDY_ERR_INVALID_ARG in *err; errstr lists the held ones), a batch that does not fit
 * the model (EDDY_ERR_SHAPE) or when out of memory (EDDY_ERR_NOMEM). */
const float *eddy_replica_predict(eddy_replica_t *r, eddy_served_t *s, const eddy_batch_t *b, eddy_predict_call_t *call,
                                  eddy_err_t *err, char *errstr, size_t errstr_size);

/* Counts one answered prediction request of proto: status (an HTTP status; gRPC's codes are
 * mapped to theirs) and its time. */
void eddy_replica_count_predict(eddy_replica_t *r, eddy_proto_t proto, int status, double seconds);

#endif
