/* `eddy learn`: offline training without Kafka. One pass over a dataset in file order, each
 * micro-batch scored before it is trained on (prequential metrics), then evaluation on a test set.
 * Bad records are counted by class and skipped; they never stop the run. */
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli/cli.h"
#include "config/config.h"
#include "data/dataset.h"
#include "core/clock.h"
#include "core/log.h"
#include "model/learner.h"
#include "model/prequential.h"

#define BAD_EXAMPLES_LOGGED 5

static const char learn_usage[] =
    "usage: eddy learn -c CONFIG --data DATASET [--test DATASET] [--json] [--save FILE]\n"
    "                  [--limit N] [--set section.key=value]...\n\n"
    "Trains the model of CONFIG on DATASET in one pass, in file order, scoring every example\n"
    "before the step that trains on it (prequential metrics), then evaluates on --test.\n\n"
    EDDY_CLI_HELP_CONFIG
    "  -d, --data DATASET      JSONL file of events, fashion-mnist:train or fashion-mnist:test\n"
    "  -t, --test DATASET      evaluation dataset (optional)\n"
    EDDY_CLI_HELP_SET
    "  -n, --limit N           train on at most N examples\n"
    "      --save FILE         write the trained weights as safetensors (dtype from snapshot.dtype)\n"
    "      --json              print one JSON summary object on stdout instead of the table\n"
    EDDY_CLI_HELP_HELP "\n"
    "Progress goes to stderr: a bar on a terminal, a line every 5 seconds otherwise.\n"
    "Exit: 0 ok, 1 runtime failure (including no valid training examples), 2 usage/config error.\n";

typedef struct {
  uint64_t examples, invalid, steps, skipped;
  uint64_t invalid_by[EDDY_ERR__COUNT];
  double seconds;
} learn_stats_t;

/* Progress reporting: a redrawn bar on a terminal, otherwise a plain line every 5 seconds. */
typedef struct {
  bool tty;
  double start, last;
  const char *what;
} progress_t;

static void progress_show(progress_t *p, double frac, uint64_t examples, double acc, bool final) {
  double t = eddy_clock_mono_s();
  double interval = p->tty ? 0.1 : 5.0;
  if (!final && t - p->last < interval) return;
  p->last = t;
  double rate = examples / fmax(t - p->start, 1e-9);
  if (p->tty) {
    int width = 30, fill = (int)(frac * width + 0.5);
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    fprintf(stderr, "\r%s [%s] %5.1f%% %9llu ex %8.0f ex/s acc %.4f", p->what, bar, frac * 100,
            (unsigned long long)examples, rate, acc);
    if (final) fputc('\n', stderr);
  } else if (!final) {
    fprintf(stderr, "%s: %.1f%% %llu examples %.0f ex/s prequential accuracy %.4f\n", p->what,
            frac * 100, (unsigned long long)examples, rate, acc);
  }
  fflush(stderr);
}

typedef struct {
  eddy_learner_t *learner;
  eddy_prequential_t *metrics;
  eddy_batch_t *batch;
  float *pred;
  uint32_t accum_steps, micro, max_skipped, skipped_run;
  learn_stats_t *stats;
} trainer_t;

/* Trains on the batch (scored first), stepping every accum_steps micro-batches. */
static int train_batch(trainer_t *t, bool force_step, char *errstr, size_t errstr_size) {
  if (t->batch->n > 0) {
    eddy_err_t err = eddy_learner_accumulate(t->learner, t->batch, t->pred, NULL);
    if (err)
      return eddy_errf(err, errstr, errstr_size, "training failed: %s: %s", eddy_err_str(err),
                       eddy_learner_last_error(t->learner));
    eddy_prequential_add(t->metrics, t->pred, t->batch->label, t->batch->weight, t->batch->n);
    t->stats->examples += t->batch->n;
    t->micro++;
    eddy_batch_clear(t->batch);
  }
  if (t->micro == 0 || (t->micro < t->accum_steps && !force_step)) return 0;
  eddy_step_info_t info;
  eddy_err_t err = eddy_learner_step(t->learner, &info);
  if (err)
    return eddy_errf(err, errstr, errstr_size, "optimizer step failed: %s: %s", eddy_err_str(err),
                     eddy_learner_last_error(t->learner));
  t->micro = 0;
  if (info.applied) {
    t->stats->steps++;
    t->skipped_run = 0;
  } else {
    t->stats->skipped++;
    if (++t->skipped_run > t->max_skipped)
      return eddy_errf(EDDY_ERR_NONFINITE, errstr, errstr_size,
                       "%u optimizer steps in a row skipped for Inf/NaN gradients "
                       "(train.max_skipped_steps = %u); loss scale now %g",
                       t->skipped_run, t->max_skipped, info.loss_scale);
  }
  return 0;
}

