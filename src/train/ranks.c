/* Data-parallel trainer ranks (DESIGN "Scaling past one machine") and the positions every manifest
 * records. R ranks train in rounds: each accumulates what its own buffer holds (fresh events of its
 * partitions p mod R = r, replay draws, or nothing), all gather one small record (counts, stop, rank
 * 0's decisions: pause, publish, adopt a rollback; ingest and lag for the dashboard), then they step
 * together (the learner sums the gradients, the counts and so the Inf/NaN verdict) and, when rank 0
 * says so, send it their positions and a checksum of their weights for its candidate. A rank with
 * nothing to train waits for the round (one step period) and never spins. With one rank this file
 * only tracks the positions: per partition, the next Kafka offset not trained yet, which lets a
 * restart with another R re-read from Kafka exactly what a partition's new owner has to train. */
#include "train/trainer_state.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <xxhash.h>

#include "core/clock.h"
#include "core/fsutil.h"
#include "core/log.h"

#define LOG_MOD "ranks"
#define MAX_PARTITION (1 << 20) /* partitions tracked by number; beyond, positions are found by scan */
#define BUFFER_ID_MAX 1000000000000000ull /* buffer identities are below 10^15 */

/* ---- set-up ---- */

eddy_err_t trainer_ranks_init(eddy_trainer_t *t, const eddy_collective_t *coll, char *errstr, size_t errstr_size) {
  trainer_ranks_t *rk = &t->rk;
  rk->ranks = 1;
  if (!coll || coll->ranks <= 1) return EDDY_OK;
  rk->coll = coll;
  rk->rank = coll->rank;
  rk->ranks = coll->ranks;
  rk->local_rank = coll->local_rank;
  rk->last = calloc((size_t)rk->ranks, sizeof *rk->last);
  rk->gathered_sizes = calloc((size_t)rk->ranks, sizeof *rk->gathered_sizes);
  if (!rk->last || !rk->gathered_sizes) return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "ranks: out of memory");
  eddy_config_t *c = &t->cfg;
  char path[sizeof c->buffer_path + 32];
  if (eddy_mkdir_p(c->buffer_path) != 0)
    return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "buffer.path %s: %s", c->buffer_path, strerror(errno));
  if (eddy_replay_rank_path(c->buffer_path, rk->rank, path, sizeof path) != EDDY_OK || strlen(path) >= sizeof c->buffer_path)
    return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "buffer.path %s: too long for the rank folders in it",
                     c->buffer_path);
  memcpy(c->buffer_path, path, strlen(path) + 1);
  if (!strcmp(c->device, "cuda") || !strcmp(c->device, "cuda:all")) {
    /* One GPU per rank, by local rank among the GPUs this process sees (a launcher that gives each
     * rank its own, e.g. srun --gpus-per-task=1, leaves one: device 0). */
    const char *visible = getenv("CUDA_VISIBLE_DEVICES");
    int n_visible = 0;
    for (const char *p = visible; p && *p; p++)
      if (p == visible || p[-1] == ',') n_visible++;
    int gpu = n_visible > 0 ? rk->local_rank % n_visible : rk->local_rank;
    char dev[sizeof c->device];
    snprintf(dev, sizeof dev, "cuda:%d", gpu % 1000);
    EDDY_INFO(LOG_MOD, "train.device %s with %d ranks: this rank trains on %s (one GPU per rank, by local rank %d%s)",
              c->device, rk->ranks, dev, rk->local_rank, n_visible ? " among CUDA_VISIBLE_DEVICES" : "");
    memcpy(c->device, dev, sizeof dev);
  }
  return EDDY_OK;
}

void trainer_ranks_free(eddy_trainer_t *t) {
  trainer_ranks_t *rk = &t->rk;
  free(rk->next);
  free(rk->changed);
  free(rk->gathered_sizes);
  free(rk->scratch);
  free(rk->resync);
  free(rk->last);
}

/* A random identity in 1..10^15-1: exact in JSON, where cJSON prints 15 significant digits. */
static uint64_t new_buffer_id(void) {
  uint64_t v = 0;
  if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v) {
    uint64_t seed[2] = {(uint64_t)eddy_clock_wall_ms(), (uint64_t)getpid() ^ (uint64_t)eddy_clock_mono_ms()};
    v = XXH3_64bits(seed, sizeof seed);
  }
  return 1 + v % (BUFFER_ID_MAX - 1);
}

static eddy_err_t buffer_identity(eddy_trainer_t *t, char *errstr, size_t errstr_size) {
  uint64_t id = 0;
  if (eddy_replay_meta_get(t->buffer, TRAINER_META_BUFFER_ID, &id) == EDDY_OK && id >= 1 && id < BUFFER_ID_MAX) {
    t->rk.buffer_id = id;
    return EDDY_OK;
  }
  id = new_buffer_id();
  eddy_err_t err = eddy_replay_meta_put(t->buffer, TRAINER_META_BUFFER_ID, id);
  if (err) return eddy_errf(err, errstr, errstr_size, "buffer %s: recording its identity failed", t->cfg.buffer_path);
  t->rk.buffer_id = id;
  return EDDY_OK;
}

