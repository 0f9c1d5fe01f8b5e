/* HTTP server: routing (404, 405 + Allow, path and query parameters, wildcard), bearer auth (401,
 * 403 without a configured token), body caps on Content-Length and on chunked uploads (413),
 * bodies and streamed files delivered byte-exact, concurrent clients, bind errors, the token file
 * loader and a shutdown that waits for a request in flight. libcurl is the client, on loopback. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <curl/curl.h>

#include "core/clock.h"
#include "http/server.h"
#include "testutil.h"

#define TOKEN "s3cret-token_42"
#define CAP (256u * 1024)

static char errstr[512];

/* ---- handlers ---- */

static int h_hello(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  (void)ctx;
  (void)req;
  return eddy_http_resp_body(resp, "text/plain", "hello", 5);
}

static int h_echo(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  (void)ctx;
  size_t len = 0;
  const char *body = eddy_http_req_body(req, &len);
  char n[32];
  snprintf(n, sizeof n, "%zu", len);
  eddy_http_resp_header(resp, "X-Body-Len", n);
  return eddy_http_resp_body(resp, "application/octet-stream", body, len);
}

static int h_ok_json(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  (void)ctx;
  (void)req;
  return eddy_http_resp_body(resp, "application/json", "{\"ok\": true}", 12);
}

static int h_snap(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  (void)ctx;
  char out[512];
  int n = snprintf(out, sizeof out, "v=%s file=%s none=%s", eddy_http_req_param(req, "v"),
                   eddy_http_req_param(req, "file"),
                   eddy_http_req_param(req, "nope") ? "set" : "null");
  return eddy_http_resp_body(resp, NULL, out, (size_t)n);
}

static int h_wild(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  (void)ctx;
  char out[512];
  int n = snprintf(out, sizeof out, "rest=[%s]", eddy_http_req_param(req, "*"));
  return eddy_http_resp_body(resp, NULL, out, (size_t)n);
}

static int h_query(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  (void)ctx;
  const char *name = eddy_http_req_query(req, "name");
  const char *flag = eddy_http_req_query(req, "flag");
  const char *missing = eddy_http_req_query(req, "missing");
  char out[512];
  int n = snprintf(out, sizeof out, "name=[%s] flag=[%s] missing=[%s]", name ? name : "NULL",
                   flag ? flag : "NULL", missing ? missing : "NULL");
  return eddy_http_resp_body(resp, NULL, out, (size_t)n);
}

static int h_model(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  (void)ctx;
  const char *t = eddy_http_req_header(req, "x-test");
  eddy_http_resp_header(resp, "X-Eddy-Version", "42");
  eddy_http_resp_status(resp, 202);
  char out[128];
  int n = snprintf(out, sizeof out, "{\"x_test\": \"%s\"}", t ? t : "none");
  return eddy_http_resp_body(resp, "application/json", out, (size_t)n);
}

static int h_file(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  const char *dir = ctx;
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, eddy_http_req_param(req, "name"));
  eddy_err_t err = eddy_http_resp_file(resp, "application/x-test", path);
  if (err == EDDY_ERR_NOT_FOUND)
    return eddy_http_resp_error(resp, 404, "no file %s", eddy_http_req_param(req, "name"));
  return err;
}

static atomic_int count_calls;
static int h_count(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  (void)ctx;
  (void)req;
  atomic_fetch_add(&count_calls, 1);
  return eddy_http_resp_body(resp, NULL, "ok", 2);
}

static int h_fail(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  (void)ctx;
  (void)req;
  eddy_http_resp_body(resp, NULL, "partial", 7); /* discarded */
  return EDDY_ERR_IO;
}

static atomic_int slow_entered;
static int h_slow(void *ctx, const eddy_http_req_t *req, eddy_http_resp_t *resp) {
  (void)ctx;
  (void)req;
  atomic_store(&slow_entered, 1);
  usleep(400 * 1000);
  return eddy_http_resp_body(resp, NULL, "slow", 4);
}

/* ---- client ---- */

typedef struct {
  char *data;
  size_t len;
} buf_t;

static size_t on_data(char *p, size_t size, size_t n, void *ud) {
  buf_t *b = ud;
  size_t add = size * n;
  char *grown = realloc(b->data, b->len + add + 1);
  if (!grown) return 0;
  b->data = grown;
  memcpy(b->data + b->len, p, add);
  b->len += add;
  b->data[b->len] = '\0';
  return add;
}

typedef struct {
  long status;
  CURLcode rc;
  buf_t body, headers;
} result_t;

static void result_free(result_t *r) {
  free(r->body.data);
  free(r->headers.data);
  memset(r, 0, sizeof *r);
}

/* Value of a response header (last occurrence), copied into out; NULL when absent. */
static const char *header_of(const result_t *r, const char *name, char *out, size_t size) {
  const char *found = NULL;
  size_t nlen = strlen(name);
  for (const char *p = r->headers.data; p && *p;) {
    const char *eol = strstr(p, "\r\n");
    if (!eol) break;
    if ((size_t)(eol - p) > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
      const char *v = p + nlen + 1;
      while (*v == ' ') v++;
      snprintf(out, size, "%.*s", (int)(eol - v), v);
      found = out;
    }
    p = eol + 2;
  }
  return found;
}

typedef struct {
  const char *method;
  const char *path;
  const char *auth; /* full Authorization value */
  const void *body;
  size_t body_len;
  int chunked;
  const char *header; /* one extra request header */
} call_t;

