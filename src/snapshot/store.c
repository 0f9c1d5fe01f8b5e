/* The snapshot store on a local (or shared) file system. Every change is made so that a crash at
 * any instant leaves either the old or the new state: versions appear by renaming a complete,
 * fsynced temp folder; CURRENT is replaced by rename; deletions rename the folder away first.
 * Leftovers of interrupted operations (.tmp-*, .del-*) are removed when a writer opens the store.
 * Verification re-reads everything a replica relies on: sizes, SHA-256, safetensors structure,
 * tensor names/shapes/dtypes against the spec, and the metadata that ties the files together. */
#include "snapshot/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/clock.h"
#include "core/fsutil.h"
#include "core/health.h"
#include "core/log.h"
#include "format/safetensors.h"
#include "format/sha256.h"
#include "model/quant.h"

#define CURRENT_FILE "CURRENT"
#define EVENTS_FILE "events.log"
#define LOCK_FILE ".lock"
#define PINNED_DIR "pinned"
#define MAX_PROBLEMS_PER_FILE 16

struct eddy_store {
  char *root, *model, *dir;
  eddy_store_mode_t mode;
  int lock_fd;
  pthread_mutex_t mu;
  eddy_store_txn_t *txn; /* the transaction in progress, if any */
  unsigned del_counter;
  eddy_health_t health;  /* writes failing (a full disk): eddy_store_write_status */
};

struct eddy_store_txn {
  eddy_store_t *store;
  uint64_t version;
  char *dir;
};

/* ---- small file-system helpers ---- */

static char *join(const char *a, const char *b) {
  size_t n = strlen(a) + strlen(b) + 2;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/%s", a, b);
  return p;
}

static void vname(uint64_t version, char out[32]) { snprintf(out, 32, "v%06" PRIu64, version); }

/* "v000042" -> 42; only the canonical spelling counts (v0000042 is not a version folder). */
static int parse_vname(const char *name, uint64_t *version) {
  if (name[0] != 'v' || strlen(name) < 7 || strlen(name) > 20) return 0;
  uint64_t v = 0;
  for (const char *p = name + 1; *p; p++) {
    if (*p < '0' || *p > '9') return 0;
    v = v * 10 + (uint64_t)(*p - '0');
  }
  char canon[32];
  vname(v, canon);
  if (v < 1 || v > EDDY_MANIFEST_MAX_INT || strcmp(canon, name) != 0) return 0;
  *version = v;
  return 1;
}

static int fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  int e = errno;
  close(fd);
  errno = e;
  return rc;
}

static int fsync_file(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  int saved = errno;
  close(fd);
  errno = saved;
  return rc;
}

static int write_all(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n > 0) {
    ssize_t k = write(fd, p, n);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) return -1;
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

/* Creates path (which must not exist) with data, fsynced. */
static eddy_err_t write_new_file(const char *path, const void *data, size_t len, char *errstr, size_t errstr_size) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "create %s: %s", path, strerror(errno));
  const char *step = "write";
  int bad = write_all(fd, data, len);
  if (!bad && fsync(fd) != 0) bad = 1, step = "fsync";
  int e = errno;
  if (close(fd) != 0 && !bad) bad = 1, step = "close", e = errno;
  if (bad) {
    unlink(path);
    return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "%s %s: %s", step, path, strerror(e));
  }
  return EDDY_OK;
}

/* Replaces dir/name with data: temp file in dir, fsync, rename, fsync dir. */
static eddy_err_t replace_file(const char *dir, const char *name, const void *data, size_t len, char *errstr,
                               size_t errstr_size) {
  size_t n = strlen(dir) + strlen(name) + 16;
  char *tmp = malloc(n), *path = join(dir, name);
  if (!tmp || !path) {
    free(tmp);
    free(path);
    return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "replace %s/%s: out of memory", dir, name);
  }
  snprintf(tmp, n, "%s/.tmp-%s-XXXXXX", dir, name);
  eddy_err_t err = EDDY_OK;
  int fd = mkstemp(tmp);
  if (fd < 0) {
    err = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "create temp file %s: %s", tmp, strerror(errno));
    goto out;
  }
  const char *step = "write";
  int bad = fchmod(fd, 0644) != 0;
  if (!bad) bad = write_all(fd, data, len);
  if (!bad && fsync(fd) != 0) bad = 1, step = "fsync";
  int e = errno;
  if (close(fd) != 0 && !bad) bad = 1, step = "close", e = errno;
  if (!bad && rename(tmp, path) != 0) bad = 1, step = "rename", e = errno;
  if (bad) {
    unlink(tmp);
    err = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "replace %s: %s %s: %s", path, step, tmp, strerror(e));
    goto out;
  }
  if (fsync_dir(dir) != 0)
    err = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "replace %s: fsync directory %s: %s", path, dir,
                    strerror(errno));
out:
  free(tmp);
  free(path);
  return err;
}

/* Removes name under parent_fd, recursing into folders (bounded depth, symlinks not followed). */
static int rm_tree_at(int parent_fd, const char *name, int depth) {
  if (unlinkat(parent_fd, name, 0) == 0) return 0;
  if (errno == ENOENT) return 0;
  if (errno != EISDIR && errno != EPERM) return -1;
  if (depth > 8) {
    errno = ELOOP;
    return -1;
  }
  int fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return -1;
  DIR *d = fdopendir(fd);
  if (!d) {
    close(fd);
    return -1;
  }
  int rc = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    if (rm_tree_at(dirfd(d), e->d_name, depth + 1) != 0) rc = -1;
  }
  closedir(d);
  if (unlinkat(parent_fd, name, AT_REMOVEDIR) != 0) rc = -1;
  return rc;
}

static int rm_tree(const char *path) { return rm_tree_at(AT_FDCWD, path, 0); }

static int is_dir_at(int dfd, const char *name) {
  struct stat st;
  return fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

static int cmp_desc(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x < y) - (x > y);
}

/* Version folders in dir, newest first. */
static eddy_err_t scan_versions(const char *dir, uint64_t **out, size_t *count, char *errstr, size_t errstr_size) {
  *out = NULL;
  *count = 0;
  DIR *d = opendir(dir);
  if (!d) return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "list %s: %s", dir, strerror(errno));
  uint64_t *list = NULL;
  size_t n = 0, cap = 0;
  eddy_err_t err = EDDY_OK;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    uint64_t v;
    if (!parse_vname(e->d_name, &v) || !is_dir_at(dirfd(d), e->d_name)) continue;
    if (n == EDDY_STORE_MAX_VERSIONS) {
      err = eddy_errf(EDDY_ERR_TOO_LARGE, errstr, errstr_size, "%s holds more than %d versions", dir,
                      EDDY_STORE_MAX_VERSIONS);
      break;
    }
    if (n == cap) {
      cap = cap ? cap * 2 : 64;
      uint64_t *grown = realloc(list, cap * sizeof *grown);
      if (!grown) {
        err = eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "list %s: out of memory", dir);
        break;
      }
      list = grown;
    }
    list[n++] = v;
  }
  closedir(d);
  if (err) {
    free(list);
    return err;
  }
  if (n) qsort(list, n, sizeof *list, cmp_desc);
  *out = list;
  *count = n;
  return EDDY_OK;
}

static eddy_err_t latest_locked(eddy_store_t *s, uint64_t *version, char *errstr, size_t errstr_size) {
  uint64_t *list;
  size_t n;
  eddy_err_t err = scan_versions(s->dir, &list, &n, errstr, errstr_size);
  if (err) return err;
  *version = n ? list[0] : 0;
  free(list);
  return EDDY_OK;
}

/* Appends one JSON line {ts, ts_ms, ...} to events.log (rotated past EDDY_STORE_EVENTS_MAX).
 * An audit trail: a failure is logged, never returned (CURRENT and pinned/ are the truth). */
static void event_append(eddy_store_t *s, cJSON *ev) {
  char when[40];
  int64_t ms = eddy_clock_wall_ms();
  eddy_manifest_format_time(ms, when, sizeof when);
  cJSON_AddStringToObject(ev, "ts", when);
  cJSON_AddNumberToObject(ev, "ts_ms", (double)ms);
  char *text = cJSON_PrintUnformatted(ev);
  cJSON_Delete(ev);
  char *path = join(s->dir, EVENTS_FILE);
  if (!text || !path) goto out;
  struct stat st;
  if (stat(path, &st) == 0 && (uint64_t)st.st_size > EDDY_STORE_EVENTS_MAX) {
    char *old = join(s->dir, EVENTS_FILE ".1");
    if (old && rename(path, old) != 0) EDDY_WARN("store", "rotate %s: %s", path, strerror(errno));
    free(old);
  }
  size_t len = strlen(text);
  text[len] = '\n'; /* replaces the NUL: written with its length */
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0 || write_all(fd, text, len + 1) != 0 || fdatasync(fd) != 0)
    EDDY_WARN("store", "append to %s: %s", path, strerror(errno));
  if (fd >= 0) close(fd);
