/* HTTP server on libmicrohttpd: our own listening socket (clear bind errors, ephemeral ports), an
 * epoll thread pool, a small router with {param} and trailing "*" segments, bearer tokens compared
 * in constant time, body caps checked on Content-Length and on the bytes streamed (a socket
 * answered before its body arrived is drained before it closes), and a shutdown that stops
 * accepting, then waits (bounded) for requests in flight. */
#include "http/server.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/json.h"
#include "core/log.h"
#include "format/sha256.h"

#define CONNECTION_MEMORY (64u * 1024)  /* per connection: request line, headers, read buffer */
#define DISCARD_MAX (64ull << 20)       /* body bytes swallowed past the cap before hanging up */
#define ERROR_MESSAGE_MAX 1024
#define TOKEN_FILE_MAX 4096
#define LISTEN_BACKLOG 1024 /* a burst of connects must not overflow it (SYNs dropped: 1 s retries) */
#define METHOD_MAX 15
#define REAP_EVERY_MS 250               /* how often the header deadline is checked */
#define REAP_LOG_EVERY_S 10.0           /* header-deadline closures are logged this often at most */
#define LINGER_MAX 64                   /* sockets drained at once after an early answer */
#define LINGER_S 2.0                    /* how long one is drained before it is closed */
#define LINGER_POLL_MS 20               /* the reaper's tick while it drains */
#define LINGER_READS_PER_TICK 64        /* 16 KiB reads per socket and tick (1 MiB) */

typedef struct {
  char method[METHOD_MAX + 1];
  char *pattern;
  char **segs; /* literal, "{name}" or (last) "*" */
  size_t n_segs;
  char *param_names[EDDY_HTTP_MAX_PARAMS]; /* "name" of each {name}, then "*" */
  size_t n_params;
  unsigned flags;
  eddy_http_handler_fn handler;
  void *ctx;
} route_t;

/* An open connection, from accept to close (MHD's connection notifications). */
typedef struct conn_entry {
  struct conn_entry *prev, *next;
  int fd;
  double accepted; /* eddy_clock_mono_s() */
  bool headers;    /* the first request's headers are complete */
  bool cut;        /* shut down by the reaper for its header deadline */
  bool linger;     /* answered before its request body was read: drain it before closing */
} conn_entry_t;

/* A socket kept open after libmicrohttpd let go of it (a duplicate descriptor), read and
 * discarded until the client stops sending, so that the kernel does not reset a connection
 * whose client is still sending a body we answered early: a client that reads only once it
 * has sent everything (Python's urllib, for one) then still gets its 413. */
typedef struct {
  int fd;
  double until;     /* eddy_clock_mono_s() */
  uint64_t drained; /* bytes read and dropped */
} linger_t;

struct eddy_http {
  int listen_fd;
  unsigned port;
  char bind_text[320];
  unsigned threads, timeout_s, grace_ms, max_connections, max_per_client, header_timeout_s;
  uint64_t max_body;
  int has_token;
  uint8_t token_digest[32];
  eddy_http_on_request_fn on_request;
  void *on_request_ctx;
  route_t routes[EDDY_HTTP_MAX_ROUTES];
  size_t n_routes;
  struct MHD_Daemon *daemon;
  pthread_mutex_t mu; /* guards in_flight changes, for cv */
  pthread_cond_t cv;
  _Atomic uint64_t in_flight;
  _Atomic uint64_t requests;
  _Atomic uint64_t by_class[6];
  /* Open connections and the header deadline: the reaper thread shuts down (never closes: that
   * stays libmicrohttpd's) the socket of a connection past its deadline, under conns_mu, which
   * the close notification also takes before libmicrohttpd closes the socket. */
  pthread_mutex_t conns_mu;
  pthread_cond_t reaper_cv;
  conn_entry_t *conns;
  pthread_t reaper;
  bool reaper_started, reaper_stop;
  double reap_logged; /* eddy_clock_mono_s() of the last log line */
  uint64_t reap_unlogged;
  linger_t lingering[LINGER_MAX]; /* under conns_mu; only the reaper reads or closes them */
  size_t n_lingering;
  _Atomic uint64_t connections, header_timeouts;
};

struct eddy_http_req {
  eddy_http_t *h;
  struct MHD_Connection *conn;
  char method[METHOD_MAX + 1];
  char *path;
  const route_t *route;
  const char *param_names[EDDY_HTTP_MAX_PARAMS]; /* the route's */
  const char *param_values[EDDY_HTTP_MAX_PARAMS]; /* in param_buf */
  size_t n_params;
  char *param_buf;
  char *body;
  size_t body_len, body_cap;
  uint64_t discarded;
  int too_large;
  eddy_http_resp_t *pending; /* error decided on the headers, sent once the body is read */
  int headers_done;          /* past the first call */
  int status; /* non-zero once a response is queued */
  double start_s; /* eddy_clock_mono_s() when the request arrived */
};

struct eddy_http_resp {
  int status;
  char content_type[128];
  char *body;
  size_t len;
  int fd; /* file to stream, or -1 */
  uint64_t file_size;
  char *header_names[EDDY_HTTP_MAX_HEADERS];
  char *header_values[EDDY_HTTP_MAX_HEADERS];
  size_t n_headers;
  eddy_err_t err; /* first setter error: the response becomes a 500 */
};


static void resp_init(eddy_http_resp_t *resp) {
  memset(resp, 0, sizeof *resp);
  resp->fd = -1;
}

static void resp_clear(eddy_http_resp_t *resp) {
  free(resp->body);
  if (resp->fd >= 0) close(resp->fd);
  for (size_t i = 0; i < resp->n_headers; i++) {
    free(resp->header_names[i]);
    free(resp->header_values[i]);
  }
  resp_init(resp);
}

static eddy_err_t resp_fail(eddy_http_resp_t *resp, eddy_err_t err) {
  if (!resp->err) resp->err = err;
  return err;
}

static void set_content_type(eddy_http_resp_t *resp, const char *content_type, const char *dflt) {
  if (!content_type || !*content_type || strpbrk(content_type, "\r\n")) content_type = dflt;
  snprintf(resp->content_type, sizeof resp->content_type, "%s", content_type);
}

/* Drops a previous body or file so that the last setter wins. */
static void resp_drop_body(eddy_http_resp_t *resp) {
  free(resp->body);
  resp->body = NULL;
  resp->len = 0;
  if (resp->fd >= 0) close(resp->fd);
  resp->fd = -1;
  resp->file_size = 0;
}