typedef struct {
  const char *data;
  size_t len, pos;
} reader_t;

static size_t on_read(char *p, size_t size, size_t n, void *ud) {
  reader_t *r = ud;
  size_t want = size * n, left = r->len - r->pos;
  if (want > left) want = left;
  if (want > 7000) want = 7000; /* several chunks */
  memcpy(p, r->data + r->pos, want);
  r->pos += want;
  return want;
}

static result_t do_call(CURL *c, unsigned port, const call_t *call) {
  result_t res;
  memset(&res, 0, sizeof res);
  char url[1024];
  snprintf(url, sizeof url, "http://127.0.0.1:%u%s", port, call->path);
  curl_easy_reset(c);
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &res.body);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_data);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &res.headers);
  struct curl_slist *hdrs = NULL;
  char auth[1024];
  if (call->auth) {
    snprintf(auth, sizeof auth, "Authorization: %s", call->auth);
    hdrs = curl_slist_append(hdrs, auth);
  }
  if (call->header) hdrs = curl_slist_append(hdrs, call->header);
  reader_t reader = {call->body, call->body_len, 0};
  const char *method = call->method ? call->method : "GET";
  if (strcmp(method, "GET") == 0) {
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  } else if (strcmp(method, "HEAD") == 0) {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else if (call->chunked) {
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(c, CURLOPT_READDATA, &reader);
    hdrs = curl_slist_append(hdrs, "Transfer-Encoding: chunked");
    if (strcmp(method, "POST") != 0) curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  } else {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, call->body ? call->body : "");
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->body_len);
    if (strcmp(method, "POST") != 0) curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  }
  if (hdrs) curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
  res.rc = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &res.status);
  curl_slist_free_all(hdrs);
  return res;
}

/* ---- fixture ---- */

typedef struct {
  eddy_http_t *h;
  unsigned port;
  CURL *curl;
  char *dir;
} fx_t;

static eddy_http_t *start_server(const eddy_http_opts_t *opts, const char *dir) {
  eddy_http_t *h = eddy_http_new(opts, errstr, sizeof errstr);
  assert_non_null(h);
  struct {
    const char *method, *pattern;
    unsigned flags;
    eddy_http_handler_fn fn;
    void *ctx;
  } routes[] = {
      {"GET", "/hello", 0, h_hello, NULL},
      {"POST", "/echo", 0, h_echo, NULL},
      {"POST", "/v1/pause", EDDY_HTTP_AUTH, h_ok_json, NULL},
      {"POST", "/v1/snapshots/{v}/{file}", EDDY_HTTP_AUTH, h_ok_json, NULL},
      {"GET", "/v1/snapshots/{v}/{file}", 0, h_snap, NULL},
      {"GET", "/static/*", 0, h_wild, NULL},
      {"GET", "/q", 0, h_query, NULL},
      {"GET", "/v1/model", 0, h_model, NULL},
      {"GET", "/files/{name}", 0, h_file, (void *)dir},
      {"GET", "/count", 0, h_count, NULL},
      {"GET", "/fail", 0, h_fail, NULL},
      {"GET", "/slow", 0, h_slow, NULL},
      {"GET", "/", 0, h_hello, NULL},
  };
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
    assert_int_equal(eddy_http_route(h, routes[i].method, routes[i].pattern, routes[i].flags,
                                     routes[i].fn, routes[i].ctx, errstr, sizeof errstr),
                     EDDY_OK);
  assert_int_equal(eddy_http_start(h, errstr, sizeof errstr), EDDY_OK);
  assert_true(eddy_http_port(h) > 0);
  return h;
}

static int setup(void **state) {
  fx_t *fx = calloc(1, sizeof *fx);
  fx->dir = eddy_test_tmpdir();
  eddy_http_opts_t opts = {.bind = "127.0.0.1:0", .threads = 4, .max_body_bytes = CAP,
                           .token = TOKEN};
  fx->h = start_server(&opts, fx->dir);
  fx->port = eddy_http_port(fx->h);
  fx->curl = curl_easy_init();
  *state = fx;
  return 0;
}

static int teardown(void **state) {
  fx_t *fx = *state;
  curl_easy_cleanup(fx->curl);
  eddy_http_destroy(fx->h);
  eddy_test_rmdir(fx->dir);
  free(fx);
  return 0;
}

/* The body is a JSON object {"error": "<string>"}; returns whether the string contains want. */
static int json_error_has(const result_t *r, const char *want) {
  cJSON *doc = cJSON_ParseWithLength(r->body.data ? r->body.data : "", r->body.len);
  const cJSON *e = cJSON_GetObjectItemCaseSensitive(doc, "error");
  int ok = cJSON_IsObject(doc) && cJSON_GetArraySize(doc) == 1 && cJSON_IsString(e) &&
           strstr(e->valuestring, want) != NULL;
  cJSON_Delete(doc);
  return ok;
}

static result_t get(fx_t *fx, const char *path) {
  call_t call = {.method = "GET", .path = path};
  return do_call(fx->curl, fx->port, &call);
}

/* ---- tests ---- */

static void test_get_ok(void **state) {
  fx_t *fx = *state;
  char v[256];
  result_t r = get(fx, "/hello");
  assert_int_equal(r.rc, CURLE_OK);
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body.data, "hello");
  assert_string_equal(header_of(&r, "Content-Type", v, sizeof v), "text/plain");
  result_free(&r);
  r = get(fx, "/");
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body.data, "hello");
  result_free(&r);
  call_t head = {.method = "HEAD", .path = "/hello"};
  r = do_call(fx->curl, fx->port, &head);
  assert_int_equal(r.rc, CURLE_OK);
  assert_int_equal(r.status, 200);
  assert_int_equal(r.body.len, 0);
  result_free(&r);
}