out:
  free(text);
  free(path);
}

static cJSON *event_new(const char *action, uint64_t version) {
  cJSON *ev = cJSON_CreateObject();
  if (!ev) return NULL;
  cJSON_AddStringToObject(ev, "action", action);
  cJSON_AddNumberToObject(ev, "version", (double)version);
  return ev;
}

/* Records a write's outcome for eddy_store_write_status: EDDY_ERR_IO starts or continues a
 * failure (why: what failed), EDDY_OK (ok_ends: a version or CURRENT was written) ends it; other
 * errors are no write failures. Returns err. */
static eddy_err_t note_write(eddy_store_t *s, eddy_err_t err, const char *why, bool ok_ends) {
  if (err != EDDY_ERR_IO && !(err == EDDY_OK && ok_ends)) return err;
  if (eddy_health_note(&s->health, err != EDDY_OK, why)) EDDY_INFO("store", "store %s: writes work again", s->dir);
  return err;
}

/* ---- open / close ---- */

/* Removes .tmp-* and .del-* entries left by a crash. Writer only. */
static void remove_leftovers(eddy_store_t *s) {
  DIR *d = opendir(s->dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    int tmp = !strncmp(e->d_name, ".tmp-", 5), del = !strncmp(e->d_name, ".del-", 5);
    if (!tmp && !del) continue;
    if (rm_tree_at(dirfd(d), e->d_name, 0) == 0)
      EDDY_WARN("store", "removed leftover %s/%s (%s interrupted by a crash)", s->dir, e->d_name,
                tmp ? "a publish or CURRENT update" : "a deletion");
    else
      EDDY_WARN("store", "could not remove leftover %s/%s: %s", s->dir, e->d_name, strerror(errno));
  }
  closedir(d);
}

eddy_store_t *eddy_store_new(const char *root, const char *model, eddy_store_mode_t mode, char *errstr,
                              size_t errstr_size) {
  if (!root || !*root || !model) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "store: empty root or NULL model name");
    return NULL;
  }
  if (!eddy_manifest_name_ok(model)) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
              "store: model name \"%s\" must be 1..63 characters of A-Z a-z 0-9 . _ - (not starting with '.')",
              model);
    return NULL;
  }
  if (strlen(root) + strlen(model) + 64 >= PATH_MAX) {
    eddy_errf(EDDY_ERR_TOO_LARGE, errstr, errstr_size, "store: root path of %zu bytes is too long", strlen(root));
    return NULL;
  }
  eddy_store_t *s = calloc(1, sizeof *s);
  if (!s) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "store: out of memory");
    return NULL;
  }
  s->lock_fd = -1;
  s->mode = mode;
  s->root = strdup(root);
  s->model = strdup(model);
  s->dir = join(root, model);
  if (!s->root || !s->model || !s->dir || pthread_mutex_init(&s->mu, NULL) != 0 ||
      eddy_health_init(&s->health) != 0) {
    free(s->root);
    free(s->model);
    free(s->dir);
    free(s);
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "store: out of memory");
    return NULL;
  }
  struct stat st;
  if (mode == EDDY_STORE_READONLY) {
    int found = stat(s->dir, &st) == 0;
    if (!found || !S_ISDIR(st.st_mode)) {
      eddy_errf(EDDY_ERR_NOT_FOUND, errstr, errstr_size, "store %s: %s", s->dir,
                found ? "not a folder" : strerror(errno));
      eddy_store_destroy(s);
      return NULL;
    }
    return s;
  }
  if (eddy_mkdir_p(s->dir) != 0) {
    eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "store: create %s: %s", s->dir, strerror(errno));
    eddy_store_destroy(s);
    return NULL;
  }
  char *lock = join(s->dir, LOCK_FILE);
  s->lock_fd = lock ? open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644) : -1;
  if (s->lock_fd < 0 || flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    if (s->lock_fd >= 0 && e == EWOULDBLOCK)
      eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "store %s: another writer holds %s", s->dir, lock);
    else
      eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "store %s: lock %s: %s", s->dir, lock ? lock : "(nomem)",
                strerror(e));
    free(lock);
    eddy_store_destroy(s);
    return NULL;
  }
  free(lock);
  remove_leftovers(s);
  return s;
}

void eddy_store_destroy(eddy_store_t *s) {
  if (!s) return;
  if (s->txn) {
    EDDY_WARN("store", "closing %s with the publish of v%06" PRIu64 " unfinished: aborted", s->dir, s->txn->version);
    eddy_store_abort(s->txn);
  }
  if (s->lock_fd >= 0) close(s->lock_fd); /* releases the flock */
  pthread_mutex_destroy(&s->mu);
  eddy_health_destroy(&s->health);
  free(s->root);
  free(s->model);
  free(s->dir);
  free(s);
}

const char *eddy_store_dir(const eddy_store_t *s) { return s->dir; }
const char *eddy_store_model(const eddy_store_t *s) { return s->model; }

eddy_err_t eddy_store_path(const eddy_store_t *s, uint64_t version, const char *file, char *out, size_t out_size) {
  char v[32];
  vname(version, v);
  int n = file ? snprintf(out, out_size, "%s/%s/%s", s->dir, v, file) : snprintf(out, out_size, "%s/%s", s->dir, v);
  return n < 0 || (size_t)n >= out_size ? EDDY_ERR_TOO_LARGE : EDDY_OK;
}

eddy_err_t eddy_store_latest(eddy_store_t *s, uint64_t *version, char *errstr, size_t errstr_size) {
  pthread_mutex_lock(&s->mu);
  eddy_err_t err = latest_locked(s, version, errstr, errstr_size);
  pthread_mutex_unlock(&s->mu);
  if (!err && *version == 0) return eddy_errf(EDDY_ERR_NOT_FOUND, errstr, errstr_size, "no versions in %s", s->dir);
  return err;
}

/* ---- CURRENT ---- */

static eddy_err_t current_read(eddy_store_t *s, uint64_t *version, char *errstr, size_t errstr_size) {
  char *path = join(s->dir, CURRENT_FILE);
  if (!path) return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "store: out of memory");
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    eddy_err_t err = eddy_errf(e == ENOENT ? EDDY_ERR_NOT_FOUND : EDDY_ERR_IO, errstr, errstr_size, "%s: %s", path,
                               e == ENOENT ? "no CURRENT version yet" : strerror(e));
    free(path);
    return err;
  }
  char buf[64];
  ssize_t n;
  do n = read(fd, buf, sizeof buf - 1);
  while (n < 0 && errno == EINTR);
  int e = errno;
  close(fd);
  if (n < 0) {
    eddy_err_t err = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "%s: read: %s", path, strerror(e));
    free(path);
    return err;
  }
  buf[n] = 0;
  if (n > 0 && buf[n - 1] == '\n') buf[n - 1] = 0;
  eddy_err_t err = EDDY_OK;
  if (!parse_vname(buf, version))
    err = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "%s: \"%.40s\" is not a version name like v000042", path,
                    buf);
  free(path);
  return err;
}

eddy_err_t eddy_store_current(eddy_store_t *s, uint64_t *version, char *errstr, size_t errstr_size) {
  return current_read(s, version, errstr, errstr_size);
}

/* The version folder exists, its manifest loads, its files have their recorded sizes. */
static eddy_err_t check_present(eddy_store_t *s, uint64_t version, eddy_manifest_t *m, char *errstr,
                                size_t errstr_size) {
  char path[PATH_MAX], v[32];
  vname(version, v);
  eddy_store_path(s, version, EDDY_STORE_MANIFEST, path, sizeof path);
  eddy_err_t err = eddy_manifest_load(path, m, errstr, errstr_size);
  if (err == EDDY_ERR_NOT_FOUND) {
    eddy_store_path(s, version, NULL, path, sizeof path);
    struct stat st;
    return eddy_errf(err, errstr, errstr_size, "%s: %s", path,
                     stat(path, &st) == 0 ? "no manifest.json" : "no such version");
  }
  if (err) return err;
  for (size_t i = 0; i < m->n_files; i++) {
    eddy_store_path(s, version, m->files[i].name, path, sizeof path);
    struct stat st;
    if (stat(path, &st) != 0)
      return eddy_errf(EDDY_ERR_NOT_FOUND, errstr, errstr_size, "%s: %s", path, strerror(errno));
    if ((uint64_t)st.st_size != m->files[i].bytes)
      return eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "%s: %lld bytes, the manifest says %" PRIu64, path,
                       (long long)st.st_size, m->files[i].bytes);
  }
  return EDDY_OK;
}