eddy_err_t eddy_http_resp_status(eddy_http_resp_t *resp, int status) {
  if (!resp) return EDDY_ERR_INVALID_ARG;
  if (status < 100 || status > 599) return resp_fail(resp, EDDY_ERR_INVALID_ARG);
  resp->status = status;
  return EDDY_OK;
}

eddy_err_t eddy_http_resp_body_owned(eddy_http_resp_t *resp, const char *content_type, char *data,
                                     size_t len) {
  if (!resp) {
    free(data);
    return EDDY_ERR_INVALID_ARG;
  }
  if (!data && len) return resp_fail(resp, EDDY_ERR_INVALID_ARG);
  resp_drop_body(resp);
  resp->body = data;
  resp->len = len;
  set_content_type(resp, content_type, "text/plain; charset=utf-8");
  return EDDY_OK;
}

eddy_err_t eddy_http_resp_body(eddy_http_resp_t *resp, const char *content_type, const void *data,
                               size_t len) {
  if (!resp) return EDDY_ERR_INVALID_ARG;
  if (!data && len) return resp_fail(resp, EDDY_ERR_INVALID_ARG);
  char *copy = malloc(len ? len : 1);
  if (!copy) return resp_fail(resp, EDDY_ERR_NOMEM);
  if (len) memcpy(copy, data, len);
  return eddy_http_resp_body_owned(resp, content_type, copy, len);
}

/* {"error": "<message>"} with the message escaped for JSON (invalid UTF-8, e.g. from a
 * percent-decoded path, becomes U+FFFD); malloc'ed. */
static char *json_error_body(const char *message, size_t *len) {
  size_t n = strlen(message);
  char *out = malloc(n * 6 + 16);
  if (!out) return NULL;
  size_t o = (size_t)sprintf(out, "{\"error\": \"");
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)message[i];
    if (c == '"' || c == '\\') {
      out[o++] = '\\';
      out[o++] = (char)c;
    } else if (c == '\n') {
      out[o++] = '\\';
      out[o++] = 'n';
    } else if (c < 0x20 || c == 0x7f) {
      o += (size_t)sprintf(out + o, "\\u%04x", c);
    } else if (c < 0x80) {
      out[o++] = (char)c;
    } else {
      size_t k = eddy_utf8_len((const unsigned char *)message + i, n - i);
      if (k == 0) {
        o += (size_t)sprintf(out + o, "\\ufffd");
      } else {
        memcpy(out + o, message + i, k);
        o += k;
        i += k - 1;
      }
    }
  }
  o += (size_t)sprintf(out + o, "\"}\n");
  *len = o;
  return out;
}

static eddy_err_t resp_error_v(eddy_http_resp_t *resp, int status, const char *fmt, va_list ap) {
  char message[ERROR_MESSAGE_MAX];
  vsnprintf(message, sizeof message, fmt, ap);
  size_t len = 0;
  char *body = json_error_body(message, &len);
  if (!body) return resp_fail(resp, EDDY_ERR_NOMEM);
  eddy_err_t err = eddy_http_resp_status(resp, status);
  if (err) {
    free(body);
    return err;
  }
  return eddy_http_resp_body_owned(resp, "application/json", body, len);
}

eddy_err_t eddy_http_resp_error(eddy_http_resp_t *resp, int status, const char *fmt, ...) {
  if (!resp || !fmt) return EDDY_ERR_INVALID_ARG;
  va_list ap;
  va_start(ap, fmt);
  eddy_err_t err = resp_error_v(resp, status, fmt, ap);
  va_end(ap);
  return err;
}

static int is_token_char(unsigned char c) {
  /* RFC 9110 tchar */
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
  return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

eddy_err_t eddy_http_resp_header(eddy_http_resp_t *resp, const char *name, const char *value) {
  if (!resp) return EDDY_ERR_INVALID_ARG;
  if (!name || !*name || !value || strlen(name) > 256 || strlen(value) > 4096)
    return resp_fail(resp, EDDY_ERR_INVALID_ARG);
  for (const char *p = name; *p; p++)
    if (!is_token_char((unsigned char)*p)) return resp_fail(resp, EDDY_ERR_INVALID_ARG);
  if (strpbrk(value, "\r\n")) return resp_fail(resp, EDDY_ERR_INVALID_ARG);
  if (resp->n_headers >= EDDY_HTTP_MAX_HEADERS) return resp_fail(resp, EDDY_ERR_TOO_LARGE);
  char *n = strdup(name), *v = strdup(value);
  if (!n || !v) {
    free(n);
    free(v);
    return resp_fail(resp, EDDY_ERR_NOMEM);
  }
  resp->header_names[resp->n_headers] = n;
  resp->header_values[resp->n_headers] = v;
  resp->n_headers++;
  return EDDY_OK;
}

eddy_err_t eddy_http_resp_file(eddy_http_resp_t *resp, const char *content_type, const char *path) {
  if (!resp || !path) return EDDY_ERR_INVALID_ARG;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT || errno == ENOTDIR ? EDDY_ERR_NOT_FOUND : EDDY_ERR_IO;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return EDDY_ERR_IO;
  }
  resp_drop_body(resp);
  resp->fd = fd;
  resp->file_size = (uint64_t)st.st_size;
  set_content_type(resp, content_type, "application/octet-stream");
  return EDDY_OK;
}


const char *eddy_http_req_method(const eddy_http_req_t *req) { return req ? req->method : NULL; }

const char *eddy_http_req_path(const eddy_http_req_t *req) { return req ? req->path : NULL; }

const char *eddy_http_req_param(const eddy_http_req_t *req, const char *name) {
  if (!req || !name) return NULL;
  for (size_t i = 0; i < req->n_params; i++)
    if (strcmp(req->param_names[i], name) == 0) return req->param_values[i];
  return NULL;
}

const char *eddy_http_req_query(const eddy_http_req_t *req, const char *name) {
  if (!req || !name) return NULL;
  const char *value = NULL;
  size_t value_len = 0;
  if (MHD_lookup_connection_value_n(req->conn, MHD_GET_ARGUMENT_KIND, name, strlen(name), &value,
                                    &value_len) != MHD_YES)
    return NULL;
  return value ? value : "";
}

