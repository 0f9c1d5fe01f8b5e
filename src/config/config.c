/* INI configuration: libinih tokenizes, this file knows every section and key. One table lists each
 * key with its type, range and place in eddy_config_t (the [model] and [train] ranges, defaults and
 * cross-key rules are the model layer's); values are parsed strictly (whole decimal value consumed,
 * finite, in range) and every rejection names origin, key, value and reason. The file is
 * read whole (capped), fed to inih one line at a time so that line numbers and over-long lines are
 * ours to report, then --set overrides apply, then cross-key checks run. */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CONFIG_MAX_FILE_BYTES (1u << 20) /* an INI file larger than this is refused */
#define CONFIG_MAX_KAFKA 256             /* [kafka] properties */
#define CONFIG_VALUE_MAX (EDDY_CONFIG_STR * 4)

typedef enum {
  K_STR,    /* free text, may be empty */
  K_PATH,   /* non-empty text */
  K_NAME,   /* [A-Za-z0-9_.-]+ */
  K_TOPIC,  /* Kafka topic name: [A-Za-z0-9._-]{1,249}; "" allowed when min == 0 */
  K_DEVICE, /* cpu | cuda | cuda:N | cuda:all */
  K_SPREC,  /* serve.precision: auto | fp32 | bf16 | fp16 | int8 */
  K_PRECS,  /* unsigned mask of serving precisions from a comma list (eddy_infer_precision_parse_list) */
  K_URL,    /* http:// or https:// */
  K_BIND,   /* host:port */
  K_BIND_OPT, /* host:port, or "" for none */
  K_INT,    /* int field, non-negative */
  K_U32,
  K_U64,
  K_SIZE, /* u64 with an optional binary suffix */
  K_F32,
  K_F64,
  K_BOOL,
  K_HIDDEN, /* comma list of layer widths into spec.hidden / spec.n_hidden */
  K_HEAD,
  K_PREC,
  K_OPTIM,
  K_STRATEGY,
  K_DTYPE, /* string field, canonical upper case */
  K_FORMAT /* string field */
} kind_t;

typedef struct {
  const char *section;
  const char *key;
  kind_t kind;
  size_t off;
  size_t size;               /* bytes of a string field */
  const eddy_range_t *range; /* numbers and hidden widths: the accepted values */
  bool optional;             /* K_TOPIC: "" allowed */
} key_def_t;

/* The [model] and [train] keys take their ranges from the model layer (eddy_spec_limits,
 * eddy_train_limits, eddy_scaler_limits), the keys only the services use from RANGE here. */
#define OFF(f) offsetof(eddy_config_t, f)
#define RANGE(lo, hi, open) (&(const eddy_range_t){lo, hi, open})
#define OPEN_MIN EDDY_RANGE_OPEN_MIN
#define OPEN_MAX EDDY_RANGE_OPEN_MAX
#define STR(s, k, kind, f) \
  { s, k, kind, OFF(f), sizeof(((eddy_config_t *)0)->f), NULL, false }
#define NUM(s, k, kind, f, range) \
  { s, k, kind, OFF(f), 0, range, false }
#define TOPIC(s, k, f, required) \
  { s, k, K_TOPIC, OFF(f), sizeof(((eddy_config_t *)0)->f), NULL, !(required) }