static int action_ok(const char *a) {
  size_t n = strlen(a);
  if (n == 0 || n > 32) return 0;
  for (size_t i = 0; i < n; i++)
    if (!((a[i] >= 'a' && a[i] <= 'z') || a[i] == '_')) return 0;
  return 1;
}

eddy_err_t eddy_store_set_current(eddy_store_t *s, uint64_t version, const char *action, char *errstr,
                                  size_t errstr_size) {
  if (s->mode != EDDY_STORE_WRITER)
    return eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "store %s: opened read-only", s->dir);
  if (!action) action = "promote";
  if (!action_ok(action))
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "set CURRENT: action \"%.40s\" must be 1..32 of a-z _",
                     action);
  pthread_mutex_lock(&s->mu);
  eddy_manifest_t m;
  eddy_err_t err = check_present(s, version, &m, errstr, errstr_size);
  if (!err && m.status == EDDY_STATUS_REJECTED)
    err = eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "v%06" PRIu64 " was rejected by the gate (%s): not served",
                    version, m.reason[0] ? m.reason : "no reason recorded");
  eddy_manifest_clear(&m);
  uint64_t previous = 0;
  if (!err) {
    char ignore[256];
    if (current_read(s, &previous, ignore, sizeof ignore) != EDDY_OK) previous = 0;
  }
  if (!err && previous != version) {
    char text[40];
    vname(version, text);
    strcat(text, "\n");
    err = note_write(s, replace_file(s->dir, CURRENT_FILE, text, strlen(text), errstr, errstr_size), errstr, true);
    if (!err) {
      cJSON *ev = event_new(action, version);
      if (ev && previous) cJSON_AddNumberToObject(ev, "previous", (double)previous);
      else if (ev) cJSON_AddNullToObject(ev, "previous");
      if (ev) event_append(s, ev);
      char was[32] = "none";
      if (previous) vname(previous, was);
      EDDY_INFO("store", "%s: CURRENT = v%06" PRIu64 " (%s, was %s)", s->model, version, action, was);
    }
  }
  pthread_mutex_unlock(&s->mu);
  return err;
}

eddy_err_t eddy_store_write_status(eddy_store_t *s, char *why, size_t why_size) {
  return eddy_health_status(&s->health, why, why_size);
}

/* Bytes the newest version's files take (0 when there is none or its manifest is unreadable). */
static uint64_t newest_version_bytes(eddy_store_t *s) {
  uint64_t latest = 0, bytes = 0;
  char ignore[256];
  if (eddy_store_latest(s, &latest, ignore, sizeof ignore) != EDDY_OK) return 0;
  eddy_manifest_t m;
  if (eddy_store_load_manifest(s, latest, &m, ignore, sizeof ignore) == EDDY_OK)
    for (size_t i = 0; i < m.n_files; i++) bytes += m.files[i].bytes;
  eddy_manifest_clear(&m);
  return bytes;
}

eddy_err_t eddy_store_probe_write(eddy_store_t *s, char *errstr, size_t errstr_size) {
  if (s->mode != EDDY_STORE_WRITER)
    return eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "store %s: opened read-only", s->dir);
  if (!eddy_health_failing(&s->health)) return EDDY_OK;
  uint64_t need = newest_version_bytes(s);
  if (need < EDDY_STORE_PROBE_MIN_FREE) need = EDDY_STORE_PROBE_MIN_FREE;
  struct statvfs vfs;
  if (statvfs(s->dir, &vfs) != 0)
    return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "store %s: statvfs: %s", s->dir, strerror(errno));
  uint64_t free_bytes = (uint64_t)vfs.f_bavail * vfs.f_frsize;
  if (free_bytes < need)
    return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "store %s: %" PRIu64 " bytes free, a version takes about %" PRIu64,
                     s->dir, free_bytes, need);
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/.tmp-probe-%d", s->dir, (int)getpid());
  static const char block[4096];
  eddy_err_t err = write_new_file(path, block, sizeof block, errstr, errstr_size);
  unlink(path);
  if (!err) note_write(s, EDDY_OK, NULL, true);
  return err;
}

/* Whether version v is promoted and verifies; why gets the problem when not. The status is read
 * first: only a promoted version's files are checksummed. */
static bool servable(eddy_store_t *s, uint64_t v, char *why, size_t why_size) {
  char dir[PATH_MAX], msg[1024];
  eddy_store_path(s, v, NULL, dir, sizeof dir);
  struct stat st;
  if (stat(dir, &st) != 0) {
    snprintf(why, why_size, "v%06" PRIu64 " does not exist", v);
    return false;
  }
  eddy_manifest_t m;
  eddy_err_t err = eddy_store_load_manifest(s, v, &m, msg, sizeof msg);
  bool promoted = !err && m.status == EDDY_STATUS_PROMOTED;
  if (!err && !promoted)
    snprintf(why, why_size, "v%06" PRIu64 " is %s, not promoted%s%.400s", v, eddy_version_status_name(m.status),
             m.reason[0] ? ": " : "", m.reason);
  eddy_manifest_clear(&m);
  if (!err && !promoted) return false;
  if (!err) err = eddy_store_verify(dir, NULL, msg, sizeof msg);
  if (err) snprintf(why, why_size, "v%06" PRIu64 " does not verify: %.560s", v, msg);
  return !err;
}

/* CURRENT's problem, if any, into out->why: absent while promoted versions may exist (the
 * caller decides), malformed, or naming a version that is not servable. true when it is fine. */
static bool current_fine(eddy_store_t *s, eddy_store_current_check_t *out, bool *absent) {
  char msg[512];
  uint64_t v = 0;
  eddy_err_t err = current_read(s, &v, msg, sizeof msg);
  *absent = err == EDDY_ERR_NOT_FOUND;
  if (*absent) return false;
  if (err) {
    snprintf(out->why, sizeof out->why, "%s", msg);
    return false;
  }
  out->previous = v;
  if (servable(s, v, out->why, sizeof out->why)) {
    out->version = v;
    return true;
  }
  return false;
}

/* Records in events.log that CURRENT moved to version (0: removed) because of why. */
static void record_repair(eddy_store_t *s, uint64_t version, const eddy_store_current_check_t *c) {
  cJSON *ev = event_new(version ? "repair" : "clear", version);
  if (!ev) return;
  if (!version) cJSON_ReplaceItemInObject(ev, "version", cJSON_CreateNull());
  if (c->previous) cJSON_AddNumberToObject(ev, "previous", (double)c->previous);
  else cJSON_AddNullToObject(ev, "previous");
  cJSON_AddStringToObject(ev, "reason", c->why);
  event_append(s, ev);
}

eddy_err_t eddy_store_check_current(eddy_store_t *s, eddy_store_current_check_t *out, char *errstr,
                                    size_t errstr_size) {
  memset(out, 0, sizeof *out);
  if (s->mode != EDDY_STORE_WRITER)
    return eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "store %s: opened read-only", s->dir);
  pthread_mutex_lock(&s->mu);
  bool absent = false;
  eddy_err_t err = EDDY_OK;
  if (current_fine(s, out, &absent)) goto out;
  uint64_t *list = NULL;
  size_t n = 0;
  err = scan_versions(s->dir, &list, &n, errstr, errstr_size);
  if (err) goto out;
  char skip[512];
  for (size_t i = 0; i < n && !out->version; i++) {
    if (list[i] == out->previous) continue; /* already judged */
    if (servable(s, list[i], skip, sizeof skip)) out->version = list[i];
    else if (!absent) EDDY_DEBUG("store", "%s: not a fallback for CURRENT: %s", s->model, skip);
  }
  free(list);
  if (absent && !out->version) goto out; /* nothing promoted yet: no CURRENT is right */
  if (absent) snprintf(out->why, sizeof out->why, "no CURRENT although promoted versions exist");
  out->repaired = true;
  if (out->version) {
    char text[40];
    vname(out->version, text);
    strcat(text, "\n");
    err = replace_file(s->dir, CURRENT_FILE, text, strlen(text), errstr, errstr_size);
  } else {
    char *path = join(s->dir, CURRENT_FILE);
    if (!path) err = eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "store: out of memory");
    else if (unlink(path) != 0 || fsync_dir(s->dir) != 0)
      err = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "remove %s: %s", path, strerror(errno));
    free(path);
  }
  if (err) {
    out->repaired = false;
    goto out;
  }
  record_repair(s, out->version, out);
  char was[32] = "none";
  if (out->previous) vname(out->previous, was);
  if (out->version)
    EDDY_WARN("store", "%s: CURRENT = v%06" PRIu64 ", the newest promoted version that verifies (was %s: %s)",
              s->model, out->version, was, out->why);
  else
    EDDY_WARN("store", "%s: CURRENT removed: no promoted version verifies (was %s: %s)", s->model, was, out->why);