const char *eddy_http_req_header(const eddy_http_req_t *req, const char *name) {
  if (!req || !name) return NULL;
  return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *eddy_http_req_body(const eddy_http_req_t *req, size_t *len) {
  if (len) *len = req && req->body ? req->body_len : 0;
  return req && req->body ? req->body : "";
}


static int seg_is_param(const char *seg) { return seg[0] == '{'; }

/* Matches path against r; on success fills starts/lens of the captured segments (params in
 * pattern order, "*" last). */
static int route_match(const route_t *r, const char *path, const char **starts, size_t *lens,
                       size_t *n_caps) {
  if (path[0] != '/') return 0;
  const char *p = path + 1;
  int done = *p == '\0';
  size_t caps = 0;
  for (size_t i = 0; i < r->n_segs; i++) {
    const char *seg = r->segs[i];
    if (strcmp(seg, "*") == 0) {
      starts[caps] = done ? "" : p;
      lens[caps++] = done ? 0 : strlen(p);
      *n_caps = caps;
      return 1;
    }
    if (done) return 0;
    const char *end = strchrnul(p, '/');
    size_t len = (size_t)(end - p);
    if (seg_is_param(seg)) {
      if (len == 0 || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
        return 0;
      starts[caps] = p;
      lens[caps++] = len;
    } else if (strlen(seg) != len || memcmp(seg, p, len) != 0) {
      return 0;
    }
    if (*end == '\0')
      done = 1;
    else
      p = end + 1;
  }
  *n_caps = caps;
  return done;
}

static int method_matches(const char *route_method, const char *method) {
  if (strcmp(route_method, method) == 0) return 1;
  return strcmp(method, "HEAD") == 0 && strcmp(route_method, "GET") == 0;
}

static void allow_add(char *allow, size_t size, const char *method) {
  size_t mlen = strlen(method);
  for (const char *p = allow; (p = strstr(p, method)) != NULL; p += mlen)
    if ((p == allow || p[-1] == ' ') && (p[mlen] == ',' || p[mlen] == '\0')) return;
  size_t used = strlen(allow);
  snprintf(allow + used, size - used, "%s%s", used ? ", " : "", method);
}

/* Looks the request up; returns the route, or NULL with allow filled when the path exists for
 * other methods (allow stays "" when it exists for none), or NULL with *oom set. */
static const route_t *route_find(eddy_http_req_t *req, char *allow, size_t allow_size, int *oom) {
  eddy_http_t *h = req->h;
  const char *starts[EDDY_HTTP_MAX_PARAMS];
  size_t lens[EDDY_HTTP_MAX_PARAMS], n_caps = 0;
  allow[0] = '\0';
  for (size_t i = 0; i < h->n_routes; i++) {
    const route_t *r = &h->routes[i];
    if (!route_match(r, req->path, starts, lens, &n_caps)) continue;
    if (!method_matches(r->method, req->method)) {
      allow_add(allow, allow_size, r->method);
      if (strcmp(r->method, "GET") == 0) allow_add(allow, allow_size, "HEAD");
      continue;
    }
    size_t total = 0;
    for (size_t k = 0; k < n_caps; k++) total += lens[k] + 1;
    req->param_buf = malloc(total ? total : 1);
    if (!req->param_buf) {
      *oom = 1;
      return NULL;
    }
    char *o = req->param_buf;
    for (size_t k = 0; k < n_caps; k++) { /* captures come in the order of r->param_names */
      memcpy(o, starts[k], lens[k]);
      o[lens[k]] = '\0';
      req->param_names[k] = r->param_names[k];
      req->param_values[k] = o;
      o += lens[k] + 1;
    }
    req->n_params = n_caps;
    return r;
  }
  return NULL;
}

static int valid_method(const char *method) {
  size_t n = strlen(method);
  if (n == 0 || n > METHOD_MAX) return 0;
  for (size_t i = 0; i < n; i++)
    if (method[i] < 'A' || method[i] > 'Z') return 0;
  return 1;
}

static void route_free(route_t *r) {
  for (size_t i = 0; i < r->n_params; i++) free(r->param_names[i]);
  for (size_t i = 0; i < r->n_segs; i++) free(r->segs[i]);
  free(r->segs);
  free(r->pattern);
  memset(r, 0, sizeof *r);
}

/* Splits pattern into r's segments, checking the syntax. */
static eddy_err_t route_parse(route_t *r, const char *pattern, char *errstr, size_t errstr_size) {
  if (!pattern || pattern[0] != '/')
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                     "http route \"%s\": a pattern starts with '/'", pattern ? pattern : "(null)");
  r->pattern = strdup(pattern);
  size_t n = 0;
  for (const char *p = pattern + 1; *p; p++) n += *p == '/';
  r->segs = calloc(n + 1, sizeof *r->segs);
  if (!r->pattern || !r->segs)
    return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
  if (pattern[1] == '\0') return EDDY_OK; /* "/" */
  size_t n_params = 0;
  const char *p = pattern + 1;
  for (;;) {
    const char *end = strchrnul(p, '/');
    size_t len = (size_t)(end - p);
    const char *why = NULL;
    if (len == 0) why = "has an empty segment";
    else if (p[0] == '{') {
      if (len < 3 || p[len - 1] != '}') why = "has a malformed {param}";
      for (size_t i = 1; !why && i + 1 < len; i++)
        if (!(p[i] == '_' || (p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') ||
              (p[i] >= '0' && p[i] <= '9')))
          why = "has a {param} name that is not [A-Za-z0-9_]";
      n_params++;
    } else if (len == 1 && p[0] == '*') {
      if (*end) why = "has '*' before the last segment";
      n_params++;
    } else if (memchr(p, '{', len) || memchr(p, '}', len) || memchr(p, '*', len)) {
      why = "mixes literal text with '{', '}' or '*'";
    }
    if (!why && n_params > EDDY_HTTP_MAX_PARAMS) why = "has too many parameters";
    if (why)
      return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "http route \"%s\" %s", pattern,
                       why);
    char *seg = strndup(p, len);
    if (!seg) return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
    r->segs[r->n_segs++] = seg;
    if (!*end) break;
    p = end + 1;
  }
  for (size_t i = 0; i < r->n_segs; i++)
    for (size_t j = 0; j < i; j++)
      if (seg_is_param(r->segs[i]) && strcmp(r->segs[i], r->segs[j]) == 0)
        return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                         "http route \"%s\" repeats %s", pattern, r->segs[i]);
  for (size_t i = 0; i < r->n_segs; i++) {
    const char *seg = r->segs[i];
    if (!seg_is_param(seg) && strcmp(seg, "*") != 0) continue;
    char *name = seg_is_param(seg) ? strndup(seg + 1, strlen(seg) - 2) : strdup("*");
    if (!name) return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
    r->param_names[r->n_params++] = name;
  }
  return EDDY_OK;
}

