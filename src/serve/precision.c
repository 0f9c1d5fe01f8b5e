/* Serving-precision choice on a replica (see precision.h). The load state is a small state machine
 * over fixed windows of EDDY_PREC_WINDOW_S: a window whose mean wait for a compute slot is over the
 * target steps down one precision; a window under half the target (or without requests) is calm,
 * and EDDY_PREC_CALM_S of calm windows in a row step back up one precision; anything in between
 * holds. Windows are closed lazily, when a request or a reader comes by. */
#include "serve/precision.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"

#define CALM_WINDOWS ((int)(EDDY_PREC_CALM_S / EDDY_PREC_WINDOW_S + 0.5))
#define DROP_SLACK 1e-9 /* 0.86 - 0.85 is 0.010000000000000009 */

static const char *const why_names[EDDY_PREC_WHY_COUNT] = {"config", "auto", "load", "request"};

const char *eddy_prec_why_name(eddy_prec_why_t why) {
  return (unsigned)why < EDDY_PREC_WHY_COUNT ? why_names[why] : "?";
}

/* The precision of rank r (0 = cheapest), or -1. */
static int of_rank(int r) {
  for (int p = 0; p < EDDY_INFER_PRECISIONS; p++)
    if (eddy_infer_precision_rank((eddy_infer_precision_t)p) == r) return p;
  return -1;
}

static eddy_infer_precision_t most_precise(unsigned held) {
  for (int r = EDDY_INFER_PRECISIONS - 1; r >= 0; r--)
    if (held & (1u << of_rank(r))) return (eddy_infer_precision_t)of_rank(r);
  return EDDY_INFER_F32;
}

int eddy_prec_cheaper(unsigned held, eddy_infer_precision_t base) {
  int n = 0;
  for (int r = 0; r < eddy_infer_precision_rank(base); r++) n += (held >> of_rank(r)) & 1u;
  return n;
}

eddy_infer_precision_t eddy_prec_step_down(unsigned held, eddy_infer_precision_t base, int steps) {
  eddy_infer_precision_t at = base;
  for (int r = eddy_infer_precision_rank(base) - 1; r >= 0 && steps > 0; r--)
    if (held & (1u << of_rank(r))) {
      at = (eddy_infer_precision_t)of_rank(r);
      steps--;
    }
  return at;
}

eddy_prec_base_t eddy_prec_choose(int fixed, double max_drop, unsigned held, const eddy_metric_values_t *measured,
                                  eddy_head_t head) {
  eddy_prec_base_t b;
  memset(&b, 0, sizeof b);
  b.why = fixed >= 0 ? EDDY_PREC_WHY_CONFIG : EDDY_PREC_WHY_AUTO;
  if (fixed >= 0) {
    const char *name = eddy_infer_precision_name((eddy_infer_precision_t)fixed);
    b.precision = held & (1u << fixed) ? (eddy_infer_precision_t)fixed : most_precise(held);
    if (b.precision == (eddy_infer_precision_t)fixed) snprintf(b.text, sizeof b.text, "serve.precision = %s", name);
    else
      snprintf(b.text, sizeof b.text, "serve.precision = %s, which this version does not have: %s", name,
               eddy_infer_precision_name(b.precision));
    return b;
  }
  const bool sq = head == EDDY_HEAD_SQUARED;
  const char *metric = sq ? "mse" : "accuracy";
  const eddy_metric_values_t *ref = &measured[EDDY_INFER_F32];
  const double ref_v = sq ? ref->mse : ref->accuracy;
  if (!(ref->n > 0 && isfinite(ref_v))) {
    b.precision = most_precise(held);
    snprintf(b.text, sizeof b.text, "auto: no fp32 holdout %s in the manifest to compare with: %s", metric,
             eddy_infer_precision_name(b.precision));
    return b;
  }
  char over[160] = "";
  for (int r = 0; r < EDDY_INFER_PRECISIONS; r++) {
    const int p = of_rank(r);
    if (!(held & (1u << p))) continue;
    const char *name = eddy_infer_precision_name((eddy_infer_precision_t)p);
    if (p == EDDY_INFER_F32) {
      b.precision = EDDY_INFER_F32;
      snprintf(b.text, sizeof b.text, "auto: fp32%s%s%s", over[0] ? " (" : "", over, over[0] ? ")" : "");
      return b;
    }
    const double v = sq ? measured[p].mse : measured[p].accuracy;
    if (!(measured[p].n > 0 && isfinite(v))) continue; /* not measured: cannot be judged */
    const double drop = sq ? (ref_v > 0 ? (v - ref_v) / ref_v : v - ref_v) : ref_v - v;
    if (drop <= max_drop + DROP_SLACK) {
      b.precision = (eddy_infer_precision_t)p;
      if (!sq)
        snprintf(b.text, sizeof b.text, "auto: %s, holdout accuracy %.4f, %.4f %s fp32's %.4f (budget %.4f)%s%s",
                 name, v, fabs(drop), drop >= 0 ? "below" : "above", ref_v, max_drop, over[0] ? "; " : "", over);
      else
        snprintf(b.text, sizeof b.text, "auto: %s, holdout mse %.4g, %+.2f%% against fp32's %.4g (budget %.2f%%)%s%s",
                 name, v, drop * 100, ref_v, max_drop * 100, over[0] ? "; " : "", over);
      return b;
    }
    if (!over[0]) {
      if (!sq) snprintf(over, sizeof over, "%s: holdout accuracy %.4f, %.4f below fp32's %.4f, over the budget %.4f",
                        name, v, drop, ref_v, max_drop);
      else snprintf(over, sizeof over, "%s: holdout mse %.4g, %+.2f%% against fp32's %.4g, over the budget %.2f%%",
                    name, v, drop * 100, ref_v, max_drop * 100);
    }
  }
  b.precision = most_precise(held);
  snprintf(b.text, sizeof b.text, "auto: no precision held within the budget, the most precise: %s%s%s%s",
           eddy_infer_precision_name(b.precision), over[0] ? " (" : "", over, over[0] ? ")" : "");
  return b;
}

