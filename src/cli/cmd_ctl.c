/* `eddy ctl`: the command-line client of the trainer's admin API (libcurl). Prints readable
 * tables, or the server's JSON unchanged with --json. Exit 0 on a 2xx answer, 1 when the server
 * answers an error (its message is printed) or cannot be reached, 2 on a usage error. */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli/cli.h"
#include "config/config.h"
#include "http/client.h"
#include "http/server.h"

#define CTL_DEFAULT_URL "http://127.0.0.1:8080"
#define CTL_BODY_MAX (64u << 20) /* cap of an answer kept in memory */
#define CTL_DEFAULT_TIMEOUT_S 60  /* the server's POST /v1/snapshot waits up to 30 s */

static const char ctl_usage[] =
    "usage: eddy ctl [--url URL | -c CONFIG] [--token-file FILE] [--json] COMMAND\n\n"
    "Talks to a running `eddy train` over its admin HTTP API.\n\n"
    "commands:\n"
    "  status                          training state, step, buffer, metrics, versions\n"
    "  versions                        the published snapshot versions, newest first\n"
    "  rollback V [--retrain] [--skip A:B]\n"
    "                                  serve version V (42 or v000042); --retrain also restores\n"
    "                                  the trainer to V and re-trains from its cursor, skipping\n"
    "                                  buffer events with seq A..B (needs --retrain)\n"
    "  pause | resume                  stop / restart training (ingest goes on)\n"
    "  snapshot                        publish a version now and wait for the gate's verdict\n\n"
    "  -u, --url URL         trainer address (default " CTL_DEFAULT_URL ", or http://<http.bind>\n"
    "                        of CONFIG)\n"
    "  -c, --config FILE     take the address (http.bind) and token file (http.token_file) from\n"
    "                        an eddy config\n"
    "  -k, --token-file F    bearer token for the POST commands (default: $EDDY_TOKEN_FILE, then\n"
    "                        CONFIG's http.token_file)\n"
    "      --json            print the server's JSON answer instead of a table\n"
    "  -T, --timeout S       give up on a request after S seconds (default 60)\n"
    "  -h, --help            this text\n\n"
    "Exit: 0 on success, 1 when the server answers an error or cannot be reached, 2 usage or\n"
    "configuration error (a bad -c CONFIG or token file).\n";

typedef struct {
  const char *base;        /* http[s]://host:port[/prefix]; trailing '/' ignored */
  const char *token;       /* NULL: no Authorization header */
  long timeout_s;
} ctl_t;

/* Performs METHOD base+path with an optional JSON body. Returns the HTTP status (> 0) with the
 * answer in out, or -1 after printing the transport error. */
static long ctl_call(const ctl_t *ctl, const char *method, const char *path, const char *body,
                     eddy_http_answer_t *out) {
  memset(out, 0, sizeof *out);
  char url[1024];
  size_t blen = strlen(ctl->base);
  while (blen > 0 && ctl->base[blen - 1] == '/') blen--;
  if ((size_t)snprintf(url, sizeof url, "%.*s%s", (int)blen, ctl->base, path) >= sizeof url) {
    fprintf(stderr, "eddy ctl: URL too long: %s\n", ctl->base);
    return -1;
  }
  eddy_http_client_t *c = eddy_http_client_new("eddy-ctl/" EDDY_VERSION);
  if (!c) {
    fprintf(stderr, "eddy ctl: libcurl could not start\n");
    return -1;
  }
  eddy_http_request_t req = {.body = strcmp(method, "POST") == 0 ? (body ? body : "") : NULL,
                             .token = ctl->token,
                             .max_answer = CTL_BODY_MAX,
                             .connect_timeout_ms = 5000,
                             .timeout_ms = ctl->timeout_s * 1000};
  char err[1400];
  long status = -1;
  if (eddy_http_client_call(c, url, &req, out, err, sizeof err) == EDDY_OK) status = out->status;
  else fprintf(stderr, "eddy ctl: %s\n", err);
  eddy_http_client_destroy(c);
  return status;
}

