/* The dashboard's data structures and assets without a server: the replica table (update by id,
 * stale after 10 s, dropped after 5 min, the oldest evicted past 64 entries, freshness of the
 * newest fresh heartbeat), the time-series ring (wrap-around, since_ms, null for NaN, rounding),
 * and the embedded assets (content types, no URL that would make the page load anything from
 * the network, every /assets/ reference of index.html resolvable). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "http/assets.h"
#include "train/replicas.h"
#include "train/timeseries.h"

#define T0 1764300000000LL /* a unix time in ms */

static eddy_replica_beat_t beat(const char *id, uint64_t version, double freshness) {
  eddy_replica_beat_t b;
  memset(&b, 0, sizeof b);
  snprintf(b.id, sizeof b.id, "%s", id);
  snprintf(b.url, sizeof b.url, "http://%s", id);
  b.version = version;
  b.loaded_at_ms = version ? T0 - 500 : -1;
  b.freshness_seconds = freshness;
  b.predictions = version * 10;
  snprintf(b.state, sizeof b.state, "%s", version ? "serving" : "waiting");
  return b;
}

/* GET /v1/replicas's body for r at now as a parsed list (caller deletes the root in *root). */
static const cJSON *replica_list(eddy_replicas_t *r, int64_t now, cJSON **root) {
  char *text = eddy_replicas_json(r, now);
  assert_non_null(text);
  *root = cJSON_Parse(text);
  free(text);
  assert_non_null(*root);
  const cJSON *list = cJSON_GetObjectItemCaseSensitive(*root, "replicas");
  assert_true(cJSON_IsArray(list));
  return list;
}

static void test_replicas_update_and_shape(void **state) {
  (void)state;
  eddy_replicas_t *r = eddy_replicas_new();
  assert_non_null(r);
  eddy_replica_beat_t b = beat("127.0.0.1:9002", 0, NAN);
  eddy_replicas_beat(r, &b, T0);
  b = beat("127.0.0.1:9001", 3, 1.5);
  eddy_replicas_beat(r, &b, T0 + 1000);
  b = beat("127.0.0.1:9002", 4, 0.25); /* same id: an update, not a new entry */
  eddy_replicas_beat(r, &b, T0 + 2000);
  cJSON *root;
  const cJSON *list = replica_list(r, T0 + 4500, &root);
  assert_int_equal(cJSON_GetArraySize(list), 2);
  const cJSON *a = cJSON_GetArrayItem(list, 0), *c = cJSON_GetArrayItem(list, 1);
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(a, "id")->valuestring, "127.0.0.1:9001");
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(c, "id")->valuestring, "127.0.0.1:9002");
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(c, "url")->valuestring, "http://127.0.0.1:9002");
  assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(c, "version")->valuedouble, 4);
  assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(c, "predictions")->valuedouble, 40);
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(c, "state")->valuestring, "serving");
  assert_true(fabs(cJSON_GetObjectItemCaseSensitive(c, "freshness_seconds")->valuedouble - 0.25) < 1e-12);
  assert_true(cJSON_GetObjectItemCaseSensitive(c, "last_seen_ms")->valuedouble == (double)(T0 + 2000));
  assert_true(fabs(cJSON_GetObjectItemCaseSensitive(c, "age_seconds")->valuedouble - 2.5) < 1e-9);
  assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(c, "stale")));
  assert_int_equal((long long)cJSON_GetObjectItemCaseSensitive(c, "loaded_at_ms")->valuedouble, T0 - 500);
  assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(c, "refusals")));
  cJSON_Delete(root);

  /* A replica that has loaded nothing: version, loaded_at_ms and freshness are null. */
  b = beat("w", 0, NAN);
  eddy_replicas_beat(r, &b, T0 + 3000);
  list = replica_list(r, T0 + 3000, &root);
  a = cJSON_GetArrayItem(list, 2);
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(a, "id")->valuestring, "w");
  assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(a, "version")));
  assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(a, "loaded_at_ms")));
  assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(a, "freshness_seconds")));
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(a, "state")->valuestring, "waiting");
  cJSON_Delete(root);
  eddy_replicas_destroy(r);
  eddy_replicas_destroy(NULL);
}