/* ---- positions ---- */

static bool owned(const trainer_ranks_t *rk, int32_t partition) {
  return partition >= 0 && (uint32_t)partition % (uint32_t)rk->ranks == (uint32_t)rk->rank;
}

/* Room for partition p in next[] and changed[]; false beyond MAX_PARTITION or out of memory. */
static bool pos_reserve(trainer_ranks_t *rk, int32_t p) {
  if (p < 0 || p >= MAX_PARTITION) return false;
  if ((size_t)p < rk->n_parts) return true;
  size_t n = rk->n_parts ? rk->n_parts : 16;
  while (n <= (size_t)p) n *= 2;
  int64_t *next = realloc(rk->next, n * sizeof *next);
  if (!next) return false;
  rk->next = next;
  bool *changed = realloc(rk->changed, n * sizeof *changed);
  if (!changed) return false;
  rk->changed = changed;
  for (size_t i = rk->n_parts; i < n; i++) next[i] = -1, changed[i] = false;
  rk->n_parts = n;
  return true;
}

bool trainer_ranks_foreign(const eddy_trainer_t *t, const eddy_event_t *ev, uint64_t seq) {
  const trainer_ranks_t *rk = &t->rk;
  if (!ev->has_origin) return false;
  if (!owned(rk, ev->partition)) return true;
  return seq < rk->fence && (size_t)ev->partition < rk->n_parts && rk->changed[ev->partition];
}

bool trainer_ranks_take(eddy_trainer_t *t, const eddy_event_t *ev, uint64_t seq) {
  if (!ev->has_origin) return true;
  if (trainer_ranks_foreign(t, ev, seq)) {
    t->rk.stale++;
    return false;
  }
  if (pos_reserve(&t->rk, ev->partition)) t->rk.next[ev->partition] = ev->offset + 1;
  return true;
}

/* Adopts the positions of version m (NULL: a new lineage) on this rank: its cursor (from the entry
 * of its own buffer), the partitions it keeps, and those that moved here from another buffer,
 * whose stored Kafka positions are set back to m's (one write to the buffer, so that a crash
 * leaves all of them or none) so that ingest re-reads them; their older events in this buffer
 * (below the fence) are never trained. */
static eddy_err_t adopt(eddy_trainer_t *t, const eddy_manifest_t *m, bool live, char *errstr, size_t errstr_size) {
  trainer_ranks_t *rk = &t->rk;
  for (size_t i = 0; i < rk->n_parts; i++) rk->next[i] = -1, rk->changed[i] = false;
  eddy_replay_stats_t bs = eddy_replay_stats(t->buffer);
  rk->fence = bs.next_seq;
  if (rk->rank != 0) t->skip_from = 1, t->skip_to = 0;
  if (!m) {
    if (rk->rank != 0) t->cursor = bs.first_seq;
    rk->examples = 0;
    return EDDY_OK;
  }
  if (!m->n_ranks) {
    if (rk->ranks > 1)
      return eddy_errf(EDDY_ERR_STATE, errstr, errstr_size,
                       "v%06" PRIu64 " records no per-rank positions (it was written before ranks existed): run "
                       "one rank until it publishes a version, then restart with %d ranks",
                       m->version, rk->ranks);
    rk->examples = m->examples; /* one rank, an older manifest: restore's cursor stands */
    return EDDY_OK;
  }
  const eddy_manifest_rank_t *mine = NULL;
  for (size_t i = 0; i < m->n_ranks; i++)
    if (m->ranks[i].buffer_id == rk->buffer_id) mine = &m->ranks[i];
  if (mine && mine->cursor <= bs.next_seq) {
    t->cursor = mine->cursor;
    rk->examples = mine->examples;
  } else {
    if (mine)
      EDDY_WARN(LOG_MOD, "v%06" PRIu64 "'s cursor %" PRIu64 " is past this buffer's next seq %" PRIu64
                         ": its events are not trained; its partitions are re-read from Kafka",
                mine->cursor, m->version, bs.next_seq);
    mine = NULL;
    t->cursor = bs.next_seq;
    rk->examples = 0;
  }
  size_t kept = 0, moved = 0, dlen = 0, total = 0;
  char desc[256] = "";
  for (size_t i = 0; i < m->n_ranks; i++) total += m->ranks[i].n_offsets;
  eddy_replay_offset_t *reread = live || !total ? NULL : malloc(total * sizeof *reread);
  size_t n_reread = 0;
  if (!live && total && !reread) return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "ranks: out of memory");
  for (size_t i = 0; i < m->n_ranks; i++) {
    const eddy_manifest_rank_t *e = &m->ranks[i];
    for (size_t j = 0; j < e->n_offsets; j++) {
      const eddy_manifest_offset_t *o = &e->offsets[j];
      if (strcmp(o->topic, t->cfg.topic) || !owned(rk, o->partition)) continue;
      if (!pos_reserve(rk, o->partition)) {
        free(reread);
        return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "partition %" PRId32 ": too many to track",
                         o->partition);
      }
      rk->next[o->partition] = o->next_offset;
      if (e == mine) {
        kept++;
        continue;
      }
      rk->changed[o->partition] = true;
      moved++;
      if (live) { /* ingest owns the positions now: trainer_ranks_rollback_check keeps this rare */
        EDDY_WARN(LOG_MOD, "partition %" PRId32 " was trained from another buffer in v%06" PRIu64
                           ": its events after offset %" PRId64 " are not trained until a restart",
                  o->partition, m->version, o->next_offset);
        continue;
      }
      reread[n_reread++] =
          (eddy_replay_offset_t){.topic = t->cfg.topic, .partition = o->partition, .next_offset = o->next_offset};
      if (dlen < sizeof desc - 48) {
        int w = snprintf(desc + dlen, sizeof desc - dlen, " [%" PRId32 "]@%" PRId64 " (from rank %" PRIu32 ")",
                         o->partition, o->next_offset, e->rank);
        dlen += w > 0 ? (size_t)w : 0;
      }
    }
  }
  char why[512];
  eddy_err_t err =
      n_reread ? eddy_replay_append(t->buffer, NULL, 0, NULL, 0, reread, n_reread, NULL, why, sizeof why) : EDDY_OK;
  free(reread);
  if (err)
    return eddy_errf(err, errstr, errstr_size, "setting the stored positions of %zu partition%s to v%06" PRIu64
                     "'s:%s: %s", n_reread, n_reread == 1 ? "" : "s", m->version, desc, why);
  if (moved || !mine || m->n_ranks != (size_t)rk->ranks)
    EDDY_INFO(LOG_MOD, "v%06" PRIu64 " was trained by %zu rank%s, this job has %d: %s; %zu partition%s kept, %zu "
                       "taken over and re-read from Kafka at v%06" PRIu64 "'s positions:%s",
              m->version, m->n_ranks, m->n_ranks == 1 ? "" : "s", rk->ranks,
              mine ? "this buffer resumes at its cursor" : "none of this buffer's events is trained", kept,
              kept == 1 ? "" : "s", moved, m->version, moved ? desc : " none");
  return EDDY_OK;
}

