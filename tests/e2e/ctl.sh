#!/usr/bin/env bash
# `eddy ctl` against a running `eddy train` (fed by `eddy broker` + `eddy produce`): status and
# versions as tables and --json, snapshot, serve-only and retrain rollbacks, pause/resume, the
# address and token taken from -c CONFIG or EDDY_TOKEN_FILE, and the errors: wrong or missing
# token (exit 1 with the server's message), unknown version (exit 1), usage errors (exit 2), no
# server (exit 1).
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/train_helpers.bash"

unset EDDY_TOKEN_FILE

# ctl WANT_RC DESCRIPTION ARGS...: eddy ctl against the trainer, output in $TMP/out and $TMP/err.
ctl() {
  local want=$1 what=$2
  shift 2
  check_rc "$want" "$what" -- "$EDDY" ctl --url "$URL" --timeout 40 "$@"
}

check_py_lines() { # check_py_lines DESCRIPTION EXPR: EXPR over the stdout lines L
  CHECKS=$((CHECKS + 1))
  if $PY -c 'import sys; L=[l.split() for l in open(sys.argv[1]) if l.strip()]; sys.exit(0 if eval(sys.argv[2]) else 1)' \
    "$TMP/out" "$2"; then pass "$1"; else
    fail "$1: $2 is false"
    sed 's/^/  | /' "$TMP/out" >&2
  fi
}

# ---- broker and stream ----
require_broker --topic events --partitions 1 --topic eddy-snapshots --partitions 1

$PY - "$TMP/events.jsonl" <<'PYEOF'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(800):
        label = (i * 7 + i // 3) % 2
        f.write(json.dumps({"id": f"e{i}", "ts": 1732780000000 + i, "label": label,
                            "sparse": {"f": f"v{label * 3 + i % 3}", "g": f"w{i % 11}"}}) + "\n")
PYEOF
check_rc 0 "produce 800 events" -- "$EDDY" produce -b "$BOOT" -t events --data "$TMP/events.jsonl"

# ---- trainer ----
PORT=$(free_port)
URL="http://127.0.0.1:$PORT"
write_token ctl-e2e-token
write_token wrong-token "$TMP/wrong"
write_trainer_config "$TMP/train.ini" model.name=ctltest -model.dense_dim model.hash_bits=10 model.embed_dim=4 \
  model.hidden=8 model.head=logistic model.classes=2 -train.optimizer train.lr=0.05 -replay.ratio \
  kafka.group.id=ctltest snapshot.every_steps=0 \
  snapshot.keep=100 snapshot.gate.max_regression=1000000 snapshot.topic=eddy-snapshots \
  http.bind="127.0.0.1:$PORT" http.max_body_bytes=4096
"$EDDY" train -c "$TMP/train.ini" --fresh >"$TMP/train.out" 2>"$TMP/train.err" &
TRAIN_PID=$!
PIDS+=("$TRAIN_PID")
disown "$TRAIN_PID"

up=0
for _ in $(seq 300); do
  if "$EDDY" ctl --url "$URL" --json status >"$TMP/out" 2>/dev/null &&
    $PY -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])).get("step", 0) >= 5 else 1)' \
      "$TMP/out" 2>/dev/null; then
    up=1
    break
  fi
  kill -0 "$TRAIN_PID" 2>/dev/null || break
  sleep 0.2
done
if [[ $up -ne 1 ]]; then
  fail "eddy train did not come up and train within 60 s"
  sed 's/^/  train: /' "$TMP/train.err" | tail -n 20 >&2
  finish
  exit 1
fi
pass "eddy train is up and training"

# ---- read-only commands ----
ctl 0 "status" status
check_py_lines "status table: one 'key value' line each, state running, step >= 5" \
  "all(len(l) >= 2 for l in L) and ['state', 'running'] in L and any(l[0] == 'step' and int(l[1]) >= 5 for l in L)"
check_py_lines "status table: per-class accuracy one line per class (key[i] field=value ...)" \
  "any(l[0] == 'prequential.per_class[0]' and 'class=0' in l and any(x.startswith('accuracy=') for x in l) for l in L)"
ctl 0 "status --json" --json status
check_py "status --json is the server's object" "j['state'] == 'running' and j['step'] >= 5"