static const key_def_t keys[] = {
    STR("model", "name", K_NAME, model_name),
    NUM("model", "hash_bits", K_U32, spec.hash_bits, &eddy_spec_limits.hash_bits),
    NUM("model", "embed_dim", K_U32, spec.embed_dim, &eddy_spec_limits.embed_dim),
    NUM("model", "dense_dim", K_U32, spec.dense_dim, &eddy_spec_limits.dense_dim),
    NUM("model", "hidden", K_HIDDEN, spec, &eddy_spec_limits.hidden),
    NUM("model", "head", K_HEAD, spec.head, NULL),
    NUM("model", "classes", K_U32, spec.classes, &eddy_spec_limits.classes),

    STR("train", "device", K_DEVICE, device),
    NUM("train", "precision", K_PREC, train.precision, NULL),
    NUM("train", "batch_size", K_U32, batch_size, RANGE(1, 1048576, 0)),
    NUM("train", "accum_steps", K_U32, accum_steps, RANGE(1, 65536, 0)),
    NUM("train", "optimizer", K_OPTIM, train.optimizer, NULL),
    NUM("train", "lr", K_F32, train.lr, &eddy_train_limits.lr),
    NUM("train", "momentum", K_F32, train.momentum, &eddy_train_limits.momentum),
    NUM("train", "beta1", K_F32, train.beta1, &eddy_train_limits.beta1),
    NUM("train", "beta2", K_F32, train.beta2, &eddy_train_limits.beta2),
    NUM("train", "eps", K_F32, train.eps, &eddy_train_limits.eps),
    NUM("train", "weight_decay", K_F32, train.weight_decay, &eddy_train_limits.weight_decay),
    NUM("train", "clip_norm", K_F32, train.clip_norm, &eddy_train_limits.clip_norm),
    NUM("train", "seed", K_U64, train.seed, RANGE(0, 18446744073709551615.0, 0)),
    NUM("train", "threads", K_INT, train.threads, &eddy_train_limits.threads),
    NUM("train", "allow_tf32", K_BOOL, train.allow_tf32, NULL),
    NUM("train", "holdout_fraction", K_F64, holdout_fraction, RANGE(0, 0.5, 0)),
    NUM("train", "max_skipped_steps", K_U32, max_skipped_steps, RANGE(1, 1000000000, 0)),
    NUM("train", "metrics_window", K_U32, metrics_window, RANGE(1, 1000000000, 0)),
    NUM("train", "drift.threshold", K_F64, drift_threshold, RANGE(0, 1e6, 0)),
    NUM("train", "drift.slack", K_F64, drift_slack, RANGE(0, 100, OPEN_MIN)),
    NUM("train", "loss_scale.init", K_F32, train.loss_scale.init_scale,
        &eddy_scaler_limits.init_scale),
    NUM("train", "loss_scale.growth", K_F32, train.loss_scale.growth, &eddy_scaler_limits.growth),
    NUM("train", "loss_scale.backoff", K_F32, train.loss_scale.backoff,
        &eddy_scaler_limits.backoff),
    NUM("train", "loss_scale.interval", K_U32, train.loss_scale.interval,
        &eddy_scaler_limits.interval),
    NUM("train", "loss_scale.min", K_F32, train.loss_scale.min_scale,
        &eddy_scaler_limits.min_scale),
    NUM("train", "loss_scale.dynamic", K_BOOL, train.loss_scale.enabled, NULL),

    TOPIC("stream", "topic", topic, 1),
    STR("stream", "format", K_FORMAT, format),
    TOPIC("stream", "dlq_topic", dlq_topic, 0),
    NUM("stream", "max_event_bytes", K_U32, max_event_bytes, RANGE(16, 67108864, 0)),

    STR("buffer", "path", K_PATH, buffer_path),
    NUM("buffer", "capacity_events", K_U64, buffer_capacity_events, RANGE(1, 1e12, 0)),
    NUM("buffer", "capacity_bytes", K_SIZE, buffer_capacity_bytes,
        RANGE(1048576, 1125899906842624.0, 0)),
    NUM("buffer", "sync", K_BOOL, buffer_sync, NULL),

    NUM("replay", "ratio", K_F64, replay_ratio, RANGE(0, 0.95, 0)),
    NUM("replay", "strategy", K_STRATEGY, replay_strategy, NULL),
    NUM("replay", "reservoir_size", K_U32, reservoir_size, RANGE(1, 100000000, 0)),
    NUM("replay", "idle_steps", K_U32, replay_idle_steps, RANGE(0, 1000000000, 0)),

    STR("snapshot", "store", K_PATH, snapshot_store),
    NUM("snapshot", "every_steps", K_U32, snapshot_every_steps, RANGE(0, 1000000000, 0)),
    NUM("snapshot", "every_seconds", K_U32, snapshot_every_seconds, RANGE(0, 10000000, 0)),
    STR("snapshot", "dtype", K_DTYPE, snapshot_dtype),
    NUM("snapshot", "keep", K_U32, snapshot_keep, RANGE(1, 1000000, 0)),
    TOPIC("snapshot", "topic", snapshot_topic, 1),
    NUM("snapshot", "gate.max_regression", K_F64, gate_max_regression, RANGE(0, 1e6, 0)),
    NUM("snapshot", "gate.noise_z", K_F64, gate_noise_z, RANGE(0, 100, 0)),
    NUM("snapshot", "gate.prior_margin", K_F64, gate_prior_margin, RANGE(0, 1, 0)),
    NUM("snapshot", "gate.min_events", K_U32, gate_min_events, RANGE(1, 10000000, 0)),
    NUM("snapshot", "gate.holdout_events", K_U32, gate_holdout_events, RANGE(1, 10000000, 0)),
    NUM("snapshot", "gate.holdout_max_age", K_U32, gate_holdout_max_age, RANGE(0, 1000000000, 0)),
    STR("snapshot", "gate.validation", K_STR, gate_validation),
    NUM("snapshot", "gate.validation_max_regression", K_F64, gate_validation_max_regression, RANGE(0, 1e6, 0)),
    NUM("snapshot", "precisions", K_PRECS, snapshot_precisions, NULL),

    STR("serve", "trainer_url", K_URL, serve_trainer_url),
    STR("serve", "store", K_STR, serve_store),
    NUM("serve", "poll_seconds", K_U32, serve_poll_seconds, RANGE(1, 86400, 0)),
    NUM("serve", "threads", K_U32, serve_threads, RANGE(1, 1024, 0)),
    NUM("serve", "heartbeat_seconds", K_U32, serve_heartbeat_seconds, RANGE(1, 3600, 0)),
    STR("serve", "precision", K_SPREC, serve_precision),
    STR("serve", "grpc_bind", K_BIND_OPT, serve_grpc_bind),
    NUM("serve", "precisions", K_PRECS, serve_precisions, NULL),
    NUM("serve", "max_accuracy_drop", K_F64, serve_max_accuracy_drop, RANGE(0, 1e6, 0)),
    NUM("serve", "latency_target_ms", K_F64, serve_latency_target_ms, RANGE(0, 3.6e6, 0)),

    STR("http", "bind", K_BIND, http_bind),
    STR("http", "token_file", K_STR, http_token_file),
    NUM("http", "max_body_bytes", K_SIZE, http_max_body_bytes, RANGE(1, 1073741824, 0)),
    NUM("http", "max_connections", K_U32, http_max_connections, RANGE(16, 1000000, 0)),
    NUM("http", "max_connections_per_client", K_U32, http_max_connections_per_client, RANGE(1, 1000000, 0)),
    NUM("http", "header_timeout_seconds", K_U32, http_header_timeout_seconds, RANGE(1, 3600, 0)),
};

#define N_KEYS (sizeof keys / sizeof keys[0])

static const char *const sections[] = {"model",  "train",    "stream", "kafka", "buffer",
                                       "replay", "snapshot", "serve",  "http"};

static const char *const head_names[] = {"logistic", "softmax", "squared", NULL};
static const char *const prec_names[] = {"fp32", "bf16", "fp16", NULL};
static const char *const optim_names[] = {"sgd", "adam", "adamw", "adagrad", NULL};
static const char *const strategy_names[] = {"uniform", "recent", "balanced", NULL};
static const char *const dtype_names[] = {"F32", "F16", "BF16", NULL};
static const char *const format_names[] = {"json", NULL};

typedef struct {
  char origin[EDDY_CONFIG_STR];
  char value[CONFIG_VALUE_MAX];
  uint64_t seq; /* 0: default; otherwise order of assignment */
} key_state_t;

