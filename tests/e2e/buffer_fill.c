/* Test helper for tests/e2e/buffer_inspect.sh: writes a replay buffer through eddy_replay_append
 * as ingest would (events, dead letters and partition offsets per batch), and can keep it open
 * for writing (--hold-ms) so that a read-only `eddy buffer inspect` runs against a live writer. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buffer/replay.h"
#include "core/clock.h"

static const eddy_err_t reasons[] = {EDDY_ERR_EVENT_NOT_JSON, EDDY_ERR_EVENT_LABEL_RANGE, EDDY_ERR_EVENT_DENSE_LEN};
static const char *const messages[] = {"not valid JSON (error near byte 0)", "label 12 out of range 0..3",
                                       "dense has 2 values, expected 4"};
static const char *const payloads[] = {"garbage\x01\xff", "{\"label\": 12, \"dense\": [0, 0, 0, 0]}",
                                       "{\"label\": 1, \"dense\": [0, 0]}"};

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"path", required_argument, NULL, 'p'},     {"events", required_argument, NULL, 'e'},
      {"batch", required_argument, NULL, 'b'},    {"classes", required_argument, NULL, 'k'},
      {"partitions", required_argument, NULL, 'P'}, {"bad", required_argument, NULL, 'x'},
      {"capacity", required_argument, NULL, 'c'}, {"reservoir", required_argument, NULL, 'r'},
      {"hold-ms", required_argument, NULL, 'H'},  {"topic", required_argument, NULL, 't'},
      {NULL, 0, NULL, 0}};
  const char *path = NULL, *topic = "events";
  long events = 1000, batch = 100, classes = 4, partitions = 3, bad = 0, capacity = 0, reservoir = 0, hold_ms = 0;
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case 'p': path = optarg; break;
      case 't': topic = optarg; break;
      case 'e': events = atol(optarg); break;
      case 'b': batch = atol(optarg); break;
      case 'k': classes = atol(optarg); break;
      case 'P': partitions = atol(optarg); break;
      case 'x': bad = atol(optarg); break;
      case 'c': capacity = atol(optarg); break;
      case 'r': reservoir = atol(optarg); break;
      case 'H': hold_ms = atol(optarg); break;
      default: return 2;
    }
  }
  if (!path || batch <= 0 || classes <= 0 || partitions <= 0 || partitions > 64) {
    fprintf(stderr, "usage: buffer_fill --path DIR [--events N] [--batch B] [--classes K] [--partitions P]\n"
                    "       [--bad M] [--capacity N] [--reservoir N] [--hold-ms MS] [--topic T]\n");
    return 2;
  }
  eddy_replay_opts_t o = {.path = path, .capacity_events = (uint64_t)capacity, .evict = true,
                          .reservoir_size = (uint32_t)reservoir, .classes = (uint32_t)classes, .seed = 1};
  char err[512];
  eddy_replay_t *r = eddy_replay_new(&o, err, sizeof err);
  if (!r) {
    fprintf(stderr, "buffer_fill: %s\n", err);
    return 1;
  }
  eddy_event_t *ev = calloc((size_t)batch, sizeof *ev);
  const eddy_event_t **ptr = calloc((size_t)batch, sizeof *ptr);
  eddy_dead_letter_t *dls = calloc((size_t)(bad > 0 ? bad : 1), sizeof *dls);
  int64_t next_offset[64] = {0};
  float dense[4];
  long made = 0, bad_left = bad;
  double end = 0;
  for (;;) {
    long n = events - made < batch ? events - made : batch;
    if (end && n <= 0) n = 1; /* holding: one event per round */
    eddy_replay_offset_t offs[64];
    size_t n_off = 0, n_dl = 0;
    for (long i = 0; i < n; i++) {
      long id = made + i;
      eddy_event_init(&ev[i]);
      snprintf(ev[i].id, sizeof ev[i].id, "e-%ld", id);
      ev[i].label = (double)(id % classes);
      ev[i].weight = 1;
      ev[i].has_ts = true;
      ev[i].ts = 1732780000000 + id;
      for (int k = 0; k < 4; k++) dense[k] = (float)(id % 7) * 0.5f + (float)k;
      ev[i].dense = dense;
      ev[i].n_dense = 4;
      ptr[i] = &ev[i];
      next_offset[id % partitions]++;
    }
    /* The batch's bad messages (spread over the batches) also advance their partition. */
    for (; bad_left > 0 && (long)n_dl < (bad + 9) / 10; bad_left--, n_dl++) {
      long k = bad - bad_left;
      int32_t part = (int32_t)(k % partitions);
      dls[n_dl] = (eddy_dead_letter_t){topic, part, next_offset[part]++, 1732780000000 + k, reasons[k % 3],
                                       messages[k % 3], payloads[k % 3], strlen(payloads[k % 3])};
    }
    for (long p = 0; p < partitions; p++)
      if (next_offset[p]) offs[n_off++] = (eddy_replay_offset_t){topic, (int32_t)p, next_offset[p]};
    if (eddy_replay_append(r, ptr, (size_t)n, dls, n_dl, offs, n_off, NULL, err, sizeof err)) {
      fprintf(stderr, "buffer_fill: %s\n", err);
      return 1;
    }
    made += n;
    if (made >= events && !bad_left && !end) {
      printf("ready %ld\n", made);
      fflush(stdout);
      if (hold_ms <= 0) break;
      end = eddy_clock_mono_s() + hold_ms / 1000.0;
    }
    if (end) {
      if (eddy_clock_mono_s() >= end) break;
      struct timespec ts = {0, 20 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
  }
  eddy_replay_destroy(r);
  free(ev);
  free(ptr);
  free(dls);
  return 0;
}