static void test_replicas_stale_drop_summary(void **state) {
  (void)state;
  eddy_replicas_t *r = eddy_replicas_new();
  eddy_replica_beat_t b = beat("a", 1, 4.0);
  eddy_replicas_beat(r, &b, T0);
  b = beat("b", 2, 2.0);
  eddy_replicas_beat(r, &b, T0 + 3000);
  b = beat("c", 2, NAN); /* the newest, but without a freshness */
  eddy_replicas_beat(r, &b, T0 + 4000);

  eddy_replicas_summary_t s = eddy_replicas_summary(r, T0 + 5000);
  assert_int_equal(s.fresh, 3);
  assert_int_equal(s.stale, 0);
  assert_true(s.freshness_seconds == 2.0); /* b: the newest fresh one that reports it */

  /* 10 s is still fresh, 10.001 s is stale. */
  s = eddy_replicas_summary(r, T0 + EDDY_REPLICA_STALE_MS);
  assert_int_equal(s.fresh, 3);
  s = eddy_replicas_summary(r, T0 + EDDY_REPLICA_STALE_MS + 1);
  assert_int_equal(s.fresh, 2);
  assert_int_equal(s.stale, 1);
  cJSON *root;
  const cJSON *list = replica_list(r, T0 + EDDY_REPLICA_STALE_MS + 1, &root);
  assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(list, 0), "stale")));
  assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(list, 1), "stale")));
  cJSON_Delete(root);

  /* All stale: no freshness. */
  s = eddy_replicas_summary(r, T0 + 4000 + EDDY_REPLICA_STALE_MS + 1);
  assert_int_equal(s.fresh, 0);
  assert_int_equal(s.stale, 3);
  assert_true(isnan(s.freshness_seconds));

  /* Past 5 minutes an entry is gone; a new heartbeat brings it back. */
  list = replica_list(r, T0 + EDDY_REPLICA_DROP_MS + 3500, &root);
  assert_int_equal(cJSON_GetArraySize(list), 1); /* only c (seen at T0 + 4000) is left */
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(list, 0), "id")->valuestring, "c");
  cJSON_Delete(root);
  s = eddy_replicas_summary(r, T0 + EDDY_REPLICA_DROP_MS + 5000);
  assert_int_equal(s.fresh + s.stale, 0);
  eddy_replicas_destroy(r);
}

static void test_replicas_capacity(void **state) {
  (void)state;
  eddy_replicas_t *r = eddy_replicas_new();
  char id[32];
  for (int i = 0; i < EDDY_REPLICAS_MAX + 6; i++) {
    snprintf(id, sizeof id, "r%03d", i);
    eddy_replica_beat_t b = beat(id, 1, 1.0);
    /* r001 keeps beating, so it is never the oldest. */
    eddy_replicas_beat(r, &b, T0 + i * 10);
    if (i > 1) {
      eddy_replica_beat_t keep = beat("r001", 1, 1.0);
      eddy_replicas_beat(r, &keep, T0 + i * 10 + 5);
    }
  }
  cJSON *root;
  const cJSON *list = replica_list(r, T0 + 2000, &root);
  assert_int_equal(cJSON_GetArraySize(list), EDDY_REPLICAS_MAX);
  bool seen_r000 = false, seen_r001 = false, seen_last = false;
  const cJSON *e;
  cJSON_ArrayForEach(e, list) {
    const char *s = cJSON_GetObjectItemCaseSensitive(e, "id")->valuestring;
    seen_r000 |= strcmp(s, "r000") == 0;
    seen_r001 |= strcmp(s, "r001") == 0;
    seen_last |= strcmp(s, "r069") == 0;
  }
  assert_false(seen_r000); /* evicted: seen longest ago */
  assert_true(seen_r001);
  assert_true(seen_last);
  cJSON_Delete(root);
  assert_int_equal(eddy_replicas_summary(r, T0 + 2000).fresh, EDDY_REPLICAS_MAX);
  eddy_replicas_destroy(r);
}

static eddy_ts_point_t point(int64_t t, double base) {
  eddy_ts_point_t p;
  p.t_ms = t;
  for (int s = 0; s < EDDY_TS_COUNT; s++) p.v[s] = base + s;
  return p;
}

