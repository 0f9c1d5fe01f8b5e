/* The trainer's table of inference replicas, filled by their authenticated heartbeats
 * (POST /v1/replicas/heartbeat) and shown by GET /v1/replicas and the dashboard. Bounded: at most
 * EDDY_REPLICAS_MAX entries (the one seen longest ago makes room), entries not heard from for
 * EDDY_REPLICA_DROP_MS are dropped. Thread-safe: any HTTP pool thread may call any function. */
#ifndef EDDY_REPLICAS_H
#define EDDY_REPLICAS_H

#include <stddef.h>
#include <stdint.h>

#define EDDY_REPLICAS_MAX 64
#define EDDY_REPLICA_ID_MAX 128      /* bytes of a replica id ("host:port") */
#define EDDY_REPLICA_URL_MAX 512     /* bytes of its advertised URL */
#define EDDY_REPLICA_STALE_MS 10000  /* no heartbeat for longer: stale */
#define EDDY_REPLICA_DROP_MS 300000  /* no heartbeat for longer: forgotten */
#define EDDY_REPLICA_WHY_MAX 512     /* bytes of the reason for its precision */

/* One heartbeat, as a replica sends it (docs/admin-api.md). */
typedef struct {
  char id[EDDY_REPLICA_ID_MAX + 1];
  char url[EDDY_REPLICA_URL_MAX + 1];
  uint64_t version;          /* 0: none loaded yet (JSON null) */
  int64_t loaded_at_ms;      /* < 0: null */
  double freshness_seconds;  /* NaN: null */
  uint64_t predictions;
  uint64_t refusals;
  char state[16];            /* "serving" | "waiting" */
  char precision[8];         /* what requests without a choice run at: fp32, bf16, fp16, int8; "" = not said */
  char precision_why[EDDY_REPLICA_WHY_MAX + 1]; /* why ("auto: int8, ...", "load: ...") */
} eddy_replica_beat_t;

typedef struct {
  size_t fresh, stale;       /* entries by age against EDDY_REPLICA_STALE_MS */
  double freshness_seconds;  /* of the fresh entry heard from last among those reporting one;
                                NaN when none does */
} eddy_replicas_summary_t;

typedef struct eddy_replicas eddy_replicas_t;

eddy_replicas_t *eddy_replicas_new(void); /* NULL on allocation failure */
void eddy_replicas_destroy(eddy_replicas_t *r); /* NULL is a no-op */

/* Records a heartbeat received at now_ms (unix ms): updates the entry with the same id, or adds
 * one, evicting the entry seen longest ago when the table is full. */
void eddy_replicas_beat(eddy_replicas_t *r, const eddy_replica_beat_t *beat, int64_t now_ms);

/* {"replicas": [{heartbeat fields..., "last_seen_ms", "age_seconds", "stale"}, ...]} sorted by
 * id, after dropping entries older than EDDY_REPLICA_DROP_MS; NUL-terminated, caller frees.
 * NULL on allocation failure. */
char *eddy_replicas_json(eddy_replicas_t *r, int64_t now_ms);

/* Counts and the newest freshness at now_ms (drops old entries first). */
eddy_replicas_summary_t eddy_replicas_summary(eddy_replicas_t *r, int64_t now_ms);

#endif
