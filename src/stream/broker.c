/* Embedded broker: a librdkafka mock cluster hosted by an otherwise idle producer handle, plus an
 * optional TCP forwarder from a fixed loopback port to broker 1 (the mock cluster of librdkafka
 * 2.0.2 always binds an ephemeral port). The forwarder relays bytes unchanged in both directions,
 * one poll() loop in one thread, with a bounded buffer per direction and a cap on connections. */
#include "stream/broker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "stream/broker_internal.h"

#define FWD_MAX_CONNS 64
#define FWD_BUF_BYTES (64 * 1024)
#define BOOTSTRAP_MAX 1024

/* One relayed connection: side 0 is the client, side 1 broker 1. buf[s] holds bytes read from
 * side s not yet written to the other side. */
typedef struct {
  int fd[2];
  size_t len[2], off[2];
  char buf[2][FWD_BUF_BYTES];
} fwd_conn_t;

struct eddy_broker {
  rd_kafka_t *rk;
  rd_kafka_mock_cluster_t *mcluster;
  int n_brokers;
  char bootstrap[BOOTSTRAP_MAX];
  /* forwarder (port > 0) */
  bool fwd_running;
  int listen_fd;
  int wake[2];
  struct sockaddr_in target;
  pthread_t thread;
  fwd_conn_t *conns[FWD_MAX_CONNS];
  int n_conns;
};

static void broker_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
  (void)rk;
  /* The hosting handle has no bootstrap servers by design; only real failures are worth a warning. */
  eddy_log(level <= 3 ? EDDY_LOG_WARN : EDDY_LOG_DEBUG, "broker", "librdkafka %s: %s", fac, buf);
}

static int set_nonblocking(int fd) {
  int flags = fcntl(fd, F_GETFL, 0);
  return flags < 0 ? -1 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

static void fwd_close(eddy_broker_t *b, int i) {
  fwd_conn_t *c = b->conns[i];
  close(c->fd[0]);
  close(c->fd[1]);
  free(c);
  b->conns[i] = b->conns[--b->n_conns];
  b->conns[b->n_conns] = NULL;
}

static void fwd_accept(eddy_broker_t *b) {
  int client = accept(b->listen_fd, NULL, NULL);
  if (client < 0) return;
  if (b->n_conns >= FWD_MAX_CONNS) {
    EDDY_WARN("broker", "forwarder: %d connections open, refusing one more", FWD_MAX_CONNS);
    close(client);
    return;
  }
  int upstream = socket(AF_INET, SOCK_STREAM, 0);
  if (upstream < 0 || connect(upstream, (struct sockaddr *)&b->target, sizeof b->target) < 0) {
    EDDY_WARN("broker", "forwarder: connect to broker 1 at port %d: %s", ntohs(b->target.sin_port),
              strerror(errno));
    if (upstream >= 0) close(upstream);
    close(client);
    return;
  }
  fwd_conn_t *c = calloc(1, sizeof *c);
  if (!c || set_nonblocking(client) < 0 || set_nonblocking(upstream) < 0) {
    free(c);
    close(client);
    close(upstream);
    return;
  }
  c->fd[0] = client;
  c->fd[1] = upstream;
  b->conns[b->n_conns++] = c;
}

/* Moves bytes for one side: reads from side s when its buffer is empty, writes the other side's
 * pending bytes to s. Returns false when the connection is finished (EOF, error, hang-up). */
static bool fwd_service(fwd_conn_t *c, int s, short revents) {
  int o = 1 - s;
  if (revents & (POLLERR | POLLNVAL)) return false;
  if ((revents & (POLLIN | POLLHUP)) && c->len[s] == 0) {
    ssize_t n = read(c->fd[s], c->buf[s], FWD_BUF_BYTES);
    if (n == 0) return false;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return false;
    if (n > 0) {
      c->len[s] = (size_t)n;
      c->off[s] = 0;
    }
  }
  /* Write what this side read to the other side, and what the other side read to this one. */
  for (int d = 0; d < 2; d++) {
    int from = d == 0 ? s : o;
    if (c->len[from] == 0) continue;
    ssize_t n = send(c->fd[1 - from], c->buf[from] + c->off[from], c->len[from], MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
      return false;
    }
    c->off[from] += (size_t)n;
    c->len[from] -= (size_t)n;
  }
  return true;
}

static void *fwd_thread(void *arg) {
  eddy_broker_t *b = arg;
  struct pollfd pfd[2 + 2 * FWD_MAX_CONNS];
  for (;;) {
    int n = 0;
    pfd[n++] = (struct pollfd){.fd = b->wake[0], .events = POLLIN};
    pfd[n++] = (struct pollfd){.fd = b->listen_fd, .events = POLLIN};
    for (int i = 0; i < b->n_conns; i++) {
      fwd_conn_t *c = b->conns[i];
      for (int s = 0; s < 2; s++) {
        short ev = 0;
        if (c->len[s] == 0) ev |= POLLIN;
        if (c->len[1 - s] > 0) ev |= POLLOUT;
        pfd[n++] = (struct pollfd){.fd = c->fd[s], .events = ev};
      }
    }
    if (poll(pfd, (nfds_t)n, -1) < 0) {
      if (errno == EINTR) continue;
      EDDY_ERROR("broker", "forwarder: poll: %s", strerror(errno));
      break;
    }
    if (pfd[0].revents) break;
    /* Connections first (their pollfd slots match b->conns only until one is added or closed). */
    for (int i = b->n_conns - 1; i >= 0; i--) {
      fwd_conn_t *c = b->conns[i];
      bool alive = true;
      for (int s = 0; s < 2 && alive; s++) {
        short re = pfd[2 + 2 * i + s].revents;
        if (re) alive = fwd_service(c, s, re);
      }
      if (!alive) fwd_close(b, i);
    }
    if (pfd[1].revents & POLLIN) fwd_accept(b);
  }
  return NULL;
}

static eddy_err_t fwd_start(eddy_broker_t *b, int port, int target_port, char *errstr,
                            size_t errstr_size) {
  b->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
  if (b->listen_fd < 0)
    return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "broker: socket: %s", strerror(errno));
  int on = 1;
  setsockopt(b->listen_fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  struct sockaddr_in addr = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(b->listen_fd, (struct sockaddr *)&addr, sizeof addr) < 0 ||
      listen(b->listen_fd, 64) < 0 || set_nonblocking(b->listen_fd) < 0)
    return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "broker: listen on 127.0.0.1:%d: %s", port,
                     strerror(errno));
  if (pipe(b->wake) < 0)
    return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "broker: pipe: %s", strerror(errno));
  b->target = (struct sockaddr_in){.sin_family = AF_INET,
                                   .sin_port = htons((uint16_t)target_port),
                                   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int rc = pthread_create(&b->thread, NULL, fwd_thread, b);
  if (rc != 0)
    return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "broker: forwarder thread: %s",
                     strerror(rc));
  b->fwd_running = true;
  return EDDY_OK;
}

