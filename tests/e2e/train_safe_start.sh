#!/usr/bin/env bash
# Safe start-up of `eddy train` over a damaged store, without --fresh. CURRENT naming a rejected
# version, a missing one or `../../etc`: the trainer warns, points CURRENT at the newest promoted
# version that verifies (atomically, recorded in events.log) and serves it on
# /v1/versions/current. An empty newest version folder (an interrupted copy), a corrupt newest
# state, and CURRENT's own version failing verification: the restore skips the broken versions
# with a warning each and resumes from the newest one that loads. After every start a replica
# started afterwards serves CURRENT at once (its first /v1/predict answers 200).
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/train_helpers.bash"

need_command curl

N=400
require_broker --topic events --partitions 2 --topic eddy-snapshots --partitions 1
$PY -c '
import json, random
random.seed(11)
for i in range('$N'):
    x = [random.random() for _ in range(4)]
    print(json.dumps({"id": "s%d" % i, "label": int(x[0] + x[1] > 1), "dense": x}))' >"$TMP/events.jsonl"
check_rc 0 "produce $N events" -- "$EDDY" produce -b "$BOOT" -t events --data "$TMP/events.jsonl" --key id
write_token safe-start-token
M=$TMP/store/safe
write_trainer_config "$TMP/train.ini" model.name=safe model.dense_dim=4 model.hidden=8 model.head=logistic \
  -model.classes snapshot.every_steps=1000000 snapshot.gate.max_regression=1000 snapshot.gate.min_events=10

# Three versions (v1..v3, all promoted), then the trainer stops.
require_trainer "$TMP/train0.err" -c "$TMP/train.ini"
check_status 60 "s['buffer']['cursor'] == $N" "$N events trained"
for v in 1 2 3; do
  code=$(post /v1/snapshot '{"timeout_ms": 20000}')
  CHECKS=$((CHECKS + 1))
  if [[ $code == 200 ]] && grep -q "\"version\": *$v\b" "$TMP/post.json" && grep -q '"status": *"promoted"' "$TMP/post.json"
  then pass "v$v published"; else fail "POST /v1/snapshot: HTTP $code $(cat "$TMP/post.json")"; fi
done
check_trainer_stops TERM "first run"

vdir() { printf '%s/v%06d' "$M" "$1"; }
set_current() { printf '%s\n' "$1" >"$M/CURRENT.tmp" && mv "$M/CURRENT.tmp" "$M/CURRENT"; }
corrupt() { printf 'garbage' | dd of="$1" bs=1 seek=100 conv=notrunc 2>/dev/null; }

# start_checked NAME WANT: starts the trainer (log $TMP/NAME.err) and checks that it is up, that
# CURRENT (file, /v1/versions/current, status) is v WANT, and that a replica started then
# answers its first /v1/predict with version WANT. Stops both.
start_checked() {
  local name=$1 want=$2 code
  CHECKS=$((CHECKS + 1))
  if ! start_trainer "$TMP/$name.err" -c "$TMP/train.ini"; then
    fail "$name: the trainer did not start"
    tail -n 20 "$TMP/$name.err" >&2
    return 1
  fi
  pass "$name: the trainer started without --fresh"
  CHECKS=$((CHECKS + 1))
  if [[ $(cat "$M/CURRENT") == "$(printf 'v%06d' "$want")" ]]; then pass "$name: CURRENT names v$want"; else
    fail "$name: CURRENT is '$(cat "$M/CURRENT")', want v$want"
  fi
  code=$(curl -s -o "$TMP/current.json" -w '%{http_code}' "http://127.0.0.1:$PORT/v1/versions/current")
  CHECKS=$((CHECKS + 1))
  if [[ $code == 200 ]] && $PY -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["version"] == int(sys.argv[2]) else 1)' "$TMP/current.json" "$want"; then
    pass "$name: /v1/versions/current answers v$want"
  else
    fail "$name: /v1/versions/current: HTTP $code $(head -c 300 "$TMP/current.json")"
  fi
  check_status 10 "s['current_version'] == $want" "$name: status current_version is $want"
  start_serve "r_$name" -c "$TMP/train.ini" --set http.bind=127.0.0.1:0 \
    --set serve.trainer_url="http://127.0.0.1:$PORT" --set serve.poll_seconds=1 --set serve.threads=1
  local got="" deadline=$((SECONDS + 5))
  while ((SECONDS < deadline)) && [[ -n $REPLICA_PORT ]]; do
    got=$(curl -s -D - -o /dev/null -X POST --data '{"dense":[0.1,0.2,0.3,0.4]}' "http://127.0.0.1:$REPLICA_PORT/v1/predict" |
      tr -d '\r' | awk -F': ' 'tolower($1) == "x-eddy-version" { print $2 }')
    [[ -n $got ]] && break
    sleep 0.1
  done
  CHECKS=$((CHECKS + 1))
  if [[ $got == "$want" ]]; then pass "$name: a replica started now serves v$want at once"; else
    fail "$name: the replica serves '${got:-nothing}' within 5 s, want v$want"
    tail -n 5 "$TMP/r_$name.err" >&2
  fi
  [[ -n $REPLICA_PID ]] && kill -TERM "$REPLICA_PID" 2>/dev/null && wait "$REPLICA_PID" 2>/dev/null
  check_trainer_stops TERM "$name"
}

# ---- CURRENT naming a rejected version ----
$PY - "$(vdir 3)/manifest.json" <<'PYEOF'
import json, sys
m = json.load(open(sys.argv[1]))
m["status"], m["reason"] = "rejected", "made rejected by the test"
json.dump(m, open(sys.argv[1], "w"), indent=2)
PYEOF
set_current v000003
start_checked rejected 2
check_grep "$TMP/rejected.err" "CURRENT = v000002, the newest promoted version that verifies (was v000003: v000003 is rejected, not promoted" "rejected: the repair is logged"
check_grep "$M/events.log" '"action":"repair","version":2,"previous":3' "rejected: the repair is in events.log"

# ---- a missing version, a path ----
set_current v000099
start_checked missing 2
check_grep "$TMP/missing.err" "(was v000099: v000099 does not exist)" "missing: the repair is logged"
set_current ../../etc
start_checked path 2
check_grep "$TMP/path.err" '"../../etc" is not a version name' "path: the repair is logged"
check_grep "$M/events.log" '"action":"repair","version":2,"previous":null' "path: the repair is in events.log"

# ---- an empty newest folder: skipped at restore; CURRENT (v2) stays ----
mkdir "$(vdir 4)"
start_checked empty 2
check_grep "$TMP/empty.err" "v000004 skipped at restore" "empty: the empty folder is skipped with a warning"
check_grep "$TMP/empty.err" "restored v000003" "empty: the newest version that loads (v3) is restored"

# ---- a corrupt newest state (v3) ----
corrupt "$(vdir 3)/state.safetensors"
start_checked corrupt_state 2
check_grep "$TMP/corrupt_state.err" "v000003 skipped at restore: state file $(vdir 3)/state.safetensors is corrupt" "corrupt state: v3 is skipped, naming the file"
check_grep "$TMP/corrupt_state.err" "restored v000002" "corrupt state: v2 is restored"

# ---- CURRENT's own version fails verification (v2's weights) ----
corrupt "$(vdir 2)/weights.safetensors"
start_checked corrupt_current 1
check_grep "$TMP/corrupt_current.err" "(was v000002: v000002 does not verify" "corrupt CURRENT: the repair is logged"
check_grep "$TMP/corrupt_current.err" "restored v000001" "corrupt CURRENT: v1 is restored"

check_sanitizers
finish
