# Helpers for the end-to-end tests that run `eddy train` (train_basic.sh, train_crash_slow.sh,
# serve_follow.sh, dashboard_browser.sh, ops_assets.sh, ctl.sh): the trainer's config, its start
# and stop, and its admin API. Sourced after lib.bash; not a test itself (CTest runs *.sh only).

# write_trainer_config FILE [SECTION.KEY=VALUE | -SECTION.KEY]...: writes the e2e trainer config
# to FILE: the base below (train_basic.sh's: a Fashion-MNIST MLP fed from topic events at $BOOT,
# buffer $TMP/buffer, store $TMP/store, admin API on a free loopback port with token $TMP/token),
# with each SECTION.KEY=VALUE set (added when the base lacks it) and each -SECTION.KEY left out
# (its default applies). Prints nothing; returns 1, naming the argument, on a malformed one.
write_trainer_config() {
  local file=$1 arg key sec
  shift
  local -a order=() lines=()
  local -A value=()
  while IFS= read -r arg; do
    order+=("${arg%%=*}")
    value[${arg%%=*}]=${arg#*=}
  done <<EOF
model.name=fmnist
model.dense_dim=784
model.embed_dim=0
model.hidden=64
model.head=softmax
model.classes=10
train.optimizer=adagrad
train.lr=0.02
train.batch_size=16
train.holdout_fraction=0.1
replay.ratio=0.2
stream.topic=events
kafka.bootstrap.servers=$BOOT
buffer.path=$TMP/buffer
buffer.sync=false
snapshot.store=$TMP/store
snapshot.every_steps=25
snapshot.every_seconds=0
snapshot.keep=1000
snapshot.gate.max_regression=0.1
http.bind=127.0.0.1:0
http.token_file=$TMP/token
EOF
  for arg in "$@"; do
    if [[ $arg =~ ^-([a-z_]+\.[^=]+)$ && -v value[${BASH_REMATCH[1]}] ]]; then
      unset "value[${BASH_REMATCH[1]}]"
    elif [[ $arg =~ ^([a-z_]+\.[^=]+)=(.*)$ ]]; then
      key=${BASH_REMATCH[1]}
      [[ " ${order[*]} " == *" $key "* ]] || order+=("$key")
      value[$key]=${BASH_REMATCH[2]}
    else
      echo "write_trainer_config: \"$arg\": expected SECTION.KEY=VALUE or -SECTION.KEY (a key of the base)" >&2
      return 1
    fi
  done
  # One [section] per section, in the order of first appearance, with its keys in order.
  for key in "${order[@]}"; do
    sec=${key%%.*}
    [[ -v value[$key] && " ${lines[*]} " != *" [$sec] "* ]] || continue
    lines+=("[$sec]")
    for arg in "${order[@]}"; do
      [[ ${arg%%.*} == "$sec" && -v value[$arg] ]] && lines+=("${arg#*.} =${value[$arg]:+ ${value[$arg]}}")
    done
  done
  printf '%s\n' "${lines[@]}" >"$file"
}

# start_trainer LOG ARGS...: `eddy train ARGS` in the background, stderr to LOG; sets TRAIN_PID and
# PORT (from the "admin API listening on port N" line). Returns 1 if it exits or never listens.
start_trainer() {
  spawn "$1.out" "$1" "$EDDY" train "${@:2}"
  TRAIN_PID=$SPAWNED_PID
  PORT=$(wait_for_line "$1" 's/.*admin API listening on port \([0-9]*\).*/\1/p' "$TRAIN_PID" 300 0.05)
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

# check_trainer_stops SIGNAL WHAT: stop_trainer SIGNAL as a check that the trainer exits 0; WHAT
# names the run in the PASS/FAIL line.
check_trainer_stops() {
  stop_trainer "$1"
  CHECKS=$((CHECKS + 1))
  if [[ $TRAIN_RC == 0 ]]; then pass "$2: SIG$1, exit 0"; else fail "$2: SIG$1, exit $TRAIN_RC"; fi
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

# check_status SECONDS EXPR DESCRIPTION: wait_status as a check; a FAIL line is followed by the
# last status read. Returns 1 when EXPR did not hold.
check_status() {
  CHECKS=$((CHECKS + 1))
  if wait_status "$1" "$2"; then
    pass "$3"
    return 0
  fi
  fail "$3: not within $1 s ($2)"
  cat "$TMP/status.json" >&2
  return 1
}

# current_version: prints the trainer's current_version from GET /v1/status.
current_version() {
  curl -sf "http://127.0.0.1:$PORT/v1/status" | $PY -c 'import json,sys; print(json.load(sys.stdin)["current_version"])'
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