typedef struct {
  eddy_config_t *cfg;
  const char *name;
  const char *text;
  size_t len, pos;
  int line;
  uint64_t seq;
  key_state_t state[N_KEYS];
  /* first error */
  bool failed;
  eddy_err_t code;
  int err_line;
  bool err_from_handler;
  char *errstr;
  size_t errstr_size;
  /* a section header not (yet) followed by a key, reported when unknown and left empty */
  int section_line;
  char section_name[64];
  bool section_unknown, section_used;
} load_ctx_t;

void eddy_config_defaults(eddy_config_t *cfg) {
  memset(cfg, 0, sizeof *cfg);
  snprintf(cfg->model_name, sizeof cfg->model_name, "model");
  cfg->spec = eddy_model_spec_defaults(); /* the model layer owns these defaults */

  snprintf(cfg->device, sizeof cfg->device, "cpu");
  cfg->train = eddy_train_opts_defaults(); /* loss scaling: eddy_scaler_defaults() */
  cfg->batch_size = 64;
  cfg->accum_steps = 1;
  cfg->holdout_fraction = 0.02;
  cfg->max_skipped_steps = 100;
  cfg->metrics_window = 10000;
  cfg->drift_threshold = 25;
  cfg->drift_slack = 0.5;

  snprintf(cfg->topic, sizeof cfg->topic, "events");
  snprintf(cfg->format, sizeof cfg->format, "json");
  cfg->max_event_bytes = 65536;

  snprintf(cfg->buffer_path, sizeof cfg->buffer_path, "eddy-buffer");
  cfg->buffer_capacity_events = 1000000;
  cfg->buffer_capacity_bytes = 1ull << 30;
  cfg->buffer_sync = true;

  cfg->replay_ratio = 0.25;
  cfg->replay_strategy = EDDY_REPLAY_UNIFORM;
  cfg->reservoir_size = 10000;
  cfg->replay_idle_steps = 0;

  snprintf(cfg->snapshot_store, sizeof cfg->snapshot_store, "snapshots");
  cfg->snapshot_every_steps = 500;
  cfg->snapshot_every_seconds = 60;
  snprintf(cfg->snapshot_dtype, sizeof cfg->snapshot_dtype, "F32");
  cfg->snapshot_keep = 10;
  snprintf(cfg->snapshot_topic, sizeof cfg->snapshot_topic, "eddy-snapshots");
  cfg->gate_max_regression = 0.02;
  cfg->gate_noise_z = 2;
  cfg->gate_prior_margin = 0.01;
  cfg->gate_min_events = 50;
  cfg->gate_holdout_events = 2000;
  cfg->gate_holdout_max_age = 3600;
  cfg->gate_validation_max_regression = 0.02;
  cfg->snapshot_precisions = EDDY_INFER_ALL_PRECISIONS;

  snprintf(cfg->serve_trainer_url, sizeof cfg->serve_trainer_url, "http://127.0.0.1:8080");
  cfg->serve_poll_seconds = 5;
  cfg->serve_threads = 4;
  cfg->serve_heartbeat_seconds = 2;
  snprintf(cfg->serve_precision, sizeof cfg->serve_precision, "fp32");
  cfg->serve_precisions = EDDY_INFER_ALL_PRECISIONS;
  cfg->serve_max_accuracy_drop = 0.01;
  cfg->serve_latency_target_ms = 0;

  snprintf(cfg->http_bind, sizeof cfg->http_bind, "127.0.0.1:8080");
  cfg->http_max_body_bytes = 1048576;
  cfg->http_max_connections = 4096;
  cfg->http_max_connections_per_client = 256;
  cfg->http_header_timeout_seconds = 10;
}

void eddy_config_free(eddy_config_t *cfg) {
  if (!cfg) return;
  free(cfg->kafka);
  cfg->kafka = NULL;
  cfg->n_kafka = 0;
}

const char *eddy_config_kafka(const eddy_config_t *cfg, const char *key) {
  if (!cfg || !key) return NULL;
  for (size_t i = 0; i < cfg->n_kafka; i++)
    if (strcmp(cfg->kafka[i].key, key) == 0) return cfg->kafka[i].value;
  return NULL;
}

/* Value parsers: each returns NULL when the value is accepted, else the reason. */

static bool ieq(const char *a, const char *b) { return strcasecmp(a, b) == 0; }

/* Strict unsigned decimal: digits only, no sign, no overflow. */
static bool parse_u64(const char *s, uint64_t *out) {
  if (!isdigit((unsigned char)s[0])) return false;
  errno = 0;
  char *end;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end) return false;
  *out = v;
  return true;
}

/* A plain decimal: [+-]digits[.digits][(e|E)[+-]digits], with a digit before the exponent. strtod
 * alone would also take hexadecimal ("0x10" = 16). */
static bool is_decimal(const char *s) {
  size_t digits = 0;
  if (*s == '+' || *s == '-') s++;
  for (; isdigit((unsigned char)*s); s++) digits++;
  if (*s == '.')
    for (s++; isdigit((unsigned char)*s); s++) digits++;
  if (digits == 0) return false;
  if (*s == 'e' || *s == 'E') {
    s++;
    if (*s == '+' || *s == '-') s++;
    if (!isdigit((unsigned char)*s)) return false;
    while (isdigit((unsigned char)*s)) s++;
  }
  return *s == '\0';
}

/* Strict finite decimal double; *finite false for inf/nan spellings and overflow. */
static bool parse_f64(const char *s, double *out, bool *finite) {
  *finite = true;
  if (!*s || isspace((unsigned char)s[0])) return false;
  errno = 0;
  char *end;
  double v = strtod(s, &end);
  if (*end || end == s) return false;
  if (!isfinite(v)) {
    *finite = false;
    return false;
  }
  if (!is_decimal(s)) return false;
  *out = v;
  return true;
}