eddy_err_t trainer_ranks_start(eddy_trainer_t *t, char *errstr, size_t errstr_size) {
  trainer_ranks_t *rk = &t->rk;
  eddy_err_t err = buffer_identity(t, errstr, errstr_size);
  if (err) return err;
  /* Every rank here (rank 0 restored first): the operations below are blocking ones. */
  if (rk->coll && (err = rk->coll->barrier(rk->coll->ctx, errstr, errstr_size))) return err;
  if (rk->coll && (err = eddy_learner_join(t->learner, rk->coll, errstr, errstr_size))) return err;
  eddy_manifest_t m;
  eddy_manifest_init(&m);
  bool have = false;
  char *text = NULL, why[1024];
  size_t len = 0;
  if (rk->rank == 0 && t->parent) {
    err = eddy_store_load_manifest(t->store, t->parent, &m, why, sizeof why);
    if (!err && rk->coll) err = eddy_manifest_to_json(&m, &text, why, sizeof why);
    if (err) {
      eddy_manifest_clear(&m);
      return eddy_errf(err, errstr, errstr_size, "v%06" PRIu64 "'s manifest: %s", t->parent, why);
    }
    have = true;
    len = strlen(text ? text : "");
  }
  if (rk->coll) {
    err = eddy_collective_bcast_bytes(rk->coll, 0, &text, &len, errstr, errstr_size);
    if (!err && rk->rank != 0 && len) {
      err = eddy_manifest_parse(text, len, &m, why, sizeof why);
      if (err) eddy_errf(err, errstr, errstr_size, "the manifest rank 0 restored: %s", why);
      have = !err;
    }
    free(text);
    if (!err) err = eddy_learner_sync_state(t->learner, 0, errstr, errstr_size);
    if (!err && rk->rank != 0) {
      t->parent = have ? m.version : 0;
      t->examples = have ? m.examples : 0;
    }
    if (!err)
      EDDY_INFO(LOG_MOD, "rank %d of %d (local rank %d): buffer %s, %s; weights and optimizer state from rank 0",
                rk->rank, rk->ranks, rk->local_rank, t->cfg.buffer_path,
                have ? "resuming the version rank 0 restored" : "new weights");
  }
  if (!err) err = adopt(t, have ? &m : NULL, false, errstr, errstr_size);
  eddy_manifest_clear(&m);
  return err;
}

eddy_err_t trainer_ranks_rollback_check(eddy_trainer_t *t, const eddy_manifest_t *m, char *errstr,
                                        size_t errstr_size) {
  const trainer_ranks_t *rk = &t->rk;
  if (!m->n_ranks) {
    if (rk->ranks == 1) return EDDY_OK;
    return eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "v%06" PRIu64 " records no per-rank positions: a retrain "
                     "rollback to it needs one rank", m->version);
  }
  if (m->n_ranks != (size_t)rk->ranks || m->ranks[0].buffer_id != rk->buffer_id)
    return eddy_errf(EDDY_ERR_STATE, errstr, errstr_size,
                     "v%06" PRIu64 " was trained by %zu rank%s with other buffers (this job: %d): a retrain rollback "
                     "to it cannot move partitions while ingest runs; roll back serve-only, or restart the job",
                     m->version, m->n_ranks, m->n_ranks == 1 ? "" : "s", rk->ranks);
  return EDDY_OK;
}

