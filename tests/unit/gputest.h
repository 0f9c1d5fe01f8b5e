/* A minimal test harness for the GPU tests (tests/unit/gpu_*.c): they must build on the GPU
 * machine, whose image may lack cmocka. GT_CHECK fails the current test with file:line and a
 * message; gt_main runs the tests (all, or those --only / --skip name, comma-separated), prints one
 * line per test and "N passed, N failed" last, line-buffered so that a crash loses nothing, and
 * exits 77 with the reason when no CUDA device is usable (EDDY_GPU_TEST_DEVICE=cpu runs the tests
 * CPU against CPU instead: a self-check of the test code). Header-only, one test program per file. */
#ifndef EDDY_GPUTEST_H
#define EDDY_GPUTEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "cuda/cuda.h"
#include "model/learner_backend.h"

static int gt_failed_now;

#define GT_CHECK(cond, ...)                                                                                            \
  do {                                                                                                                 \
    if (!(cond)) {                                                                                                     \
      fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);                                         \
      fprintf(stderr, __VA_ARGS__);                                                                                    \
      fputc('\n', stderr);                                                                                             \
      gt_failed_now = 1;                                                                                               \
      return;                                                                                                          \
    }                                                                                                                  \
  } while (0)

#define GT_OK(call) GT_CHECK((call) == EDDY_OK, "%s", "call did not return EDDY_OK")

typedef struct {
  const char *name;
  void (*fn)(void);
} gt_test_t;

#define GT_TEST(fn)                                                                                                    \
  { #fn, fn }

/* ||a - b|| / ||b|| over n floats (||a - b|| when b is all zeros); NaN anywhere gives Inf. */
static inline double gt_norm_err(const float *a, const float *b, size_t n) {
  double d = 0, r = 0;
  for (size_t i = 0; i < n; i++) {
    if (isnan(a[i]) || isnan(b[i])) return INFINITY;
    double x = (double)a[i] - (double)b[i];
    d += x * x;
    r += (double)b[i] * b[i];
  }
  return r > 0 ? sqrt(d / r) : sqrt(d);
}

/* Whether name is one of the comma-separated names in list. */
static inline int gt_listed(const char *list, const char *name) {
  const size_t len = strlen(name);
  for (const char *p = list; *p;) {
    const char *end = strchr(p, ',');
    const size_t n = end ? (size_t)(end - p) : strlen(p);
    if (n == len && !strncmp(p, name, n)) return 1;
    p += n + (end ? 1 : 0);
  }
  return 0;
}

/* Runs tests[] as argv says: no arguments, all of them; --only a,b or --skip a,b by name. Exit
 * status: 0 all passed, 1 a test failed, 2 bad arguments (an unknown test name is an error, never a
 * silent no-op), 77 no CUDA device. */
static inline int gt_main(const char *program, const gt_test_t *tests, size_t n, int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  setvbuf(stderr, NULL, _IOLBF, 0);
  const char *only = NULL, *skip = NULL;
  for (int a = 1; a < argc; a++) {
    if (!strcmp(argv[a], "--only") && a + 1 < argc)
      only = argv[++a];
    else if (!strcmp(argv[a], "--skip") && a + 1 < argc)
      skip = argv[++a];
    else {
      fprintf(stderr, "%s: unknown argument \"%s\" (usage: %s [--only NAME,...] [--skip NAME,...])\n", program,
              argv[a], program);
      return 2;
    }
  }
  const char *lists[2] = {only, skip};
  for (int k = 0; k < 2; k++) {
    for (const char *p = lists[k]; p && *p;) {
      const char *end = strchr(p, ',');
      const size_t len = end ? (size_t)(end - p) : strlen(p);
      int known = 0;
      for (size_t i = 0; i < n && !known; i++)
        known = strlen(tests[i].name) == len && !strncmp(tests[i].name, p, len);
      if (!known) {
        fprintf(stderr, "%s: no test named \"%.*s\"\n", program, (int)len, p);
        return 2;
      }
      p += len + (end ? 1 : 0);
    }
  }
  char why[256] = "";
  eddy_learner_register(eddy_cuda_backend());
  const char *self_check = getenv("EDDY_GPU_TEST_DEVICE");
  if (self_check && !strcmp(self_check, "cpu"))
    printf("%s: EDDY_GPU_TEST_DEVICE=cpu: checking the test code, CPU against CPU\n", program);
  else if (eddy_cuda_device_count(why, sizeof why) == 0) {
    printf("%s: skipped: no CUDA device: %s\n", program, why);
    return 77;
  }
  size_t passed = 0, failed = 0;
  for (size_t i = 0; i < n; i++) {
    if ((only && !gt_listed(only, tests[i].name)) || (skip && gt_listed(skip, tests[i].name))) continue;
    gt_failed_now = 0;
    printf("[ START] %s\n", tests[i].name);
    double t0 = eddy_clock_mono_s();
    tests[i].fn();
    printf("[%s] %s (%.2f s)\n", gt_failed_now ? "FAILED" : "    OK", tests[i].name, eddy_clock_mono_s() - t0);
    if (gt_failed_now)
      failed++;
    else
      passed++;
  }
  printf("%s: %zu passed, %zu failed\n", program, passed, failed);
  if (passed + failed == 0) {
    printf("%s: no test selected\n", program);
    return 2;
  }
  return failed ? 1 : 0;
}

#endif
