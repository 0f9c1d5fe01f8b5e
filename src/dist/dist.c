/* The MPI collective (dist.h). Errors return (MPI_ERRORS_RETURN) and name the MPI call and its
 * message; a dead rank is normally noticed by the launcher first, which ends the job. Counts above
 * INT_MAX elements go in pieces. The barrier is polled: MPI_Ibarrier, MPI_Test for the first 50 µs,
 * then sleeps that grow from 20 µs to 250 µs between tests, so a rank that waits for a slower one
 * uses next to no CPU and follows it within a quarter of a millisecond. The other operations are
 * MPI's blocking ones (fast once every rank is there: they run after a barrier). */
#include "dist/dist.h"

#include <limits.h>
#include <mpi.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SPIN_NS 50000L       /* MPI_Test without sleeping for this long first */
#define SLEEP_MIN_NS 20000L  /* first sleep between tests */
#define SLEEP_MAX_NS 250000L
#define PIECE ((size_t)1 << 30) /* elements per MPI call, below INT_MAX */

struct eddy_dist {
  eddy_collective_t coll;
  char host[MPI_MAX_PROCESSOR_NAME + 1];
  int thread_level;
};

static eddy_err_t mpi_fail(int rc, const char *call, char *errstr, size_t errstr_size) {
  char text[MPI_MAX_ERROR_STRING] = "";
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "MPI error %d", rc);
  return eddy_errf(EDDY_ERR_IO, errstr, errstr_size, "%s: %s", call, text);
}

/* Completes req without spinning once SPIN_NS have passed. */
static int wait_polled(MPI_Request *req) {
  long sleep_ns = 0;
  const double spin_until = MPI_Wtime() + SPIN_NS * 1e-9;
  for (;;) {
    int done = 0;
    int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS || done) return rc;
    if (!sleep_ns && MPI_Wtime() < spin_until) continue;
    sleep_ns = sleep_ns ? (sleep_ns * 2 > SLEEP_MAX_NS ? SLEEP_MAX_NS : sleep_ns * 2) : SLEEP_MIN_NS;
    struct timespec ts = {0, sleep_ns};
    nanosleep(&ts, NULL);
  }
}

static eddy_err_t d_barrier(void *ctx, char *errstr, size_t errstr_size) {
  MPI_Request req;
  int rc = MPI_Ibarrier(MPI_COMM_WORLD, &req);
  if (rc == MPI_SUCCESS) rc = wait_polled(&req);
  return rc == MPI_SUCCESS ? EDDY_OK : mpi_fail(rc, "MPI_Ibarrier", errstr, errstr_size);
}

static eddy_err_t d_sum_f32(void *ctx, float *buf, size_t n, char *errstr, size_t errstr_size) {
  for (size_t off = 0; off < n; off += PIECE) {
    size_t k = n - off < PIECE ? n - off : PIECE;
    int rc = MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)k, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Allreduce(float sum)", errstr, errstr_size);
  }
  return EDDY_OK;
}

static eddy_err_t d_sum_u64(void *ctx, uint64_t *buf, size_t n, char *errstr, size_t errstr_size) {
  for (size_t off = 0; off < n; off += PIECE) {
    size_t k = n - off < PIECE ? n - off : PIECE;
    int rc = MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)k, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Allreduce(u64 sum)", errstr, errstr_size);
  }
  return EDDY_OK;
}

