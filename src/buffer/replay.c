/* The replay buffer on RocksDB. Every append -- events, dead letters, Kafka positions, the meta
 * counters (next seq, first seq, bytes, evicted), the reservoir slots and its RNG state, and the
 * range deletes of eviction -- is ONE WriteBatch, so the stored statistics always match the stored
 * events after any crash: nothing is derived in a second step. Readers use RocksDB snapshots; a
 * failed write (full disk) makes the next append reopen the database first. */
#include "buffer/replay.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

#include <rocksdb/c.h>

#include "core/clock.h"
#include "core/health.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/rng.h"

#define LOG_MOD "buffer"
#define FORMAT_VERSION 1
#define DLQ_RECORD_VERSION 1
#define DLQ_HEADER 36
#define DLQ_RAW_DEFAULT 4096
#define TOPIC_MAX 255
#define RESERVOIR_CLASSES_MAX 65536
#define LABELS_MAX 4096
#define SAMPLE_TRIES 4 /* point lookups per wanted sample before giving up on holes */
#define RO_OPEN_TRIES 5
#define REOPEN_MIN_FREE (4u << 20) /* free bytes needed before a reopen after a failed write */

enum { CF_DEFAULT = 0, CF_EVENTS, CF_OFFSETS, CF_META, CF_DLQ, CF_RESERVOIR, CF__COUNT };
static const char *const cf_names[CF__COUNT] = {"default", "events", "offsets", "meta", "dlq", "reservoir"};

/* Meta keys (values: u64 big-endian unless noted). User cursors are stored as "cursor/NAME". */
#define META_FORMAT "format"
#define META_FIRST "first_seq"
#define META_NEXT "next_seq"
#define META_BYTES "bytes"
#define META_EVICTED "evicted"
#define META_DL_FIRST "dl_first"
#define META_DL_NEXT "dl_next"
#define META_RES_SIZE "res_size"
#define META_RES_CLASSES "res_classes"
#define META_RES_RNG "res_rng"
#define META_RES_SEEN "res_seen" /* classes x u64 big-endian */
#define META_CLASSES "classes" /* opts.classes of the last writer (labels of a squared head: 1) */
#define META_RES_FORMAT "res_format" /* reservoir slot values: 2 = seq (u64 BE) + event; absent = event */
#define RES_FORMAT 2
#define META_CURSOR_PREFIX "cursor/"

struct eddy_replay {
  rocksdb_t *db;
  rocksdb_options_t *options;
  rocksdb_column_family_handle_t *cf[CF__COUNT];
  rocksdb_column_family_handle_t **extra_cf; /* column families not ours, opened because RocksDB
                                                requires every existing one to be opened */
  size_t n_extra;
  rocksdb_writeoptions_t *wopts;      /* per opts.sync */
  rocksdb_writeoptions_t *wopts_sync; /* meta_put */
  rocksdb_readoptions_t *ropts;
  eddy_replay_opts_t opts;
  char *path;

  pthread_rwlock_t db_lock; /* readers and appends share it; a reopen after a failed write takes
                               it exclusively (db is NULL while a reopen has failed) */
  bool need_reopen;          /* the last write failed: RocksDB stays in its error state (e.g. after
                               "No space left") until the database is reopened */
  pthread_mutex_t write_mu; /* one append at a time */
  pthread_mutex_t stats_mu; /* guards everything below */
  uint64_t first_seq, next_seq, bytes, evicted, dl_first, dl_next;
  uint32_t classes; /* label buckets: opts.classes, or the stored value when read-only */
  uint32_t res_size, res_classes;
  uint64_t res_rng;
  uint64_t *res_seen; /* [res_classes] */
  eddy_health_t health; /* its own lock: writes failing (a full disk), eddy_replay_write_status */
  bool res_seq;       /* slot values start with the event's seq (RES_FORMAT) */

  uint8_t *scratch; /* append: encoded event */
  size_t scratch_cap;
  uint64_t *seen_scratch; /* append: reservoir counts being updated */
};

/* ---- small helpers ---- */

static void put_be64(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; i--) {
    p[i] = (uint8_t)v;
    v >>= 8;
  }
}

static uint64_t get_be64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | p[i];
  return v;
}

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_le16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get_le16(const uint8_t *p) {
  return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get_le32(const uint8_t *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

static uint64_t get_le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

static void batch_put_meta(rocksdb_writebatch_t *b, rocksdb_column_family_handle_t *cf, const char *key,
                           uint64_t v) {
  uint8_t buf[8];
  put_be64(buf, v);
  rocksdb_writebatch_put_cf(b, cf, key, strlen(key), (const char *)buf, 8);
}

static uint32_t event_class(const eddy_replay_t *r, double label) {
  if (r->res_classes <= 1 || !isfinite(label)) return 0;
  double rounded = nearbyint(label);
  if (rounded <= 0) return 0;
  if (rounded >= (double)(r->res_classes - 1)) return r->res_classes - 1;
  return (uint32_t)rounded;
}

/* Reads a u64 meta value from the database (readopts may carry a snapshot). */
static eddy_err_t meta_read(eddy_replay_t *r, const rocksdb_readoptions_t *ro, const char *key,
                            uint64_t *value, char *errstr, size_t errstr_size) {
  char *err = NULL;
  size_t len = 0;
  rocksdb_pinnableslice_t *ps = rocksdb_get_pinned_cf(r->db, ro, r->cf[CF_META], key, strlen(key), &err);
  if (err) {
    eddy_err_t e = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "buffer %s: reading meta %s: %s", r->path,
                             key, err);
    rocksdb_free(err);
    return e;
  }
  if (!ps) return EDDY_ERR_NOT_FOUND;
  const char *v = rocksdb_pinnableslice_value(ps, &len);
  eddy_err_t e = EDDY_OK;
  if (len != 8)
    e = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "buffer %s: meta %s has %zu bytes, expected 8",
                  r->path, key, len);
  else
    *value = get_be64((const uint8_t *)v);
  rocksdb_pinnableslice_destroy(ps);
  return e;
}

/* ---- open / close ---- */

/* RocksDB's own LOG file (in the database folder) gets only fatal messages unless
 * EDDY_ROCKSDB_LOG=debug|info|warn|error says otherwise: Debian's librocksdb is built with
 * assertions, and its LOG writer aborts the process when it writes again after a failed write,
 * which on a full disk its background error recovery does. eddy logs RocksDB errors itself. */
static int rocksdb_log_level(void) {
  static const char *const names[] = {"debug", "info", "warn", "error", "fatal"};
  const char *v = getenv("EDDY_ROCKSDB_LOG");
  for (int i = 0; v && i < 5; i++)
    if (!strcmp(v, names[i])) return i;
  return 4;
}

static void close_db(eddy_replay_t *r) {
  for (size_t i = 0; i < r->n_extra; i++)
    if (r->extra_cf[i]) rocksdb_column_family_handle_destroy(r->extra_cf[i]);
  free(r->extra_cf);
  r->extra_cf = NULL;
  r->n_extra = 0;
  for (int i = 0; i < CF__COUNT; i++) {
    if (r->cf[i]) rocksdb_column_family_handle_destroy(r->cf[i]);
    r->cf[i] = NULL;
  }
  if (r->db) rocksdb_close(r->db);
  r->db = NULL;
}

static void replay_free(eddy_replay_t *r) {
  close_db(r);
  if (r->options) rocksdb_options_destroy(r->options);
  if (r->wopts) rocksdb_writeoptions_destroy(r->wopts);
  if (r->wopts_sync) rocksdb_writeoptions_destroy(r->wopts_sync);
  if (r->ropts) rocksdb_readoptions_destroy(r->ropts);
  pthread_mutex_destroy(&r->write_mu);
  pthread_mutex_destroy(&r->stats_mu);
  eddy_health_destroy(&r->health);
  pthread_rwlock_destroy(&r->db_lock);
  free(r->res_seen);
  free(r->seen_scratch);
  free(r->scratch);
  free(r->path);
  free(r);
}

void eddy_replay_destroy(eddy_replay_t *r) {
  if (r) replay_free(r);
}

