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

# start_broker NAME ARGS...: starts `eddy broker ARGS` in the background (stdout and stderr in
# $TMP/NAME.out and .err); sets BROKER_PID and BOOT (the bootstrap value) once the first stdout
# line is there (at most 10 s). Returns 1, after a FAIL line, if that does not happen.
start_broker() {
  local name=$1
  shift
  "$EDDY" broker "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  BROKER_PID=$!
  PIDS+=("$BROKER_PID")
  BOOT=
  for _ in $(seq 100); do
    BOOT=$(sed -n '1s/^bootstrap=//p' "$TMP/$name.out")
    [[ -n $BOOT ]] && return 0
    kill -0 "$BROKER_PID" 2>/dev/null || break
    sleep 0.1
  done
  fail "broker $name did not print its bootstrap line"
  sed 's/^/  stderr: /' "$TMP/$name.err" >&2
  return 1
}

# start_serve NAME ARGS...: starts `eddy serve ARGS` in the background (stdout and stderr in
# $TMP/NAME.out and .err); sets REPLICA_PID and REPLICA_PORT once it logs "replica API listening on
# port N" (10 s at most). Returns 1 if it exits or never listens.
start_serve() {
  local name=$1
  shift
  "$EDDY" serve "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  REPLICA_PID=$!
  PIDS+=("$REPLICA_PID")
  REPLICA_PORT=
  for _ in $(seq 200); do
    REPLICA_PORT=$(sed -n 's/.*replica API listening on port \([0-9]*\).*/\1/p' "$TMP/$name.err" | head -n 1)
    [[ -n $REPLICA_PORT ]] && return 0
    kill -0 "$REPLICA_PID" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
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
