/* Test helper for tests/e2e/ingest*.sh: checks a replay buffer written by `eddy ingest` against
 * what was produced. Reads every stored event (read-only open) and prints one JSON line:
 *   {"events":N,"distinct":D,"duplicates":X,"missing":M,"unexpected":U,"mismatched":B,
 *    "out_of_order":O,"dead_letters":L,"offsets":{"TOPIC/P":NEXT,...}}
 * --ids PREFIX:N expects ids PREFIX0 .. PREFIX(N-1); --expect FILE (repeatable) expects the JSONL
 * events of FILE, byte-exact (binary encoding equal to decoding the line with the model of -c, once
 * the stored event's Kafka origin, which every one must have, is set aside),
 * stored in file order (one file per partition). --group G (with -c, for its [kafka] section) adds
 * "committed":{"TOPIC/P":OFFSET,...}: group G's committed offsets of the partitions the buffer has
 * offsets for, as Kafka's lag tools see them (-1001 where none). Exit 0 when it could read the
 * buffer (and, with --group, ask Kafka). */
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buffer/replay.h"
#include "config/config.h"
#include "model/spec.h"
#include "stream/kafka_conf_internal.h"

#define MAX_FILES 64
#define CHUNK 512

typedef struct {
  char *id;
  int file;     /* -1 for --ids */
  uint8_t *enc; /* expected encoding (NULL for --ids) */
  size_t enc_len;
  uint64_t seq; /* seq of the first stored copy */
  int seen;
} expect_t;

static expect_t *exp_list;
static size_t n_exp, exp_cap;

static int cmp_id(const void *a, const void *b) {
  return strcmp(((const expect_t *)a)->id, ((const expect_t *)b)->id);
}

static expect_t *find_id(const char *id) {
  expect_t key = {.id = (char *)id};
  return n_exp ? bsearch(&key, exp_list, n_exp, sizeof *exp_list, cmp_id) : NULL;
}

static void add_expect(char *id, int file, uint8_t *enc, size_t len) {
  if (n_exp == exp_cap) {
    exp_cap = exp_cap ? exp_cap * 2 : 4096;
    exp_list = realloc(exp_list, exp_cap * sizeof *exp_list);
    if (!exp_list) abort();
  }
  exp_list[n_exp++] = (expect_t){.id = id, .file = file, .enc = enc, .enc_len = len};
}

static void print_offset(void *ctx, const char *topic, int32_t partition, int64_t next) {
  int *n = ctx;
  printf("%s\"%s/%" PRId32 "\":%" PRId64, (*n)++ ? "," : "", topic, partition, next);
}

static void add_partition(void *ctx, const char *topic, int32_t partition, int64_t next) {
  (void)next;
  rd_kafka_topic_partition_list_add(ctx, topic, partition);
}

/* Prints ,"committed":{...} for group's committed offsets of parts; 1 on failure (message on
 * stderr). */
static int print_committed(const eddy_config_t *cfg, const char *group,
                           rd_kafka_topic_partition_list_t *parts) {
  char why[512];
  rd_kafka_conf_t *conf = eddy_kafka_conf_new(cfg, why, sizeof why);
  if (!conf || rd_kafka_conf_set(conf, "group.id", group, why, sizeof why) != RD_KAFKA_CONF_OK) {
    fprintf(stderr, "ingest_check: kafka config: %s\n", why);
    return 1;
  }
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
  if (!rk) {
    fprintf(stderr, "ingest_check: %s\n", why);
    rd_kafka_conf_destroy(conf);
    return 1;
  }
  rd_kafka_resp_err_t err = rd_kafka_committed(rk, parts, 10000);
  if (err) {
    fprintf(stderr, "ingest_check: committed offsets of group %s: %s\n", group,
            rd_kafka_err2str(err));
    rd_kafka_destroy(rk);
    return 1;
  }
  printf(",\"committed\":{");
  for (int i = 0; i < parts->cnt; i++)
    printf("%s\"%s/%" PRId32 "\":%" PRId64, i ? "," : "", parts->elems[i].topic,
           parts->elems[i].partition, parts->elems[i].offset);
  printf("}");
  rd_kafka_destroy(rk);
  return 0;
}