eddy_err_t trainer_ranks_rollback(eddy_trainer_t *t, const eddy_manifest_t *m, char *errstr, size_t errstr_size) {
  if (!t->rk.coll) return adopt(t, m, true, errstr, errstr_size);
  char *json = NULL;
  eddy_err_t err = eddy_manifest_to_json(m, &json, errstr, errstr_size);
  if (err) return err;
  pthread_mutex_lock(&t->mu);
  free(t->rk.resync);
  t->rk.resync = json;
  pthread_mutex_unlock(&t->mu);
  return EDDY_OK;
}

/* ---- positions records (one per rank, JSON) ---- */

typedef struct {
  const trainer_ranks_t *rk;
  const char *topic;
  int32_t *part;
  int64_t *next;
  size_t n, cap;
  bool nomem;
} stored_t;

static void add_stored(void *ctx, const char *topic, int32_t partition, int64_t next) {
  stored_t *s = ctx;
  if (strcmp(topic, s->topic) || !owned(s->rk, partition) || s->nomem) return;
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 16;
    int32_t *p = realloc(s->part, cap * sizeof *p);
    int64_t *n = p ? realloc(s->next, cap * sizeof *n) : NULL;
    if (p) s->part = p;
    if (n) s->next = n;
    if (!p || !n) {
      s->nomem = true;
      return;
    }
    s->cap = cap;
  }
  s->part[s->n] = partition;
  s->next[s->n++] = next;
}

/* The next untrained offset of partitions whose position is unknown (none of their events was
 * taken since the start and the restored version has none): their first event at or after the
 * cursor, else (all stored events trained) the stored next offset. Fills want[i] for parts[i].
 * The scan stops at an event stored without its origin (written before events carried one: the
 * stored offset is all there is to know). The caller keeps what it finds, so each partition is
 * looked for once. */
static void scan_positions(eddy_trainer_t *t, const int32_t *parts, int64_t *want, const bool *missing, size_t n) {
  size_t left = 0;
  for (size_t i = 0; i < n; i++) left += missing[i];
  bool *found = calloc(n ? n : 1, sizeof *found);
  if (!found) return;
  uint64_t from = t->cursor;
  while (left) {
    size_t got = 0;
    if (eddy_replay_read(t->buffer, from, t->cfg.batch_size, t->rd, t->rd_seqs, &got) != EDDY_OK || !got) break;
    for (size_t k = 0; k < got && left; k++) {
      const eddy_event_t *ev = &t->rd[k];
      if (!ev->has_origin) left = 0;
      if (!ev->has_origin || trainer_ranks_foreign(t, ev, t->rd_seqs[k])) continue;
      for (size_t i = 0; i < n; i++)
        if (missing[i] && !found[i] && parts[i] == ev->partition) {
          want[i] = ev->offset;
          found[i] = true;
          left--;
        }
    }
    from = t->rd_seqs[got - 1] + 1;
  }
  free(found);
}

/* XXH3-64 of every weight tensor in table order; false when a tensor cannot be read. */
static bool weights_xxh3(eddy_trainer_t *t, char out[17]) {
  trainer_ranks_t *rk = &t->rk;
  const eddy_tensor_info_t *ti;
  size_t nt = eddy_learner_tensors(t->learner, &ti);
  XXH3_state_t *st = XXH3_createState();
  if (!st || XXH3_64bits_reset(st) != XXH_OK) {
    XXH3_freeState(st);
    return false;
  }
  bool ok = true;
  for (size_t i = 0; ok && i < nt; i++) {
    if (ti[i].numel > rk->scratch_cap) {
      float *s = realloc(rk->scratch, ti[i].numel * sizeof *s);
      if (!s) {
        ok = false;
        break;
      }
      rk->scratch = s;
      rk->scratch_cap = ti[i].numel;
    }
    ok = eddy_learner_export(t->learner, ti[i].name, rk->scratch, ti[i].numel) == EDDY_OK &&
         XXH3_64bits_update(st, rk->scratch, ti[i].numel * sizeof(float)) == XXH_OK;
  }
  if (ok) snprintf(out, 17, "%016" PRIx64, (uint64_t)XXH3_64bits_digest(st));
  XXH3_freeState(st);
  return ok;
}

static cJSON *pairs_json(const int32_t *part, const int64_t *next, size_t n) {
  cJSON *arr = cJSON_CreateArray();
  for (size_t i = 0; arr && i < n; i++) {
    cJSON *pair = cJSON_CreateArray();
    if (!pair) break;
    cJSON_AddItemToArray(arr, pair);
    cJSON_AddItemToArray(pair, cJSON_CreateNumber(part[i]));
    cJSON_AddItemToArray(pair, cJSON_CreateNumber((double)next[i]));
  }
  return arr;
}

