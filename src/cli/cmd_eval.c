/* `eddy eval`: scores one version of the store (or a weights file) on a dataset, with the gate's
 * per-event scoring (model/evaluate.h): accuracy, loss, accuracy per class of the label and the
 * confusion matrix, so that an operator can check a version before rolling to it. A version is
 * verified (sizes, sha256, shapes) before it is read; rejected versions can be evaluated too. */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli/cli.h"
#include "config/config.h"
#include "data/dataset.h"
#include "format/safetensors.h"
#include "model/evaluate.h"
#include "snapshot/store.h"

#define EVAL_CHUNK 1024          /* events scored per call */
#define EVAL_CLASSES_MAX 1000    /* classes reported per class */
#define EVAL_CONFUSION_MAX 100   /* classes up to which the confusion matrix is reported */

static const char eval_usage[] =
    "usage: eddy eval -c CONFIG (--version V | --weights FILE) --data DATASET [--json]\n"
    "                 [--limit N] [--set section.key=value]...\n\n"
    "Scores a version of the snapshot store of CONFIG (snapshot.store, model.name), or a weights\n"
    "file with CONFIG's model spec, on DATASET: accuracy and log loss (mse for a squared head), the\n"
    "accuracy per class of the label and the confusion matrix (rows: label, columns: predicted).\n\n"
    EDDY_CLI_HELP_CONFIG
    "  -V, --version V         a version of the store (\"42\" or \"v000042\"); verified first\n"
    "  -w, --weights FILE      a weights.safetensors file instead\n"
    "  -d, --data DATASET      JSONL file of events, fashion-mnist:train or fashion-mnist:test\n"
    "  -n, --limit N           score at most N events\n"
    EDDY_CLI_HELP_SET
    "      --json              print one JSON object on stdout instead of the table\n"
    EDDY_CLI_HELP_HELP "\n"
    "Exit: 0 ok, 1 runtime failure (version missing or corrupt, no valid event), 2 usage/config error.\n";

typedef struct {
  uint32_t classes;       /* label classes counted (0 for squared) */
  uint64_t events, invalid;
  double w, wloss, whit;
  uint64_t *class_n, *class_hit; /* [classes] */
  uint64_t *confusion;           /* [classes x classes] when classes <= EVAL_CONFUSION_MAX */
} eval_totals_t;

static int parse_version(const char *text, uint64_t *v) {
  if (*text == 'v') text++;
  char *end;
  unsigned long long x = strtoull(text, &end, 10);
  if (!*text || *end || text[0] == '-' || x == 0 || x > EDDY_MANIFEST_MAX_INT) return -1;
  *v = x;
  return 0;
}

static void totals_add(eval_totals_t *t, const eddy_eval_scores_t *s) {
  for (size_t i = 0; i < s->n; i++) {
    t->events++;
    t->w += s->weight[i];
    t->wloss += s->weight[i] * s->loss[i];
    int32_t y = s->label[i], p = s->pred[i];
    t->whit += s->weight[i] * (y >= 0 && y == p);
    if (y < 0 || (uint32_t)y >= t->classes) continue;
    t->class_n[y]++;
    t->class_hit[y] += y == p;
    if (t->confusion && p >= 0 && (uint32_t)p < t->classes) t->confusion[(size_t)y * t->classes + (uint32_t)p]++;
  }
}

