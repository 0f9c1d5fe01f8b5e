/* Configuration: INI files (libinih) plus `--set section.key=value` overrides. Every key is known,
 * typed and range-checked; an error names FILE:LINE (or "--set"), the key and the value and why:
 *   configs/x.ini:14: train.lr = "abc": not a number
 * Keys under [kafka] are librdkafka properties kept verbatim, in file order, for the Kafka client.
 * configs/reference.ini documents every key with its default. */
#ifndef EDDY_CONFIG_H
#define EDDY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"
#include "model/learner.h"
#include "model/quant.h"
#include "model/spec.h"

#define EDDY_CONFIG_STR 256

typedef enum { EDDY_REPLAY_UNIFORM = 0, EDDY_REPLAY_RECENT, EDDY_REPLAY_BALANCED } eddy_replay_strategy_t;

typedef struct {
  char key[EDDY_CONFIG_STR];
  char value[EDDY_CONFIG_STR * 4];
  char origin[EDDY_CONFIG_STR]; /* "FILE:LINE" or "--set", for error messages */
} eddy_config_kv_t;

typedef struct {
  /* [model] */
  char model_name[64];           /* name: [A-Za-z0-9_.-]{1,63}, default "model" */
  eddy_model_spec_t spec;        /* hash_bits, embed_dim, dense_dim, hidden (comma list), head, classes */

  /* [train] */
  char device[32];               /* cpu | cuda | cuda:N | cuda:all */
  eddy_train_opts_t train;       /* precision, optimizer, lr, momentum, beta1, beta2, eps,
                                    weight_decay, clip_norm, seed, threads, allow_tf32, loss_scale.{init,growth,
                                    backoff,interval,min,dynamic} */
  uint32_t batch_size;
  uint32_t accum_steps;
  double holdout_fraction;       /* 0..0.5 */
  uint32_t max_skipped_steps;    /* consecutive skipped steps before training stops with an error */
  uint32_t metrics_window;       /* prequential window, events */
  double drift_threshold;        /* drift detector (model/drift.h): h, 0 = off */
  double drift_slack;            /* ... and k */

  /* [stream] */
  char topic[EDDY_CONFIG_STR];
  char format[16];               /* json */
  char dlq_topic[EDDY_CONFIG_STR]; /* "" = dead letters only in the buffer */
  uint32_t max_event_bytes;

  /* [kafka] passthrough, in file order, overrides last */
  eddy_config_kv_t *kafka;
  size_t n_kafka;

  /* [buffer] */
  char buffer_path[EDDY_CONFIG_STR];
  uint64_t buffer_capacity_events;
  uint64_t buffer_capacity_bytes;
  bool buffer_sync;

  /* [replay] */
  double replay_ratio;           /* 0..0.95: share of replayed events in a batch */
  eddy_replay_strategy_t replay_strategy;
  uint32_t reservoir_size;
  uint32_t replay_idle_steps;

  /* [snapshot] */
  char snapshot_store[EDDY_CONFIG_STR];
  uint32_t snapshot_every_steps;
  uint32_t snapshot_every_seconds;
  char snapshot_dtype[8];        /* F32 | F16 | BF16 */
  uint32_t snapshot_keep;
  char snapshot_topic[EDDY_CONFIG_STR];
  double gate_max_regression;
  double gate_noise_z;           /* standard errors of the paired difference left to noise */
  double gate_prior_margin;      /* relative gain over the label prior the candidate must show */
  uint32_t gate_min_events;      /* holdout events needed for a verdict */
  uint32_t gate_holdout_events;  /* the holdout window: newest held-out events kept and scored */
  uint32_t gate_holdout_max_age; /* ... and their age bound, seconds of event time (0 = none) */
  char gate_validation[EDDY_CONFIG_STR]; /* trusted validation DATASET; "" = none */
  double gate_validation_max_regression;
  unsigned snapshot_precisions;  /* serving precisions written and measured at publish (mask of
                                    1 << eddy_infer_precision_t; fp32 always) */

  /* [serve] */
  char serve_trainer_url[EDDY_CONFIG_STR];
  char serve_store[EDDY_CONFIG_STR];
  uint32_t serve_poll_seconds;
  uint32_t serve_threads;
  uint32_t serve_heartbeat_seconds; /* replica -> trainer heartbeat period */
  char serve_precision[8];       /* auto | fp32 | bf16 | fp16 | int8: what a replica serves */
  unsigned serve_precisions;     /* the precisions a replica may hold (mask, as snapshot_precisions) */
  double serve_max_accuracy_drop; /* auto: the largest holdout accuracy drop from fp32 allowed */
  double serve_latency_target_ms; /* wait for a processing slot that steps the precision down; 0 = off */
  char serve_grpc_bind[EDDY_CONFIG_STR]; /* host:port of the replica's gRPC server; "" = none */

  /* [http] */
  char http_bind[EDDY_CONFIG_STR];  /* host:port, default 127.0.0.1:8080 */
  char http_token_file[EDDY_CONFIG_STR];
  uint64_t http_max_body_bytes;
  uint32_t http_max_connections;            /* open connections in all */
  uint32_t http_max_connections_per_client; /* from one IP address */
  uint32_t http_header_timeout_seconds;     /* accept to the end of the first request's headers */
} eddy_config_t;

/* Fills cfg with every default (the values configs/reference.ini documents): [model] and [train]
 * from the model layer (eddy_model_spec_defaults, eddy_train_opts_defaults), the other sections'
 * from here. */
void eddy_config_defaults(eddy_config_t *cfg);

/* Loads path (NULL: defaults only) then applies sets[0..n_sets) ("section.key=value"), then checks
 * cross-key constraints (e.g. softmax needs classes >= 2). On error returns EDDY_ERR_CONFIG (or
 * EDDY_ERR_IO when the file cannot be read) with the message in errstr; cfg is then unusable
 * except for eddy_config_free. */
eddy_err_t eddy_config_load(eddy_config_t *cfg, const char *path, const char *const *sets,
                            size_t n_sets, char *errstr, size_t errstr_size);

/* Same as eddy_config_load, but the INI text is len bytes in memory (need not be NUL-terminated);
 * name stands for the file name in origins and messages. Used by tests and the fuzz harness. */
eddy_err_t eddy_config_load_string(eddy_config_t *cfg, const char *name, const char *text,
                                   size_t len, const char *const *sets, size_t n_sets,
                                   char *errstr, size_t errstr_size);

/* Where key ("section.key") takes its value from when path and sets load as in eddy_config_load:
 * "FILE:LINE" of its last setting, "--set", or "default", into origin. For values that fail only
 * when a service uses them (an unreadable http.token_file), so that the message can name the
 * line. EDDY_ERR_NOT_FOUND for a key the loader does not know ([kafka] included); otherwise
 * the load's own error code. */
eddy_err_t eddy_config_origin(const char *path, const char *const *sets, size_t n_sets,
                              const char *key, char *origin, size_t origin_size);

/* Name of the i-th key the loader knows ("section.key", in table order, [kafka] properties
 * aside) into buf; false when i is past the last. Lets tests hold configs/reference.ini to the
 * loader's own list. */
bool eddy_config_key_name(size_t i, char *buf, size_t size);

/* Frees the [kafka] list. */
void eddy_config_free(eddy_config_t *cfg);

/* Value of a [kafka] key, or NULL. */
const char *eddy_config_kafka(const eddy_config_t *cfg, const char *key);

#endif
