/* The replica table: a fixed array of EDDY_REPLICAS_MAX entries under one mutex. Heartbeats
 * replace an entry by id; a new id takes a free slot or the slot of the entry seen longest ago.
 * Readers drop entries past EDDY_REPLICA_DROP_MS before answering, so nothing grows. */
#include "train/replicas.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

typedef struct {
  bool used;
  eddy_replica_beat_t beat;
  int64_t last_seen_ms;
} replica_entry_t;

struct eddy_replicas {
  pthread_mutex_t mu;
  replica_entry_t e[EDDY_REPLICAS_MAX];
};

eddy_replicas_t *eddy_replicas_new(void) {
  eddy_replicas_t *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  if (pthread_mutex_init(&r->mu, NULL) != 0) {
    free(r);
    return NULL;
  }
  return r;
}

void eddy_replicas_destroy(eddy_replicas_t *r) {
  if (!r) return;
  pthread_mutex_destroy(&r->mu);
  free(r);
}

/* Caller holds mu. */
static void drop_old(eddy_replicas_t *r, int64_t now_ms) {
  for (size_t i = 0; i < EDDY_REPLICAS_MAX; i++)
    if (r->e[i].used && now_ms - r->e[i].last_seen_ms > EDDY_REPLICA_DROP_MS) r->e[i].used = false;
}

void eddy_replicas_beat(eddy_replicas_t *r, const eddy_replica_beat_t *beat, int64_t now_ms) {
  if (!r || !beat) return;
  pthread_mutex_lock(&r->mu);
  drop_old(r, now_ms);
  replica_entry_t *slot = NULL, *free_slot = NULL, *oldest = NULL;
  for (size_t i = 0; i < EDDY_REPLICAS_MAX && !slot; i++) {
    replica_entry_t *e = &r->e[i];
    if (!e->used) {
      if (!free_slot) free_slot = e;
    } else if (strcmp(e->beat.id, beat->id) == 0) {
      slot = e;
    } else if (!oldest || e->last_seen_ms < oldest->last_seen_ms) {
      oldest = e;
    }
  }
  if (!slot) slot = free_slot ? free_slot : oldest;
  slot->used = true;
  slot->beat = *beat;
  slot->last_seen_ms = now_ms;
  pthread_mutex_unlock(&r->mu);
}

static int by_id(const void *a, const void *b) {
  return strcmp(((const replica_entry_t *)a)->beat.id, ((const replica_entry_t *)b)->beat.id);
}

static void add_u64_or_null(cJSON *o, const char *key, uint64_t v, bool null) {
  if (null) cJSON_AddNullToObject(o, key);
  else cJSON_AddNumberToObject(o, key, (double)v);
}

char *eddy_replicas_json(eddy_replicas_t *r, int64_t now_ms) {
  if (!r) return NULL;
  replica_entry_t copy[EDDY_REPLICAS_MAX];
  size_t n = 0;
  pthread_mutex_lock(&r->mu);
  drop_old(r, now_ms);
  for (size_t i = 0; i < EDDY_REPLICAS_MAX; i++)
    if (r->e[i].used) copy[n++] = r->e[i];
  pthread_mutex_unlock(&r->mu);
  qsort(copy, n, sizeof copy[0], by_id);
  cJSON *root = cJSON_CreateObject();
  cJSON *list = root ? cJSON_AddArrayToObject(root, "replicas") : NULL;
  if (!list) {
    cJSON_Delete(root);
    return NULL;
  }
  for (size_t i = 0; i < n; i++) {
    const eddy_replica_beat_t *b = &copy[i].beat;
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddItemToArray(list, o)) {
      cJSON_Delete(o);
      cJSON_Delete(root);
      return NULL;
    }
    cJSON_AddStringToObject(o, "id", b->id);
    cJSON_AddStringToObject(o, "url", b->url);
    add_u64_or_null(o, "version", b->version, b->version == 0);
    add_u64_or_null(o, "loaded_at_ms", (uint64_t)b->loaded_at_ms, b->loaded_at_ms < 0);
    if (isfinite(b->freshness_seconds))
      cJSON_AddNumberToObject(o, "freshness_seconds", b->freshness_seconds);
    else
      cJSON_AddNullToObject(o, "freshness_seconds");
    cJSON_AddNumberToObject(o, "predictions", (double)b->predictions);
    cJSON_AddNumberToObject(o, "refusals", (double)b->refusals);
    cJSON_AddStringToObject(o, "state", b->state);
    if (b->precision[0]) cJSON_AddStringToObject(o, "precision", b->precision);
    else cJSON_AddNullToObject(o, "precision");
    cJSON_AddStringToObject(o, "precision_why", b->precision_why);
    int64_t age_ms = now_ms - copy[i].last_seen_ms;
    if (age_ms < 0) age_ms = 0;
    cJSON_AddNumberToObject(o, "last_seen_ms", (double)copy[i].last_seen_ms);
    cJSON_AddNumberToObject(o, "age_seconds", (double)age_ms / 1000.0);
    cJSON_AddBoolToObject(o, "stale", age_ms > EDDY_REPLICA_STALE_MS);
  }
  char *text = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  return text;
}

eddy_replicas_summary_t eddy_replicas_summary(eddy_replicas_t *r, int64_t now_ms) {
  eddy_replicas_summary_t s = {0, 0, NAN};
  if (!r) return s;
  int64_t newest = INT64_MIN;
  pthread_mutex_lock(&r->mu);
  drop_old(r, now_ms);
  for (size_t i = 0; i < EDDY_REPLICAS_MAX; i++) {
    const replica_entry_t *e = &r->e[i];
    if (!e->used) continue;
    if (now_ms - e->last_seen_ms > EDDY_REPLICA_STALE_MS) {
      s.stale++;
      continue;
    }
    s.fresh++;
    if (isfinite(e->beat.freshness_seconds) && e->last_seen_ms > newest) {
      newest = e->last_seen_ms;
      s.freshness_seconds = e->beat.freshness_seconds;
    }
  }
  pthread_mutex_unlock(&r->mu);
  return s;
}