/* Scores every event of data in chunks. */
static int score_dataset(const eddy_config_t *cfg, const eddy_infer_t *model, const char *data, uint64_t limit,
                         eval_totals_t *t) {
  eddy_event_schema_t schema = eddy_model_event_schema(eddy_infer_spec(model));
  schema.max_bytes = cfg->max_event_bytes;
  char why[1024];
  eddy_dataset_t *ds = eddy_dataset_new(data, &schema, why, sizeof why);
  if (!ds) {
    fprintf(stderr, "eddy eval: %s\n", why);
    return EDDY_EXIT_FAILURE;
  }
  eddy_event_t *evs = calloc(EVAL_CHUNK, sizeof *evs);
  if (!evs) {
    eddy_dataset_destroy(ds);
    fprintf(stderr, "eddy eval: out of memory\n");
    return EDDY_EXIT_FAILURE;
  }
  for (size_t i = 0; i < EVAL_CHUNK; i++) eddy_event_init(&evs[i]);
  int rc = EDDY_EXIT_OK;
  bool eof = false;
  while (!eof && rc == EDDY_EXIT_OK && (!limit || t->events < limit)) {
    size_t n = 0;
    while (n < EVAL_CHUNK && (!limit || t->events + n < limit)) {
      eddy_err_t err = eddy_dataset_next(ds, &evs[n], &eof, why, sizeof why);
      if (eddy_err_is_bad_event(err)) {
        t->invalid++;
        continue;
      }
      if (err) {
        fprintf(stderr, "eddy eval: %s: %s\n", data, why);
        rc = EDDY_EXIT_FAILURE;
        break;
      }
      if (eof) break;
      n++;
    }
    if (rc || !n) break;
    eddy_eval_scores_t s;
    if (eddy_eval_model(model, evs, n, &s, why, sizeof why) != EDDY_OK) {
      fprintf(stderr, "eddy eval: %s\n", why);
      rc = EDDY_EXIT_FAILURE;
      break;
    }
    totals_add(t, &s);
    eddy_eval_scores_free(&s);
  }
  for (size_t i = 0; i < EVAL_CHUNK; i++) eddy_event_free(&evs[i]);
  free(evs);
  eddy_dataset_destroy(ds);
  if (!rc && !t->events) {
    fprintf(stderr, "eddy eval: %s: no valid events (%" PRIu64 " invalid)\n", data, t->invalid);
    rc = EDDY_EXIT_FAILURE;
  }
  return rc;
}

static void print_json(const eval_totals_t *t, eddy_head_t head, const char *model_name, uint64_t version,
                       const char *status, const char *weights, const char *data) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "model", model_name);
  if (version) cJSON_AddNumberToObject(o, "version", (double)version);
  else cJSON_AddNullToObject(o, "version");
  if (status) cJSON_AddStringToObject(o, "status", status);
  else cJSON_AddNullToObject(o, "status");
  cJSON_AddStringToObject(o, "weights", weights);
  cJSON_AddStringToObject(o, "data", data);
  cJSON_AddNumberToObject(o, "events", (double)t->events);
  cJSON_AddNumberToObject(o, "invalid", (double)t->invalid);
  double loss = t->w > 0 ? t->wloss / t->w : NAN, acc = t->w > 0 ? t->whit / t->w : NAN;
  bool sq = head == EDDY_HEAD_SQUARED;
  if (!sq && isfinite(acc)) cJSON_AddNumberToObject(o, "accuracy", acc);
  else cJSON_AddNullToObject(o, "accuracy");
  if (!sq && isfinite(loss)) cJSON_AddNumberToObject(o, "logloss", loss);
  else cJSON_AddNullToObject(o, "logloss");
  if (sq && isfinite(loss)) cJSON_AddNumberToObject(o, "mse", loss);
  else cJSON_AddNullToObject(o, "mse");
  cJSON *pc = cJSON_AddArrayToObject(o, "per_class");
  for (uint32_t k = 0; k < t->classes; k++) {
    cJSON *e = cJSON_CreateObject();
    cJSON_AddItemToArray(pc, e);
    cJSON_AddNumberToObject(e, "class", k);
    cJSON_AddNumberToObject(e, "events", (double)t->class_n[k]);
    if (t->class_n[k]) cJSON_AddNumberToObject(e, "accuracy", (double)t->class_hit[k] / (double)t->class_n[k]);
    else cJSON_AddNullToObject(e, "accuracy");
  }
  if (t->confusion) {
    cJSON *cm = cJSON_AddArrayToObject(o, "confusion");
    for (uint32_t y = 0; y < t->classes; y++) {
      cJSON *row = cJSON_CreateArray();
      cJSON_AddItemToArray(cm, row);
      for (uint32_t p = 0; p < t->classes; p++)
        cJSON_AddItemToArray(row, cJSON_CreateNumber((double)t->confusion[(size_t)y * t->classes + p]));
    }
  } else {
    cJSON_AddNullToObject(o, "confusion");
  }
  char *text = cJSON_PrintUnformatted(o);
  if (text) puts(text);
  free(text);
  cJSON_Delete(o);
}