/* This rank's record: {rank, buffer_id, cursor, examples, xxh3, trained: [[p, next]...], stored:
 * [[p, next]...]} (caller frees), over the partitions of [stream] topic it owns; NULL when out of
 * memory. */
static char *positions_record(eddy_trainer_t *t, bool checksum) {
  trainer_ranks_t *rk = &t->rk;
  stored_t s = {.rk = rk, .topic = t->cfg.topic};
  eddy_replay_offsets_each(t->buffer, add_stored, &s);
  /* Partitions with a known position but nothing stored here (none yet): recorded too. */
  for (size_t p = 0; p < rk->n_parts && !s.nomem; p++) {
    if (rk->next[p] < 0 || !owned(rk, (int32_t)p)) continue;
    bool listed = false;
    for (size_t i = 0; i < s.n && !listed; i++) listed = s.part[i] == (int32_t)p;
    if (!listed) add_stored(&s, s.topic, (int32_t)p, rk->next[p]);
  }
  char *text = NULL;
  int64_t *trained = malloc((s.n ? s.n : 1) * sizeof *trained);
  bool *missing = calloc(s.n ? s.n : 1, sizeof *missing);
  cJSON *o = !s.nomem && trained && missing ? cJSON_CreateObject() : NULL;
  if (o) {
    bool any_missing = false;
    for (size_t i = 0; i < s.n; i++) {
      int32_t p = s.part[i];
      trained[i] = (size_t)p < rk->n_parts && rk->next[p] >= 0 ? rk->next[p] : s.next[i];
      missing[i] = !((size_t)p < rk->n_parts && rk->next[p] >= 0);
      any_missing = any_missing || missing[i];
    }
    if (any_missing) {
      scan_positions(t, s.part, trained, missing, s.n);
      for (size_t i = 0; i < s.n; i++) /* known from now on: no scan at the next candidate */
        if (missing[i] && pos_reserve(rk, s.part[i])) rk->next[s.part[i]] = trained[i];
    }
    char sum[17] = "";
    if (checksum && !weights_xxh3(t, sum)) sum[0] = '\0';
    cJSON_AddNumberToObject(o, "rank", rk->rank);
    cJSON_AddNumberToObject(o, "buffer_id", (double)rk->buffer_id);
    cJSON_AddNumberToObject(o, "cursor", (double)t->cursor);
    cJSON_AddNumberToObject(o, "examples", (double)rk->examples);
    cJSON_AddStringToObject(o, "xxh3", sum);
    cJSON_AddItemToObject(o, "trained", pairs_json(s.part, trained, s.n));
    cJSON_AddItemToObject(o, "stored", pairs_json(s.part, s.next, s.n));
    text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
  }
  free(trained);
  free(missing);
  free(s.part);
  free(s.next);
  return text;
}

static uint64_t json_u64(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  return cJSON_IsNumber(v) && v->valuedouble >= 0 ? (uint64_t)v->valuedouble : 0;
}

/* Appends the [[p, next]...] pairs of arr as positions of topic: to rank entry r, or to m's Kafka
 * offsets when r is NULL. */
static void add_pairs(eddy_manifest_t *m, eddy_manifest_rank_t *r, const char *topic, const cJSON *arr) {
  const cJSON *pair;
  cJSON_ArrayForEach(pair, arr) {
    const cJSON *p = cJSON_GetArrayItem(pair, 0), *n = cJSON_GetArrayItem(pair, 1);
    if (!cJSON_IsNumber(p) || !cJSON_IsNumber(n)) continue;
    eddy_err_t err = r ? eddy_manifest_rank_add_offset(r, topic, (int32_t)p->valuedouble, (int64_t)n->valuedouble)
                       : eddy_manifest_add_offset(m, topic, (int32_t)p->valuedouble, (int64_t)n->valuedouble);
    if (err) EDDY_WARN(LOG_MOD, "manifest: position of %s[%d] not recorded (%s)", topic, (int)p->valuedouble,
                       eddy_err_str(err));
  }
}

void trainer_ranks_manifest(eddy_trainer_t *t, eddy_manifest_t *m) {
  trainer_ranks_t *rk = &t->rk;
  char *own = NULL;
  size_t own_len = 0;
  const char *recs = rk->gathered;
  const size_t *sizes = rk->gathered_sizes;
  int n = rk->ranks;
  if (!rk->coll) {
    own = positions_record(t, false);
    own_len = own ? strlen(own) : 0;
    recs = own;
    sizes = &own_len;
  }
  if (!recs) {
    EDDY_WARN(LOG_MOD, "manifest: the ranks' positions are not recorded (out of memory)");
    return;
  }
  if (rk->coll) { /* the Kafka offsets of every rank, not rank 0's alone */
    free(m->offsets);
    m->offsets = NULL;
    m->n_offsets = 0;
  }
  size_t off = 0;
  for (int r = 0; r < n; off += sizes[r], r++) {
    cJSON *o = cJSON_ParseWithLength(recs + off, sizes[r]);
    eddy_manifest_rank_t *e = o ? eddy_manifest_add_rank(m) : NULL;
    if (!e) {
      EDDY_WARN(LOG_MOD, "manifest: rank %d's positions are not recorded", r);
      cJSON_Delete(o);
      continue;
    }
    e->rank = (uint32_t)r;
    e->buffer_id = json_u64(o, "buffer_id");
    e->cursor = json_u64(o, "cursor");
    e->examples = json_u64(o, "examples");
    const cJSON *sum = cJSON_GetObjectItemCaseSensitive(o, "xxh3");
    if (cJSON_IsString(sum)) snprintf(e->weights_xxh3, sizeof e->weights_xxh3, "%s", sum->valuestring);
    add_pairs(m, e, t->cfg.topic, cJSON_GetObjectItemCaseSensitive(o, "trained"));
    if (rk->coll) add_pairs(m, NULL, t->cfg.topic, cJSON_GetObjectItemCaseSensitive(o, "stored"));
    cJSON_Delete(o);
  }
  free(own);
}

