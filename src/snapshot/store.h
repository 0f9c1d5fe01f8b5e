/* The snapshot store: immutable version folders <root>/<model>/v000042/ holding weights.safetensors,
 * state.safetensors and manifest.json, plus the mutable pointers CURRENT (the served version) and
 * pinned/ markers, and an append-only events.log. A version is written in a temp folder, fsynced
 * and renamed into place, so a reader sees all of it or none of it. One writer per model (an flock
 * on <root>/<model>/.lock); any number of read-only openers. Layout and rules: snapshots/README.md. */
#ifndef EDDY_STORE_H
#define EDDY_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"
#include "model/learner.h"
#include "snapshot/manifest.h"
#include "format/safetensors.h"

#define EDDY_STORE_WEIGHTS "weights.safetensors"
#define EDDY_STORE_STATE "state.safetensors"
#define EDDY_STORE_MANIFEST "manifest.json"
#define EDDY_STORE_MAX_VERSIONS 100000 /* version folders per model, a hard cap on listings */
#define EDDY_STORE_EVENTS_MAX (8u << 20) /* events.log is rotated to events.log.1 past this size */
#define EDDY_STORE_PROBE_MIN_FREE (1u << 20) /* free bytes eddy_store_probe_write wants at least */

typedef enum {
  EDDY_STORE_WRITER = 0, /* creates the folders, takes the lock, removes leftovers of crashes */
  EDDY_STORE_READONLY    /* never writes; mutations return EDDY_ERR_STATE */
} eddy_store_mode_t;

typedef struct eddy_store eddy_store_t;
typedef struct eddy_store_txn eddy_store_txn_t;

/* Opens the store of model under root. WRITER: creates <root>/<model> if needed, takes its lock
 * (EDDY_ERR_STATE in errstr when another writer holds it), removes leftover .tmp-* and .del-*
 * entries with a log line each. READONLY: the model folder must exist. NULL + errstr on failure. */
eddy_store_t *eddy_store_new(const char *root, const char *model, eddy_store_mode_t mode, char *errstr,
                              size_t errstr_size);
void eddy_store_destroy(eddy_store_t *s); /* releases the lock; NULL is a no-op */

const char *eddy_store_dir(const eddy_store_t *s);   /* <root>/<model> */
const char *eddy_store_model(const eddy_store_t *s);

/* <root>/<model>/vNNNNNN[/file] into out; file NULL = the version folder. TOO_LARGE if it does
 * not fit. */
eddy_err_t eddy_store_path(const eddy_store_t *s, uint64_t version, const char *file, char *out, size_t out_size);

/* Newest version folder present: EDDY_OK, or EDDY_ERR_NOT_FOUND when there is none. */
eddy_err_t eddy_store_latest(eddy_store_t *s, uint64_t *version, char *errstr, size_t errstr_size);

/* The version named by CURRENT: NOT_FOUND when CURRENT is absent, FORMAT when it is malformed. */
eddy_err_t eddy_store_current(eddy_store_t *s, uint64_t *version, char *errstr, size_t errstr_size);
/* Points CURRENT at version (temp file, fsync, rename, fsync of the folder) and appends
 * {action, version, previous} to events.log; action NULL = "promote" (e.g. "rollback"). The version
 * must exist with a readable manifest, its files present at their recorded sizes, and a status
 * other than rejected (EDDY_ERR_STATE). Already current: EDDY_OK without writing. */
eddy_err_t eddy_store_set_current(eddy_store_t *s, uint64_t version, const char *action, char *errstr,
                                  size_t errstr_size);

typedef struct {
  uint64_t version;   /* the version CURRENT names afterwards; 0 = none */
  uint64_t previous;  /* the version it named before, 0 when absent or malformed */
  bool repaired;      /* CURRENT was rewritten or removed */
  char why[640];      /* what was wrong with it (when repaired) */
} eddy_store_current_check_t;

/* Start-up check (writer only): CURRENT must name a promoted version that verifies (every
 * eddy_store_verify check). When it does not -- malformed, a missing or rejected version, one
 * that fails verification, or no CURRENT while promoted versions exist -- CURRENT is pointed at
 * the newest promoted version that verifies, or removed when there is none, atomically, with
 * {action "repair" | "clear", version, previous, reason} appended to events.log and a warning in
 * the log. No versions and no CURRENT is fine. EDDY_ERR_IO when CURRENT cannot be rewritten. */
eddy_err_t eddy_store_check_current(eddy_store_t *s, eddy_store_current_check_t *out, char *errstr,
                                    size_t errstr_size);