static void print_table(const eval_totals_t *t, eddy_head_t head, const char *what, const char *data) {
  double loss = t->w > 0 ? t->wloss / t->w : NAN, acc = t->w > 0 ? t->whit / t->w : NAN;
  printf("%s on %s: %" PRIu64 " events (%" PRIu64 " invalid skipped)\n", what, data, t->events, t->invalid);
  if (head == EDDY_HEAD_SQUARED) {
    printf("mse %.6g\n", loss);
    return;
  }
  printf("accuracy %.4f  logloss %.4f\n\nclass   events  accuracy\n", acc, loss);
  for (uint32_t k = 0; k < t->classes; k++)
    if (t->class_n[k])
      printf("%5u %8" PRIu64 "  %8.4f\n", k, t->class_n[k], (double)t->class_hit[k] / (double)t->class_n[k]);
  if (!t->confusion) return;
  printf("\nconfusion (rows: label, columns: predicted)\n     ");
  for (uint32_t p = 0; p < t->classes; p++) printf(" %6u", p);
  putchar('\n');
  for (uint32_t y = 0; y < t->classes; y++) {
    if (!t->class_n[y]) continue;
    printf("%5u", y);
    for (uint32_t p = 0; p < t->classes; p++) printf(" %6" PRIu64, t->confusion[(size_t)y * t->classes + p]);
    putchar('\n');
  }
}

/* The model to score: version v of the store (verified), or the weights file. *spec_out gets its
 * spec, *status the version's status name. NULL after a message on stderr. */
static eddy_infer_t *open_model(const eddy_config_t *cfg, uint64_t v, const char *weights, char *path,
                                size_t path_size, const char **status) {
  char why[1024];
  eddy_model_spec_t spec = cfg->spec;
  *status = NULL;
  if (v) {
    eddy_store_t *st = eddy_store_new(cfg->snapshot_store, cfg->model_name, EDDY_STORE_READONLY, why, sizeof why);
    if (!st) {
      fprintf(stderr, "eddy eval: %s\n", why);
      return NULL;
    }
    char dir[4096];
    eddy_store_path(st, v, NULL, dir, sizeof dir);
    eddy_store_path(st, v, EDDY_STORE_WEIGHTS, path, path_size);
    eddy_store_destroy(st);
    eddy_manifest_t m;
    eddy_err_t err = eddy_store_verify(dir, &m, why, sizeof why);
    if (err) {
      eddy_manifest_clear(&m);
      fprintf(stderr, "eddy eval: v%06" PRIu64 " in %s/%s: %s\n", v, cfg->snapshot_store, cfg->model_name, why);
      return NULL;
    }
    spec = m.spec;
    *status = eddy_version_status_name(m.status);
    eddy_manifest_clear(&m);
  } else {
    snprintf(path, path_size, "%s", weights);
  }
  eddy_st_reader_t *r = eddy_st_reader_new(path, 0, why, sizeof why);
  eddy_infer_t *model = r ? eddy_infer_new(&spec, r, EDDY_INFER_F32, why, sizeof why) : NULL;
  eddy_st_reader_destroy(r);
  if (!model) fprintf(stderr, "eddy eval: %s: %s\n", path, why);
  return model;
}