static void note_invalid(learn_stats_t *st, eddy_err_t err, const char *msg) {
  st->invalid++;
  st->invalid_by[err]++;
  if (st->invalid <= BAD_EXAMPLES_LOGGED)
    EDDY_WARN("learn", "skipping bad record (%s): %s", eddy_err_name(err), msg);
  else if (st->invalid == BAD_EXAMPLES_LOGGED + 1)
    EDDY_WARN("learn", "more bad records follow; they are counted in the summary, not logged");
}

/* One pass over the training set. Returns 0 or an error code with errstr set. */
static int run_training(const eddy_config_t *cfg, trainer_t *t, const char *data, uint64_t limit,
                        char *errstr, size_t errstr_size) {
  eddy_event_schema_t schema = eddy_model_event_schema(&cfg->spec);
  schema.max_bytes = cfg->max_event_bytes;
  char dserr[512];
  eddy_dataset_t *ds = eddy_dataset_new(data, &schema, dserr, sizeof dserr);
  if (!ds) return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "%s", dserr);
  eddy_event_t ev;
  eddy_event_init(&ev);
  progress_t prog = {.tty = isatty(STDERR_FILENO), .start = eddy_clock_mono_s(), .what = "learn"};
  prog.last = prog.start;
  int rc = 0;
  uint64_t seen = 0;
  while (!limit || seen < limit) {
    bool eof = false;
    eddy_err_t err = eddy_dataset_next(ds, &ev, &eof, dserr, sizeof dserr);
    if (eddy_err_is_bad_event(err)) {
      note_invalid(t->stats, err, dserr);
      continue;
    }
    if (err) {
      rc = eddy_errf(err, errstr, errstr_size, "%s", dserr);
      break;
    }
    if (eof) break;
    seen++;
    err = eddy_batch_push(t->batch, &ev);
    if (err) {
      rc = eddy_errf(err, errstr, errstr_size, "batch: %s", eddy_err_str(err));
      break;
    }
    if (t->batch->n == t->batch->cap) {
      if ((rc = train_batch(t, false, errstr, errstr_size))) break;
      eddy_metric_values_t mv = eddy_prequential_window(t->metrics);
      progress_show(&prog, eddy_dataset_progress(ds), t->stats->examples, mv.accuracy, false);
    }
  }
  if (!rc) rc = train_batch(t, true, errstr, errstr_size);
  t->stats->seconds = eddy_clock_mono_s() - prog.start;
  if (!rc) {
    eddy_metric_values_t mv = eddy_prequential_window(t->metrics);
    progress_show(&prog, 1.0, t->stats->examples, mv.accuracy, true);
  }
  eddy_event_free(&ev);
  eddy_dataset_destroy(ds);
  return rc;
}

/* Scores a dataset with the current weights into a fresh metrics object. */
static int run_eval(const eddy_config_t *cfg, trainer_t *t, const char *data, eddy_prequential_t *out,
                    uint64_t *invalid, char *errstr, size_t errstr_size) {
  eddy_event_schema_t schema = eddy_model_event_schema(&cfg->spec);
  schema.max_bytes = cfg->max_event_bytes;
  char dserr[512];
  eddy_dataset_t *ds = eddy_dataset_new(data, &schema, dserr, sizeof dserr);
  if (!ds) return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "%s", dserr);
  eddy_event_t ev;
  eddy_event_init(&ev);
  int rc = 0;
  for (;;) {
    bool eof = false;
    eddy_err_t err = eddy_dataset_next(ds, &ev, &eof, dserr, sizeof dserr);
    if (eddy_err_is_bad_event(err)) {
      (*invalid)++;
      continue;
    }
    if (err) {
      rc = eddy_errf(err, errstr, errstr_size, "%s", dserr);
      break;
    }
    if (!eof && (err = eddy_batch_push(t->batch, &ev))) {
      rc = eddy_errf(err, errstr, errstr_size, "batch: %s", eddy_err_str(err));
      break;
    }
    if (t->batch->n > 0 && (eof || t->batch->n == t->batch->cap)) {
      if ((err = eddy_learner_predict(t->learner, t->batch, t->pred))) {
        rc = eddy_errf(err, errstr, errstr_size, "predict failed: %s: %s", eddy_err_str(err),
                       eddy_learner_last_error(t->learner));
        break;
      }
      eddy_prequential_add(out, t->pred, t->batch->label, t->batch->weight, t->batch->n);
      eddy_batch_clear(t->batch);
    }
    if (eof) break;
  }
  eddy_event_free(&ev);
  eddy_dataset_destroy(ds);
  return rc;
}

