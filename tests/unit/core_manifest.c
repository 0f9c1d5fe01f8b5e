/* manifest.json: a full round trip (NaN metrics as null, parent none as null), every required field
 * missing or of the wrong type named in the error, size caps, the cap on Kafka offsets, timestamps;
 * the serving precisions and the per-rank positions (both optional: a manifest without them still
 * reads) and their rules. */
#include <math.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "snapshot/manifest.h"
#include "testutil.h"

static bool with_precisions; /* sample() adds fp32, bf16 and int8 with their files */

static void sample(eddy_manifest_t *m) {
  eddy_manifest_init(m);
  m->version = 42;
  m->parent = 41;
  snprintf(m->model, sizeof m->model, "fmnist");
  m->created_at_ms = 1732780800123;
  m->step = 1200;
  m->examples = 76800;
  m->buffer_cursor = 76801;
  assert_int_equal(eddy_manifest_add_offset(m, "events", 0, 38400), EDDY_OK);
  assert_int_equal(eddy_manifest_add_offset(m, "events", 1, 38401), EDDY_OK);
  assert_int_equal(eddy_manifest_add_offset(m, "other.topic", 0, 7), EDDY_OK);
  m->prequential = (eddy_metric_values_t){.logloss = 0.41, .accuracy = 0.85, .mse = NAN, .n = 76800};
  m->holdout = (eddy_metric_values_t){.logloss = 0.375, .accuracy = 0.875, .mse = NAN, .n = 640};
  snprintf(m->precision, sizeof m->precision, "bf16");
  snprintf(m->weights_dtype, sizeof m->weights_dtype, "BF16");
  m->spec.hash_bits = 10;
  m->spec.embed_dim = 4;
  m->spec.dense_dim = 784;
  m->spec.n_hidden = 2;
  m->spec.hidden[0] = 256;
  m->spec.hidden[1] = 128;
  m->spec.head = EDDY_HEAD_SOFTMAX;
  m->spec.classes = 10;
  m->n_files = 2;
  snprintf(m->files[0].name, sizeof m->files[0].name, "weights.safetensors");
  m->files[0].bytes = 123456;
  memset(m->files[0].sha256, 'a', 64);
  snprintf(m->files[1].name, sizeof m->files[1].name, "state.safetensors");
  m->files[1].bytes = 370368;
  memset(m->files[1].sha256, '0', 64);
  m->files[1].sha256[63] = 'f';
  m->status = EDDY_STATUS_PROMOTED;
  snprintf(m->reason, sizeof m->reason, "holdout logloss 0.375 <= 0.380 + 0.02");
  if (!with_precisions) return;
  static const struct {
    eddy_infer_precision_t p;
    const char *file;
    double accuracy;
  } precs[] = {{EDDY_INFER_F32, "weights.safetensors", 0.875},
               {EDDY_INFER_BF16, "weights-bf16.safetensors", 0.87},
               {EDDY_INFER_INT8, "weights-int8.safetensors", 0.8625}};
  for (size_t i = 0; i < 3; i++) {
    eddy_manifest_precision_t *pr = &m->precisions[precs[i].p];
    pr->present = true;
    snprintf(pr->file, sizeof pr->file, "%s", precs[i].file);
    pr->holdout = (eddy_metric_values_t){.logloss = 0.4, .accuracy = precs[i].accuracy, .mse = NAN, .n = 640};
    if (i) {
      eddy_manifest_file_t *f = &m->files[m->n_files++];
      snprintf(f->name, sizeof f->name, "%s", precs[i].file);
      f->bytes = 1000 * i;
      memset(f->sha256, 'b', 64);
    }
  }
  m->precisions[EDDY_INFER_INT8].calibration_events = 1000;
}

static int same_metric(double a, double b) { return (isnan(a) && isnan(b)) || a == b; }

