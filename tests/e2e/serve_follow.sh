#!/usr/bin/env bash
# `eddy serve` following a live `eddy train` over `eddy broker`: two replicas fetch from the
# trainer over HTTP and follow the announcements on snapshot.topic. A load generator (4 threads per
# replica, keep-alive) runs while the trainer publishes at least 50 versions; every request must
# succeed and every X-Eddy-Version seen must be a promoted version. Then a rollback through
# `eddy ctl` is served by both replicas within seconds, their predictions for the whole
# Fashion-MNIST test set equal the trainer's own (learner) predictions for that version (same
# argmax, probabilities within 1e-5), the trainer lists both replicas from their heartbeats, and
# SIGTERM stops them cleanly.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/train_helpers.bash"

REF=${EDDY_PREDICT_REF:?set by CTest: the predict_ref helper}
need_fashion_mnist t10k-images-idx3-ubyte.gz
need_command curl

N=9000
require_broker --topic events --partitions 8 --topic eddy-snapshots --partitions 1
write_token serve-e2e-token
STORE=$TMP/store
# Versions in fp32 only: scoring the other serving precisions (e2e_serve_precision's subject) made
# each publish about 1 s under ASan, too slow for 50 versions within the stream.
write_trainer_config "$TMP/train.ini" train.holdout_fraction=0.05 -replay.ratio snapshot.every_steps=3 \
  snapshot.gate.max_regression=1000 snapshot.precisions=fp32

require_trainer "$TMP/train.err" -c "$TMP/train.ini"

# Replicas: same model and Kafka settings, their own port, the trainer's URL.
replica() { # replica NAME: starts it; sets RPORT_<NAME> and RPID_<NAME>
  start_serve "$1" -c "$TMP/train.ini" --set http.bind=127.0.0.1:0 --set serve.trainer_url="http://127.0.0.1:$PORT" \
    --set serve.poll_seconds=2 --set serve.heartbeat_seconds=1 --set serve.threads=2 || return 1
  printf -v "RPORT_$1" '%s' "$REPLICA_PORT"
  printf -v "RPID_$1" '%s' "$REPLICA_PID"
}
CHECKS=$((CHECKS + 1))
if replica a && replica b; then pass "two replicas up ($RPORT_a, $RPORT_b)"; else
  fail "replicas did not start"
  tail -n 20 "$TMP"/a.err "$TMP"/b.err >&2
  finish
  exit 1
fi
check_rc 0 "healthz before any promotion" -- curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$RPORT_a/healthz"
check_grep "$TMP/out" 503 "a replica with no version answers 503"

# The request body of the load: one test image.
$PY - "$FM" "$TMP/one.json" <<'PYEOF'
import gzip, json, sys
d = sys.argv[1]
img = gzip.open(d + "/t10k-images-idx3-ubyte.gz").read()[16:16 + 784]
json.dump({"dense": [b / 255 for b in img]}, open(sys.argv[2], "w"))
PYEOF

# Produce at a pace that lets the trainer publish often (a version every 4 steps of 16), start
# the load once both replicas serve the first promotion, and keep it running through the rest.
"$EDDY" produce -b "$BOOT" -t events --data fashion-mnist:train --limit $N --key id --rate 300 \
  >"$TMP/produce.out" 2>"$TMP/produce.err" &
PRODUCE_PID=$!
PIDS+=("$PRODUCE_PID")
for r in a b; do
  port_var=RPORT_$r
  CHECKS=$((CHECKS + 1))
  deadline=$((SECONDS + 60))
  until [[ $(curl -s "http://127.0.0.1:${!port_var}/healthz") == *'"status":"ok"'* ]] || ((SECONDS > deadline)); do sleep 0.1; done
  if ((SECONDS <= deadline)); then pass "replica $r serves a first version"; else fail "replica $r never served"; tail -n 5 "$TMP/$r.err" >&2; fi
done
rm -f "$TMP/stop"
$PY "$SRC/tests/e2e/predict_load.py" "$TMP/load.json" "$TMP/one.json" "$TMP/stop" 240 4 \
  "http://127.0.0.1:$RPORT_a" "http://127.0.0.1:$RPORT_b" >"$TMP/load.out" 2>"$TMP/load.err" &
LOAD_PID=$!
PIDS+=("$LOAD_PID")
CHECKS=$((CHECKS + 1))
if wait "$PRODUCE_PID"; then pass "produced $N images at 300/s"; else fail "eddy produce failed"; cat "$TMP/produce.err" >&2; fi
check_status 120 "s['buffer']['cursor'] == $N" "all $N events trained"
# The trainer may still publish after the last event (a snapshot already due): compare with its
# CURRENT as it is at each check.
for r in a b; do
  port_var=RPORT_$r
  CHECKS=$((CHECKS + 1))
  deadline=$((SECONDS + 15))
  CUR=$(current_version)
  until [[ $(curl -s "http://127.0.0.1:${!port_var}/healthz") == *"\"version\":$CUR}"* ]] || ((SECONDS > deadline)); do
    sleep 0.2
    CUR=$(current_version)
  done
  if ((SECONDS <= deadline)); then pass "replica $r serves the current v$CUR"; else fail "replica $r does not serve v$CUR"; tail -n 5 "$TMP/$r.err" >&2; fi