/* Table bounds are doubles; 2^64 and above mean "no upper bound". */
static uint64_t bound_u64(double b) {
  return b >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)b;
}

/* Integer ranges are closed; stated with every digit (18446744073709551615). */
static const char *range_reason(const eddy_range_t *r, bool whole, char *why, size_t n) {
  snprintf(why, n, "must be %sbetween %llu and %llu", whole ? "a whole number " : "",
           (unsigned long long)bound_u64(r->min), (unsigned long long)bound_u64(r->max));
  return why;
}

/* Reason for a value that is not a plain unsigned integer. */
static const char *int_reason(const char *value, const eddy_range_t *r, char *why, size_t n) {
  double d;
  bool finite;
  if (parse_f64(value, &d, &finite) || !finite) return range_reason(r, true, why, n);
  snprintf(why, n, "not a number");
  return why;
}

static bool in_u64_range(const eddy_range_t *r, uint64_t v) {
  return v >= bound_u64(r->min) && v <= bound_u64(r->max);
}

static const char *parse_uint(const char *value, const eddy_range_t *r, uint64_t *out, char *why,
                              size_t n) {
  if (!parse_u64(value, out)) return int_reason(value, r, why, n);
  if (!in_u64_range(r, *out)) return range_reason(r, false, why, n);
  return NULL;
}

/* Integer with an optional binary suffix: K, M, G, T, KiB, MiB, GiB, TiB (all powers of 1024). */
static const char *parse_size(const char *value, const eddy_range_t *r, uint64_t *out, char *why,
                              size_t n) {
  static const char *const suffixes[] = {"K", "M", "G", "T"};
  size_t digits = 0;
  while (isdigit((unsigned char)value[digits])) digits++;
  const char *suf = value + digits;
  int shift = 0;
  if (*suf) {
    for (int i = 0; i < 4; i++) {
      size_t sl = strlen(suffixes[i]);
      if (strncasecmp(suf, suffixes[i], sl) == 0 &&
          (suf[sl] == '\0' || strcasecmp(suf + sl, "iB") == 0))
        shift = 10 * (i + 1);
    }
    if (!shift || digits == 0) {
      snprintf(why, n,
               "not a size (a whole number, optionally with K, M, G, T, KiB, MiB, GiB or TiB)");
      return why;
    }
  }
  char num[32];
  if (digits == 0) return int_reason(value, r, why, n);
  if (digits >= sizeof num) return range_reason(r, false, why, n);
  memcpy(num, value, digits);
  num[digits] = '\0';
  uint64_t v;
  if (!parse_u64(num, &v) || (shift && v > (UINT64_MAX >> shift)))
    return range_reason(r, false, why, n);
  v <<= shift;
  if (!in_u64_range(r, v)) return range_reason(r, false, why, n);
  *out = v;
  return NULL;
}

static const char *parse_float(const key_def_t *k, const char *value, double *out, char *why,
                               size_t n) {
  bool finite;
  if (!parse_f64(value, out, &finite)) {
    snprintf(why, n, finite ? "not a number" : "not a finite number");
    return why;
  }
  if (eddy_range_holds(k->range, *out)) return NULL;
  return eddy_range_reason(k->range, why, n);
}

static const char *parse_bool(const char *value, bool *out) {
  static const char *const yes[] = {"true", "1", "yes", "on"};
  static const char *const no[] = {"false", "0", "no", "off"};
  for (int i = 0; i < 4; i++) {
    if (ieq(value, yes[i])) {
      *out = true;
      return NULL;
    }
    if (ieq(value, no[i])) {
      *out = false;
      return NULL;
    }
  }
  return "expected true or false (also 1/0, yes/no, on/off)";
}

static const char *parse_enum(const char *value, const char *const *names, int *out, char *why,
                              size_t n) {
  for (int i = 0; names[i]; i++) {
    if (ieq(value, names[i])) {
      *out = i;
      return NULL;
    }
  }
  size_t used = (size_t)snprintf(why, n, "expected one of");
  for (int i = 0; names[i] && used < n; i++)
    used += (size_t)snprintf(why + used, n - used, "%s %s", i ? "," : "", names[i]);
  return why;
}

static const char *parse_hidden(const char *value, const eddy_range_t *width,
                                eddy_model_spec_t *spec, char *why, size_t n) {
  uint32_t layers[EDDY_MAX_HIDDEN];
  uint32_t count = 0;
  const char *p = value;
  while (isspace((unsigned char)*p)) p++;
  if (*p == '\0') {
    spec->n_hidden = 0;
    memset(spec->hidden, 0, sizeof spec->hidden);
    return NULL;
  }
  for (;;) {
    while (isspace((unsigned char)*p)) p++;
    size_t digits = 0;
    while (isdigit((unsigned char)p[digits])) digits++;
    if (digits == 0) return "not a comma-separated list of layer widths (e.g. 256,128)";
    if (count == EDDY_MAX_HIDDEN) {
      snprintf(why, n, "at most %d hidden layers", EDDY_MAX_HIDDEN);
      return why;
    }
    char num[16];
    uint64_t v = UINT64_MAX;
    if (digits < sizeof num) {
      memcpy(num, p, digits);
      num[digits] = '\0';
      if (!parse_u64(num, &v)) v = UINT64_MAX;
    }
    if (!in_u64_range(width, v)) {
      char reason[64];
      snprintf(why, n, "each layer width %s", eddy_range_reason(width, reason, sizeof reason));
      return why;
    }
    layers[count++] = (uint32_t)v;
    p += digits;
    while (isspace((unsigned char)*p)) p++;
    if (*p == '\0') break;
    if (*p != ',') return "not a comma-separated list of layer widths (e.g. 256,128)";
    p++;
  }
  spec->n_hidden = count;
  memset(spec->hidden, 0, sizeof spec->hidden);
  memcpy(spec->hidden, layers, count * sizeof layers[0]);
  return NULL;
}