eddy_broker_t *eddy_broker_new(int port, int n_brokers, char *errstr, size_t errstr_size) {
  if (port < 0 || port > 65535) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "broker: port %d is not in 0..65535",
              port);
    return NULL;
  }
  if (n_brokers < 1 || n_brokers > EDDY_BROKER_MAX_BROKERS) {
    eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "broker: %d brokers is not in 1..%d",
              n_brokers, EDDY_BROKER_MAX_BROKERS);
    return NULL;
  }
  eddy_broker_t *b = calloc(1, sizeof *b);
  if (!b) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "broker: out of memory");
    return NULL;
  }
  b->listen_fd = -1;
  b->wake[0] = b->wake[1] = -1;
  b->n_brokers = n_brokers;

  char why[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  if (rd_kafka_conf_set(conf, "client.id", "eddy-broker", why, sizeof why) != RD_KAFKA_CONF_OK) {
    rd_kafka_conf_destroy(conf);
    eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size, "broker: %s", why);
    free(b);
    return NULL;
  }
  rd_kafka_conf_set_log_cb(conf, broker_log_cb);
  b->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
  if (!b->rk) {
    rd_kafka_conf_destroy(conf);
    eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size, "broker: rd_kafka_new: %s", why);
    free(b);
    return NULL;
  }
  b->mcluster = rd_kafka_mock_cluster_new(b->rk, n_brokers);
  if (!b->mcluster) {
    eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size,
              "broker: librdkafka could not create a mock cluster of %d brokers", n_brokers);
    eddy_broker_destroy(b);
    return NULL;
  }
  const char *mock_bootstrap = rd_kafka_mock_cluster_bootstraps(b->mcluster);
  if (port == 0) {
    snprintf(b->bootstrap, sizeof b->bootstrap, "%s", mock_bootstrap);
    return b;
  }
  /* First broker's port: "127.0.0.1:PORT[,...]". */
  const char *colon = strchr(mock_bootstrap, ':');
  int target_port = colon ? atoi(colon + 1) : 0;
  if (target_port <= 0) {
    eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size,
              "broker: cannot read broker 1's port from \"%s\"", mock_bootstrap);
    eddy_broker_destroy(b);
    return NULL;
  }
  if (fwd_start(b, port, target_port, errstr, errstr_size) != EDDY_OK) {
    eddy_broker_destroy(b);
    return NULL;
  }
  snprintf(b->bootstrap, sizeof b->bootstrap, "127.0.0.1:%d", port);
  EDDY_DEBUG("broker", "forwarding 127.0.0.1:%d to broker 1 at 127.0.0.1:%d", port, target_port);
  return b;
}

