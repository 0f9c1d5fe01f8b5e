/* Replay buffer alone, without Kafka or JSON: append throughput (batches as ingest writes them,
 * with the reservoir and eviction as configured), then reads from a cursor and samples.
 * usage: bench_replay DIR [--events N] [--dense D] [--batch B] [--classes K] [--reservoir R]
 *                         [--capacity N] [--sync]          DIR must not exist (it is created). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "buffer/replay.h"
#include "core/clock.h"

int main(int argc, char **argv) {
  static const struct option opts[] = {{"events", required_argument, NULL, 'n'},
                                       {"dense", required_argument, NULL, 'd'},
                                       {"batch", required_argument, NULL, 'b'},
                                       {"classes", required_argument, NULL, 'k'},
                                       {"reservoir", required_argument, NULL, 'r'},
                                       {"capacity", required_argument, NULL, 'c'},
                                       {"sync", no_argument, NULL, 's'},
                                       {NULL, 0, NULL, 0}};
  long events = 80000, dense = 16, batch = 1000, classes = 2, reservoir = 10000, capacity = 0;
  bool sync = false;
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
      case 'n': events = atol(optarg); break;
      case 'd': dense = atol(optarg); break;
      case 'b': batch = atol(optarg); break;
      case 'k': classes = atol(optarg); break;
      case 'r': reservoir = atol(optarg); break;
      case 'c': capacity = atol(optarg); break;
      case 's': sync = true; break;
      default: return 2;
    }
  }
  struct stat st;
  if (optind != argc - 1 || events <= 0 || dense < 0 || batch <= 0 || classes <= 0 || reservoir < 0) {
    fprintf(stderr, "usage: bench_replay DIR [--events N] [--dense D] [--batch B] [--classes K] [--reservoir R]\n"
                    "                        [--capacity N] [--sync]\n");
    return 2;
  }
  if (stat(argv[optind], &st) == 0) {
    fprintf(stderr, "bench_replay: %s exists; give a new folder\n", argv[optind]);
    return 2;
  }
  eddy_replay_opts_t o = {.path = argv[optind], .capacity_events = (uint64_t)capacity, .evict = true, .sync = sync,
                          .reservoir_size = (uint32_t)reservoir, .classes = (uint32_t)classes, .seed = 1};
  char err[512];
  eddy_replay_t *r = eddy_replay_new(&o, err, sizeof err);
  if (!r) {
    fprintf(stderr, "bench_replay: %s\n", err);
    return 1;
  }
  eddy_event_t *ev = calloc((size_t)batch, sizeof *ev);
  const eddy_event_t **ptr = calloc((size_t)batch, sizeof *ptr);
  float *values = calloc((size_t)batch * (size_t)(dense ? dense : 1), sizeof *values);
  for (long i = 0; i < batch; i++) {
    eddy_event_init(&ev[i]);
    ev[i].dense = values + i * dense;
    ev[i].n_dense = (uint32_t)dense;
    ev[i].weight = 1;
    ev[i].has_ts = true;
    ptr[i] = &ev[i];
  }
  eddy_replay_offset_t off = {"bench", 0, 0};
  double t0 = eddy_clock_mono_s();
  for (long done = 0; done < events; done += batch) {
    long n = events - done < batch ? events - done : batch;
    for (long i = 0; i < n; i++) {
      long id = done + i;
      snprintf(ev[i].id, sizeof ev[i].id, "b-%ld", id);
      ev[i].ts = 1732780000000 + id;
      ev[i].label = (double)(id % classes);
      for (long k = 0; k < dense; k++) ev[i].dense[k] = (float)((id + k) % 255) / 255.0f;
    }
    off.next_offset = done + n;
    if (eddy_replay_append(r, ptr, (size_t)n, NULL, 0, &off, 1, NULL, err, sizeof err)) {
      fprintf(stderr, "bench_replay: %s\n", err);
      return 1;
    }
  }
  double t1 = eddy_clock_mono_s();
  eddy_replay_stats_t s = eddy_replay_stats(r);
  double enc = (double)eddy_event_encoded_size(&ev[0]);
  printf("append: %ld events (%.0f B encoded each) in batches of %ld, sync %s, reservoir %ld x %ld classes, "
         "capacity %ld: %.3f s = %.0f events/s, %.1f MB/s; stored %llu, evicted %llu\n",
         events, enc, batch, sync ? "on" : "off", reservoir, classes, capacity, t1 - t0, events / (t1 - t0),
         events * enc / 1e6 / (t1 - t0), (unsigned long long)s.events, (unsigned long long)s.evicted);

  eddy_event_t *out = calloc((size_t)batch, sizeof *out);
  for (long i = 0; i < batch; i++) eddy_event_init(&out[i]);
  size_t got = 0, total = 0;
  t0 = eddy_clock_mono_s();
  for (uint64_t seq = s.first_seq; seq < s.next_seq; seq += got) {
    if (eddy_replay_read(r, seq, (size_t)batch, out, NULL, &got) || !got) break;
    total += got;
  }
  t1 = eddy_clock_mono_s();
  printf("read: %zu events in reads of %ld: %.3f s = %.0f events/s\n", total, batch, t1 - t0, total / (t1 - t0));
  static const char *const names[] = {"uniform", "recent", "balanced"};
  for (int k = 0; k < 3; k++) {
    uint64_t rng = 7;
    total = 0;
    t0 = eddy_clock_mono_s();
    for (int rep = 0; rep < 20; rep++) {
      if (eddy_replay_sample(r, (eddy_sample_t)k, &rng, (size_t)batch, out, &got)) break;
      total += got;
    }
    t1 = eddy_clock_mono_s();
    printf("sample %s: %zu events: %.3f s = %.0f events/s\n", names[k], total, t1 - t0, total / (t1 - t0));
  }
  for (long i = 0; i < batch; i++) eddy_event_free(&out[i]);
  free(out);
  free(values);
  free(ev);
  free(ptr);
  eddy_replay_destroy(r);
  return 0;
}