static void test_not_found(void **state) {
  fx_t *fx = *state;
  char v[256];
  const char *paths[] = {"/nope", "/hello/", "/hello/x", "//hello", "/v1/snapshots/3",
                         "/v1/snapshots/3/a/b", "/v1/snapshots//a", "/v1/snapshots/3/..",
                         "/v1/snapshots/3/%2E%2E", "/v1/snapshots/./x"};
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
    result_t r = get(fx, paths[i]);
    assert_int_equal(r.rc, CURLE_OK);
    if (r.status != 404) fail_msg("%s: status %ld", paths[i], r.status);
    assert_true(json_error_has(&r, "no such endpoint"));
    assert_string_equal(header_of(&r, "Content-Type", v, sizeof v), "application/json");
    result_free(&r);
  }
  /* decoded paths reach the message as valid UTF-8, bad bytes as U+FFFD */
  result_t r = get(fx, "/caf%C3%A9/%22q%22");
  assert_int_equal(r.status, 404);
  assert_true(json_error_has(&r, "/caf\xc3\xa9/\"q\""));
  result_free(&r);
  r = get(fx, "/x%FF%C3");
  assert_int_equal(r.status, 404);
  assert_true(json_error_has(&r, "/x\xef\xbf\xbd\xef\xbf\xbd"));
  result_free(&r);
}

static void test_method_not_allowed(void **state) {
  fx_t *fx = *state;
  char v[256];
  result_t r = get(fx, "/v1/pause"); /* a mutation: GET is 405 */
  assert_int_equal(r.status, 405);
  assert_string_equal(header_of(&r, "Allow", v, sizeof v), "POST");
  assert_true(json_error_has(&r, "method GET is not allowed on /v1/pause"));
  result_free(&r);
  call_t post = {.method = "POST", .path = "/hello", .body = "x", .body_len = 1};
  r = do_call(fx->curl, fx->port, &post);
  assert_int_equal(r.status, 405);
  assert_string_equal(header_of(&r, "Allow", v, sizeof v), "GET, HEAD");
  result_free(&r);
  call_t del = {.method = "DELETE", .path = "/v1/snapshots/1/w"};
  r = do_call(fx->curl, fx->port, &del);
  assert_int_equal(r.status, 405);
  assert_string_equal(header_of(&r, "Allow", v, sizeof v), "POST, GET, HEAD");
  result_free(&r);
  /* 405 comes before auth: no token needed to learn the method is wrong */
  call_t put = {.method = "PUT", .path = "/v1/pause"};
  r = do_call(fx->curl, fx->port, &put);
  assert_int_equal(r.status, 405);
  result_free(&r);
}

static void test_auth(void **state) {
  fx_t *fx = *state;
  char v[256];
  call_t call = {.method = "POST", .path = "/v1/pause"};
  result_t r = do_call(fx->curl, fx->port, &call);
  assert_int_equal(r.status, 401);
  assert_string_equal(header_of(&r, "WWW-Authenticate", v, sizeof v), "Bearer realm=\"eddy\"");
  assert_true(json_error_has(&r, "needs an Authorization: Bearer token"));
  result_free(&r);
  const char *wrong[] = {"Bearer wrong", "Bearer " TOKEN "x", "Bearer s3cret-token_4",
                         "Basic " TOKEN, TOKEN, "Bearer"};
  for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
    call.auth = wrong[i];
    r = do_call(fx->curl, fx->port, &call);
    if (r.status != 401) fail_msg("Authorization: %s: status %ld", wrong[i], r.status);
    assert_non_null(header_of(&r, "WWW-Authenticate", v, sizeof v));
    result_free(&r);
  }
  const char *right[] = {"Bearer " TOKEN, "bearer " TOKEN, "Bearer   " TOKEN};
  for (size_t i = 0; i < sizeof right / sizeof right[0]; i++) {
    call.auth = right[i];
    r = do_call(fx->curl, fx->port, &call);
    if (r.status != 200) fail_msg("Authorization: %s: status %ld", right[i], r.status);
    assert_string_equal(r.body.data, "{\"ok\": true}");
    result_free(&r);
  }
  /* auth comes before the size check: an oversized unauthenticated body is a 401 */
  size_t big = CAP + 1;
  char *body = calloc(1, big);
  call_t bigcall = {.method = "POST", .path = "/v1/pause", .body = body, .body_len = big};
  r = do_call(fx->curl, fx->port, &bigcall);
  assert_int_equal(r.status, 401);
  result_free(&r);
  bigcall.auth = "Bearer " TOKEN;
  r = do_call(fx->curl, fx->port, &bigcall);
  assert_int_equal(r.status, 413);
  result_free(&r);
  free(body);
}