static bool is_name_char(char c) {
  return isalnum((unsigned char)c) || c == '_' || c == '.' || c == '-';
}

static const char *check_text(const key_def_t *k, const char *value, char *why, size_t n) {
  size_t len = strlen(value);
  if (len >= k->size) {
    snprintf(why, n, "longer than %zu bytes", k->size - 1);
    return why;
  }
  switch (k->kind) {
    case K_PATH:
      if (len == 0) return "must not be empty";
      break;
    case K_NAME:
      if (len == 0) return "must not be empty";
      for (size_t i = 0; i < len; i++)
        if (!is_name_char(value[i])) return "only letters, digits, '_', '.' and '-' are allowed";
      break;
    case K_TOPIC:
      if (len == 0) return k->optional ? NULL : "must not be empty";
      if (len > 249) return "a Kafka topic name has at most 249 characters";
      for (size_t i = 0; i < len; i++)
        if (!is_name_char(value[i]))
          return "a Kafka topic name has only letters, digits, '_', '.' and '-'";
      break;
    case K_DEVICE: {
      if (strcmp(value, "cpu") == 0 || strcmp(value, "cuda") == 0 || strcmp(value, "cuda:all") == 0)
        break;
      uint64_t ord;
      if (strncmp(value, "cuda:", 5) == 0 && parse_u64(value + 5, &ord) && ord < 64) break;
      return "expected cpu, cuda, cuda:N (N 0..63) or cuda:all";
    }
    case K_SPREC:
      if (strcmp(value, "auto") != 0 && eddy_infer_precision_parse(value, NULL) != 0)
        return "expected auto, fp32, bf16, fp16 or int8";
      break;
    case K_URL:
      if ((strncmp(value, "http://", 7) != 0 || len == 7) &&
          (strncmp(value, "https://", 8) != 0 || len == 8))
        return "expected an http:// or https:// URL";
      break;
    case K_BIND_OPT:
      if (!*value) break;
      /* fall through */
    case K_BIND: {
      const char *colon = strrchr(value, ':');
      uint64_t port;
      if (!colon || colon == value || !parse_u64(colon + 1, &port) || port > 65535)
        return k->kind == K_BIND_OPT ? "expected host:port (port 0..65535), or nothing for none"
                                     : "expected host:port (port 0..65535)";
      break;
    }
    default:
      break;
  }
  return NULL;
}

/* Parses value for key k into cfg; NULL on success, else the reason (possibly in why). */
static const char *assign(eddy_config_t *cfg, const key_def_t *k, const char *value, char *why,
                          size_t n) {
  void *field = (char *)cfg + k->off;
  const char *reason = NULL;
  uint64_t u = 0;
  double d = 0;
  int idx = 0;
  bool b = false;
  switch (k->kind) {
    case K_STR:
    case K_PATH:
    case K_NAME:
    case K_TOPIC:
    case K_DEVICE:
    case K_SPREC:
    case K_URL:
    case K_BIND:
    case K_BIND_OPT:
      if (!(reason = check_text(k, value, why, n))) snprintf(field, k->size, "%s", value);
      break;
    case K_INT:
      if (!(reason = parse_uint(value, k->range, &u, why, n))) *(int *)field = (int)u;
      break;
    case K_U32:
      if (!(reason = parse_uint(value, k->range, &u, why, n)))
        *(uint32_t *)field = (uint32_t)u;
      break;
    case K_U64:
      if (!(reason = parse_uint(value, k->range, &u, why, n))) *(uint64_t *)field = u;
      break;
    case K_SIZE:
      if (!(reason = parse_size(value, k->range, &u, why, n))) *(uint64_t *)field = u;
      break;
    case K_F32:
      if (!(reason = parse_float(k, value, &d, why, n))) {
        if (d != 0 && (float)d == 0.0f)
          reason = "too small for a 32-bit float";
        else
          *(float *)field = (float)d;
      }
      break;
    case K_F64:
      if (!(reason = parse_float(k, value, &d, why, n))) *(double *)field = d;
      break;
    case K_BOOL:
      if (!(reason = parse_bool(value, &b))) *(bool *)field = b;
      break;
    case K_HIDDEN:
      reason = parse_hidden(value, k->range, &cfg->spec, why, n);
      break;
    case K_PRECS: {
      unsigned mask = 0;
      if (eddy_infer_precision_parse_list(value, &mask, why, n) != 0) reason = why;
      else *(unsigned *)field = mask;
      break;
    }
    case K_HEAD:
      if (!(reason = parse_enum(value, head_names, &idx, why, n)))
        cfg->spec.head = (eddy_head_t)idx;
      break;
    case K_PREC:
      if (!(reason = parse_enum(value, prec_names, &idx, why, n)))
        cfg->train.precision = (eddy_precision_t)idx;
      break;
    case K_OPTIM:
      if (!(reason = parse_enum(value, optim_names, &idx, why, n)))
        cfg->train.optimizer = (eddy_optim_t)idx;
      break;
    case K_STRATEGY:
      if (!(reason = parse_enum(value, strategy_names, &idx, why, n)))
        cfg->replay_strategy = (eddy_replay_strategy_t)idx;
      break;
    case K_DTYPE:
      if (!(reason = parse_enum(value, dtype_names, &idx, why, n)))
        snprintf(field, k->size, "%s", dtype_names[idx]);
      break;
    case K_FORMAT:
      if (!(reason = parse_enum(value, format_names, &idx, why, n)))
        snprintf(field, k->size, "%s", format_names[idx]);
      break;
  }
  return reason;
}

