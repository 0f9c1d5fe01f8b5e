/* Configuration loading: defaults == configs/reference.ini, the shipped configs load, every error
 * class yields its exact message, --set overrides, [kafka] passthrough order, value forms
 * (hidden lists, booleans, sizes, inline comments, BOM/CRLF, indentation), the [model] and [train]
 * limits shared with the model layer, and where a key's value came from. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"
#include "testutil.h"

#define CONFIGS_DIR EDDY_SOURCE_DIR "/configs"

static char errstr[1024];

static eddy_err_t load_text(eddy_config_t *cfg, const char *text, const char *const *sets,
                            size_t n_sets) {
  errstr[0] = '\0';
  return eddy_config_load_string(cfg, "t.ini", text, strlen(text), sets, n_sets, errstr,
                                 sizeof errstr);
}

/* Loads text (plus optional sets) expecting EDDY_ERR_CONFIG and exactly message. */
static void expect_error(const char *text, const char *const *sets, size_t n_sets,
                         const char *message) {
  eddy_config_t cfg;
  eddy_err_t err = load_text(&cfg, text, sets, n_sets);
  if (err != EDDY_ERR_CONFIG || strcmp(errstr, message) != 0)
    print_error("input:\n%s\nexpected: %s\n     got: %s (err %d)\n", text, message, errstr, err);
  assert_int_equal(err, EDDY_ERR_CONFIG);
  assert_string_equal(errstr, message);
  eddy_config_free(&cfg);
}

static void expect_ok(eddy_config_t *cfg, const char *text, const char *const *sets,
                      size_t n_sets) {
  eddy_err_t err = load_text(cfg, text, sets, n_sets);
  if (err != EDDY_OK) print_error("input:\n%s\nunexpected error: %s\n", text, errstr);
  assert_int_equal(err, EDDY_OK);
}

static void assert_same_config(const eddy_config_t *a, const eddy_config_t *b) {
  assert_string_equal(a->model_name, b->model_name);
  assert_int_equal(a->spec.hash_bits, b->spec.hash_bits);
  assert_int_equal(a->spec.embed_dim, b->spec.embed_dim);
  assert_int_equal(a->spec.dense_dim, b->spec.dense_dim);
  assert_int_equal(a->spec.n_hidden, b->spec.n_hidden);
  assert_memory_equal(a->spec.hidden, b->spec.hidden, sizeof a->spec.hidden);
  assert_int_equal(a->spec.head, b->spec.head);
  assert_int_equal(a->spec.classes, b->spec.classes);
  assert_string_equal(a->device, b->device);
  assert_int_equal(a->train.precision, b->train.precision);
  assert_int_equal(a->train.optimizer, b->train.optimizer);
  assert_true(a->train.lr == b->train.lr);
  assert_true(a->train.momentum == b->train.momentum);
  assert_true(a->train.beta1 == b->train.beta1);
  assert_true(a->train.beta2 == b->train.beta2);
  assert_true(a->train.eps == b->train.eps);
  assert_true(a->train.weight_decay == b->train.weight_decay);
  assert_true(a->train.clip_norm == b->train.clip_norm);
  assert_int_equal(a->train.seed, b->train.seed);
  assert_int_equal(a->train.threads, b->train.threads);
  assert_int_equal(a->train.allow_tf32, b->train.allow_tf32);
  assert_int_equal(a->train.loss_scale.enabled, b->train.loss_scale.enabled);
  assert_true(a->train.loss_scale.init_scale == b->train.loss_scale.init_scale);
  assert_true(a->train.loss_scale.growth == b->train.loss_scale.growth);
  assert_true(a->train.loss_scale.backoff == b->train.loss_scale.backoff);
  assert_int_equal(a->train.loss_scale.interval, b->train.loss_scale.interval);
  assert_true(a->train.loss_scale.min_scale == b->train.loss_scale.min_scale);
  assert_int_equal(a->batch_size, b->batch_size);
  assert_int_equal(a->accum_steps, b->accum_steps);
  assert_true(a->holdout_fraction == b->holdout_fraction);
  assert_int_equal(a->max_skipped_steps, b->max_skipped_steps);
  assert_int_equal(a->metrics_window, b->metrics_window);
  assert_string_equal(a->topic, b->topic);
  assert_string_equal(a->format, b->format);
  assert_string_equal(a->dlq_topic, b->dlq_topic);
  assert_int_equal(a->max_event_bytes, b->max_event_bytes);
  assert_int_equal(a->n_kafka, b->n_kafka);
  assert_string_equal(a->buffer_path, b->buffer_path);
  assert_int_equal(a->buffer_capacity_events, b->buffer_capacity_events);
  assert_int_equal(a->buffer_capacity_bytes, b->buffer_capacity_bytes);
  assert_int_equal(a->buffer_sync, b->buffer_sync);
  assert_true(a->replay_ratio == b->replay_ratio);
  assert_int_equal(a->replay_strategy, b->replay_strategy);
  assert_int_equal(a->reservoir_size, b->reservoir_size);
  assert_int_equal(a->replay_idle_steps, b->replay_idle_steps);
  assert_string_equal(a->snapshot_store, b->snapshot_store);
  assert_int_equal(a->snapshot_every_steps, b->snapshot_every_steps);
  assert_int_equal(a->snapshot_every_seconds, b->snapshot_every_seconds);
  assert_string_equal(a->snapshot_dtype, b->snapshot_dtype);
  assert_int_equal(a->snapshot_keep, b->snapshot_keep);
  assert_string_equal(a->snapshot_topic, b->snapshot_topic);
  assert_true(a->gate_max_regression == b->gate_max_regression);
  assert_int_equal(a->snapshot_precisions, b->snapshot_precisions);
  assert_string_equal(a->serve_trainer_url, b->serve_trainer_url);
  assert_string_equal(a->serve_store, b->serve_store);
  assert_int_equal(a->serve_poll_seconds, b->serve_poll_seconds);
  assert_int_equal(a->serve_threads, b->serve_threads);
  assert_string_equal(a->serve_grpc_bind, b->serve_grpc_bind);
  assert_string_equal(a->serve_precision, b->serve_precision);
  assert_int_equal(a->serve_precisions, b->serve_precisions);
  assert_true(a->serve_max_accuracy_drop == b->serve_max_accuracy_drop);
  assert_true(a->serve_latency_target_ms == b->serve_latency_target_ms);
  assert_string_equal(a->http_bind, b->http_bind);
  assert_string_equal(a->http_token_file, b->http_token_file);
  assert_int_equal(a->http_max_body_bytes, b->http_max_body_bytes);
  assert_int_equal(a->http_max_connections, b->http_max_connections);
  assert_int_equal(a->http_max_connections_per_client, b->http_max_connections_per_client);
  assert_int_equal(a->http_header_timeout_seconds, b->http_header_timeout_seconds);
}