/* Prints the server's error message for a non-2xx answer. */
static void print_http_error(const char *method, const char *path, long status,
                             const eddy_http_answer_t *b, bool have_token) {
  const char *msg = NULL;
  cJSON *j = b->body ? cJSON_ParseWithLength(b->body, b->len) : NULL;
  const cJSON *e = j ? cJSON_GetObjectItemCaseSensitive(j, "error") : NULL;
  if (cJSON_IsString(e)) msg = e->valuestring;
  if (msg)
    fprintf(stderr, "eddy ctl: %s %s: HTTP %ld: %s\n", method, path, status, msg);
  else
    fprintf(stderr, "eddy ctl: %s %s: HTTP %ld%s%.200s\n", method, path, status,
            b->len ? ": " : "", b->len ? b->body : "");
  if (status == 401 && !have_token)
    fprintf(stderr, "eddy ctl: pass --token-file FILE or set EDDY_TOKEN_FILE\n");
  cJSON_Delete(j);
}

/* ---- tables ---- */

static void fmt_value(const cJSON *v, char *out, size_t size) {
  if (!v || cJSON_IsNull(v)) {
    snprintf(out, size, "-");
  } else if (cJSON_IsBool(v)) {
    snprintf(out, size, "%s", cJSON_IsTrue(v) ? "true" : "false");
  } else if (cJSON_IsNumber(v)) {
    double d = v->valuedouble;
    if (d == floor(d) && fabs(d) < 1e15)
      snprintf(out, size, "%.0f", d);
    else
      snprintf(out, size, "%.6g", d);
  } else if (cJSON_IsString(v)) {
    snprintf(out, size, "%s", v->valuestring[0] ? v->valuestring : "\"\"");
  } else {
    char *t = cJSON_PrintUnformatted(v);
    snprintf(out, size, "%s", t ? t : "?");
    free(t);
  }
}

/* One "key value" line per scalar, nested objects flattened as parent.child; an array of objects
 * (e.g. prequential.per_class) is one "key[i] field=value ..." line per element. */
static void print_flat(const cJSON *obj, const char *prefix) {
  for (const cJSON *it = obj->child; it; it = it->next) {
    char key[256];
    if (prefix[0])
      snprintf(key, sizeof key, "%s.%s", prefix, it->string ? it->string : "?");
    else
      snprintf(key, sizeof key, "%s", it->string ? it->string : "?");
    if (cJSON_IsObject(it) && it->child) {
      print_flat(it, key);
      continue;
    }
    if (cJSON_IsArray(it) && cJSON_IsObject(it->child)) {
      int i = 0;
      for (const cJSON *e = it->child; e; e = e->next, i++) {
        char line[1024] = "", val[256], ekey[280];
        size_t n = 0;
        for (const cJSON *f = e->child; f && n < sizeof line; f = f->next) {
          fmt_value(f, val, sizeof val);
          n += (size_t)snprintf(line + n, sizeof line - n, "%s%s=%s", n ? " " : "", f->string ? f->string : "?", val);
        }
        snprintf(ekey, sizeof ekey, "%s[%d]", key, i);
        printf("%-28s %s\n", ekey, line);
      }
      continue;
    }
    char val[512];
    fmt_value(it, val, sizeof val);
    printf("%-28s %s\n", key, val);
  }
}

static const cJSON *get_path(const cJSON *obj, const char *a, const char *b) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, a);
  return b && v ? cJSON_GetObjectItemCaseSensitive(v, b) : v;
}

static void fmt_metric(const cJSON *v, char *out, size_t size) {
  if (cJSON_IsNumber(v))
    snprintf(out, size, "%.4f", v->valuedouble);
  else
    snprintf(out, size, "-");
}

