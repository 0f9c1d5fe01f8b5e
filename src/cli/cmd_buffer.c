/* `eddy buffer inspect`: what a replay buffer holds -- event count, sequence range, bytes,
 * evictions, stored Kafka positions, labels, the reservoir and dead letters with a few examples;
 * for the buffers of trainer ranks (DIR/rank-N, one per rank), the totals and each rank's share.
 * Opens the buffers read-only, so it works while an ingesting process has them open, and never
 * creates one. */
#include <dirent.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "buffer/replay.h"
#include "cli/cli.h"

#define RAW_PREFIX 80
#define EXAMPLES_MAX 1000

static const char buffer_usage[] =
    "usage: eddy buffer inspect --path DIR [--json] [--examples N]\n\n"
    "Shows what the replay buffer in DIR holds: stored events and their sequence range, encoded\n"
    "bytes, events evicted so far, the next Kafka offset stored per topic/partition, event counts\n"
    "per label, the class-balanced reservoir, dead letters by reason and the newest examples.\n"
    "The buffer is opened read-only (a running ingest may keep writing; what is shown is the state\n"
    "when it was opened). A missing DIR is an error; nothing is created.\n"
    "When DIR holds the buffers of trainer ranks (DIR/rank-0, DIR/rank-1, ...: buffer.path of a job\n"
    "of R ranks), the totals and each rank's share are shown: events, sequence range, bytes, dead\n"
    "letters and the partitions it stores; --path DIR/rank-N shows one rank's buffer in full.\n\n"
    "  -p, --path DIR       the buffer folder (buffer.path of the config)\n"
    "  -n, --examples N     dead letters shown, newest first (default 5, 0..1000)\n"
    "      --json           print one JSON object on stdout instead of text\n"
    "  -h, --help           this text\n\n"
    "Exit: 0 ok, 1 the buffer cannot be opened or read, 2 usage error.\n";

/* Printable text of the first bytes of a payload: ASCII kept, anything else as \\xNN. */
static void raw_prefix(const void *raw, size_t len, char *out, size_t cap) {
  const unsigned char *p = raw;
  size_t o = 0, n = len < RAW_PREFIX ? len : RAW_PREFIX;
  for (size_t i = 0; i < n && o + 5 < cap; i++) {
    if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\') {
      out[o++] = (char)p[i];
    } else {
      o += (size_t)snprintf(out + o, cap - o, "\\x%02x", p[i]);
    }
  }
  if (len > n && o + 4 < cap) o += (size_t)snprintf(out + o, cap - o, "...");
  out[o < cap ? o : cap - 1] = 0;
}

typedef struct {
  bool json;
  cJSON *arr; /* JSON: the array being filled */
  size_t n;
} emit_t;

static void on_offset(void *ctx, const char *topic, int32_t partition, int64_t next) {
  emit_t *e = ctx;
  if (e->json) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "topic", topic);
    cJSON_AddNumberToObject(o, "partition", partition);
    cJSON_AddNumberToObject(o, "next_offset", (double)next);
    cJSON_AddItemToArray(e->arr, o);
  } else {
    if (!e->n) printf("stored offsets (next offset to consume):\n");
    printf("  %s/%" PRId32 "  %" PRId64 "\n", topic, partition, next);
  }
  e->n++;
}

static void on_label(void *ctx, int64_t label, uint64_t count) {
  emit_t *e = ctx;
  char name[32];
  if (label == INT64_MIN) snprintf(name, sizeof name, "other");
  else snprintf(name, sizeof name, "%" PRId64, label);
  if (e->json) {
    cJSON_AddNumberToObject(e->arr, name, (double)count);
  } else {
    if (!e->n) printf("events per label:\n");
    printf("  %-8s %" PRIu64 "\n", name, count);
  }
  e->n++;
}

static void on_reservoir(void *ctx, uint32_t cls, uint64_t kept, uint64_t seen) {
  emit_t *e = ctx;
  if (e->json) {
    char name[16];
    snprintf(name, sizeof name, "%u", cls);
    cJSON *o = cJSON_AddObjectToObject(e->arr, name);
    cJSON_AddNumberToObject(o, "kept", (double)kept);
    cJSON_AddNumberToObject(o, "seen", (double)seen);
  } else {
    if (!e->n) printf("reservoir (class: kept of seen):\n");
    printf("  %-8u %" PRIu64 " of %" PRIu64 "\n", cls, kept, seen);
  }
  e->n++;
}