/* ---- rounds ---- */

static eddy_err_t fail_round(eddy_trainer_t *t, eddy_err_t err, const char *what, const char *why) {
  trainer_set_fatal(t, err, "training stopped: ranks: %s: %s", what, why);
  return err ? err : EDDY_ERR_STATE;
}

/* Every rank sends its positions (and its weights' checksum); rank 0 checks that the weights are
 * the same everywhere and writes the candidate with them. */
static eddy_err_t candidate_round(eddy_trainer_t *t, uint64_t ticket) {
  trainer_ranks_t *rk = &t->rk;
  const eddy_collective_t *c = rk->coll;
  char why[512];
  char *rec = positions_record(t, true);
  if (!rec) return fail_round(t, EDDY_ERR_NOMEM, "positions record", "out of memory");
  void *all = NULL;
  eddy_err_t err = c->barrier(c->ctx, why, sizeof why);
  if (!err) err = c->gather(c->ctx, rec, strlen(rec), &all, rk->gathered_sizes, why, sizeof why);
  free(rec);
  if (err) return fail_round(t, err, "gathering the positions", why);
  if (rk->rank == 0) {
    char first[17] = "", bad[256] = "";
    size_t off = 0;
    for (int r = 0; r < rk->ranks; off += rk->gathered_sizes[r], r++) {
      cJSON *o = cJSON_ParseWithLength((const char *)all + off, rk->gathered_sizes[r]);
      const cJSON *sum = o ? cJSON_GetObjectItemCaseSensitive(o, "xxh3") : NULL;
      const char *s = cJSON_IsString(sum) ? sum->valuestring : "";
      if (r == 0) snprintf(first, sizeof first, "%s", s);
      else if (!bad[0] && (strcmp(s, first) || !s[0]))
        snprintf(bad, sizeof bad, "rank %d's weights hash to %s, rank 0's to %s", r, s[0] ? s : "(unread)", first);
      cJSON_Delete(o);
    }
    if (bad[0]) {
      free(all);
      snprintf(why, sizeof why, "the ranks' weights differ at step %" PRIu64 ": %s", eddy_learner_step_count(t->learner),
               bad);
      return fail_round(t, EDDY_ERR_STATE, "checking the weights", why);
    }
    rk->gathered = all;
    trainer_write_candidate(t, ticket);
    rk->gathered = NULL;
  }
  free(all);
  return EDDY_OK;
}

/* Every rank adopts the version of rank 0's retrain rollback: rank 0's restored state, the
 * version's positions; whatever was accumulated this round is dropped. */
static eddy_err_t resync_round(eddy_trainer_t *t) {
  trainer_ranks_t *rk = &t->rk;
  char *text = NULL, why[1024];
  size_t len = 0;
  if (rk->rank == 0) {
    pthread_mutex_lock(&t->mu);
    text = rk->resync;
    rk->resync = NULL;
    pthread_mutex_unlock(&t->mu);
    len = text ? strlen(text) : 0;
  }
  eddy_err_t err = eddy_collective_bcast_bytes(rk->coll, 0, &text, &len, why, sizeof why);
  if (err) {
    free(text);
    return fail_round(t, err, "the rollback's manifest", why);
  }
  eddy_manifest_t m;
  eddy_manifest_init(&m);
  err = eddy_manifest_parse(text ? text : "", len, &m, why, sizeof why);
  free(text);
  if (!err) err = eddy_learner_sync_state(t->learner, 0, why, sizeof why);
  if (!err) err = adopt(t, &m, true, why, sizeof why);
  if (!err) {
    t->examples = m.examples;
    t->parent = m.version;
    t->skipped_run = 0;
    t->idle_done = 0;
    t->last_pub_step = eddy_learner_step_count(t->learner);
    t->last_pub_time = eddy_clock_mono_s();
    trainer_publish_status(t);
    EDDY_INFO(LOG_MOD, "retrain rollback to v%06" PRIu64 ": every rank restarts from it (this one at buffer seq %" PRIu64
                       ")", m.version, t->cursor);
  }
  eddy_manifest_clear(&m);
  return err ? fail_round(t, err, "adopting the rollback", why) : EDDY_OK;
}

