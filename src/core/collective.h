/* Data-parallel ranks as eddy's layers see them: who this process is among the R processes of a
 * job, and the few collective operations that keep their learners identical (sum gradients and
 * counts, gather variable-sized records, copy bytes from one rank to all). A program fills one in
 * from its communicator (src/dist: MPI); tests fill one in with threads. No MPI or NCCL types.
 * Every operation is collective: all ranks call it, in the same order, with the same counts
 * (gather: any size per rank), and it fails on every rank or on none but a dead job's. Only
 * barrier waits without using the CPU: the others may spin while a rank waits for the rest, so
 * they belong where every rank arrives at about the same time (after a barrier). */
#ifndef EDDY_COLLECTIVE_H
#define EDDY_COLLECTIVE_H

#include <stddef.h>
#include <stdint.h>

#include "core/errors.h"

typedef struct eddy_collective {
  void *ctx;       /* the implementation's own object, passed to every operation */
  int rank;        /* 0 .. ranks-1 */
  int ranks;       /* >= 1 */
  int local_rank;  /* among the ranks on this machine (one GPU per rank picks by it) */
  /* Returns once every rank has called it; a rank that waits long for a slower one (a step
   * period, an idle round, a rollback on rank 0) sleeps instead of spinning. */
  eddy_err_t (*barrier)(void *ctx, char *errstr, size_t errstr_size);
  /* buf[0..n) := the sum over ranks of every rank's buf[0..n), the same bits on every rank. */
  eddy_err_t (*sum_f32)(void *ctx, float *buf, size_t n, char *errstr, size_t errstr_size);
  /* The same for unsigned 64-bit integers (exact; wraps modulo 2^64). */
  eddy_err_t (*sum_u64)(void *ctx, uint64_t *buf, size_t n, char *errstr, size_t errstr_size);
  /* The bytes bytes at buf on rank root are copied into buf on every other rank. */
  eddy_err_t (*bcast)(void *ctx, void *buf, size_t bytes, int root, char *errstr, size_t errstr_size);
  /* Every rank's record (mine, bytes; sizes may differ): *all receives them back to back in rank
   * order (malloc'd, the caller frees; NULL when all are empty) and sizes[0..ranks) each one's
   * length. */
  eddy_err_t (*gather)(void *ctx, const void *mine, size_t bytes, void **all, size_t *sizes, char *errstr,
                       size_t errstr_size);
} eddy_collective_t;

/* The union of every rank's rows[0..n) (any order, repeats allowed), sorted ascending and without
 * repeats, into *out (malloc'd, the caller frees; NULL when empty) and *n_out: the same list on
 * every rank. Collective. */
eddy_err_t eddy_collective_rows_union(const eddy_collective_t *c, const uint32_t *rows, size_t n, uint32_t **out,
                                      size_t *n_out, char *errstr, size_t errstr_size);

/* Copies root's byte string to every rank: on root, *data/len are read; elsewhere *data receives a
 * malloc'd copy (NUL-terminated one past len; the caller frees) and *len its length. Collective. */
eddy_err_t eddy_collective_bcast_bytes(const eddy_collective_t *c, int root, char **data, size_t *len,
                                       char *errstr, size_t errstr_size);

#endif