static int print_versions(const cJSON *j) {
  const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "versions");
  if (!cJSON_IsArray(list)) {
    fprintf(stderr, "eddy ctl: the answer has no \"versions\" list\n");
    return EDDY_EXIT_FAILURE;
  }
  char model[128], current[32], count[32];
  fmt_value(cJSON_GetObjectItemCaseSensitive(j, "model"), model, sizeof model);
  fmt_value(cJSON_GetObjectItemCaseSensitive(j, "current"), current, sizeof current);
  fmt_value(cJSON_GetObjectItemCaseSensitive(j, "count"), count, sizeof count);
  printf("model %s, current version %s, %s versions\n", model, current, count);
  printf("%-8s %-9s %-3s %-3s %-7s %-24s %10s %12s %9s %9s %9s  %s\n", "VERSION", "STATUS",
         "CUR", "PIN", "PARENT", "CREATED", "STEP", "EXAMPLES", "PREQ_LOSS", "PREQ_ACC",
         "HOLD_ACC", "REASON");
  const cJSON *e;
  cJSON_ArrayForEach(e, list) {
    char ver[32], status[32], parent[32], created[48], step[32], ex[32], ll[32], acc[32],
        hold[32], reason[512];
    fmt_value(get_path(e, "version", NULL), ver, sizeof ver);
    fmt_value(get_path(e, "status", NULL), status, sizeof status);
    fmt_value(get_path(e, "parent", NULL), parent, sizeof parent);
    fmt_value(get_path(e, "created_at", NULL), created, sizeof created);
    fmt_value(get_path(e, "step", NULL), step, sizeof step);
    fmt_value(get_path(e, "examples", NULL), ex, sizeof ex);
    const cJSON *m = get_path(e, "metrics", NULL);
    fmt_metric(m ? get_path(m, "prequential", "logloss") : NULL, ll, sizeof ll);
    fmt_metric(m ? get_path(m, "prequential", "accuracy") : NULL, acc, sizeof acc);
    /* Prequential logloss and accuracy, and the holdout accuracy; "-" where the head has none. */
    fmt_metric(m ? get_path(m, "holdout", "accuracy") : NULL, hold, sizeof hold);
    const cJSON *err = get_path(e, "error", NULL);
    fmt_value(cJSON_IsString(err) ? err : get_path(e, "reason", NULL), reason, sizeof reason);
    printf("%-8s %-9s %-3s %-3s %-7s %-24s %10s %12s %9s %9s %9s  %s\n", ver,
           cJSON_IsString(err) ? "damaged" : status,
           cJSON_IsTrue(get_path(e, "current", NULL)) ? "*" : "",
           cJSON_IsTrue(get_path(e, "pinned", NULL)) ? "*" : "", parent, created, step, ex, ll,
           acc, hold, reason);
  }
  return EDDY_EXIT_OK;
}

static int print_answer(const char *cmd, const cJSON *j) {
  if (strcmp(cmd, "versions") == 0) return print_versions(j);
  if (strcmp(cmd, "rollback") == 0) {
    char ver[32], cur[32];
    fmt_value(get_path(j, "version", NULL), ver, sizeof ver);
    fmt_value(get_path(j, "current_version", NULL), cur, sizeof cur);
    const cJSON *skip = get_path(j, "skip", NULL);
    if (cJSON_IsTrue(get_path(j, "retrain", NULL))) {
      char skiptext[96] = "";
      if (cJSON_IsArray(skip) && cJSON_GetArraySize(skip) == 2)
        snprintf(skiptext, sizeof skiptext, ", skipping events %.0f..%.0f",
                 cJSON_GetArrayItem(skip, 0)->valuedouble,
                 cJSON_GetArrayItem(skip, 1)->valuedouble);
      printf("rolled back to version %s and re-training from its state%s; current version %s\n",
             ver, skiptext, cur);
    } else {
      printf("rolled back to version %s (serve only; training goes on); current version %s\n",
             ver, cur);
    }
    return EDDY_EXIT_OK;
  }
  if (strcmp(cmd, "snapshot") == 0) {
    char ver[32], status[32], reason[512], cur[32];
    fmt_value(get_path(j, "version", NULL), ver, sizeof ver);
    fmt_value(get_path(j, "status", NULL), status, sizeof status);
    fmt_value(get_path(j, "reason", NULL), reason, sizeof reason);
    fmt_value(get_path(j, "current_version", NULL), cur, sizeof cur);
    printf("published version %s: %s%s%s%s; current version %s\n", ver, status,
           strcmp(reason, "-") ? " (" : "", strcmp(reason, "-") ? reason : "",
           strcmp(reason, "-") ? ")" : "", cur);
    return EDDY_EXIT_OK;
  }
  if (strcmp(cmd, "pause") == 0 || strcmp(cmd, "resume") == 0) {
    char state[32];
    fmt_value(get_path(j, "state", NULL), state, sizeof state);
    printf("training %s (state: %s)\n", strcmp(cmd, "pause") == 0 ? "paused" : "resumed", state);
    return EDDY_EXIT_OK;
  }
  print_flat(j, "");
  return EDDY_EXIT_OK;
}

/* ---- arguments ---- */

/* "42" or "v000042" (digits only) into 1..2^53. */
static int parse_version_arg(const char *text, uint64_t *out) {
  if (*text == 'v') text++;
  if (!*text || strlen(text) > 16) return -1;
  uint64_t v = 0;
  for (const char *p = text; *p; p++) {
    if (*p < '0' || *p > '9') return -1;
    v = v * 10 + (uint64_t)(*p - '0');
  }
  if (v == 0 || v > 9007199254740992ull) return -1;
  *out = v;
  return 0;
}

