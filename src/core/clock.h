/* Clocks, named for what they measure. Monotonic time is for intervals, deadlines and rates (it
 * never jumps); wall time is for timestamps that leave the process (events, manifests, logs,
 * heartbeats) and is compared only with other wall times. */
#ifndef EDDY_CLOCK_H
#define EDDY_CLOCK_H

#include <stdint.h>
#include <time.h>

/* clock's time in milliseconds / seconds; the four helpers below are what callers use. */
static inline int64_t eddy_clock_ms_(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline double eddy_clock_s_(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CLOCK_MONOTONIC in milliseconds / seconds. */
static inline int64_t eddy_clock_mono_ms(void) { return eddy_clock_ms_(CLOCK_MONOTONIC); }
static inline double eddy_clock_mono_s(void) { return eddy_clock_s_(CLOCK_MONOTONIC); }

/* CLOCK_REALTIME (Unix epoch) in milliseconds / seconds. */
static inline int64_t eddy_clock_wall_ms(void) { return eddy_clock_ms_(CLOCK_REALTIME); }
static inline double eddy_clock_wall_s(void) { return eddy_clock_s_(CLOCK_REALTIME); }

/* A struct timespec ms milliseconds from now on clock (CLOCK_MONOTONIC for condition variables
 * set up with pthread_condattr_setclock, CLOCK_REALTIME otherwise): for timed waits. */
static inline struct timespec eddy_clock_deadline(clockid_t clock, int64_t ms) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  ts.tv_sec += (time_t)(ms / 1000);
  ts.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  return ts;
}

#endif