/* ---- write failures (a full disk) ----
 * A write of the store that fails with EDDY_ERR_IO (begin, txn_write, commit, set_current)
 * starts a failure; a committed version or a CURRENT written ends it. */

/* EDDY_OK while writes work; EDDY_ERR_IO with the last failure and for how long while they fail. */
eddy_err_t eddy_store_write_status(eddy_store_t *s, char *why, size_t why_size);
/* While writes fail: ends the failure when the store's file system has room for another version
 * like the newest (EDDY_STORE_PROBE_MIN_FREE at least) and a small file can be written and
 * fsynced there (and removed); otherwise EDDY_ERR_IO says why. EDDY_OK at once when writes are
 * not failing. For a caller that must notice the space coming back without publishing. */
eddy_err_t eddy_store_probe_write(eddy_store_t *s, char *errstr, size_t errstr_size);

/* ---- publishing ----
 * begin reserves version = newest + 1 and creates <root>/<model>/.tmp-vNNNNNN-XXXXXX; the files
 * go there (eddy_store_txn_write, or written by the caller); commit checks them, writes the
 * manifest, fsyncs and renames the folder to vNNNNNN. One transaction per store at a time
 * (EDDY_ERR_STATE). A failed or aborted transaction leaves nothing behind and does not use up the
 * number: the next begin gets the same version. begin/write may run on the thread that owns the
 * learner and commit on another. */
eddy_err_t eddy_store_begin(eddy_store_t *s, eddy_store_txn_t **txn, char *errstr, size_t errstr_size);
uint64_t eddy_store_txn_version(const eddy_store_txn_t *t);
/* The temp folder. Files written there by the caller: weights.safetensors with __metadata__
 * eddy.spec, eddy.model and eddy.version (= the transaction's version), and state.safetensors. */
const char *eddy_store_txn_dir(const eddy_store_txn_t *t);
/* Writes weights.safetensors (dtype "F32" | "F16" | "BF16", with the metadata above) and
 * state.safetensors from the learner into the temp folder. The learner must have no pending
 * accumulation (see eddy_learner_save_state). */
eddy_err_t eddy_store_txn_write(eddy_store_txn_t *t, eddy_learner_t *l, const char *dtype, char *errstr,
                                size_t errstr_size);
/* The file name of precision p's weights in a version: "weights.safetensors" for fp32,
 * "weights-bf16.safetensors", "weights-fp16.safetensors", "weights-int8.safetensors". */
const char *eddy_store_precision_file(eddy_infer_precision_t p);
/* Writes precision p's file (eddy_store_precision_file; not fp32, whose file is the weights) into
 * the temp folder from weights (the version's weights, read as fp32): BF16 or F16 tensors, or the
 * int8 tensors quantized with calib's activation ranges (eddy_quant_write_int8), with the
 * metadata eddy.spec, eddy.model, eddy.version and eddy.precision. The caller lists it in the
 * manifest's precisions before commit. */
eddy_err_t eddy_store_txn_write_precision(eddy_store_txn_t *t, const eddy_st_reader_t *weights,
                                          const eddy_model_spec_t *spec, eddy_infer_precision_t p,
                                          const eddy_quant_calib_t *calib, char *errstr, size_t errstr_size);
/* Completes the version. m (in/out) carries the caller's fields (parent, step, examples,
 * buffer_cursor, offsets, metrics, precisions, status, reason, created_at_ms or 0 = now); the
 * temp folder must hold weights, state and the file of each precision m lists but fp32 (whose
 * file is the weights), written by the caller (eddy_store_txn_dir). The store sets
 * version, model, spec and weights_dtype (from the weights file), precision (from the state's
 * eddy.precision when present) and files. Checks what verify checks, except the checksums it has
 * just computed; a promoted version with non-finite weights is refused (EDDY_ERR_NONFINITE).
 * parent must be 0 or an existing version. Takes ownership of t on every path. */
eddy_err_t eddy_store_commit(eddy_store_txn_t *t, eddy_manifest_t *m, char *errstr, size_t errstr_size);
/* Removes the temp folder and frees t; NULL is a no-op. */
void eddy_store_abort(eddy_store_txn_t *t);
/* begin + txn_write + commit; *version (optional) receives the new version. */
eddy_err_t eddy_store_publish(eddy_store_t *s, eddy_learner_t *l, eddy_manifest_t *m, const char *dtype,
                              uint64_t *version, char *errstr, size_t errstr_size);