static cJSON *ts_json(eddy_timeseries_t *ts, int64_t since) {
  char *text = eddy_timeseries_json(ts, since);
  assert_non_null(text);
  cJSON *j = cJSON_Parse(text);
  free(text);
  assert_non_null(j);
  return j;
}

static void test_timeseries_ring(void **state) {
  (void)state;
  eddy_timeseries_t *ts = eddy_timeseries_new(5, 1000);
  assert_non_null(ts);
  cJSON *j = ts_json(ts, -1);
  assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(j, "interval_ms")->valuedouble, 1000);
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "t")), 0);
  const cJSON *series = cJSON_GetObjectItemCaseSensitive(j, "series");
  assert_int_equal(cJSON_GetArraySize(series), EDDY_TS_COUNT);
  for (int s = 0; s < EDDY_TS_COUNT; s++)
    assert_true(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(series, eddy_timeseries_name(s))));
  cJSON_Delete(j);
  assert_null(eddy_timeseries_name(EDDY_TS_COUNT));
  assert_string_equal(eddy_timeseries_name(EDDY_TS_INGEST_RATE), "ingest_rate");
  assert_string_equal(eddy_timeseries_name(EDDY_TS_FRESHNESS), "freshness");

  /* 8 points into a ring of 5: the newest 5 remain, oldest first. */
  for (int i = 0; i < 8; i++) {
    eddy_ts_point_t p = point(T0 + i * 1000, i * 100);
    if (i == 6) p.v[EDDY_TS_FRESHNESS] = NAN;
    if (i == 7) p.v[EDDY_TS_LOGLOSS] = 0.123456789;
    eddy_timeseries_add(ts, &p);
  }
  assert_int_equal(eddy_timeseries_count(ts), 5);
  j = ts_json(ts, -1);
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "t");
  assert_int_equal(cJSON_GetArraySize(t), 5);
  assert_true(cJSON_GetArrayItem(t, 0)->valuedouble == (double)(T0 + 3000));
  assert_true(cJSON_GetArrayItem(t, 4)->valuedouble == (double)(T0 + 7000));
  series = cJSON_GetObjectItemCaseSensitive(j, "series");
  const cJSON *lag = cJSON_GetObjectItemCaseSensitive(series, "consumer_lag");
  assert_int_equal(cJSON_GetArraySize(lag), 5);
  assert_true(cJSON_GetArrayItem(lag, 0)->valuedouble == 300 + EDDY_TS_CONSUMER_LAG);
  const cJSON *fresh = cJSON_GetObjectItemCaseSensitive(series, "freshness");
  assert_true(cJSON_IsNull(cJSON_GetArrayItem(fresh, 3)));
  assert_true(cJSON_IsNumber(cJSON_GetArrayItem(fresh, 4)));
  const cJSON *ll = cJSON_GetObjectItemCaseSensitive(series, "logloss");
  assert_true(cJSON_GetArrayItem(ll, 4)->valuedouble == 0.123457); /* 6 significant digits */
  cJSON_Delete(j);

  /* since_ms: only later points. */
  j = ts_json(ts, T0 + 5000);
  t = cJSON_GetObjectItemCaseSensitive(j, "t");
  assert_int_equal(cJSON_GetArraySize(t), 2);
  assert_true(cJSON_GetArrayItem(t, 0)->valuedouble == (double)(T0 + 6000));
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(
                       cJSON_GetObjectItemCaseSensitive(j, "series"), "version")),
                   2);
  cJSON_Delete(j);
  j = ts_json(ts, T0 + 7000);
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "t")), 0);
  cJSON_Delete(j);
  eddy_timeseries_destroy(ts);
  eddy_timeseries_destroy(NULL);

  /* Defaults. */
  ts = eddy_timeseries_new(0, 0);
  for (int i = 0; i < EDDY_TIMESERIES_CAPACITY + 10; i++) {
    eddy_ts_point_t p = point(T0 + i, 1);
    eddy_timeseries_add(ts, &p);
  }
  assert_int_equal(eddy_timeseries_count(ts), EDDY_TIMESERIES_CAPACITY);
  j = ts_json(ts, -1);
  assert_int_equal((int)cJSON_GetObjectItemCaseSensitive(j, "interval_ms")->valuedouble,
                   EDDY_TIMESERIES_INTERVAL_MS);
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "t")), EDDY_TIMESERIES_CAPACITY);
  cJSON_Delete(j);
  eddy_timeseries_destroy(ts);
}