done
touch "$TMP/stop"
wait "$LOAD_PID"
curl -sf "http://127.0.0.1:$PORT/v1/versions?limit=1000" >"$TMP/versions.json"
$PY - "$TMP/load.json" "$TMP/versions.json" >"$TMP/out" <<'PYEOF'
import json, sys
load = json.load(open(sys.argv[1]))
vs = json.load(open(sys.argv[2]))["versions"]
promoted = {str(v["version"]) for v in vs if v["status"] == "promoted"}
print(json.dumps({"requests": load["requests"], "ok": load["ok"], "failures": load["failures"],
                  "seen": len(load["versions"]),
                  "unpromoted_seen": sorted(set(load["versions"]) - promoted), "promoted": len(promoted),
                  "details": load["details"]}))
PYEOF
cat "$TMP/out"
check_py "at least 50 versions promoted while the load ran" 'j["promoted"] >= 50'
check_py "no failed request under load" 'j["failures"] == {} and j["ok"] == j["requests"] and j["ok"] > 1000'
check_py "every X-Eddy-Version seen was promoted" 'j["unpromoted_seen"] == [] and j["seen"] >= 5'
for r in a b; do
  port_var=RPORT_$r
  swaps=$(curl -sf "http://127.0.0.1:${!port_var}/metrics" | awk '$1 == "eddy_replica_swaps_total" {print int($2)}')
  CHECKS=$((CHECKS + 1))
  if ((swaps >= 10)); then pass "replica $r swapped $swaps times"; else fail "replica $r swapped only '$swaps' times"; fi
done
# ---- rollback ----
RB=$($PY -c 'import json,sys; vs=[v["version"] for v in json.load(open(sys.argv[1]))["versions"] if v["status"]=="promoted"]; print(sorted(vs)[len(vs)//3])' "$TMP/versions.json")
# Pause first, as docs/operations.md says: a serve-only rollback holds until the next promotion.
check_rc 0 "eddy ctl pause" -- "$EDDY" ctl --url "http://127.0.0.1:$PORT" --token-file "$TMP/token" pause
check_rc 0 "eddy ctl rollback $RB" -- "$EDDY" ctl --url "http://127.0.0.1:$PORT" --token-file "$TMP/token" rollback "$RB"
for r in a b; do
  port_var=RPORT_$r
  CHECKS=$((CHECKS + 1))
  t0=$SECONDS
  got=
  for _ in $(seq 100); do
    got=$(curl -s -D - -o /dev/null -X POST --data @"$TMP/one.json" "http://127.0.0.1:${!port_var}/v1/predict" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-eddy-version"{print $2}')
    [[ $got == "$RB" ]] && break
    sleep 0.1
  done
  if [[ $got == "$RB" ]]; then pass "replica $r serves the rolled-back v$RB ($((SECONDS - t0)) s)"; else fail "replica $r serves '$got', want $RB"; fi
done

# ---- predictions equal the trainer's own ----
check_rc 0 "the trainer's predictions for v$RB (learner forward pass)" -- bash -c "'$REF' '$STORE/fmnist/$(printf v%06d "$RB")' fashion-mnist:test >'$TMP/ref.tsv'"
$PY - "$TMP/ref.tsv" "http://127.0.0.1:$RPORT_a" "$RB" >"$TMP/out" <<'PYEOF'
import json, sys, urllib.request
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
events = [json.loads(r[0]) for r in rows]
want = [[float(x) for x in r[1].split()] for r in rows]
got, versions = [], set()
for i in range(0, len(events), 100):
    body = json.dumps({"instances": events[i:i + 100]}).encode()
    req = urllib.request.Request(sys.argv[2] + "/v1/predict", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        versions.add(r.headers["X-Eddy-Version"])
        got += json.load(r)["predictions"]
argmax = lambda p: max(range(len(p)), key=p.__getitem__)
diff = max(abs(a - b) for g, w in zip(got, want) for a, b in zip(g, w))
same = sum(argmax(g) == argmax(w) for g, w in zip(got, want))
print(json.dumps({"n": len(got), "want": len(want), "max_diff": diff, "same_argmax": same, "versions": sorted(versions)}))
PYEOF
cat "$TMP/out"
check_py "replica predictions for all 10000 test images equal the trainer's (argmax, 1e-5)" \
  "j['n'] == j['want'] == 10000 and j['same_argmax'] == 10000 and j['max_diff'] <= 1e-5 and j['versions'] == ['$RB']"

# ---- heartbeats: the trainer lists both replicas on the rolled-back version ----
CHECKS=$((CHECKS + 1))
deadline=$((SECONDS + 10))
ok=0
while ((SECONDS < deadline)); do
  if curl -sf "http://127.0.0.1:$PORT/v1/replicas" >"$TMP/replicas.json" &&
     $PY -c 'import json,sys; r=json.load(open(sys.argv[1]))["replicas"]; sys.exit(0 if sum(1 for x in r if x["version"]==int(sys.argv[2]) and not x["stale"])==2 else 1)' "$TMP/replicas.json" "$RB"; then
    ok=1; break
  fi
  sleep 0.5
done
if ((ok)); then pass "GET /v1/replicas lists both replicas on v$RB"; else fail "trainer's replica list: $(cat "$TMP/replicas.json" 2>/dev/null)"; fi

# ---- clean stop ----
check_sigterm "replica a" "$RPID_a"
check_sigterm "replica b" "$RPID_b"
check_sanitizers
finish