static void test_defaults_values(void **state) {
  (void)state;
  eddy_config_t d;
  eddy_config_defaults(&d);
  assert_string_equal(d.model_name, "model");
  assert_int_equal(d.spec.hash_bits, 18);
  assert_int_equal(d.spec.embed_dim, 16);
  assert_int_equal(d.spec.n_hidden, 1);
  assert_int_equal(d.spec.hidden[0], 64);
  assert_int_equal(d.spec.head, EDDY_HEAD_LOGISTIC);
  assert_int_equal(d.train.optimizer, EDDY_OPT_ADAM);
  assert_true(d.train.lr == 0.001f);
  assert_true(d.train.loss_scale.init_scale == 65536.0f);
  assert_true(d.train.loss_scale.growth == 2.0f);
  assert_true(d.train.loss_scale.backoff == 0.5f);
  assert_int_equal(d.train.loss_scale.interval, 2000);
  assert_true(d.train.loss_scale.min_scale == 1.0f);
  assert_int_equal(d.buffer_capacity_bytes, 1ull << 30);
  assert_null(d.kafka);
  assert_int_equal(d.n_kafka, 0);
  /* [model] and [train] defaults are the model layer's, not a copy of them. */
  eddy_model_spec_t spec = eddy_model_spec_defaults();
  eddy_train_opts_t train = eddy_train_opts_defaults();
  eddy_scaler_opts_t scaler = eddy_scaler_defaults();
  assert_memory_equal(&d.spec, &spec, sizeof spec);
  assert_memory_equal(&d.train, &train, sizeof train);
  assert_memory_equal(&d.train.loss_scale, &scaler, sizeof scaler);
  /* Loading nothing gives the defaults and passes the cross-key checks. */
  eddy_config_t cfg;
  assert_int_equal(eddy_config_load(&cfg, NULL, NULL, 0, errstr, sizeof errstr), EDDY_OK);
  assert_memory_equal(&cfg, &d, sizeof cfg);
}

static void test_reference_equals_defaults(void **state) {
  (void)state;
  eddy_config_t d, cfg;
  eddy_config_defaults(&d);
  eddy_err_t err =
      eddy_config_load(&cfg, CONFIGS_DIR "/reference.ini", NULL, 0, errstr, sizeof errstr);
  if (err) print_error("%s\n", errstr);
  assert_int_equal(err, EDDY_OK);
  assert_same_config(&cfg, &d);
  assert_memory_equal(&cfg, &d, sizeof cfg);
  eddy_config_free(&cfg);
}

/* Every key that eddy_config_t holds is set (uncommented) in reference.ini, and nothing else. */
static void test_reference_lists_every_key(void **state) {
  (void)state;
  static const char *const expected[] = {"model.name",
                                         "model.hash_bits",
                                         "model.embed_dim",
                                         "model.dense_dim",
                                         "model.hidden",
                                         "model.head",
                                         "model.classes",
                                         "train.device",
                                         "train.precision",
                                         "train.batch_size",
                                         "train.accum_steps",
                                         "train.optimizer",
                                         "train.lr",
                                         "train.momentum",
                                         "train.beta1",
                                         "train.beta2",
                                         "train.eps",
                                         "train.weight_decay",
                                         "train.clip_norm",
                                         "train.seed",
                                         "train.threads",
                                         "train.allow_tf32",
                                         "train.holdout_fraction",
                                         "train.max_skipped_steps",
                                         "train.metrics_window",
                                         "train.drift.threshold",
                                         "train.drift.slack",
                                         "train.loss_scale.init",
                                         "train.loss_scale.growth",
                                         "train.loss_scale.backoff",
                                         "train.loss_scale.interval",
                                         "train.loss_scale.min",
                                         "train.loss_scale.dynamic",
                                         "stream.topic",
                                         "stream.format",
                                         "stream.dlq_topic",
                                         "stream.max_event_bytes",
                                         "buffer.path",
                                         "buffer.capacity_events",
                                         "buffer.capacity_bytes",
                                         "buffer.sync",
                                         "replay.ratio",
                                         "replay.strategy",
                                         "replay.reservoir_size",
                                         "replay.idle_steps",
                                         "snapshot.store",
                                         "snapshot.every_steps",
                                         "snapshot.every_seconds",
                                         "snapshot.dtype",
                                         "snapshot.keep",
                                         "snapshot.topic",
                                         "snapshot.gate.max_regression",
                                         "snapshot.gate.noise_z",
                                         "snapshot.gate.prior_margin",
                                         "snapshot.gate.min_events",
                                         "snapshot.gate.holdout_events",
                                         "snapshot.gate.holdout_max_age",
                                         "snapshot.gate.validation",
                                         "snapshot.gate.validation_max_regression",
                                         "snapshot.precisions",
                                         "serve.trainer_url",
                                         "serve.store",
                                         "serve.poll_seconds",
                                         "serve.threads",
                                         "serve.heartbeat_seconds",
                                         "serve.precision",
                                         "serve.grpc_bind",
                                         "serve.precisions",
                                         "serve.max_accuracy_drop",
                                         "serve.latency_target_ms",
                                         "http.bind",
                                         "http.token_file",
                                         "http.max_body_bytes",
                                         "http.max_connections",
                                         "http.max_connections_per_client",
                                         "http.header_timeout_seconds"};
  size_t n_expected = sizeof expected / sizeof expected[0];
  bool seen[sizeof expected / sizeof expected[0]] = {0};
  FILE *f = fopen(CONFIGS_DIR "/reference.ini", "r");
  assert_non_null(f);
  char line[512], section[64] = "";
  size_t active = 0;
  bool kafka_section = false;
  while (fgets(line, sizeof line, f)) {
    if (line[0] == '#' || line[0] == ';' || line[0] == '\n') continue;
    if (line[0] == '[') {
      assert_int_equal(sscanf(line, "[%63[^]]]", section), 1);
      kafka_section = strcmp(section, "kafka") == 0;
      continue;
    }
    assert_false(kafka_section); /* no [kafka] property is set by default */
    char key[128];
    assert_int_equal(sscanf(line, "%127s =", key), 1);
    char full[200];
    snprintf(full, sizeof full, "%s.%s", section, key);
    size_t i = 0;
    while (i < n_expected && strcmp(expected[i], full) != 0) i++;
    if (i == n_expected) print_error("unexpected key %s in reference.ini\n", full);
    assert_true(i < n_expected);
    assert_false(seen[i]);
    seen[i] = true;
    active++;
  }
  fclose(f);
  for (size_t i = 0; i < n_expected; i++)
    if (!seen[i]) print_error("reference.ini lacks %s\n", expected[i]);
  assert_int_equal(active, n_expected);
  /* The loader knows exactly these keys, so a key added to it must reach reference.ini too. */
  char name[200];
  size_t known = 0;
  for (; eddy_config_key_name(known, name, sizeof name); known++) {
    size_t i = 0;
    while (i < n_expected && strcmp(expected[i], name) != 0) i++;
    if (i == n_expected) print_error("the loader knows %s; reference.ini does not set it\n", name);
    assert_true(i < n_expected);
  }
  assert_int_equal(known, n_expected);
  assert_false(eddy_config_key_name(known, name, sizeof name));
}