/* Opens the database with all our column families plus any others already there. */
static eddy_err_t open_db(eddy_replay_t *r, char *errstr, size_t errstr_size) {
  char *err = NULL;
  size_t n_existing = 0;
  char **existing = rocksdb_list_column_families(r->options, r->path, &n_existing, &err);
  if (err) { /* a new database: no column families yet */
    rocksdb_free(err);
    err = NULL;
    if (existing) rocksdb_list_column_families_destroy(existing, 0); /* malloc(0) even on error */
    existing = NULL;
    n_existing = 0;
    if (r->opts.read_only)
      return eddy_errf(EDDY_ERR_NOT_FOUND, errstr, errstr_size, "buffer %s: not a RocksDB database",
                       r->path);
  }
  size_t total = CF__COUNT;
  const char **names = calloc(CF__COUNT + n_existing, sizeof *names);
  r->extra_cf = calloc(n_existing ? n_existing : 1, sizeof *r->extra_cf);
  if (!names || !r->extra_cf) {
    free(names);
    if (existing) rocksdb_list_column_families_destroy(existing, n_existing);
    return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "buffer %s: out of memory", r->path);
  }
  for (int i = 0; i < CF__COUNT; i++) names[i] = cf_names[i];
  for (size_t i = 0; i < n_existing; i++) {
    bool ours = false;
    for (int j = 0; j < CF__COUNT; j++) ours = ours || !strcmp(existing[i], cf_names[j]);
    if (!ours) names[total++] = existing[i];
  }
  if (r->opts.read_only) {
    for (int j = 1; j < CF__COUNT; j++) {
      bool found = false;
      for (size_t i = 0; i < n_existing; i++) found = found || !strcmp(existing[i], cf_names[j]);
      if (!found) {
        eddy_err_t e = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size,
                                 "buffer %s: not an eddy buffer (no column family \"%s\")", r->path,
                                 cf_names[j]);
        free(names);
        rocksdb_list_column_families_destroy(existing, n_existing);
        return e;
      }
    }
  }
  const rocksdb_options_t **cf_opts = calloc(total, sizeof *cf_opts);
  rocksdb_column_family_handle_t **handles = calloc(total, sizeof *handles);
  if (!cf_opts || !handles) {
    free(cf_opts);
    free(handles);
    free(names);
    if (existing) rocksdb_list_column_families_destroy(existing, n_existing);
    return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "buffer %s: out of memory", r->path);
  }
  for (size_t i = 0; i < total; i++) cf_opts[i] = r->options;

  if (r->opts.read_only) {
    /* A writer may delete files (compaction) while we read its MANIFEST: retry a few times. */
    for (int attempt = 0; attempt < RO_OPEN_TRIES; attempt++) {
      if (err) {
        rocksdb_free(err);
        err = NULL;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
      }
      r->db = rocksdb_open_for_read_only_column_families(r->options, r->path, (int)total, names, cf_opts,
                                                         handles, 0, &err);
      if (!err) break;
    }
  } else {
    r->db = rocksdb_open_column_families(r->options, r->path, (int)total, names, cf_opts, handles, &err);
  }
  eddy_err_t e = EDDY_OK;
  if (err) {
    e = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "buffer %s: cannot open: %s", r->path, err);
    rocksdb_free(err);
    r->db = NULL;
  } else {
    for (int i = 0; i < CF__COUNT; i++) r->cf[i] = handles[i];
    for (size_t i = CF__COUNT; i < total; i++) r->extra_cf[r->n_extra++] = handles[i];
  }
  free(handles);
  free(cf_opts);
  free(names);
  if (existing) rocksdb_list_column_families_destroy(existing, n_existing);
  return e;
}

/* Loads the counters from meta; a new database gets them initialised (one synced batch). */
static eddy_err_t load_meta(eddy_replay_t *r, char *errstr, size_t errstr_size) {
  uint64_t format = 0;
  eddy_err_t e = meta_read(r, r->ropts, META_FORMAT, &format, errstr, errstr_size);
  if (e && e != EDDY_ERR_NOT_FOUND) return e;
  bool fresh = e == EDDY_ERR_NOT_FOUND;
  if (!fresh && format != FORMAT_VERSION)
    return eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "buffer %s: format version %llu, expected %d",
                     r->path, (unsigned long long)format, FORMAT_VERSION);
  if (fresh && r->opts.read_only)
    return eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "buffer %s: not an eddy buffer (no format key)",
                     r->path);
  struct {
    const char *key;
    uint64_t *dst;
  } fields[] = {{META_FIRST, &r->first_seq}, {META_NEXT, &r->next_seq},   {META_BYTES, &r->bytes},
                {META_EVICTED, &r->evicted}, {META_DL_FIRST, &r->dl_first}, {META_DL_NEXT, &r->dl_next},
                {META_RES_RNG, &r->res_rng}};
  uint64_t stored_res_size = 0, stored_res_classes = 0, stored_res_format = 0;
  if (!fresh) {
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
      e = meta_read(r, r->ropts, fields[i].key, fields[i].dst, errstr, errstr_size);
      if (e == EDDY_ERR_NOT_FOUND)
        return eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "buffer %s: meta key %s missing", r->path,
                         fields[i].key);
      if (e) return e;
    }
    if ((e = meta_read(r, r->ropts, META_RES_SIZE, &stored_res_size, errstr, errstr_size))) return e;
    if ((e = meta_read(r, r->ropts, META_RES_CLASSES, &stored_res_classes, errstr, errstr_size))) return e;
    e = meta_read(r, r->ropts, META_RES_FORMAT, &stored_res_format, errstr, errstr_size);
    if (e && e != EDDY_ERR_NOT_FOUND) return e;
    e = EDDY_OK;
    if (r->first_seq > r->next_seq || r->dl_first > r->dl_next || stored_res_classes > RESERVOIR_CLASSES_MAX)
      return eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size,
                       "buffer %s: inconsistent meta (first_seq %llu, next_seq %llu, reservoir classes %llu)",
                       r->path, (unsigned long long)r->first_seq, (unsigned long long)r->next_seq,
                       (unsigned long long)stored_res_classes);
  }

  /* The reservoir configuration: the stored one when reading, the caller's when writing (a
   * change of size or classes restarts the reservoir). */
  uint32_t want_size = r->opts.reservoir_size;
  uint32_t want_classes = want_size ? (r->opts.classes ? r->opts.classes : 1) : 0;
  if (want_classes > RESERVOIR_CLASSES_MAX)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "buffer %s: classes = %u, max %d", r->path,
                     want_classes, RESERVOIR_CLASSES_MAX);
  bool reset = false;
  r->res_seq = true;
  if (r->opts.read_only) {
    want_size = (uint32_t)stored_res_size;
    want_classes = (uint32_t)stored_res_classes;
    r->res_seq = stored_res_format == RES_FORMAT;
  } else if (fresh || stored_res_size != want_size || stored_res_classes != want_classes ||
             stored_res_format != RES_FORMAT) {
    reset = true;
    if (!fresh)
      EDDY_INFO(LOG_MOD, "buffer %s: reservoir changed (size %llu -> %u, classes %llu -> %u, format %llu -> %d): "
                "restarted",
                r->path, (unsigned long long)stored_res_size, want_size, (unsigned long long)stored_res_classes,
                want_classes, (unsigned long long)stored_res_format, RES_FORMAT);
  }
  r->res_size = want_size;
  r->res_classes = want_classes;
  size_t nc = want_classes ? want_classes : 1;
  if (!r->res_seen) r->res_seen = calloc(nc, sizeof *r->res_seen);
  if (!r->seen_scratch) r->seen_scratch = calloc(nc, sizeof *r->seen_scratch);
  if (!r->res_seen || !r->seen_scratch)
    return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "buffer %s: out of memory", r->path);

  if (!reset && want_classes) {
    char *err = NULL;
    size_t len = 0;
    rocksdb_pinnableslice_t *ps =
        rocksdb_get_pinned_cf(r->db, r->ropts, r->cf[CF_META], META_RES_SEEN, strlen(META_RES_SEEN), &err);
    if (err) {
      e = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "buffer %s: reading meta %s: %s", r->path,
                    META_RES_SEEN, err);
      rocksdb_free(err);
      return e;
    }
    if (ps) {
      const uint8_t *v = (const uint8_t *)rocksdb_pinnableslice_value(ps, &len);
      if (len == (size_t)want_classes * 8)
        for (uint32_t c = 0; c < want_classes; c++) r->res_seen[c] = get_be64(v + 8 * (size_t)c);
      rocksdb_pinnableslice_destroy(ps);
      if (len != (size_t)want_classes * 8)
        return eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "buffer %s: meta %s has %zu bytes, expected %zu",
                         r->path, META_RES_SEEN, len, (size_t)want_classes * 8);
    }
  }
  uint64_t stored_classes = 0;
  e = meta_read(r, r->ropts, META_CLASSES, &stored_classes, errstr, errstr_size);
  if (e && e != EDDY_ERR_NOT_FOUND) return e;
  r->classes = r->opts.read_only ? (uint32_t)stored_classes : r->opts.classes;
  if (!r->opts.read_only && (e || stored_classes != r->opts.classes)) {
    char *err = NULL;
    uint8_t v[8];
    put_be64(v, r->opts.classes);
    rocksdb_put_cf(r->db, r->wopts_sync, r->cf[CF_META], META_CLASSES, strlen(META_CLASSES), (const char *)v, 8,
                   &err);
    if (err) {
      e = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "buffer %s: writing meta %s: %s", r->path, META_CLASSES,
                    err);
      rocksdb_free(err);
      return e;
    }
  }
  if (!reset) return EDDY_OK;

  /* New database or new reservoir shape: write the initial meta in one synced batch. */
  r->res_rng = r->opts.seed ^ 0x5eed5eed5eed5eedull;
  rocksdb_writebatch_t *b = rocksdb_writebatch_create();
  if (fresh) {
    batch_put_meta(b, r->cf[CF_META], META_FORMAT, FORMAT_VERSION);
    batch_put_meta(b, r->cf[CF_META], META_FIRST, 0);
    batch_put_meta(b, r->cf[CF_META], META_NEXT, 0);
    batch_put_meta(b, r->cf[CF_META], META_BYTES, 0);
    batch_put_meta(b, r->cf[CF_META], META_EVICTED, 0);
    batch_put_meta(b, r->cf[CF_META], META_DL_FIRST, 0);
    batch_put_meta(b, r->cf[CF_META], META_DL_NEXT, 0);
  } else {
    uint8_t lo[8] = {0}, hi[8];
    memset(hi, 0xff, sizeof hi);
    rocksdb_writebatch_delete_range_cf(b, r->cf[CF_RESERVOIR], (const char *)lo, 8, (const char *)hi, 8);
  }
  batch_put_meta(b, r->cf[CF_META], META_RES_SIZE, want_size);
  batch_put_meta(b, r->cf[CF_META], META_RES_CLASSES, want_classes);
  batch_put_meta(b, r->cf[CF_META], META_RES_RNG, r->res_rng);
  batch_put_meta(b, r->cf[CF_META], META_RES_FORMAT, RES_FORMAT);
  rocksdb_writebatch_delete_cf(b, r->cf[CF_META], META_RES_SEEN, strlen(META_RES_SEEN));
  char *err = NULL;
  rocksdb_write(r->db, r->wopts_sync, b, &err);
  rocksdb_writebatch_destroy(b);
  if (err) {
    e = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "buffer %s: initialising: %s", r->path, err);
    rocksdb_free(err);
    return e;
  }
  return EDDY_OK;
}