eddy_err_t eddy_http_route(eddy_http_t *h, const char *method, const char *pattern, unsigned flags,
                           eddy_http_handler_fn handler, void *ctx, char *errstr,
                           size_t errstr_size) {
  if (!h || !method || !handler)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "http route: missing argument");
  if (h->daemon)
    return eddy_errf(EDDY_ERR_STATE, errstr, errstr_size,
                     "http route %s %s: routes are added before the server starts", method,
                     pattern ? pattern : "(null)");
  if (!valid_method(method))
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                     "http route: method \"%s\" is not an upper-case HTTP method", method);
  if (h->n_routes >= EDDY_HTTP_MAX_ROUTES)
    return eddy_errf(EDDY_ERR_TOO_LARGE, errstr, errstr_size,
                     "http route %s %s: too many routes (max %d)", method,
                     pattern ? pattern : "(null)", EDDY_HTTP_MAX_ROUTES);
  route_t *r = &h->routes[h->n_routes];
  memset(r, 0, sizeof *r);
  eddy_err_t err = route_parse(r, pattern, errstr, errstr_size);
  if (err) {
    route_free(r);
    return err;
  }
  snprintf(r->method, sizeof r->method, "%s", method);
  r->flags = flags;
  r->handler = handler;
  r->ctx = ctx;
  h->n_routes++;
  return EDDY_OK;
}


static enum MHD_Result send_resp(eddy_http_req_t *req, eddy_http_resp_t *resp) {
  struct MHD_Response *r;
  if (resp->fd >= 0) {
    r = MHD_create_response_from_fd64(resp->file_size, resp->fd);
    if (r) resp->fd = -1; /* owned by the response now */
  } else {
    enum MHD_ResponseMemoryMode mode = resp->body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT;
    r = MHD_create_response_from_buffer(resp->len, resp->body, mode);
    if (r) resp->body = NULL;
  }
  if (!r) {
    EDDY_ERROR("http", "%s %s: cannot create a response", req->method, req->path);
    return MHD_NO;
  }
  if (resp->content_type[0])
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, resp->content_type);
  for (size_t i = 0; i < resp->n_headers; i++)
    if (MHD_add_response_header(r, resp->header_names[i], resp->header_values[i]) != MHD_YES)
      EDDY_WARN("http", "%s %s: header %s refused by libmicrohttpd", req->method, req->path,
                resp->header_names[i]);
  int status = resp->status ? resp->status : 200;
  enum MHD_Result ok = MHD_queue_response(req->conn, (unsigned)status, r);
  MHD_destroy_response(r);
  if (ok == MHD_YES) req->status = status;
  return ok;
}

/* Whether body bytes wait in the connection's socket (peeked, not consumed). */
static int body_arriving(const eddy_http_req_t *req) {
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
  char byte;
  return ci && recv(ci->connect_fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

/* Whether the request announced a body (a Content-Length over 0, or chunks). */
static int body_declared(const eddy_http_req_t *req) {
  if (MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING))
    return 1;
  const char *cl =
      MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
  return cl && strtoull(cl, NULL, 10) > 0;
}

/* The request is answered before its body is read: its socket is drained when it closes. */
static void linger_on_close(eddy_http_req_t *req) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  conn_entry_t *e = ci ? ci->socket_context : NULL;
  if (!e) return;
  pthread_mutex_lock(&req->h->conns_mu);
  e->linger = true;
  pthread_mutex_unlock(&req->h->conns_mu);
}

/* Whether the client will send a body right after the headers: then an error decided on the
 * headers waits until the body is read, since closing with unread data makes the kernel reset
 * the connection and the client may lose the response. A client that sent "Expect: 100-continue"
 * waits for us, so it is answered at once. A declared Content-Length over the body cap waits
 * only while the body is visibly arriving: a client that declares one and sends nothing gets its
 * 413 at once instead of holding the connection. */
static int defer_errors(const eddy_http_req_t *req) {
  const char *expect =
      MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
  if (expect && strcasecmp(expect, "100-continue") == 0) return 0;
  if (MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING))
    return 1;
  const char *cl =
      MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
  if (!cl) return 0;
  errno = 0;
  char *end = NULL;
  unsigned long long declared = strtoull(cl, &end, 10);
  if (end == cl || declared == 0) return 0;
  if (errno == ERANGE || declared > req->h->max_body) return declared <= DISCARD_MAX && body_arriving(req);
  return 1;
}