static void on_dead_letter(void *ctx, const eddy_dead_letter_t *dl) {
  emit_t *e = ctx;
  char raw[RAW_PREFIX * 4 + 8];
  raw_prefix(dl->raw, dl->raw_len, raw, sizeof raw);
  if (e->json) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "topic", dl->topic);
    cJSON_AddNumberToObject(o, "partition", dl->partition);
    cJSON_AddNumberToObject(o, "offset", (double)dl->offset);
    cJSON_AddNumberToObject(o, "ts", (double)dl->ts_ms);
    cJSON_AddStringToObject(o, "reason", eddy_err_name(dl->reason));
    cJSON_AddStringToObject(o, "message", dl->message);
    cJSON_AddStringToObject(o, "raw_prefix", raw);
    cJSON_AddNumberToObject(o, "raw_bytes_kept", (double)dl->raw_len);
    cJSON_AddItemToArray(e->arr, o);
  } else {
    if (!e->n) printf("newest dead letters:\n");
    printf("  %s/%" PRId32 " offset %" PRId64 "  %s: %s\n    raw: %s\n", dl->topic, dl->partition, dl->offset,
           eddy_err_name(dl->reason), dl->message, raw);
  }
  e->n++;
}

static int inspect(const char *path, bool json, size_t examples) {
  eddy_replay_opts_t opts = {.path = path, .read_only = true};
  char errstr[1024] = "";
  eddy_replay_t *r = eddy_replay_new(&opts, errstr, sizeof errstr);
  if (!r) {
    fprintf(stderr, "eddy buffer: %s\n", errstr);
    return EDDY_EXIT_FAILURE;
  }
  eddy_replay_stats_t st = eddy_replay_stats(r);
  uint64_t by_reason[EDDY_ERR__COUNT];
  int rc = EDDY_EXIT_OK;
  if (json) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "path", path);
    cJSON_AddNumberToObject(o, "events", (double)st.events);
    cJSON_AddNumberToObject(o, "first_seq", (double)st.first_seq);
    cJSON_AddNumberToObject(o, "next_seq", (double)st.next_seq);
    cJSON_AddNumberToObject(o, "bytes", (double)st.bytes);
    cJSON_AddNumberToObject(o, "evicted", (double)st.evicted);
    cJSON_AddNumberToObject(o, "dead_letters", (double)st.dead_letters);
    cJSON_AddNumberToObject(o, "dead_letters_total", (double)st.dead_letters_total);
    emit_t e = {.json = true, .arr = cJSON_AddArrayToObject(o, "offsets")};
    eddy_replay_offsets_each(r, on_offset, &e);
    e = (emit_t){.json = true, .arr = cJSON_AddObjectToObject(o, "labels")};
    eddy_replay_label_counts(r, on_label, &e);
    e = (emit_t){.json = true, .arr = cJSON_AddObjectToObject(o, "reservoir")};
    eddy_replay_reservoir_counts(r, on_reservoir, &e);
    e = (emit_t){.json = true, .arr = cJSON_AddArrayToObject(o, "dead_letter_examples")};
    eddy_replay_dead_letters(r, examples, on_dead_letter, &e, by_reason);
    cJSON *by = cJSON_AddObjectToObject(o, "dead_letters_by_reason");
    for (int i = 0; i < EDDY_ERR__COUNT; i++)
      if (by_reason[i]) cJSON_AddNumberToObject(by, eddy_err_name((eddy_err_t)i), (double)by_reason[i]);
    char *text = cJSON_PrintUnformatted(o);
    if (text) {
      printf("%s\n", text);
      free(text);
    } else {
      fprintf(stderr, "eddy buffer: out of memory\n");
      rc = EDDY_EXIT_FAILURE;
    }
    cJSON_Delete(o);
  } else {
    printf("buffer %s\n", path);
    if (st.events)
      printf("events        %" PRIu64 " (seq %" PRIu64 "..%" PRIu64 ")\n", st.events, st.first_seq, st.next_seq - 1);
    else
      printf("events        0 (empty; next seq %" PRIu64 ")\n", st.next_seq);
    printf("bytes         %" PRIu64 " (encoded events)\n", st.bytes);
    printf("evicted       %" PRIu64 "\n", st.evicted);
    printf("dead letters  %" PRIu64 " stored", st.dead_letters);
    if (st.dead_letters_total != st.dead_letters)
      printf(" (%" PRIu64 " in all, the oldest dropped)", st.dead_letters_total);
    printf("\n");
    emit_t e = {0};
    eddy_replay_offsets_each(r, on_offset, &e);
    if (!e.n) printf("stored offsets: none\n");
    e = (emit_t){0};
    eddy_replay_label_counts(r, on_label, &e);
    e = (emit_t){0};
    eddy_replay_reservoir_counts(r, on_reservoir, &e);
    /* reasons first, then the examples */
    eddy_replay_dead_letters(r, 0, NULL, NULL, by_reason);
    bool any = false;
    for (int i = 0; i < EDDY_ERR__COUNT; i++)
      if (by_reason[i]) {
        if (!any) printf("dead letters by reason:\n");
        any = true;
        printf("  %-24s %" PRIu64 "\n", eddy_err_name((eddy_err_t)i), by_reason[i]);
      }
    e = (emit_t){0};
    eddy_replay_dead_letters(r, examples, on_dead_letter, &e, NULL);
  }
  eddy_replay_destroy(r);
  return rc;
}