static void json_num(cJSON *obj, const char *key, double v) {
  if (isfinite(v))
    cJSON_AddNumberToObject(obj, key, v);
  else
    cJSON_AddNullToObject(obj, key);
}

static void print_summary(bool json, const eddy_config_t *cfg, eddy_learner_t *learner,
                          const learn_stats_t *st, eddy_metric_values_t preq, bool have_test,
                          eddy_metric_values_t test, uint64_t test_invalid, const char *saved) {
  const char *prec = cfg->train.precision == EDDY_PREC_BF16   ? "bf16"
                     : cfg->train.precision == EDDY_PREC_FP16 ? "fp16"
                                                              : "fp32";
  double rate = st->examples / fmax(st->seconds, 1e-9);
  const eddy_scaler_t *sc = eddy_learner_scaler(learner);
  if (json) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", cfg->model_name);
    cJSON_AddNumberToObject(o, "examples", (double)st->examples);
    cJSON_AddNumberToObject(o, "invalid_events", (double)st->invalid);
    cJSON *by = cJSON_AddObjectToObject(o, "invalid_by_reason");
    for (int e = 0; e < EDDY_ERR__COUNT; e++)
      if (st->invalid_by[e]) cJSON_AddNumberToObject(by, eddy_err_name((eddy_err_t)e), (double)st->invalid_by[e]);
    cJSON_AddNumberToObject(o, "steps", (double)st->steps);
    cJSON_AddNumberToObject(o, "skipped_steps", (double)st->skipped);
    json_num(o, "seconds", st->seconds);
    json_num(o, "examples_per_second", rate);
    json_num(o, "prequential_accuracy", preq.accuracy);
    json_num(o, "prequential_logloss", preq.logloss);
    json_num(o, "prequential_mse", preq.mse);
    if (have_test) {
      cJSON_AddNumberToObject(o, "test_examples", (double)test.n);
      cJSON_AddNumberToObject(o, "test_invalid_events", (double)test_invalid);
      json_num(o, "test_accuracy", test.accuracy);
      json_num(o, "test_logloss", test.logloss);
      json_num(o, "test_mse", test.mse);
    } else {
      cJSON_AddNullToObject(o, "test_accuracy");
      cJSON_AddNullToObject(o, "test_logloss");
    }
    cJSON_AddStringToObject(o, "precision", prec);
    cJSON_AddStringToObject(o, "precision_info", eddy_learner_precision_info(learner));
    cJSON_AddStringToObject(o, "backend", eddy_learner_backend(learner));
    cJSON_AddNumberToObject(o, "batch_size", cfg->batch_size);
    cJSON_AddNumberToObject(o, "accum_steps", cfg->accum_steps);
    json_num(o, "loss_scale", sc->scale);
    if (saved) cJSON_AddStringToObject(o, "saved", saved);
    char *text = cJSON_PrintUnformatted(o);
    printf("%s\n", text);
    free(text);
    cJSON_Delete(o);
    return;
  }
  printf("model          %s (%s, %s)\n", cfg->model_name, eddy_learner_backend(learner),
         eddy_learner_precision_info(learner));
  printf("examples       %llu trained, %llu invalid skipped\n", (unsigned long long)st->examples,
         (unsigned long long)st->invalid);
  for (int e = 0; e < EDDY_ERR__COUNT; e++)
    if (st->invalid_by[e])
      printf("                 %llu %s\n", (unsigned long long)st->invalid_by[e], eddy_err_name((eddy_err_t)e));
  printf("steps          %llu applied, %llu skipped (loss scale %g)\n", (unsigned long long)st->steps,
         (unsigned long long)st->skipped, sc->scale);
  printf("time           %.2f s, %.0f examples/s\n", st->seconds, rate);
  if (cfg->spec.head == EDDY_HEAD_SQUARED)
    printf("prequential    mse %.5f\n", preq.mse);
  else
    printf("prequential    accuracy %.4f  logloss %.4f\n", preq.accuracy, preq.logloss);
  if (have_test) {
    if (cfg->spec.head == EDDY_HEAD_SQUARED)
      printf("test           mse %.5f  (%llu examples)\n", test.mse, (unsigned long long)test.n);
    else
      printf("test           accuracy %.4f  logloss %.4f  (%llu examples)\n", test.accuracy,
             test.logloss, (unsigned long long)test.n);
  }
  if (saved) printf("saved          %s\n", saved);
}