int main(int argc, char **argv) {
  static const struct option opts[] = {{"path", required_argument, NULL, 'p'},
                                       {"config", required_argument, NULL, 'c'},
                                       {"ids", required_argument, NULL, 'i'},
                                       {"expect", required_argument, NULL, 'e'},
                                       {"group", required_argument, NULL, 'g'},
                                       {NULL, 0, NULL, 0}};
  const char *path = NULL, *config = NULL, *ids = NULL, *group = NULL;
  const char *files[MAX_FILES];
  int n_files = 0, c;
  while ((c = getopt_long(argc, argv, "p:c:i:e:g:", opts, NULL)) != -1) {
    if (c == 'g')
      group = optarg;
    else if (c == 'p')
      path = optarg;
    else if (c == 'c')
      config = optarg;
    else if (c == 'i')
      ids = optarg;
    else if (c == 'e' && n_files < MAX_FILES)
      files[n_files++] = optarg;
    else {
      fprintf(stderr,
              "usage: ingest_check --path DIR [-c CONFIG [--expect FILE]... [--group G]] "
              "[--ids P:N]\n");
      return 2;
    }
  }
  if (!path || ((n_files || group) && !config)) {
    fprintf(stderr, "ingest_check: --path is required, and -c with --expect or --group\n");
    return 2;
  }
  char errstr[1024];
  eddy_event_schema_t schema = {0};
  eddy_config_t cfg = {0};
  if (config) {
    if (eddy_config_load(&cfg, config, NULL, 0, errstr, sizeof errstr)) {
      fprintf(stderr, "ingest_check: %s\n", errstr);
      return 1;
    }
    schema = eddy_model_event_schema(&cfg.spec);
    schema.max_bytes = cfg.max_event_bytes;
  }
  eddy_event_t ev;
  eddy_event_init(&ev);
  if (ids) {
    const char *colon = strrchr(ids, ':');
    long n = colon ? strtol(colon + 1, NULL, 10) : -1;
    if (n < 0) {
      fprintf(stderr, "ingest_check: --ids PREFIX:N\n");
      return 2;
    }
    for (long i = 0; i < n; i++) {
      char buf[EDDY_EVENT_ID_MAX];
      snprintf(buf, sizeof buf, "%.*s%ld", (int)(colon - ids), ids, i);
      add_expect(strdup(buf), -1, NULL, 0);
    }
  }
  for (int f = 0; f < n_files; f++) {
    FILE *fp = fopen(files[f], "r");
    if (!fp) {
      perror(files[f]);
      return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, fp)) > 0) {
      while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
      if (!len) continue;
      if (eddy_event_from_json(line, (size_t)len, &schema, &ev, errstr, sizeof errstr)) continue;
      size_t n = eddy_event_encoded_size(&ev);
      uint8_t *enc = malloc(n);
      if (!enc || eddy_event_encode(&ev, enc, n) != n) abort();
      add_expect(strdup(ev.id), f, enc, n);
    }
    free(line);
    fclose(fp);
  }
  if (n_exp) qsort(exp_list, n_exp, sizeof *exp_list, cmp_id);

  eddy_replay_opts_t ro = {.path = path, .read_only = true};
  eddy_replay_t *r = eddy_replay_new(&ro, errstr, sizeof errstr);
  if (!r) {
    fprintf(stderr, "ingest_check: %s\n", errstr);
    return 1;
  }
  static eddy_event_t evs[CHUNK];
  for (int i = 0; i < CHUNK; i++) eddy_event_init(&evs[i]);
  uint64_t seqs[CHUNK], from = 0, events = 0, duplicates = 0, unexpected = 0, mismatched = 0;
  uint8_t *buf = NULL;
  size_t buf_cap = 0;
  for (;;) {
    size_t got = 0;
    if (eddy_replay_read(r, from, CHUNK, evs, seqs, &got)) {
      fprintf(stderr, "ingest_check: read failed at seq %" PRIu64 "\n", from);
      return 1;
    }
    if (!got) break;
    for (size_t k = 0; k < got; k++) {
      events++;
      expect_t *e = find_id(evs[k].id);
      if (!e) {
        if (unexpected++ < 5) fprintf(stderr, "unexpected id \"%s\"\n", evs[k].id);
        continue;
      }
      if (e->seen++) {
        if (duplicates++ < 5) fprintf(stderr, "duplicate id \"%s\"\n", evs[k].id);
        continue;
      }
      e->seq = seqs[k];
      if (!evs[k].has_origin) { /* ingest records where each event came from */
        if (mismatched++ < 5) fprintf(stderr, "id \"%s\" stored without its Kafka partition and offset\n", e->id);
        continue;
      }
      evs[k].has_origin = false; /* what was produced has none: compare the rest */
      if (e->enc) {
        size_t n = eddy_event_encoded_size(&evs[k]);
        if (n > buf_cap) buf = realloc(buf, buf_cap = n);
        if (!buf) abort();
        eddy_event_encode(&evs[k], buf, n);
        if (n != e->enc_len || memcmp(buf, e->enc, n)) {
          if (mismatched++ < 5)
            fprintf(stderr, "id \"%s\" differs from what was produced\n", e->id);
        }
      }
    }
    from = seqs[got - 1] + 1;
  }
  uint64_t missing = 0, out_of_order = 0, distinct = 0;
  for (size_t i = 0; i < n_exp; i++) {
    if (exp_list[i].seen)
      distinct++;
    else if (missing++ < 5)
      fprintf(stderr, "missing id \"%s\"\n", exp_list[i].id);
  }
  /* order: re-read each file in order and check the seqs increase */
  for (int f = 0; f < n_files; f++) {
    FILE *fp = fopen(files[f], "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    uint64_t last = 0;
    bool have_last = false;
    while (fp && (len = getline(&line, &cap, fp)) > 0) {
      while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
      if (!len || eddy_event_from_json(line, (size_t)len, &schema, &ev, errstr, sizeof errstr))
        continue;
      expect_t *e = find_id(ev.id);
      if (!e || !e->seen) continue;
      if (have_last && e->seq <= last && out_of_order++ < 5)
        fprintf(stderr, "%s: id \"%s\" stored before the line above it\n", files[f], e->id);
      last = e->seq;
      have_last = true;
    }
    free(line);
    if (fp) fclose(fp);
  }
  eddy_replay_stats_t st = eddy_replay_stats(r);
  printf("{\"events\":%" PRIu64 ",\"distinct\":%" PRIu64 ",\"duplicates\":%" PRIu64
         ",\"missing\":%" PRIu64 ",\"unexpected\":%" PRIu64 ",\"mismatched\":%" PRIu64
         ",\"out_of_order\":%" PRIu64 ",\"dead_letters\":%" PRIu64 ",\"offsets\":{",
         events, distinct, duplicates, missing, unexpected, mismatched, out_of_order,
         st.dead_letters);
  int n = 0;
  eddy_replay_offsets_each(r, print_offset, &n);
  printf("}");
  int rc = 0;
  if (group) {
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(16);
    eddy_replay_offsets_each(r, add_partition, parts);
    rc = print_committed(&cfg, group, parts);
    rd_kafka_topic_partition_list_destroy(parts);
  }
  printf("}\n");
  eddy_replay_destroy(r);
  if (config) eddy_config_free(&cfg);
  for (int i = 0; i < CHUNK; i++) eddy_event_free(&evs[i]);
  eddy_event_free(&ev);
  for (size_t i = 0; i < n_exp; i++) {
    free(exp_list[i].id);
    free(exp_list[i].enc);
  }
  free(exp_list);
  free(buf);
  return rc;
}
