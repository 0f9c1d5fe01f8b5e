/* Small helpers shared by the unit tests. */
#ifndef EDDY_TESTUTIL_H
#define EDDY_TESTUTIL_H

#include <pthread.h>
#include <stddef.h>

#include "core/collective.h"

/* Creates a fresh temporary directory (removed by eddy_test_rmdir). Never NULL (aborts). */
char *eddy_test_tmpdir(void);
void eddy_test_rmdir(char *dir); /* recursive; frees dir */
/* Writes len bytes to dir/name; returns the malloc'ed full path. */
char *eddy_test_write_file(const char *dir, const char *name, const void *data, size_t len);

/* Data-parallel ranks as threads of one process (the collective of core/collective.h, for tests
 * without MPI): every operation posts a pointer, meets at a barrier, and each rank computes the
 * result itself in rank order, so every rank gets the same bits. */
#define EDDY_TEST_MAX_RANKS 4

typedef struct {
  int ranks;
  pthread_barrier_t bar;
  const void *ptr[EDDY_TEST_MAX_RANKS];
  size_t len[EDDY_TEST_MAX_RANKS];
} eddy_test_ranks_t;

typedef struct {
  eddy_test_ranks_t *sh;
  eddy_collective_t c; /* rank r's collective: pass &t[r].c to the code under test */
} eddy_test_rank_t;

/* Sets up ranks (1..EDDY_TEST_MAX_RANKS) threads' worth of collectives in t[0..ranks). */
void eddy_test_ranks_init(eddy_test_ranks_t *sh, eddy_test_rank_t *t, int ranks);
void eddy_test_ranks_free(eddy_test_ranks_t *sh);

#endif