static void test_fashion_mnist_loads(void **state) {
  (void)state;
  eddy_config_t cfg;
  eddy_err_t err =
      eddy_config_load(&cfg, CONFIGS_DIR "/fashion-mnist.ini", NULL, 0, errstr, sizeof errstr);
  if (err) print_error("%s\n", errstr);
  assert_int_equal(err, EDDY_OK);
  assert_string_equal(cfg.model_name, "fashion-mnist");
  assert_int_equal(cfg.spec.dense_dim, 784);
  assert_int_equal(cfg.spec.embed_dim, 0);
  assert_int_equal(cfg.spec.n_hidden, 2);
  assert_int_equal(cfg.spec.hidden[0], 256);
  assert_int_equal(cfg.spec.hidden[1], 128);
  assert_int_equal(cfg.spec.head, EDDY_HEAD_SOFTMAX);
  assert_int_equal(cfg.spec.classes, 10);
  assert_int_equal(cfg.train.optimizer, EDDY_OPT_ADAGRAD);
  assert_float_equal(cfg.train.lr, 0.02f, 1e-9);
  assert_int_equal(cfg.batch_size, 16);
  eddy_config_free(&cfg);
}

static void test_errors_per_key(void **state) {
  (void)state;
  expect_error("[trian]\nlr = 0.1\n", NULL, 0, "t.ini:2: trian.lr = \"0.1\": unknown section");
  expect_error("[model]\nname = x\n[bogus]\n[train]\n", NULL, 0,
               "t.ini:3: [bogus]: unknown section");
  expect_error("[bogus]\n", NULL, 0, "t.ini:1: [bogus]: unknown section");
  expect_error("[train]\nlearning_rate = 0.1\n", NULL, 0,
               "t.ini:2: train.learning_rate = \"0.1\": unknown key");
  expect_error("lr = 1\n", NULL, 0, "t.ini:1: lr = \"1\": key outside any [section]");
  expect_error("[train]\n\nlr = abc\n", NULL, 0, "t.ini:3: train.lr = \"abc\": not a number");
  expect_error("[train]\nlr =\n", NULL, 0, "t.ini:2: train.lr = \"\": not a number");
  expect_error("[train]\nlr = 0.1x\n", NULL, 0, "t.ini:2: train.lr = \"0.1x\": not a number");
  expect_error("[train]\nlr = inf\n", NULL, 0, "t.ini:2: train.lr = \"inf\": not a finite number");
  expect_error("[train]\nlr = nan\n", NULL, 0, "t.ini:2: train.lr = \"nan\": not a finite number");
  expect_error("[train]\nlr = 0\n", NULL, 0, "t.ini:2: train.lr = \"0\": must be > 0 and <= 1000");
  expect_error("[train]\neps = 1e-50\n", NULL, 0,
               "t.ini:2: train.eps = \"1e-50\": too small for a 32-bit float");
  expect_error("[train]\nmomentum = 1\n", NULL, 0,
               "t.ini:2: train.momentum = \"1\": must be >= 0 and < 1");
  expect_error("[train]\nholdout_fraction = 0.6\n", NULL, 0,
               "t.ini:2: train.holdout_fraction = \"0.6\": must be between 0 and 0.5");
  expect_error("[model]\nhash_bits = 31\n", NULL, 0,
               "t.ini:2: model.hash_bits = \"31\": must be between 0 and 30");
  expect_error("[train]\nbatch_size = -1\n", NULL, 0,
               "t.ini:2: train.batch_size = \"-1\": must be a whole number between 1 and 1048576");
  expect_error("[train]\nbatch_size = 1.5\n", NULL, 0,
               "t.ini:2: train.batch_size = \"1.5\": must be a whole number between 1 and 1048576");
  expect_error("[train]\nbatch_size = 0\n", NULL, 0,
               "t.ini:2: train.batch_size = \"0\": must be between 1 and 1048576");
  expect_error("[train]\nbatch_size = 12abc\n", NULL, 0,
               "t.ini:2: train.batch_size = \"12abc\": not a number");
  expect_error("[train]\nbatch_size = +5\n", NULL, 0,
               "t.ini:2: train.batch_size = \"+5\": must be a whole number between 1 and 1048576");
  expect_error(
      "[train]\nseed = 18446744073709551616\n", NULL, 0,
      "t.ini:2: train.seed = \"18446744073709551616\": must be a whole number between 0 and "
      "18446744073709551615");
  expect_error("[train]\nprecision = fp64\n", NULL, 0,
               "t.ini:2: train.precision = \"fp64\": expected one of fp32, bf16, fp16");
  expect_error("[train]\noptimizer = lbfgs\n", NULL, 0,
               "t.ini:2: train.optimizer = \"lbfgs\": expected one of sgd, adam, adamw, adagrad");
  expect_error("[model]\nhead = hinge\n", NULL, 0,
               "t.ini:2: model.head = \"hinge\": expected one of logistic, softmax, squared");
  expect_error("[replay]\nstrategy = lifo\n", NULL, 0,
               "t.ini:2: replay.strategy = \"lifo\": expected one of uniform, recent, balanced");
  expect_error("[snapshot]\ndtype = f64\n", NULL, 0,
               "t.ini:2: snapshot.dtype = \"f64\": expected one of F32, F16, BF16");
  expect_error("[stream]\nformat = avro\n", NULL, 0,
               "t.ini:2: stream.format = \"avro\": expected one of json");
  expect_error(
      "[buffer]\nsync = maybe\n", NULL, 0,
      "t.ini:2: buffer.sync = \"maybe\": expected true or false (also 1/0, yes/no, on/off)");
  expect_error(
      "[model]\nname = my model\n", NULL, 0,
      "t.ini:2: model.name = \"my model\": only letters, digits, '_', '.' and '-' are allowed");
  expect_error(
      "[model]\nname = "
      "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij1234\n",
      NULL, 0,
      "t.ini:2: model.name = \"abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij1234\": "
      "longer than 63 bytes");
  expect_error("[buffer]\npath =\n", NULL, 0, "t.ini:2: buffer.path = \"\": must not be empty");
  expect_error("[stream]\ntopic = a/b\n", NULL, 0,
               "t.ini:2: stream.topic = \"a/b\": a Kafka topic name has only letters, digits, '_', "
               "'.' and '-'");
  expect_error("[train]\ndevice = gpu\n", NULL, 0,
               "t.ini:2: train.device = \"gpu\": expected cpu, cuda, cuda:N (N 0..63) or cuda:all");
  expect_error(
      "[train]\ndevice = cuda:64\n", NULL, 0,
      "t.ini:2: train.device = \"cuda:64\": expected cpu, cuda, cuda:N (N 0..63) or cuda:all");
  expect_error("[http]\nbind = localhost\n", NULL, 0,
               "t.ini:2: http.bind = \"localhost\": expected host:port (port 0..65535)");
  expect_error("[http]\nbind = :80\n", NULL, 0,
               "t.ini:2: http.bind = \":80\": expected host:port (port 0..65535)");
  expect_error("[serve]\ngrpc_bind = 8001\n", NULL, 0,
               "t.ini:2: serve.grpc_bind = \"8001\": expected host:port (port 0..65535), or nothing for none");
  expect_error("[serve]\ntrainer_url = ftp://x\n", NULL, 0,
               "t.ini:2: serve.trainer_url = \"ftp://x\": expected an http:// or https:// URL");
  expect_error("[serve]\nprecision = int4\n", NULL, 0,
               "t.ini:2: serve.precision = \"int4\": expected auto, fp32, bf16, fp16 or int8");
  expect_error("[serve]\nprecisions = fp32, int4\n", NULL, 0,
               "t.ini:2: serve.precisions = \"fp32, int4\": \"int4\" is not one of fp32, bf16, fp16, int8");
  expect_error("[snapshot]\nprecisions = int8,int8\n", NULL, 0,
               "t.ini:2: snapshot.precisions = \"int8,int8\": int8 is listed twice");
  expect_error("[serve]\nprecision = bf16\nprecisions = fp32,int8\n", NULL, 0,
               "t.ini:3: serve.precisions = \"fp32,int8\": serve.precision bf16 is not in serve.precisions "
               "(fp32,int8)");
  const char *bf16[] = {"serve.precision=bf16"};
  expect_error("[serve]\nprecisions = fp32,int8\n", bf16, 1,
               "--set: serve.precision = \"bf16\": serve.precision bf16 is not in serve.precisions (fp32,int8)");
  expect_error("[serve]\nmax_accuracy_drop = -0.1\n", NULL, 0,
               "t.ini:2: serve.max_accuracy_drop = \"-0.1\": must be between 0 and 1000000");
  expect_error(
      "[buffer]\ncapacity_bytes = 1.5G\n", NULL, 0,
      "t.ini:2: buffer.capacity_bytes = \"1.5G\": not a size (a whole number, optionally with "
      "K, M, G, T, KiB, MiB, GiB or TiB)");
  expect_error(
      "[buffer]\ncapacity_bytes = 1K\n", NULL, 0,
      "t.ini:2: buffer.capacity_bytes = \"1K\": must be between 1048576 and 1125899906842624");
  expect_error(
      "[buffer]\ncapacity_bytes = 99999999999999999999G\n", NULL, 0,
      "t.ini:2: buffer.capacity_bytes = \"99999999999999999999G\": must be between 1048576 and "
      "1125899906842624");
  /* Numbers are decimal: strtod's hexadecimal forms are refused, for floats and integers. */
  static const char *const not_decimal[][2] = {{"lr", "0x10"},         {"lr", "0X1p-4"},
                                               {"lr", "1e"},           {"lr", "."},
                                               {"batch_size", "0x10"}, {"holdout_fraction", "-0x0.1"}};
  for (size_t i = 0; i < sizeof not_decimal / sizeof not_decimal[0]; i++) {
    char text[96], want[160];
    snprintf(text, sizeof text, "[train]\n%s = %s\n", not_decimal[i][0], not_decimal[i][1]);
    snprintf(want, sizeof want, "t.ini:2: train.%s = \"%s\": not a number", not_decimal[i][0],
             not_decimal[i][1]);
    expect_error(text, NULL, 0, want);
  }
  const char *hex_set[] = {"train.momentum=0x0.8"};
  expect_error("", hex_set, 1, "--set: train.momentum = \"0x0.8\": not a number");
  /* Only " ;" starts an inline comment; "0.01;x" stays one (bad) value. */
  expect_error("[train]\nlr = 0.01;x\n", NULL, 0, "t.ini:2: train.lr = \"0.01;x\": not a number");
}

