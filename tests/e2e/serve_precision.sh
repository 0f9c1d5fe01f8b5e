#!/usr/bin/env bash
# Serving precisions end to end (issue 15). Two trainers on `eddy broker` publish every version in
# fp32, bf16, fp16 and int8 with each precision's holdout metrics: A, a Fashion-MNIST MLP, where
# int8 costs next to nothing; B, a logistic model whose second feature carries the label while the
# first is 0 except in 2% of the events, where it is +-1000: int8's one input scale per layer then
# rounds the informative feature to nothing, and int8's holdout accuracy collapses. Replicas:
#   r1 (A over HTTP, serve.precision = auto): serves the cheapest precision within the budget, int8,
#      and the trainer's replica table says so;
#   r2 (B from the store, auto, serve.precisions = fp32,bf16,int8): int8 is beyond the budget, so
#      bf16 serves; a request may still ask for int8 (header) or fp32 (body field); fp16, which it
#      does not hold, and an unknown name are 400 naming the precisions it holds;
#   r3 (A from the store, fp32, serve.latency_target_ms = 2, one CPU): 8 clients overload it, it steps down
#      to bf16 and int8 and back up to fp32 once the load stops; /metrics shows the steps and the
#      requests served at each precision for the load.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/train_helpers.bash"

need_fashion_mnist train-images-idx3-ubyte.gz
need_command curl

require_broker --topic events --partitions 8 --topic skew --partitions 2 --topic eddy-snapshots --partitions 1
write_token precision-e2e-token
STORE=$TMP/store

# ---- trainers ----
write_trainer_config "$TMP/a.ini" snapshot.every_steps=50 snapshot.gate.max_regression=1000
require_trainer "$TMP/train-a.err" -c "$TMP/a.ini"
PORT_A=$PORT
PID_A=$TRAIN_PID
write_trainer_config "$TMP/b.ini" model.name=skew model.dense_dim=2 model.hidden= model.head=logistic \
  stream.topic=skew kafka.group.id=skew buffer.path="$TMP/buffer-b" train.optimizer=adam train.lr=0.05 \
  snapshot.every_steps=50 snapshot.gate.max_regression=1000
require_trainer "$TMP/train-b.err" -c "$TMP/b.ini"
PORT_B=$PORT
PID_B=$TRAIN_PID

$PY - "$TMP/skew.jsonl" <<'PYEOF'
import json, random, sys
rnd = random.Random(15)
with open(sys.argv[1], "w") as f:
    for i in range(3000):
        x1 = rnd.choice((-1, 1)) * rnd.uniform(0.2, 1.0)
        x0 = rnd.choice((-1000.0, 1000.0)) if rnd.random() < 0.02 else 0.0
        f.write(json.dumps({"id": "s-%d" % i, "label": int(x1 > 0), "dense": [x0, x1]}) + "\n")
PYEOF
check_rc 0 "3000 Fashion-MNIST images on topic events" -- \
  "$EDDY" produce -b "$BOOT" -t events --data fashion-mnist:train --limit 3000 --key id
check_rc 0 "3000 skewed events on topic skew" -- "$EDDY" produce -b "$BOOT" -t skew --data "$TMP/skew.jsonl" --key id

# trained PORT PID N: waits for that trainer to train N events, then has it publish once more.
trained() {
  PORT=$1
  TRAIN_PID=$2
  check_status 60 "s['buffer']['cursor'] == $3" "trainer on port $1 trained all $3 events"
  CHECKS=$((CHECKS + 1))
  if [[ $(post /v1/snapshot) == 200 ]]; then pass "trainer on port $1 published v$(current_version)"; else
    fail "POST /v1/snapshot on port $1: $(cat "$TMP/post.json")"
  fi
}
trained "$PORT_A" "$PID_A" 3000
V_A=$(PORT=$PORT_A current_version)
trained "$PORT_B" "$PID_B" 3000
V_B=$(PORT=$PORT_B current_version)

# The manifests: every precision with its file and holdout metrics.
manifest() { printf '%s/%s/v%06d/manifest.json' "$STORE" "$1" "$2"; }
$PY - "$(manifest fmnist "$V_A")" "$(manifest skew "$V_B")" >"$TMP/out" <<'PYEOF'
import json, sys
out = {}
for name, path in zip(("a", "b"), sys.argv[1:]):
    m = json.load(open(path))
    out[name] = {p: {"file": e["file"], "accuracy": e["holdout"]["accuracy"], "n": e["holdout"]["n"]}
                 for p, e in m.get("precisions", {}).items()}
    out[name + "_files"] = sorted(m["files"])