int eddy_cmd_learn(int argc, char **argv) {
  static const struct option opts[] = {
      EDDY_CLI_OPT_CONFIG,                     {"data", required_argument, NULL, 'd'},
      {"test", required_argument, NULL, 't'},  EDDY_CLI_OPT_SET,
      {"limit", required_argument, NULL, 'n'}, {"save", required_argument, NULL, 'S'},
      {"json", no_argument, NULL, 'j'},        EDDY_CLI_OPT_HELP,
      {NULL, 0, NULL, 0}};
  eddy_cli_t cli = {.cmd = "learn", .usage = learn_usage};
  const char *data = NULL, *test = NULL, *save = NULL;
  uint64_t limit = 0;
  bool json = false;
  int c;
  while ((c = eddy_cli_getopt(&cli, argc, argv, "c:d:t:s:n:h", opts)) != -1) {
    switch (c) {
      case 'd': data = optarg; break;
      case 't': test = optarg; break;
      case 'S': save = optarg; break;
      case 'j': json = true; break;
      case 'n': {
        char *end;
        unsigned long long v = strtoull(optarg, &end, 10);
        if (!*optarg || *end || optarg[0] == '-' || v == 0) {
          fprintf(stderr, "eddy learn: --limit \"%s\": expected a positive integer\n", optarg);
          return EDDY_EXIT_USAGE;
        }
        limit = v;
        break;
      }
      default: return cli.exit; /* EDDY_CLI_STOP: --help or a usage error, printed */
    }
  }
  if (cli.config_path && !data) { /* without -c, eddy_cli_load_config names that first */
    fputs("eddy learn: --data DATASET is required (eddy learn --help shows the options)\n", stderr);
    return EDDY_EXIT_USAGE;
  }
  eddy_config_t cfg;
  int rc = eddy_cli_load_config(&cli, EDDY_CLI_NEED_CONFIG, &cfg);
  if (rc != EDDY_EXIT_OK) return rc;

  char errstr[1024];
  eddy_err_t err;
  rc = EDDY_EXIT_FAILURE;
  learn_stats_t stats = {0};
  uint32_t outputs = eddy_model_outputs(&cfg.spec);
  trainer_t t = {.accum_steps = cfg.accum_steps, .max_skipped = cfg.max_skipped_steps, .stats = &stats};
  eddy_prequential_t *test_metrics = NULL;
  t.learner = eddy_learner_new(&cfg.spec, &cfg.train, cfg.device, errstr, sizeof errstr);
  if (!t.learner) {
    fprintf(stderr, "eddy learn: %s\n", errstr);
    goto out;
  }
  EDDY_INFO("learn", "model %s on %s, precision %s", cfg.model_name,
            eddy_learner_backend(t.learner), eddy_learner_precision_info(t.learner));
  t.metrics = eddy_prequential_new(cfg.spec.head, outputs, cfg.metrics_window);
  t.batch = eddy_batch_new(cfg.spec.dense_dim, cfg.batch_size);
  t.pred = malloc(sizeof(float) * cfg.batch_size * outputs);
  if (!t.metrics || !t.batch || !t.pred) {
    fprintf(stderr, "eddy learn: out of memory\n");
    goto out;
  }

  if (run_training(&cfg, &t, data, limit, errstr, sizeof errstr)) {
    fprintf(stderr, "eddy learn: %s\n", errstr);
    goto out;
  }
  if (stats.examples == 0) {
    fprintf(stderr, "eddy learn: no valid training examples in %s (%llu invalid)\n", data,
            (unsigned long long)stats.invalid);
    goto out;
  }
  eddy_metric_values_t preq = eddy_prequential_cumulative(t.metrics);
  eddy_metric_values_t testv = {NAN, NAN, NAN, 0};
  uint64_t test_invalid = 0;
  if (test) {
    test_metrics = eddy_prequential_new(cfg.spec.head, outputs, cfg.metrics_window);
    if (!test_metrics) goto out;
    if (run_eval(&cfg, &t, test, test_metrics, &test_invalid, errstr, sizeof errstr)) {
      fprintf(stderr, "eddy learn: test: %s\n", errstr);
      goto out;
    }
    testv = eddy_prequential_cumulative(test_metrics);
  }
  if (save) {
    char spec_examples[32];
    snprintf(spec_examples, sizeof spec_examples, "%llu", (unsigned long long)stats.examples);
    const char *meta[] = {"eddy.model", cfg.model_name, "eddy.examples", spec_examples};
    err = eddy_learner_save_weights(t.learner, save, cfg.snapshot_dtype, meta, 2, errstr, sizeof errstr);
    if (err) {
      fprintf(stderr, "eddy learn: --save %s: %s\n", save, errstr);
      goto out;
    }
  }
  print_summary(json, &cfg, t.learner, &stats, preq, test != NULL, testv, test_invalid, save);
  rc = EDDY_EXIT_OK;

out:
  eddy_prequential_destroy(test_metrics);
  free(t.pred);
  eddy_batch_destroy(t.batch);
  eddy_prequential_destroy(t.metrics);
  eddy_learner_destroy(t.learner);
  eddy_config_free(&cfg);
  return rc;
}
