/* eddy's ranks over MPI: the processes of a job launched by `mpirun -np R` or srun, as the
 * collective of core/collective.h over MPI_COMM_WORLD (rank, world size, rank on this machine).
 * The barrier, where a rank waits for slower ones, polls with short sleeps instead of spinning; the
 * sums, gathers and broadcasts are MPI's blocking ones, run when every rank is there. Built only
 * with EDDY_MPI; nothing outside src/dist and its callers sees an MPI type. */
#ifndef EDDY_DIST_H
#define EDDY_DIST_H

#include <stddef.h>

#include "core/collective.h"

typedef struct eddy_dist eddy_dist_t;

/* Initialises MPI (MPI_THREAD_MULTIPLE, or SERIALIZED where that is all there is: one thread
 * makes the collective calls) and finds this process's rank, the world size and its rank among
 * the processes on its machine. NULL + errstr when MPI cannot start. Call once per process. */
eddy_dist_t *eddy_dist_new(char *errstr, size_t errstr_size);

/* The collective over every rank of the job; valid until eddy_dist_destroy. */
const eddy_collective_t *eddy_dist_collective(const eddy_dist_t *d);

/* This machine's name as MPI reports it. */
const char *eddy_dist_host(const eddy_dist_t *d);

/* Ends MPI cleanly (every rank must call it; after the last collective). NULL is a no-op. */
void eddy_dist_destroy(eddy_dist_t *d);

/* Ends the whole job at once (MPI_Abort: every rank exits with code): the fail-stop path when one
 * rank cannot go on. Does not return. */
void eddy_dist_abort(eddy_dist_t *d, int code) __attribute__((noreturn));

#endif