static void test_no_token_configured(void **state) {
  (void)state;
  eddy_http_opts_t opts = {.bind = "127.0.0.1:0", .threads = 1};
  char *dir = eddy_test_tmpdir();
  eddy_http_t *h = start_server(&opts, dir);
  CURL *c = curl_easy_init();
  call_t call = {.method = "POST", .path = "/v1/pause", .auth = "Bearer anything"};
  result_t r = do_call(c, eddy_http_port(h), &call);
  assert_int_equal(r.status, 403);
  assert_non_null(strstr(r.body.data, "no bearer token is configured"));
  result_free(&r);
  call.auth = NULL;
  r = do_call(c, eddy_http_port(h), &call);
  assert_int_equal(r.status, 403);
  result_free(&r);
  call_t hello = {.method = "GET", .path = "/hello"}; /* reads still work */
  r = do_call(c, eddy_http_port(h), &hello);
  assert_int_equal(r.status, 200);
  result_free(&r);
  curl_easy_cleanup(c);
  eddy_http_destroy(h);
  eddy_test_rmdir(dir);
}

static char *random_bytes(size_t n, unsigned seed) {
  char *p = malloc(n);
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    p[i] = (char)(x & 0xff);
  }
  if (n > 10) p[10] = '\0'; /* a NUL inside */
  return p;
}

static void test_body_roundtrip(void **state) {
  fx_t *fx = *state;
  char v[256];
  size_t sizes[] = {0, 1, 100 * 1000, CAP};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    for (int chunked = 0; chunked <= 1; chunked++) {
      char *body = random_bytes(sizes[i] ? sizes[i] : 1, (unsigned)i + 7);
      call_t call = {.method = "POST", .path = "/echo", .body = body, .body_len = sizes[i],
                     .chunked = chunked};
      result_t r = do_call(fx->curl, fx->port, &call);
      if (r.status != 200)
        fail_msg("%zu bytes chunked=%d: status %ld", sizes[i], chunked, r.status);
      assert_int_equal(r.body.len, sizes[i]);
      if (sizes[i]) assert_memory_equal(r.body.data, body, sizes[i]);
      char n[32];
      snprintf(n, sizeof n, "%zu", sizes[i]);
      assert_string_equal(header_of(&r, "X-Body-Len", v, sizeof v), n);
      result_free(&r);
      free(body);
    }
  }
}

static void test_body_too_large(void **state) {
  fx_t *fx = *state;
  size_t sizes[] = {CAP + 1, 3 * CAP};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    char *body = random_bytes(sizes[i], 3);
    for (int chunked = 0; chunked <= 1; chunked++) {
      for (int expect = 0; expect <= 1; expect++) {
        call_t call = {.method = "POST", .path = "/echo", .body = body, .body_len = sizes[i],
                       .chunked = chunked, .header = expect ? "Expect: 100-continue" : "Expect:"};
        result_t r = do_call(fx->curl, fx->port, &call);
        if (r.status != 413)
          fail_msg("%zu bytes chunked=%d expect=%d: status %ld (%s)", sizes[i], chunked, expect,
                   r.status, curl_easy_strerror(r.rc));
        assert_true(json_error_has(&r, "over the limit of 262144 bytes"));
        result_free(&r);
      }
    }
    free(body);
  }
  /* The server still answers on the same client afterwards. */
  result_t r = get(fx, "/hello");
  assert_int_equal(r.status, 200);
  result_free(&r);
}

static void test_path_params(void **state) {
  fx_t *fx = *state;
  result_t r = get(fx, "/v1/snapshots/3/weights.safetensors");
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body.data, "v=3 file=weights.safetensors none=null");
  result_free(&r);
  r = get(fx, "/v1/snapshots/%31%32/a%20b"); /* percent-decoded */
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body.data, "v=12 file=a b none=null");
  result_free(&r);
  r = get(fx, "/static/a/b/c.txt");
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body.data, "rest=[a/b/c.txt]");
  result_free(&r);
  r = get(fx, "/static");
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body.data, "rest=[]");
  result_free(&r);
  /* the POST route with the same pattern needs the token */
  call_t post = {.method = "POST", .path = "/v1/snapshots/3/w", .auth = "Bearer " TOKEN};
  r = do_call(fx->curl, fx->port, &post);
  assert_int_equal(r.status, 200);
  result_free(&r);
}

static void test_query_params(void **state) {
  fx_t *fx = *state;
  result_t r = get(fx, "/q?name=a%20b&flag");
  assert_int_equal(r.status, 200);
  assert_string_equal(r.body.data, "name=[a b] flag=[] missing=[NULL]");
  result_free(&r);
  r = get(fx, "/q");
  assert_string_equal(r.body.data, "name=[NULL] flag=[NULL] missing=[NULL]");
  result_free(&r);
}

static void test_headers(void **state) {
  fx_t *fx = *state;
  char v[256];
  call_t call = {.method = "GET", .path = "/v1/model", .header = "X-Test: yes please"};
  result_t r = do_call(fx->curl, fx->port, &call);
  assert_int_equal(r.status, 202);
  assert_string_equal(header_of(&r, "X-Eddy-Version", v, sizeof v), "42");
  assert_string_equal(header_of(&r, "Content-Type", v, sizeof v), "application/json");
  assert_string_equal(r.body.data, "{\"x_test\": \"yes please\"}");
  result_free(&r);
}

static void test_handler_error(void **state) {
  fx_t *fx = *state;
  result_t r = get(fx, "/fail");
  assert_int_equal(r.status, 500);
  assert_true(json_error_has(&r, "internal error: "));
  assert_null(strstr(r.body.data, "partial"));
  result_free(&r);
}

