/* What the Open Inference Protocol front ends (oip_http.c, oip_grpc.c) take from the replica: a
 * counted reference to the served version, the calling thread's batch, the one forward pass that
 * /v1/predict runs too (so that every protocol answers bit for bit the same), and the prediction
 * metrics they share (label protocol). Private to src/serve. */
#ifndef EDDY_REPLICA_INTERNAL_H
#define EDDY_REPLICA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/event.h"
#include "model/batch.h"
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

/* Runs s's forward pass on b (from eddy_replica_batch) and counts its events under proto:
 * b->n × eddy_served_outputs(s) floats owned by the calling thread, valid until its next call.
 * NULL with errstr on a batch that does not fit the model (EDDY_ERR_SHAPE in *err) or when out of
 * memory (EDDY_ERR_NOMEM). */
const float *eddy_replica_predict(eddy_replica_t *r, eddy_served_t *s, const eddy_batch_t *b, eddy_proto_t proto,
                                  eddy_err_t *err, char *errstr, size_t errstr_size);

/* Counts one answered prediction request of proto: status (an HTTP status; gRPC's codes are
 * mapped to theirs) and its time. */
void eddy_replica_count_predict(eddy_replica_t *r, eddy_proto_t proto, int status, double seconds);

#endif