/* ---- the load state ---- */

void eddy_prec_load_init(eddy_prec_load_t *l, double target_ms, double now_s) {
  memset(l, 0, sizeof *l);
  l->target_ms = target_ms;
  l->window_start = now_s;
}

/* Applies one closed window with n requests and mean wait mean_ms. */
static void close_window(eddy_prec_load_t *l, uint64_t n, double mean_ms, int max_steps) {
  l->last_wait_ms = n ? mean_ms : 0;
  if (n && mean_ms > l->target_ms) {
    l->calm = 0;
    if (l->steps < max_steps) {
      l->steps++;
      l->downs++;
    }
  } else if (!n || mean_ms < l->target_ms / 2) {
    if (++l->calm >= CALM_WINDOWS && l->steps > 0) {
      l->steps--;
      l->ups++;
      l->calm = 0;
    }
  } else {
    l->calm = 0;
  }
  if (l->steps > max_steps) l->steps = max_steps; /* a version with fewer cheaper precisions */
}

int eddy_prec_load_tick(eddy_prec_load_t *l, double now_s, int max_steps) {
  if (l->target_ms <= 0) return 0;
  if (now_s < l->window_start + EDDY_PREC_WINDOW_S) return l->steps;
  close_window(l, l->n, l->n ? l->sum_ms / (double)l->n : 0, max_steps);
  const double next = l->window_start + EDDY_PREC_WINDOW_S;
  const double empty = floor((now_s - next) / EDDY_PREC_WINDOW_S); /* windows that ended with no request */
  for (double i = 0; i < empty && l->steps > 0; i++) close_window(l, 0, 0, max_steps);
  l->window_start = next + (empty > 0 ? empty : 0) * EDDY_PREC_WINDOW_S;
  l->sum_ms = 0;
  l->n = 0;
  return l->steps;
}

void eddy_prec_load_observe(eddy_prec_load_t *l, double wait_ms, double now_s, int max_steps) {
  if (l->target_ms <= 0) return;
  eddy_prec_load_tick(l, now_s, max_steps);
  l->sum_ms += wait_ms;
  l->n++;
}

/* ---- the selector ---- */

struct eddy_prec_selector {
  int fixed;
  unsigned allowed;
  double max_drop, target_ms;
  pthread_mutex_t mu; /* load, busy */
  pthread_cond_t slot_cv;
  eddy_prec_load_t load;
  int max_steps; /* of the version the last request ran on */
  int slots, busy;
};