/* Cheap consistency check: the newest stored event must be below next_seq. */
static eddy_err_t check_tail(eddy_replay_t *r, char *errstr, size_t errstr_size) {
  rocksdb_iterator_t *it = rocksdb_create_iterator_cf(r->db, r->ropts, r->cf[CF_EVENTS]);
  rocksdb_iter_seek_to_last(it);
  eddy_err_t e = EDDY_OK;
  if (rocksdb_iter_valid(it)) {
    size_t klen = 0;
    const char *k = rocksdb_iter_key(it, &klen);
    uint64_t last = klen == 8 ? get_be64((const uint8_t *)k) : UINT64_MAX;
    if (klen != 8 || last >= r->next_seq || last < r->first_seq)
      e = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size,
                    "buffer %s: newest event key (seq %llu, %zu bytes) outside [first_seq %llu, next_seq %llu)",
                    r->path, (unsigned long long)last, klen, (unsigned long long)r->first_seq,
                    (unsigned long long)r->next_seq);
  }
  rocksdb_iter_destroy(it);
  return e;
}

eddy_err_t eddy_replay_rank_path(const char *root, int rank, char *out, size_t out_size) {
  int n = snprintf(out, out_size, "%s/rank-%d", root, rank);
  return n < 0 || (size_t)n >= out_size ? EDDY_ERR_TOO_LARGE : EDDY_OK;
}

eddy_replay_t *eddy_replay_new(const eddy_replay_opts_t *opts, char *errstr, size_t errstr_size) {
  if (!opts || !opts->path || !*opts->path) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "buffer: no path given");
    return NULL;
  }
  if (opts->read_only) {
    struct stat st;
    if (stat(opts->path, &st) != 0) {
      eddy_errf(EDDY_ERR_NOT_FOUND, errstr, errstr_size, "buffer %s: %s", opts->path, strerror(errno));
      return NULL;
    }
    if (!S_ISDIR(st.st_mode)) {
      eddy_errf(EDDY_ERR_NOT_FOUND, errstr, errstr_size, "buffer %s: not a directory", opts->path);
      return NULL;
    }
  } else if (eddy_mkdir_p(opts->path) != 0) {
    eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "buffer %s: cannot create the folder: %s", opts->path,
              strerror(errno));
    return NULL;
  }
  eddy_replay_t *r = calloc(1, sizeof *r);
  if (!r) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "buffer %s: out of memory", opts->path);
    return NULL;
  }
  pthread_mutex_init(&r->write_mu, NULL);
  pthread_mutex_init(&r->stats_mu, NULL);
  eddy_health_init(&r->health);
  pthread_rwlockattr_t rwa;
  pthread_rwlockattr_init(&rwa);
  pthread_rwlockattr_setkind_np(&rwa, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&r->db_lock, &rwa);
  pthread_rwlockattr_destroy(&rwa);
  r->opts = *opts;
  if (!r->opts.dlq_raw_cap) r->opts.dlq_raw_cap = DLQ_RAW_DEFAULT;
  r->path = strdup(opts->path);
  r->opts.path = r->path;
  r->options = rocksdb_options_create();
  r->wopts = rocksdb_writeoptions_create();
  r->wopts_sync = rocksdb_writeoptions_create();
  r->ropts = rocksdb_readoptions_create();
  if (!r->path || !r->options || !r->wopts || !r->wopts_sync || !r->ropts) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "buffer %s: out of memory", opts->path);
    replay_free(r);
    return NULL;
  }
  rocksdb_options_set_create_if_missing(r->options, !opts->read_only);
  rocksdb_options_set_create_missing_column_families(r->options, !opts->read_only);
  rocksdb_options_set_keep_log_file_num(r->options, 4);
  rocksdb_options_set_info_log_level(r->options, rocksdb_log_level());
  rocksdb_writeoptions_set_sync(r->wopts, opts->sync);
  rocksdb_writeoptions_set_sync(r->wopts_sync, 1);

  if (open_db(r, errstr, errstr_size) || load_meta(r, errstr, errstr_size) ||
      check_tail(r, errstr, errstr_size)) {
    replay_free(r);
    return NULL;
  }
  EDDY_DEBUG(LOG_MOD, "buffer %s: opened%s, seqs [%llu, %llu), %llu bytes", r->path,
             opts->read_only ? " read-only" : "", (unsigned long long)r->first_seq,
             (unsigned long long)r->next_seq, (unsigned long long)r->bytes);
  return r;
}

/* Shared access to the database handle for one call; false when a reopen failed (no handle). */
static bool db_enter(eddy_replay_t *r) {
  pthread_rwlock_rdlock(&r->db_lock);
  if (r->db) return true;
  pthread_rwlock_unlock(&r->db_lock);
  return false;
}

static void db_leave(eddy_replay_t *r) {
  pthread_rwlock_unlock(&r->db_lock);
}

/* After a failed write RocksDB refuses every later write (7.8 has no Resume in its C API and does
 * not recover from a full WAL disk by itself): close and reopen, which replays the WAL and drops
 * the torn tail. The caller holds write_mu. The counters are reloaded from meta and must equal
 * those in memory, since the failed batch was not applied. */
static eddy_err_t reopen(eddy_replay_t *r, char *errstr, size_t errstr_size) {
  /* Debian's librocksdb is built with assertions, and its info LOG writer aborts the process on a
   * second write after ENOSPC, which opening a database does: reopen only once there is room. */
  struct statvfs vfs;
  if (statvfs(r->path, &vfs) == 0 && (uint64_t)vfs.f_bavail * vfs.f_frsize < REOPEN_MIN_FREE)
    return eddy_errf(EDDY_ERR_IO, errstr, errstr_size,
                     "buffer %s: disk still full (%llu bytes free, %u needed before reopening after the "
                     "failed write)",
                     r->path, (unsigned long long)vfs.f_bavail * vfs.f_frsize, REOPEN_MIN_FREE);
  pthread_rwlock_wrlock(&r->db_lock);
  pthread_mutex_lock(&r->stats_mu);
  uint64_t saved[] = {r->first_seq, r->next_seq, r->bytes, r->evicted, r->dl_first, r->dl_next, r->res_rng};
  close_db(r);
  eddy_err_t e = open_db(r, errstr, errstr_size);
  if (!e) e = load_meta(r, errstr, errstr_size);
  if (!e) e = check_tail(r, errstr, errstr_size);
  if (e) {
    close_db(r);
    r->first_seq = saved[0], r->next_seq = saved[1], r->bytes = saved[2], r->evicted = saved[3];
    r->dl_first = saved[4], r->dl_next = saved[5], r->res_rng = saved[6];
  } else {
    r->need_reopen = false;
    if (r->next_seq != saved[1] || r->bytes != saved[2])
      EDDY_WARN(LOG_MOD, "buffer %s: after reopen next_seq %llu bytes %llu (were %llu, %llu in memory)",
                r->path, (unsigned long long)r->next_seq, (unsigned long long)r->bytes,
                (unsigned long long)saved[1], (unsigned long long)saved[2]);
    EDDY_INFO(LOG_MOD, "buffer %s: reopened after a failed write", r->path);
  }
  pthread_mutex_unlock(&r->stats_mu);
  pthread_rwlock_unlock(&r->db_lock);
  return e;
}