static void test_round_trip(void **state) {
  (void)state;
  eddy_manifest_t m, back;
  sample(&m);
  char *json = NULL, err[512] = "";
  assert_int_equal(eddy_manifest_to_json(&m, &json, err, sizeof err), EDDY_OK);
  assert_non_null(strstr(json, "\"created_at\":\t\"2024-11-28T08:00:00.123Z\""));
  assert_non_null(strstr(json, "\"mse\":\tnull"));
  assert_int_equal(eddy_manifest_parse(json, strlen(json), &back, err, sizeof err), EDDY_OK);
  assert_int_equal(back.version, 42);
  assert_int_equal(back.parent, 41);
  assert_string_equal(back.model, "fmnist");
  assert_int_equal(back.created_at_ms, 1732780800123);
  assert_int_equal(back.step, 1200);
  assert_int_equal(back.examples, 76800);
  assert_int_equal(back.buffer_cursor, 76801);
  assert_int_equal(back.n_offsets, 3);
  for (size_t i = 0; i < 3; i++) {
    assert_string_equal(back.offsets[i].topic, m.offsets[i].topic);
    assert_int_equal(back.offsets[i].partition, m.offsets[i].partition);
    assert_int_equal(back.offsets[i].next_offset, m.offsets[i].next_offset);
  }
  assert_true(same_metric(back.prequential.logloss, 0.41) && same_metric(back.prequential.accuracy, 0.85));
  assert_true(isnan(back.prequential.mse) && isnan(back.holdout.mse));
  assert_true(back.holdout.logloss == 0.375 && back.holdout.n == 640 && back.prequential.n == 76800);
  assert_string_equal(back.precision, "bf16");
  assert_string_equal(back.weights_dtype, "BF16");
  assert_memory_equal(&back.spec, &m.spec, sizeof m.spec);
  assert_int_equal(back.n_files, 2);
  assert_string_equal(back.files[1].name, "state.safetensors");
  assert_int_equal(back.files[1].bytes, 370368);
  assert_string_equal(back.files[1].sha256, m.files[1].sha256);
  assert_non_null(eddy_manifest_file(&back, "weights.safetensors"));
  assert_null(eddy_manifest_file(&back, "nope"));
  assert_int_equal(back.status, EDDY_STATUS_PROMOTED);
  assert_string_equal(back.reason, m.reason);
  /* Writing what was read gives the same text. */
  char *again = NULL;
  assert_int_equal(eddy_manifest_to_json(&back, &again, err, sizeof err), EDDY_OK);
  assert_string_equal(json, again);
  free(again);
  free(json);
  /* No parent is JSON null, and reads back as 0. */
  m.parent = 0;
  assert_int_equal(eddy_manifest_to_json(&m, &json, err, sizeof err), EDDY_OK);
  assert_non_null(strstr(json, "\"parent\":\tnull"));
  eddy_manifest_clear(&back);
  assert_int_equal(eddy_manifest_parse(json, strlen(json), &back, err, sizeof err), EDDY_OK);
  assert_int_equal(back.parent, 0);
  /* copy is deep */
  eddy_manifest_t copy;
  assert_int_equal(eddy_manifest_copy(&copy, &back), EDDY_OK);
  assert_ptr_not_equal(copy.offsets, back.offsets);
  assert_string_equal(copy.offsets[2].topic, "other.topic");
  eddy_manifest_clear(&copy);
  free(json);
  eddy_manifest_clear(&back);
  eddy_manifest_clear(&m);
  eddy_manifest_clear(NULL);
}

/* JSON of the sample with one edit applied by fn; parse must fail with code and name field. */
typedef void (*edit_fn)(cJSON *root, const char *arg);

static void expect_bad(edit_fn fn, const char *arg, eddy_err_t code, const char *needle) {
  eddy_manifest_t m;
  sample(&m);
  char *json = NULL, err[512] = "";
  assert_int_equal(eddy_manifest_to_json(&m, &json, err, sizeof err), EDDY_OK);
  eddy_manifest_clear(&m);
  cJSON *root = cJSON_Parse(json);
  free(json);
  fn(root, arg);
  json = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  eddy_err_t got = eddy_manifest_parse(json, strlen(json), &m, err, sizeof err);
  if (got != code || !strstr(err, needle))
    fail_msg("edit %s: got %s \"%s\", want %s naming %s", arg, eddy_err_name(got), err, eddy_err_name(code), needle);
  eddy_manifest_clear(&m);
  free(json);
}

/* arg: "a.b.c" path; deletes the last element. */
static cJSON *walk(cJSON *root, char *path, char **last) {
  cJSON *o = root;
  char *save = NULL, *tok = strtok_r(path, "/", &save), *next;
  while ((next = strtok_r(NULL, "/", &save)) != NULL) {
    o = cJSON_IsArray(o) ? cJSON_GetArrayItem(o, atoi(tok)) : cJSON_GetObjectItemCaseSensitive(o, tok);
    assert_non_null(o);
    tok = next;
  }
  *last = tok;
  return o;
}

static void edit_delete(cJSON *root, const char *arg) {
  char path[128], *last;
  snprintf(path, sizeof path, "%s", arg);
  cJSON *o = walk(root, path, &last);
  assert_non_null(cJSON_GetObjectItemCaseSensitive(o, last));
  cJSON_DeleteItemFromObjectCaseSensitive(o, last);
}