static void test_errors_syntax(void **state) {
  (void)state;
  expect_error("[model]\nname\n", NULL, 0, "t.ini:2: syntax error");
  expect_error("[model\nname = x\n", NULL, 0, "t.ini:1: syntax error");
  /* inih keeps going after a syntax error; the first error is the one reported. */
  expect_error("[model]\nbad line\nhash_bits = 99\n", NULL, 0, "t.ini:2: syntax error");
  expect_error("[model]\nhash_bits = 99\nbad line\n", NULL, 0,
               "t.ini:2: model.hash_bits = \"99\": must be between 0 and 30");
  /* Line length: 198 bytes fit (with '\n' and NUL in inih's 200), 199 do not. */
  char text[600];
  char fill[300];
  memset(fill, 'x', sizeof fill);
  snprintf(text, sizeof text, "[model]\n#%.197s\nname = ok\n", fill);
  eddy_config_t cfg;
  expect_ok(&cfg, text, NULL, 0);
  assert_string_equal(cfg.model_name, "ok");
  eddy_config_free(&cfg);
  snprintf(text, sizeof text, "[model]\n#%.198s\nname = ok\n", fill);
  expect_error(text, NULL, 0, "t.ini:2: line too long (max 198 bytes)");
  snprintf(text, sizeof text, "[model]\nname = %.250s\n", fill);
  expect_error(text, NULL, 0, "t.ini:2: line too long (max 198 bytes)");
  /* A NUL byte inside a line. */
  static const char nul[] = "[model]\nname = a\0b\n";
  assert_int_equal(
      eddy_config_load_string(&cfg, "t.ini", nul, sizeof nul - 1, NULL, 0, errstr, sizeof errstr),
      EDDY_ERR_CONFIG);
  assert_string_equal(errstr, "t.ini:2: syntax error (NUL byte)");
  eddy_config_free(&cfg);
}

static void test_errors_cross_key(void **state) {
  (void)state;
  expect_error("[model]\nhead = softmax\nclasses = 1\n", NULL, 0,
               "t.ini:3: model.classes = \"1\": a softmax head needs model.classes >= 2");
  const char *head_set[] = {"model.head=softmax"};
  expect_error("[model]\nclasses = 1\n", head_set, 1,
               "--set: model.head = \"softmax\": a softmax head needs model.classes >= 2");
  expect_error("[model]\nembed_dim = 0\n", NULL, 0,
               "t.ini:2: model.embed_dim = \"0\": the model needs an input: model.embed_dim or "
               "model.dense_dim must be > 0");
  expect_error(
      "[model]\nhash_bits = 0\n", NULL, 0,
      "t.ini:2: model.hash_bits = \"0\": model.embed_dim > 0 needs model.hash_bits between 1 "
      "and 30");
  expect_error("[train]\nloss_scale.min = 100000\n", NULL, 0,
               "t.ini:2: train.loss_scale.min = \"100000\": train.loss_scale.min must not exceed "
               "train.loss_scale.init");
  expect_error("[snapshot]\ngate.holdout_events = 40\n", NULL, 0,
               "t.ini:2: snapshot.gate.holdout_events = \"40\": snapshot.gate.min_events must not exceed "
               "snapshot.gate.holdout_events (the holdout window could never hold enough events for a verdict)");
  expect_error("[train]\ndrift.slack = 0\n", NULL, 0, "t.ini:2: train.drift.slack = \"0\": must be > 0 and <= 100");
  expect_error("[train]\nloss_scale.growth = 1\n", NULL, 0,
               "t.ini:2: train.loss_scale.growth = \"1\": must be > 1 and <= 1000");
  expect_error("[train]\nloss_scale.init = 0.5\n", NULL, 0,
               "t.ini:2: train.loss_scale.init = \"0.5\": must be between 1 and 1000000000");
  /* The model layer's parameter limit is reported against the key that shapes the largest
   * tensor (set last, when several do), not against whichever model key came last. */
  static const char *const too_large[][3] = {
      {"[model]\nhidden = 65536,65536\nembed_dim = 8\n", NULL,
       "t.ini:2: model.hidden = \"65536,65536\": the model has 4297785360 parameters: too large (at "
       "most 4294967296; the largest tensor, mlp.1.weight, has 4294967296)"},
      {"[model]\nhidden = 65536,65536\nhead = softmax\nclasses = 10\n", NULL,
       "t.ini:2: model.hidden = \"65536,65536\": the model has 4300996624 parameters: too large (at "
       "most 4294967296; the largest tensor, mlp.1.weight, has 4294967296)"},
      {"[model]\nhash_bits = 30\nembed_dim = 64\nhidden = 8\n", NULL,
       "t.ini:3: model.embed_dim = \"64\": the model has 68719477296 parameters: too large (at most "
       "4294967296; the largest tensor, emb.weight, has 68719476736)"},
      {"[model]\nhead = softmax\nhidden = 65536\ndense_dim = 1\nembed_dim = 0\n", "model.classes=65536",
       "--set: model.classes = \"65536\": the model has 4295163904 parameters: too large (at most "
       "4294967296; the largest tensor, head.weight, has 4294967296)"},
  };
  for (size_t i = 0; i < sizeof too_large / sizeof too_large[0]; i++)
    expect_error(too_large[i][0], &too_large[i][1], too_large[i][1] ? 1 : 0, too_large[i][2]);
  /* hash_bits 0 is fine without an embedding. */
  eddy_config_t cfg;
  expect_ok(&cfg, "[model]\nhash_bits = 0\nembed_dim = 0\ndense_dim = 8\n", NULL, 0);
  assert_int_equal(cfg.spec.hash_bits, 0);
  eddy_config_free(&cfg);
}