/* This rank's record of the round: counts of what it accumulated, its ingest and buffer. */
static void fill_record(eddy_trainer_t *t, trainer_round_t *me, const trainer_acc_t *acc) {
  me->fresh = acc->fresh_n;
  me->replay = acc->replay_n;
  me->read_any = acc->read_any;
  me->loss_bad = (acc->fresh_n + acc->replay_n) > 0 && !isfinite(acc->loss);
  if (t->ingest) {
    eddy_ingest_stats_t is = eddy_ingest_stats(t->ingest);
    me->has_ingest = 1;
    me->ingest_ok = is.events_ok;
    me->ingest_invalid = is.events_invalid;
    me->lag = is.lag >= 0 ? (uint64_t)is.lag + 1 : 0;
    me->assigned = is.assigned;
  }
  eddy_replay_stats_t bs = eddy_replay_stats(t->buffer);
  me->buffer_events = bs.events;
  me->cursor = t->cursor;
  me->next_seq = bs.next_seq;
  me->examples = t->rk.examples;
  me->stale = t->rk.stale;
  me->buffer_failing = eddy_replay_write_status(t->buffer, NULL, 0) != EDDY_OK;
}

/* Rank 0 at the start of a round: parks for a rollback, reads pause, a rollback to adopt, and
 * decides whether this round ends with a candidate (a snapshot request or the schedule, as with one
 * rank). Every rank: whether it stops. *ticket: the snapshot request a candidate answers. */
static void round_start(eddy_trainer_t *t, trainer_round_t *me, uint64_t *ticket) {
  trainer_ranks_t *rk = &t->rk;
  const eddy_config_t *c = &t->cfg;
  bool busy = true, degraded = true;
  *ticket = 0;
  pthread_mutex_lock(&t->mu);
  while (rk->rank == 0 && t->hold_count > 0 && !t->stop) {
    if (!t->parked) {
      t->parked = true;
      pthread_cond_broadcast(&t->parked_cv);
    }
    pthread_cond_wait(&t->cv, &t->mu);
  }
  t->parked = false;
  me->stop = t->stop;
  if (rk->rank == 0) {
    me->paused = t->paused;
    me->resync = rk->resync != NULL;
    *ticket = t->snap_requested > t->snap_taken ? t->snap_requested : 0;
    busy = t->pub_busy;
    degraded = t->degraded;
    if (*ticket && degraded) {
      t->snap_taken = t->snap_done = *ticket;
      t->snap_err = EDDY_ERR_STATE;
      snprintf(t->snap_msg, sizeof t->snap_msg, "trainer degraded (%s): publishing stopped", t->degraded_why);
      pthread_cond_broadcast(&t->done_cv);
      *ticket = 0;
    }
  }
  pthread_mutex_unlock(&t->mu);
  if (rk->rank != 0 || busy || degraded || me->resync || me->stop) return;
  uint64_t step = eddy_learner_step_count(t->learner);
  double now = eddy_clock_mono_s();
  me->due = *ticket || (c->snapshot_every_steps && step - t->last_pub_step >= c->snapshot_every_steps) ||
            (c->snapshot_every_seconds && step > t->last_pub_step &&
             now - t->last_pub_time >= c->snapshot_every_seconds);
}

void *trainer_ranks_train_main(void *arg) {
  eddy_trainer_t *t = arg;
  trainer_ranks_t *rk = &t->rk;
  const eddy_collective_t *c = rk->coll;
  const size_t n = (size_t)rk->ranks;
  trainer_round_t *all = calloc(n, sizeof *all);
  size_t *sizes = calloc(n, sizeof *sizes);
  bool stopped = false;
  char why[512];
  if (!all || !sizes) {
    trainer_set_fatal(t, EDDY_ERR_NOMEM, "training stopped: ranks: out of memory");
    goto out;
  }
  for (;;) {
    trainer_round_t me = {0};
    uint64_t ticket = 0;
    round_start(t, &me, &ticket);
    trainer_acc_t acc = {0};
    if (!me.stop && !me.paused && !me.resync && !rk->paused_all && trainer_accumulate(t, &acc) < 0) break;
    fill_record(t, &me, &acc);
    void *buf = NULL;
    eddy_err_t err = c->barrier(c->ctx, why, sizeof why); /* the wait for the slower ranks: no spinning */
    if (!err) err = c->gather(c->ctx, &me, sizeof me, &buf, sizes, why, sizeof why);
    if (err) {
      free(buf);
      fail_round(t, err, "the round's records", why);
      break;
    }
    memcpy(all, buf, n * sizeof *all); /* every record is sizeof me bytes: the same build */
    free(buf);
    uint64_t fresh = 0, replay = 0;
    bool stop = false, read_any = false, loss_bad = false;
    for (size_t r = 0; r < n; r++) {
      fresh += all[r].fresh;
      replay += all[r].replay;
      stop = stop || all[r].stop;
      read_any = read_any || all[r].read_any;
      loss_bad = loss_bad || all[r].loss_bad;
    }
    rk->paused_all = all[0].paused;
    if (rk->rank == 0) {
      pthread_mutex_lock(&t->mu);
      memcpy(rk->last, all, n * sizeof *all);
      pthread_mutex_unlock(&t->mu);
    }
    if (stop) {
      stopped = true;
      break;
    }
    if (all[0].resync) {
      if (resync_round(t)) break;
      continue;
    }
    if (fresh + replay > 0) {
      uint64_t before = t->examples;
      if (trainer_apply(t, fresh, replay, loss_bad ? NAN : acc.loss) < 0) break;
      if (t->examples != before) rk->examples += acc.fresh_n;
    }
    if (all[0].due && candidate_round(t, ticket)) break;
    if (!fresh && !replay && !read_any) trainer_wait_ms(t, TRAINER_IDLE_WAIT_MS);
  }
out:
  free(all);
  free(sizes);
  pthread_mutex_lock(&t->mu);
  t->train_running = false;
  t->parked = false;
  rk->stopped = stopped;
  pthread_cond_broadcast(&t->parked_cv);
  pthread_cond_broadcast(&t->done_cv);
  pthread_mutex_unlock(&t->mu);
  return NULL;
}