/* text without its comments: JS and CSS block comments, HTML comments (malloc'ed). Line comments
 * are left alone: a "//" inside a URL would be taken for one. */
static char *strip_comments(const char *text, size_t len, bool html) {
  char *out = malloc(len + 1);
  assert_non_null(out);
  const char *open = html ? "<!--" : "/*", *close = html ? "-->" : "*/";
  size_t o = 0;
  for (size_t i = 0; i < len;) {
    if (strncmp(text + i, open, strlen(open)) == 0) {
      const char *end = strstr(text + i + strlen(open), close);
      if (!end) break;
      i = (size_t)(end - text) + strlen(close);
      continue;
    }
    out[o++] = text[i++];
  }
  out[o] = '\0';
  return out;
}

static void test_assets(void **state) {
  (void)state;
  static const struct {
    const char *name, *type;
  } want[] = {
      {"index.html", "text/html; charset=utf-8"},
      {"app.js", "text/javascript; charset=utf-8"},
      {"style.css", "text/css; charset=utf-8"},
      {"uPlot.iife.min.js", "text/javascript; charset=utf-8"},
      {"uPlot.min.css", "text/css; charset=utf-8"},
      {"uPlot.LICENSE.txt", "text/plain; charset=utf-8"},
  };
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    const eddy_asset_t *a = eddy_assets_find(want[i].name);
    if (!a) fprintf(stderr, "asset %s is not embedded\n", want[i].name);
    assert_non_null(a);
    assert_string_equal(a->content_type, want[i].type);
    assert_true(a->len > 100);
    assert_int_equal(a->data[a->len], 0);
    assert_true(strlen(a->etag) > 8 && a->etag[0] == '"');
  }
  assert_null(eddy_assets_find("../CMakeLists.txt"));
  assert_null(eddy_assets_find(""));
  assert_null(eddy_assets_find(NULL));
  assert_non_null(strstr((const char *)eddy_assets_find("uPlot.iife.min.js")->data, "uPlot"));
  assert_non_null(strstr((const char *)eddy_assets_find("uPlot.LICENSE.txt")->data, "MIT"));

  /* Offline: outside comments (the uPlot license header names its home page) no asset holds an
   * http:// or https:// URL, nor a protocol-relative one in a src/href. */
  assert_true(eddy_assets_count() >= 6);
  for (size_t i = 0; i < eddy_assets_count(); i++) {
    const eddy_asset_t *a = eddy_assets_at(i);
    bool html = strstr(a->name, ".html") != NULL;
    bool code = html || strstr(a->name, ".js") || strstr(a->name, ".css");
    if (!code) continue;
    char *text = strip_comments((const char *)a->data, a->len, html);
    const char *bad[] = {"http://", "https://", "src=\"//", "href=\"//", "url(//", "@import"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
      const char *hit = strstr(text, bad[k]);
      if (hit) fprintf(stderr, "%s: \"%.60s\"\n", a->name, hit);
      assert_null(hit);
    }
    free(text);
  }
  assert_null(eddy_assets_at(eddy_assets_count()));

  /* Every /assets/ reference of the page is embedded. */
  const char *page = (const char *)eddy_assets_find("index.html")->data;
  int refs = 0;
  for (const char *p = strstr(page, "/assets/"); p; p = strstr(p + 1, "/assets/")) {
    char name[64];
    size_t n = strcspn(p + 8, "\"'");
    assert_true(n < sizeof name);
    memcpy(name, p + 8, n);
    name[n] = '\0';
    if (!eddy_assets_find(name)) fprintf(stderr, "index.html names /assets/%s, not embedded\n", name);
    assert_non_null(eddy_assets_find(name));
    refs++;
  }
  assert_int_equal(refs, 4); /* two stylesheets, two scripts */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_replicas_update_and_shape),
      cmocka_unit_test(test_replicas_stale_drop_summary),
      cmocka_unit_test(test_replicas_capacity),
      cmocka_unit_test(test_timeseries_ring),
      cmocka_unit_test(test_assets),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