out:
  pthread_mutex_unlock(&s->mu);
  return err;
}

/* ---- verification ---- */

typedef struct {
  eddy_store_problem_fn fn;
  void *ctx;
  size_t count;
  eddy_err_t first;
  char first_msg[1024]; /* "file: message" of the first problem */
} report_t;

__attribute__((format(printf, 4, 5))) static void report(report_t *r, const char *file, eddy_err_t err,
                                                         const char *fmt, ...) {
  char msg[900];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (!r->count) {
    r->first = err;
    snprintf(r->first_msg, sizeof r->first_msg, "%s: %s", file, msg);
  }
  r->count++;
  if (r->fn) r->fn(r->ctx, file, err, msg);
}

static void shape_text(const uint64_t *shape, uint32_t ndim, char *out, size_t size) {
  size_t o = (size_t)snprintf(out, size, "[");
  for (uint32_t i = 0; i < ndim && o < size; i++)
    o += (size_t)snprintf(out + o, size - o, "%s%" PRIu64, i ? ", " : "", shape[i]);
  if (o < size) snprintf(out + o, size - o, "]");
}

/* Canonical spec JSON of a metadata value, or NULL (with why) when absent or invalid. */
static char *meta_spec(const eddy_st_reader_t *r, char *why, size_t why_size) {
  const char *text = eddy_st_meta(r, "eddy.spec");
  if (!text) {
    snprintf(why, why_size, "__metadata__ has no eddy.spec");
    return NULL;
  }
  eddy_model_spec_t spec;
  char msg[256] = "";
  if (eddy_model_spec_from_json(text, &spec, msg, sizeof msg) != EDDY_OK) {
    snprintf(why, why_size, "__metadata__ eddy.spec is invalid: %s", msg);
    return NULL;
  }
  char *canon = eddy_model_spec_to_json(&spec);
  if (!canon) snprintf(why, why_size, "out of memory");
  return canon;
}

static void check_spec_meta(const eddy_st_reader_t *r, const eddy_manifest_t *m, report_t *rep, const char *file) {
  char why[320];
  char *theirs = meta_spec(r, why, sizeof why);
  char *mine = eddy_model_spec_to_json(&m->spec);
  if (!theirs) report(rep, file, EDDY_ERR_FORMAT, "%s", why);
  else if (mine && strcmp(mine, theirs) != 0)
    report(rep, file, EDDY_ERR_SHAPE, "eddy.spec %s differs from the manifest's spec %s", theirs, mine);
  free(theirs);
  free(mine);
}

/* The spec's tensors with the given dtype; exact: no other tensors allowed. */
static void check_tensors(const eddy_st_reader_t *r, const eddy_model_spec_t *spec, eddy_dtype_t dtype, bool exact,
                          report_t *rep, const char *file) {
  eddy_tensor_info_t lay[EDDY_MAX_TENSORS];
  size_t n = eddy_model_layout(spec, lay, NULL), shown = 0, hidden = 0;
  char got[96], want[96];
#define TENSOR_PROBLEM(...) \
  do {                      \
    if (shown < MAX_PROBLEMS_PER_FILE) report(rep, file, EDDY_ERR_SHAPE, __VA_ARGS__), shown++; \
    else hidden++;          \
  } while (0)
  for (size_t i = 0; i < n; i++) {
    const eddy_st_tensor_t *t = eddy_st_find(r, lay[i].name);
    shape_text(lay[i].shape, lay[i].ndim, want, sizeof want);
    if (!t) {
      TENSOR_PROBLEM("tensor %s %s missing", lay[i].name, want);
      continue;
    }
    shape_text(t->shape, t->ndim, got, sizeof got);
    if (strcmp(got, want) != 0) TENSOR_PROBLEM("tensor %s has shape %s, the spec wants %s", t->name, got, want);
    if (t->dtype != dtype)
      TENSOR_PROBLEM("tensor %s has dtype %s, expected %s", t->name, eddy_dtype_name(t->dtype), eddy_dtype_name(dtype));
  }
  if (exact) {
    for (size_t i = 0; i < eddy_st_count(r); i++) {
      const eddy_st_tensor_t *t = eddy_st_at(r, i);
      bool known = false;
      for (size_t j = 0; j < n && !known; j++) known = !strcmp(t->name, lay[j].name);
      if (!known) TENSOR_PROBLEM("tensor %s is not in the spec's layout", t->name);
    }
  }
#undef TENSOR_PROBLEM
  if (hidden) report(rep, file, EDDY_ERR_SHAPE, "... and %zu more tensor problems", hidden);
}

static uint64_t count_nonfinite(const eddy_st_tensor_t *t) {
  const uint8_t *p = t->data;
  uint64_t bad = 0;
  if (t->dtype == EDDY_DT_F32) {
    for (size_t i = 0; i + 4 <= t->nbytes; i += 4) {
      uint32_t u = (uint32_t)p[i] | (uint32_t)p[i + 1] << 8 | (uint32_t)p[i + 2] << 16 | (uint32_t)p[i + 3] << 24;
      bad += (u & 0x7f800000u) == 0x7f800000u;
    }
  } else if (t->dtype == EDDY_DT_F16 || t->dtype == EDDY_DT_BF16) {
    uint16_t mask = t->dtype == EDDY_DT_F16 ? 0x7c00 : 0x7f80;
    for (size_t i = 0; i + 2 <= t->nbytes; i += 2) {
      uint16_t h = (uint16_t)(p[i] | p[i + 1] << 8);
      bad += (h & mask) == mask;
    }
  }
  return bad;
}

static void check_state_reader(const eddy_st_reader_t *r, const eddy_manifest_t *m, report_t *rep);

/* eddy.spec, eddy.model and eddy.version of a weights file against the manifest. */
static void check_weights_meta(const eddy_st_reader_t *r, const eddy_manifest_t *m, report_t *rep, const char *file) {
  check_spec_meta(r, m, rep, file);
  const char *model = eddy_st_meta(r, "eddy.model"), *version = eddy_st_meta(r, "eddy.version");
  if (!model) report(rep, file, EDDY_ERR_FORMAT, "__metadata__ has no eddy.model");
  else if (strcmp(model, m->model) != 0)
    report(rep, file, EDDY_ERR_FORMAT, "eddy.model \"%.64s\" differs from the manifest's \"%s\"", model, m->model);
  char want[24];
  snprintf(want, sizeof want, "%" PRIu64, m->version);
  if (!version) report(rep, file, EDDY_ERR_FORMAT, "__metadata__ has no eddy.version");
  else if (strcmp(version, want) != 0)
    report(rep, file, EDDY_ERR_FORMAT, "eddy.version \"%.32s\" differs from the manifest's %s", version, want);
}

static void check_finite(const eddy_st_reader_t *r, const eddy_manifest_t *m, report_t *rep, const char *file) {
  if (m->status != EDDY_STATUS_PROMOTED) return;
  uint64_t bad = 0;
  for (size_t i = 0; i < eddy_st_count(r); i++) bad += count_nonfinite(eddy_st_at(r, i));
  if (bad) report(rep, file, EDDY_ERR_NONFINITE, "%" PRIu64 " non-finite weights in a version with status promoted", bad);
}

static void check_weights_reader(const eddy_st_reader_t *r, const eddy_manifest_t *m, report_t *rep) {
  const char *file = EDDY_STORE_WEIGHTS;
  check_weights_meta(r, m, rep, file);
  eddy_dtype_t dt = EDDY_DT_F32;
  if (eddy_dtype_parse(m->weights_dtype, &dt) != 0)
    report(rep, file, EDDY_ERR_FORMAT, "manifest weights_dtype \"%s\" unknown", m->weights_dtype);
  check_tensors(r, &m->spec, dt, true, rep, file);
  check_finite(r, m, rep, file);
}