static void test_errors_io(void **state) {
  (void)state;
  eddy_config_t cfg;
  assert_int_equal(eddy_config_load(&cfg, "/nonexistent/x.ini", NULL, 0, errstr, sizeof errstr),
                   EDDY_ERR_IO);
  assert_string_equal(errstr, "/nonexistent/x.ini: No such file or directory");
  eddy_config_free(&cfg);

  char *dir = eddy_test_tmpdir();
  assert_int_equal(eddy_config_load(&cfg, dir, NULL, 0, errstr, sizeof errstr), EDDY_ERR_IO);
  char want[600];
  snprintf(want, sizeof want, "%s: Is a directory", dir);
  assert_string_equal(errstr, want);

  /* Messages name the real path. */
  static const char bad[] = "[train]\nlr = abc\n";
  char *path = eddy_test_write_file(dir, "bad.ini", bad, sizeof bad - 1);
  assert_int_equal(eddy_config_load(&cfg, path, NULL, 0, errstr, sizeof errstr), EDDY_ERR_CONFIG);
  snprintf(want, sizeof want, "%s:2: train.lr = \"abc\": not a number", path);
  assert_string_equal(errstr, want);
  free(path);

  /* Over the 1 MiB cap. */
  size_t big_len = (1u << 20) + 1;
  char *big = malloc(big_len);
  assert_non_null(big);
  memset(big, '\n', big_len);
  path = eddy_test_write_file(dir, "big.ini", big, big_len);
  assert_int_equal(eddy_config_load(&cfg, path, NULL, 0, errstr, sizeof errstr), EDDY_ERR_CONFIG);
  snprintf(want, sizeof want, "%s: larger than 1048576 bytes", path);
  assert_string_equal(errstr, want);
  /* Exactly at the cap is fine (blank lines). */
  free(path);
  path = eddy_test_write_file(dir, "cap.ini", big, big_len - 1);
  assert_int_equal(eddy_config_load(&cfg, path, NULL, 0, errstr, sizeof errstr), EDDY_OK);
  free(path);
  free(big);
  eddy_test_rmdir(dir);

  /* No errstr buffer: still the right code, no crash. */
  assert_int_equal(eddy_config_load_string(&cfg, "t.ini", "[x]\n", 4, NULL, 0, NULL, 0),
                   EDDY_ERR_CONFIG);
  eddy_config_free(&cfg);
}

static void test_set_overrides(void **state) {
  (void)state;
  eddy_config_t cfg;
  const char *sets[] = {"train.lr=0.5", " model.hidden = 32, 16 ", "train.loss_scale.init=1024",
                        "snapshot.gate.max_regression=0.1", "model.name=override"};
  expect_ok(&cfg, "[train]\nlr = 0.01\n[model]\nname = file\n", sets, 5);
  assert_true(cfg.train.lr == 0.5f);
  assert_int_equal(cfg.spec.n_hidden, 2);
  assert_int_equal(cfg.spec.hidden[0], 32);
  assert_int_equal(cfg.spec.hidden[1], 16);
  assert_true(cfg.train.loss_scale.init_scale == 1024.0f);
  assert_true(cfg.gate_max_regression == 0.1);
  assert_string_equal(cfg.model_name, "override");
  eddy_config_free(&cfg);

  /* Sets without a file. */
  const char *only[] = {"train.batch_size=7"};
  assert_int_equal(eddy_config_load(&cfg, NULL, only, 1, errstr, sizeof errstr), EDDY_OK);
  assert_int_equal(cfg.batch_size, 7);
  eddy_config_free(&cfg);

  const char *bad_num[] = {"train.lr=abc"};
  expect_error("", bad_num, 1, "--set: train.lr = \"abc\": not a number");
  const char *bad_key[] = {"train.nope=1"};
  expect_error("", bad_key, 1, "--set: train.nope = \"1\": unknown key");
  const char *bad_section[] = {"nope.lr=1"};
  expect_error("", bad_section, 1, "--set: nope.lr = \"1\": unknown section");
  const char *no_eq[] = {"xyz"};
  expect_error("", no_eq, 1, "--set \"xyz\": expected section.key=value");
  const char *no_dot[] = {"train=1"};
  expect_error("", no_dot, 1, "--set \"train=1\": expected section.key=value");
  const char *dot_after_eq[] = {"lr=0.1"};
  expect_error("", dot_after_eq, 1, "--set \"lr=0.1\": expected section.key=value");
  const char *empty_key[] = {"train.=1"};
  expect_error("", empty_key, 1, "--set \"train.=1\": expected section.key=value");
  const char *empty_section[] = {".lr=1"};
  expect_error("", empty_section, 1, "--set \".lr=1\": expected section.key=value");
  /* A file error is reported before any --set is looked at. */
  expect_error("[train]\nlr = x\n", bad_num, 1, "t.ini:2: train.lr = \"x\": not a number");
  /* The first bad --set is reported. */
  const char *two[] = {"train.lr=0.1", "train.batch_size=0", "train.lr=abc"};
  expect_error("", two, 3, "--set: train.batch_size = \"0\": must be between 1 and 1048576");
}

