/* Text for eddy_err_t codes. */
#include "core/errors.h"

#include <stdarg.h>
#include <stdio.h>

static const struct {
  const char *name;
  const char *text;
} err_table[EDDY_ERR__COUNT] = {
    [EDDY_OK] = {"ok", "success"},
    [EDDY_ERR_INVALID_ARG] = {"invalid_arg", "invalid argument"},
    [EDDY_ERR_NOMEM] = {"nomem", "out of memory"},
    [EDDY_ERR_IO] = {"io", "input/output error"},
    [EDDY_ERR_FORMAT] = {"format", "bad format"},
    [EDDY_ERR_TOO_LARGE] = {"too_large", "too large"},
    [EDDY_ERR_UNSUPPORTED] = {"unsupported", "not supported"},
    [EDDY_ERR_NOT_FOUND] = {"not_found", "not found"},
    [EDDY_ERR_CONFIG] = {"config", "configuration error"},
    [EDDY_ERR_NONFINITE] = {"nonfinite", "NaN or Inf value"},
    [EDDY_ERR_SHAPE] = {"shape", "shape mismatch"},
    [EDDY_ERR_STATE] = {"state", "invalid state"},
    [EDDY_ERR_BACKEND] = {"backend", "compute backend failure"},
    [EDDY_ERR_EVENT_NOT_JSON] = {"event_not_json", "event is not a JSON object"},
    [EDDY_ERR_EVENT_LABEL_MISSING] = {"event_label_missing", "event has no label"},
    [EDDY_ERR_EVENT_LABEL_NAN] = {"event_label_nan", "event label is NaN or infinite"},
    [EDDY_ERR_EVENT_LABEL_RANGE] = {"event_label_range", "event label out of range"},
    [EDDY_ERR_EVENT_DENSE_LEN] = {"event_dense_len", "event dense features have the wrong length"},
    [EDDY_ERR_EVENT_NONFINITE] = {"event_nonfinite", "event has a NaN or infinite value"},
    [EDDY_ERR_EVENT_TOO_LARGE] = {"event_too_large", "event over the size cap"},
    [EDDY_ERR_EVENT_TYPE] = {"event_type", "event field has the wrong type"},
};

const char *eddy_err_str(eddy_err_t err) {
  if ((int)err < 0 || err >= EDDY_ERR__COUNT || !err_table[err].text) return "unknown error";
  return err_table[err].text;
}

const char *eddy_err_name(eddy_err_t err) {
  if ((int)err < 0 || err >= EDDY_ERR__COUNT || !err_table[err].name) return "unknown";
  return err_table[err].name;
}

int eddy_err_is_bad_event(eddy_err_t err) {
  return err >= EDDY_ERR_EVENT_NOT_JSON && err <= EDDY_ERR_EVENT_TYPE;
}

eddy_err_t eddy_errf(eddy_err_t err, char *errstr, size_t errstr_size, const char *fmt, ...) {
  if (errstr && errstr_size > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr, errstr_size, fmt, ap);
    va_end(ap);
  }
  return err;
}