static void test_file_stream(void **state) {
  fx_t *fx = *state;
  char v[256];
  size_t n = 3 * 1024 * 1024 + 17;
  char *data = random_bytes(n, 11);
  free(eddy_test_write_file(fx->dir, "blob.bin", data, n));
  result_t r = get(fx, "/files/blob.bin");
  assert_int_equal(r.status, 200);
  assert_int_equal(r.body.len, n);
  assert_memory_equal(r.body.data, data, n);
  assert_string_equal(header_of(&r, "Content-Type", v, sizeof v), "application/x-test");
  result_free(&r);
  free(data);
  r = get(fx, "/files/missing.bin");
  assert_int_equal(r.status, 404);
  assert_non_null(strstr(r.body.data, "no file missing.bin"));
  result_free(&r);
}

typedef struct {
  unsigned port;
  int n;
  int ok;
} worker_t;

static void *worker(void *arg) {
  worker_t *w = arg;
  CURL *c = curl_easy_init();
  for (int i = 0; i < w->n; i++) {
    call_t call = {.method = "GET", .path = "/count"};
    result_t r = do_call(c, w->port, &call);
    if (r.rc == CURLE_OK && r.status == 200 && r.body.len == 2) w->ok++;
    result_free(&r);
  }
  curl_easy_cleanup(c);
  return NULL;
}

static void test_concurrent(void **state) {
  fx_t *fx = *state;
  enum { THREADS = 8, PER = 200 };
  eddy_http_stats_t before, after;
  eddy_http_stats(fx->h, &before);
  atomic_store(&count_calls, 0);
  pthread_t t[THREADS];
  worker_t w[THREADS];
  for (int i = 0; i < THREADS; i++) {
    w[i] = (worker_t){fx->port, PER, 0};
    assert_int_equal(pthread_create(&t[i], NULL, worker, &w[i]), 0);
  }
  int ok = 0;
  for (int i = 0; i < THREADS; i++) {
    pthread_join(t[i], NULL);
    ok += w[i].ok;
  }
  assert_int_equal(ok, THREADS * PER);
  assert_int_equal(atomic_load(&count_calls), THREADS * PER);
  /* completion is counted just after the response goes out: allow a moment */
  for (int i = 0; i < 200; i++) {
    eddy_http_stats(fx->h, &after);
    if (after.by_class[2] - before.by_class[2] >= THREADS * PER) break;
    usleep(10 * 1000);
  }
  assert_int_equal(after.by_class[2] - before.by_class[2], THREADS * PER);
  assert_int_equal(after.requests - before.requests, THREADS * PER);
  assert_int_equal(after.by_class[4], before.by_class[4]);
}

static void test_port_in_use(void **state) {
  (void)state;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(listen(fd, 4), 0);
  socklen_t len = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &len);
  char bind_spec[64], want[128];
  snprintf(bind_spec, sizeof bind_spec, "127.0.0.1:%u", (unsigned)ntohs(a.sin_port));
  eddy_http_opts_t opts = {.bind = bind_spec};
  errstr[0] = '\0';
  assert_null(eddy_http_new(&opts, errstr, sizeof errstr));
  snprintf(want, sizeof want, "bind %s: Address already in use", bind_spec);
  if (!strstr(errstr, want)) fail_msg("errstr: %s", errstr);
  close(fd);
  /* a running eddy server holds its port too */
  opts.bind = "127.0.0.1:0";
  eddy_http_t *first = eddy_http_new(&opts, errstr, sizeof errstr);
  assert_non_null(first);
  snprintf(bind_spec, sizeof bind_spec, "127.0.0.1:%u", eddy_http_port(first));
  opts.bind = bind_spec;
  assert_null(eddy_http_new(&opts, errstr, sizeof errstr));
  assert_non_null(strstr(errstr, bind_spec));
  eddy_http_destroy(first);
  /* and frees it on destroy */
  eddy_http_t *again = eddy_http_new(&opts, errstr, sizeof errstr);
  if (!again) fail_msg("rebind after destroy: %s", errstr);
  eddy_http_destroy(again);
}

static void test_bad_options(void **state) {
  (void)state;
  const char *bad[] = {"localhost", "127.0.0.1:", "127.0.0.1:70000", ":8080", "::1:80",
                       "127.0.0.1:80x", "[::1]80", "127.0.0.1:123456"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    eddy_http_opts_t opts = {.bind = bad[i]};
    errstr[0] = '\0';
    eddy_http_t *h = eddy_http_new(&opts, errstr, sizeof errstr);
    if (h) fail_msg("bind \"%s\" accepted", bad[i]);
    assert_non_null(strstr(errstr, "http.bind"));
    assert_non_null(strstr(errstr, bad[i]));
  }
  eddy_http_opts_t opts = {.bind = "127.0.0.1:0", .threads = 1000};
  assert_null(eddy_http_new(&opts, errstr, sizeof errstr));
  assert_non_null(strstr(errstr, "1000"));
  eddy_http_destroy(NULL);
}