/* Records the outcome of a write for eddy_replay_write_status: an EDDY_ERR_IO (why says what
 * failed) starts or continues a failure, EDDY_OK ends it; other errors are no write failures. */
static void note_write(eddy_replay_t *r, eddy_err_t e, const char *why) {
  if (e != EDDY_OK && e != EDDY_ERR_IO) return;
  if (eddy_health_note(&r->health, e != EDDY_OK, why)) EDDY_INFO(LOG_MOD, "buffer %s: writes work again", r->path);
}

/* ---- append ---- */

static eddy_err_t scratch_reserve(eddy_replay_t *r, size_t need) {
  if (need <= r->scratch_cap) return EDDY_OK;
  size_t cap = r->scratch_cap ? r->scratch_cap : 4096;
  while (cap < need) cap *= 2;
  uint8_t *p = realloc(r->scratch, cap);
  if (!p) return EDDY_ERR_NOMEM;
  r->scratch = p;
  r->scratch_cap = cap;
  return EDDY_OK;
}

/* Encodes one dead letter record (little-endian fields, see DLQ_HEADER):
 *   u8 version | u8 0 | u16 reason | i32 partition | i64 offset | i64 ts_ms | u32 raw_len (original)
 *   | u16 topic_len | u16 msg_len | u32 raw_kept | topic | message | raw[raw_kept] */
static size_t dlq_encode(const eddy_replay_t *r, const eddy_dead_letter_t *dl, uint8_t *buf) {
  size_t topic_len = dl->topic ? strnlen(dl->topic, TOPIC_MAX) : 0;
  size_t msg_len = dl->message ? strnlen(dl->message, EDDY_REPLAY_DLQ_MESSAGE_MAX) : 0;
  size_t raw_kept = dl->raw ? dl->raw_len : 0;
  if (raw_kept > r->opts.dlq_raw_cap) raw_kept = r->opts.dlq_raw_cap;
  if (!buf) return DLQ_HEADER + topic_len + msg_len + raw_kept;
  buf[0] = DLQ_RECORD_VERSION;
  buf[1] = 0;
  put_le16(buf + 2, (uint16_t)dl->reason);
  put_le32(buf + 4, (uint32_t)dl->partition);
  put_le64(buf + 8, (uint64_t)dl->offset);
  put_le64(buf + 16, (uint64_t)dl->ts_ms);
  put_le32(buf + 24, dl->raw_len > UINT32_MAX ? UINT32_MAX : (uint32_t)dl->raw_len);
  put_le16(buf + 28, (uint16_t)topic_len);
  put_le16(buf + 30, (uint16_t)msg_len);
  put_le32(buf + 32, (uint32_t)raw_kept);
  uint8_t *p = buf + DLQ_HEADER;
  if (topic_len) memcpy(p, dl->topic, topic_len);
  p += topic_len;
  if (msg_len) memcpy(p, dl->message, msg_len);
  p += msg_len;
  if (raw_kept) memcpy(p, dl->raw, raw_kept);
  return DLQ_HEADER + topic_len + msg_len + raw_kept;
}

/* Decodes a record into dl; topic and message are copied NUL-terminated into the buffers given. */
static bool dlq_decode(const uint8_t *v, size_t len, eddy_dead_letter_t *dl, char *topic, char *message) {
  if (len < DLQ_HEADER || v[0] != DLQ_RECORD_VERSION) return false;
  size_t topic_len = get_le16(v + 28), msg_len = get_le16(v + 30), raw_kept = get_le32(v + 32);
  if (topic_len > TOPIC_MAX || msg_len > EDDY_REPLAY_DLQ_MESSAGE_MAX ||
      DLQ_HEADER + topic_len + msg_len + raw_kept != len)
    return false;
  memset(dl, 0, sizeof *dl);
  dl->reason = (eddy_err_t)get_le16(v + 2);
  dl->partition = (int32_t)get_le32(v + 4);
  dl->offset = (int64_t)get_le64(v + 8);
  dl->ts_ms = (int64_t)get_le64(v + 16);
  memcpy(topic, v + DLQ_HEADER, topic_len);
  topic[topic_len] = 0;
  memcpy(message, v + DLQ_HEADER + topic_len, msg_len);
  message[msg_len] = 0;
  dl->topic = topic;
  dl->message = message;
  dl->raw = v + DLQ_HEADER + topic_len + msg_len;
  dl->raw_len = raw_kept;
  return true;
}

static size_t offset_key(const char *topic, int32_t partition, uint8_t *key) {
  size_t tl = strlen(topic);
  memcpy(key, topic, tl);
  key[tl] = 0;
  put_be32(key + tl + 1, (uint32_t)partition);
  return tl + 5;
}

/* Eviction plan: how many of the oldest stored events (and their bytes) go so that the stored
 * events plus the new ones fit the capacity. Scans the sizes of the events to drop. */
static eddy_err_t plan_eviction(eddy_replay_t *r, uint64_t add_events, uint64_t add_bytes, uint64_t *drop,
                                uint64_t *drop_bytes, char *errstr, size_t errstr_size) {
  uint64_t cap_e = r->opts.capacity_events, cap_b = r->opts.capacity_bytes;
  uint64_t events = r->next_seq - r->first_seq + add_events, bytes = r->bytes + add_bytes;
  *drop = *drop_bytes = 0;
  if ((!cap_e || events <= cap_e) && (!cap_b || bytes <= cap_b)) return EDDY_OK;
  rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
  rocksdb_readoptions_set_fill_cache(ro, 0);
  rocksdb_iterator_t *it = rocksdb_create_iterator_cf(r->db, ro, r->cf[CF_EVENTS]);
  uint8_t key[8];
  put_be64(key, r->first_seq);
  rocksdb_iter_seek(it, (const char *)key, 8);
  uint64_t stored = r->next_seq - r->first_seq;
  while (*drop < stored && ((cap_e && events > cap_e) || (cap_b && bytes > cap_b))) {
    if (!rocksdb_iter_valid(it)) break;
    size_t vlen = 0;
    rocksdb_iter_value(it, &vlen);
    (*drop)++;
    *drop_bytes += vlen;
    events--;
    bytes -= vlen;
    rocksdb_iter_next(it);
  }
  char *err = NULL;
  rocksdb_iter_get_error(it, &err);
  rocksdb_iter_destroy(it);
  rocksdb_readoptions_destroy(ro);
  if (err) {
    eddy_err_t e = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "buffer %s: scanning for eviction: %s",
                             r->path, err);
    rocksdb_free(err);
    return e;
  }
  if (*drop < stored && ((cap_e && events > cap_e) || (cap_b && bytes > cap_b)))
    return eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size,
                     "buffer %s: events missing below next_seq %llu (only %llu of %llu found)", r->path,
                     (unsigned long long)r->next_seq, (unsigned long long)*drop, (unsigned long long)stored);
  return EDDY_OK;
}

/* A reservoir slot written by this batch: key class|slot and the event (batch index) it gets. */
typedef struct {
  uint64_t key;
  size_t idx;
} res_put_t;

static int res_put_cmp(const void *a, const void *b) {
  const res_put_t *x = a, *y = b;
  if (x->key != y->key) return x->key < y->key ? -1 : 1;
  return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* One append in the making: what its steps work out, and the counters the buffer has once the
 * batch is written (copied into the struct only after the write succeeded). */
typedef struct {
  size_t n;                  /* events given */
  size_t *sizes;             /* [n] encoded size of each */
  uint64_t add_bytes;        /* sum of sizes */
  uint64_t drop, drop_bytes; /* oldest stored events evicted, and their bytes */
  uint64_t drop_new;         /* new events evicted at once (the batch alone is over capacity) */
  uint64_t kept_bytes;       /* bytes of the new events that are stored */
  res_put_t *res_puts;       /* [n_res] reservoir slots drawn, in batch order */
  size_t n_res;
  uint64_t rng;              /* reservoir RNG state after the batch */
  uint64_t seq0;             /* seq of the first new event (next_seq after: seq0 + n) */
  uint64_t first_seq, bytes, evicted, dl_first, dl_next; /* after the batch */
} append_t;

/* The checks made before any lock is taken. */
static eddy_err_t append_check_args(const eddy_replay_t *r, const eddy_event_t *const *events, size_t n,
                                    const eddy_dead_letter_t *dls, size_t n_dl,
                                    const eddy_replay_offset_t *offsets, size_t n_off, char *errstr,
                                    size_t errstr_size) {
  if (!r || (n && !events) || (n_dl && !dls) || (n_off && !offsets))
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "buffer append: NULL argument");
  if (r->opts.read_only)
    return eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "buffer %s: opened read-only", r->path);
  for (size_t i = 0; i < n_off; i++)
    if (!offsets[i].topic || !*offsets[i].topic || strlen(offsets[i].topic) > TOPIC_MAX)
      return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                       "buffer append: offsets[%zu] has an empty or over-long (> %d bytes) topic", i, TOPIC_MAX);
  return EDDY_OK;
}