/* The tensors of an int8 file (eddy_quant_int8_layout), exactly. */
static void check_int8_tensors(const eddy_st_reader_t *r, const eddy_model_spec_t *spec, report_t *rep,
                               const char *file) {
  eddy_quant_tensor_t qt[EDDY_QUANT_MAX_TENSORS];
  size_t n = eddy_quant_int8_layout(spec, qt), shown = 0;
  char got[96], want[96];
  for (size_t i = 0; i < n && shown < MAX_PROBLEMS_PER_FILE; i++) {
    const eddy_st_tensor_t *t = eddy_st_find(r, qt[i].name);
    shape_text(qt[i].shape, qt[i].ndim, want, sizeof want);
    if (!t) {
      report(rep, file, EDDY_ERR_SHAPE, "tensor %s %s %s missing", qt[i].name, eddy_dtype_name(qt[i].dtype), want);
      shown++;
      continue;
    }
    shape_text(t->shape, t->ndim, got, sizeof got);
    if (strcmp(got, want) != 0 || t->dtype != qt[i].dtype) {
      report(rep, file, EDDY_ERR_SHAPE, "tensor %s is %s %s, the int8 layout wants %s %s", t->name,
             eddy_dtype_name(t->dtype), got, eddy_dtype_name(qt[i].dtype), want);
      shown++;
    }
  }
  if (eddy_st_count(r) != n)
    report(rep, file, EDDY_ERR_SHAPE, "%zu tensors, the int8 layout of the spec has %zu", eddy_st_count(r), n);
}

/* A precision's own file (bf16, fp16, int8): the metadata of a weights file plus eddy.precision,
 * and that precision's tensors. */
static void check_precision_reader(const eddy_st_reader_t *r, const eddy_manifest_t *m, eddy_infer_precision_t p,
                                   const char *file, report_t *rep) {
  check_weights_meta(r, m, rep, file);
  const char *name = eddy_infer_precision_name(p), *meta = eddy_st_meta(r, "eddy.precision");
  if (!meta || strcmp(meta, name) != 0)
    report(rep, file, EDDY_ERR_FORMAT, "eddy.precision is %s%.16s%s, the manifest lists the file as %s",
           meta ? "\"" : "", meta ? meta : "absent", meta ? "\"" : "", name);
  if (p == EDDY_INFER_INT8) check_int8_tensors(r, &m->spec, rep, file);
  else check_tensors(r, &m->spec, p == EDDY_INFER_BF16 ? EDDY_DT_BF16 : EDDY_DT_F16, true, rep, file);
  check_finite(r, m, rep, file);
}

/* The checks of file name's contents, whichever file of the version it is. */
static void check_reader(const eddy_st_reader_t *r, const eddy_manifest_t *m, const char *name, report_t *rep) {
  int p = eddy_manifest_precision_of(m, name);
  if (!strcmp(name, EDDY_STORE_WEIGHTS)) check_weights_reader(r, m, rep);
  else if (p > 0) check_precision_reader(r, m, (eddy_infer_precision_t)p, name, rep);
  else check_state_reader(r, m, rep);
}

/* A file of the version that holds tensors: weights, state, or a precision's file. */
static bool tensor_file(const eddy_manifest_t *m, const char *name) {
  return !strcmp(name, EDDY_STORE_WEIGHTS) || !strcmp(name, EDDY_STORE_STATE) || eddy_manifest_precision_of(m, name) > 0;
}

static void check_state_reader(const eddy_st_reader_t *r, const eddy_manifest_t *m, report_t *rep) {
  check_spec_meta(r, m, rep, EDDY_STORE_STATE);
  check_tensors(r, &m->spec, EDDY_DT_F32, false, rep, EDDY_STORE_STATE);
}

/* Size and SHA-256 of dir/f->name against the manifest; 1 if the file exists. */
static int check_file(const char *dir, const eddy_manifest_file_t *f, report_t *rep) {
  char *path = join(dir, f->name);
  if (!path) {
    report(rep, f->name, EDDY_ERR_NOMEM, "out of memory");
    return 0;
  }
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  int present = 0;
  struct stat st;
  if (fd < 0) {
    int e = errno;
    if (e == ENOENT) report(rep, f->name, EDDY_ERR_NOT_FOUND, "missing (the manifest lists %" PRIu64 " bytes)", f->bytes);
    else if (e == ELOOP) report(rep, f->name, EDDY_ERR_FORMAT, "is a symbolic link, not a file");
    else report(rep, f->name, EDDY_ERR_IO, "open: %s", strerror(e));
  } else if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    report(rep, f->name, EDDY_ERR_FORMAT, "not a regular file");
  } else {
    present = 1;
    if ((uint64_t)st.st_size != f->bytes) {
      report(rep, f->name, EDDY_ERR_FORMAT, "size %lld bytes, the manifest says %" PRIu64 " (truncated or replaced)",
             (long long)st.st_size, f->bytes);
    } else {
      uint8_t digest[32];
      char hex[65], msg[512] = "";
      if (eddy_sha256_file(path, digest, msg, sizeof msg) != EDDY_OK) {
        report(rep, f->name, EDDY_ERR_IO, "%s", msg);
      } else {
        eddy_sha256_hex(digest, hex);
        if (strcmp(hex, f->sha256) != 0)
          report(rep, f->name, EDDY_ERR_FORMAT, "sha256 %s, the manifest says %s (content changed)", hex, f->sha256);
      }
    }
  }
  if (fd >= 0) close(fd);
  free(path);
  return present;
}

eddy_st_reader_t *eddy_store_verify_weights_mem(const eddy_manifest_t *m, uint8_t *data, size_t len,
                                                size_t max_header, char *errstr, size_t errstr_size) {
  return eddy_store_verify_file_mem(m, EDDY_STORE_WEIGHTS, data, len, max_header, errstr, errstr_size);
}

eddy_st_reader_t *eddy_store_verify_file_mem(const eddy_manifest_t *m, const char *name, uint8_t *data, size_t len,
                                             size_t max_header, char *errstr, size_t errstr_size) {
  report_t rep = {0};
  eddy_st_reader_t *r = NULL;
  const eddy_manifest_file_t *f = m && data && name ? eddy_manifest_file(m, name) : NULL;
  if (!m || !data || !name) {
    report(&rep, name ? name : EDDY_STORE_WEIGHTS, EDDY_ERR_INVALID_ARG, "no manifest, name or data");
  } else if (!f) {
    report(&rep, EDDY_STORE_MANIFEST, EDDY_ERR_FORMAT, "\"files\" does not list %s", name);
  } else if (strcmp(name, EDDY_STORE_WEIGHTS) != 0 && eddy_manifest_precision_of(m, name) <= 0) {
    report(&rep, name, EDDY_ERR_INVALID_ARG, "not a weights file of this version");
  } else if ((uint64_t)len != f->bytes) {
    report(&rep, f->name, EDDY_ERR_FORMAT, "size %zu bytes, the manifest says %" PRIu64 " (truncated or replaced)",
           len, f->bytes);
  } else {
    uint8_t digest[32];
    char hex[65], msg[512] = "";
    eddy_sha256(data, len, digest);
    eddy_sha256_hex(digest, hex);
    if (strcmp(hex, f->sha256) != 0) {
      report(&rep, f->name, EDDY_ERR_FORMAT, "sha256 %s, the manifest says %s (content changed)", hex, f->sha256);
    } else if (!(r = eddy_st_reader_new_owned(data, len, max_header, msg, sizeof msg))) {
      data = NULL; /* freed by eddy_st_reader_new_owned */
      report(&rep, f->name, EDDY_ERR_FORMAT, "not a valid safetensors file: %s", msg);
    } else {
      data = NULL; /* the reader's now */
      check_reader(r, m, name, &rep);
    }
  }
  free(data);
  if (!rep.count) return r;
  eddy_st_reader_destroy(r);
  if (rep.count > 1)
    eddy_errf(rep.first, errstr, errstr_size, "%s (and %zu more problems)", rep.first_msg, rep.count - 1);
  else
    eddy_errf(rep.first, errstr, errstr_size, "%s", rep.first_msg);
  return NULL;
}