/* Answers with a JSON error now, or keeps it in req->pending until the body has been read. */
static enum MHD_Result reject(eddy_http_req_t *req, int status, const char *header,
                              const char *header_value, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static enum MHD_Result reject(eddy_http_req_t *req, int status, const char *header,
                              const char *header_value, const char *fmt, ...) {
  eddy_http_resp_t *resp = malloc(sizeof *resp);
  if (!resp) return MHD_NO;
  resp_init(resp);
  va_list ap;
  va_start(ap, fmt);
  resp_error_v(resp, status, fmt, ap);
  va_end(ap);
  if (header) eddy_http_resp_header(resp, header, header_value);
  if (!req->headers_done && !req->pending) {
    if (defer_errors(req)) {
      req->pending = resp;
      return MHD_YES;
    }
    if (body_declared(req)) linger_on_close(req);
  }
  enum MHD_Result ok = send_resp(req, resp);
  resp_clear(resp);
  free(resp);
  return ok;
}

/* 0 = good token, 1 = no bearer credentials, 2 = wrong token. */
static int check_token(const eddy_http_t *h, struct MHD_Connection *conn) {
  const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
  if (!v) return 1;
  while (*v == ' ' || *v == '\t') v++;
  if (strncasecmp(v, "Bearer", 6) != 0 || (v[6] != ' ' && v[6] != '\t')) return 1;
  v += 6;
  while (*v == ' ' || *v == '\t') v++;
  size_t len = strlen(v);
  while (len && (v[len - 1] == ' ' || v[len - 1] == '\t')) len--;
  if (len == 0) return 1;
  /* Comparing digests keeps the time independent of where (and whether the lengths) differ. */
  uint8_t digest[32];
  eddy_sha256(v, len, digest);
  unsigned diff = 0;
  for (int i = 0; i < 32; i++) diff |= (unsigned)(digest[i] ^ h->token_digest[i]);
  return diff ? 2 : 0;
}

/* First call of a request (headers in): route, method, auth and declared size. Queues the error
 * response, or returns MHD_YES to receive the body. */
static enum MHD_Result begin_request(eddy_http_t *h, eddy_http_req_t *req) {
  char allow[128];
  int oom = 0;
  req->route = route_find(req, allow, sizeof allow, &oom);
  if (oom) return MHD_NO;
  if (!req->route) {
    if (allow[0])
      return reject(req, 405, MHD_HTTP_HEADER_ALLOW, allow,
                        "method %s is not allowed on %s (allowed: %s)", req->method, req->path,
                        allow);
    return reject(req, 404, NULL, NULL, "no such endpoint: %s", req->path);
  }
  if (req->route->flags & EDDY_HTTP_AUTH) {
    if (!h->has_token)
      return reject(req, 403, NULL, NULL,
                        "%s %s is disabled: no bearer token is configured (http.token_file)",
                        req->method, req->path);
    int bad = check_token(h, req->conn);
    if (bad == 1)
      return reject(req, 401, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"eddy\"",
                        "%s %s needs an Authorization: Bearer token", req->method, req->path);
    if (bad == 2)
      return reject(req, 401, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                        "Bearer realm=\"eddy\", error=\"invalid_token\"",
                        "%s %s: the bearer token is not valid", req->method, req->path);
  }
  const char *cl =
      MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
  if (cl) {
    errno = 0;
    char *end = NULL;
    unsigned long long declared = strtoull(cl, &end, 10);
    int overflow = errno == ERANGE;
    if (end != cl && (overflow || declared > h->max_body))
      return reject(req, 413, NULL, NULL,
                        "request body of %s bytes is over the limit of %llu bytes "
                        "(http.max_body_bytes)",
                        cl, (unsigned long long)h->max_body);
    if (end != cl && declared > 0) {
      req->body = malloc((size_t)declared + 1);
      if (!req->body) return MHD_NO;
      req->body_cap = (size_t)declared + 1;
    }
  }
  return MHD_YES;
}

/* A piece of the body: kept while under the cap, counted and dropped beyond it. */
static enum MHD_Result take_body(eddy_http_t *h, eddy_http_req_t *req, const char *data,
                                 size_t n) {
  if (req->pending) {
    req->discarded += n;
    if (req->discarded > DISCARD_MAX) {
      EDDY_WARN("http", "%s %s: body keeps coming past %llu bytes; closing the connection",
                req->method, req->path, (unsigned long long)req->discarded);
      return MHD_NO;
    }
    return MHD_YES;
  }
  if (req->too_large || (uint64_t)req->body_len + n > h->max_body) {
    if (!req->too_large) {
      req->too_large = 1;
      req->discarded = req->body_len;
      free(req->body);
      req->body = NULL;
      req->body_len = req->body_cap = 0;
    }
    req->discarded += n;
    if (req->discarded - h->max_body > DISCARD_MAX) {
      EDDY_WARN("http", "%s %s: body keeps coming past %llu bytes; closing the connection",
                req->method, req->path, (unsigned long long)req->discarded);
      return MHD_NO;
    }
    return MHD_YES;
  }
  if (req->body_len + n + 1 > req->body_cap) {
    size_t cap = req->body_cap ? req->body_cap : 4096;
    while (cap < req->body_len + n + 1) cap *= 2;
    if (cap > h->max_body + 1) cap = (size_t)h->max_body + 1;
    char *grown = realloc(req->body, cap);
    if (!grown) return MHD_NO;
    req->body = grown;
    req->body_cap = cap;
  }
  memcpy(req->body + req->body_len, data, n);
  req->body_len += n;
  req->body[req->body_len] = '\0';
  return MHD_YES;
}

static enum MHD_Result run_handler(eddy_http_req_t *req) {
  const route_t *r = req->route;
  if (req->body) req->body[req->body_len] = '\0';
  eddy_http_resp_t resp;
  resp_init(&resp);
  int rc = r->handler(r->ctx, req, &resp);
  if (rc != 0 || resp.err) {
    eddy_err_t err = rc != 0 ? (eddy_err_t)rc : resp.err;
    EDDY_WARN("http", "%s %s: handler failed: %s", req->method, req->path, eddy_err_str(err));
    resp_clear(&resp);
    eddy_http_resp_error(&resp, 500, "internal error: %s", eddy_err_str(err));
  }
  enum MHD_Result ok = send_resp(req, &resp);
  resp_clear(&resp);
  return ok;
}

/* ---- connections: limits are libmicrohttpd's; the header deadline is ours ---- */

/* libmicrohttpd's connection notifications: an entry per open connection. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
  eddy_http_t *h = cls;
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    conn_entry_t *e = ci ? calloc(1, sizeof *e) : NULL;
    *socket_context = e;
    atomic_fetch_add(&h->connections, 1);
    if (!e) return; /* untracked: only the idle timeout applies */
    e->fd = ci->connect_fd;
    e->accepted = eddy_clock_mono_s();
    pthread_mutex_lock(&h->conns_mu);
    e->next = h->conns;
    if (h->conns) h->conns->prev = e;
    h->conns = e;
    pthread_mutex_unlock(&h->conns_mu);
    return;
  }
  if (code != MHD_CONNECTION_NOTIFY_CLOSED) return;
  atomic_fetch_sub(&h->connections, 1);
  conn_entry_t *e = *socket_context;
  *socket_context = NULL;
  if (!e) return;
  pthread_mutex_lock(&h->conns_mu); /* the reaper never touches the socket after this */
  if (e->prev) e->prev->next = e->next;
  else h->conns = e->next;
  if (e->next) e->next->prev = e->prev;
  /* libmicrohttpd closes its descriptor after this notification (and has taken the socket out
   * of its epoll set first); a duplicate keeps the connection open for draining. */
  if (e->linger && !e->cut && !h->reaper_stop && h->n_lingering < LINGER_MAX) {
    int fd = fcntl(e->fd, F_DUPFD_CLOEXEC, 0);
    if (fd >= 0) {
      shutdown(fd, SHUT_WR); /* the response is in the send queue: the FIN goes after it */
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
      h->lingering[h->n_lingering++] = (linger_t){fd, eddy_clock_mono_s() + LINGER_S, 0};
      pthread_cond_broadcast(&h->reaper_cv);
    }
  }
  pthread_mutex_unlock(&h->conns_mu);
  free(e);
}

/* The first request of a connection has its headers: its deadline no longer applies. */
static void headers_arrived(eddy_http_t *h, struct MHD_Connection *conn) {
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  conn_entry_t *e = ci ? ci->socket_context : NULL;
  if (!e) return;
  pthread_mutex_lock(&h->conns_mu);
  e->headers = true;
  pthread_mutex_unlock(&h->conns_mu);
}

/* One tick of draining: waits up to LINGER_POLL_MS for the lingering sockets, reads what came
 * and closes those whose client finished (end of stream or error), sent past DISCARD_MAX, or
 * used up LINGER_S. Called by the reaper without conns_mu; it alone removes entries. */