/* Text of the current value of key k, for messages about defaults. */
static void format_value(const eddy_config_t *cfg, const key_def_t *k, char *out, size_t n) {
  const void *field = (const char *)cfg + k->off;
  switch (k->kind) {
    case K_INT:
      snprintf(out, n, "%d", *(const int *)field);
      break;
    case K_U32:
      snprintf(out, n, "%u", *(const uint32_t *)field);
      break;
    case K_U64:
    case K_SIZE:
      snprintf(out, n, "%llu", (unsigned long long)*(const uint64_t *)field);
      break;
    case K_F32:
      snprintf(out, n, "%g", (double)*(const float *)field);
      break;
    case K_F64:
      snprintf(out, n, "%g", *(const double *)field);
      break;
    case K_BOOL:
      snprintf(out, n, "%s", *(const bool *)field ? "true" : "false");
      break;
    case K_HIDDEN:
      eddy_model_hidden_text(&cfg->spec, out, n);
      break;
    case K_PRECS:
      eddy_infer_precision_list(*(const unsigned *)field, out, n);
      break;
    case K_HEAD:
      snprintf(out, n, "%s", head_names[cfg->spec.head]);
      break;
    case K_PREC:
      snprintf(out, n, "%s", prec_names[cfg->train.precision]);
      break;
    case K_OPTIM:
      snprintf(out, n, "%s", optim_names[cfg->train.optimizer]);
      break;
    case K_STRATEGY:
      snprintf(out, n, "%s", strategy_names[cfg->replay_strategy]);
      break;
    default:
      snprintf(out, n, "%s", (const char *)field);
      break;
  }
}

static bool known_section(const char *section) {
  for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
    if (strcmp(section, sections[i]) == 0) return true;
  return false;
}

static eddy_err_t fail(load_ctx_t *c, eddy_err_t err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static eddy_err_t fail(load_ctx_t *c, eddy_err_t err, const char *fmt, ...) {
  if (c->failed) return err;
  c->failed = true;
  c->code = err;
  if (c->errstr && c->errstr_size) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errstr, c->errstr_size, fmt, ap);
    va_end(ap);
  }
  return err;
}

static eddy_err_t kafka_put(load_ctx_t *c, const char *origin, const char *key, const char *value) {
  eddy_config_t *cfg = c->cfg;
  if (key[0] == '\0')
    return fail(c, EDDY_ERR_CONFIG, "%s: kafka. = \"%s\": empty property name", origin, value);
  if (strlen(key) >= sizeof cfg->kafka[0].key)
    return fail(c, EDDY_ERR_CONFIG, "%s: kafka.%s = \"%s\": property name longer than %zu bytes",
                origin, key, value, sizeof cfg->kafka[0].key - 1);
  if (strlen(value) >= sizeof cfg->kafka[0].value)
    return fail(c, EDDY_ERR_CONFIG, "%s: kafka.%s = \"%.64s...\": longer than %zu bytes", origin,
                key, value, sizeof cfg->kafka[0].value - 1);
  for (size_t i = 0; i < cfg->n_kafka; i++) {
    if (strcmp(cfg->kafka[i].key, key) == 0) { /* drop the earlier setting: the last one wins */
      memmove(&cfg->kafka[i], &cfg->kafka[i + 1], (cfg->n_kafka - i - 1) * sizeof cfg->kafka[0]);
      cfg->n_kafka--;
      break;
    }
  }
  if (cfg->n_kafka == CONFIG_MAX_KAFKA)
    return fail(c, EDDY_ERR_CONFIG, "%s: kafka.%s = \"%s\": more than %d [kafka] properties",
                origin, key, value, CONFIG_MAX_KAFKA);
  eddy_config_kv_t *grown = realloc(cfg->kafka, (cfg->n_kafka + 1) * sizeof *grown);
  if (!grown) return fail(c, EDDY_ERR_NOMEM, "%s: kafka.%s: out of memory", origin, key);
  cfg->kafka = grown;
  eddy_config_kv_t *kv = &cfg->kafka[cfg->n_kafka++];
  memset(kv, 0, sizeof *kv);
  snprintf(kv->key, sizeof kv->key, "%s", key);
  snprintf(kv->value, sizeof kv->value, "%s", value);
  snprintf(kv->origin, sizeof kv->origin, "%s", origin);
  return EDDY_OK;
}

/* Applies one section.key = value from origin. */
static eddy_err_t apply(load_ctx_t *c, const char *origin, const char *section, const char *key,
                        const char *value) {
  if (section[0] == '\0')
    return fail(c, EDDY_ERR_CONFIG, "%s: %s = \"%s\": key outside any [section]", origin, key,
                value);
  if (!known_section(section))
    return fail(c, EDDY_ERR_CONFIG, "%s: %s.%s = \"%s\": unknown section", origin, section, key,
                value);
  if (strcmp(section, "kafka") == 0) return kafka_put(c, origin, key, value);
  for (size_t i = 0; i < N_KEYS; i++) {
    const key_def_t *k = &keys[i];
    if (strcmp(k->section, section) != 0 || strcmp(k->key, key) != 0) continue;
    char why[160];
    const char *reason = assign(c->cfg, k, value, why, sizeof why);
    if (reason)
      return fail(c, EDDY_ERR_CONFIG, "%s: %s.%s = \"%s\": %s", origin, section, key, value,
                  reason);
    key_state_t *st = &c->state[i];
    snprintf(st->origin, sizeof st->origin, "%s", origin);
    snprintf(st->value, sizeof st->value, "%s", value);
    st->seq = ++c->seq;
    return EDDY_OK;
  }
  return fail(c, EDDY_ERR_CONFIG, "%s: %s.%s = \"%s\": unknown key", origin, section, key, value);
}

/* Index of "section.key" in keys[], or N_KEYS. */
static size_t key_find(const char *name) {
  for (size_t i = 0; i < N_KEYS; i++) {
    size_t sl = strlen(keys[i].section);
    if (strncmp(name, keys[i].section, sl) == 0 && name[sl] == '.' &&
        strcmp(name + sl + 1, keys[i].key) == 0)
      return i;
  }
  return N_KEYS;
}