/* The encoded size of each event (one over EDDY_REPLAY_EVENT_MAX refuses the batch) and their sum. */
static eddy_err_t append_sizes(eddy_replay_t *r, append_t *a, const eddy_event_t *const *events, char *errstr,
                               size_t errstr_size) {
  a->sizes = a->n ? malloc(a->n * sizeof *a->sizes) : NULL;
  a->res_puts = a->n && r->res_size ? malloc(a->n * sizeof *a->res_puts) : NULL;
  if (a->n && (!a->sizes || (r->res_size && !a->res_puts)))
    return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "buffer %s: out of memory", r->path);
  for (size_t i = 0; i < a->n; i++) {
    a->sizes[i] = eddy_event_encoded_size(events[i]);
    if (a->sizes[i] > EDDY_REPLAY_EVENT_MAX)
      return eddy_errf(EDDY_ERR_TOO_LARGE, errstr, errstr_size,
                       "buffer %s: event %zu (id \"%s\") encodes to %zu bytes, max %u", r->path, i,
                       events[i]->id, a->sizes[i], EDDY_REPLAY_EVENT_MAX);
    a->add_bytes += a->sizes[i];
  }
  return EDDY_OK;
}

/* Capacity: refuses the batch (eviction off), or plans which of the oldest events go and, when
 * all of them go and the batch alone is still over capacity, which of its own first events. */
static eddy_err_t append_plan_capacity(eddy_replay_t *r, append_t *a, char *errstr, size_t errstr_size) {
  uint64_t cap_e = r->opts.capacity_events, cap_b = r->opts.capacity_bytes;
  uint64_t stored = r->next_seq - r->first_seq;
  if (!r->opts.evict) {
    if ((cap_e && stored + a->n > cap_e) || (cap_b && r->bytes + a->add_bytes > cap_b))
      return eddy_errf(EDDY_ERR_TOO_LARGE, errstr, errstr_size,
                       "buffer %s full: %llu + %zu events (%llu + %llu bytes) over capacity_events %llu / "
                       "capacity_bytes %llu, and eviction is off",
                       r->path, (unsigned long long)stored, a->n, (unsigned long long)r->bytes,
                       (unsigned long long)a->add_bytes, (unsigned long long)cap_e, (unsigned long long)cap_b);
  } else {
    eddy_err_t e = plan_eviction(r, a->n, a->add_bytes, &a->drop, &a->drop_bytes, errstr, errstr_size);
    if (e) return e;
  }
  a->kept_bytes = a->add_bytes;
  if (a->drop == stored) { /* everything old goes; maybe some of the new ones too */
    uint64_t ev_left = a->n, by_left = a->add_bytes;
    while (a->drop_new < a->n && ((cap_e && ev_left > cap_e) || (cap_b && by_left > cap_b))) {
      ev_left--;
      by_left -= a->sizes[a->drop_new++];
    }
    a->kept_bytes = by_left;
  }
  return EDDY_OK;
}

/* Puts each new event not evicted at once, and draws its reservoir slot (Algorithm R within the
 * event's class) on copies of the class counts and the RNG state. */
static eddy_err_t append_events(eddy_replay_t *r, append_t *a, rocksdb_writebatch_t *b,
                                const eddy_event_t *const *events, char *errstr, size_t errstr_size) {
  a->seq0 = r->next_seq;
  memcpy(r->seen_scratch, r->res_seen, (r->res_classes ? r->res_classes : 1) * sizeof *r->res_seen);
  a->rng = r->res_rng;
  for (size_t i = 0; i < a->n; i++) {
    eddy_err_t e = scratch_reserve(r, a->sizes[i] + 8);
    if (e) return eddy_errf(e, errstr, errstr_size, "buffer %s: out of memory", r->path);
    if (eddy_event_encode(events[i], r->scratch, r->scratch_cap) != a->sizes[i])
      return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                       "buffer %s: event %zu (id \"%s\") cannot be encoded (missing arrays)", r->path, i,
                       events[i]->id);
    if (i >= a->drop_new) {
      uint8_t key[8];
      put_be64(key, a->seq0 + i);
      rocksdb_writebatch_put_cf(b, r->cf[CF_EVENTS], (const char *)key, 8, (const char *)r->scratch,
                                a->sizes[i]);
    }
    if (r->res_size) {
      uint32_t c = event_class(r, events[i]->label);
      uint64_t seen = ++r->seen_scratch[c];
      uint64_t slot = seen <= r->res_size ? seen - 1 : eddy_rng_below(&a->rng, seen);
      if (slot < r->res_size) a->res_puts[a->n_res++] = (res_put_t){(uint64_t)c << 32 | slot, i};
    }
  }
  return EDDY_OK;
}

/* Puts the reservoir slots drawn, in key order and the last event per slot only: random-order
 * keys would cost the memtable a full skiplist search each (4x the time of the whole append for
 * small events). */
static void append_reservoir(eddy_replay_t *r, append_t *a, rocksdb_writebatch_t *b,
                             const eddy_event_t *const *events) {
  if (a->n_res) qsort(a->res_puts, a->n_res, sizeof *a->res_puts, res_put_cmp);
  for (size_t k = 0; k < a->n_res; k++) {
    if (k + 1 < a->n_res && a->res_puts[k + 1].key == a->res_puts[k].key) continue;
    size_t i = a->res_puts[k].idx;
    put_be64(r->scratch, a->seq0 + i);
    eddy_event_encode(events[i], r->scratch + 8, r->scratch_cap - 8); /* fits: reserved below */
    uint8_t key[8];
    put_be64(key, a->res_puts[k].key);
    rocksdb_writebatch_put_cf(b, r->cf[CF_RESERVOIR], (const char *)key, 8, (const char *)r->scratch,
                              a->sizes[i] + 8);
  }
}

/* Puts the dead letters, with the oldest (stored or new) dropped beyond EDDY_REPLAY_DLQ_KEEP. */
static eddy_err_t append_dead_letters(eddy_replay_t *r, append_t *a, rocksdb_writebatch_t *b,
                                      const eddy_dead_letter_t *dls, size_t n_dl, char *errstr,
                                      size_t errstr_size) {
  a->dl_next = r->dl_next + n_dl;
  a->dl_first = r->dl_first;
  if (a->dl_next - a->dl_first > EDDY_REPLAY_DLQ_KEEP) a->dl_first = a->dl_next - EDDY_REPLAY_DLQ_KEEP;
  for (size_t i = 0; i < n_dl; i++) {
    uint64_t dseq = r->dl_next + i;
    if (dseq < a->dl_first) continue;
    size_t len = dlq_encode(r, &dls[i], NULL);
    eddy_err_t e = scratch_reserve(r, len);
    if (e) return eddy_errf(e, errstr, errstr_size, "buffer %s: out of memory", r->path);
    dlq_encode(r, &dls[i], r->scratch);
    uint8_t key[8];
    put_be64(key, dseq);
    rocksdb_writebatch_put_cf(b, r->cf[CF_DLQ], (const char *)key, 8, (const char *)r->scratch, len);
  }
  if (a->dl_first > r->dl_first) {
    uint8_t lo[8], hi[8];
    put_be64(lo, r->dl_first);
    put_be64(hi, a->dl_first < r->dl_next ? a->dl_first : r->dl_next);
    if (memcmp(lo, hi, 8) < 0)
      rocksdb_writebatch_delete_range_cf(b, r->cf[CF_DLQ], (const char *)lo, 8, (const char *)hi, 8);
  }
  return EDDY_OK;
}

/* Puts the next Kafka offset of each partition: stored with the events they cover. */
static void append_offsets(eddy_replay_t *r, rocksdb_writebatch_t *b, const eddy_replay_offset_t *offsets,
                           size_t n_off) {
  for (size_t i = 0; i < n_off; i++) {
    uint8_t key[TOPIC_MAX + 5], val[8];
    size_t klen = offset_key(offsets[i].topic, offsets[i].partition, key);
    put_be64(val, (uint64_t)offsets[i].next_offset);
    rocksdb_writebatch_put_cf(b, r->cf[CF_OFFSETS], (const char *)key, klen, (const char *)val, 8);
  }
}

