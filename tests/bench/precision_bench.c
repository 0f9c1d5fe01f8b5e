/* Serving-precision benchmark (not a test): trains the Fashion-MNIST MLP (784-256-128-10, softmax,
 * Adam) on the training set, writes its weights in every serving precision as the trainer does
 * (fp32, bf16, fp16, int8 calibrated on 2000 training images), and for each precision reports the
 * test-set accuracy against fp32, the weight bytes (file and memory), and one thread's latency
 * (p50, p99) and predictions per second at batch 1 and batch 32, with the CPU and the kernel each
 * precision ran. tests/bench/run-precision builds and runs it; docs/benchmarks.md has the numbers.
 *   bench_precision [--epochs N] [--seconds S] [--all-kernels] [--only PRECISION] [--json] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "data/dataset.h"
#include "model/infer.h"
#include "model/learner.h"
#include "model/quant.h"

#define DIM 784
#define CALIB 2000

static eddy_model_spec_t spec_fmnist(void) {
  return (eddy_model_spec_t){.dense_dim = DIM, .n_hidden = 2, .hidden = {256, 128}, .head = EDDY_HEAD_SOFTMAX,
                             .classes = 10};
}

/* Every event of a Fashion-MNIST split in batches of bs. */
static eddy_batch_t **load(const char *name, size_t bs, size_t *nb, size_t *events) {
  eddy_event_schema_t schema = eddy_model_event_schema(&(eddy_model_spec_t){.dense_dim = DIM, .head = EDDY_HEAD_SOFTMAX,
                                                                            .classes = 10, .n_hidden = 0});
  char err[512];
  eddy_dataset_t *ds = eddy_dataset_new(name, &schema, err, sizeof err);
  if (!ds) {
    fprintf(stderr, "bench_precision: %s\n", err);
    exit(1);
  }
  size_t cap = (size_t)eddy_dataset_size(ds) / bs + 2, n = 0;
  eddy_batch_t **b = calloc(cap, sizeof *b);
  eddy_event_t ev;
  eddy_event_init(&ev);
  bool eof = false;
  *events = 0;
  while (eddy_dataset_next(ds, &ev, &eof, err, sizeof err) == EDDY_OK && !eof) {
    if (!n || b[n - 1]->n == bs) b[n++] = eddy_batch_new(DIM, bs);
    eddy_batch_push(b[n - 1], &ev);
    (*events)++;
  }
  eddy_event_free(&ev);
  eddy_dataset_destroy(ds);
  *nb = n;
  return b;
}

static double accuracy(const eddy_infer_t *m, eddy_batch_t **b, size_t nb, float *scratch, float *pred) {
  size_t right = 0, all = 0;
  char err[256];
  for (size_t i = 0; i < nb; i++) {
    eddy_infer_predict(m, b[i], scratch, pred, err, sizeof err);
    for (size_t e = 0; e < b[i]->n; e++) {
      int best = 0;
      for (int c = 1; c < 10; c++)
        if (pred[e * 10 + c] > pred[e * 10 + best]) best = c;
      right += best == (int)b[i]->label[e];
      all++;
    }
  }
  return (double)right / (double)all;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

typedef struct {
  double p50_ms, p99_ms, per_second;
} timing_t;

static double thread_cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Calls predict on batches cut from the test set for about seconds: the wall-clock latency of every
 * call (p50, p99), and predictions per second of the thread's CPU time (on a shared machine a
 * thread that is descheduled is not charged for the wait; the p99 is). */
static timing_t time_batches(const eddy_infer_t *m, eddy_batch_t **b, size_t nb, double seconds, float *scratch,
                             float *pred) {
  size_t cap = 1 << 21, n = 0, events = 0;
  double *lat = malloc(cap * sizeof *lat), start = eddy_clock_mono_s(), now = start, cpu0 = thread_cpu_s();
  char err[256];
  for (size_t i = 0; now - start < seconds && n < cap; i = (i + 1) % nb, n++) {
    double t0 = eddy_clock_mono_s();
    eddy_infer_predict(m, b[i], scratch, pred, err, sizeof err);
    now = eddy_clock_mono_s();
    lat[n] = now - t0;
    events += b[i]->n;
  }
  const double cpu = thread_cpu_s() - cpu0;
  qsort(lat, n, sizeof *lat, cmp_double);
  timing_t t = {lat[n / 2] * 1e3, lat[n * 99 / 100] * 1e3, (double)events / cpu};
  free(lat);
  return t;
}