/* ---- status ---- */

void trainer_ranks_status(eddy_trainer_t *t, cJSON *o) {
  trainer_ranks_t *rk = &t->rk;
  if (!rk->coll) return;
  cJSON *me = cJSON_AddObjectToObject(o, "rank");
  if (me) {
    cJSON_AddNumberToObject(me, "rank", rk->rank);
    cJSON_AddNumberToObject(me, "ranks", rk->ranks);
    cJSON_AddNumberToObject(me, "local_rank", rk->local_rank);
  }
  cJSON *arr = cJSON_AddArrayToObject(o, "ranks");
  if (!arr || rk->rank != 0) return;
  pthread_mutex_lock(&t->mu);
  for (int r = 0; r < rk->ranks; r++) {
    const trainer_round_t *x = &rk->last[r];
    cJSON *e = cJSON_CreateObject();
    if (!e) break;
    cJSON_AddItemToArray(arr, e);
    cJSON_AddNumberToObject(e, "rank", r);
    cJSON *ing = cJSON_AddObjectToObject(e, "ingest");
    if (ing && x->has_ingest) {
      cJSON_AddNumberToObject(ing, "ok", (double)x->ingest_ok);
      cJSON_AddNumberToObject(ing, "invalid", (double)x->ingest_invalid);
      if (x->lag) cJSON_AddNumberToObject(ing, "lag", (double)(x->lag - 1));
      else cJSON_AddNullToObject(ing, "lag");
      cJSON_AddNumberToObject(ing, "assigned", (double)x->assigned);
    } else if (ing) {
      cJSON_AddBoolToObject(ing, "enabled", false);
    }
    cJSON *b = cJSON_AddObjectToObject(e, "buffer");
    if (b) {
      cJSON_AddNumberToObject(b, "events", (double)x->buffer_events);
      cJSON_AddNumberToObject(b, "cursor", (double)x->cursor);
      cJSON_AddNumberToObject(b, "next_seq", (double)x->next_seq);
      cJSON_AddNumberToObject(b, "untrained", (double)(x->next_seq > x->cursor ? x->next_seq - x->cursor : 0));
      cJSON_AddBoolToObject(b, "writes_failing", x->buffer_failing != 0);
    }
    cJSON_AddNumberToObject(e, "examples", (double)x->examples);
    cJSON_AddNumberToObject(e, "foreign_events", (double)x->stale);
  }
  pthread_mutex_unlock(&t->mu);
}

void trainer_ranks_ingest_totals(eddy_trainer_t *t, eddy_ingest_stats_t *is) {
  trainer_ranks_t *rk = &t->rk;
  if (!rk->coll || rk->rank != 0) return;
  uint64_t ok = 0, invalid = 0;
  int64_t lag = 0;
  pthread_mutex_lock(&t->mu);
  for (int r = 0; r < rk->ranks; r++) {
    const trainer_round_t *x = &rk->last[r];
    ok += x->ingest_ok;
    invalid += x->ingest_invalid;
    if (lag >= 0) lag = x->lag ? lag + (int64_t)(x->lag - 1) : -1;
  }
  pthread_mutex_unlock(&t->mu);
  is->events_ok = ok;
  is->events_invalid = invalid;
  is->lag = lag;
}

bool trainer_ranks_buffers_failing(eddy_trainer_t *t, const char *prefix, char *why, size_t why_size) {
  trainer_ranks_t *rk = &t->rk;
  if (!rk->coll || rk->rank != 0) return false;
  char list[256] = "";
  size_t used = 0, n = 0;
  pthread_mutex_lock(&t->mu);
  for (int r = 1; r < rk->ranks; r++) {
    if (!rk->last[r].buffer_failing) continue;
    if (used < sizeof list) {
      int w = snprintf(list + used, sizeof list - used, "%s%d", n ? ", " : "", r);
      used += w > 0 ? (size_t)w : 0;
    }
    n++;
  }
  pthread_mutex_unlock(&t->mu);
  if (n && why && why_size)
    snprintf(why, why_size, "%srank%s %s: writes fail (%s log has the reason)", prefix, n == 1 ? "" : "s", list,
             n == 1 ? "its" : "each one's");
  return n > 0;
}
