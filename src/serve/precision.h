/* Which serving precision answers a request on a replica (DESIGN "Serving precision and
 * protocols"). Per version, a base: serve.precision when fixed, or auto: the cheapest precision of
 * serve.precisions the version holds whose holdout accuracy (mse for a squared head) is within
 * serve.max_accuracy_drop of fp32's, from the manifest. Per replica, the load adaptation: requests
 * are processed at most as many at once as there are CPUs (and serve.threads), and when they wait
 * longer than serve.latency_target_ms for a slot, the replica steps down to the next cheaper
 * precision held, and back up one step at a time once the wait has stayed under half the target
 * for EDDY_PREC_CALM_S (hysteresis: it does not flap around the target). Per request, a precision
 * asked for by name. Any protocol front end (/v1/predict, /v2, gRPC) calls eddy_prec_pick. */
#ifndef EDDY_SERVE_PRECISION_H
#define EDDY_SERVE_PRECISION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/errors.h"
#include "model/prequential.h"
#include "model/quant.h"

#define EDDY_PREC_WINDOW_S 0.25 /* the load is judged over windows this long */
#define EDDY_PREC_CALM_S 2.0    /* calm time before each step back up */

/* Why a request ran at its precision: the metric label and the /v1/model text. */
typedef enum {
  EDDY_PREC_WHY_CONFIG = 0, /* serve.precision names it */
  EDDY_PREC_WHY_AUTO,       /* serve.precision = auto chose it for the version */
  EDDY_PREC_WHY_LOAD,       /* stepped down from the base by load */
  EDDY_PREC_WHY_REQUEST,    /* the request asked for it */
  EDDY_PREC_WHY_COUNT
} eddy_prec_why_t;

const char *eddy_prec_why_name(eddy_prec_why_t why); /* "config", "auto", "load", "request" */

/* A version's base precision and the sentence that explains it. */
typedef struct {
  eddy_infer_precision_t precision;
  eddy_prec_why_t why; /* CONFIG or AUTO */
  char text[384];      /* "auto: int8, holdout accuracy 0.8490, 0.0022 below fp32's 0.8512 (budget 0.0100)" */
} eddy_prec_base_t;

/* The base for a version that holds the precisions of mask held (never 0) with the holdout
 * metrics measured[p] (n = 0 or NaN: not measured), for a model with head. fixed: serve.precision
 * (-1 = auto); when the version lacks it, the most precise precision held serves, and text says so. */
eddy_prec_base_t eddy_prec_choose(int fixed, double max_drop, unsigned held, const eddy_metric_values_t *measured,
                                  eddy_head_t head);

/* The precision `steps` cheaper than base among held (the cheapest held when there are fewer). */
eddy_infer_precision_t eddy_prec_step_down(unsigned held, eddy_infer_precision_t base, int steps);
/* How many precisions of held are cheaper than base. */
int eddy_prec_cheaper(unsigned held, eddy_infer_precision_t base);

/* ---- per replica ---- */

typedef struct eddy_prec_selector eddy_prec_selector_t;

/* The replica's selector from cfg's [serve] keys (serve.precision, precisions, max_accuracy_drop,
 * latency_target_ms, threads). NULL + errstr on failure. */
eddy_prec_selector_t *eddy_prec_selector_new(const eddy_config_t *cfg, char *errstr, size_t errstr_size);
void eddy_prec_selector_destroy(eddy_prec_selector_t *s); /* NULL is a no-op */

int eddy_prec_selector_fixed(const eddy_prec_selector_t *s);       /* -1 = auto */
unsigned eddy_prec_selector_allowed(const eddy_prec_selector_t *s); /* serve.precisions */
double eddy_prec_selector_max_drop(const eddy_prec_selector_t *s);
double eddy_prec_selector_target_ms(const eddy_prec_selector_t *s); /* 0: no load adaptation */

/* The precision for one request on a version with base and held, after it waited waited_ms for a
 * compute slot (eddy_prec_enter; the wait feeds the load state at now_s): asked (a name from a
 * header, a body field or a request parameter; NULL or "" = none) when held, else base stepped
 * down by the load. -1 with why ("precision \"int4\" is not one of fp32, bf16, fp16, int8: this
 * replica holds fp32,int8") for a name that is unknown or not held: the caller answers 400. */
int eddy_prec_pick(eddy_prec_selector_t *s, const eddy_prec_base_t *base, unsigned held, const char *asked,
                   double waited_ms, double now_s, eddy_infer_precision_t *precision, eddy_prec_why_t *reason,
                   char *why, size_t why_size);

/* Waits for a compute slot, in which a request is parsed, predicted and answered (only with load
 * adaptation on; otherwise returns 0 at once), and returns the milliseconds waited, which feed the
 * load state through eddy_prec_pick; eddy_prec_leave gives the slot back. *now_s: when it got it. */
double eddy_prec_enter(eddy_prec_selector_t *s, double *now_s);
void eddy_prec_leave(eddy_prec_selector_t *s);

/* The load state at now_s: steps below the base (0 = at the base), steps down and up so far, and
 * the mean wait of the last full window (ms). */
typedef struct {
  int steps;
  uint64_t downs, ups;
  double last_wait_ms;
  int slots;
} eddy_prec_load_info_t;
eddy_prec_load_info_t eddy_prec_load_info(eddy_prec_selector_t *s, double now_s);

/* ---- the load state machine alone (for tests; the selector holds one) ---- */

typedef struct {
  double target_ms, window_start, sum_ms;
  uint64_t n;        /* requests in the current window */
  int steps;         /* below the base */
  int calm;          /* calm windows in a row */
  uint64_t downs, ups;
  double last_wait_ms;
} eddy_prec_load_t;

void eddy_prec_load_init(eddy_prec_load_t *l, double target_ms, double now_s);
/* One request waited wait_ms at now_s. max_steps: how far down the ladder can go now. */
void eddy_prec_load_observe(eddy_prec_load_t *l, double wait_ms, double now_s, int max_steps);
/* Closes the windows that ended by now_s; returns the steps below the base. */
int eddy_prec_load_tick(eddy_prec_load_t *l, double now_s, int max_steps);

#endif