#define RANKS_MAX 4096

static int cmp_int(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}

/* The N of every DIR/rank-N folder, sorted, into ranks; their count (0: none). */
static int rank_folders(const char *dir, int *ranks, int max) {
  DIR *d = opendir(dir);
  if (!d) return 0;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) && n < max) {
    int r = -1, len = 0;
    if (sscanf(e->d_name, "rank-%d%n", &r, &len) == 1 && r >= 0 && e->d_name[len] == '\0' &&
        (e->d_type == DT_DIR || e->d_type == DT_UNKNOWN))
      ranks[n++] = r;
  }
  closedir(d);
  qsort(ranks, (size_t)n, sizeof *ranks, cmp_int);
  return n;
}

typedef struct {
  int rank;
  cJSON *arr;       /* JSON: every offset, with its rank */
  char parts[256];  /* text: the partitions this rank stores */
  size_t len;
} rank_offsets_t;

static void on_rank_offset(void *ctx, const char *topic, int32_t partition, int64_t next) {
  rank_offsets_t *e = ctx;
  cJSON *o = cJSON_CreateObject();
  if (o) {
    cJSON_AddNumberToObject(o, "rank", e->rank);
    cJSON_AddStringToObject(o, "topic", topic);
    cJSON_AddNumberToObject(o, "partition", partition);
    cJSON_AddNumberToObject(o, "next_offset", (double)next);
    cJSON_AddItemToArray(e->arr, o);
  }
  if (e->len < sizeof e->parts - 16) {
    int w = snprintf(e->parts + e->len, sizeof e->parts - e->len, "%s%" PRId32, e->len ? "," : "", partition);
    e->len += w > 0 ? (size_t)w : 0;
  }
}