/* Evicts the oldest events planned (one range delete) and works out the counters after the batch. */
static void append_evict(eddy_replay_t *r, append_t *a, rocksdb_writebatch_t *b) {
  if (a->drop) {
    uint8_t lo[8], hi[8];
    put_be64(lo, r->first_seq);
    put_be64(hi, r->first_seq + a->drop);
    rocksdb_writebatch_delete_range_cf(b, r->cf[CF_EVENTS], (const char *)lo, 8, (const char *)hi, 8);
  }
  a->first_seq = r->first_seq + a->drop + a->drop_new;
  a->bytes = r->bytes - a->drop_bytes + a->kept_bytes;
  a->evicted = r->evicted + a->drop + a->drop_new;
}

/* Puts the meta counters that change: the event counters, the dead-letter range, the reservoir's
 * RNG state and class counts. */
static eddy_err_t append_meta(eddy_replay_t *r, append_t *a, rocksdb_writebatch_t *b, size_t n_dl,
                              char *errstr, size_t errstr_size) {
  rocksdb_column_family_handle_t *meta = r->cf[CF_META];
  if (a->n || a->drop) {
    batch_put_meta(b, meta, META_NEXT, a->seq0 + a->n);
    batch_put_meta(b, meta, META_FIRST, a->first_seq);
    batch_put_meta(b, meta, META_BYTES, a->bytes);
    batch_put_meta(b, meta, META_EVICTED, a->evicted);
  }
  if (n_dl) {
    batch_put_meta(b, meta, META_DL_NEXT, a->dl_next);
    batch_put_meta(b, meta, META_DL_FIRST, a->dl_first);
  }
  if (a->n && r->res_size) {
    batch_put_meta(b, meta, META_RES_RNG, a->rng);
    size_t len = (size_t)r->res_classes * 8;
    eddy_err_t e = scratch_reserve(r, len);
    if (e) return eddy_errf(e, errstr, errstr_size, "buffer %s: out of memory", r->path);
    for (uint32_t c = 0; c < r->res_classes; c++) put_be64(r->scratch + 8 * (size_t)c, r->seen_scratch[c]);
    rocksdb_writebatch_put_cf(b, meta, META_RES_SEEN, strlen(META_RES_SEEN), (const char *)r->scratch, len);
  }
  return EDDY_OK;
}

/* Writes the batch: all of it or, on a crash or an error, none. A failed write makes the next
 * append reopen the database first. */
static eddy_err_t append_write(eddy_replay_t *r, const append_t *a, rocksdb_writebatch_t *b, char *errstr,
                               size_t errstr_size) {
  char *err = NULL;
  rocksdb_write(r->db, r->wopts, b, &err);
  if (!err) return EDDY_OK;
  eddy_err_t e = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "buffer %s: write of %zu events failed: %s",
                           r->path, a->n, err);
  rocksdb_free(err);
  r->need_reopen = true;
  return e;
}

/* Publishes the counters of the written batch to readers (stats, samplers). */
static void append_publish(eddy_replay_t *r, const append_t *a) {
  pthread_mutex_lock(&r->stats_mu);
  r->next_seq = a->seq0 + a->n;
  r->first_seq = a->first_seq;
  r->bytes = a->bytes;
  r->evicted = a->evicted;
  r->dl_next = a->dl_next;
  r->dl_first = a->dl_first;
  if (r->res_size) {
    memcpy(r->res_seen, r->seen_scratch, (size_t)r->res_classes * sizeof *r->res_seen);
    r->res_rng = a->rng;
  }
  pthread_mutex_unlock(&r->stats_mu);
}

/* Every step adds to ONE WriteBatch -- new events, reservoir slots, dead letters, Kafka offsets,
 * the eviction's range delete and the meta counters -- and one rocksdb_write stores it, so a crash
 * keeps all of an append or none: the offsets never run ahead of or behind the events they cover
 * (exactly-once ingest), and the meta counters always describe the stored events.
 *
 * Locks, always taken in this order: write_mu (one append at a time; a reopen runs under it), then
 * db_lock shared for the whole append (r->db stays valid: only a reopen takes it exclusively, and
 * that cannot run meanwhile), then stats_mu, only to publish the counters after the write. The
 * steps read the counters (first_seq, next_seq, bytes, dl_*, res_seen, res_rng) without stats_mu:
 * only appends and reopens change them, both under write_mu. */
eddy_err_t eddy_replay_append(eddy_replay_t *r, const eddy_event_t *const *events, size_t n,
                              const eddy_dead_letter_t *dls, size_t n_dl,
                              const eddy_replay_offset_t *offsets, size_t n_off, uint64_t *first_seq,
                              char *errstr, size_t errstr_size) {
  eddy_err_t e = append_check_args(r, events, n, dls, n_dl, offsets, n_off, errstr, errstr_size);
  if (e) return e;

  pthread_mutex_lock(&r->write_mu);
  if (r->need_reopen) {
    eddy_err_t re = reopen(r, errstr, errstr_size);
    if (re) {
      pthread_mutex_unlock(&r->write_mu);
      if (re != EDDY_ERR_NOMEM) note_write(r, EDDY_ERR_IO, errstr);
      return re == EDDY_ERR_NOMEM ? re : EDDY_ERR_IO;
    }
  }
  pthread_rwlock_rdlock(&r->db_lock); /* r->db is set: only reopen (under write_mu) clears it */
  rocksdb_set_perf_level(rocksdb_disable); /* thread-local: no perf counters on the ingest path */
  append_t a = {.n = n};
  rocksdb_writebatch_t *b = NULL;
  e = append_sizes(r, &a, events, errstr, errstr_size);
  if (!e) e = append_plan_capacity(r, &a, errstr, errstr_size);
  if (!e) {
    b = rocksdb_writebatch_create();
    e = append_events(r, &a, b, events, errstr, errstr_size);
  }
  if (!e) {
    append_reservoir(r, &a, b, events);
    e = append_dead_letters(r, &a, b, dls, n_dl, errstr, errstr_size);
  }
  if (!e) {
    append_offsets(r, b, offsets, n_off);
    append_evict(r, &a, b);
    e = append_meta(r, &a, b, n_dl, errstr, errstr_size);
  }
  if (!e) {
    e = append_write(r, &a, b, errstr, errstr_size);
    note_write(r, e, errstr);
  }
  if (!e) {
    append_publish(r, &a);
    if (first_seq) *first_seq = a.seq0;
  }
  if (b) rocksdb_writebatch_destroy(b);
  free(a.sizes);
  free(a.res_puts);
  pthread_rwlock_unlock(&r->db_lock);
  pthread_mutex_unlock(&r->write_mu);
  return e;
}

eddy_err_t eddy_replay_write_status(eddy_replay_t *r, char *why, size_t why_size) {
  if (!r) return eddy_errf(EDDY_ERR_INVALID_ARG, why, why_size, "buffer: NULL");
  return eddy_health_status(&r->health, why, why_size);
}

/* ---- offsets and meta ---- */

eddy_err_t eddy_replay_offset(eddy_replay_t *r, const char *topic, int32_t partition, int64_t *next) {
  if (!r || !topic || !next || strlen(topic) > TOPIC_MAX) return EDDY_ERR_INVALID_ARG;
  uint8_t key[TOPIC_MAX + 5];
  size_t klen = offset_key(topic, partition, key);
  char *err = NULL;
  if (!db_enter(r)) return EDDY_ERR_IO;
  rocksdb_pinnableslice_t *ps = rocksdb_get_pinned_cf(r->db, r->ropts, r->cf[CF_OFFSETS], (const char *)key,
                                                      klen, &err);
  eddy_err_t e = EDDY_OK;
  if (err) {
    EDDY_ERROR(LOG_MOD, "buffer %s: reading offset of %s/%d: %s", r->path, topic, partition, err);
    rocksdb_free(err);
    e = EDDY_ERR_IO;
  } else if (!ps) {
    e = EDDY_ERR_NOT_FOUND;
  } else {
    size_t len = 0;
    const char *v = rocksdb_pinnableslice_value(ps, &len);
    e = len == 8 ? EDDY_OK : EDDY_ERR_FORMAT;
    if (!e) *next = (int64_t)get_be64((const uint8_t *)v);
    rocksdb_pinnableslice_destroy(ps);
  }
  db_leave(r);
  return e;
}

void eddy_replay_offsets_each(eddy_replay_t *r,
                              void (*fn)(void *ctx, const char *topic, int32_t partition, int64_t next),
                              void *ctx) {
  if (!r || !fn || !db_enter(r)) return;
  rocksdb_iterator_t *it = rocksdb_create_iterator_cf(r->db, r->ropts, r->cf[CF_OFFSETS]);
  char topic[TOPIC_MAX + 1];
  for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
    size_t klen = 0, vlen = 0;
    const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &klen);
    const uint8_t *v = (const uint8_t *)rocksdb_iter_value(it, &vlen);
    if (klen < 6 || klen - 5 > TOPIC_MAX || k[klen - 5] != 0 || vlen != 8) continue;
    memcpy(topic, k, klen - 5);
    topic[klen - 5] = 0;
    fn(ctx, topic, (int32_t)get_be32(k + klen - 4), (int64_t)get_be64(v));
  }
  rocksdb_iter_destroy(it);
  db_leave(r);
}