/* arg "path=JSON": replaces the value. */
static void edit_set(cJSON *root, const char *arg) {
  char path[1024], *last;
  snprintf(path, sizeof path, "%s", arg);
  char *eq = strchr(path, '=');
  *eq = 0;
  cJSON *o = walk(root, path, &last);
  cJSON *v = cJSON_Parse(eq + 1);
  assert_non_null(v);
  if (cJSON_IsArray(o)) cJSON_ReplaceItemInArray(o, atoi(last), v);
  else if (cJSON_GetObjectItemCaseSensitive(o, last)) cJSON_ReplaceItemInObjectCaseSensitive(o, last, v);
  else cJSON_AddItemToObject(o, last, v);
}

static void edit_duplicate(cJSON *root, const char *arg) {
  cJSON_AddItemToObject(root, arg, cJSON_CreateNumber(1));
}

static void test_missing_fields(void **state) {
  (void)state;
  static const char *const top[] = {"format", "model", "version", "parent", "status", "reason", "created_at",
                                    "created_at_ms", "step", "examples", "buffer_cursor", "kafka_offsets", "metrics",
                                    "precision", "weights_dtype", "spec", "files"};
  char needle[96];
  for (size_t i = 0; i < sizeof top / sizeof top[0]; i++) {
    snprintf(needle, sizeof needle, "\"%s\" missing", top[i]);
    expect_bad(edit_delete, top[i], EDDY_ERR_FORMAT, needle);
  }
  expect_bad(edit_delete, "metrics/holdout", EDDY_ERR_FORMAT, "\"metrics.holdout\" missing");
  expect_bad(edit_delete, "metrics/holdout/n", EDDY_ERR_FORMAT, "\"metrics.holdout.n\" missing");
  expect_bad(edit_delete, "metrics/prequential/logloss", EDDY_ERR_FORMAT, "\"metrics.prequential.logloss\" missing");
  expect_bad(edit_delete, "files/weights.safetensors/sha256", EDDY_ERR_FORMAT,
             "\"files.weights.safetensors.sha256\" missing");
  expect_bad(edit_delete, "files/state.safetensors/bytes", EDDY_ERR_FORMAT, "\"files.state.safetensors.bytes\" missing");
  expect_bad(edit_delete, "kafka_offsets/1/partition", EDDY_ERR_FORMAT, "\"kafka_offsets[1].partition\" missing");
  expect_bad(edit_delete, "spec/head", EDDY_ERR_FORMAT, "\"spec\"");
}