eddy_err_t eddy_store_verify_each(const char *dir, eddy_manifest_t *m, eddy_store_problem_fn fn, void *ctx,
                                  size_t *problems) {
  report_t rep = {.fn = fn, .ctx = ctx};
  eddy_manifest_t local;
  eddy_manifest_t *man = m ? m : &local;
  eddy_manifest_init(man);
  char *mpath = dir ? join(dir, EDDY_STORE_MANIFEST) : NULL;
  char msg[1024] = "";
  if (!mpath) {
    report(&rep, EDDY_STORE_MANIFEST, EDDY_ERR_INVALID_ARG, "no folder given");
    goto done;
  }
  eddy_err_t err = eddy_manifest_load(mpath, man, msg, sizeof msg);
  if (err) {
    size_t plen = strlen(mpath);
    const char *text = !strncmp(msg, mpath, plen) && !strncmp(msg + plen, ": ", 2) ? msg + plen + 2 : msg;
    report(&rep, EDDY_STORE_MANIFEST, err, "%s", text);
    eddy_manifest_clear(man);
    goto done;
  }
  /* The folder name, when it is a version name, must be the manifest's version. */
  size_t dlen = strlen(dir);
  while (dlen > 1 && dir[dlen - 1] == '/') dlen--;
  size_t b = dlen;
  while (b > 0 && dir[b - 1] != '/') b--;
  char base[64] = "";
  if (dlen - b < sizeof base) memcpy(base, dir + b, dlen - b), base[dlen - b] = 0;
  uint64_t named;
  if (parse_vname(base, &named) && named != man->version)
    report(&rep, EDDY_STORE_MANIFEST, EDDY_ERR_FORMAT, "folder %s holds the manifest of version %" PRIu64, base,
           man->version);
  const char *required[] = {EDDY_STORE_WEIGHTS, EDDY_STORE_STATE};
  for (size_t i = 0; i < 2; i++)
    if (!eddy_manifest_file(man, required[i]))
      report(&rep, EDDY_STORE_MANIFEST, EDDY_ERR_FORMAT, "\"files\" does not list %s", required[i]);
  DIR *d = opendir(dir);
  if (!d) {
    report(&rep, ".", EDDY_ERR_IO, "list %s: %s", dir, strerror(errno));
  } else {
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
      if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, EDDY_STORE_MANIFEST)) continue;
      if (!eddy_manifest_file(man, e->d_name))
        report(&rep, e->d_name, EDDY_ERR_FORMAT, "not listed in the manifest (versions are immutable)");
    }
    closedir(d);
  }
  for (size_t i = 0; i < man->n_files; i++) {
    const eddy_manifest_file_t *f = &man->files[i];
    if (!check_file(dir, f, &rep)) continue;
    if (!tensor_file(man, f->name)) continue;
    char *path = join(dir, f->name);
    eddy_st_reader_t *r = path ? eddy_st_reader_new(path, 0, msg, sizeof msg) : NULL;
    if (!r) report(&rep, f->name, EDDY_ERR_FORMAT, "not a valid safetensors file: %s", path ? msg : "out of memory");
    else check_reader(r, man, f->name, &rep);
    eddy_st_reader_destroy(r);
    free(path);
  }
  if (!m) eddy_manifest_clear(man);
done:
  free(mpath);
  if (problems) *problems = rep.count;
  return rep.count ? rep.first : EDDY_OK;
}

typedef struct {
  char first[1024];
  size_t n;
} first_problem_t;

static void keep_first(void *ctx, const char *file, eddy_err_t err, const char *message) {
  (void)err;
  first_problem_t *fp = ctx;
  if (!fp->n++) snprintf(fp->first, sizeof fp->first, "%s: %s", file, message);
}

eddy_err_t eddy_store_verify(const char *dir, eddy_manifest_t *m, char *errstr, size_t errstr_size) {
  first_problem_t fp = {.n = 0};
  size_t count = 0;
  eddy_err_t err = eddy_store_verify_each(dir, m, keep_first, &fp, &count);
  if (err) {
    if (count > 1)
      eddy_errf(err, errstr, errstr_size, "%s: %s (and %zu more problem%s)", dir ? dir : "(null)", fp.first,
                count - 1, count > 2 ? "s" : "");
    else
      eddy_errf(err, errstr, errstr_size, "%s: %s", dir ? dir : "(null)", fp.first);
  }
  return err;
}

/* ---- publishing ---- */

eddy_err_t eddy_store_begin(eddy_store_t *s, eddy_store_txn_t **txn, char *errstr, size_t errstr_size) {
  *txn = NULL;
  if (s->mode != EDDY_STORE_WRITER)
    return eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "store %s: opened read-only", s->dir);
  pthread_mutex_lock(&s->mu);
  eddy_err_t err = EDDY_OK;
  uint64_t latest = 0;
  eddy_store_txn_t *t = NULL;
  if (s->txn) {
    err = eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "store %s: the publish of v%06" PRIu64 " is in progress",
                    s->dir, s->txn->version);
    goto out;
  }
  if ((err = latest_locked(s, &latest, errstr, errstr_size))) goto out;
  if (latest >= EDDY_MANIFEST_MAX_INT) {
    err = eddy_errf(EDDY_ERR_TOO_LARGE, errstr, errstr_size, "store %s: version numbers exhausted", s->dir);
    goto out;
  }
  t = calloc(1, sizeof *t);
  size_t n = strlen(s->dir) + 48;
  char *dir = malloc(n);
  if (!t || !dir) {
    free(t);
    free(dir);
    t = NULL;
    err = eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "store: out of memory");
    goto out;
  }
  t->store = s;
  t->version = latest + 1;
  snprintf(dir, n, "%s/.tmp-v%06" PRIu64 "-XXXXXX", s->dir, t->version);
  if (!mkdtemp(dir) || chmod(dir, 0755) != 0) {
    err = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "store: create temp folder %s: %s", dir, strerror(errno));
    rmdir(dir);
    free(dir);
    free(t);
    t = NULL;
    goto out;
  }
  t->dir = dir;
  s->txn = t;
out:
  pthread_mutex_unlock(&s->mu);
  *txn = t;
  return note_write(s, err, errstr, false);
}

uint64_t eddy_store_txn_version(const eddy_store_txn_t *t) { return t->version; }
const char *eddy_store_txn_dir(const eddy_store_txn_t *t) { return t->dir; }

eddy_err_t eddy_store_txn_write(eddy_store_txn_t *t, eddy_learner_t *l, const char *dtype, char *errstr,
                                size_t errstr_size) {
  if (!t || !l) return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "store: NULL transaction or learner");
  char version[24];
  snprintf(version, sizeof version, "%" PRIu64, t->version);
  const char *meta[] = {"eddy.model", t->store->model, "eddy.version", version};
  char *weights = join(t->dir, EDDY_STORE_WEIGHTS), *state = join(t->dir, EDDY_STORE_STATE);
  eddy_err_t err = EDDY_OK;
  if (!weights || !state) err = eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "store: out of memory");
  if (!err) err = eddy_learner_save_weights(l, weights, dtype, meta, 2, errstr, errstr_size);
  if (!err) err = eddy_learner_save_state(l, state, errstr, errstr_size);
  free(weights);
  free(state);
  return note_write(t->store, err, errstr, false);
}

const char *eddy_store_precision_file(eddy_infer_precision_t p) {
  static const char *const files[EDDY_INFER_PRECISIONS] = {EDDY_STORE_WEIGHTS, "weights-bf16.safetensors",
                                                           "weights-fp16.safetensors", "weights-int8.safetensors"};
  return (unsigned)p < EDDY_INFER_PRECISIONS ? files[p] : NULL;
}

eddy_err_t eddy_store_txn_write_precision(eddy_store_txn_t *t, const eddy_st_reader_t *weights,
                                          const eddy_model_spec_t *spec, eddy_infer_precision_t p,
                                          const eddy_quant_calib_t *calib, char *errstr, size_t errstr_size) {
  if (!t || !weights || !spec || p == EDDY_INFER_F32 || (unsigned)p >= EDDY_INFER_PRECISIONS ||
      (p == EDDY_INFER_INT8 && !calib))
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                     "store: a transaction, weights, spec, a precision other than fp32 (and for int8 a calibration)");
  eddy_st_writer_t *w = eddy_st_writer_new();
  char *spec_json = eddy_model_spec_to_json(spec), version[24], *path = join(t->dir, eddy_store_precision_file(p));
  snprintf(version, sizeof version, "%" PRIu64, t->version);
  eddy_err_t err = w && spec_json && path ? EDDY_OK : eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
  if (!err)
    err = p == EDDY_INFER_INT8 ? eddy_quant_write_int8(spec, weights, calib, w, errstr, errstr_size)
                               : eddy_quant_write_float(spec, weights, p == EDDY_INFER_BF16 ? EDDY_DT_BF16 : EDDY_DT_F16, w,
                                                        errstr, errstr_size);
  const char *meta[][2] = {{"eddy.spec", spec_json},
                           {"eddy.model", t->store->model},
                           {"eddy.version", version},
                           {"eddy.precision", eddy_infer_precision_name(p)}};
  for (size_t i = 0; !err && i < sizeof meta / sizeof meta[0]; i++)
    if ((err = eddy_st_writer_meta(w, meta[i][0], meta[i][1])))
      eddy_errf(err, errstr, errstr_size, "store: metadata %s of %s", meta[i][0], eddy_store_precision_file(p));
  if (!err) err = eddy_st_writer_save_unsynced(w, path, NULL, errstr, errstr_size); /* commit fsyncs it */
  eddy_st_writer_destroy(w);
  free(spec_json);
  free(path);
  return err;
}