void eddy_broker_destroy(eddy_broker_t *b) {
  if (!b) return;
  if (b->fwd_running) {
    char one = 1;
    ssize_t w;
    do {
      w = write(b->wake[1], &one, 1);
    } while (w < 0 && errno == EINTR);
    pthread_join(b->thread, NULL);
  }
  while (b->n_conns > 0) fwd_close(b, b->n_conns - 1);
  if (b->listen_fd >= 0) close(b->listen_fd);
  if (b->wake[0] >= 0) close(b->wake[0]);
  if (b->wake[1] >= 0) close(b->wake[1]);
  if (b->mcluster) rd_kafka_mock_cluster_destroy(b->mcluster);
  if (b->rk) rd_kafka_destroy(b->rk);
  free(b);
}

static bool topic_name_ok(const char *name) {
  size_t n = name ? strlen(name) : 0;
  if (n == 0 || n > 249 || !strcmp(name, ".") || !strcmp(name, "..")) return false;
  for (size_t i = 0; i < n; i++) {
    char ch = name[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
          ch == '.' || ch == '_' || ch == '-'))
      return false;
  }
  return true;
}

eddy_err_t eddy_broker_add_topic(eddy_broker_t *b, const char *name, int partitions, char *errstr,
                                 size_t errstr_size) {
  if (!b) return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "broker: NULL broker");
  if (!topic_name_ok(name))
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                     "broker: topic \"%s\" is not a Kafka topic name ([A-Za-z0-9._-]{1,249})",
                     name ? name : "(null)");
  if (partitions < 1 || partitions > 100000)
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                     "broker: topic %s: %d partitions is not in 1..100000", name, partitions);
  int replication = b->n_brokers < 3 ? b->n_brokers : 3;
  rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(b->mcluster, name, partitions, replication);
  if (err)
    return eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size, "broker: create topic %s: %s", name,
                     rd_kafka_err2str(err));
  return EDDY_OK;
}

const char *eddy_broker_bootstrap(const eddy_broker_t *b) { return b ? b->bootstrap : ""; }

int eddy_broker_count(const eddy_broker_t *b) { return b ? b->n_brokers : 0; }

static bool broker_id_ok(const eddy_broker_t *b, int32_t id) {
  return b && (id == -1 || (id >= 1 && id <= b->n_brokers));
}

eddy_err_t eddy_broker_set_down(eddy_broker_t *b, int32_t broker_id) {
  if (!broker_id_ok(b, broker_id)) return EDDY_ERR_INVALID_ARG;
  return rd_kafka_mock_broker_set_down(b->mcluster, broker_id) ? EDDY_ERR_BACKEND : EDDY_OK;
}

eddy_err_t eddy_broker_set_up(eddy_broker_t *b, int32_t broker_id) {
  if (!broker_id_ok(b, broker_id)) return EDDY_ERR_INVALID_ARG;
  return rd_kafka_mock_broker_set_up(b->mcluster, broker_id) ? EDDY_ERR_BACKEND : EDDY_OK;
}

eddy_err_t eddy_broker_set_rtt(eddy_broker_t *b, int32_t broker_id, int rtt_ms) {
  if (!broker_id_ok(b, broker_id) || rtt_ms < 0) return EDDY_ERR_INVALID_ARG;
  return rd_kafka_mock_broker_set_rtt(b->mcluster, broker_id, rtt_ms) ? EDDY_ERR_BACKEND : EDDY_OK;
}

eddy_err_t eddy_broker_push_request_errors(eddy_broker_t *b, int16_t api_key, size_t cnt,
                                           int kafka_err) {
  if (!b || api_key < 0 || cnt == 0 || cnt > 100000) return EDDY_ERR_INVALID_ARG;
  rd_kafka_resp_err_t *errs = malloc(cnt * sizeof *errs);
  if (!errs) return EDDY_ERR_NOMEM;
  for (size_t i = 0; i < cnt; i++) errs[i] = (rd_kafka_resp_err_t)kafka_err;
  rd_kafka_mock_push_request_errors_array(b->mcluster, api_key, cnt, errs);
  free(errs);
  return EDDY_OK;
}

rd_kafka_mock_cluster_t *eddy_broker_mock(eddy_broker_t *b) { return b ? b->mcluster : NULL; }

/* ---- control commands ---- */

static const struct {
  const char *name;
  int16_t key;
} api_names[] = {{"Produce", 0},         {"Fetch", 1},       {"ListOffsets", 2},
                 {"Metadata", 3},        {"OffsetCommit", 8}, {"OffsetFetch", 9},
                 {"FindCoordinator", 10}, {"JoinGroup", 11},  {"Heartbeat", 12},
                 {"LeaveGroup", 13},     {"SyncGroup", 14},  {"ApiVersions", 18},
                 {"InitProducerId", 22}};