# ---- snapshots (token from --token-file, then from EDDY_TOKEN_FILE) ----
ctl 0 "snapshot" --token-file "$TMP/token" snapshot
check_grep "$TMP/out" "published version 1: promoted" "snapshot prints the version and verdict"
EDDY_TOKEN_FILE="$TMP/token" ctl 0 "snapshot --json (EDDY_TOKEN_FILE)" --json snapshot
check_py "snapshot --json: version 2 promoted" "j['version'] == 2 and j['status'] == 'promoted'"

ctl 0 "versions" versions
check_grep "$TMP/out" "VERSION" "versions table header"
check_py_lines "versions table: 2 rows, newest first, 2 current" \
  "len(L) == 4 and L[2][0] == '2' and L[3][0] == '1' and L[2][1] == 'promoted' and L[2][2] == '*'"
ctl 0 "versions --json" --json versions
check_py "versions --json: 2 versions, current 2" \
  "j['count'] == 2 and j['current'] == 2 and [v['version'] for v in j['versions']] == [2, 1]"

# ---- rollback ----
ctl 0 "rollback 1 (serve only)" --token-file "$TMP/token" rollback 1
check_grep "$TMP/out" "rolled back to version 1" "rollback prints the version"
check_grep "$TMP/out" "current version 1" "rollback prints the new current version"
ctl 0 "versions --json after rollback" --json versions
check_py "CURRENT is 1 after the rollback" "j['current'] == 1"
ctl 0 "rollback 1 again (idempotent)" --token-file "$TMP/token" rollback v000001
ctl 0 "rollback v000002 --retrain --skip 0:10" --token-file "$TMP/token" --json \
  rollback v000002 --retrain --skip 0:10
check_py "retrain rollback answer" "j['version'] == 2 and j['retrain'] is True and j['skip'] == [0, 10] and j['current_version'] == 2"

# ---- pause / resume, address and token from -c CONFIG ----
check_rc 0 "pause (-c CONFIG)" -- "$EDDY" ctl -c "$TMP/train.ini" pause
check_grep "$TMP/out" "training paused (state: paused)" "pause prints the state"
check_rc 0 "status --json (-c CONFIG)" -- "$EDDY" ctl -c "$TMP/train.ini" --json status
check_py "status is paused" "j['state'] == 'paused'"
check_rc 0 "resume (-c CONFIG)" -- "$EDDY" ctl -c "$TMP/train.ini" resume
check_grep "$TMP/out" "training resumed" "resume prints the state"

# ---- errors ----
ctl 1 "pause with a wrong token" --token-file "$TMP/wrong" pause
check_grep "$TMP/err" "HTTP 401" "wrong token: the status"
check_grep "$TMP/err" "bearer token is not valid" "wrong token: the server's message"
ctl 1 "pause without a token" pause
check_grep "$TMP/err" "needs an Authorization: Bearer token" "no token: the server's message"
check_grep "$TMP/err" "EDDY_TOKEN_FILE" "no token: a hint"
ctl 1 "rollback to an unknown version" --token-file "$TMP/token" rollback 999
check_grep "$TMP/err" "HTTP 404" "unknown version: 404"
check_grep "$TMP/err" "999" "unknown version: named"
ctl 2 "rollback x" rollback x
ctl 2 "rollback without a version" rollback
ctl 2 "--skip without --retrain" --token-file "$TMP/token" rollback 1 --skip 1:2
ctl 2 "--skip 5:2" --token-file "$TMP/token" rollback 1 --retrain --skip 5:2
ctl 2 "--retrain on status" status --retrain
ctl 2 "unknown command" frobnicate
ctl 2 "missing token file" --token-file "$TMP/no-such-file" pause
check_grep "$TMP/err" "no-such-file" "missing token file: named"
check_rc 2 "no command" -- "$EDDY" ctl
check_rc 2 "bad --url" -- "$EDDY" ctl --url ftp://x status
check_rc 0 "--help" -- "$EDDY" ctl --help
check_grep "$TMP/out" "rollback V [--retrain] [--skip A:B]" "help lists rollback"
DEAD=$(free_port)
check_rc 1 "no server" -- "$EDDY" ctl --url "http://127.0.0.1:$DEAD" status
check_grep "$TMP/err" "127.0.0.1:$DEAD" "no server: the address is named"

kill -TERM "$TRAIN_PID" 2>/dev/null
for _ in $(seq 100); do
  kill -0 "$TRAIN_PID" 2>/dev/null || break
  sleep 0.1
done
finish