static eddy_err_t d_bcast(void *ctx, void *buf, size_t bytes, int root, char *errstr, size_t errstr_size) {
  for (size_t off = 0; off < bytes; off += PIECE) {
    size_t k = bytes - off < PIECE ? bytes - off : PIECE;
    int rc = MPI_Bcast((char *)buf + off, (int)k, MPI_BYTE, root, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Bcast", errstr, errstr_size);
  }
  return EDDY_OK;
}

static eddy_err_t d_gather(void *ctx, const void *mine, size_t bytes, void **all, size_t *sizes, char *errstr,
                           size_t errstr_size) {
  eddy_dist_t *d = ctx;
  const int ranks = d->coll.ranks;
  *all = NULL;
  uint64_t len = bytes, *lens = malloc((size_t)ranks * sizeof *lens);
  int *counts = malloc((size_t)ranks * sizeof *counts), *displs = malloc((size_t)ranks * sizeof *displs);
  eddy_err_t err = EDDY_OK;
  if (!lens || !counts || !displs) {
    err = eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "gather: out of memory");
    goto out;
  }
  int rc = MPI_Allgather(&len, 1, MPI_UINT64_T, lens, 1, MPI_UINT64_T, MPI_COMM_WORLD);
  if (rc != MPI_SUCCESS) {
    err = mpi_fail(rc, "MPI_Allgather(record sizes)", errstr, errstr_size);
    goto out;
  }
  uint64_t total = 0;
  for (int r = 0; r < ranks; r++) {
    sizes[r] = (size_t)lens[r];
    displs[r] = (int)total;
    counts[r] = (int)lens[r];
    total += lens[r];
  }
  /* Same total on every rank, so every rank takes the same branch. */
  if (total > INT_MAX) {
    err = eddy_errf(EDDY_ERR_TOO_LARGE, errstr, errstr_size, "gather of %llu bytes: too large (at most %d)",
                    (unsigned long long)total, INT_MAX);
    goto out;
  }
  if (!total) goto out;
  char *buf = malloc((size_t)total);
  if (!buf) {
    err = eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "gather of %llu bytes: out of memory",
                    (unsigned long long)total);
    goto out;
  }
  rc = MPI_Allgatherv(mine, (int)len, MPI_BYTE, buf, counts, displs, MPI_BYTE, MPI_COMM_WORLD);
  if (rc != MPI_SUCCESS) {
    free(buf);
    err = mpi_fail(rc, "MPI_Allgatherv(records)", errstr, errstr_size);
    goto out;
  }
  *all = buf;
out:
  free(lens);
  free(counts);
  free(displs);
  return err;
}

eddy_dist_t *eddy_dist_new(char *errstr, size_t errstr_size) {
  eddy_dist_t *d = calloc(1, sizeof *d);
  if (!d) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "MPI: out of memory");
    return NULL;
  }
  int provided = 0;
  int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided);
  if (rc != MPI_SUCCESS) {
    mpi_fail(rc, "MPI_Init_thread", errstr, errstr_size);
    free(d);
    return NULL;
  }
  if (provided < MPI_THREAD_SERIALIZED) {
    eddy_errf(EDDY_ERR_UNSUPPORTED, errstr, errstr_size,
              "MPI_Init_thread: this MPI provides thread level %d; eddy needs MPI_THREAD_SERIALIZED (%d) or more",
              provided, MPI_THREAD_SERIALIZED);
    MPI_Finalize();
    free(d);
    return NULL;
  }
  d->thread_level = provided;
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int rank = 0, size = 1, local = 0, len = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm node;
  if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
    MPI_Comm_rank(node, &local);
    MPI_Comm_free(&node);
  }
  if (MPI_Get_processor_name(d->host, &len) != MPI_SUCCESS) snprintf(d->host, sizeof d->host, "?");
  d->coll = (eddy_collective_t){.ctx = d, .rank = rank, .ranks = size, .local_rank = local,
                                .barrier = d_barrier, .sum_f32 = d_sum_f32, .sum_u64 = d_sum_u64, .bcast = d_bcast,
                                .gather = d_gather};
  return d;
}

const eddy_collective_t *eddy_dist_collective(const eddy_dist_t *d) { return &d->coll; }

const char *eddy_dist_host(const eddy_dist_t *d) { return d->host; }

void eddy_dist_destroy(eddy_dist_t *d) {
  if (!d) return;
  MPI_Finalize();
  free(d);
}

void eddy_dist_abort(eddy_dist_t *d, int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  exit(code); /* not reached: MPI_Abort ends the process */
}
