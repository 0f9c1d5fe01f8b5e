/* manifest.json of one snapshot version: what was trained (step, examples, cursors, Kafka offsets),
 * how well (prequential and holdout metrics, and the holdout metrics of every serving precision
 * the trainer produced), for which model (spec, precision), the files with their sizes and
 * SHA-256, and the gate's verdict at publish time. Parsing is strict: a missing field or a wrong
 * type is EDDY_ERR_FORMAT with the field named; files over 1 MiB are refused. */
#ifndef EDDY_MANIFEST_H
#define EDDY_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"
#include "model/prequential.h"
#include "model/quant.h"
#include "model/spec.h"

#define EDDY_MANIFEST_FORMAT 1                /* "format" field; bumped on incompatible changes */
#define EDDY_MANIFEST_MAX_BYTES (1u << 20)    /* size cap of manifest.json */
#define EDDY_MANIFEST_MAX_FILES 8
#define EDDY_MANIFEST_MAX_OFFSETS 4096        /* Kafka partitions recorded (each list; all ranks') */
#define EDDY_MANIFEST_MAX_RANKS 4096          /* trainer ranks recorded */
#define EDDY_MANIFEST_NAME_MAX 64             /* model and file names, NUL included */
#define EDDY_MANIFEST_TOPIC_MAX 256           /* Kafka topic names are at most 249 bytes */
#define EDDY_MANIFEST_REASON_MAX 512
#define EDDY_MANIFEST_MAX_INT 9007199254740992ull /* 2^53: integers above do not survive JSON */
#define EDDY_MANIFEST_MAX_CRITERIA 8
#define EDDY_CRITERION_NAME_MAX 24

/* The gate's verdict, fixed when the version is written (see snapshots/README.md). */
typedef enum { EDDY_STATUS_CANDIDATE = 0, EDDY_STATUS_PROMOTED, EDDY_STATUS_REJECTED } eddy_version_status_t;

typedef struct {
  char topic[EDDY_MANIFEST_TOPIC_MAX];
  int32_t partition;
  int64_t next_offset; /* next offset to consume: everything before it is in the trained state */
} eddy_manifest_offset_t;

/* One trainer rank when the version was written (DESIGN "Scaling past one machine"): enough to
 * resume it from its own buffer, or to re-read from Kafka what it had not trained when its
 * partitions move to another rank. */
typedef struct {
  uint32_t rank;          /* 0 .. n_ranks-1 */
  uint64_t buffer_id;     /* identity of its replay buffer (buffer meta "buffer_id", 1..2^53) */
  uint64_t cursor;        /* seq of the next fresh event to train in that buffer */
  uint64_t examples;      /* fresh examples it contributed to this lineage */
  char weights_xxh3[17];  /* XXH3-64 of its weights as 16 hex digits; "" = not recorded */
  eddy_manifest_offset_t *offsets; /* owned; per partition its buffer read: the next offset not
                                      trained yet (everything before it is in the trained state) */
  size_t n_offsets;
} eddy_manifest_rank_t;

typedef struct {
  char name[EDDY_MANIFEST_NAME_MAX]; /* "weights.safetensors" */
  uint64_t bytes;
  char sha256[65];                   /* lowercase hex */
} eddy_manifest_file_t;

/* One criterion of the gate's verdict ("finite", "holdout_events", "vs_current", "vs_prior",
 * "validation"; docs/trainer.md): the numbers it compared and the outcome. NaN = none (null). */
typedef enum { EDDY_CRITERION_SKIPPED = 0, EDDY_CRITERION_PASSED, EDDY_CRITERION_FAILED } eddy_criterion_result_t;

typedef struct {
  char name[EDDY_CRITERION_NAME_MAX];
  eddy_criterion_result_t result;
  double candidate;  /* the candidate's number (its mean loss, its count) */
  double reference;  /* what it was compared with (CURRENT's or the prior's mean loss, ...) */
  double value;      /* the quantity tested against limit */
  double limit;
} eddy_gate_criterion_t;

/* The gate's record: absent (present = false) in manifests written before it existed. */
typedef struct {
  bool present;
  char metric[16];         /* "logloss" | "mse" */
  uint64_t current;        /* the CURRENT version compared with; 0 = none */
  uint64_t events;         /* holdout events scored by both */
  uint64_t from_seq, to_seq; /* their buffer seq range (0, 0 when none) */
  eddy_gate_criterion_t criteria[EDDY_MANIFEST_MAX_CRITERIA];
  size_t n_criteria;
} eddy_gate_verdict_t;

/* One serving precision of the version (JSON "precisions": {"int8": {...}}; absent in manifests
 * written before precisions existed, and for precisions the trainer did not produce). */
typedef struct {
  bool present;
  char file[EDDY_MANIFEST_NAME_MAX]; /* its weights file, listed in files */
  eddy_metric_values_t holdout;      /* scored on the gate's holdout events */
  uint64_t calibration_events;       /* int8: events its input scales were calibrated on; 0 otherwise */
} eddy_manifest_precision_t;