static void drain_lingering(eddy_http_t *h) {
  struct pollfd pfd[LINGER_MAX];
  pthread_mutex_lock(&h->conns_mu);
  size_t n = h->n_lingering;
  for (size_t i = 0; i < n; i++) pfd[i] = (struct pollfd){.fd = h->lingering[i].fd, .events = POLLIN};
  pthread_mutex_unlock(&h->conns_mu);
  poll(pfd, n, LINGER_POLL_MS);
  double now = eddy_clock_mono_s();
  char buf[16384];
  pthread_mutex_lock(&h->conns_mu);
  for (size_t i = 0; i < h->n_lingering;) {
    linger_t *l = &h->lingering[i];
    bool done = false;
    for (int reads = 0; reads < LINGER_READS_PER_TICK; reads++) { /* bounded under the lock */
      ssize_t got = recv(l->fd, buf, sizeof buf, 0);
      if (got > 0) {
        l->drained += (uint64_t)got;
        if (l->drained > DISCARD_MAX) done = true;
        else continue;
      } else if (got == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        done = true;
      }
      break;
    }
    if (done || now >= l->until) {
      close(l->fd);
      *l = h->lingering[--h->n_lingering];
    } else {
      i++;
    }
  }
  pthread_mutex_unlock(&h->conns_mu);
}

/* Shuts down the connections past their header deadline (libmicrohttpd then sees the end of the
 * stream and closes them); logs the count at most every REAP_LOG_EVERY_S. */
static void *reaper_main(void *arg) {
  eddy_http_t *h = arg;
  pthread_mutex_lock(&h->conns_mu);
  while (!h->reaper_stop) {
    if (h->n_lingering) {
      pthread_mutex_unlock(&h->conns_mu);
      drain_lingering(h);
      pthread_mutex_lock(&h->conns_mu);
    } else {
      struct timespec dl = eddy_clock_deadline(CLOCK_MONOTONIC, REAP_EVERY_MS);
      pthread_cond_timedwait(&h->reaper_cv, &h->conns_mu, &dl);
    }
    double now = eddy_clock_mono_s();
    for (conn_entry_t *e = h->conns; e; e = e->next) {
      if (e->headers || e->cut || now - e->accepted < (double)h->header_timeout_s) continue;
      shutdown(e->fd, SHUT_RDWR);
      e->cut = true;
      h->reap_unlogged++;
      atomic_fetch_add(&h->header_timeouts, 1);
    }
    if (h->reap_unlogged && now - h->reap_logged >= REAP_LOG_EVERY_S) {
      EDDY_WARN("http", "%s: closed %llu connection(s) whose request headers were not complete %u s "
                "after they opened (http.header_timeout_seconds)",
                h->bind_text, (unsigned long long)h->reap_unlogged, h->header_timeout_s);
      h->reap_unlogged = 0;
      h->reap_logged = now;
    }
  }
  pthread_mutex_unlock(&h->conns_mu);
  return NULL;
}

/* The connection limit the open-file limit allows (the rest of the process keeps
 * EDDY_HTTP_FD_RESERVE descriptors). */
static unsigned fd_bound_limit(unsigned wanted) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return wanted;
  rlim_t room = rl.rlim_cur > EDDY_HTTP_FD_RESERVE + 64 ? rl.rlim_cur - EDDY_HTTP_FD_RESERVE : 64;
  return (rlim_t)wanted <= room ? wanted : (unsigned)room;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls) {
  (void)version;
  eddy_http_t *h = cls;
  eddy_http_req_t *req = *con_cls;
  if (!req) {
    req = calloc(1, sizeof *req);
    if (!req) return MHD_NO;
    req->path = strdup(url ? url : "/");
    if (!req->path) {
      free(req);
      return MHD_NO;
    }
    req->h = h;
    req->conn = conn;
    snprintf(req->method, sizeof req->method, "%s", method ? method : "");
    req->start_s = eddy_clock_mono_s();
    pthread_mutex_lock(&h->mu);
    atomic_fetch_add(&h->in_flight, 1);
    pthread_mutex_unlock(&h->mu);
    *con_cls = req;
    headers_arrived(h, conn);
    enum MHD_Result ok = begin_request(h, req);
    req->headers_done = 1;
    return ok;
  }
  if (req->status) { /* answered early; the rest is discarded */
    *upload_data_size = 0;
    return MHD_YES;
  }
  if (*upload_data_size > 0) {
    size_t n = *upload_data_size;
    *upload_data_size = 0;
    return take_body(h, req, upload_data, n);
  }
  if (req->pending) {
    enum MHD_Result ok = send_resp(req, req->pending);
    resp_clear(req->pending);
    free(req->pending);
    req->pending = NULL;
    return ok;
  }
  if (req->too_large)
    return reject(req, 413, NULL, NULL,
                      "request body of at least %llu bytes is over the limit of %llu bytes "
                      "(http.max_body_bytes)",
                      (unsigned long long)req->discarded, (unsigned long long)h->max_body);
  return run_handler(req);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  (void)conn;
  (void)toe;
  eddy_http_t *h = cls;
  eddy_http_req_t *req = *con_cls;
  if (!req) return;
  *con_cls = NULL;
  if (req->status) {
    double seconds = eddy_clock_mono_s() - req->start_s;
    atomic_fetch_add(&h->requests, 1);
    int cls_index = req->status / 100;
    if (cls_index >= 1 && cls_index <= 5) atomic_fetch_add(&h->by_class[cls_index], 1);
    if (h->on_request)
      h->on_request(h->on_request_ctx, req->method, req->route ? req->route->pattern : NULL,
                    req->status, seconds);
    EDDY_DEBUG("http", "%s %s %d %.3f ms", req->method, req->path, req->status, seconds * 1e3);
  }
  if (req->pending) {
    resp_clear(req->pending);
    free(req->pending);
  }
  free(req->param_buf);
  free(req->body);
  free(req->path);
  free(req);
  pthread_mutex_lock(&h->mu);
  atomic_fetch_sub(&h->in_flight, 1);
  pthread_cond_broadcast(&h->cv);
  pthread_mutex_unlock(&h->mu);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
  (void)cls;
  char line[512];
  vsnprintf(line, sizeof line, fmt, ap);
  size_t n = strlen(line);
  while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
  EDDY_WARN("http", "libmicrohttpd: %s", line);
}