static void test_route_errors(void **state) {
  (void)state;
  eddy_http_opts_t opts = {.bind = "127.0.0.1:0", .threads = 1};
  eddy_http_t *h = eddy_http_new(&opts, errstr, sizeof errstr);
  assert_non_null(h);
  const char *bad[] = {"", "v1/x", "/a//b", "/a/", "/{}", "/{a-b}", "/*/x", "/a*",
                       "/{v}/{v}", "/x{v}", "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    errstr[0] = '\0';
    eddy_err_t err = eddy_http_route(h, "GET", bad[i], 0, h_hello, NULL, errstr, sizeof errstr);
    if (err != EDDY_ERR_INVALID_ARG) fail_msg("pattern \"%s\": %d", bad[i], err);
    assert_non_null(strstr(errstr, bad[i]));
  }
  assert_int_equal(eddy_http_route(h, "get", "/x", 0, h_hello, NULL, errstr, sizeof errstr),
                   EDDY_ERR_INVALID_ARG);
  assert_int_equal(eddy_http_route(h, "GET", "/x", 0, NULL, NULL, errstr, sizeof errstr),
                   EDDY_ERR_INVALID_ARG);
  for (int i = 0; i < EDDY_HTTP_MAX_ROUTES; i++) {
    char p[32];
    snprintf(p, sizeof p, "/r%d", i);
    assert_int_equal(eddy_http_route(h, "GET", p, 0, h_hello, NULL, errstr, sizeof errstr),
                     EDDY_OK);
  }
  assert_int_equal(eddy_http_route(h, "GET", "/more", 0, h_hello, NULL, errstr, sizeof errstr),
                   EDDY_ERR_TOO_LARGE);
  assert_int_equal(eddy_http_start(h, errstr, sizeof errstr), EDDY_OK);
  assert_int_equal(eddy_http_start(h, errstr, sizeof errstr), EDDY_ERR_STATE);
  assert_int_equal(eddy_http_route(h, "GET", "/late", 0, h_hello, NULL, errstr, sizeof errstr),
                   EDDY_ERR_STATE);
  CURL *c = curl_easy_init();
  call_t call = {.method = "GET", .path = "/r63"};
  result_t r = do_call(c, eddy_http_port(h), &call);
  assert_int_equal(r.status, 200);
  result_free(&r);
  curl_easy_cleanup(c);
  eddy_http_destroy(h);
}

static void test_load_token(void **state) {
  (void)state;
  char *dir = eddy_test_tmpdir();
  char tok[64];
  char *p = eddy_test_write_file(dir, "ok", "abc-DEF_123\n\r\n  ", 16);
  chmod(p, 0600);
  assert_int_equal(eddy_http_load_token(p, tok, sizeof tok, errstr, sizeof errstr), EDDY_OK);
  assert_string_equal(tok, "abc-DEF_123");
  /* too small a buffer */
  assert_int_equal(eddy_http_load_token(p, tok, 5, errstr, sizeof errstr), EDDY_ERR_TOO_LARGE);
  free(p);
  /* readable by others: accepted (with a warning) */
  p = eddy_test_write_file(dir, "open", "tok", 3);
  chmod(p, 0644);
  assert_int_equal(eddy_http_load_token(p, tok, sizeof tok, errstr, sizeof errstr), EDDY_OK);
  assert_string_equal(tok, "tok");
  free(p);
  struct {
    const char *name, *data;
    eddy_err_t err;
    const char *msg;
  } bad[] = {
      {"empty", "", EDDY_ERR_FORMAT, "empty"},
      {"blank", " \n\t\n", EDDY_ERR_FORMAT, "empty"},
      {"space", "ab cd", EDDY_ERR_FORMAT, "byte 2"},
      {"lead", " abcd", EDDY_ERR_FORMAT, "byte 0"},
      {"ctrl", "ab\x01", EDDY_ERR_FORMAT, "byte 2"},
      {"twolines", "abc\ndef\n", EDDY_ERR_FORMAT, "byte 3"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    p = eddy_test_write_file(dir, bad[i].name, bad[i].data, strlen(bad[i].data));
    tok[0] = 'x';
    errstr[0] = '\0';
    eddy_err_t err = eddy_http_load_token(p, tok, sizeof tok, errstr, sizeof errstr);
    if (err != bad[i].err) fail_msg("%s: %d (%s)", bad[i].name, err, errstr);
    assert_non_null(strstr(errstr, p));
    assert_non_null(strstr(errstr, bad[i].msg));
    assert_int_equal(tok[0], '\0');
    free(p);
  }
  char longtok[EDDY_HTTP_TOKEN_MAX + 2];
  memset(longtok, 'a', sizeof longtok);
  char big[EDDY_HTTP_TOKEN_MAX + 8];
  p = eddy_test_write_file(dir, "long", longtok, sizeof longtok);
  assert_int_equal(eddy_http_load_token(p, big, sizeof big, errstr, sizeof errstr),
                   EDDY_ERR_TOO_LARGE);
  free(p);
  char *huge = malloc(10000);
  memset(huge, 'a', 10000);
  p = eddy_test_write_file(dir, "huge", huge, 10000);
  assert_int_equal(eddy_http_load_token(p, big, sizeof big, errstr, sizeof errstr),
                   EDDY_ERR_TOO_LARGE);
  free(p);
  free(huge);
  assert_int_equal(eddy_http_load_token("/nonexistent/token", tok, sizeof tok, errstr,
                                        sizeof errstr),
                   EDDY_ERR_IO);
  assert_non_null(strstr(errstr, "/nonexistent/token"));
  assert_int_equal(eddy_http_load_token(dir, tok, sizeof tok, errstr, sizeof errstr), EDDY_ERR_IO);
  eddy_test_rmdir(dir);
}

typedef struct {
  const char *name;
  int status;
  int calls;
  int null_route;
} hook_seen_t;

static pthread_mutex_t hook_mu = PTHREAD_MUTEX_INITIALIZER;

static void on_request(void *ctx, const char *method, const char *route, int status,
                       double seconds) {
  hook_seen_t *seen = ctx;
  pthread_mutex_lock(&hook_mu); /* no cmocka asserts here: this runs on a server thread */
  if (!(seconds >= 0 && seconds < 60) || strcmp(method, "GET") != 0)
    seen[3].calls++;
  else if (!route)
    seen[2].calls++, seen[2].status = status;
  else if (strcmp(route, "/v1/snapshots/{v}/{file}") == 0)
    seen[0].calls++, seen[0].status = status;
  else if (strcmp(route, "/slow") == 0)
    seen[1].calls++, seen[1].status = status;
  pthread_mutex_unlock(&hook_mu);
}

typedef struct {
  unsigned port;
  result_t r;
} slow_arg_t;

static void *slow_client(void *arg) {
  slow_arg_t *a = arg;
  CURL *c = curl_easy_init();
  call_t call = {.method = "GET", .path = "/slow"};
  a->r = do_call(c, a->port, &call);
  curl_easy_cleanup(c);
  return NULL;
}

/* The hook sees route patterns (NULL for 404s); destroy waits for the slow request in flight. */
static void test_hook_and_shutdown(void **state) {
  (void)state;
  hook_seen_t seen[4]; /* /v1/snapshots/..., /slow, no route, bad arguments */
  memset(seen, 0, sizeof seen);
  eddy_http_opts_t opts = {.bind = "127.0.0.1:0", .threads = 2, .on_request = on_request,
                           .on_request_ctx = seen};
  char *dir = eddy_test_tmpdir();
  eddy_http_t *h = start_server(&opts, dir);
  CURL *c = curl_easy_init();
  for (int i = 0; i < 3; i++) {
    call_t call = {.method = "GET", .path = "/v1/snapshots/1/w"};
    result_t r = do_call(c, eddy_http_port(h), &call);
    assert_int_equal(r.status, 200);
    result_free(&r);
  }
  call_t missing = {.method = "GET", .path = "/nowhere/1234"};
  result_t r = do_call(c, eddy_http_port(h), &missing);
  assert_int_equal(r.status, 404);
  result_free(&r);
  curl_easy_cleanup(c);

  atomic_store(&slow_entered, 0);
  slow_arg_t arg = {.port = eddy_http_port(h)};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, slow_client, &arg), 0);
  for (int i = 0; i < 300 && !atomic_load(&slow_entered); i++) usleep(5 * 1000);
  assert_true(atomic_load(&slow_entered));
  eddy_http_stats_t st;
  eddy_http_stats(h, &st);
  assert_true(st.in_flight > 0);
  double t0 = eddy_clock_mono_s();
  eddy_http_destroy(h);
  double took = eddy_clock_mono_s() - t0;
  pthread_join(t, NULL);
  assert_int_equal(arg.r.rc, CURLE_OK);
  assert_int_equal(arg.r.status, 200);
  assert_string_equal(arg.r.body.data, "slow");
  result_free(&arg.r);
  assert_true(took > 0.05 && took < 4.0);
  assert_int_equal(seen[0].calls, 3);
  assert_int_equal(seen[0].status, 200);
  assert_int_equal(seen[1].calls, 1);
  assert_int_equal(seen[2].calls, 1);
  assert_int_equal(seen[2].status, 404);
  assert_int_equal(seen[3].calls, 0);
  eddy_test_rmdir(dir);
}