static void test_wrong_types(void **state) {
  (void)state;
  expect_bad(edit_set, "version=\"42\"", EDDY_ERR_FORMAT, "\"version\" must be a number");
  expect_bad(edit_set, "version=0", EDDY_ERR_FORMAT, "\"version\"");
  expect_bad(edit_set, "step=-1", EDDY_ERR_FORMAT, "\"step\" must be an integer");
  expect_bad(edit_set, "step=1.5", EDDY_ERR_FORMAT, "\"step\" must be an integer");
  expect_bad(edit_set, "examples=1e300", EDDY_ERR_FORMAT, "\"examples\" must be an integer");
  expect_bad(edit_set, "parent=42", EDDY_ERR_FORMAT, "\"parent\"");
  expect_bad(edit_set, "parent=0", EDDY_ERR_FORMAT, "\"parent\" must be null or >= 1");
  expect_bad(edit_set, "format=2", EDDY_ERR_FORMAT, "\"format\" = 2");
  expect_bad(edit_set, "status=\"served\"", EDDY_ERR_FORMAT, "\"status\" must be");
  expect_bad(edit_set, "model=\"../etc\"", EDDY_ERR_FORMAT, "\"model\"");
  expect_bad(edit_set, "reason=7", EDDY_ERR_FORMAT, "\"reason\" must be a string");
  expect_bad(edit_set, "created_at=\"2024-11-28T08:00:01.123Z\"", EDDY_ERR_FORMAT, "\"created_at\" does not match");
  expect_bad(edit_set, "precision=\"fp64\"", EDDY_ERR_FORMAT, "\"precision\"");
  expect_bad(edit_set, "weights_dtype=\"I64\"", EDDY_ERR_FORMAT, "\"weights_dtype\"");
  expect_bad(edit_set, "metrics/holdout/accuracy=\"high\"", EDDY_ERR_FORMAT,
             "\"metrics.holdout.accuracy\" must be a number or null");
  expect_bad(edit_set, "metrics=[]", EDDY_ERR_FORMAT, "\"metrics\" must be an object");
  expect_bad(edit_set, "kafka_offsets={}", EDDY_ERR_FORMAT, "\"kafka_offsets\" must be an array");
  expect_bad(edit_set, "kafka_offsets/0/partition=-3", EDDY_ERR_FORMAT, "\"kafka_offsets[0].partition\"");
  expect_bad(edit_set, "kafka_offsets/0/topic=\"\"", EDDY_ERR_FORMAT, "kafka_offsets[0].topic");
  expect_bad(edit_set, "kafka_offsets/1/partition=0", EDDY_ERR_FORMAT, "lists events/0 twice");
  expect_bad(edit_set,
             "files/weights.safetensors/sha256=\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"",
             EDDY_ERR_FORMAT, "64 lowercase hex");
  expect_bad(edit_set, "files/weights.safetensors/sha256=\"abc\"", EDDY_ERR_FORMAT, "64 lowercase hex");
  expect_bad(edit_set, "files/weights.safetensors/bytes=\"1\"", EDDY_ERR_FORMAT,
             "\"files.weights.safetensors.bytes\" must be a number");
  expect_bad(edit_set, "files/..%2fx={\"bytes\":1,\"sha256\":\"x\"}", EDDY_ERR_FORMAT, "bad file name");
  expect_bad(edit_set, "spec/hidden=[0]", EDDY_ERR_FORMAT, "\"spec\"");
  expect_bad(edit_duplicate, "step", EDDY_ERR_FORMAT, "appears twice");
  /* Unknown fields are ignored (a newer writer may add some without bumping the format). */
  eddy_manifest_t m;
  sample(&m);
  char *json = NULL, err[256];
  assert_int_equal(eddy_manifest_to_json(&m, &json, err, sizeof err), EDDY_OK);
  eddy_manifest_clear(&m);
  cJSON *root = cJSON_Parse(json);
  free(json);
  cJSON_AddStringToObject(root, "future_field", "x");
  json = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  assert_int_equal(eddy_manifest_parse(json, strlen(json), &m, err, sizeof err), EDDY_OK);
  eddy_manifest_clear(&m);
  free(json);
  /* Not JSON at all. */
  assert_int_equal(eddy_manifest_parse("{\"format\": 1,", 13, &m, err, sizeof err), EDDY_ERR_FORMAT);
  assert_non_null(strstr(err, "not valid JSON"));
  assert_int_equal(eddy_manifest_parse("[1]", 3, &m, err, sizeof err), EDDY_ERR_FORMAT);
  eddy_manifest_clear(&m);
  /* A valid manifest followed by anything but whitespace is refused; whitespace is fine. */
  sample(&m);
  assert_int_equal(eddy_manifest_to_json(&m, &json, err, sizeof err), EDDY_OK);
  eddy_manifest_clear(&m);
  size_t n = strlen(json);
  char *longer = malloc(n + 8);
  assert_non_null(longer);
  memcpy(longer, json, n);
  memcpy(longer + n, " \n}junk", 8);
  assert_int_equal(eddy_manifest_parse(longer, n + 8, &m, err, sizeof err), EDDY_ERR_FORMAT);
  assert_non_null(strstr(err, "trailing data after the JSON value"));
  eddy_manifest_clear(&m);
  assert_int_equal(eddy_manifest_parse(longer, n + 2, &m, err, sizeof err), EDDY_OK);
  eddy_manifest_clear(&m);
  free(longer);
  free(json);
}

static void test_writer_checks(void **state) {
  (void)state;
  eddy_manifest_t m;
  char *json = NULL, err[256] = "";
  sample(&m);
  snprintf(m.precision, sizeof m.precision, "fp64");
  assert_int_equal(eddy_manifest_to_json(&m, &json, err, sizeof err), EDDY_ERR_INVALID_ARG);
  assert_null(json);
  assert_non_null(strstr(err, "\"precision\""));
  eddy_manifest_clear(&m);
  sample(&m);
  m.step = EDDY_MANIFEST_MAX_INT + 1;
  assert_int_equal(eddy_manifest_to_json(&m, &json, err, sizeof err), EDDY_ERR_INVALID_ARG);
  assert_non_null(strstr(err, "\"step\""));
  eddy_manifest_clear(&m);
  sample(&m);
  m.spec.hash_bits = 0; /* embed_dim > 0 needs hash_bits 1..30 */
  assert_int_equal(eddy_manifest_to_json(&m, &json, err, sizeof err), EDDY_ERR_INVALID_ARG);
  assert_non_null(strstr(err, "\"spec\""));
  eddy_manifest_clear(&m);
  /* Kafka offsets: bad input refused, a hard cap on the count. */
  eddy_manifest_init(&m);
  assert_int_equal(eddy_manifest_add_offset(&m, "", 0, 0), EDDY_ERR_INVALID_ARG);
  assert_int_equal(eddy_manifest_add_offset(&m, "t", -1, 0), EDDY_ERR_INVALID_ARG);
  assert_int_equal(eddy_manifest_add_offset(&m, "t", 0, -5), EDDY_ERR_INVALID_ARG);
  for (int i = 0; i < EDDY_MANIFEST_MAX_OFFSETS; i++) assert_int_equal(eddy_manifest_add_offset(&m, "t", i, i), EDDY_OK);
  assert_int_equal(eddy_manifest_add_offset(&m, "t", 99999, 0), EDDY_ERR_TOO_LARGE);
  assert_int_equal(m.n_offsets, EDDY_MANIFEST_MAX_OFFSETS);
  eddy_manifest_clear(&m);
  assert_null(m.offsets);
  assert_int_equal(m.n_offsets, 0);
}