static int cpu_count(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

eddy_prec_selector_t *eddy_prec_selector_new(const eddy_config_t *cfg, char *errstr, size_t errstr_size) {
  eddy_prec_selector_t *s = calloc(1, sizeof *s);
  if (!s) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
    return NULL;
  }
  eddy_infer_precision_t p;
  s->fixed = eddy_infer_precision_parse(cfg->serve_precision, &p) == 0 ? (int)p : -1;
  s->allowed = cfg->serve_precisions ? cfg->serve_precisions : 1u << EDDY_INFER_F32;
  s->max_drop = cfg->serve_max_accuracy_drop;
  s->target_ms = cfg->serve_latency_target_ms;
  s->slots = cpu_count();
  if (cfg->serve_threads && (int)cfg->serve_threads < s->slots) s->slots = (int)cfg->serve_threads;
  if (s->slots < 1) s->slots = 1;
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->slot_cv, NULL);
  eddy_prec_load_init(&s->load, s->target_ms, eddy_clock_mono_s());
  return s;
}

void eddy_prec_selector_destroy(eddy_prec_selector_t *s) {
  if (!s) return;
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->slot_cv);
  free(s);
}

int eddy_prec_selector_fixed(const eddy_prec_selector_t *s) { return s->fixed; }
unsigned eddy_prec_selector_allowed(const eddy_prec_selector_t *s) { return s->allowed; }
double eddy_prec_selector_max_drop(const eddy_prec_selector_t *s) { return s->max_drop; }
double eddy_prec_selector_target_ms(const eddy_prec_selector_t *s) { return s->target_ms; }

double eddy_prec_enter(eddy_prec_selector_t *s, double *now_s) {
  double t0 = eddy_clock_mono_s();
  if (s->target_ms <= 0) {
    *now_s = t0;
    return 0;
  }
  pthread_mutex_lock(&s->mu);
  while (s->busy >= s->slots) pthread_cond_wait(&s->slot_cv, &s->mu);
  s->busy++;
  pthread_mutex_unlock(&s->mu);
  *now_s = eddy_clock_mono_s();
  return (*now_s - t0) * 1e3;
}

void eddy_prec_leave(eddy_prec_selector_t *s) {
  if (s->target_ms <= 0) return;
  pthread_mutex_lock(&s->mu);
  s->busy--;
  pthread_cond_signal(&s->slot_cv);
  pthread_mutex_unlock(&s->mu);
}

int eddy_prec_pick(eddy_prec_selector_t *s, const eddy_prec_base_t *base, unsigned held, const char *asked,
                   double waited_ms, double now_s, eddy_infer_precision_t *precision, eddy_prec_why_t *reason,
                   char *why, size_t why_size) {
  const int max_steps = eddy_prec_cheaper(held, base->precision);
  int steps = 0;
  if (s->target_ms > 0) {
    pthread_mutex_lock(&s->mu);
    s->max_steps = max_steps;
    eddy_prec_load_observe(&s->load, waited_ms, now_s, max_steps);
    steps = s->load.steps < max_steps ? s->load.steps : max_steps;
    pthread_mutex_unlock(&s->mu);
  }
  if (asked && asked[0]) {
    eddy_infer_precision_t p;
    char list[64];
    if (eddy_infer_precision_parse(asked, &p) != 0 || !(held & (1u << p))) {
      snprintf(why, why_size, "precision \"%.32s\" is %s: this replica holds %s", asked,
               eddy_infer_precision_parse(asked, NULL) == 0 ? "not held here" : "not one of fp32, bf16, fp16, int8",
               eddy_infer_precision_list(held, list, sizeof list));
      return -1;
    }
    *precision = p;
    *reason = EDDY_PREC_WHY_REQUEST;
    return 0;
  }
  *precision = eddy_prec_step_down(held, base->precision, steps);
  *reason = *precision != base->precision ? EDDY_PREC_WHY_LOAD : base->why;
  return 0;
}

eddy_prec_load_info_t eddy_prec_load_info(eddy_prec_selector_t *s, double now_s) {
  eddy_prec_load_info_t info = {.slots = s->slots};
  pthread_mutex_lock(&s->mu);
  info.steps = eddy_prec_load_tick(&s->load, now_s, s->max_steps);
  info.downs = s->load.downs;
  info.ups = s->load.ups;
  info.last_wait_ms = s->load.last_wait_ms;
  pthread_mutex_unlock(&s->mu);
  return info;
}