static void txn_free_locked(eddy_store_txn_t *t, int remove_dir) {
  if (remove_dir && t->dir && rm_tree(t->dir) != 0)
    EDDY_WARN("store", "could not remove %s: %s (removed at the next open)", t->dir, strerror(errno));
  if (t->store->txn == t) t->store->txn = NULL;
  free(t->dir);
  free(t);
}

void eddy_store_abort(eddy_store_txn_t *t) {
  if (!t) return;
  eddy_store_t *s = t->store;
  pthread_mutex_lock(&s->mu);
  txn_free_locked(t, 1);
  pthread_mutex_unlock(&s->mu);
}

/* Fills the store's fields of m from the files, checks them, writes manifest.json. */
static eddy_err_t commit_prepare(eddy_store_txn_t *t, eddy_manifest_t *m, char *errstr, size_t errstr_size) {
  eddy_store_t *s = t->store;
  char msg[1024] = "";
  m->version = t->version;
  snprintf(m->model, sizeof m->model, "%s", s->model);
  if (m->created_at_ms == 0) m->created_at_ms = eddy_clock_wall_ms();
  if (m->parent) {
    char path[PATH_MAX];
    struct stat st;
    eddy_store_path(s, m->parent, NULL, path, sizeof path);
    if (m->parent >= m->version || stat(path, &st) != 0)
      return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                       "publish v%06" PRIu64 ": parent v%06" PRIu64 " does not exist in %s", m->version, m->parent,
                       s->dir);
  }
  /* Exactly the two files and the files of the precisions m lists (but fp32's, the weights), nothing else. */
  const char *names[EDDY_MANIFEST_MAX_FILES] = {EDDY_STORE_WEIGHTS, EDDY_STORE_STATE};
  int expected = 2;
  for (int p = 1; p < EDDY_INFER_PRECISIONS && expected < EDDY_MANIFEST_MAX_FILES; p++)
    if (m->precisions[p].present) names[expected++] = m->precisions[p].file;
  DIR *d = opendir(t->dir);
  if (!d) return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "publish: list %s: %s", t->dir, strerror(errno));
  struct dirent *e;
  int seen = 0;
  eddy_err_t err = EDDY_OK;
  while (!err && (e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    int known = 0;
    for (int i = 0; i < expected && !known; i++) known = !strcmp(e->d_name, names[i]);
    if (known) seen++;
    else
      err = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "publish: unexpected file %s in %s", e->d_name, t->dir);
  }
  closedir(d);
  if (err) return err;
  if (seen != expected)
    return eddy_errf(EDDY_ERR_NOT_FOUND, errstr, errstr_size, "publish: %s needs %s, %s and the %d precision file(s) "
                     "the manifest lists", t->dir, EDDY_STORE_WEIGHTS, EDDY_STORE_STATE, expected - 2);
  char *wpath = join(t->dir, EDDY_STORE_WEIGHTS), *spath = join(t->dir, EDDY_STORE_STATE);
  eddy_st_reader_t *w = wpath ? eddy_st_reader_new(wpath, 0, msg, sizeof msg) : NULL;
  eddy_st_reader_t *st = NULL;
  if (!w) {
    err = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "publish: %s", wpath ? msg : "out of memory");
    goto out;
  }
  st = eddy_st_reader_new(spath, 0, msg, sizeof msg);
  if (!st) {
    err = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "publish: %s", msg);
    goto out;
  }
  /* The store's fields, from what was written. */
  const char *spec_json = eddy_st_meta(w, "eddy.spec");
  if (!spec_json || eddy_model_spec_from_json(spec_json, &m->spec, msg, sizeof msg) != EDDY_OK) {
    err = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size, "publish: %s: eddy.spec %s", wpath,
                    spec_json ? msg : "missing");
    goto out;
  }
  if (eddy_st_count(w) > 0) {
    eddy_dtype_t dt = eddy_st_at(w, 0)->dtype;
    snprintf(m->weights_dtype, sizeof m->weights_dtype, "%s", eddy_dtype_name(dt));
  }
  const char *precision = eddy_st_meta(st, "eddy.precision");
  if (precision && (!strcmp(precision, "fp32") || !strcmp(precision, "bf16") || !strcmp(precision, "fp16")))
    snprintf(m->precision, sizeof m->precision, "%s", precision);
  report_t rep = {0};
  check_weights_reader(w, m, &rep);
  check_state_reader(st, m, &rep);
  for (int i = 2; i < expected && !rep.count; i++) {
    char *ppath = join(t->dir, names[i]);
    eddy_st_reader_t *pr = ppath ? eddy_st_reader_new(ppath, 0, msg, sizeof msg) : NULL;
    if (!pr) report(&rep, names[i], EDDY_ERR_FORMAT, "not a valid safetensors file: %s", ppath ? msg : "out of memory");
    else check_reader(pr, m, names[i], &rep);
    eddy_st_reader_destroy(pr);
    free(ppath);
  }
  if (rep.count) {
    err = eddy_errf(rep.first, errstr, errstr_size, "publish v%06" PRIu64 ": %s%s", m->version, rep.first_msg,
                    rep.count > 1 ? " (and more)" : "");
    goto out;
  }
  eddy_st_reader_destroy(w);
  eddy_st_reader_destroy(st);
  w = st = NULL;
  /* Sizes and checksums of the bytes on disk. */
  m->n_files = 0;
  for (int i = 0; i < expected; i++) {
    eddy_manifest_file_t *f = &m->files[m->n_files++];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", names[i]);
    char *path = join(t->dir, names[i]);
    struct stat sb;
    uint8_t digest[32];
    if (!path || stat(path, &sb) != 0) {
      err = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "publish: stat %s/%s: %s", t->dir, names[i],
                      path ? strerror(errno) : "out of memory");
      free(path);
      goto out;
    }
    err = eddy_sha256_file(path, digest, errstr, errstr_size);
    if (!err && i >= 2 && fsync_file(path) != 0) /* a precision's file, written unsynced */
      err = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "publish: fsync %s: %s", path, strerror(errno));
    free(path);
    if (err) goto out;
    f->bytes = (uint64_t)sb.st_size;
    eddy_sha256_hex(digest, f->sha256);
  }
  char *json = NULL;
  if ((err = eddy_manifest_to_json(m, &json, msg, sizeof msg))) {
    err = eddy_errf(err, errstr, errstr_size, "publish v%06" PRIu64 ": %s", m->version, msg);
    goto out;
  }
  char *mpath = join(t->dir, EDDY_STORE_MANIFEST);
  size_t jlen = strlen(json);
  json[jlen] = '\n';
  err = mpath ? write_new_file(mpath, json, jlen + 1, errstr, errstr_size)
              : eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "store: out of memory");
  free(mpath);
  free(json);
  if (!err && fsync_dir(t->dir) != 0)
    err = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "publish: fsync %s: %s", t->dir, strerror(errno));
out:
  eddy_st_reader_destroy(w);
  eddy_st_reader_destroy(st);
  free(wpath);
  free(spath);
  return err;
}

eddy_err_t eddy_store_commit(eddy_store_txn_t *t, eddy_manifest_t *m, char *errstr, size_t errstr_size) {
  if (!t) return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "store: NULL transaction");
  eddy_store_t *s = t->store;
  pthread_mutex_lock(&s->mu);
  eddy_err_t err = m ? EDDY_OK : eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "store: NULL manifest");
  if (!err) err = commit_prepare(t, m, errstr, errstr_size);
  char final[PATH_MAX];
  if (!err && eddy_store_path(s, t->version, NULL, final, sizeof final) != EDDY_OK)
    err = eddy_errf(EDDY_ERR_TOO_LARGE, errstr, errstr_size, "store: path too long");
  if (!err) {
#ifdef RENAME_NOREPLACE
    int rc = renameat2(AT_FDCWD, t->dir, AT_FDCWD, final, RENAME_NOREPLACE);
    if (rc != 0 && (errno == EINVAL || errno == ENOSYS)) rc = rename(t->dir, final); /* fails on a non-empty target */
#else
    int rc = rename(t->dir, final); /* glibc < 2.28: rename also fails on a non-empty target */
#endif
    if (rc != 0)
      err = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "publish: rename %s to %s: %s", t->dir, final,
                      strerror(errno));
  }
  if (err) {
    txn_free_locked(t, 1);
    pthread_mutex_unlock(&s->mu);
    return note_write(s, err, errstr, false);
  }
  txn_free_locked(t, 0);
  /* The version is complete and visible; only the durability of the rename is left. */
  if (fsync_dir(s->dir) != 0)
    err = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "publish v%06" PRIu64 ": renamed into place, but fsync %s: %s",
                    m->version, s->dir, strerror(errno));
  cJSON *ev = event_new("publish", m->version);
  if (ev) {
    cJSON_AddStringToObject(ev, "status", eddy_version_status_name(m->status));
    if (m->parent) cJSON_AddNumberToObject(ev, "parent", (double)m->parent);
    else cJSON_AddNullToObject(ev, "parent");
    if (m->reason[0]) cJSON_AddStringToObject(ev, "reason", m->reason);
    event_append(s, ev);
  }
  pthread_mutex_unlock(&s->mu);
  EDDY_INFO("store", "%s: published v%06" PRIu64 " (%s, step %" PRIu64 ", %" PRIu64 " + %" PRIu64 " bytes)", s->model,
            m->version, eddy_version_status_name(m->status), m->step, m->files[0].bytes, m->files[1].bytes);
  return note_write(s, err, errstr, true);
}

