# Helpers for the end-to-end tests: sourced, with EDDY (the binary) and SRC (the source folder) set.
set -uo pipefail
EDDY=${1:?usage: test.sh EDDY_BINARY SOURCE_DIR}
SRC=${2:?usage: test.sh EDDY_BINARY SOURCE_DIR}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/eddy-e2e-XXXXXX")
PIDS=() # background processes a test starts; killed when it exits
cleanup() {
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  if [[ -n ${EDDY_KEEP_TMP:-} ]]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
FAILS=0
CHECKS=0
PY=/usr/bin/python3

fail() { echo "FAIL: $*" >&2; FAILS=$((FAILS + 1)); }
pass() { echo "ok: $*"; }

# skip REASON: ends the test as skipped: prints "SKIP: REASON" and exits 77 (CTest's skip code).
skip() {
  echo "SKIP: $*"
  exit 77
}

# need_command CMD [HINT]: skips the test when CMD is not on PATH ("CMD not installed (HINT)").
need_command() {
  command -v "$1" >/dev/null || skip "$1 not installed${2:+ ($2)}"
}

# need_fashion_mnist FILE: sets FM to the Fashion-MNIST folder (EDDY_FASHION_MNIST_DIR, else the
# Debian package's); skips the test when FILE is not in it.
need_fashion_mnist() {
  FM=${EDDY_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
  [[ -f $FM/$1 ]] || skip "Fashion-MNIST not found in $FM (install dataset-fashion-mnist)"
}

# free_port: prints a loopback TCP port that was free a moment ago.
free_port() {
  $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# write_token TEXT [FILE]: writes TEXT as a bearer token file, FILE or $TMP/token, mode 600.
write_token() {
  local file=${2:-$TMP/token}
  printf '%s\n' "$1" >"$file"
  chmod 600 "$file"
}

# wait_for_line FILE SED_SCRIPT PID TRIES PAUSE: polls FILE, TRIES times PAUSE s apart, until
# `sed -n SED_SCRIPT FILE` prints something; prints its first line and returns 0. Returns 1 once
# PID has exited or the tries are used up.
wait_for_line() {
  local found
  for _ in $(seq "$4"); do
    found=$(sed -n "$2" "$1" 2>/dev/null | head -n 1)
    [[ -n $found ]] && { echo "$found"; return 0; }
    kill -0 "$3" 2>/dev/null || return 1
    sleep "$5"
  done
  return 1
}

# seconds_to_line T0 FILE FIXED-STRING PID TIMEOUT: polls FILE every 0.05 s until it holds
# FIXED-STRING and prints the seconds from T0 (a `date +%s.%N` value) to then, with 2 decimals.
# Returns 1 once PID has exited without writing it, or after TIMEOUT seconds.
seconds_to_line() {
  local end=$((SECONDS + $5))
  while ((SECONDS <= end)); do
    if grep -qF -- "$3" "$2" 2>/dev/null; then
      awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f\n", b - a }'
      return 0
    fi
    kill -0 "$4" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# check_seconds DESCRIPTION SECONDS LIMIT: a check that SECONDS (a number, or empty when it never
# happened) is below LIMIT.
check_seconds() {
  CHECKS=$((CHECKS + 1))
  if [[ -n $2 ]] && awk -v t="$2" -v l="$3" 'BEGIN { exit !(t < l) }'; then pass "$1: $2 s (< $3 s)"; else
    fail "$1: ${2:-never} s, want < $3 s"
  fi
}

# spawn OUT ERR CMD...: runs CMD in the background, stdout to OUT and stderr to ERR, killed when
# the test exits; sets SPAWNED_PID.
spawn() {
  "${@:3}" >"$1" 2>"$2" &
  SPAWNED_PID=$!
  PIDS+=("$SPAWNED_PID")
}

# start_broker NAME ARGS...: starts `eddy broker ARGS` in the background (stdout and stderr in
# $TMP/NAME.out and .err); sets BROKER_PID and BOOT (the bootstrap value) once the first stdout
# line is there (at most 10 s). Returns 1, after a FAIL line, if that does not happen.
start_broker() {
  spawn "$TMP/$1.out" "$TMP/$1.err" "$EDDY" broker "${@:2}"
  BROKER_PID=$SPAWNED_PID
  BOOT=$(wait_for_line "$TMP/$1.out" '1s/^bootstrap=//p' "$BROKER_PID" 100 0.1) && return 0
  fail "broker $1 did not print its bootstrap line"
  sed 's/^/  stderr: /' "$TMP/$1.err" >&2
  return 1
}

# require_broker ARGS...: start_broker broker ARGS, ending the test when it does not come up; the
# broker is disowned, so that cleanup's kill prints no job notice.
require_broker() {
  start_broker broker "$@" || { finish; exit 1; }
  disown "$BROKER_PID"
}

# start_serve NAME ARGS...: starts `eddy serve ARGS` in the background (stdout and stderr in
# $TMP/NAME.out and .err); sets REPLICA_PID and REPLICA_PORT once it logs "replica API listening on
# port N" (10 s at most). Returns 1 if it exits or never listens.
start_serve() {
  spawn "$TMP/$1.out" "$TMP/$1.err" "$EDDY" serve "${@:2}"
  REPLICA_PID=$SPAWNED_PID
  REPLICA_PORT=$(wait_for_line "$TMP/$1.err" 's/.*replica API listening on port \([0-9]*\).*/\1/p' "$REPLICA_PID" 200 0.05)
}

# check_sigterm NAME PID: a check that the background process PID (NAME) exits 0 on SIGTERM.
check_sigterm() {
  CHECKS=$((CHECKS + 1))
  if kill -TERM "$2" && wait "$2"; then pass "$1: SIGTERM exits 0"; else fail "$1: SIGTERM did not exit 0"; fi
}

# check_rc WANT DESCRIPTION -- CMD...: runs CMD, stdout to $TMP/out, stderr to $TMP/err.
check_rc() {
  local want=$1 what=$2
  shift 3
  CHECKS=$((CHECKS + 1))
  "$@" >"$TMP/out" 2>"$TMP/err"
  local rc=$?
  if [[ $rc -ne $want ]]; then
    fail "$what: exit $rc, want $want"
    sed 's/^/  stderr: /' "$TMP/err" | tail -n 20 >&2
    return 1
  fi
  pass "$what (exit $rc)"
}

# check_grep FILE FIXED-STRING DESCRIPTION
check_grep() {
  CHECKS=$((CHECKS + 1))
  if grep -qF -- "$2" "$1"; then pass "$3"; else
    fail "$3: '$2' not in $(basename "$1")"
    sed 's/^/  | /' "$1" | tail -n 20 >&2
  fi
}

# check_py DESCRIPTION PYTHON-EXPR: evaluates EXPR with j = last JSON line of $TMP/out.
check_py() {
  CHECKS=$((CHECKS + 1))
  if $PY - "$TMP/out" "$2" <<'PYEOF'; then pass "$1"; else fail "$1: $2 is false"; fi
import json, sys
lines = [l for l in open(sys.argv[1]) if l.strip()]
j = json.loads(lines[-1])
ok = eval(sys.argv[2], {"j": j})
if not ok:
    print("  json:", json.dumps(j), file=sys.stderr)
sys.exit(0 if ok else 1)
PYEOF
}

finish() {
  echo "$((CHECKS - FAILS)) passed, $FAILS failed"
  [[ $FAILS -eq 0 ]]
}