static int parse_seq(const char *text, size_t len, uint64_t *out) {
  if (len == 0 || len > 16) return -1;
  uint64_t v = 0;
  for (size_t i = 0; i < len; i++) {
    if (text[i] < '0' || text[i] > '9') return -1;
    v = v * 10 + (uint64_t)(text[i] - '0');
  }
  if (v > 9007199254740992ull) return -1;
  *out = v;
  return 0;
}

/* http://<bind>, with a wildcard host replaced by loopback. */
static void url_from_bind(const char *bind, char *out, size_t size) {
  const char *colon = strrchr(bind, ':');
  if (!colon) {
    snprintf(out, size, "http://%s", bind);
    return;
  }
  int hostlen = (int)(colon - bind);
  if ((hostlen == 7 && strncmp(bind, "0.0.0.0", 7) == 0) || hostlen == 0)
    snprintf(out, size, "http://127.0.0.1%s", colon);
  else if (hostlen == 4 && strncmp(bind, "[::]", 4) == 0)
    snprintf(out, size, "http://[::1]%s", colon);
  else
    snprintf(out, size, "http://%s", bind);
}

int eddy_cmd_ctl(int argc, char **argv) {
  static const struct option opts[] = {
      {"url", required_argument, NULL, 'u'},
      EDDY_CLI_OPT_CONFIG,
      {"token-file", required_argument, NULL, 'k'},
      {"json", no_argument, NULL, 'j'},
      {"timeout", required_argument, NULL, 'T'},
      {"retrain", no_argument, NULL, 'r'},
      {"skip", required_argument, NULL, 'S'},
      EDDY_CLI_OPT_HELP,
      {NULL, 0, NULL, 0},
  };
  eddy_cli_t cli = {.cmd = "ctl", .usage = ctl_usage, .operands = true};
  const char *url = NULL, *token_file = NULL, *skip = NULL;
  bool json = false, retrain = false;
  long timeout_s = CTL_DEFAULT_TIMEOUT_S;
  int c;
  while ((c = eddy_cli_getopt(&cli, argc, argv, "u:c:k:T:h", opts)) != -1) {
    switch (c) {
      case 'u': url = optarg; break;
      case 'k': token_file = optarg; break;
      case 'j': json = true; break;
      case 'r': retrain = true; break;
      case 'S': skip = optarg; break;
      case 'T': {
        char *end;
        timeout_s = strtol(optarg, &end, 10);
        if (*end || end == optarg || timeout_s < 1 || timeout_s > 3600) {
          fprintf(stderr, "eddy ctl: --timeout \"%s\" is not a number of seconds (1..3600)\n",
                  optarg);
          return EDDY_EXIT_USAGE;
        }
        break;
      }
      default: return cli.exit; /* EDDY_CLI_STOP: --help or a usage error, printed */
    }
  }
  if (optind >= argc) {
    fprintf(stderr, "eddy ctl: a command is required (status, versions, rollback, pause, resume, "
                    "snapshot)\n");
    fputs(ctl_usage, stderr);
    return EDDY_EXIT_USAGE;
  }
  const char *cmd = argv[optind++];
  int nargs = argc - optind;
  const char *method = "GET", *path = NULL;
  char body[256] = "";
  if (strcmp(cmd, "status") == 0) path = "/v1/status";
  else if (strcmp(cmd, "versions") == 0) path = "/v1/versions";
  else if (strcmp(cmd, "pause") == 0) method = "POST", path = "/v1/pause";
  else if (strcmp(cmd, "resume") == 0) method = "POST", path = "/v1/resume";
  else if (strcmp(cmd, "snapshot") == 0) method = "POST", path = "/v1/snapshot";
  else if (strcmp(cmd, "rollback") == 0) method = "POST", path = "/v1/rollback";
  else {
    fprintf(stderr, "eddy ctl: unknown command \"%s\" (status, versions, rollback, pause, resume, "
                    "snapshot)\n", cmd);
    return EDDY_EXIT_USAGE;
  }
  bool is_rollback = strcmp(cmd, "rollback") == 0;
  if (nargs != (is_rollback ? 1 : 0)) {
    if (is_rollback)
      fprintf(stderr, "eddy ctl: rollback takes one version (eddy ctl rollback V)\n");
    else
      fprintf(stderr, "eddy ctl: %s takes no argument (got \"%s\")\n", cmd, argv[optind]);
    return EDDY_EXIT_USAGE;
  }
  if (!is_rollback && (retrain || skip)) {
    fprintf(stderr, "eddy ctl: --retrain and --skip go with rollback only\n");
    return EDDY_EXIT_USAGE;
  }
  if (is_rollback) {
    uint64_t version, from = 0, to = 0;
    if (parse_version_arg(argv[optind], &version) != 0) {
      fprintf(stderr, "eddy ctl: rollback: \"%s\" is not a version (42 or v000042)\n",
              argv[optind]);
      return EDDY_EXIT_USAGE;
    }
    if (skip) {
      const char *colon = strchr(skip, ':');
      if (!colon || parse_seq(skip, (size_t)(colon - skip), &from) != 0 ||
          parse_seq(colon + 1, strlen(colon + 1), &to) != 0 || from > to) {
        fprintf(stderr, "eddy ctl: --skip \"%s\" is not FROM:TO (event seqs, FROM <= TO)\n",
                skip);
        return EDDY_EXIT_USAGE;
      }
      if (!retrain) {
        fprintf(stderr, "eddy ctl: --skip needs --retrain (a serve-only rollback trains "
                        "nothing)\n");
        return EDDY_EXIT_USAGE;
      }
    }
    if (skip)
      snprintf(body, sizeof body,
               "{\"version\": %" PRIu64 ", \"retrain\": true, \"skip\": [%" PRIu64 ", %" PRIu64
               "]}",
               version, from, to);
    else
      snprintf(body, sizeof body, "{\"version\": %" PRIu64 ", \"retrain\": %s}", version,
               retrain ? "true" : "false");
  }

  char base[EDDY_CONFIG_STR + 16];
  char cfg_token_file[EDDY_CONFIG_STR] = "";
  if (cli.config_path) {
    eddy_config_t cfg;
    int rc = eddy_cli_load_config(&cli, 0, &cfg);
    if (rc != EDDY_EXIT_OK) return rc;
    url_from_bind(cfg.http_bind, base, sizeof base);
    snprintf(cfg_token_file, sizeof cfg_token_file, "%s", cfg.http_token_file);
    eddy_config_free(&cfg);
  } else {
    snprintf(base, sizeof base, "%s", CTL_DEFAULT_URL);
  }
  if (url) snprintf(base, sizeof base, "%s", url);
  if (strncmp(base, "http://", 7) != 0 && strncmp(base, "https://", 8) != 0) {
    fprintf(stderr, "eddy ctl: --url \"%s\" is not an http:// or https:// URL\n", base);
    return EDDY_EXIT_USAGE;
  }

  char token[EDDY_HTTP_TOKEN_MAX + 1] = "";
  if (strcmp(method, "POST") == 0) {
    if (!token_file) token_file = getenv("EDDY_TOKEN_FILE");
    if ((!token_file || !token_file[0]) && cfg_token_file[0]) token_file = cfg_token_file;
    if (token_file && token_file[0]) {
      char err[512];
      if (eddy_http_load_token(token_file, token, sizeof token, err, sizeof err) != EDDY_OK) {
        fprintf(stderr, "eddy ctl: token file: %s\n", err);
        return EDDY_EXIT_USAGE;
      }
    }
  }

  ctl_t ctl = {.base = base, .token = token[0] ? token : NULL, .timeout_s = timeout_s};
  eddy_http_answer_t answer;
  long status = ctl_call(&ctl, method, path, method[0] == 'P' ? body : NULL, &answer);
  memset(token, 0, sizeof token);
  int rc = EDDY_EXIT_FAILURE;
  if (status < 0) {
    /* printed by ctl_call */
  } else if (status < 200 || status > 299) {
    print_http_error(method, path, status, &answer, ctl.token != NULL);
  } else if (json) {
    if (answer.len) {
      fwrite(answer.body, 1, answer.len, stdout);
      if (answer.body[answer.len - 1] != '\n') fputc('\n', stdout);
    }
    rc = EDDY_EXIT_OK;
  } else {
    cJSON *j = answer.body ? cJSON_ParseWithLength(answer.body, answer.len) : NULL;
    if (!cJSON_IsObject(j)) {
      fprintf(stderr, "eddy ctl: %s %s: the answer is not a JSON object\n", method, path);
    } else {
      rc = print_answer(cmd, j);
    }
    cJSON_Delete(j);
  }
  if (fflush(stdout) != 0) rc = EDDY_EXIT_FAILURE;
  eddy_http_answer_free(&answer);
  return rc;
}