/* A client that stops halfway through its headers is dropped after timeout_s. */
static void test_idle_timeout(void **state) {
  (void)state;
  eddy_http_opts_t opts = {.bind = "127.0.0.1:0", .threads = 2, .timeout_s = 1};
  char *dir = eddy_test_tmpdir();
  eddy_http_t *h = start_server(&opts, dir);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons((uint16_t)eddy_http_port(h));
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  const char *partial = "GET /hello HTTP/1.1\r\nHost: x\r\n";
  assert_int_equal(write(fd, partial, strlen(partial)), (ssize_t)strlen(partial));
  double t0 = eddy_clock_mono_s();
  struct pollfd p = {.fd = fd, .events = POLLIN};
  assert_int_equal(poll(&p, 1, 5000), 1);
  char buf[256];
  ssize_t n = read(fd, buf, sizeof buf);
  double waited = eddy_clock_mono_s() - t0;
  assert_true(n <= 0); /* closed (EOF or reset), no response */
  assert_true(waited > 0.5 && waited < 4.5);
  close(fd);
  eddy_http_destroy(h);
  eddy_test_rmdir(dir);
}

/* A raw TCP connection to port on loopback (the client address 127.0.0.1). */
static int raw_connect(unsigned port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons((uint16_t)port);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  return fd;
}

