/* The HTTP client (see client.h): one CURL easy handle reset before each call, the answer grown
 * into a buffer up to its cap, the bearer header wiped after use. */
#include "http/client.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/server.h"

struct eddy_http_client {
  CURL *curl;
  char user_agent[128];
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;
static void init_curl(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

eddy_http_client_t *eddy_http_client_new(const char *user_agent) {
  pthread_once(&curl_once, init_curl);
  if (curl_init_rc != CURLE_OK) return NULL;
  eddy_http_client_t *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  if (!(c->curl = curl_easy_init())) {
    free(c);
    return NULL;
  }
  snprintf(c->user_agent, sizeof c->user_agent, "%s", user_agent ? user_agent : "eddy");
  return c;
}

void eddy_http_client_destroy(eddy_http_client_t *c) {
  if (!c) return;
  curl_easy_cleanup(c->curl);
  free(c);
}

typedef struct {
  eddy_http_answer_t *ans;
  size_t cap, max;
} sink_t;

static size_t on_body(char *p, size_t size, size_t n, void *ctx) {
  sink_t *s = ctx;
  eddy_http_answer_t *a = s->ans;
  size_t add = size * n;
  if (a->len + add > s->max) {
    a->too_large = true;
    return 0;
  }
  if (a->len + add + 1 > s->cap) {
    size_t cap = s->cap ? s->cap : 4096;
    while (cap < a->len + add + 1) cap *= 2;
    if (cap > s->max + 1) cap = s->max + 1;
    char *d = realloc(a->body, cap);
    if (!d) return 0;
    a->body = d;
    s->cap = cap;
  }
  memcpy(a->body + a->len, p, add);
  a->len += add;
  a->body[a->len] = '\0';
  return add;
}

static size_t on_header(char *p, size_t size, size_t n, void *ctx) {
  size_t len = size * n;
  static const char name[] = "X-Eddy-Version:";
  if (len > sizeof name - 1 && strncasecmp(p, name, sizeof name - 1) == 0) {
    char *end = NULL;
    long v = strtol(p + sizeof name - 1, &end, 10);
    if (end != p + sizeof name - 1 && v >= 0) ((eddy_http_answer_t *)ctx)->version = v;
  }
  return len;
}

eddy_err_t eddy_http_client_call(eddy_http_client_t *c, const char *url, const eddy_http_request_t *req,
                                 eddy_http_answer_t *ans, char *errstr, size_t errstr_size) {
  static const eddy_http_request_t none = {0};
  if (!req) req = &none;
  memset(ans, 0, sizeof *ans);
  ans->status = -1;
  ans->version = -1;
  const char *method = req->body ? "POST" : "GET";
  if (!c || !url)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "http client: a client and a URL are required");
  sink_t sink = {ans, 0, req->max_answer ? req->max_answer : EDDY_HTTP_CLIENT_DEFAULT_MAX};
  char cerr[CURL_ERROR_SIZE] = "", auth[EDDY_HTTP_TOKEN_MAX + 32];
  struct curl_slist *hdrs = NULL;
  CURL *h = c->curl;
  curl_easy_reset(h);
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_USERAGENT, c->user_agent);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, req->connect_timeout_ms > 0 ? req->connect_timeout_ms : 3000L);
  if (req->timeout_ms > 0) curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, req->timeout_ms);
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 30L);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, ans);
  if (req->token) {
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", req->token);
    hdrs = curl_slist_append(hdrs, auth);
  }
  if (req->body) {
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(req->body));
  }
  if (hdrs) curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
  CURLcode rc = curl_easy_perform(h);
  curl_slist_free_all(hdrs);
  if (req->token) memset(auth, 0, sizeof auth);
  if (ans->too_large)
    return eddy_errf(EDDY_ERR_TOO_LARGE, errstr, errstr_size, "%s %s: the answer is over %zu bytes", method, url,
                     sink.max);
  if (rc != CURLE_OK)
    return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "%s %s: %s", method, url, cerr[0] ? cerr : curl_easy_strerror(rc));
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &ans->status);
  return EDDY_OK;
}

void eddy_http_answer_free(eddy_http_answer_t *ans) {
  if (!ans) return;
  free(ans->body);
  ans->body = NULL;
  ans->len = 0;
}