eddy_err_t eddy_replay_meta_put(eddy_replay_t *r, const char *key, uint64_t value) {
  const eddy_replay_meta_t one = {key, value};
  char why[512];
  eddy_err_t e = eddy_replay_meta_put_batch(r, &one, 1, why, sizeof why);
  if (e == EDDY_ERR_IO) EDDY_ERROR(LOG_MOD, "%s", why);
  return e;
}

eddy_err_t eddy_replay_meta_put_batch(eddy_replay_t *r, const eddy_replay_meta_t *meta, size_t n, char *why,
                                      size_t why_size) {
  if (!r || (!meta && n)) return eddy_errf(EDDY_ERR_INVALID_ARG, why, why_size, "buffer meta: NULL argument");
  if (r->opts.read_only)
    return eddy_errf(EDDY_ERR_STATE, why, why_size, "buffer %s: opened read-only", r->path);
  for (size_t i = 0; i < n; i++)
    if (!meta[i].key || strlen(meta[i].key) > 200)
      return eddy_errf(EDDY_ERR_INVALID_ARG, why, why_size, "buffer meta: key %zu is missing or over 200 bytes", i);
  if (!db_enter(r))
    return eddy_errf(EDDY_ERR_IO, why, why_size, "buffer %s: not open (a reopen after a failed write failed)",
                     r->path);
  rocksdb_writebatch_t *b = rocksdb_writebatch_create();
  char name[256];
  for (size_t i = 0; i < n; i++) {
    snprintf(name, sizeof name, META_CURSOR_PREFIX "%s", meta[i].key);
    batch_put_meta(b, r->cf[CF_META], name, meta[i].value);
  }
  char *err = NULL;
  rocksdb_write(r->db, r->wopts_sync, b, &err);
  db_leave(r);
  rocksdb_writebatch_destroy(b);
  if (err) {
    eddy_err_t e = eddy_errf(EDDY_ERR_IO, why, why_size, "buffer %s: writing %zu cursors: %s", r->path, n, err);
    rocksdb_free(err);
    note_write(r, e, why);
    return e;
  }
  note_write(r, EDDY_OK, NULL);
  return EDDY_OK;
}

eddy_err_t eddy_replay_meta_get(eddy_replay_t *r, const char *key, uint64_t *value) {
  if (!r || !key || !value || strlen(key) > 200) return EDDY_ERR_INVALID_ARG;
  char name[256], errstr[256];
  snprintf(name, sizeof name, META_CURSOR_PREFIX "%s", key);
  if (!db_enter(r)) return EDDY_ERR_IO;
  eddy_err_t e = meta_read(r, r->ropts, name, value, errstr, sizeof errstr);
  db_leave(r);
  if (e && e != EDDY_ERR_NOT_FOUND) EDDY_ERROR(LOG_MOD, "%s", errstr);
  return e;
}

eddy_replay_stats_t eddy_replay_stats(eddy_replay_t *r) {
  eddy_replay_stats_t s = {0};
  if (!r) return s;
  pthread_mutex_lock(&r->stats_mu);
  s.events = r->next_seq - r->first_seq;
  s.bytes = r->bytes;
  s.first_seq = r->first_seq;
  s.next_seq = r->next_seq;
  s.evicted = r->evicted;
  s.dead_letters = r->dl_next - r->dl_first;
  s.dead_letters_total = r->dl_next;
  pthread_mutex_unlock(&r->stats_mu);
  return s;
}

/* ---- readers ---- */

typedef struct {
  const rocksdb_snapshot_t *snap;
  rocksdb_readoptions_t *ro;
} snap_t;

static void snap_begin(eddy_replay_t *r, snap_t *s) {
  s->snap = rocksdb_create_snapshot(r->db);
  s->ro = rocksdb_readoptions_create();
  rocksdb_readoptions_set_snapshot(s->ro, s->snap);
}

static void snap_end(eddy_replay_t *r, snap_t *s) {
  rocksdb_readoptions_destroy(s->ro);
  rocksdb_release_snapshot(r->db, s->snap);
}

static eddy_err_t decode_value(eddy_replay_t *r, const char *what, uint64_t id, const char *v, size_t len,
                               eddy_event_t *ev) {
  char errstr[256];
  eddy_err_t e = eddy_event_decode((const uint8_t *)v, len, ev, errstr, sizeof errstr);
  if (e) EDDY_ERROR(LOG_MOD, "buffer %s: %s %llu: %s", r->path, what, (unsigned long long)id, errstr);
  return e;
}

eddy_err_t eddy_replay_read(eddy_replay_t *r, uint64_t from_seq, size_t max, eddy_event_t *out,
                            uint64_t *seqs, size_t *got) {
  if (!r || !got || (max && !out)) return EDDY_ERR_INVALID_ARG;
  *got = 0;
  if (!max) return EDDY_OK;
  if (!db_enter(r)) return EDDY_ERR_IO;
  snap_t s;
  snap_begin(r, &s);
  rocksdb_iterator_t *it = rocksdb_create_iterator_cf(r->db, s.ro, r->cf[CF_EVENTS]);
  uint8_t key[8];
  put_be64(key, from_seq);
  eddy_err_t e = EDDY_OK;
  size_t n = 0;
  for (rocksdb_iter_seek(it, (const char *)key, 8); n < max && rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
    size_t klen = 0, vlen = 0;
    const char *k = rocksdb_iter_key(it, &klen);
    const char *v = rocksdb_iter_value(it, &vlen);
    if (klen != 8) {
      e = EDDY_ERR_FORMAT;
      break;
    }
    uint64_t seq = get_be64((const uint8_t *)k);
    if ((e = decode_value(r, "event", seq, v, vlen, &out[n]))) break;
    if (seqs) seqs[n] = seq;
    n++;
  }
  if (!e) {
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    if (err) {
      EDDY_ERROR(LOG_MOD, "buffer %s: reading events from seq %llu: %s", r->path,
                 (unsigned long long)from_seq, err);
      rocksdb_free(err);
      e = EDDY_ERR_IO;
    }
  }
  rocksdb_iter_destroy(it);
  snap_end(r, &s);
  db_leave(r);
  *got = e ? 0 : n;
  return e;
}

/* Point lookup in one column family; EDDY_ERR_NOT_FOUND for a hole. *seq gets the event's seq
 * (UINT64_MAX for a reservoir slot written before slots carried it). */
static eddy_err_t get_event(eddy_replay_t *r, const rocksdb_readoptions_t *ro, int cf, const uint8_t *key,
                            uint64_t id, eddy_event_t *ev, uint64_t *seq) {
  char *err = NULL;
  rocksdb_pinnableslice_t *ps = rocksdb_get_pinned_cf(r->db, ro, r->cf[cf], (const char *)key, 8, &err);
  if (err) {
    EDDY_ERROR(LOG_MOD, "buffer %s: %s lookup: %s", r->path, cf_names[cf], err);
    rocksdb_free(err);
    return EDDY_ERR_IO;
  }
  if (!ps) return EDDY_ERR_NOT_FOUND;
  size_t len = 0;
  const char *v = rocksdb_pinnableslice_value(ps, &len);
  *seq = cf == CF_EVENTS ? id : UINT64_MAX;
  if (cf == CF_RESERVOIR && r->res_seq) {
    if (len < 8) {
      rocksdb_pinnableslice_destroy(ps);
      EDDY_ERROR(LOG_MOD, "buffer %s: reservoir slot %llu: %zu bytes, no seq", r->path, (unsigned long long)id, len);
      return EDDY_ERR_FORMAT;
    }
    *seq = get_be64((const uint8_t *)v);
    v += 8;
    len -= 8;
  }
  eddy_err_t e = decode_value(r, cf == CF_EVENTS ? "event" : "reservoir slot", id, v, len, ev);
  rocksdb_pinnableslice_destroy(ps);
  return e;
}

eddy_err_t eddy_replay_sample(eddy_replay_t *r, eddy_sample_t strategy, uint64_t *rng_state, size_t n,
                              eddy_event_t *out, size_t *got) {
  return eddy_replay_sample_where(r, strategy, rng_state, n, out, NULL, NULL, NULL, got);
}