/* Reports a failed model-layer check against whichever of the fault's keys was set last (the
 * first one when none was set). */
static eddy_err_t fault_fail(load_ctx_t *c, const eddy_fault_t *f) {
  size_t blame = N_KEYS;
  for (size_t k = 0; k < EDDY_FAULT_KEYS && f->keys[k]; k++) {
    size_t i = key_find(f->keys[k]);
    if (i < N_KEYS && (blame == N_KEYS || c->state[i].seq > c->state[blame].seq)) blame = i;
  }
  if (blame == N_KEYS) /* not a config key: cannot happen with the model's own key names */
    return fail(c, EDDY_ERR_CONFIG, "%s: %s: %s", c->name, f->values, f->why);
  const key_state_t *st = &c->state[blame];
  return fail(c, EDDY_ERR_CONFIG, "%s: %s.%s = \"%s\": %s", st->origin, keys[blame].section,
              keys[blame].key, st->value, f->why);
}

/* Rules that tie keys together, written once in the model layer (each key's own range was
 * checked as it was read). */
static eddy_err_t check_cross(load_ctx_t *c) {
  const eddy_config_t *cfg = c->cfg;
  eddy_fault_t fault;
  if (eddy_model_spec_check(&cfg->spec, &fault) != EDDY_OK) return fault_fail(c, &fault);
  if (eddy_scaler_opts_check(&cfg->train.loss_scale, &fault) != EDDY_OK)
    return fault_fail(c, &fault);
  if (cfg->gate_min_events > cfg->gate_holdout_events) {
    eddy_fault_clear(&fault);
    eddy_fault_key(&fault, "snapshot.gate.min_events", "%u", cfg->gate_min_events);
    eddy_fault_key(&fault, "snapshot.gate.holdout_events", "%u", cfg->gate_holdout_events);
    eddy_fault_why(&fault, "snapshot.gate.min_events must not exceed snapshot.gate.holdout_events (the "
                           "holdout window could never hold enough events for a verdict)");
    return fault_fail(c, &fault);
  }
  /* A fixed serve.precision must be one the replica may hold (the defaults agree, so one was set). */
  eddy_infer_precision_t p;
  if (eddy_infer_precision_parse(cfg->serve_precision, &p) == 0 && !(cfg->serve_precisions & (1u << p))) {
    size_t i = key_find("serve.precision"), j = key_find("serve.precisions");
    const size_t blame = c->state[j].seq > c->state[i].seq ? j : i;
    const key_state_t *st = &c->state[blame];
    char allowed[64];
    eddy_infer_precision_list(cfg->serve_precisions, allowed, sizeof allowed);
    return fail(c, EDDY_ERR_CONFIG, "%s: %s.%s = \"%s\": serve.precision %s is not in serve.precisions (%s)",
                st->origin, keys[blame].section, keys[blame].key, st->value, cfg->serve_precision, allowed);
  }
  return EDDY_OK;
}

/* Ends the pending section header: an unknown section that held no key is an error. */
static bool close_section(load_ctx_t *c) {
  if (c->section_unknown && !c->section_used) {
    fail(c, EDDY_ERR_CONFIG, "%s:%d: [%s]: unknown section", c->name, c->section_line,
         c->section_name);
    c->err_line = c->section_line;
    return false;
  }
  c->section_unknown = false;
  return true;
}

/* inih reader: hands out one line per call, left-trimmed (so indented lines are never taken as
 * continuations), without a BOM; stops at the first error. */
static char *read_line(char *buf, int num, void *stream) {
  load_ctx_t *c = stream;
  if (c->failed) return NULL;
  if (c->pos >= c->len) {
    close_section(c);
    return NULL;
  }
  const char *p = c->text + c->pos;
  size_t rest = c->len - c->pos;
  const char *nl = memchr(p, '\n', rest);
  size_t n = nl ? (size_t)(nl - p) : rest;
  c->pos += nl ? n + 1 : n;
  c->line++;
  if (n > 0 && p[n - 1] == '\r') n--;
  if (c->line == 1 && n >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) {
    p += 3;
    n -= 3;
  }
  size_t max = num > 2 ? (size_t)num - 2 : 0; /* room for '\n' and NUL */
  if (n > max) {
    fail(c, EDDY_ERR_CONFIG, "%s:%d: line too long (max %zu bytes)", c->name, c->line, max);
    c->err_line = c->line;
    return NULL;
  }
  if (memchr(p, '\0', n)) {
    fail(c, EDDY_ERR_CONFIG, "%s:%d: syntax error (NUL byte)", c->name, c->line);
    c->err_line = c->line;
    return NULL;
  }
  while (n > 0 && isspace((unsigned char)*p)) {
    p++;
    n--;
  }
  if (n > 0 && *p == '[') {
    if (!close_section(c)) return NULL;
    const char *end = memchr(p, ']', n);
    if (end) {
      size_t len = (size_t)(end - p - 1);
      if (len >= sizeof c->section_name) len = sizeof c->section_name - 1;
      memcpy(c->section_name, p + 1, len);
      c->section_name[len] = '\0';
      c->section_line = c->line;
      c->section_unknown = !known_section(c->section_name);
      c->section_used = false;
    }
  }
  memcpy(buf, p, n);
  buf[n] = '\n';
  buf[n + 1] = '\0';
  return buf;
}

static int on_key(void *user, const char *section, const char *name, const char *value) {
  load_ctx_t *c = user;
  if (c->failed) return 0;
  c->section_used = true;
  char origin[EDDY_CONFIG_STR];
  snprintf(origin, sizeof origin, "%s:%d", c->name, c->line);
  if (apply(c, origin, section, name, value) != EDDY_OK) {
    c->err_line = c->line;
    c->err_from_handler = true;
    return 0;
  }
  return 1;
}

static void trim(char **s) {
  while (isspace((unsigned char)**s)) (*s)++;
  size_t n = strlen(*s);
  while (n > 0 && isspace((unsigned char)(*s)[n - 1])) (*s)[--n] = '\0';
}

