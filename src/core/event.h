/* Labeled events: the JSON wire format (DESIGN "Events"), feature hashing, and the compact
 * versioned binary encoding used for storage. Decoding either validates the whole event against
 * the schema or fails with a specific error code and message: never a partial event. */
#ifndef EDDY_EVENT_H
#define EDDY_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"

#define EDDY_EVENT_ID_MAX 128             /* bytes of "id", including the terminating NUL */
#define EDDY_EVENT_DEFAULT_MAX_BYTES 65536 /* default size cap of one JSON event */

typedef enum { EDDY_HEAD_LOGISTIC = 0, EDDY_HEAD_SOFTMAX, EDDY_HEAD_SQUARED } eddy_head_t;

/* What a valid event must look like: derived from the model spec. */
typedef struct {
  uint32_t dense_dim;  /* exact length of "dense" (0: "dense" must be absent or empty) */
  uint32_t hash_bits;  /* sparse features hash into 2^hash_bits buckets (1..30); 0: no sparse allowed */
  eddy_head_t head;    /* logistic: label 0|1; softmax: integer 0..classes-1; squared: any finite */
  uint32_t classes;    /* softmax only */
  size_t max_bytes;    /* JSON payload cap; 0 = EDDY_EVENT_DEFAULT_MAX_BYTES */
  bool label_optional; /* prediction requests: a missing label decodes as 0 (a present one is
                          still checked) */
} eddy_event_schema_t;

/* One decoded event. Arrays are owned by the event and reused across decodes (grown as needed). */
typedef struct {
  char id[EDDY_EVENT_ID_MAX]; /* "" when the event has no id */
  int64_t ts;                 /* ms since epoch; valid when has_ts */
  bool has_ts;
  double label;
  float weight;               /* default 1 */
  uint32_t n_dense;
  float *dense;
  uint32_t n_sparse;
  uint32_t *sparse_idx;       /* bucket in [0, 2^hash_bits) */
  float *sparse_val;
  uint32_t dense_cap, sparse_cap;
  bool has_origin;            /* read from Kafka: the partition and offset below are where */
  int32_t partition;
  int64_t offset;
} eddy_event_t;

void eddy_event_init(eddy_event_t *ev);
void eddy_event_free(eddy_event_t *ev); /* frees the arrays; the event can be reused after init */

/* Bucket of a sparse feature: XXH3-64 (seed 0) of the key bytes, masked to hash_bits.
 * For a string value the key is "name=value" (value 1); for a number it is "name" (value = number). */
uint32_t eddy_feature_hash(const char *key, size_t len, uint32_t hash_bits);

/* Decode one JSON event of len bytes (need not be NUL-terminated) into ev, validated against
 * schema. On failure ev's contents are unspecified (but safe to reuse/free) and errstr says what
 * is wrong and where ("dense[3] is NaN", "label 12 out of range 0..9"). */
eddy_err_t eddy_event_from_json(const char *json, size_t len, const eddy_event_schema_t *schema,
                                eddy_event_t *ev, char *errstr, size_t errstr_size);

/* Binary encoding (version byte first, little-endian fields). eddy_event_encoded_size() gives the
 * exact size; eddy_event_encode writes it into buf (cap bytes) and returns bytes written, or 0 if
 * cap is too small. eddy_event_decode restores exactly what was encoded (bit-identical floats). */
size_t eddy_event_encoded_size(const eddy_event_t *ev);
size_t eddy_event_encode(const eddy_event_t *ev, uint8_t *buf, size_t cap);
eddy_err_t eddy_event_decode(const uint8_t *buf, size_t len, eddy_event_t *ev, char *errstr,
                             size_t errstr_size);

/* JSON text of an event (id, ts, label, weight, dense); used by `eddy produce` for datasets that
 * are not JSONL. Returns NULL when the event has sparse features (hashed buckets cannot be written
 * back as names), a non-finite value, or on allocation failure. Caller frees. */
char *eddy_event_to_json(const eddy_event_t *ev);

/* A prediction request body: one event, or {"instances": [event, ...]} (nothing else in the
 * wrapper). Fills spans[2i], spans[2i+1] with event i's [start, end) text (room for max events)
 * and returns the count: 1 with *wrapped false when the body is not a wrapper (the whole body is
 * the event). Only the wrapper's structure is checked: the events are left to
 * eddy_event_from_json. -1 with why ("instances[3] is not valid JSON", "more than 10000
 * instances in one request", "\"instances\" is empty", ...) when the wrapper is malformed. */
long eddy_event_split_instances(const char *body, size_t len, const char **spans, size_t max, bool *wrapped,
                                char *why, size_t why_size);
/* eddy_event_split_instances for a request that may also name a serving precision: the wrapper
 * holds "instances" and optionally "precision" (a string), in either order; a single event may
 * carry a top-level "precision" too (the event decoder ignores it). precision (room for
 * precision_size bytes) gets the name, "" when there is none. -1 with why as above, and for
 * another field in a wrapper ("unexpected field \"x\" (only \"instances\" and \"precision\" are
 * allowed)") or a "precision" that is not a plain string. */
long eddy_event_split_request(const char *body, size_t len, const char **spans, size_t max, bool *wrapped,
                              char *precision, size_t precision_size, char *why, size_t why_size);

#endif
