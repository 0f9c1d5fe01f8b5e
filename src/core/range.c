/* Option limits: range membership, the sentence that states a range, and the fault record that
 * model checks fill and the config loader or a caller's errstr reports. */
#include "core/range.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

bool eddy_range_holds(const eddy_range_t *r, double v) {
  bool lo_ok = (r->open & EDDY_RANGE_OPEN_MIN) ? v > r->min : v >= r->min;
  bool hi_ok = (r->open & EDDY_RANGE_OPEN_MAX) ? v < r->max : v <= r->max;
  return lo_ok && hi_ok;
}

/* Whole bounds in plain digits (1000000000, not 1e+09); others as %g. */
static void format_bound(double b, char *out, size_t n) {
  if (b == floor(b) && fabs(b) < 1e15)
    snprintf(out, n, "%.0f", b);
  else
    snprintf(out, n, "%g", b);
}

const char *eddy_range_reason(const eddy_range_t *r, char *why, size_t why_size) {
  char lo[32], hi[32];
  format_bound(r->min, lo, sizeof lo);
  format_bound(r->max, hi, sizeof hi);
  if (!r->open)
    snprintf(why, why_size, "must be between %s and %s", lo, hi);
  else
    snprintf(why, why_size, "must be %s %s and %s %s", (r->open & EDDY_RANGE_OPEN_MIN) ? ">" : ">=", lo,
             (r->open & EDDY_RANGE_OPEN_MAX) ? "<" : "<=", hi);
  return why;
}

void eddy_fault_clear(eddy_fault_t *f) { memset(f, 0, sizeof *f); }

void eddy_fault_key(eddy_fault_t *f, const char *key, const char *fmt, ...) {
  size_t i = 0;
  while (i < EDDY_FAULT_KEYS && f->keys[i]) i++;
  if (i == EDDY_FAULT_KEYS) return;
  f->keys[i] = key;
  size_t used = strlen(f->values);
  if (used + 1 >= sizeof f->values) return;
  used += (size_t)snprintf(f->values + used, sizeof f->values - used, "%s%s = ", i ? ", " : "", key);
  if (used + 1 >= sizeof f->values) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(f->values + used, sizeof f->values - used, fmt, ap);
  va_end(ap);
}

eddy_err_t eddy_fault_why(eddy_fault_t *f, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(f->why, sizeof f->why, fmt, ap);
  va_end(ap);
  return EDDY_ERR_CONFIG;
}

eddy_err_t eddy_fault_range(eddy_fault_t *f, const eddy_range_t *r) {
  eddy_range_reason(r, f->why, sizeof f->why);
  return EDDY_ERR_CONFIG;
}

eddy_err_t eddy_range_check_all(const eddy_bounded_t *opts, size_t n, eddy_fault_t *f) {
  eddy_fault_clear(f);
  for (size_t i = 0; i < n; i++) {
    if (!eddy_range_holds(opts[i].range, opts[i].value)) {
      eddy_fault_key(f, opts[i].key, "%g", opts[i].value);
      return eddy_fault_range(f, opts[i].range);
    }
  }
  return EDDY_OK;
}

eddy_err_t eddy_fault_message(const eddy_fault_t *f, char *errstr, size_t errstr_size) {
  return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "%s: %s", f->values, f->why);
}