typedef struct {
  uint64_t version;      /* >= 1 */
  uint64_t parent;       /* version this one continues from; 0 = none (JSON null) */
  char model[EDDY_MANIFEST_NAME_MAX];
  int64_t created_at_ms; /* Unix ms, UTC; JSON carries it and an ISO-8601 "created_at" */
  uint64_t step;         /* optimizer steps applied */
  uint64_t examples;     /* examples trained */
  uint64_t buffer_cursor; /* replay-buffer seq of the next fresh event to train */
  int64_t newest_event_ms; /* newest "ts" among the fresh events trained (Unix ms); 0 = unknown
                              (JSON null; absent in older manifests) */
  eddy_manifest_offset_t *offsets; /* owned; eddy_manifest_add_offset appends */
  size_t n_offsets;
  eddy_manifest_rank_t *ranks; /* owned; one per trainer rank, in rank order; none in manifests
                                  written before ranks existed (JSON "ranks" absent) */
  size_t n_ranks;
  eddy_metric_values_t prequential; /* NaN = not defined (JSON null) */
  eddy_metric_values_t holdout;
  eddy_manifest_precision_t precisions[EDDY_INFER_PRECISIONS]; /* by eddy_infer_precision_t */
  char precision[16];    /* "fp32" | "bf16" | "fp16" */
  char weights_dtype[8]; /* "F32" | "F16" | "BF16" */
  eddy_model_spec_t spec;
  eddy_manifest_file_t files[EDDY_MANIFEST_MAX_FILES];
  size_t n_files;
  eddy_version_status_t status;
  char reason[EDDY_MANIFEST_REASON_MAX]; /* why rejected (or any note); "" = none */
  eddy_gate_verdict_t gate;              /* JSON "gate"; optional */
} eddy_manifest_t;

/* Zeroes m: status candidate, metrics NaN, precision "fp32", weights_dtype "F32". */
void eddy_manifest_init(eddy_manifest_t *m);
/* Frees what m owns (the offsets, the ranks) and re-initialises it. NULL is a no-op. */
void eddy_manifest_clear(eddy_manifest_t *m);
/* Deep copy: dst (uninitialised or cleared) gets its own offsets and ranks. */
eddy_err_t eddy_manifest_copy(eddy_manifest_t *dst, const eddy_manifest_t *src);
/* Appends a Kafka position; TOO_LARGE past EDDY_MANIFEST_MAX_OFFSETS, INVALID_ARG on a bad topic. */
eddy_err_t eddy_manifest_add_offset(eddy_manifest_t *m, const char *topic, int32_t partition, int64_t next_offset);
/* Appends rank entry n_ranks (zeroed; the caller fills it), or NULL past EDDY_MANIFEST_MAX_RANKS or
 * out of memory. The pointer is valid until the next call. */
eddy_manifest_rank_t *eddy_manifest_add_rank(eddy_manifest_t *m);
/* Appends a trained position to rank entry r; the same errors as eddy_manifest_add_offset. */
eddy_err_t eddy_manifest_rank_add_offset(eddy_manifest_rank_t *r, const char *topic, int32_t partition,
                                         int64_t next_offset);
/* The file entry named name, or NULL. */
const eddy_manifest_file_t *eddy_manifest_file(const eddy_manifest_t *m, const char *name);
/* The precisions present, as a mask of 1 << eddy_infer_precision_t (0 for an older manifest). */
unsigned eddy_manifest_precisions(const eddy_manifest_t *m);
/* The precision whose file is name; -1 when no precision names it. */
int eddy_manifest_precision_of(const eddy_manifest_t *m, const char *name);

const char *eddy_version_status_name(eddy_version_status_t status); /* "candidate", ... */
const char *eddy_criterion_result_name(eddy_criterion_result_t r); /* "skipped", "passed", "failed" */
/* Appends a criterion to m->gate (sets present); ignored beyond EDDY_MANIFEST_MAX_CRITERIA. */
void eddy_manifest_add_criterion(eddy_manifest_t *m, const char *name, eddy_criterion_result_t result,
                                 double candidate, double reference, double value, double limit);
/* m->gate as compact JSON text (caller frees), "null" when absent; NULL when out of memory. */
char *eddy_manifest_gate_json(const eddy_manifest_t *m);
int eddy_version_status_parse(const char *text, eddy_version_status_t *status); /* 0 ok, -1 unknown */

/* Pretty-printed JSON (caller frees *json). Checks the fields first (the same rules as parsing):
 * EDDY_ERR_INVALID_ARG with the field named. */
eddy_err_t eddy_manifest_to_json(const eddy_manifest_t *m, char **json, char *errstr, size_t errstr_size);
/* 1 when s is a valid model or file name: 1..63 bytes of [A-Za-z0-9._-], not starting with '.'
 * (so it is safe as one path component). */
int eddy_manifest_name_ok(const char *s);

/* Parses JSON text of len bytes into m (initialised here; clear it after use, also on failure). */
eddy_err_t eddy_manifest_parse(const char *json, size_t len, eddy_manifest_t *m, char *errstr, size_t errstr_size);
/* Reads and parses a manifest file: NOT_FOUND if absent, TOO_LARGE over the cap, IO, FORMAT. */
eddy_err_t eddy_manifest_load(const char *path, eddy_manifest_t *m, char *errstr, size_t errstr_size);

/* ISO-8601 UTC with milliseconds ("2024-11-28T08:00:00.123Z") into out (at least 32 bytes). */
void eddy_manifest_format_time(int64_t ms, char *out, size_t out_size);

#endif
