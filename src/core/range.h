/* Limits of options, each written once where the option is defined: a numeric range with
 * inclusive or exclusive ends and the sentence that states it ("must be > 0 and <= 1000"), and
 * eddy_fault_t, what a failed check is about (the config keys, their values, the rule), so that a
 * check made by the model layer can be reported by the config loader against the FILE:LINE of the
 * key that caused it. */
#ifndef EDDY_RANGE_H
#define EDDY_RANGE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/errors.h"

#define EDDY_RANGE_OPEN_MIN 1u /* min itself is outside the range */
#define EDDY_RANGE_OPEN_MAX 2u /* max itself is outside the range */

typedef struct {
  double min, max;
  unsigned open; /* EDDY_RANGE_OPEN_* bits; 0: both ends belong to the range */
} eddy_range_t;

/* True when v lies in r; false for NaN. */
bool eddy_range_holds(const eddy_range_t *r, double v);

/* Writes the sentence that states r into why and returns why: "must be between 0 and 0.5" (both
 * ends inside) or "must be > 0 and <= 1000"; whole bounds in plain digits (1000000000). */
const char *eddy_range_reason(const eddy_range_t *r, char *why, size_t why_size);

#define EDDY_FAULT_KEYS 4

/* A failed check of options. */
typedef struct {
  const char *keys[EDDY_FAULT_KEYS]; /* config keys whose values break the rule ("model.hidden"),
                                        static strings, the one to blame first; the rest NULL */
  char values[256];                  /* the same keys with their values: "model.classes = 1" */
  char why[256];                     /* the rule, without key or value: "must be >= 0 and < 1" */
} eddy_fault_t;

/* Empties f. */
void eddy_fault_clear(eddy_fault_t *f);

/* Adds key (a static string) and its value, formatted by fmt, to f. */
void eddy_fault_key(eddy_fault_t *f, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sets f's rule from fmt; returns EDDY_ERR_CONFIG, so that `return eddy_fault_why(f, ...);` reads. */
eddy_err_t eddy_fault_why(eddy_fault_t *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Sets f's rule to the sentence of r; returns EDDY_ERR_CONFIG. */
eddy_err_t eddy_fault_range(eddy_fault_t *f, const eddy_range_t *r);

/* One option to check: its config key (a static string), its value and its range. */
typedef struct {
  const char *key;
  double value;
  const eddy_range_t *range;
} eddy_bounded_t;

/* Checks opts[0..n) in order; at the first value outside its range, fills f with that key, value
 * and the range's sentence and returns EDDY_ERR_CONFIG. */
eddy_err_t eddy_range_check_all(const eddy_bounded_t *opts, size_t n, eddy_fault_t *f);

/* Writes f as one message, "train.lr = 0: must be > 0 and <= 1000", into errstr; returns
 * EDDY_ERR_CONFIG. */
eddy_err_t eddy_fault_message(const eddy_fault_t *f, char *errstr, size_t errstr_size);

#endif