static eddy_err_t apply_set(load_ctx_t *c, const char *set) {
  char *copy = strdup(set);
  if (!copy) return fail(c, EDDY_ERR_NOMEM, "--set: out of memory");
  char *eq = strchr(copy, '=');
  char *dot = eq ? memchr(copy, '.', (size_t)(eq - copy)) : NULL;
  eddy_err_t err;
  if (!eq || !dot) {
    err = fail(c, EDDY_ERR_CONFIG, "--set \"%s\": expected section.key=value", set);
  } else {
    *eq = '\0';
    *dot = '\0';
    char *section = copy, *key = dot + 1, *value = eq + 1;
    trim(&section);
    trim(&key);
    trim(&value);
    if (!*section || !*key)
      err = fail(c, EDDY_ERR_CONFIG, "--set \"%s\": expected section.key=value", set);
    else
      err = apply(c, "--set", section, key, value);
  }
  free(copy);
  return err;
}

/* Where one key's value came from, asked for by eddy_config_origin. */
typedef struct {
  size_t key; /* index into keys[] */
  char *origin;
  size_t size;
} origin_query_t;

static eddy_err_t load(eddy_config_t *cfg, const char *name, const char *text, size_t len,
                       const char *const *sets, size_t n_sets, char *errstr, size_t errstr_size,
                       const origin_query_t *query) {
  load_ctx_t *c = calloc(1, sizeof *c);
  if (!c) return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "config: out of memory");
  c->cfg = cfg;
  c->name = name ? name : "(config)";
  c->text = text;
  c->len = len;
  c->errstr = errstr;
  c->errstr_size = errstr_size;
  for (size_t i = 0; i < N_KEYS; i++) {
    snprintf(c->state[i].origin, sizeof c->state[i].origin, "default");
    format_value(cfg, &keys[i], c->state[i].value, sizeof c->state[i].value);
  }
  if (text) {
    int ret = ini_parse_stream(read_line, c, on_key, c);
    if (ret > 0 &&
        (!c->failed || ret < c->err_line || (ret == c->err_line && !c->err_from_handler))) {
      c->failed = false; /* inih saw a syntax error before ours: report that one */
      fail(c, EDDY_ERR_CONFIG, "%s:%d: syntax error", c->name, ret);
    } else if (ret < 0) {
      fail(c, EDDY_ERR_NOMEM, "%s: inih failed (%d)", c->name, ret);
    }
  }
  for (size_t i = 0; i < n_sets && !c->failed; i++) apply_set(c, sets[i]);
  if (!c->failed) check_cross(c);
  eddy_err_t err = c->failed ? c->code : EDDY_OK;
  if (!err && query) snprintf(query->origin, query->size, "%s", c->state[query->key].origin);
  free(c);
  return err;
}

eddy_err_t eddy_config_load_string(eddy_config_t *cfg, const char *name, const char *text,
                                   size_t len, const char *const *sets, size_t n_sets, char *errstr,
                                   size_t errstr_size) {
  if (!cfg) return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "config: cfg is NULL");
  eddy_config_defaults(cfg);
  if (len > CONFIG_MAX_FILE_BYTES)
    return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "%s: larger than %u bytes",
                     name ? name : "(config)", CONFIG_MAX_FILE_BYTES);
  return load(cfg, name, text ? text : "", text ? len : 0, sets, n_sets, errstr, errstr_size, NULL);
}

static eddy_err_t load_file(eddy_config_t *cfg, const char *path, const char *const *sets,
                            size_t n_sets, char *errstr, size_t errstr_size,
                            const origin_query_t *query) {
  eddy_config_defaults(cfg);
  if (!path) return load(cfg, NULL, NULL, 0, sets, n_sets, errstr, errstr_size, query);
  FILE *f = fopen(path, "rb");
  if (!f) return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "%s: %s", path, strerror(errno));
  char *text = malloc(CONFIG_MAX_FILE_BYTES + 1);
  if (!text) {
    fclose(f);
    return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "%s: out of memory", path);
  }
  size_t len = fread(text, 1, CONFIG_MAX_FILE_BYTES + 1, f);
  int read_errno = ferror(f) ? errno : 0;
  fclose(f);
  eddy_err_t err;
  if (read_errno)
    err = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "%s: %s", path, strerror(read_errno));
  else if (len > CONFIG_MAX_FILE_BYTES)
    err = eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "%s: larger than %u bytes", path,
                    CONFIG_MAX_FILE_BYTES);
  else
    err = load(cfg, path, text, len, sets, n_sets, errstr, errstr_size, query);
  free(text);
  return err;
}

eddy_err_t eddy_config_load(eddy_config_t *cfg, const char *path, const char *const *sets,
                            size_t n_sets, char *errstr, size_t errstr_size) {
  if (!cfg) return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "config: cfg is NULL");
  return load_file(cfg, path, sets, n_sets, errstr, errstr_size, NULL);
}

eddy_err_t eddy_config_origin(const char *path, const char *const *sets, size_t n_sets,
                              const char *key, char *origin, size_t origin_size) {
  if (!key || !origin || origin_size == 0) return EDDY_ERR_INVALID_ARG;
  origin_query_t query = {key_find(key), origin, origin_size};
  if (query.key == N_KEYS) return EDDY_ERR_NOT_FOUND;
  eddy_config_t *cfg = malloc(sizeof *cfg);
  if (!cfg) return EDDY_ERR_NOMEM;
  eddy_err_t err = load_file(cfg, path, sets, n_sets, NULL, 0, &query);
  eddy_config_free(cfg);
  free(cfg);
  return err;
}

bool eddy_config_key_name(size_t i, char *buf, size_t size) {
  if (i >= N_KEYS) return false;
  snprintf(buf, size, "%s.%s", keys[i].section, keys[i].key);
  return true;
}