/* Splits "host:port" / "[v6]:port" into host and port. */
static eddy_err_t parse_bind(const char *spec, char *host, size_t host_size, char *port,
                             size_t port_size, char *errstr, size_t errstr_size) {
  const char *colon;
  const char *host_start = spec;
  size_t host_len;
  if (spec[0] == '[') {
    const char *close_bracket = strchr(spec, ']');
    if (!close_bracket || close_bracket[1] != ':') goto bad;
    host_start = spec + 1;
    host_len = (size_t)(close_bracket - host_start);
    colon = close_bracket + 1;
  } else {
    colon = strrchr(spec, ':');
    if (!colon) goto bad;
    host_len = (size_t)(colon - spec);
    if (memchr(spec, ':', host_len)) goto bad; /* an IPv6 address needs brackets */
  }
  const char *p = colon + 1;
  size_t port_len = strlen(p);
  if (host_len == 0 || host_len >= host_size || port_len == 0 || port_len > 5 ||
      port_len >= port_size || strspn(p, "0123456789") != port_len || atoi(p) > 65535)
    goto bad;
  memcpy(host, host_start, host_len);
  host[host_len] = '\0';
  memcpy(port, p, port_len + 1);
  return EDDY_OK;
bad:
  return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size,
                   "http.bind \"%s\" is not host:port (e.g. 127.0.0.1:8080, [::1]:8080)", spec);
}

static eddy_err_t open_listener(eddy_http_t *h, const char *spec, char *errstr,
                                size_t errstr_size) {
  char host[256], port[8];
  eddy_err_t err = parse_bind(spec, host, sizeof host, port, sizeof port, errstr, errstr_size);
  if (err) return err;
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  int gai = getaddrinfo(host, port, &hints, &res);
  if (gai != 0)
    return eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "http.bind \"%s\": host \"%s\": %s",
                     spec, host, gai_strerror(gai));
  int last_errno = 0;
  const char *last_call = "bind";
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last_errno = errno;
      last_call = "socket";
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      last_errno = errno;
      last_call = "bind";
      close(fd);
      continue;
    }
    if (listen(fd, LISTEN_BACKLOG) != 0) {
      last_errno = errno;
      last_call = "listen";
      close(fd);
      continue;
    }
    struct sockaddr_storage ss;
    socklen_t ss_len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &ss_len) == 0) {
      char numeric_port[16];
      if (getnameinfo((struct sockaddr *)&ss, ss_len, NULL, 0, numeric_port, sizeof numeric_port,
                      NI_NUMERICSERV) == 0)
        h->port = (unsigned)atoi(numeric_port);
    }
    h->listen_fd = fd;
    snprintf(h->bind_text, sizeof h->bind_text, "%s%s%s:%u", strchr(host, ':') ? "[" : "", host,
             strchr(host, ':') ? "]" : "", h->port);
    freeaddrinfo(res);
    return EDDY_OK;
  }
  freeaddrinfo(res);
  return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "%s %s: %s%s", last_call, spec,
                   strerror(last_errno),
                   last_errno == EADDRINUSE ? " (another process listens there; change http.bind)"
                                            : "");
}

eddy_http_t *eddy_http_new(const eddy_http_opts_t *opts, char *errstr, size_t errstr_size) {
  eddy_http_opts_t defaults;
  memset(&defaults, 0, sizeof defaults);
  if (!opts) opts = &defaults;
  const char *spec = opts->bind && *opts->bind ? opts->bind : EDDY_HTTP_DEFAULT_BIND;
  unsigned threads = opts->threads ? opts->threads : EDDY_HTTP_DEFAULT_THREADS;
  if (threads > 256) {
    eddy_errf(EDDY_ERR_CONFIG, errstr, errstr_size, "http threads = %u is over 256", threads);
    return NULL;
  }
  size_t token_len = opts->token ? strlen(opts->token) : 0;
  if (token_len > EDDY_HTTP_TOKEN_MAX) {
    eddy_errf(EDDY_ERR_TOO_LARGE, errstr, errstr_size,
              "http bearer token of %zu bytes is over %d bytes", token_len, EDDY_HTTP_TOKEN_MAX);
    return NULL;
  }
  eddy_http_t *h = calloc(1, sizeof *h);
  if (!h) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
    return NULL;
  }
  h->listen_fd = -1;
  h->threads = threads;
  h->max_body = opts->max_body_bytes ? opts->max_body_bytes : EDDY_HTTP_DEFAULT_MAX_BODY;
  h->timeout_s = opts->timeout_s ? opts->timeout_s : EDDY_HTTP_DEFAULT_TIMEOUT_S;
  h->grace_ms = opts->grace_ms ? opts->grace_ms : EDDY_HTTP_DEFAULT_GRACE_MS;
  h->max_per_client = opts->max_per_client ? opts->max_per_client : EDDY_HTTP_DEFAULT_MAX_PER_CLIENT;
  h->header_timeout_s = opts->header_timeout_s ? opts->header_timeout_s : EDDY_HTTP_DEFAULT_HEADER_TIMEOUT_S;
  unsigned wanted = opts->max_connections ? opts->max_connections : EDDY_HTTP_DEFAULT_MAX_CONNECTIONS;
  h->max_connections = fd_bound_limit(wanted);
  if (h->max_connections < wanted)
    EDDY_WARN("http", "http.max_connections = %u lowered to %u: the open-file limit (ulimit -n) leaves "
              "no more; raise it (LimitNOFILE= in the systemd unit)", wanted, h->max_connections);
  h->on_request = opts->on_request;
  h->on_request_ctx = opts->on_request_ctx;
  if (token_len) {
    h->has_token = 1;
    eddy_sha256(opts->token, token_len, h->token_digest);
  }
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&h->cv, &ca);
  pthread_cond_init(&h->reaper_cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&h->mu, NULL);
  pthread_mutex_init(&h->conns_mu, NULL);
  if (open_listener(h, spec, errstr, errstr_size) != EDDY_OK) {
    eddy_http_destroy(h);
    return NULL;
  }
  return h;
}