static void test_load_and_caps(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir(), err[512] = "";
  eddy_manifest_t m;
  char path[600];
  snprintf(path, sizeof path, "%s/none.json", dir);
  assert_int_equal(eddy_manifest_load(path, &m, err, sizeof err), EDDY_ERR_NOT_FOUND);
  assert_non_null(strstr(err, "none.json"));
  /* A file over the cap is refused before it is read. */
  size_t big = EDDY_MANIFEST_MAX_BYTES + 1;
  char *blob = malloc(big);
  memset(blob, ' ', big);
  free(eddy_test_write_file(dir, "big.json", blob, big));
  snprintf(path, sizeof path, "%s/big.json", dir);
  assert_int_equal(eddy_manifest_load(path, &m, err, sizeof err), EDDY_ERR_TOO_LARGE);
  assert_non_null(strstr(err, "big.json"));
  assert_int_equal(eddy_manifest_parse(blob, big, &m, err, sizeof err), EDDY_ERR_TOO_LARGE);
  free(blob);
  /* A good file loads; a damaged one names the file and the field. */
  sample(&m);
  char *json = NULL;
  assert_int_equal(eddy_manifest_to_json(&m, &json, err, sizeof err), EDDY_OK);
  eddy_manifest_clear(&m);
  free(eddy_test_write_file(dir, "good.json", json, strlen(json)));
  snprintf(path, sizeof path, "%s/good.json", dir);
  assert_int_equal(eddy_manifest_load(path, &m, err, sizeof err), EDDY_OK);
  assert_int_equal(m.version, 42);
  eddy_manifest_clear(&m);
  char *at = strstr(json, "\"step\"");
  memcpy(at, "\"stap\"", 6);
  free(eddy_test_write_file(dir, "bad.json", json, strlen(json)));
  snprintf(path, sizeof path, "%s/bad.json", dir);
  assert_int_equal(eddy_manifest_load(path, &m, err, sizeof err), EDDY_ERR_FORMAT);
  assert_non_null(strstr(err, "bad.json: \"step\" missing"));
  eddy_manifest_clear(&m);
  free(json);
  eddy_test_rmdir(dir);
}