static void test_kafka_passthrough(void **state) {
  (void)state;
  eddy_config_t cfg;
  const char *sets[] = {"kafka.acks=all", "kafka.sasl.jaas.config=user=\"a\" pass=b:c"};
  expect_ok(&cfg,
            "[kafka]\n"
            "bootstrap.servers = host-a:9092,host-b:9093\n"
            "sasl.jaas.config = x=y;z ; trailing comment\n"
            "client.id = a:b=c\n"
            "bootstrap.servers = other:1\n"
            "empty.value =\n",
            sets, 2);
  assert_int_equal(cfg.n_kafka, 5);
  /* File order; a repeated key moves to where it was last set. */
  assert_string_equal(cfg.kafka[0].key, "client.id");
  assert_string_equal(cfg.kafka[0].value, "a:b=c");
  assert_string_equal(cfg.kafka[0].origin, "t.ini:4");
  assert_string_equal(cfg.kafka[1].key, "bootstrap.servers");
  assert_string_equal(cfg.kafka[1].value, "other:1");
  assert_string_equal(cfg.kafka[1].origin, "t.ini:5");
  assert_string_equal(cfg.kafka[2].key, "empty.value");
  assert_string_equal(cfg.kafka[2].value, "");
  assert_string_equal(cfg.kafka[3].key, "acks");
  assert_string_equal(cfg.kafka[3].value, "all");
  assert_string_equal(cfg.kafka[3].origin, "--set");
  assert_string_equal(cfg.kafka[4].key, "sasl.jaas.config");
  assert_string_equal(cfg.kafka[4].value, "user=\"a\" pass=b:c");
  assert_string_equal(eddy_config_kafka(&cfg, "bootstrap.servers"), "other:1");
  assert_string_equal(eddy_config_kafka(&cfg, "client.id"), "a:b=c");
  assert_null(eddy_config_kafka(&cfg, "group.id"));
  assert_null(eddy_config_kafka(NULL, "group.id"));
  eddy_config_free(&cfg);
  assert_null(cfg.kafka);
  assert_int_equal(cfg.n_kafka, 0);
  eddy_config_free(&cfg); /* twice is harmless */
  eddy_config_free(NULL);

  /* The file value with " ;" comment stripped, ';' inside kept. */
  expect_ok(&cfg, "[kafka]\nsasl.jaas.config = x=y;z ; comment\n", NULL, 0);
  assert_string_equal(eddy_config_kafka(&cfg, "sasl.jaas.config"), "x=y;z");
  eddy_config_free(&cfg);

  /* Cap on the number of properties; the list is freeable after the error. */
  enum { N = 257 };
  char bufs[N][32];
  const char *many[N];
  for (int i = 0; i < N; i++) {
    snprintf(bufs[i], sizeof bufs[i], "kafka.p%d=%d", i, i);
    many[i] = bufs[i];
  }
  assert_int_equal(load_text(&cfg, "", many, N), EDDY_ERR_CONFIG);
  assert_string_equal(errstr, "--set: kafka.p256 = \"256\": more than 256 [kafka] properties");
  eddy_config_free(&cfg);
  assert_int_equal(load_text(&cfg, "", many, N - 1), EDDY_OK);
  assert_int_equal(cfg.n_kafka, 256);
  assert_string_equal(eddy_config_kafka(&cfg, "p255"), "255");
  eddy_config_free(&cfg);
}

static void test_hidden_lists(void **state) {
  (void)state;
  static const struct {
    const char *value;
    uint32_t n;
    uint32_t layers[3];
  } ok[] = {{"256,128", 2, {256, 128}},
            {" 512 ", 1, {512}},
            {"", 0, {0}},
            {"1, 2 ,3", 3, {1, 2, 3}},
            {"65536", 1, {65536}}};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    char set[64];
    snprintf(set, sizeof set, "model.hidden=%s", ok[i].value);
    const char *sets[] = {set};
    eddy_config_t cfg;
    expect_ok(&cfg, "", sets, 1);
    assert_int_equal(cfg.spec.n_hidden, ok[i].n);
    for (uint32_t j = 0; j < ok[i].n; j++) assert_int_equal(cfg.spec.hidden[j], ok[i].layers[j]);
    for (uint32_t j = ok[i].n; j < EDDY_MAX_HIDDEN; j++) assert_int_equal(cfg.spec.hidden[j], 0);
    eddy_config_free(&cfg);
  }
  eddy_config_t cfg;
  expect_ok(&cfg, "[model]\nhidden =\n", NULL, 0);
  assert_int_equal(cfg.spec.n_hidden, 0);
  eddy_config_free(&cfg);
  expect_ok(&cfg, "[model]\nhidden = 1,2,3,4,5,6,7,8\n", NULL, 0);
  assert_int_equal(cfg.spec.n_hidden, 8);
  assert_int_equal(cfg.spec.hidden[7], 8);
  eddy_config_free(&cfg);
  expect_error("[model]\nhidden = 1,2,3,4,5,6,7,8,9\n", NULL, 0,
               "t.ini:2: model.hidden = \"1,2,3,4,5,6,7,8,9\": at most 8 hidden layers");
  expect_error("[model]\nhidden = 256,,128\n", NULL, 0,
               "t.ini:2: model.hidden = \"256,,128\": not a comma-separated list of layer widths "
               "(e.g. 256,128)");
  expect_error("[model]\nhidden = 256,\n", NULL, 0,
               "t.ini:2: model.hidden = \"256,\": not a comma-separated list of layer widths (e.g. "
               "256,128)");
  expect_error("[model]\nhidden = 256 128\n", NULL, 0,
               "t.ini:2: model.hidden = \"256 128\": not a comma-separated list of layer widths "
               "(e.g. 256,128)");
  expect_error("[model]\nhidden = -5\n", NULL, 0,
               "t.ini:2: model.hidden = \"-5\": not a comma-separated list of layer widths (e.g. "
               "256,128)");
  expect_error("[model]\nhidden = 64,0\n", NULL, 0,
               "t.ini:2: model.hidden = \"64,0\": each layer width must be between 1 and 65536");
  expect_error("[model]\nhidden = 65537\n", NULL, 0,
               "t.ini:2: model.hidden = \"65537\": each layer width must be between 1 and 65536");
  expect_error(
      "[model]\nhidden = 99999999999999999999999\n", NULL, 0,
      "t.ini:2: model.hidden = \"99999999999999999999999\": each layer width must be between "
      "1 and 65536");
}

static void test_booleans(void **state) {
  (void)state;
  static const struct {
    const char *text;
    bool value;
  } forms[] = {{"true", true}, {"false", false}, {"1", true},   {"0", false},
               {"yes", true},  {"no", false},    {"on", true},  {"off", false},
               {"TRUE", true}, {"Off", false},   {"Yes", true}, {"NO", false}};
  for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
    char text[128];
    /* Start from the opposite of the expected value so that the assignment is visible. */
    snprintf(text, sizeof text,
             "[buffer]\nsync = %s\nsync = %s\n[train]\nloss_scale.dynamic = %s\n",
             forms[i].value ? "false" : "true", forms[i].text, forms[i].text);
    eddy_config_t cfg;
    expect_ok(&cfg, text, NULL, 0);
    assert_int_equal(cfg.buffer_sync, forms[i].value);
    assert_int_equal(cfg.train.loss_scale.enabled, forms[i].value);
    eddy_config_free(&cfg);
  }
  expect_error("[buffer]\nsync = 2\n", NULL, 0,
               "t.ini:2: buffer.sync = \"2\": expected true or false (also 1/0, yes/no, on/off)");
}