print(json.dumps(out))
PYEOF
cat "$TMP/out"
check_py "A's manifest lists the four precisions, each with its file and holdout metrics" \
  'sorted(j["a"]) == ["bf16", "fp16", "fp32", "int8"] and len(j["a_files"]) == 5 and all(e["n"] > 100 for e in j["a"].values())'
check_py "B's int8 holdout accuracy drops beyond 1 point (the outlier feature), bf16's does not" \
  'j["b"]["fp32"]["accuracy"] - j["b"]["int8"]["accuracy"] > 0.05 and j["b"]["fp32"]["accuracy"] - j["b"]["bf16"]["accuracy"] <= 0.01'
check_rc 0 "eddy snapshot verify on A's and B's versions (precision files included)" -- \
  "$EDDY" snapshot verify "$STORE/fmnist/$(printf v%06d "$V_A")" "$STORE/skew/$(printf v%06d "$V_B")"

# ---- replicas ----
# r3 runs on one CPU (its affinity), so it processes one request at a time (one compute slot) and
# the load below queues there whatever the machine's speed or its other load.
ONE_CPU=$TMP/eddy-one-cpu
printf '#!/bin/sh\nexec taskset -c %s %q "$@"\n' \
  "$($PY -c 'import os; print(min(os.sched_getaffinity(0)))')" "$EDDY" >"$ONE_CPU"
chmod +x "$ONE_CPU"
replica() { # replica NAME CONFIG SETTINGS...: starts it; sets RPORT_<NAME>
  start_serve "$1" -c "$2" --set http.bind=127.0.0.1:0 --set serve.poll_seconds=1 --set serve.heartbeat_seconds=1 \
    "${@:3}" || return 1
  printf -v "RPORT_$1" '%s' "$REPLICA_PORT"
  printf -v "RPID_$1" '%s' "$REPLICA_PID"
}
CHECKS=$((CHECKS + 1))
if replica r1 "$TMP/a.ini" --set serve.trainer_url="http://127.0.0.1:$PORT_A" --set serve.precision=auto \
     --set serve.max_accuracy_drop=0.03 &&
   replica r2 "$TMP/b.ini" --set serve.store="$STORE" --set serve.precision=auto --set serve.precisions=fp32,bf16,int8 \
     --set http.token_file= &&
   EDDY=$ONE_CPU replica r3 "$TMP/a.ini" --set serve.store="$STORE" --set serve.precision=fp32 \
     --set serve.precisions=fp32,bf16,int8 --set serve.latency_target_ms=2 --set serve.threads=8 --set http.token_file=; then
  pass "three replicas up ($RPORT_r1, $RPORT_r2, $RPORT_r3)"
else
  fail "replicas did not start"
  tail -n 20 "$TMP"/r1.err "$TMP"/r2.err "$TMP"/r3.err >&2
  finish
  exit 1
fi
serving() { # serving PORT VERSION: waits (30 s at most) until the replica serves VERSION
  local deadline=$((SECONDS + 30))
  until [[ $(curl -s "http://127.0.0.1:$1/healthz") == *"\"version\":$2}"* ]]; do
    ((SECONDS > deadline)) && return 1
    sleep 0.2
  done
}
for r in r1:$V_A r2:$V_B r3:$V_A; do
  port_var=RPORT_${r%%:*}
  CHECKS=$((CHECKS + 1))
  if serving "${!port_var}" "${r#*:}"; then pass "${r%%:*} serves v${r#*:}"; else fail "${r%%:*} does not serve v${r#*:}"; tail -n 5 "$TMP/${r%%:*}.err" >&2; fi
done