eddy_err_t eddy_http_start(eddy_http_t *h, char *errstr, size_t errstr_size) {
  if (!h) return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "http start: no server");
  if (h->daemon || h->listen_fd < 0)
    return eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "http server on %s already started",
                     h->bind_text);
  unsigned flags =
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC | MHD_USE_ERROR_LOG;
  h->daemon = MHD_start_daemon(
      flags, 0, NULL, NULL, on_access, h, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h,
      MHD_OPTION_LISTEN_SOCKET, (MHD_socket)h->listen_fd, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
      (size_t)CONNECTION_MEMORY, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)h->timeout_s,
      MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
      MHD_OPTION_CONNECTION_LIMIT, (unsigned)h->max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
      (unsigned)h->max_per_client,
      h->threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, (unsigned)h->threads,
      MHD_OPTION_END);
  if (!h->daemon) {
    /* Depending on where it failed, libmicrohttpd may have closed our socket already. */
    if (fcntl(h->listen_fd, F_GETFD) < 0) h->listen_fd = -1;
    return eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size,
                     "http server on %s: libmicrohttpd failed to start (%u threads)", h->bind_text,
                     h->threads);
  }
  int rc = pthread_create(&h->reaper, NULL, reaper_main, h);
  if (rc != 0) {
    MHD_stop_daemon(h->daemon);
    h->daemon = NULL;
    h->listen_fd = -1;
    return eddy_errf(EDDY_ERR_STATE, errstr, errstr_size, "http server on %s: header deadline thread: %s",
                     h->bind_text, strerror(rc));
  }
  h->reaper_started = true;
  EDDY_INFO("http", "listening on http://%s (%u threads, body cap %llu bytes, %u connections, %u per client, "
            "headers within %u s%s)", h->bind_text, h->threads, (unsigned long long)h->max_body,
            h->max_connections, h->max_per_client, h->header_timeout_s,
            h->has_token ? "" : ", no bearer token: mutations disabled");
  return EDDY_OK;
}

unsigned eddy_http_port(const eddy_http_t *h) { return h ? h->port : 0; }

void eddy_http_stats(const eddy_http_t *h, eddy_http_stats_t *out) {
  if (!out) return;
  memset(out, 0, sizeof *out);
  if (!h) return;
  eddy_http_t *m = (eddy_http_t *)h; /* atomics are read through a non-const lvalue */
  out->requests = atomic_load(&m->requests);
  for (int i = 0; i < 6; i++) out->by_class[i] = atomic_load(&m->by_class[i]);
  out->in_flight = atomic_load(&m->in_flight);
  out->connections = atomic_load(&m->connections);
  out->header_timeouts = atomic_load(&m->header_timeouts);
}

void eddy_http_destroy(eddy_http_t *h) {
  if (!h) return;
  if (h->daemon) {
    MHD_socket quiesced = MHD_quiesce_daemon(h->daemon);
    struct timespec deadline = eddy_clock_deadline(CLOCK_MONOTONIC, h->grace_ms); /* h->cv's clock */
    pthread_mutex_lock(&h->mu);
    int timed_out = 0;
    while (atomic_load(&h->in_flight) > 0 && !timed_out)
      timed_out = pthread_cond_timedwait(&h->cv, &h->mu, &deadline) == ETIMEDOUT;
    uint64_t left = atomic_load(&h->in_flight);
    pthread_mutex_unlock(&h->mu);
    if (left)
      EDDY_WARN("http", "stopping %s with %llu request(s) still in flight after %u ms",
                h->bind_text, (unsigned long long)left, h->grace_ms);
    MHD_stop_daemon(h->daemon);
    h->daemon = NULL;
    /* Unless quiesced, libmicrohttpd closed the listening socket itself. */
    if (quiesced == MHD_INVALID_SOCKET) h->listen_fd = -1;
  }
  if (h->reaper_started) {
    pthread_mutex_lock(&h->conns_mu);
    h->reaper_stop = true;
    pthread_cond_broadcast(&h->reaper_cv);
    pthread_mutex_unlock(&h->conns_mu);
    pthread_join(h->reaper, NULL);
    for (size_t i = 0; i < h->n_lingering; i++) close(h->lingering[i].fd);
    h->n_lingering = 0;
  }
  if (h->listen_fd >= 0) close(h->listen_fd);
  for (size_t i = 0; i < h->n_routes; i++) route_free(&h->routes[i]);
  pthread_mutex_destroy(&h->mu);
  pthread_cond_destroy(&h->cv);
  pthread_mutex_destroy(&h->conns_mu);
  pthread_cond_destroy(&h->reaper_cv);
  explicit_bzero(h->token_digest, sizeof h->token_digest);
  free(h);
}


eddy_err_t eddy_http_load_token(const char *path, char *buf, size_t size, char *errstr,
                                size_t errstr_size) {
  if (!path || !*path || !buf || size == 0)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "http token file: no path");
  buf[0] = '\0';
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "http.token_file = \"%s\": %s", path,
                     strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return eddy_errf(EDDY_ERR_IO, errstr, errstr_size,
                     "http.token_file = \"%s\": not a regular file", path);
  }
  if (st.st_mode & (S_IRWXG | S_IRWXO))
    EDDY_WARN("http", "http.token_file %s is accessible by group or others (mode %04o); "
              "chmod 600 it", path, (unsigned)(st.st_mode & 07777));
  char data[TOKEN_FILE_MAX + 1];
  size_t len = 0;
  for (;;) {
    ssize_t n = read(fd, data + len, sizeof data - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "http.token_file = \"%s\": read: %s", path,
                       strerror(e));
    }
    if (n == 0 || (len += (size_t)n) == sizeof data) break;
  }
  close(fd);
  eddy_err_t err = EDDY_OK;
  if (len > TOKEN_FILE_MAX) {
    err = eddy_errf(EDDY_ERR_TOO_LARGE, errstr, errstr_size,
                    "http.token_file = \"%s\": file is over %d bytes", path, TOKEN_FILE_MAX);
    goto out;
  }
  while (len && (data[len - 1] == ' ' || data[len - 1] == '\t' || data[len - 1] == '\r' ||
                 data[len - 1] == '\n'))
    len--;
  if (len == 0) {
    err = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size,
                    "http.token_file = \"%s\": the token is empty", path);
    goto out;
  }
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)data[i];
    if (c <= 0x20 || c >= 0x7f) {
      err = eddy_errf(EDDY_ERR_FORMAT, errstr, errstr_size,
                      "http.token_file = \"%s\": byte %zu of the token is a space, control or "
                      "non-ASCII character",
                      path, i);
      goto out;
    }
  }
  if (len > EDDY_HTTP_TOKEN_MAX || len + 1 > size) {
    err = eddy_errf(EDDY_ERR_TOO_LARGE, errstr, errstr_size,
                    "http.token_file = \"%s\": token of %zu bytes is over %zu bytes", path, len,
                    len > EDDY_HTTP_TOKEN_MAX ? (size_t)EDDY_HTTP_TOKEN_MAX : size - 1);
    goto out;
  }
  memcpy(buf, data, len);
  buf[len] = '\0';
out:
  explicit_bzero(data, sizeof data);
  return err;
}