eddy_err_t eddy_store_publish(eddy_store_t *s, eddy_learner_t *l, eddy_manifest_t *m, const char *dtype,
                              uint64_t *version, char *errstr, size_t errstr_size) {
  eddy_store_txn_t *t = NULL;
  eddy_err_t err = eddy_store_begin(s, &t, errstr, errstr_size);
  if (err) return err;
  uint64_t v = t->version;
  err = eddy_store_txn_write(t, l, dtype, errstr, errstr_size);
  if (err) {
    eddy_store_abort(t);
    return err;
  }
  err = eddy_store_commit(t, m, errstr, errstr_size);
  if (!err && version) *version = v;
  return err;
}

/* ---- reading ---- */

eddy_err_t eddy_store_load_manifest(eddy_store_t *s, uint64_t version, eddy_manifest_t *m, char *errstr,
                                    size_t errstr_size) {
  char path[PATH_MAX];
  if (eddy_store_path(s, version, EDDY_STORE_MANIFEST, path, sizeof path) != EDDY_OK) {
    eddy_manifest_init(m);
    return eddy_errf(EDDY_ERR_TOO_LARGE, errstr, errstr_size, "store: path too long");
  }
  return eddy_manifest_load(path, m, errstr, errstr_size);
}

static bool pinned_locked(eddy_store_t *s, uint64_t version) {
  char path[PATH_MAX], v[32];
  vname(version, v);
  snprintf(path, sizeof path, "%s/" PINNED_DIR "/%s", s->dir, v);
  return access(path, F_OK) == 0;
}

bool eddy_store_is_pinned(eddy_store_t *s, uint64_t version) { return pinned_locked(s, version); }

eddy_err_t eddy_store_list(eddy_store_t *s, eddy_store_entry_t **entries, size_t *count, char *errstr,
                           size_t errstr_size) {
  *entries = NULL;
  *count = 0;
  pthread_mutex_lock(&s->mu);
  uint64_t *list;
  size_t n;
  eddy_err_t err = scan_versions(s->dir, &list, &n, errstr, errstr_size);
  if (err) {
    pthread_mutex_unlock(&s->mu);
    return err;
  }
  uint64_t current = 0;
  char ignore[256];
  if (current_read(s, &current, ignore, sizeof ignore) != EDDY_OK) current = 0;
  eddy_store_entry_t *out = n ? calloc(n, sizeof *out) : NULL;
  if (n && !out) {
    free(list);
    pthread_mutex_unlock(&s->mu);
    return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "store: out of memory listing %zu versions", n);
  }
  for (size_t i = 0; i < n; i++) {
    eddy_store_entry_t *e = &out[i];
    e->version = list[i];
    e->current = list[i] == current;
    e->pinned = pinned_locked(s, list[i]);
    e->manifest_ok = eddy_store_load_manifest(s, list[i], &e->manifest, e->error, sizeof e->error) == EDDY_OK;
    if (!e->manifest_ok) eddy_manifest_clear(&e->manifest);
  }
  pthread_mutex_unlock(&s->mu);
  free(list);
  *entries = out;
  *count = n;
  return EDDY_OK;
}

void eddy_store_list_free(eddy_store_entry_t *entries, size_t count) {
  for (size_t i = 0; entries && i < count; i++) eddy_manifest_clear(&entries[i].manifest);
  free(entries);
}

/* ---- retention ---- */

eddy_err_t eddy_store_pin(eddy_store_t *s, uint64_t version, bool pinned, char *errstr, size_t errstr_size) {
  if (s->mode != EDDY_STORE_WRITER)
    return eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "store %s: opened read-only", s->dir);
  char vdir[PATH_MAX], pdir[PATH_MAX], marker[PATH_MAX + 32], v[32];
  vname(version, v);
  eddy_store_path(s, version, NULL, vdir, sizeof vdir);
  snprintf(pdir, sizeof pdir, "%s/" PINNED_DIR, s->dir);
  snprintf(marker, sizeof marker, "%s/%s", pdir, v);
  pthread_mutex_lock(&s->mu);
  eddy_err_t err = EDDY_OK;
  bool was = access(marker, F_OK) == 0;
  struct stat st;
  if (pinned && !was) {
    if (stat(vdir, &st) != 0) {
      err = eddy_errf(EDDY_ERR_NOT_FOUND, errstr, errstr_size, "pin: no version %s in %s", v, s->dir);
    } else {
      int created = mkdir(pdir, 0755) == 0;
      if (!created && errno != EEXIST) {
        err = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "pin: create %s: %s", pdir, strerror(errno));
      } else if (created && fsync_dir(s->dir) != 0) {
        err = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "pin: fsync %s: %s", s->dir, strerror(errno));
      } else {
        err = write_new_file(marker, "", 0, errstr, errstr_size);
      }
    }
  } else if (!pinned && was && unlink(marker) != 0) {
    err = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "unpin: remove %s: %s", marker, strerror(errno));
  }
  if (!err && pinned != was) {
    if (fsync_dir(pdir) != 0)
      err = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "pin: fsync %s: %s", pdir, strerror(errno));
    cJSON *ev = event_new(pinned ? "pin" : "unpin", version);
    if (ev) event_append(s, ev);
  }
  pthread_mutex_unlock(&s->mu);
  return err;
}

eddy_err_t eddy_store_retain(eddy_store_t *s, size_t keep, size_t *deleted, char *errstr, size_t errstr_size) {
  if (deleted) *deleted = 0;
  if (s->mode != EDDY_STORE_WRITER)
    return eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "store %s: opened read-only", s->dir);
  if (keep < 1)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                     "retain: keep = 0: at least the newest version must stay (it holds the training state)");
  pthread_mutex_lock(&s->mu);
  uint64_t *list = NULL, current = 0;
  size_t n = 0, removed = 0;
  char msg[512];
  eddy_err_t err = scan_versions(s->dir, &list, &n, errstr, errstr_size);
  if (!err) {
    eddy_err_t cerr = current_read(s, &current, msg, sizeof msg);
    if (cerr == EDDY_ERR_NOT_FOUND) current = 0;
    else if (cerr) err = eddy_errf(cerr, errstr, errstr_size, "retain: %s; nothing deleted", msg);
  }
  for (size_t i = keep; !err && i < n; i++) {
    uint64_t v = list[i];
    if (v == current || pinned_locked(s, v)) continue;
    char from[PATH_MAX], to[PATH_MAX + 64];
    eddy_store_path(s, v, NULL, from, sizeof from);
    snprintf(to, sizeof to, "%s/.del-v%06" PRIu64 "-%ld-%u", s->dir, v, (long)getpid(), s->del_counter++);
    if (rename(from, to) != 0) {
      err = eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "retain: rename %s to %s: %s", from, to, strerror(errno));
      break;
    }
    if (fsync_dir(s->dir) != 0)
      EDDY_WARN("store", "retain: fsync %s: %s (v%06" PRIu64 " may reappear after a crash)", s->dir, strerror(errno), v);
    if (rm_tree(to) != 0)
      EDDY_WARN("store", "retain: could not remove %s: %s (removed at the next open)", to, strerror(errno));
    removed++;
    cJSON *ev = event_new("delete", v);
    if (ev) {
      cJSON_AddStringToObject(ev, "reason", "retention");
      event_append(s, ev);
    }
  }
  pthread_mutex_unlock(&s->mu);
  free(list);
  if (removed) EDDY_INFO("store", "%s: retention removed %zu version%s (keep %zu)", s->model, removed,
                         removed == 1 ? "" : "s", keep);
  if (deleted) *deleted = removed;
  return err;
}
