/* The ranks of a job for `eddy train` and `eddy ingest` (DESIGN "Scaling past one machine"): when
 * an MPI launcher (mpirun, srun) started this process, MPI runs (src/dist) and every log line
 * names the rank; otherwise, or with one rank, nothing changes. A build without MPI refuses to be
 * one of several ranks rather than run R independent trainers over the same store. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/log.h"
#ifdef EDDY_MPI
#include "dist/dist.h"
#endif

/* The world size a launcher gave this process: 0 when none started it, -1 when one did but its
 * size shows only once MPI runs (PMIx without Slurm's task count). */
static int launched_size(void) {
  const char *v;
  if ((v = getenv("OMPI_COMM_WORLD_SIZE")) && *v) return atoi(v);
  if ((v = getenv("PMI_SIZE")) && *v) return atoi(v);
  if (getenv("PMIX_RANK")) {
    v = getenv("SLURM_NTASKS");
    return v && *v ? atoi(v) : -1;
  }
  return 0;
}

int eddy_cli_ranks_start(const char *cmd, eddy_cli_ranks_t *r) {
  memset(r, 0, sizeof *r);
  r->ranks = 1;
  int size = launched_size();
#ifndef EDDY_MPI
  if (size > 1 || size < 0) {
    fprintf(stderr, "eddy %s: started as one of %s MPI ranks, but this eddy was built without MPI (install "
                    "libopenmpi-dev and configure with -DEDDY_MPI=ON); run one process\n",
            cmd, size > 1 ? "several" : "an unknown number of");
    return EDDY_EXIT_FAILURE;
  }
  return EDDY_EXIT_OK;
#else
  if (size == 0) return EDDY_EXIT_OK;
  char errstr[1024];
  eddy_dist_t *d = eddy_dist_new(errstr, sizeof errstr);
  if (!d) {
    fprintf(stderr, "eddy %s: %s\n", cmd, errstr);
    return EDDY_EXIT_FAILURE;
  }
  const eddy_collective_t *c = eddy_dist_collective(d);
  r->dist = d;
  r->rank = c->rank;
  r->ranks = c->ranks;
  r->local_rank = c->local_rank;
  r->coll = c->ranks > 1 ? c : NULL;
  if (r->coll) {
    char prefix[64];
    snprintf(prefix, sizeof prefix, "rank %d/%d (local %d)", r->rank, r->ranks, r->local_rank);
    eddy_log_set_prefix(prefix);
    EDDY_INFO(cmd, "rank %d of %d (local rank %d) on %s, pid %ld", r->rank, r->ranks, r->local_rank,
              eddy_dist_host(d), (long)getpid());
  }
  return EDDY_EXIT_OK;
#endif
}

static atomic_int stop_watched_done; /* the process got through eddy_cli_ranks_end */

static void *stop_watch_main(void *arg) {
  const int seconds = (int)(intptr_t)arg;
  for (int i = 0; i < seconds * 10; i++) {
    if (atomic_load(&stop_watched_done)) return NULL;
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL);
  }
  if (atomic_load(&stop_watched_done)) return NULL;
  EDDY_ERROR("ranks", "the ranks did not stop together within %d s (a rank is gone?): ending this one", seconds);
  _exit(EDDY_EXIT_FAILURE); /* MPI may be blocked in this very process: leave without it */
}

void eddy_cli_ranks_watch_stop(eddy_cli_ranks_t *r, int seconds) {
  if (r->ranks <= 1) return;
  pthread_t th;
  if (pthread_create(&th, NULL, stop_watch_main, (void *)(intptr_t)seconds) == 0) pthread_detach(th);
}

int eddy_cli_ranks_end(eddy_cli_ranks_t *r, int rc) {
#ifdef EDDY_MPI
  if (r->dist) {
    if (rc != EDDY_EXIT_OK && r->ranks > 1) {
      EDDY_ERROR("ranks", "rank %d ends the job (exit %d): the others stop with it (fail-stop)", r->rank, rc);
      eddy_dist_abort(r->dist, rc);
    }
    eddy_dist_destroy(r->dist);
    r->dist = NULL;
  }
#endif
  atomic_store(&stop_watched_done, 1);
  return rc;
}