static long file_bytes(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static void cpu_name(char *out, size_t size) {
  snprintf(out, size, "unknown CPU");
  FILE *f = fopen("/proc/cpuinfo", "r");
  char line[512];
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, "model name", 10)) {
      const char *v = strchr(line, ':');
      if (v) snprintf(out, size, "%s", v + 2);
      out[strcspn(out, "\n")] = '\0';
      break;
    }
  if (f) fclose(f);
}

int main(int argc, char **argv) {
  int epochs = 2, all_kernels = 0, json = 0, only = -1;
  double seconds = 2.0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--epochs") && i + 1 < argc) epochs = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
    else if (!strcmp(argv[i], "--all-kernels")) all_kernels = 1;
    else if (!strcmp(argv[i], "--json")) json = 1;
    else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
      eddy_infer_precision_t p;
      if (eddy_infer_precision_parse(argv[++i], &p) != 0) {
        fprintf(stderr, "bench_precision: --only %s: not one of fp32, bf16, fp16, int8\n", argv[i]);
        return 2;
      }
      only = (int)p;
    }
    else {
      fprintf(stderr, "usage: bench_precision [--epochs N] [--seconds S] [--all-kernels] [--only PRECISION] [--json]\n");
      return 2;
    }
  }
  eddy_model_spec_t spec = spec_fmnist();
  size_t nb_train, n_train, nb_test1, n_test, nb_test32, n32;
  eddy_batch_t **train = load("fashion-mnist:train", 64, &nb_train, &n_train);
  eddy_batch_t **test1 = load("fashion-mnist:test", 1, &nb_test1, &n_test);
  eddy_batch_t **test32 = load("fashion-mnist:test", 32, &nb_test32, &n32);

  eddy_train_opts_t opts = eddy_train_opts_defaults();
  opts.optimizer = EDDY_OPT_ADAM;
  opts.lr = 1e-3f;
  opts.threads = 1;
  char err[512];
  eddy_learner_t *l = eddy_learner_new(&spec, &opts, "cpu", err, sizeof err);
  if (!l) {
    fprintf(stderr, "bench_precision: %s\n", err);
    return 1;
  }
  double t0 = eddy_clock_mono_s();
  for (int e = 0; e < epochs; e++)
    for (size_t i = 0; i < nb_train; i++) {
      eddy_step_info_t info;
      if (eddy_learner_accumulate(l, train[i], NULL, NULL) != EDDY_OK || eddy_learner_step(l, &info) != EDDY_OK) {
        fprintf(stderr, "bench_precision: training failed: %s\n", eddy_learner_last_error(l));
        return 1;
      }
    }
  double train_s = eddy_clock_mono_s() - t0;

  char dir[] = "/tmp/eddy-bench-precision-XXXXXX", path[EDDY_INFER_PRECISIONS][256];
  if (!mkdtemp(dir)) return 1;
  snprintf(path[EDDY_INFER_F32], sizeof path[0], "%s/fp32.safetensors", dir);
  if (eddy_learner_save_weights(l, path[EDDY_INFER_F32], "F32", NULL, 0, err, sizeof err) != EDDY_OK) {
    fprintf(stderr, "bench_precision: %s\n", err);
    return 1;
  }
  eddy_st_reader_t *fp = eddy_st_reader_new(path[EDDY_INFER_F32], 0, err, sizeof err);
  eddy_infer_t *m32 = eddy_infer_new(&spec, fp, EDDY_INFER_F32, err, sizeof err);
  size_t scratch_n = eddy_infer_scratch_floats(m32, 32) * 2 + 65536;
  float *scratch = malloc(scratch_n * sizeof(float)), *pred = malloc(64 * 10 * sizeof(float));
  /* Calibration on training images, as the trainer calibrates on recent events. */
  eddy_quant_calib_t calib;
  eddy_quant_calib_init(&calib);
  for (size_t i = 0; calib.events < CALIB && i < nb_train; i++)
    eddy_infer_calibrate(m32, train[i], scratch, &calib, err, sizeof err);
  eddy_infer_destroy(m32);
  for (int p = EDDY_INFER_BF16; p < EDDY_INFER_PRECISIONS; p++) {
    eddy_st_writer_t *w = eddy_st_writer_new();
    eddy_err_t e2 = p == EDDY_INFER_INT8
                        ? eddy_quant_write_int8(&spec, fp, &calib, w, err, sizeof err)
                        : eddy_quant_write_float(&spec, fp, p == EDDY_INFER_BF16 ? EDDY_DT_BF16 : EDDY_DT_F16, w, err,
                                                 sizeof err);
    snprintf(path[p], sizeof path[p], "%s/%s.safetensors", dir, eddy_infer_precision_name((eddy_infer_precision_t)p));
    if (!e2) e2 = eddy_st_writer_save(w, path[p], NULL, err, sizeof err);
    eddy_st_writer_destroy(w);
    if (e2) {
      fprintf(stderr, "bench_precision: %s: %s\n", eddy_infer_precision_name((eddy_infer_precision_t)p), err);
      return 1;
    }
  }
  eddy_st_reader_destroy(fp);

  char cpu[256];
  cpu_name(cpu, sizeof cpu);
  if (!json) {
    printf("%s, %ld online CPUs; one thread; Fashion-MNIST 784-256-128-10 trained %d epochs (%.1f s), "
           "int8 calibrated on %d training images\n",
           cpu, sysconf(_SC_NPROCESSORS_ONLN), epochs, train_s, CALIB);
    printf("| precision | kernel | test accuracy | vs fp32 (points) | file bytes | memory bytes | fp32/this "
           "(file) | batch 1 p50 / p99 ms | batch 1 pred/s | batch 32 p50 / p99 ms | batch 32 pred/s | vs fp32 "
           "(batch 32) |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  }
  double acc32 = 0, rate32 = 0;
  long bytes32 = file_bytes(path[EDDY_INFER_F32]);
  static const eddy_infer_precision_t order[] = {EDDY_INFER_F32, EDDY_INFER_F16, EDDY_INFER_BF16, EDDY_INFER_INT8};
  for (int oi = 0; oi < EDDY_INFER_PRECISIONS; oi++) {
    const eddy_infer_precision_t p = order[oi];
    if (only >= 0 && (int)p != only && p != EDDY_INFER_F32) continue; /* fp32 is the reference */
    eddy_st_reader_t *r = eddy_st_reader_new(path[p], 0, err, sizeof err);
    const char *kernels[8];
    size_t nk = eddy_infer_kernels(p, kernels, 8);
    if (!all_kernels) nk = 1;
    for (size_t k = 0; k < nk; k++) {
      eddy_infer_t *m = eddy_infer_new_kernel(&spec, r, p, kernels[k], err, sizeof err);
      if (!m) {
        fprintf(stderr, "bench_precision: %s %s: %s\n", eddy_infer_precision_name(p), kernels[k], err);
        return 1;
      }
      double acc = accuracy(m, test32, nb_test32, scratch, pred);
      timing_t one = time_batches(m, test1, nb_test1, seconds, scratch, pred);
      timing_t b32 = time_batches(m, test32, nb_test32 - 1 /* the last is short */, seconds, scratch, pred);
      if (p == EDDY_INFER_F32) acc32 = acc, rate32 = b32.per_second;
      long bytes = file_bytes(path[p]);
      if (json)
        printf("{\"cpu\":\"%s\",\"precision\":\"%s\",\"kernel\":\"%s\",\"accuracy\":%.4f,\"accuracy_drop\":%.4f,"
               "\"file_bytes\":%ld,\"memory_bytes\":%zu,\"b1_p50_ms\":%.4f,\"b1_p99_ms\":%.4f,\"b1_per_s\":%.0f,"
               "\"b32_p50_ms\":%.4f,\"b32_p99_ms\":%.4f,\"b32_per_s\":%.0f,\"b32_vs_fp32\":%.2f}\n",
               cpu, eddy_infer_precision_name(p), kernels[k], acc, acc32 - acc, bytes, eddy_infer_bytes(m),
               one.p50_ms, one.p99_ms, one.per_second, b32.p50_ms, b32.p99_ms, b32.per_second,
               b32.per_second / rate32);
      else
        printf("| %s | %s | %.4f | %+.2f | %ld | %zu | %.2f× | %.3f / %.3f | %.0f | %.3f / %.3f | %.0f | %.2f× |\n",
               eddy_infer_precision_name(p), kernels[k], acc, (acc - acc32) * 100, bytes, eddy_infer_bytes(m),
               (double)bytes32 / (double)bytes, one.p50_ms, one.p99_ms, one.per_second, b32.p50_ms, b32.p99_ms,
               b32.per_second, b32.per_second / rate32);
      fflush(stdout);
      eddy_infer_destroy(m);
    }
    eddy_st_reader_destroy(r);
    unlink(path[p]);
  }
  rmdir(dir);
  free(scratch);
  free(pred);
  eddy_learner_destroy(l);
  (void)n_test;
  (void)n32;
  return 0;
}