int eddy_cmd_eval(int argc, char **argv) {
  static const struct option opts[] = {
      EDDY_CLI_OPT_CONFIG,                       {"version", required_argument, NULL, 'V'},
      {"weights", required_argument, NULL, 'w'}, {"data", required_argument, NULL, 'd'},
      {"limit", required_argument, NULL, 'n'},   EDDY_CLI_OPT_SET,
      {"json", no_argument, NULL, 'j'},          EDDY_CLI_OPT_HELP,
      {NULL, 0, NULL, 0}};
  eddy_cli_t cli = {.cmd = "eval", .usage = eval_usage};
  const char *weights = NULL, *data = NULL, *vtext = NULL;
  uint64_t limit = 0, version = 0;
  bool json = false;
  int c;
  while ((c = eddy_cli_getopt(&cli, argc, argv, "c:V:w:d:n:s:h", opts)) != -1) {
    switch (c) {
      case 'V': vtext = optarg; break;
      case 'w': weights = optarg; break;
      case 'd': data = optarg; break;
      case 'j': json = true; break;
      case 'n': {
        char *end;
        unsigned long long x = strtoull(optarg, &end, 10);
        if (!*optarg || *end || optarg[0] == '-' || x == 0) {
          fprintf(stderr, "eddy eval: --limit \"%s\": expected a positive integer\n", optarg);
          return EDDY_EXIT_USAGE;
        }
        limit = x;
        break;
      }
      default: return cli.exit; /* EDDY_CLI_STOP: --help or a usage error, printed */
    }
  }
  if (cli.config_path && (!data || !(vtext || weights) || (vtext && weights))) {
    /* without -c, eddy_cli_load_config names that first */
    fprintf(stderr, "eddy eval: %s (eddy eval --help shows the options)\n",
            !data ? "--data DATASET is required" : "exactly one of --version V and --weights FILE is required");
    return EDDY_EXIT_USAGE;
  }
  if (vtext && parse_version(vtext, &version)) {
    fprintf(stderr, "eddy eval: --version \"%s\": expected a version number (42 or v000042)\n", vtext);
    return EDDY_EXIT_USAGE;
  }
  eddy_config_t cfg;
  int load_rc = eddy_cli_load_config(&cli, EDDY_CLI_NEED_CONFIG, &cfg);
  if (load_rc != EDDY_EXIT_OK) return load_rc;
  char path[4096];
  const char *status = NULL;
  eddy_infer_t *model = open_model(&cfg, version, weights, path, sizeof path, &status);
  int rc = EDDY_EXIT_FAILURE;
  eval_totals_t t = {0};
  if (model) {
    const eddy_model_spec_t *spec = eddy_infer_spec(model);
    t.classes = spec->head == EDDY_HEAD_SOFTMAX ? spec->classes : spec->head == EDDY_HEAD_LOGISTIC ? 2 : 0;
    if (t.classes > EVAL_CLASSES_MAX) t.classes = EVAL_CLASSES_MAX;
    t.class_n = calloc(t.classes + 1, sizeof *t.class_n);
    t.class_hit = calloc(t.classes + 1, sizeof *t.class_hit);
    if (t.classes <= EVAL_CONFUSION_MAX && t.classes)
      t.confusion = calloc((size_t)t.classes * t.classes, sizeof *t.confusion);
    if (!t.class_n || !t.class_hit || (t.classes && t.classes <= EVAL_CONFUSION_MAX && !t.confusion))
      fprintf(stderr, "eddy eval: out of memory\n");
    else
      rc = score_dataset(&cfg, model, data, limit, &t);
    if (rc == EDDY_EXIT_OK) {
      char what[4200];
      if (version) snprintf(what, sizeof what, "%s v%06" PRIu64 " (%s)", cfg.model_name, version, status);
      else snprintf(what, sizeof what, "%s", path);
      if (json) print_json(&t, spec->head, cfg.model_name, version, status, path, data);
      else print_table(&t, spec->head, what, data);
    }
  }
  free(t.class_n);
  free(t.class_hit);
  free(t.confusion);
  eddy_infer_destroy(model);
  eddy_config_free(&cfg);
  return rc;
}