static bool parse_long(const char *s, long min, long max, long *out) {
  char *end;
  errno = 0;
  long v = s ? strtol(s, &end, 10) : 0;
  if (!s || errno || end == s || *end || v < min || v > max) return false;
  *out = v;
  return true;
}

/* BROKER: an id of the cluster or "all" (-1). */
static bool parse_broker(const eddy_broker_t *b, const char *s, int32_t *id) {
  long v;
  if (s && !strcmp(s, "all")) {
    *id = -1;
    return true;
  }
  if (!parse_long(s, 1, b->n_brokers, &v)) return false;
  *id = (int32_t)v;
  return true;
}

static bool parse_api(const char *s, int16_t *key) {
  long v;
  for (size_t i = 0; s && i < sizeof api_names / sizeof api_names[0]; i++)
    if (!strcasecmp(s, api_names[i].name)) {
      *key = api_names[i].key;
      return true;
    }
  if (!parse_long(s, 0, 32767, &v)) return false;
  *key = (int16_t)v;
  return true;
}

/* A Kafka protocol error: librdkafka's name (NOT_LEADER_FOR_PARTITION) or its code (6). */
static bool parse_kafka_err(const char *s, int *code) {
  long v;
  if (parse_long(s, 1, 32767, &v)) {
    *code = (int)v;
    return true;
  }
  const struct rd_kafka_err_desc *descs;
  size_t n;
  rd_kafka_get_err_descs(&descs, &n);
  for (size_t i = 0; s && i < n; i++)
    if (descs[i].name && descs[i].code > 0 && !strcasecmp(s, descs[i].name)) {
      *code = descs[i].code;
      return true;
    }
  return false;
}

eddy_err_t eddy_broker_control(eddy_broker_t *b, const char *line, char *errstr,
                               size_t errstr_size) {
  if (!b || !line) return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "broker: NULL");
  char copy[256], *save = NULL, *word[5] = {0};
  if (strlen(line) >= sizeof copy)
    return eddy_errf(EDDY_ERR_TOO_LARGE, errstr, errstr_size,
                     "control: a command of %zu bytes is too long (at most %zu)", strlen(line),
                     sizeof copy - 1);
  snprintf(copy, sizeof copy, "%s", line);
  int n = 0;
  for (char *w = strtok_r(copy, " \t\r\n", &save); w; w = strtok_r(NULL, " \t\r\n", &save)) {
    if (n == 5)
      return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size, "control: \"%s\": too many words",
                       line);
    word[n++] = w;
  }
  if (n == 0 || word[0][0] == '#') return EDDY_OK;
  int32_t id;
  long v;
  int16_t api;
  int code;
  eddy_err_t err;
  if ((!strcmp(word[0], "down") || !strcmp(word[0], "up")) && n == 2) {
    if (!parse_broker(b, word[1], &id))
      return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                       "control: \"%s\": broker \"%s\" is not 1..%d or all", line, word[1],
                       b->n_brokers);
    err = word[0][0] == 'd' ? eddy_broker_set_down(b, id) : eddy_broker_set_up(b, id);
  } else if (!strcmp(word[0], "rtt") && n == 3) {
    if (!parse_broker(b, word[1], &id) || !parse_long(word[2], 0, 600000, &v))
      return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                       "control: \"%s\": want rtt BROKER MS (BROKER 1..%d or all, MS 0..600000)",
                       line, b->n_brokers);
    err = eddy_broker_set_rtt(b, id, (int)v);
  } else if (!strcmp(word[0], "errors") && n == 4) {
    if (!parse_api(word[1], &api))
      return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                       "control: \"%s\": \"%s\" is not a Kafka API name (Fetch, Produce, "
                       "OffsetCommit, ...) or key",
                       line, word[1]);
    if (!parse_long(word[2], 1, 100000, &v))
      return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                       "control: \"%s\": count \"%s\" is not 1..100000", line, word[2]);
    if (!parse_kafka_err(word[3], &code))
      return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                       "control: \"%s\": \"%s\" is not a Kafka error name "
                       "(NOT_LEADER_FOR_PARTITION, ...) or code",
                       line, word[3]);
    err = eddy_broker_push_request_errors(b, api, (size_t)v, code);
  } else {
    return eddy_errf(EDDY_ERR_INVALID_ARG, errstr, errstr_size,
                     "control: \"%s\": want down BROKER | up BROKER | rtt BROKER MS | errors API "
                     "COUNT ERROR",
                     line);
  }
  if (err)
    return eddy_errf(err, errstr, errstr_size, "control: \"%s\": the mock cluster refused it (%s)",
                     line, eddy_err_name(err));
  return EDDY_OK;
}