static void test_value_forms(void **state) {
  (void)state;
  eddy_config_t cfg;
  /* Inline comments, duplicate keys (last wins), indentation (no continuation lines), exponents,
   * case-insensitive enums and sizes with suffixes. */
  expect_ok(&cfg,
            "; leading comment\n"
            "# another\n"
            "[train]\n"
            "lr = 0.01 ; comment\n"
            "batch_size = 16\n"
            "  accum_steps = 4\n"
            "\tbatch_size = 32   ; last wins\n"
            "precision = BF16\n"
            "eps = 1e-6\n"
            "seed = 18446744073709551615\n"
            "device = cuda:3\n"
            "[snapshot]\n"
            "dtype = bf16\n"
            "gate.max_regression = 0\n"
            "[buffer]\n"
            "capacity_bytes = 512MiB\n"
            "[http]\n"
            "max_body_bytes = 4k\n"
            "bind = [::1]:0\n"
            "[serve]\n"
            "grpc_bind = 0.0.0.0:8001\n"
            "[stream]\n"
            "dlq_topic = dead.letters_1\n",
            NULL, 0);
  assert_true(cfg.train.lr == 0.01f);
  assert_int_equal(cfg.batch_size, 32);
  assert_int_equal(cfg.accum_steps, 4);
  assert_int_equal(cfg.train.precision, EDDY_PREC_BF16);
  assert_true(cfg.train.eps == 1e-6f);
  assert_true(cfg.train.seed == UINT64_MAX);
  assert_string_equal(cfg.device, "cuda:3");
  assert_string_equal(cfg.snapshot_dtype, "BF16");
  assert_true(cfg.gate_max_regression == 0.0);
  assert_int_equal(cfg.buffer_capacity_bytes, 512ull << 20);
  assert_int_equal(cfg.http_max_body_bytes, 4096);
  assert_string_equal(cfg.http_bind, "[::1]:0");
  assert_string_equal(cfg.serve_grpc_bind, "0.0.0.0:8001");
  assert_string_equal(cfg.dlq_topic, "dead.letters_1");
  eddy_config_free(&cfg);

  static const struct {
    const char *text;
    uint64_t bytes;
  } sizes[] = {{"1048576", 1048576}, {"1M", 1048576},    {"1MiB", 1048576},  {"2G", 2ull << 30},
               {"3gib", 3ull << 30}, {"1T", 1ull << 40}, {"1024K", 1048576}, {"1024KiB", 1048576}};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    char set[64];
    snprintf(set, sizeof set, "buffer.capacity_bytes=%s", sizes[i].text);
    const char *sets[] = {set};
    expect_ok(&cfg, "", sets, 1);
    assert_int_equal(cfg.buffer_capacity_bytes, sizes[i].bytes);
    eddy_config_free(&cfg);
  }

  /* UTF-8 BOM and CRLF line ends. */
  static const char bom[] = "\xEF\xBB\xBF[train]\r\nlr = 0.5\r\n[model]\r\nname = crlf\r\n";
  assert_int_equal(
      eddy_config_load_string(&cfg, "t.ini", bom, sizeof bom - 1, NULL, 0, errstr, sizeof errstr),
      EDDY_OK);
  assert_true(cfg.train.lr == 0.5f);
  assert_string_equal(cfg.model_name, "crlf");
  eddy_config_free(&cfg);

  /* No trailing newline, empty input, NULL text. */
  expect_ok(&cfg, "[train]\nlr = 0.25", NULL, 0);
  assert_true(cfg.train.lr == 0.25f);
  eddy_config_free(&cfg);
  /* Every decimal spelling of a float. */
  expect_ok(&cfg, "[train]\nlr = 5.\nmomentum = .5\nbeta1 = +0.25\neps = 1E-3\nweight_decay = 2e+1\n",
            NULL, 0);
  assert_true(cfg.train.lr == 5.0f);
  assert_true(cfg.train.momentum == 0.5f);
  assert_true(cfg.train.beta1 == 0.25f);
  assert_true(cfg.train.eps == 1e-3f);
  assert_true(cfg.train.weight_decay == 20.0f);
  eddy_config_free(&cfg);
  expect_ok(&cfg, "", NULL, 0);
  eddy_config_free(&cfg);
  assert_int_equal(eddy_config_load_string(&cfg, "t.ini", NULL, 0, NULL, 0, errstr, sizeof errstr),
                   EDDY_OK);
  eddy_config_free(&cfg);

  /* An empty known section is fine; so is a key line with ':' (inih's name:value form). */
  expect_ok(&cfg, "[serve]\n[model]\nname: colon\n", NULL, 0);
  assert_string_equal(cfg.model_name, "colon");
  eddy_config_free(&cfg);
}

/* A [train] value goes through the same limits whether the config loader or the learner checks
 * it: the same verdict, and the same reason. */
static void test_train_limits_shared(void **state) {
  (void)state;
  static const struct {
    const char *key;
    size_t off;
    bool whole; /* an int or uint32_t field */
    bool fp16;  /* the learner checks it only for fp16 with dynamic scaling */
  } fields[] = {
      {"lr", offsetof(eddy_train_opts_t, lr), false, false},
      {"momentum", offsetof(eddy_train_opts_t, momentum), false, false},
      {"beta1", offsetof(eddy_train_opts_t, beta1), false, false},
      {"beta2", offsetof(eddy_train_opts_t, beta2), false, false},
      {"eps", offsetof(eddy_train_opts_t, eps), false, false},
      {"weight_decay", offsetof(eddy_train_opts_t, weight_decay), false, false},
      {"clip_norm", offsetof(eddy_train_opts_t, clip_norm), false, false},
      {"threads", offsetof(eddy_train_opts_t, threads), true, false},
      {"loss_scale.init", offsetof(eddy_train_opts_t, loss_scale.init_scale), false, true},
      {"loss_scale.growth", offsetof(eddy_train_opts_t, loss_scale.growth), false, true},
      {"loss_scale.backoff", offsetof(eddy_train_opts_t, loss_scale.backoff), false, true},
      {"loss_scale.interval", offsetof(eddy_train_opts_t, loss_scale.interval), true, true},
      {"loss_scale.min", offsetof(eddy_train_opts_t, loss_scale.min_scale), false, true},
  };
  static const double values[] = {-1,  0,   1e-6, 0.5,  0.999, 1,   1.5,   2,   100, 100.5,
                                  101, 1000, 1001, 1024, 1025, 65536, 1e5, 1e9, 2e9};
  size_t rejected = 0, accepted = 0;
  for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++) {
    for (size_t v = 0; v < sizeof values / sizeof values[0]; v++) {
      double value = values[v];
      if (fields[f].whole && (value < 0 || value != (double)(uint64_t)value)) continue;
      char set[96], cfg_err[1024], learner_err[512];
      snprintf(set, sizeof set, "train.%s=%.10g", fields[f].key, value);
      const char *sets[] = {set, "train.precision=fp16"};
      eddy_config_t cfg;
      eddy_err_t cfg_verdict = eddy_config_load(&cfg, NULL, sets, 2, cfg_err, sizeof cfg_err);
      eddy_config_free(&cfg);
      eddy_train_opts_t o = eddy_train_opts_defaults();
      o.precision = fields[f].fp16 ? EDDY_PREC_FP16 : EDDY_PREC_FP32;
      char *field = (char *)&o + fields[f].off;
      if (strcmp(fields[f].key, "threads") == 0)
        *(int *)field = (int)value;
      else if (fields[f].whole)
        *(uint32_t *)field = (uint32_t)value;
      else
        *(float *)field = (float)value;
      eddy_err_t learner_verdict = eddy_train_opts_check(&o, learner_err, sizeof learner_err);
      if (cfg_verdict != learner_verdict)
        print_error("%s: config %d (%s), learner %d (%s)\n", set, cfg_verdict,
                    cfg_verdict ? cfg_err : "ok", learner_verdict, learner_verdict ? learner_err : "ok");
      assert_int_equal(cfg_verdict, learner_verdict);
      if (cfg_verdict == EDDY_OK) {
        accepted++;
        continue;
      }
      rejected++;
      /* "--set: train.lr = \"0\": must be > 0 and <= 1000" and "train.lr = 0: must be ...". */
      const char *cfg_why = strstr(cfg_err, "\": ");
      const char *learner_why = strstr(learner_err, ": ");
      assert_non_null(cfg_why);
      assert_non_null(learner_why);
      assert_string_equal(cfg_why + 3, learner_why + 2);
      char key[64];
      snprintf(key, sizeof key, "train.%s = ", fields[f].key);
      assert_non_null(strstr(learner_err, key));
    }
  }
  /* Both sides of most limits were tried. */
  assert_true(rejected >= 40);
  assert_true(accepted >= 40);
}