/* Whether the server has closed fd (end of stream or reset) by now. */
static int server_closed(int fd) {
  char byte;
  ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

/* Connections per client and the header deadline (absolute: a client trickling its headers is
 * cut too); a Content-Length over the cap with no body is answered 413 at once. */
static void test_connection_limits(void **state) {
  (void)state;
  eddy_http_opts_t opts = {.bind = "127.0.0.1:0", .threads = 2, .max_body_bytes = CAP,
                           .max_per_client = 4, .header_timeout_s = 1};
  char *dir = eddy_test_tmpdir();
  eddy_http_t *h = start_server(&opts, dir);
  unsigned port = eddy_http_port(h);
  int fds[6];
  for (int i = 0; i < 6; i++) fds[i] = raw_connect(port);
  usleep(300 * 1000);
  int closed = 0;
  for (int i = 0; i < 6; i++) closed += server_closed(fds[i]);
  assert_int_equal(closed, 2); /* 4 per client */
  eddy_http_stats_t st;
  eddy_http_stats(h, &st);
  assert_int_equal(st.connections, 4);
  /* one of the four trickles a header byte every 200 ms: the deadline still comes */
  int open_fd = -1;
  for (int i = 0; i < 6; i++)
    if (!server_closed(fds[i])) open_fd = fds[i];
  double t0 = eddy_clock_mono_s();
  const char *start = "GET /hello HTTP/1.1\r\n";
  assert_int_equal(write(open_fd, start, strlen(start)), (ssize_t)strlen(start));
  while (!server_closed(open_fd) && eddy_clock_mono_s() - t0 < 5) {
    if (write(open_fd, "X", 1) != 1) break;
    usleep(200 * 1000);
  }
  double waited = eddy_clock_mono_s() - t0;
  assert_true(waited > 0.6 && waited < 2.5);
  usleep(500 * 1000);
  closed = 0;
  for (int i = 0; i < 6; i++) closed += server_closed(fds[i]);
  assert_int_equal(closed, 6);
  eddy_http_stats(h, &st);
  assert_int_equal(st.header_timeouts, 4);
  assert_int_equal(st.connections, 0);
  for (int i = 0; i < 6; i++) close(fds[i]);
  /* a request that completes its headers in time is served, and its connection stays usable */
  CURL *c = curl_easy_init();
  call_t hello = {.method = "GET", .path = "/hello"};
  result_t r = do_call(c, port, &hello);
  assert_int_equal(r.status, 200);
  result_free(&r);
  /* 10 MB declared, nothing sent: 413 at once, then the connection is closed */
  int fd = raw_connect(port);
  const char *req = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n";
  assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
  t0 = eddy_clock_mono_s();
  struct pollfd p = {.fd = fd, .events = POLLIN};
  assert_int_equal(poll(&p, 1, 2000), 1);
  char buf[512] = "";
  ssize_t n = read(fd, buf, sizeof buf - 1);
  assert_true(n > 12);
  assert_true(eddy_clock_mono_s() - t0 < 1.0);
  assert_memory_equal(buf, "HTTP/1.1 413", 12);
  assert_non_null(strstr(buf, "over the limit of 262144 bytes"));
  close(fd);
  curl_easy_cleanup(c);
  eddy_http_destroy(h);
  eddy_test_rmdir(dir);
}

/* A client that sends its whole body before it reads (Python's urllib does): the headers come,
 * the server answers 413 at once since no body is in sight yet, then 2 MB of body arrive. The
 * server drains them before closing, so every byte is sent without a reset and the 413 is read
 * after. Without the draining the kernel resets the connection under the client's send. */
static void test_early_413_then_body(void **state) {
  (void)state;
  eddy_http_opts_t opts = {.bind = "127.0.0.1:0", .threads = 2, .max_body_bytes = CAP};
  char *dir = eddy_test_tmpdir();
  eddy_http_t *h = start_server(&opts, dir);
  unsigned port = eddy_http_port(h);
  for (int round = 0; round < 3; round++) {
    size_t body_len = 2u << 20;
    char *body = calloc(1, body_len);
    assert_non_null(body);
    int fd = raw_connect(port);
    char req[160];
    snprintf(req, sizeof req, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n",
             body_len);
    assert_int_equal(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
    usleep(200 * 1000); /* the 413 is on its way before a byte of the body */
    size_t sent = 0;
    while (sent < body_len) {
      ssize_t n = send(fd, body + sent, body_len - sent, MSG_NOSIGNAL);
      if (n <= 0) fail_msg("round %d: send failed after %zu of %zu body bytes: %s", round, sent,
                           body_len, strerror(errno));
      sent += (size_t)n;
    }
    char buf[512] = "";
    size_t got = 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (got < sizeof buf - 1 && poll(&p, 1, 3000) == 1) {
      ssize_t n = recv(fd, buf + got, sizeof buf - 1 - got, 0);
      if (n <= 0) break;
      got += (size_t)n;
    }
    assert_true(got > 12);
    assert_memory_equal(buf, "HTTP/1.1 413", 12);
    close(fd);
    free(body);
  }
  eddy_http_destroy(h);
  eddy_test_rmdir(dir);
}

int main(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_get_ok, setup, teardown),
      cmocka_unit_test_setup_teardown(test_not_found, setup, teardown),
      cmocka_unit_test_setup_teardown(test_method_not_allowed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_auth, setup, teardown),
      cmocka_unit_test(test_no_token_configured),
      cmocka_unit_test_setup_teardown(test_body_roundtrip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_body_too_large, setup, teardown),
      cmocka_unit_test_setup_teardown(test_path_params, setup, teardown),
      cmocka_unit_test_setup_teardown(test_query_params, setup, teardown),
      cmocka_unit_test_setup_teardown(test_headers, setup, teardown),
      cmocka_unit_test_setup_teardown(test_handler_error, setup, teardown),
      cmocka_unit_test_setup_teardown(test_file_stream, setup, teardown),
      cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
      cmocka_unit_test(test_port_in_use),
      cmocka_unit_test(test_bad_options),
      cmocka_unit_test(test_route_errors),
      cmocka_unit_test(test_load_token),
      cmocka_unit_test(test_hook_and_shutdown),
      cmocka_unit_test(test_idle_timeout),
      cmocka_unit_test(test_connection_limits),
      cmocka_unit_test(test_early_413_then_body),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  curl_global_cleanup();
  return failed;
}
