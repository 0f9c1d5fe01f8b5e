#!/usr/bin/env bash
# Hostile clients against both services (`eddy train`'s admin API and `eddy serve`): 2,000
# connections to each at once from 20 loopback addresses, a third with request headers that never
# end, a third declaring a 10 MB body (over http.max_body_bytes) and sending none, a third
# declaring 900 bytes and sending none. Meanwhile /healthz and /metrics answer every probe
# within 1 s; the 10 MB declarations are answered at once (413 on the replica); one client
# address keeps no more than http.max_connections_per_client (256) connections; the endless
# headers are closed by the server once http.header_timeout_seconds (10) has passed.
# The client is tests/e2e/http_abuse.py; the open-file limit is raised for it (ulimit -n).
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/train_helpers.bash"

need_command curl
PER_PORT=2000
WANT_FDS=$((2 * PER_PORT + 1024))
ulimit -n "$WANT_FDS" 2>/dev/null || skip "cannot raise the open-file limit to $WANT_FDS (hard limit $(ulimit -Hn))"
$PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.21", 0))' 2>/dev/null ||
  skip "cannot bind to 127.0.0.21 (the test spreads its clients over 127.0.0.2..21)"

require_broker --topic events --partitions 2 --topic eddy-snapshots --partitions 1
$PY -c '
import json, random
random.seed(5)
for i in range(600):
    x = [random.random() for _ in range(4)]
    print(json.dumps({"id": "a%d" % i, "label": int(x[0] > 0.5), "dense": x}))' >"$TMP/events.jsonl"
check_rc 0 "produce 600 events" -- "$EDDY" produce -b "$BOOT" -t events --data "$TMP/events.jsonl" --key id
write_token abuse-token
write_trainer_config "$TMP/train.ini" model.name=abuse model.dense_dim=4 model.hidden=8 model.head=logistic \
  -model.classes snapshot.every_steps=1000000 snapshot.gate.max_regression=1000 snapshot.gate.min_events=10 train.lr=0.05
require_trainer "$TMP/train.err" -c "$TMP/train.ini"
check_status 60 "s['buffer']['cursor'] == 600" "600 events trained"
code=$(post /v1/snapshot '{"timeout_ms": 20000}')
CHECKS=$((CHECKS + 1))
if [[ $code == 200 ]] && grep -q '"status": *"promoted"' "$TMP/post.json"; then pass "a version to serve"
else fail "POST /v1/snapshot: HTTP $code $(cat "$TMP/post.json")"; fi
CHECKS=$((CHECKS + 1))
if start_serve replica -c "$TMP/train.ini" --set http.bind=127.0.0.1:0 \
  --set serve.trainer_url="http://127.0.0.1:$PORT" --set serve.poll_seconds=1; then
  pass "replica up (port $REPLICA_PORT)"
else
  fail "replica did not start"; tail -n 20 "$TMP/replica.err" >&2; finish; exit 1
fi
deadline=$((SECONDS + 20))
until [[ $(curl -s "http://127.0.0.1:$REPLICA_PORT/healthz") == *'"status":"ok"'* ]] || ((SECONDS > deadline)); do sleep 0.1; done

$PY "$SRC/tests/e2e/http_abuse.py" $PER_PORT 256 10 10 "$PORT" "$REPLICA_PORT" >"$TMP/abuse.json" 2>"$TMP/abuse.err"
CHECKS=$((CHECKS + 1))
if [[ -s $TMP/abuse.json ]]; then pass "the abuse client ran"; else fail "the abuse client failed"; cat "$TMP/abuse.err" >&2; fi
echo "figures: $(cat "$TMP/abuse.json")"
judge() { # judge DESCRIPTION PYTHON-EXPR (r = the result, t and s = the trainer's and the replica's)
  CHECKS=$((CHECKS + 1))
  if $PY -c 'import json,sys; r=json.load(open(sys.argv[1])); t=r["ports"][sys.argv[2]]; s=r["ports"][sys.argv[3]]; sys.exit(0 if eval(sys.argv[4]) else 1)' \
    "$TMP/abuse.json" "$PORT" "$REPLICA_PORT" "$2" 2>/dev/null; then pass "$1"; else fail "$1 ($2)"; fi
}
for side in t s; do
  name=$([[ $side == t ]] && echo trainer || echo replica)
  judge "$name: all $PER_PORT connections accepted" "$side['connect_errors'] == 0"
  judge "$name: the endless headers and the unsent bodies are held open while probing" \
    "$side['partial_open'] == $((PER_PORT / 3 + (PER_PORT % 3 > 0))) and $side['small_open'] == $((PER_PORT / 3))"
  for path in /healthz /metrics; do
    judge "$name: $path answered 10 of 10 probes within 1 s meanwhile" "$side['$path']['answered'] == 10 and $side['$path']['max_seconds'] <= 1"
  done
  judge "$name: /healthz said 200" "$side['/healthz']['statuses'] == [200]"
  judge "$name: the endless headers were closed by the server after the header deadline" \
    "$side['partial_closed_after_deadline'] == $side['partial']"
done
judge "replica: every 10 MB declaration got a 413 at once" "s['large_statuses'] == {'413': s['large']} and s['large_read_seconds'] < 5"
judge "trainer: every 10 MB declaration was answered at once (404: no such route)" "t['large_statuses'] == {'404': t['large']} and t['large_read_seconds'] < 5"
judge "one client address keeps 256 connections, not 296" "r['one_client_open'] == 256"
check_grep "$TMP/train.err" "whose request headers were not complete 10 s after they opened" "the trainer logged the closed connections"
check_rc 0 "the replica still predicts" -- curl -sf -X POST --data '{"dense":[0.1,0.2,0.3,0.4]}' "http://127.0.0.1:$REPLICA_PORT/v1/predict"
check_sigterm replica "$REPLICA_PID"
check_trainer_stops TERM "trainer"
check_sanitizers
finish
