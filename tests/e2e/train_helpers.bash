# Helpers for the `eddy train` end-to-end tests (train_basic.sh, train_crash_slow.sh); sourced
# after lib.bash. Not a test itself (CTest runs tests/e2e/*.sh only).




# start_trainer LOG ARGS...: `eddy train ARGS` in the background, stderr to LOG; sets TRAIN_PID and
# PORT (from the "admin API listening on port N" line). Returns 1 if it exits or never listens.
start_trainer() {
  local log=$1
  shift
  "$EDDY" train "$@" >"$log.out" 2>"$log" &
  TRAIN_PID=$!
  PIDS+=("$TRAIN_PID")
  PORT=
  for _ in $(seq 300); do
    [[ -f $log ]] && PORT=$(sed -n 's/.*admin API listening on port \([0-9]*\).*/\1/p' "$log" | tail -n 1)
    [[ -n $PORT ]] && return 0
    kill -0 "$TRAIN_PID" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# require_trainer LOG ARGS...: start_trainer as a check; when it does not come up, prints the
# log's tail and ends the test.
require_trainer() {
  CHECKS=$((CHECKS + 1))
  if start_trainer "$@"; then
    pass "eddy train is up (port $PORT)"
    return 0
  fi
  fail "eddy train did not come up"
  tail -n 20 "$1" >&2
  finish
  exit 1
}

# stop_trainer SIGNAL: sends it and waits for the exit (20 s at most); sets TRAIN_RC to the exit
# status ("timeout" if it had to be killed).
stop_trainer() {
  kill -"$1" "$TRAIN_PID" 2>/dev/null
  for _ in $(seq 400); do
    kill -0 "$TRAIN_PID" 2>/dev/null || break
    sleep 0.05
  done
  if kill -0 "$TRAIN_PID" 2>/dev/null; then
    kill -KILL "$TRAIN_PID" 2>/dev/null
    wait "$TRAIN_PID" 2>/dev/null
    TRAIN_RC=timeout
    return 1
  fi
  wait "$TRAIN_PID" 2>/dev/null
  TRAIN_RC=$?
  [[ $TRAIN_RC == 0 ]]
}

# check_sanitizers: no AddressSanitizer / UBSan / LeakSanitizer report in any $TMP/*.err log.
check_sanitizers() {
  CHECKS=$((CHECKS + 1))
  if grep -lE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$TMP"/*.err >/dev/null 2>&1; then
    fail "sanitizer reports in $(grep -lE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$TMP"/*.err | xargs -n1 basename | paste -sd' ')"
    grep -hE -A5 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$TMP"/*.err | head -n 30 >&2
  else
    pass "no sanitizer reports in the trainer logs"
  fi
}

# status: GET /v1/status into $TMP/status.json.
status() {
  curl -sf --max-time 5 "http://127.0.0.1:$PORT/v1/status" >"$TMP/status.json"
}

# wait_status SECONDS PYTHON-EXPR: until EXPR (s = the status object) holds; 1 on timeout.
wait_status() {
  local end=$((SECONDS + $1))
  while ((SECONDS < end)); do
    if status && $PY -c 'import json,sys; s=json.load(open(sys.argv[1])); sys.exit(0 if eval(sys.argv[2]) else 1)' \
      "$TMP/status.json" "$2" 2>/dev/null; then
      return 0
    fi
    kill -0 "$TRAIN_PID" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# post ROUTE [BODY]: authenticated POST, answer in $TMP/post.json; prints the HTTP status.
post() {
  curl -s --max-time 60 -o "$TMP/post.json" -w '%{http_code}' -X POST \
    -H "Authorization: Bearer $(cat "$TMP/token")" -H 'Content-Type: application/json' \
    --data "${2:-{\}}" "http://127.0.0.1:$PORT$1"
}

# verify_all MODEL_DIR: `eddy snapshot verify` on every version folder; prints the count.
verify_all() {
  local dirs=("$1"/v[0-9]*)
  [[ -e ${dirs[0]} ]] || { echo 0; return 0; }
  if "$EDDY" snapshot verify "${dirs[@]}" >"$TMP/verify.out" 2>&1; then
    echo "${#dirs[@]}"
  else
    grep -v '^ ' "$TMP/verify.out" | grep -v '^OK' | head -n 5 >&2
    echo -1
  fi
}