/* The buffers of n ranks under dir: each one's share and the totals. */
static int inspect_ranks(const char *dir, const int *ranks, int n, bool json) {
  cJSON *o = cJSON_CreateObject(), *list = cJSON_AddArrayToObject(o, "ranks"), *offsets = cJSON_CreateArray();
  uint64_t events = 0, bytes = 0, dead = 0;
  int rc = EDDY_EXIT_OK;
  eddy_replay_stats_t *st = calloc((size_t)n, sizeof *st);
  rank_offsets_t *parts = calloc((size_t)n, sizeof *parts);
  if (!o || !list || !offsets || !st || !parts) {
    fprintf(stderr, "eddy buffer: out of memory\n");
    rc = EDDY_EXIT_FAILURE;
    goto out;
  }
  for (int i = 0; i < n; i++) {
    char path[4096], errstr[1024] = "";
    if (eddy_replay_rank_path(dir, ranks[i], path, sizeof path) != EDDY_OK) continue;
    eddy_replay_opts_t opts = {.path = path, .read_only = true};
    eddy_replay_t *r = eddy_replay_new(&opts, errstr, sizeof errstr);
    if (!r) {
      fprintf(stderr, "eddy buffer: rank %d: %s\n", ranks[i], errstr);
      rc = EDDY_EXIT_FAILURE;
      continue;
    }
    st[i] = eddy_replay_stats(r);
    parts[i] = (rank_offsets_t){.rank = ranks[i], .arr = offsets};
    eddy_replay_offsets_each(r, on_rank_offset, &parts[i]);
    eddy_replay_destroy(r);
    events += st[i].events;
    bytes += st[i].bytes;
    dead += st[i].dead_letters;
  }
  if (json) {
    cJSON_AddStringToObject(o, "path", dir);
    cJSON_AddNumberToObject(o, "events", (double)events);
    cJSON_AddNumberToObject(o, "bytes", (double)bytes);
    cJSON_AddNumberToObject(o, "dead_letters", (double)dead);
    for (int i = 0; i < n; i++) {
      cJSON *e = cJSON_CreateObject();
      if (!e) break;
      cJSON_AddItemToArray(list, e);
      cJSON_AddNumberToObject(e, "rank", ranks[i]);
      cJSON_AddNumberToObject(e, "events", (double)st[i].events);
      cJSON_AddNumberToObject(e, "share", events ? (double)st[i].events / (double)events : 0.0);
      cJSON_AddNumberToObject(e, "first_seq", (double)st[i].first_seq);
      cJSON_AddNumberToObject(e, "next_seq", (double)st[i].next_seq);
      cJSON_AddNumberToObject(e, "bytes", (double)st[i].bytes);
      cJSON_AddNumberToObject(e, "evicted", (double)st[i].evicted);
      cJSON_AddNumberToObject(e, "dead_letters", (double)st[i].dead_letters);
    }
    cJSON_AddItemToObject(o, "offsets", offsets);
    offsets = NULL;
    char *text = cJSON_PrintUnformatted(o);
    if (text) printf("%s\n", text);
    else rc = EDDY_EXIT_FAILURE;
    free(text);
  } else {
    printf("buffers of %d ranks under %s\n", n, dir);
    printf("%-6s %12s %7s %21s %14s %12s  %s\n", "rank", "events", "share", "seq range", "bytes", "dead letters",
           "partitions stored");
    for (int i = 0; i < n; i++) {
      char range[48] = "-";
      if (st[i].events)
        snprintf(range, sizeof range, "%" PRIu64 "..%" PRIu64, st[i].first_seq, st[i].next_seq - 1);
      printf("%-6d %12" PRIu64 " %6.1f%% %21s %14" PRIu64 " %12" PRIu64 "  %s\n", ranks[i], st[i].events,
             events ? 100.0 * (double)st[i].events / (double)events : 0.0, range, st[i].bytes, st[i].dead_letters,
             parts[i].len ? parts[i].parts : "none");
    }
    printf("%-6s %12" PRIu64 " %6.1f%% %21s %14" PRIu64 " %12" PRIu64 "\n", "total", events, events ? 100.0 : 0.0, "",
           bytes, dead);
  }
out:
  cJSON_Delete(offsets);
  cJSON_Delete(o);
  free(st);
  free(parts);
  return rc;
}

int eddy_cmd_buffer(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
    fputs(buffer_usage, argc < 2 ? stderr : stdout);
    return argc < 2 ? EDDY_EXIT_USAGE : EDDY_EXIT_OK;
  }
  if (strcmp(argv[1], "inspect")) {
    fprintf(stderr, "eddy buffer: unknown subcommand '%s'\n%s", argv[1], buffer_usage);
    return EDDY_EXIT_USAGE;
  }
  argc--;
  argv++;
  static const struct option opts[] = {{"path", required_argument, NULL, 'p'},
                                       {"examples", required_argument, NULL, 'n'},
                                       {"json", no_argument, NULL, 'j'},
                                       EDDY_CLI_OPT_HELP,
                                       {NULL, 0, NULL, 0}};
  const char *path = NULL;
  bool json = false;
  size_t examples = 5;
  eddy_cli_t cli = {.cmd = "buffer", .usage = buffer_usage};
  int c;
  while ((c = eddy_cli_getopt(&cli, argc, argv, "p:n:h", opts)) != -1) {
    switch (c) {
      case 'p': path = optarg; break;
      case 'j': json = true; break;
      case 'n': {
        char *end = NULL;
        unsigned long long v = strtoull(optarg, &end, 10);
        if (!*optarg || *end || optarg[0] == '-' || v > EXAMPLES_MAX) {
          fprintf(stderr, "eddy buffer: --examples \"%s\": expected an integer 0..%d\n", optarg, EXAMPLES_MAX);
          return EDDY_EXIT_USAGE;
        }
        examples = (size_t)v;
        break;
      }
      default: return cli.exit; /* EDDY_CLI_STOP: --help or a usage error, printed */
    }
  }
  if (!path || !*path) {
    fprintf(stderr, "eddy buffer: --path DIR is required\n%s", buffer_usage);
    return EDDY_EXIT_USAGE;
  }
  int ranks[RANKS_MAX];
  int n = rank_folders(path, ranks, RANKS_MAX);
  if (n > 0) return inspect_ranks(path, ranks, n, json);
  return inspect(path, json, examples);
}
