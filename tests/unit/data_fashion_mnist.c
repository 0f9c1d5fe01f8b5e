/* Tests of the real Fashion-MNIST files of the Debian package dataset-fashion-mnist: counts, the
 * first labels and pixels (looked up independently with Python's gzip module), scaling, ids,
 * progress, and load time. Skipped (exit 77) when the package files are absent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "data/dataset.h"

static const char *const fmnist_files[] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                           "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};

static eddy_event_schema_t fmnist_schema(void) {
  eddy_event_schema_t s = {.dense_dim = 784, .hash_bits = 0, .head = EDDY_HEAD_SOFTMAX, .classes = 10};
  return s;
}

typedef struct {
  const char *name;
  int64_t count;
  uint8_t first_labels[20];
  int first_image_sum; /* sum of the raw pixels of image 0 */
  int first_nonzero;   /* nonzero pixels of image 0 */
  int probe_index;     /* a pixel of image 0 and its raw value */
  int probe_value;
  int last_label;
  int last_image_sum;
} split_facts_t;

static void check_split(const split_facts_t *f) {
  eddy_event_schema_t s = fmnist_schema();
  char err[512] = "";
  double t0 = eddy_clock_mono_s();
  eddy_dataset_t *ds = eddy_dataset_new(f->name, &s, err, sizeof err);
  if (!ds) print_error("%s\n", err);
  assert_non_null(ds);
  assert_int_equal(eddy_dataset_size(ds), f->count);
  eddy_event_t ev;
  eddy_event_init(&ev);
  int64_t n = 0;
  int last_label = -1, last_sum = -1;
  int class_count[10] = {0};
  for (;;) {
    bool eof = false;
    assert_int_equal(eddy_dataset_next(ds, &ev, &eof, err, sizeof err), EDDY_OK);
    if (eof) break;
    assert_int_equal(ev.n_dense, 784);
    assert_true(ev.label >= 0 && ev.label <= 9);
    class_count[(int)ev.label]++;
    if (n < 20) assert_true(ev.label == f->first_labels[n]);
    if (n == 0) {
      char id[64];
      snprintf(id, sizeof id, "fmnist-%s-000000", strchr(f->name, ':') + 1);
      assert_string_equal(ev.id, id);
      assert_true(ev.dense[f->probe_index] == (float)f->probe_value / 255.0f);
      double sum = 0;
      int nonzero = 0;
      for (int k = 0; k < 784; k++) {
        assert_true(ev.dense[k] >= 0.0f && ev.dense[k] <= 1.0f);
        sum += ev.dense[k] * 255.0f;
        nonzero += ev.dense[k] != 0.0f;
      }
      assert_int_equal((int)(sum + 0.5), f->first_image_sum);
      assert_int_equal(nonzero, f->first_nonzero);
    }
    if (n == f->count / 2) {
      double p = eddy_dataset_progress(ds);
      assert_true(p > 0.49 && p < 0.51);
    }
    last_label = (int)ev.label;
    double sum = 0;
    for (int k = 0; k < 784; k++) sum += ev.dense[k] * 255.0f;
    last_sum = (int)(sum + 0.5);
    n++;
  }
  double seconds = eddy_clock_mono_s() - t0;
  assert_int_equal(n, f->count);
  assert_int_equal(last_label, f->last_label);
  assert_int_equal(last_sum, f->last_image_sum);
  for (int c = 0; c < 10; c++) assert_int_equal(class_count[c], f->count / 10); /* balanced classes */
  assert_true(eddy_dataset_progress(ds) == 1.0);
  printf("# %s: %lld events read in %.3f s\n", f->name, (long long)n, seconds);
  eddy_event_free(&ev);
  eddy_dataset_destroy(ds);
}

static void test_train(void **state) {
  (void)state;
  const split_facts_t f = {"fashion-mnist:train",
                           60000,
                           {9, 0, 0, 3, 0, 2, 7, 2, 5, 5, 0, 9, 5, 5, 7, 9, 1, 0, 6, 4},
                           76247,
                           433,
                           404,
                           237,
                           5,
                           16684};
  check_split(&f);
}

static void test_test(void **state) {
  (void)state;
  const split_facts_t f = {"fashion-mnist:test",
                           10000,
                           {9, 2, 1, 1, 6, 1, 4, 6, 5, 7, 4, 5, 7, 3, 4, 1, 2, 4, 8, 0},
                           33456,
                           267,
                           400,
                           1,
                           5,
                           24390};
  check_split(&f);
}

int main(void) {
  unsetenv("EDDY_FASHION_MNIST_DIR");
  for (size_t i = 0; i < sizeof fmnist_files / sizeof fmnist_files[0]; i++) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", EDDY_FASHION_MNIST_DEFAULT_DIR, fmnist_files[i]);
    if (access(path, R_OK) != 0) {
      printf("skipped: %s is absent (install dataset-fashion-mnist)\n", path);
      return 77;
    }
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_train),
      cmocka_unit_test(test_test),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