/* A [model] value gets the same verdict from the config loader and from the model's own check
 * (which eddy_learner_new, inference and manifests use). */
static void test_spec_limits_shared(void **state) {
  (void)state;
  static const char *const sets[][2] = {
      {"model.embed_dim=4096", NULL},        {"model.embed_dim=4097", NULL},
      {"model.embed_dim=0", NULL},           {"model.embed_dim=0", "model.dense_dim=3"},
      {"model.hash_bits=0", NULL},           {"model.hash_bits=1", NULL},
      {"model.hash_bits=26", NULL},          {"model.hash_bits=30", NULL},
      {"model.hash_bits=31", NULL},          {"model.dense_dim=1048576", NULL},
      {"model.dense_dim=1048577", NULL},     {"model.hidden=65536", NULL},
      {"model.hidden=65537", NULL},          {"model.hidden=8,0", NULL},
      {"model.hidden=1,2,3,4,5,6,7,8", NULL}, {"model.hidden=", NULL},
      {"model.head=softmax", "model.classes=1"}, {"model.head=softmax", "model.classes=2"},
      {"model.head=softmax", "model.classes=65536"}, {"model.head=softmax", "model.classes=65537"},
      {"model.hidden=65536,65536", NULL},    {"model.hidden=65536,65535", NULL},
  };
  size_t rejected = 0, accepted = 0;
  for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
    size_t n = sets[i][1] ? 2 : 1;
    eddy_config_t cfg;
    char cfg_err[1024], spec_err[512];
    eddy_err_t cfg_verdict = eddy_config_load(&cfg, NULL, sets[i], n, cfg_err, sizeof cfg_err);
    eddy_config_free(&cfg);
    /* The spec the sets describe, built without the loader. */
    eddy_model_spec_t spec = eddy_model_spec_defaults();
    for (size_t k = 0; k < n; k++) {
      const char *v = strchr(sets[i][k], '=') + 1;
      if (strncmp(sets[i][k], "model.hidden=", 13) == 0) {
        spec.n_hidden = 0;
        memset(spec.hidden, 0, sizeof spec.hidden);
        for (char *end; *v && spec.n_hidden < EDDY_MAX_HIDDEN; v = *end ? end + 1 : end)
          spec.hidden[spec.n_hidden++] = (uint32_t)strtoul(v, &end, 10);
      } else if (strncmp(sets[i][k], "model.head=", 11) == 0) {
        assert_int_equal(eddy_head_parse(v, &spec.head), 0);
      } else {
        uint32_t x = (uint32_t)strtoul(v, NULL, 10);
        if (strstr(sets[i][k], "embed_dim")) spec.embed_dim = x;
        if (strstr(sets[i][k], "dense_dim")) spec.dense_dim = x;
        if (strstr(sets[i][k], "hash_bits")) spec.hash_bits = x;
        if (strstr(sets[i][k], "classes")) spec.classes = x;
      }
    }
    eddy_err_t spec_verdict = eddy_model_spec_validate(&spec, spec_err, sizeof spec_err);
    if (cfg_verdict != spec_verdict)
      print_error("%s %s: config %d (%s), spec %d (%s)\n", sets[i][0], sets[i][1] ? sets[i][1] : "",
                  cfg_verdict, cfg_verdict ? cfg_err : "ok", spec_verdict,
                  spec_verdict ? spec_err : "ok");
    assert_int_equal(cfg_verdict, spec_verdict);
    if (cfg_verdict == EDDY_OK)
      accepted++;
    else
      rejected++;
  }
  assert_true(rejected >= 10);
  assert_true(accepted >= 10);
}

/* eddy_config_origin names where a key got its value. */
static void test_origin(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  static const char ini[] = "[model]\nname = m\n\n[http]\nbind = 127.0.0.1:0\ntoken_file = /nope\n";
  char *path = eddy_test_write_file(dir, "o.ini", ini, sizeof ini - 1);
  char origin[512], want[600];
  assert_int_equal(eddy_config_origin(path, NULL, 0, "http.token_file", origin, sizeof origin),
                   EDDY_OK);
  snprintf(want, sizeof want, "%s:6", path);
  assert_string_equal(origin, want);
  assert_int_equal(eddy_config_origin(path, NULL, 0, "model.name", origin, sizeof origin), EDDY_OK);
  snprintf(want, sizeof want, "%s:2", path);
  assert_string_equal(origin, want);
  assert_int_equal(eddy_config_origin(path, NULL, 0, "train.lr", origin, sizeof origin), EDDY_OK);
  assert_string_equal(origin, "default");
  const char *sets[] = {"http.token_file=/other"};
  assert_int_equal(eddy_config_origin(path, sets, 1, "http.token_file", origin, sizeof origin),
                   EDDY_OK);
  assert_string_equal(origin, "--set");
  assert_int_equal(eddy_config_origin(NULL, sets, 1, "http.token_file", origin, sizeof origin),
                   EDDY_OK);
  assert_string_equal(origin, "--set");
  assert_int_equal(eddy_config_origin(path, NULL, 0, "http.nope", origin, sizeof origin),
                   EDDY_ERR_NOT_FOUND);
  assert_int_equal(eddy_config_origin(path, NULL, 0, "kafka.acks", origin, sizeof origin),
                   EDDY_ERR_NOT_FOUND);
  assert_int_equal(eddy_config_origin(path, NULL, 0, "http", origin, sizeof origin),
                   EDDY_ERR_NOT_FOUND);
  const char *bad[] = {"train.lr=x"};
  assert_int_equal(eddy_config_origin(path, bad, 1, "http.token_file", origin, sizeof origin),
                   EDDY_ERR_CONFIG);
  free(path);
  assert_int_equal(eddy_config_origin("/nonexistent/x.ini", NULL, 0, "http.token_file", origin,
                                      sizeof origin),
                   EDDY_ERR_IO);
  eddy_test_rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults_values),
      cmocka_unit_test(test_reference_equals_defaults),
      cmocka_unit_test(test_reference_lists_every_key),
      cmocka_unit_test(test_fashion_mnist_loads),
      cmocka_unit_test(test_errors_per_key),
      cmocka_unit_test(test_errors_syntax),
      cmocka_unit_test(test_errors_cross_key),
      cmocka_unit_test(test_errors_io),
      cmocka_unit_test(test_set_overrides),
      cmocka_unit_test(test_kafka_passthrough),
      cmocka_unit_test(test_hidden_lists),
      cmocka_unit_test(test_booleans),
      cmocka_unit_test(test_value_forms),
      cmocka_unit_test(test_train_limits_shared),
      cmocka_unit_test(test_spec_limits_shared),
      cmocka_unit_test(test_origin),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