static void test_precisions(void **state) {
  (void)state;
  eddy_manifest_t m, back;
  with_precisions = true;
  sample(&m);
  char *json = NULL, *again = NULL, err[512] = "";
  assert_int_equal(eddy_manifest_to_json(&m, &json, err, sizeof err), EDDY_OK);
  assert_non_null(strstr(json, "\"precisions\":"));
  assert_non_null(strstr(json, "\"calibration_events\":\t1000"));
  assert_int_equal(eddy_manifest_parse(json, strlen(json), &back, err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_manifest_precisions(&back),
                   (1u << EDDY_INFER_F32) | (1u << EDDY_INFER_BF16) | (1u << EDDY_INFER_INT8));
  assert_string_equal(back.precisions[EDDY_INFER_INT8].file, "weights-int8.safetensors");
  assert_true(back.precisions[EDDY_INFER_INT8].holdout.accuracy == 0.8625);
  assert_int_equal(back.precisions[EDDY_INFER_INT8].holdout.n, 640);
  assert_int_equal(back.precisions[EDDY_INFER_INT8].calibration_events, 1000);
  assert_true(isnan(back.precisions[EDDY_INFER_BF16].holdout.mse));
  assert_false(back.precisions[EDDY_INFER_F16].present);
  assert_int_equal(eddy_manifest_precision_of(&back, "weights-bf16.safetensors"), EDDY_INFER_BF16);
  assert_int_equal(eddy_manifest_precision_of(&back, "state.safetensors"), -1);
  assert_int_equal(eddy_manifest_to_json(&back, &again, err, sizeof err), EDDY_OK);
  assert_string_equal(json, again);
  free(again);
  free(json);
  eddy_manifest_clear(&back);
  /* The writer holds the rules too. */
  snprintf(m.precisions[EDDY_INFER_BF16].file, sizeof m.precisions[0].file, "weights-fp16.safetensors");
  assert_int_equal(eddy_manifest_to_json(&m, &json, err, sizeof err), EDDY_ERR_INVALID_ARG);
  assert_non_null(strstr(err, "\"precisions.bf16.file\" = \"weights-fp16.safetensors\" is not listed in \"files\""));
  eddy_manifest_clear(&m);
  expect_bad(edit_set, "precisions/int4={\"file\":\"weights.safetensors\",\"holdout\":{}}", EDDY_ERR_FORMAT,
             "\"precisions\": \"int4\" is not one of fp32, bf16, fp16, int8");
  expect_bad(edit_delete, "precisions/int8/calibration_events", EDDY_ERR_FORMAT,
             "\"precisions.int8.calibration_events\" missing");
  expect_bad(edit_delete, "precisions/bf16/holdout/accuracy", EDDY_ERR_FORMAT,
             "\"precisions.bf16.holdout.accuracy\" missing");
  expect_bad(edit_set, "precisions/bf16/file=3", EDDY_ERR_FORMAT, "\"precisions.bf16.file\" must be a string");
  expect_bad(edit_set, "precisions/fp32/file=\"weights-bf16.safetensors\"", EDDY_ERR_FORMAT,
             "fp32 is weights.safetensors, every other precision has a file of its own");
  expect_bad(edit_set, "precisions/int8/file=\"weights.safetensors\"", EDDY_ERR_FORMAT,
             "\"precisions.int8.file\" = \"weights.safetensors\"");
  expect_bad(edit_set, "precisions/int8/file=\"weights-bf16.safetensors\"", EDDY_ERR_FORMAT,
             "bf16 and int8 name the same file weights-bf16.safetensors");
  expect_bad(edit_set, "precisions/int8/file=\"../x\"", EDDY_ERR_FORMAT, "bad file name");
  expect_bad(edit_set, "precisions=[]", EDDY_ERR_FORMAT, "\"precisions\" must be an object");
  with_precisions = false;
}

#define RANK0 "{\"rank\":0,\"buffer_id\":7,\"cursor\":5,\"examples\":4,\"weights_xxh3\":null,\"trained_offsets\":[{\"topic\":\"events\",\"partition\":0,\"next_offset\":9}]}"

/* Per-rank positions: a round trip of two ranks, a deep copy, and what parsing refuses. */
static void test_ranks(void **state) {
  (void)state;
  eddy_manifest_t m, back, copy;
  sample(&m);
  assert_int_equal(m.n_ranks, 0); /* none unless added; older manifests have none */
  for (uint32_t r = 0; r < 2; r++) {
    eddy_manifest_rank_t *e = eddy_manifest_add_rank(&m);
    assert_non_null(e);
    e->rank = r;
    e->buffer_id = 999999999999999ull - r;
    e->cursor = 100 + r;
    e->examples = 50 + r;
    snprintf(e->weights_xxh3, sizeof e->weights_xxh3, "00ff00ff00ff00f%u", r);
    assert_int_equal(eddy_manifest_rank_add_offset(e, "events", (int32_t)r, 30 + r), EDDY_OK);
    assert_int_equal(eddy_manifest_rank_add_offset(e, "events", (int32_t)r + 2, 40 + r), EDDY_OK);
  }
  char *json = NULL, err[512] = "";
  assert_int_equal(eddy_manifest_to_json(&m, &json, err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_manifest_parse(json, strlen(json), &back, err, sizeof err), EDDY_OK);
  assert_int_equal(back.n_ranks, 2);
  for (uint32_t r = 0; r < 2; r++) {
    assert_int_equal(back.ranks[r].rank, r);
    assert_int_equal(back.ranks[r].buffer_id, 999999999999999ull - r); /* exact below 10^15 */
    assert_int_equal(back.ranks[r].cursor, 100 + r);
    assert_int_equal(back.ranks[r].examples, 50 + r);
    assert_string_equal(back.ranks[r].weights_xxh3, m.ranks[r].weights_xxh3);
    assert_int_equal(back.ranks[r].n_offsets, 2);
    assert_int_equal(back.ranks[r].offsets[1].partition, (int32_t)r + 2);
    assert_int_equal(back.ranks[r].offsets[1].next_offset, 40 + r);
  }
  char *again = NULL;
  assert_int_equal(eddy_manifest_to_json(&back, &again, err, sizeof err), EDDY_OK);
  assert_string_equal(json, again);
  free(again);
  assert_int_equal(eddy_manifest_copy(&copy, &back), EDDY_OK);
  assert_ptr_not_equal(copy.ranks, back.ranks);
  assert_ptr_not_equal(copy.ranks[1].offsets, back.ranks[1].offsets);
  assert_int_equal(copy.ranks[1].offsets[0].next_offset, 31);
  eddy_manifest_clear(&copy);
  eddy_manifest_clear(&back);
  /* The writer checks the same rules: a partition trained by two ranks. */
  m.ranks[1].offsets[0].partition = 0;
  free(json);
  json = NULL;
  assert_int_equal(eddy_manifest_to_json(&m, &json, err, sizeof err), EDDY_ERR_INVALID_ARG);
  assert_non_null(strstr(err, "lists events/0 twice"));
  eddy_manifest_clear(&m);
  /* What parsing refuses, each named. */
  expect_bad(edit_set, "ranks={}", EDDY_ERR_FORMAT, "\"ranks\" must be an array");
  expect_bad(edit_set, "ranks=[" RANK0 "," RANK0 "]", EDDY_ERR_FORMAT, "\"ranks[1].rank\" = 0: must be 1");
  expect_bad(edit_set, "ranks=[{\"rank\":0}]", EDDY_ERR_FORMAT, "\"ranks[0].buffer_id\" missing");
  expect_bad(edit_set,
             "ranks=[{\"rank\":0,\"buffer_id\":0,\"cursor\":5,\"examples\":4,\"weights_xxh3\":null,"
             "\"trained_offsets\":[]}]",
             EDDY_ERR_FORMAT, "\"ranks[0]\": buffer_id 0");
  expect_bad(edit_set,
             "ranks=[{\"rank\":0,\"buffer_id\":7,\"cursor\":5,\"examples\":4,\"weights_xxh3\":\"XYZ\","
             "\"trained_offsets\":[]}]",
             EDDY_ERR_FORMAT, "\"ranks[0].weights_xxh3\"");
  expect_bad(edit_set,
             "ranks=[{\"rank\":0,\"buffer_id\":7,\"cursor\":5,\"examples\":4,\"weights_xxh3\":null}]",
             EDDY_ERR_FORMAT, "\"ranks[0].trained_offsets\" missing");
  expect_bad(edit_set,
             "ranks=[{\"rank\":0,\"buffer_id\":7,\"cursor\":5,\"examples\":4,\"weights_xxh3\":null,"
             "\"trained_offsets\":[{\"topic\":\"events\",\"partition\":-1,\"next_offset\":9}]}]",
             EDDY_ERR_FORMAT, "ranks[0].trained_offsets[0].partition");
  expect_bad(edit_set,
             "ranks=[" RANK0 ",{\"rank\":1,\"buffer_id\":8,\"cursor\":5,\"examples\":4,\"weights_xxh3\":null,"
             "\"trained_offsets\":[{\"topic\":\"events\",\"partition\":0,\"next_offset\":3}]}]",
             EDDY_ERR_FORMAT, "lists events/0 twice");
}

static void test_time_and_status(void **state) {
  (void)state;
  char when[40];
  eddy_manifest_format_time(0, when, sizeof when);
  assert_string_equal(when, "1970-01-01T00:00:00.000Z");
  eddy_manifest_format_time(1732780800123, when, sizeof when);
  assert_string_equal(when, "2024-11-28T08:00:00.123Z");
  eddy_version_status_t s;
  assert_int_equal(eddy_version_status_parse("rejected", &s), 0);
  assert_int_equal(s, EDDY_STATUS_REJECTED);
  assert_int_equal(eddy_version_status_parse("Rejected", &s), -1);
  assert_string_equal(eddy_version_status_name(EDDY_STATUS_CANDIDATE), "candidate");
  assert_string_equal(eddy_version_status_name((eddy_version_status_t)9), "unknown");
}

/* The gate's record: written when present, read back exactly (null numbers as NaN), absent in
 * older manifests; its fields are checked like the others. */
static void test_gate_verdict(void **state) {
  (void)state;
  eddy_manifest_t m, back;
  sample(&m);
  char *json = NULL, err[512] = "";
  assert_int_equal(eddy_manifest_to_json(&m, &json, err, sizeof err), EDDY_OK);
  assert_null(strstr(json, "\"gate\""));
  assert_int_equal(eddy_manifest_parse(json, strlen(json), &back, err, sizeof err), EDDY_OK);
  assert_false(back.gate.present);
  char *g = eddy_manifest_gate_json(&back);
  assert_string_equal(g, "null");
  free(g);
  free(json);
  eddy_manifest_clear(&back);

  snprintf(m.gate.metric, sizeof m.gate.metric, "logloss");
  m.gate.current = 40;
  m.gate.events = 1840;
  m.gate.from_seq = 1000;
  m.gate.to_seq = 76790;
  eddy_manifest_add_criterion(&m, "finite", EDDY_CRITERION_PASSED, 0, NAN, 0.41, 0);
  eddy_manifest_add_criterion(&m, "vs_prior", EDDY_CRITERION_PASSED, 0.41, 2.29, 0.80, 0.01);
  eddy_manifest_add_criterion(&m, "vs_current", EDDY_CRITERION_FAILED, 0.41, 0.38, 0.035, 0.02);
  eddy_manifest_add_criterion(&m, "validation", EDDY_CRITERION_SKIPPED, 0.5, NAN, NAN, 0.02);
  assert_true(m.gate.present);
  assert_int_equal(eddy_manifest_to_json(&m, &json, err, sizeof err), EDDY_OK);
  assert_int_equal(eddy_manifest_parse(json, strlen(json), &back, err, sizeof err), EDDY_OK);
  assert_true(back.gate.present);
  assert_string_equal(back.gate.metric, "logloss");
  assert_int_equal(back.gate.current, 40);
  assert_int_equal(back.gate.events, 1840);
  assert_int_equal(back.gate.from_seq, 1000);
  assert_int_equal(back.gate.to_seq, 76790);
  assert_int_equal(back.gate.n_criteria, 4);
  assert_string_equal(back.gate.criteria[2].name, "vs_current");
  assert_int_equal(back.gate.criteria[2].result, EDDY_CRITERION_FAILED);
  assert_true(back.gate.criteria[2].candidate == 0.41 && back.gate.criteria[2].reference == 0.38);
  assert_true(back.gate.criteria[2].value == 0.035 && back.gate.criteria[2].limit == 0.02);
  assert_true(isnan(back.gate.criteria[0].reference) && isnan(back.gate.criteria[3].value));
  assert_int_equal(back.gate.criteria[3].result, EDDY_CRITERION_SKIPPED);
  char *again = NULL;
  assert_int_equal(eddy_manifest_to_json(&back, &again, err, sizeof err), EDDY_OK);
  assert_string_equal(json, again);
  free(again);
  g = eddy_manifest_gate_json(&back);
  assert_non_null(strstr(g, "\"name\":\"vs_current\",\"result\":\"failed\""));
  free(g);
  eddy_manifest_clear(&back);

  /* Bad records, each named. */
  static const struct {
    const char *from, *to, *needle;
  } edits[] = {
      {"\"result\":\t\"failed\"", "\"result\":\t\"maybe\"", "gate.criteria[2].result"},
      {"\"metric\":\t\"logloss\"", "\"metric\":\t\"hinge\"", "gate.metric"},
      {"\"current\":\t40", "\"current\":\t42", "gate.current"},
      {"\"holdout_seqs\":\t[1000, 76790]", "\"holdout_seqs\":\t[1000]", "gate.holdout_seqs"},
      {"\"name\":\t\"vs_prior\"", "\"name\":\t\"Vs Prior\"", "gate.criteria[1].name"},
      {"\"limit\":\t0.02", "\"limit\":\t\"0.02\"", "gate.criteria[2].limit"},
      {"\"events\":\t1840", "\"events\":\t-1", "gate.events"},
  };
  for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
    const char *at = strstr(json, edits[i].from);
    if (!at) print_error("\"%s\" not in the manifest\n", edits[i].from);
    assert_non_null(at);
    size_t pre = (size_t)(at - json), fl = strlen(edits[i].from), tl = strlen(edits[i].to);
    char *bad = malloc(strlen(json) - fl + tl + 1);
    memcpy(bad, json, pre);
    memcpy(bad + pre, edits[i].to, tl);
    strcpy(bad + pre + tl, at + fl);
    eddy_err_t e = eddy_manifest_parse(bad, strlen(bad), &back, err, sizeof err);
    if (e != EDDY_ERR_FORMAT || !strstr(err, edits[i].needle))
      print_error("edit %zu: %s (want %s)\n", i, err, edits[i].needle);
    assert_int_equal(e, EDDY_ERR_FORMAT);
    assert_non_null(strstr(err, edits[i].needle));
    eddy_manifest_clear(&back);
    free(bad);
  }
  free(json);
  /* Beyond EDDY_MANIFEST_MAX_CRITERIA, criteria are not added. */
  for (int i = 0; i < 10; i++) eddy_manifest_add_criterion(&m, "extra", EDDY_CRITERION_PASSED, 1, 1, 1, 1);
  assert_int_equal(m.gate.n_criteria, EDDY_MANIFEST_MAX_CRITERIA);
  eddy_manifest_clear(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),    cmocka_unit_test(test_missing_fields),
      cmocka_unit_test(test_wrong_types),   cmocka_unit_test(test_writer_checks),
      cmocka_unit_test(test_load_and_caps), cmocka_unit_test(test_time_and_status),
      cmocka_unit_test(test_gate_verdict),

      cmocka_unit_test(test_precisions),
      cmocka_unit_test(test_ranks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