eddy_err_t eddy_replay_sample_where(eddy_replay_t *r, eddy_sample_t strategy, uint64_t *rng_state, size_t n,
                                    eddy_event_t *out, uint64_t *seqs, eddy_replay_accept_fn accept, void *ctx,
                                    size_t *got) {
  if (!r || !rng_state || !got || (n && !out)) return EDDY_ERR_INVALID_ARG;
  if (strategy != EDDY_SAMPLE_UNIFORM && strategy != EDDY_SAMPLE_RECENT && strategy != EDDY_SAMPLE_BALANCED)
    return EDDY_ERR_INVALID_ARG;
  *got = 0;
  if (!n) return EDDY_OK;

  /* The counters first, then the snapshot: everything they describe is in the snapshot (the
   * writer publishes counters after its write), except events evicted since, which are holes. */
  uint64_t first, next;
  uint32_t nc = strategy == EDDY_SAMPLE_BALANCED ? r->res_classes : 0;
  uint64_t *kept = NULL;
  uint32_t *present = NULL, *refused = NULL; /* refused: draws of each class refused so far in this
                                                call, UINT32_MAX once one was accepted */
  if (nc) {
    kept = calloc(nc, sizeof *kept);
    present = calloc(nc, sizeof *present);
    refused = calloc(nc, sizeof *refused);
    if (!kept || !present || !refused) {
      free(kept);
      free(present);
      free(refused);
      return EDDY_ERR_NOMEM;
    }
  }
  if (!db_enter(r)) {
    free(kept);
    free(present);
    free(refused);
    return EDDY_ERR_IO;
  }
  pthread_mutex_lock(&r->stats_mu);
  first = r->first_seq;
  next = r->next_seq;
  for (uint32_t c = 0; c < nc; c++) kept[c] = r->res_seen[c] < r->res_size ? r->res_seen[c] : r->res_size;
  pthread_mutex_unlock(&r->stats_mu);
  uint32_t n_present = 0;
  for (uint32_t c = 0; c < nc; c++)
    if (kept[c]) present[n_present++] = c;

  snap_t s;
  snap_begin(r, &s);
  eddy_err_t e = EDDY_OK;
  size_t have = 0;
  uint64_t span = next - first;
  bool empty = strategy == EDDY_SAMPLE_BALANCED ? n_present == 0 : span == 0;
  size_t budget = n * SAMPLE_TRIES + (accept ? (size_t)n_present * SAMPLE_TRIES : 0);
  for (size_t tries = 0; !empty && have < n && tries < budget; tries++) {
    uint8_t key[8];
    uint64_t id;
    int cf = CF_EVENTS;
    uint32_t pick = 0;
    if (strategy == EDDY_SAMPLE_UNIFORM) {
      id = first + eddy_rng_below(rng_state, span);
      put_be64(key, id);
    } else if (strategy == EDDY_SAMPLE_RECENT) {
      uint64_t pos = (uint64_t)(sqrt(eddy_rng_unit(rng_state)) * (double)span);
      id = first + (pos < span ? pos : span - 1);
      put_be64(key, id);
    } else {
      pick = (uint32_t)eddy_rng_below(rng_state, n_present);
      uint32_t c = present[pick];
      uint32_t slot = (uint32_t)eddy_rng_below(rng_state, kept[c]);
      put_be32(key, c);
      put_be32(key + 4, slot);
      id = (uint64_t)c << 32 | slot;
      cf = CF_RESERVOIR;
    }
    uint64_t seq = UINT64_MAX;
    e = get_event(r, s.ro, cf, key, id, &out[have], &seq);
    if (e == EDDY_ERR_NOT_FOUND) {
      e = EDDY_OK;
      continue;
    }
    if (e) break;
    if (accept && !accept(ctx, seq, &out[have])) {
      /* A class whose slots the caller keeps refusing (e.g. events it has not reached yet) is
       * left out for the rest of this call, so that the others still fill it. */
      if (strategy == EDDY_SAMPLE_BALANCED && refused[present[pick]] != UINT32_MAX &&
          ++refused[present[pick]] >= SAMPLE_TRIES) {
        if (n_present == 1) break;
        present[pick] = present[--n_present];
      }
      continue;
    }
    if (strategy == EDDY_SAMPLE_BALANCED) refused[present[pick]] = UINT32_MAX; /* accepted once: kept */
    if (seqs) seqs[have] = seq;
    have++;
  }
  snap_end(r, &s);
  db_leave(r);
  free(kept);
  free(present);
  free(refused);
  *got = e ? 0 : have;
  return e;
}

/* ---- inspection ---- */

typedef struct {
  int64_t label;
  uint64_t count;
} label_count_t;

void eddy_replay_label_counts(eddy_replay_t *r, void (*fn)(void *ctx, int64_t label, uint64_t count),
                              void *ctx) {
  if (!r || !fn) return;
  label_count_t *labels = calloc(LABELS_MAX, sizeof *labels);
  if (!labels) return;
  size_t n_labels = 0;
  uint64_t other = 0;
  bool one_bucket = r->classes == 1;
  if (!db_enter(r)) {
    free(labels);
    return;
  }
  eddy_event_t ev;
  eddy_event_init(&ev);
  snap_t s;
  snap_begin(r, &s);
  rocksdb_readoptions_set_fill_cache(s.ro, 0);
  rocksdb_iterator_t *it = rocksdb_create_iterator_cf(r->db, s.ro, r->cf[CF_EVENTS]);
  for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
    size_t klen = 0, vlen = 0;
    const char *k = rocksdb_iter_key(it, &klen);
    const char *v = rocksdb_iter_value(it, &vlen);
    if (klen != 8 || decode_value(r, "event", get_be64((const uint8_t *)k), v, vlen, &ev)) continue;
    int64_t label = 0;
    if (!one_bucket) {
      double x = nearbyint(ev.label);
      label = x >= 9.2e18 ? INT64_MAX : x <= -9.2e18 ? INT64_MIN + 1 : (int64_t)x;
    }
    size_t lo = 0, hi = n_labels;
    while (lo < hi) {
      size_t mid = (lo + hi) / 2;
      if (labels[mid].label < label) lo = mid + 1;
      else hi = mid;
    }
    if (lo < n_labels && labels[lo].label == label) {
      labels[lo].count++;
    } else if (n_labels < LABELS_MAX) {
      memmove(labels + lo + 1, labels + lo, (n_labels - lo) * sizeof *labels);
      labels[lo] = (label_count_t){label, 1};
      n_labels++;
    } else {
      other++;
    }
  }
  rocksdb_iter_destroy(it);
  snap_end(r, &s);
  db_leave(r);
  eddy_event_free(&ev);
  if (other) fn(ctx, INT64_MIN, other);
  for (size_t i = 0; i < n_labels; i++) fn(ctx, labels[i].label, labels[i].count);
  free(labels);
}

void eddy_replay_dead_letters(eddy_replay_t *r, size_t max,
                              void (*fn)(void *ctx, const eddy_dead_letter_t *dl), void *ctx,
                              uint64_t *by_reason) {
  if (!r) return;
  if (by_reason) memset(by_reason, 0, EDDY_ERR__COUNT * sizeof *by_reason);
  if (!db_enter(r)) return;
  char topic[TOPIC_MAX + 1], message[EDDY_REPLAY_DLQ_MESSAGE_MAX + 1];
  snap_t s;
  snap_begin(r, &s);
  rocksdb_readoptions_set_fill_cache(s.ro, 0);
  rocksdb_iterator_t *it = rocksdb_create_iterator_cf(r->db, s.ro, r->cf[CF_DLQ]);
  size_t listed = 0;
  for (rocksdb_iter_seek_to_last(it); rocksdb_iter_valid(it); rocksdb_iter_prev(it)) {
    if (!by_reason && (listed >= max || !fn)) break;
    size_t vlen = 0;
    const uint8_t *v = (const uint8_t *)rocksdb_iter_value(it, &vlen);
    eddy_dead_letter_t dl;
    if (!dlq_decode(v, vlen, &dl, topic, message)) continue;
    if (by_reason && (int)dl.reason >= 0 && (int)dl.reason < EDDY_ERR__COUNT) by_reason[dl.reason]++;
    if (fn && listed < max) {
      fn(ctx, &dl);
      listed++;
    }
  }
  rocksdb_iter_destroy(it);
  snap_end(r, &s);
  db_leave(r);
}

void eddy_replay_reservoir_counts(eddy_replay_t *r,
                                  void (*fn)(void *ctx, uint32_t cls, uint64_t kept, uint64_t seen),
                                  void *ctx) {
  if (!r || !fn || !r->res_classes) return;
  uint64_t *seen = calloc(r->res_classes, sizeof *seen);
  if (!seen) return;
  pthread_mutex_lock(&r->stats_mu);
  memcpy(seen, r->res_seen, (size_t)r->res_classes * sizeof *seen);
  pthread_mutex_unlock(&r->stats_mu);
  for (uint32_t c = 0; c < r->res_classes; c++)
    if (seen[c]) fn(ctx, c, seen[c] < r->res_size ? seen[c] : r->res_size, seen[c]);
  free(seen);
}
