# Helpers for the end-to-end tests of trainer ranks (train_ranks.sh, train_ranks_restart.sh):
# `mpirun -np R eddy ...` with root allowed (CI containers) and R ranks on fewer cores, the ranks'
# pids from their logs, and a clean stop. Sourced after lib.bash and train_helpers.bash.

# need_mpi: skips the test (77, with the reason) where mpirun is missing or eddy has no MPI.
need_mpi() {
  command -v mpirun >/dev/null || skip "mpirun not found (Debian package openmpi-bin; ops/setup-deps installs it)"
  [[ $(ldd "$EDDY" 2>/dev/null) == *libmpi.so* ]] ||
    skip "this eddy was built without MPI (configure with libopenmpi-dev installed, or -DEDDY_MPI=ON)"
}

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Under the sanitizers: Open MPI's own allocations outlive MPI_Finalize; they are not eddy's leaks.
# LeakSanitizer names their libraries (for the suppressions) only with full unwinding and with
# Open MPI's plugins still loaded at exit.
export LSAN_OPTIONS=${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$SRC/tests/e2e/lsan_mpi.supp
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0
export OMPI_MCA_mca_base_component_disable_dlclose=1
MPIRUN=(mpirun --oversubscribe --bind-to none)

# alive PID: the process runs (a zombie whose parent is gone does not count: PID 1 of a container
# may never reap it).
alive() {
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $st != Z* ]]
}

# rank_pids LOG N: sets RANK_PIDS[r] from each rank's "rank r of N (local rank L) on HOST, pid P"
# line (waiting up to 30 s for all N) and adds them to PIDS (killed when the test ends, should
# mpirun be killed first). Returns 1 when a line is missing.
rank_pids() {
  local r pid
  RANK_PIDS=()
  for ((r = 0; r < $2; r++)); do
    pid=$(wait_for_line "$1" "s/.*: rank $r of $2 (local rank [0-9]*) on .*, pid \([0-9]*\)\$/\1/p" "$TRAIN_PID" 300 0.1) ||
      return 1
    RANK_PIDS[r]=$pid
    PIDS+=("$pid")
  done
}

# start_ranks LOG N ARGS...: `mpirun -np N eddy train ARGS` in the background, every rank's stderr
# to LOG; sets TRAIN_PID (mpirun), RANK_PIDS and PORT (rank 0's admin API). Returns 1 if the job
# exits or never listens.
start_ranks() {
  spawn "$1.out" "$1" "${MPIRUN[@]}" -np "$2" "$EDDY" train "${@:3}"
  TRAIN_PID=$SPAWNED_PID
  rank_pids "$1" "$2" || return 1
  PORT=$(wait_for_line "$1" 's/.*admin API listening on port \([0-9]*\).*/\1/p' "$TRAIN_PID" 600 0.05)
}

# require_ranks LOG N ARGS...: start_ranks as a check; when the job does not come up, prints the
# log's tail and ends the test.
require_ranks() {
  CHECKS=$((CHECKS + 1))
  if start_ranks "$@"; then
    pass "mpirun -np $2 eddy train is up (rank 0's admin API on port $PORT; pids ${RANK_PIDS[*]})"
    return 0
  fi
  fail "mpirun -np $2 eddy train did not come up"
  tail -n 30 "$1" >&2
  finish
  exit 1
}

# check_ranks_stop LOG N WHAT: SIGTERM to mpirun, which passes it to every rank; checks that the
# job ends within 30 s and that each of the N ranks logged a clean stop (mpirun itself exits 1
# after a signal whatever its ranks did, so its status says nothing here).
check_ranks_stop() {
  kill -TERM "$TRAIN_PID" 2>/dev/null
  local end=$((SECONDS + 30))
  while alive "$TRAIN_PID" && ((SECONDS < end)); do sleep 0.1; done
  CHECKS=$((CHECKS + 1))
  if alive "$TRAIN_PID"; then
    fail "$3: the job did not end within 30 s of SIGTERM"
    kill -KILL "$TRAIN_PID" "${RANK_PIDS[@]}" 2>/dev/null
    return 1
  fi
  wait "$TRAIN_PID" 2>/dev/null
  local stopped
  stopped=$(grep -c 'eddy\[train\] rank [0-9]*/'"$2"' (local [0-9]*): stopped$' "$1")
  if [[ $stopped == "$2" ]]; then pass "$3: SIGTERM, all $2 ranks stopped cleanly"; else
    fail "$3: SIGTERM, $stopped of $2 ranks logged a clean stop"
    tail -n 20 "$1" >&2
    return 1
  fi
}

# produce_split TOPIC: the events the test wrote, as checks: $TMP/a.jsonl into TOPIC's partition 0,
# $TMP/b.jsonl into its partition 1 (one per rank of two), $TMP/union.jsonl into union's only one
# (the same events for one rank).
produce_split() {
  check_rc 0 "a.jsonl into $1[0]" -- timeout 30 kcat -P -b "$BOOT" -t "$1" -p 0 -l "$TMP/a.jsonl"
  check_rc 0 "b.jsonl into $1[1]" -- timeout 30 kcat -P -b "$BOOT" -t "$1" -p 1 -l "$TMP/b.jsonl"
  check_rc 0 "union.jsonl into union[0]" -- timeout 30 kcat -P -b "$BOOT" -t union -p 0 -l "$TMP/union.jsonl"
}
