#!/usr/bin/env bash
# A clean stop while Kafka is gone: `eddy train` and `eddy serve` (following the announcements)
# run against `eddy broker`; events flow and versions are promoted; then the broker is killed
# (kill -9) while offset commits and fetches are under way, a version is published with Kafka
# unreachable (its announcement cannot be delivered), and both get SIGTERM. Each must exit 0 within
# 2 s (librdkafka's own close waits 45 s for a group coordinator, or forever for a commit that was
# in flight: issue #3740). Nothing is lost: the buffer holds every produced event exactly once
# (ingest_check), every version verifies, CURRENT is the version published last, and a new
# trainer on the same buffer and store resumes from it once a broker is back.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/train_helpers.bash"

CHECK=${EDDY_INGEST_CHECK:-$(dirname "$EDDY")/tests/ingest_check}
[[ -x $CHECK ]] || skip "ingest_check helper not built ($CHECK)"
need_command curl

N=3000
LIMIT=2
require_broker --topic events --partitions 4 --topic eddy-snapshots --partitions 1
write_token stop-token
$PY -c '
import json, random, sys
random.seed(7)
for i in range(int(sys.argv[1])):
    x = [random.random() for _ in range(32)]
    print(json.dumps({"id": "s%d" % i, "label": int(x[0] + x[1] > 1), "dense": x}))' $N >"$TMP/events.jsonl"
write_trainer_config "$TMP/train.ini" model.name=stop model.dense_dim=32 model.hidden=8 model.head=logistic \
  -model.classes snapshot.every_steps=20 snapshot.gate.max_regression=1000
require_trainer "$TMP/train.err" -c "$TMP/train.ini"
CHECKS=$((CHECKS + 1))
if start_serve replica -c "$TMP/train.ini" --set http.bind=127.0.0.1:0 \
  --set serve.trainer_url="http://127.0.0.1:$PORT" --set serve.poll_seconds=3600; then
  pass "a replica follows the announcements (port $REPLICA_PORT)"
else
  fail "the replica did not start"
  tail -n 20 "$TMP/replica.err" >&2
fi
check_rc 0 "produce $N events" -- "$EDDY" produce -b "$BOOT" -t events --data "$TMP/events.jsonl" --key id --rate 3000
check_status 60 "s['buffer']['next_seq'] == $N and s['current_version'] is not None" \
  "all $N events stored, a version promoted"
CUR=$(current_version)
CHECKS=$((CHECKS + 1))
for _ in $(seq 100); do
  [[ $(curl -s "http://127.0.0.1:$REPLICA_PORT/healthz") == *"\"version\":"* ]] && break
  sleep 0.1
done
if [[ $(curl -s "http://127.0.0.1:$REPLICA_PORT/healthz") == *"\"version\":"* ]]; then
  pass "the replica serves a version"
else fail "the replica serves nothing"; fi

# ---- the broker dies ----
kill -KILL "$BROKER_PID"
sleep 1
code=$(post /v1/snapshot '{"timeout_ms": 20000}')
CHECKS=$((CHECKS + 1))
if [[ $code == 200 ]]; then pass "a version published with the broker gone: $(cat "$TMP/post.json")"; else
  fail "POST /v1/snapshot with the broker gone: HTTP $code $(cat "$TMP/post.json")"
fi
LAST=$(current_version)

# stop_timed NAME PID: SIGTERM, then a check that PID exits 0 within LIMIT s (killed after 30 s).
stop_timed() {
  local t0 rc took=
  t0=$(date +%s.%N)
  kill -TERM "$2"
  for _ in $(seq 600); do kill -0 "$2" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$2" 2>/dev/null && kill -KILL "$2"
  wait "$2"
  rc=$?
  [[ $rc == 0 ]] && took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
  check_seconds "$1 exits 0 after SIGTERM with the broker gone (exit $rc)" "$took" $LIMIT
}
stop_timed "eddy train" "$TRAIN_PID"
stop_timed "eddy serve" "$REPLICA_PID"
check_grep "$TMP/train.err" "every broker is down: abandoned" "the undelivered announcement was abandoned, and said so"

# ---- nothing lost ----
"$CHECK" --path "$TMP/buffer" --ids s:$N >"$TMP/out" 2>"$TMP/err"
check_py "the buffer holds each of the $N events exactly once" \
  "j['events'] == $N and j['distinct'] == $N and j['duplicates'] == 0 and j['missing'] == 0"
nv=$(verify_all "$TMP/store/stop")
CHECKS=$((CHECKS + 1))
if [[ $nv -ge 2 ]]; then pass "all $nv versions verify"; else fail "versions: $nv"; fi
CHECKS=$((CHECKS + 1))
if [[ $(cat "$TMP/store/stop/CURRENT") == "$(printf 'v%06d' "$LAST")" && $LAST != "$CUR" ]]; then
  pass "CURRENT is v$LAST, published after the broker died"
else
  fail "CURRENT is $(cat "$TMP/store/stop/CURRENT"), want v$LAST (v$CUR before)"
fi
require_broker --topic events --partitions 4 --topic eddy-snapshots --partitions 1
write_trainer_config "$TMP/train.ini" model.name=stop model.dense_dim=32 model.hidden=8 model.head=logistic \
  -model.classes snapshot.every_steps=20 snapshot.gate.max_regression=1000
require_trainer "$TMP/train2.err" -c "$TMP/train.ini"
check_grep "$TMP/train2.err" "restored v$(printf %06d "$LAST")" "a new trainer resumes from v$LAST"
check_trainer_stops TERM "the new trainer"
check_sanitizers
finish
