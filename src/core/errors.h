/* eddy's one error enum. 0 is success; values are append-only so that numbers seen in logs and
 * exit paths keep their meaning across versions. eddy_err_str() never returns NULL. */
#ifndef EDDY_ERRORS_H
#define EDDY_ERRORS_H

#include <stddef.h>

typedef enum {
  EDDY_OK = 0,
  EDDY_ERR_INVALID_ARG,      /* a caller passed something the function cannot accept */
  EDDY_ERR_NOMEM,            /* allocation failed */
  EDDY_ERR_IO,               /* read, write, open, fsync, rename failed */
  EDDY_ERR_FORMAT,           /* a file or message is not in the expected format */
  EDDY_ERR_TOO_LARGE,        /* over a hard cap (body, header, payload, event) */
  EDDY_ERR_UNSUPPORTED,      /* valid but not supported by this build or backend */
  EDDY_ERR_NOT_FOUND,        /* no such tensor, file, version, key */
  EDDY_ERR_CONFIG,           /* a configuration value is wrong; the message names file:line */
  EDDY_ERR_NONFINITE,        /* NaN or Inf where a finite number is required */
  EDDY_ERR_SHAPE,            /* tensor or batch shape does not match the spec */
  EDDY_ERR_STATE,            /* call not valid in the object's current state */
  EDDY_ERR_BACKEND,          /* the compute backend (oneDNN, CUDA) reported a failure */
  /* Bad events: each kind has its own code (counted separately by the dead-letter path). */
  EDDY_ERR_EVENT_NOT_JSON,       /* payload is not a JSON object */
  EDDY_ERR_EVENT_LABEL_MISSING,  /* no "label" */
  EDDY_ERR_EVENT_LABEL_NAN,      /* label is NaN or infinite */
  EDDY_ERR_EVENT_LABEL_RANGE,    /* label out of range for the head */
  EDDY_ERR_EVENT_DENSE_LEN,      /* "dense" has the wrong length */
  EDDY_ERR_EVENT_NONFINITE,      /* a feature or the weight is NaN or infinite */
  EDDY_ERR_EVENT_TOO_LARGE,      /* payload over the event size cap */
  EDDY_ERR_EVENT_TYPE,           /* a field has the wrong JSON type */
  EDDY_ERR__COUNT
} eddy_err_t;

/* Short stable text for an error code ("event label out of range"). */
const char *eddy_err_str(eddy_err_t err);

/* Machine-friendly name for an error code ("event_label_range"), used as a metric label / reason. */
const char *eddy_err_name(eddy_err_t err);

/* True for the EDDY_ERR_EVENT_* codes: one bad record, after which the caller goes on. */
int eddy_err_is_bad_event(eddy_err_t err);

/* snprintf into errstr when errstr is non-NULL and errstr_size > 0; returns err, so that
 * `return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "open %s: %s", path, strerror(errno));` reads. */
eddy_err_t eddy_errf(eddy_err_t err, char *errstr, size_t errstr_size, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