$PY - "$FM" "$TMP" <<'PYEOF'
import gzip, json, sys
raw = gzip.open(sys.argv[1] + "/train-images-idx3-ubyte.gz").read()[16:]
ev = lambda i: {"dense": [b / 255 for b in raw[784 * i:784 * (i + 1)]]}
json.dump(ev(0), open(sys.argv[2] + "/one.json", "w"))
json.dump({"instances": [ev(i) for i in range(32)]}, open(sys.argv[2] + "/batch.json", "w"))
rounded = lambda i: {"dense": [round(b / 255, 3) for b in raw[784 * i:784 * (i + 1)]]}
json.dump({"instances": [rounded(i) for i in range(96)]}, open(sys.argv[2] + "/load.json", "w"))
json.dump({"instances": [{"dense": [0, 0.5]}, {"dense": [0, -0.5]}], "precision": "fp32"}, open(sys.argv[2] + "/skew-fp32.json", "w"))
json.dump({"instances": [{"dense": [0, 0.5]}, {"dense": [0, -0.5]}]}, open(sys.argv[2] + "/skew.json", "w"))
PYEOF
# predict PORT BODY_FILE [HEADER]: the answer in $TMP/out (JSON, then the status and X-Eddy-Precision).
predict() {
  curl -s -D "$TMP/headers" -o "$TMP/answer" -X POST --data @"$2" ${3:+-H "$3"} "http://127.0.0.1:$1/v1/predict" >/dev/null
  $PY - "$TMP/answer" "$TMP/headers" >"$TMP/out" <<'PYEOF'
import json, sys
h = {}
for line in open(sys.argv[2]):
    if ":" in line:
        k, v = line.split(":", 1)
        h[k.strip().lower()] = v.strip()
status = int(open(sys.argv[2]).readline().split()[1])
try:
    body = json.load(open(sys.argv[1]))
except ValueError:
    body = {}
print(json.dumps({"status": status, "header": h.get("x-eddy-precision"), "body": body}))
PYEOF
}

# ---- 1. auto serves the cheapest precision within the budget ----
check_rc 0 "r1: GET /v1/model" -- curl -sf "http://127.0.0.1:$RPORT_r1/v1/model"
check_py "r1 serves A in int8, chosen by auto within the budget, with the kernel named" \
  'j["precision"] == "int8" and j["precision_why"].startswith("auto: int8, holdout accuracy") and sorted(j["precisions"]["held"]) == ["bf16", "fp16", "fp32", "int8"] and j["precisions"]["held"]["int8"]["kernel"] in ("avx512-vnni", "avx-vnni", "avx2", "scalar")'
predict "$RPORT_r1" "$TMP/one.json"
check_py "r1 answers in int8: X-Eddy-Precision and \"precision\"" \
  'j["status"] == 200 and j["header"] == "int8" and j["body"]["precision"] == "int8" and len(j["body"]["predictions"]) == 1'
CHECKS=$((CHECKS + 1))
deadline=$((SECONDS + 10))
until curl -sf "http://127.0.0.1:$PORT_A/v1/replicas" >"$TMP/replicas.json" &&
  $PY -c 'import json,sys; r=json.load(open(sys.argv[1]))["replicas"]; sys.exit(0 if any(x["precision"]=="int8" and x["precision_why"].startswith("auto") for x in r) else 1)' "$TMP/replicas.json"; do
  ((SECONDS > deadline)) && break
  sleep 0.5
done
if ((SECONDS <= deadline)); then pass "the trainer's replica table shows r1 on int8 (auto)"; else fail "replica table: $(cat "$TMP/replicas.json")"; fi

# ---- 2. int8 beyond the budget: a higher precision serves ----
check_rc 0 "r2: GET /v1/model" -- curl -sf "http://127.0.0.1:$RPORT_r2/v1/model"
check_py "r2 serves B in bf16: int8 is over the budget, and the reason says so" \
  'j["precision"] == "bf16" and "int8: holdout accuracy" in j["precision_why"] and "over the budget 0.0100" in j["precision_why"]'
predict "$RPORT_r2" "$TMP/skew.json"
check_py "r2 answers in bf16 and gets both events right" \
  'j["header"] == "bf16" and j["body"]["precision"] == "bf16" and j["body"]["predictions"][0] > 0.5 > j["body"]["predictions"][1]'

# ---- 3. a request chooses its precision ----
predict "$RPORT_r2" "$TMP/skew.json" "X-Eddy-Precision: int8"
check_py "r2 with X-Eddy-Precision: int8 answers in int8 (the same answer for both: the feature is lost)" \
  'j["status"] == 200 and j["header"] == "int8" and j["body"]["precision"] == "int8" and abs(j["body"]["predictions"][0] - j["body"]["predictions"][1]) < 1e-6'
predict "$RPORT_r2" "$TMP/skew-fp32.json" "X-Eddy-Precision: int8"
check_py "r2 with \"precision\": \"fp32\" in the body answers in fp32 (the body wins over the header)" \
  'j["status"] == 200 and j["header"] == "fp32" and j["body"]["predictions"][0] > 0.5 > j["body"]["predictions"][1]'
predict "$RPORT_r2" "$TMP/skew.json" "X-Eddy-Precision: fp16"
check_py "r2 asked for fp16, which it does not hold: 400 listing what it holds" \
  'j["status"] == 400 and j["body"]["error"] == "precision \"fp16\" is not held here: this replica holds fp32,bf16,int8"'