/* ---- reading ---- */

/* Loads vNNNNNN/manifest.json into m (clear it after use, also on failure). NOT_FOUND if absent. */
eddy_err_t eddy_store_load_manifest(eddy_store_t *s, uint64_t version, eddy_manifest_t *m, char *errstr,
                                    size_t errstr_size);

typedef struct {
  uint64_t version;
  bool current;           /* named by CURRENT */
  bool pinned;
  bool manifest_ok;       /* false: error says why manifest.json could not be read */
  eddy_manifest_t manifest;
  char error[256];
} eddy_store_entry_t;

/* Every version, newest first; *entries is freed with eddy_store_list_free. A damaged manifest
 * does not fail the listing (manifest_ok = false). */
eddy_err_t eddy_store_list(eddy_store_t *s, eddy_store_entry_t **entries, size_t *count, char *errstr,
                           size_t errstr_size);
void eddy_store_list_free(eddy_store_entry_t *entries, size_t count);

/* ---- retention ---- */

/* Pins (marker <root>/<model>/pinned/vNNNNNN) or unpins a version; pinned versions survive
 * retention. Pinning a missing version is NOT_FOUND; both are idempotent. */
eddy_err_t eddy_store_pin(eddy_store_t *s, uint64_t version, bool pinned, char *errstr, size_t errstr_size);
bool eddy_store_is_pinned(eddy_store_t *s, uint64_t version);
/* Deletes every version but the newest keep (>= 1), never the CURRENT one and never a pinned one.
 * Each is renamed to .del-* first, so it disappears at once, then removed. *deleted (optional)
 * receives the count. */
eddy_err_t eddy_store_retain(eddy_store_t *s, size_t keep, size_t *deleted, char *errstr, size_t errstr_size);

/* ---- verification ---- */

/* Called once per problem found: file is the name inside the version folder ("manifest.json",
 * "weights.safetensors", ...), message a sentence naming the value found and the one expected. */
typedef void (*eddy_store_problem_fn)(void *ctx, const char *file, eddy_err_t err, const char *message);

/* Checks the version folder dir: manifest.json parses; the folder name (when vNNNNNN) matches its
 * version; weights and state are listed, present, regular files with the recorded size and
 * SHA-256; no unlisted files; both parse as safetensors; the weights hold exactly the spec's
 * tensors (names, shapes, the manifest's weights_dtype), eddy.spec equal to the manifest's spec,
 * eddy.model and eddy.version equal to the manifest's; the state holds the spec's tensors in F32
 * and the same spec; each precision's file (the manifest's "precisions") holds eddy.precision,
 * the same metadata and that precision's tensors (BF16, F16, or the int8 layout of
 * eddy_quant_int8_layout); a promoted version has finite weights. Returns EDDY_OK or the first
 * problem's code; *problems (optional) gets the count. m (optional) receives the manifest when it
 * parsed (clear it after use). */
eddy_err_t eddy_store_verify_each(const char *dir, eddy_manifest_t *m, eddy_store_problem_fn fn, void *ctx,
                                  size_t *problems);
/* The weights file of version m held in memory (as a replica fetched it; data is malloc'ed and
 * taken over on every path, so the file is never held twice): size and SHA-256 against
 * the manifest, safetensors structure (header at most max_header bytes; 0 = the reader's default),
 * exactly the spec's tensors in the manifest's weights_dtype, eddy.spec / eddy.model /
 * eddy.version equal to the manifest's, finite values in a promoted version. Returns an open
 * reader over data (eddy_st_reader_destroy it), or NULL with the first problem in errstr
 * ("weights.safetensors: sha256 ..., the manifest says ..."). */
eddy_st_reader_t *eddy_store_verify_weights_mem(const eddy_manifest_t *m, uint8_t *data, size_t len,
                                                size_t max_header, char *errstr, size_t errstr_size);
/* The same for any weights file of m held in memory: weights.safetensors, or the file of one of
 * m's precisions (checked as that precision's file: eddy.precision, its dtypes or the int8 layout,
 * the metadata above, finite values in a promoted version). */
eddy_st_reader_t *eddy_store_verify_file_mem(const eddy_manifest_t *m, const char *name, uint8_t *data, size_t len,
                                             size_t max_header, char *errstr, size_t errstr_size);
/* Same, with the first problem in errstr ("weights.safetensors: sha256 ... (and 2 more problems)"). */
eddy_err_t eddy_store_verify(const char *dir, eddy_manifest_t *m, char *errstr, size_t errstr_size);

#endif
