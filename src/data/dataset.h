/* Datasets for offline learning and producing: a JSONL file of events, or Fashion-MNIST read from
 * the Debian package's gzip IDX files ("fashion-mnist:train" | "fashion-mnist:test"; folder from
 * EDDY_FASHION_MNIST_DIR, default /usr/share/datasets/fashion-mnist). Events come in file order.
 * A JSONL file can also be read as raw lines, undecoded (eddy_dataset_new_lines): the one JSONL
 * reader for everything that reads event files (eddy learn, eddy produce). */
#ifndef EDDY_DATASET_H
#define EDDY_DATASET_H

#include <stdbool.h>
#include <stdint.h>

#include "core/event.h"

typedef struct eddy_dataset eddy_dataset_t;

#define EDDY_FASHION_MNIST_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"

/* Open a dataset by name. schema validates JSONL events; Fashion-MNIST yields 784 dense features
 * (pixel / 255) and labels 0..9, and is refused if the schema cannot hold it (dense_dim != 784,
 * head not softmax with 10 classes). NULL + errstr on failure (missing file, bad IDX header). */
eddy_dataset_t *eddy_dataset_new(const char *name, const eddy_event_schema_t *schema, char *errstr,
                                  size_t errstr_size);
void eddy_dataset_destroy(eddy_dataset_t *ds);

/* Opens a JSONL file (plain or gzip; "-" reads standard input) for eddy_dataset_next_line only:
 * for tools that pass lines on verbatim, valid events or not (eddy produce). Lines longer than
 * max_bytes (1..SIZE_MAX/2) are refused one by one. NULL + errstr on failure (missing file, a
 * directory). eddy_dataset_next on it fails with EDDY_ERR_INVALID_ARG. */
eddy_dataset_t *eddy_dataset_new_lines(const char *path, size_t max_bytes, char *errstr, size_t errstr_size);

/* Next event into ev. EDDY_OK with *eof = false: ev holds an event. EDDY_OK with *eof = true: end.
 * An EDDY_ERR_EVENT_* code: that record was bad (errstr names the line), the caller may go on.
 * Other codes: the dataset cannot be read further. */
eddy_err_t eddy_dataset_next(eddy_dataset_t *ds, eddy_event_t *ev, bool *eof, char *errstr,
                             size_t errstr_size);

/* Next non-blank line of a JSONL dataset (opened either way), undecoded: *line is NUL-terminated,
 * without its line ending, owned by ds and valid until the next call; *len is its length.
 * EDDY_OK with *eof = true: end. EDDY_ERR_EVENT_TOO_LARGE: the line is over the cap (errstr names
 * FILE:LINE), the caller may go on. EDDY_ERR_INVALID_ARG for Fashion-MNIST. Other codes: the file
 * cannot be read further (a read error, corrupt or truncated gzip data). */
eddy_err_t eddy_dataset_next_line(eddy_dataset_t *ds, const char **line, size_t *len, bool *eof,
                                  char *errstr, size_t errstr_size);

/* 1-based number of the last line read from a JSONL dataset (blank lines count); 0 before the
 * first line and for Fashion-MNIST. */
uint64_t eddy_dataset_lineno(const eddy_dataset_t *ds);

/* Raw bytes of the last record for JSONL (the line, without newline), NULL for IDX datasets. */
const char *eddy_dataset_raw(const eddy_dataset_t *ds, size_t *len);

/* Fraction of the dataset consumed so far, 0..1 (records for IDX, bytes for JSONL). */
double eddy_dataset_progress(const eddy_dataset_t *ds);

/* Number of records when known up front (IDX), else -1. */
int64_t eddy_dataset_size(const eddy_dataset_t *ds);

#endif