predict "$RPORT_r2" "$TMP/skew.json" "X-Eddy-Precision: int4"
check_py "r2 asked for int4: 400" 'j["status"] == 400 and "is not one of fp32, bf16, fp16, int8" in j["body"]["error"]'
curl -sf "http://127.0.0.1:$RPORT_r2/metrics" >"$TMP/metrics-r2"
check_grep "$TMP/metrics-r2" 'eddy_predict_precision_requests_total{protocol="v1",precision="int8",reason="request"} 1' "r2's metrics count the int8 request"
check_grep "$TMP/metrics-r2" 'eddy_predict_precision_requests_total{protocol="v1",precision="bf16",reason="auto"} 1' "r2's metrics count the bf16 (auto) request"

# ---- 4. overload steps the precision down, and back up once it is gone ----
# 8 client processes, each with a request of 96 events in flight, against r3's one slot.
$PY - "http://127.0.0.1:$RPORT_r3" "$TMP/load.json" 8 4 >"$TMP/out" <<'PYEOF'
import collections, http.client, json, multiprocessing, sys, time, urllib.parse
url, body, clients, seconds = urllib.parse.urlparse(sys.argv[1]), open(sys.argv[2], "rb").read(), int(sys.argv[3]), float(sys.argv[4])
def run(end):
    seen = collections.Counter()
    c = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    while time.time() < end:
        c.request("POST", "/v1/predict", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        seen["%d %s" % (r.status, r.getheader("X-Eddy-Precision"))] += 1
    return seen
with multiprocessing.Pool(clients) as pool:
    counts = pool.map(run, [time.time() + seconds] * clients)
print(json.dumps(dict(sum(counts, collections.Counter()))))
PYEOF
cat "$TMP/out"
check_py "under load r3 answered every request, some of them below fp32" \
  'all(k.startswith("200 ") for k in j) and j.get("200 fp32", 0) > 0 and j.get("200 bf16", 0) + j.get("200 int8", 0) > 0'
metric() { awk -v m="$1" '$1 == m {print $2}' "$TMP/metrics-r3"; }
CHECKS=$((CHECKS + 1))
deadline=$((SECONDS + 20))
while curl -sf "http://127.0.0.1:$RPORT_r3/metrics" >"$TMP/metrics-r3" && [[ $(metric eddy_replica_precision_load_steps) != 0 ]]; do
  ((SECONDS > deadline)) && break
  sleep 0.5
done
down=$(metric 'eddy_replica_precision_steps_total{direction="down"}')
up=$(metric 'eddy_replica_precision_steps_total{direction="up"}')
if [[ $(metric eddy_replica_precision_load_steps) == 0 ]] && ((down >= 1 && up >= 1)); then
  pass "r3 stepped down $down time(s) under load and back up $up time(s) once it stopped"
else
  fail "r3's steps: down '$down', up '$up', now $(metric eddy_replica_precision_load_steps) below the base"
fi
check_grep "$TMP/metrics-r3" 'eddy_replica_precision{precision="fp32"} 1' "r3 is back on fp32"
CHECKS=$((CHECKS + 1))
if grep -E '^eddy_predict_precision_requests_total\{protocol="v1",precision="(bf16|int8)",reason="load"\} [1-9]' "$TMP/metrics-r3" >/dev/null &&
   grep -E '^eddy_predict_queue_seconds_count\{protocol="v1"\} [1-9]' "$TMP/metrics-r3" >/dev/null; then
  pass "r3's metrics count the requests the load sent below fp32, and the queueing delay"
else
  fail "r3's metrics lack the load's requests"
  grep -E 'precision|queue' "$TMP/metrics-r3" >&2
fi
check_rc 0 "r3: GET /v1/model" -- curl -sf "http://127.0.0.1:$RPORT_r3/v1/model"
check_py "r3's /v1/model: fp32 again, for serve.precision, with the load's record" \
  'j["precision"] == "fp32" and j["precision_why"] == "serve.precision = fp32" and j["precisions"]["load"]["steps_down_total"] >= 1 and j["precisions"]["load"]["steps_up_total"] >= 1 and j["precisions"]["load"]["latency_target_ms"] == 2'
check_grep "$TMP/r3.err" "kernels: fp32 " "r3's log names the kernel of each precision"

# ---- clean stop ----
for r in r1 r2 r3; do
  pid_var=RPID_$r
  check_sigterm "replica $r" "${!pid_var}"
done
TRAIN_PID=$PID_A
check_trainer_stops TERM "trainer A"
TRAIN_PID=$PID_B
check_trainer_stops TERM "trainer B"
check_sanitizers
finish
