#!/usr/bin/env bash
# The Open Inference Protocol (KServe v2) on `eddy serve`, over HTTP (/v2) and gRPC
# (serve.grpc_bind), checked with an independent client: Python's urllib and Debian's grpcio and
# protobuf (message classes generated from src/serve/proto by protoc at test time). A replica
# reading a snapshot store answers health and metadata before its first version (not ready, 503,
# UNAVAILABLE, NOT_SERVING) while a grpc.health.v1 Watch is open; then one Fashion-MNIST version is
# published (store_publish), the Watch sees SERVING, and tests/e2e/oip_client.py calls every route
# and method, compares /v1/predict, /v2 JSON, /v2 binary and gRPC predictions bit for bit on 500
# test images (with and without sparse features) and in bf16 and fp16 asked for by each protocol
# (the answers name the precision; one the replica does not hold is 400 / INVALID_ARGUMENT), sends
# the bad inputs (wrong shapes, datatypes,
# missing inputs, a tensor over the cap, truncated binary data, malformed protobuf) and checks
# that the replica keeps serving. Metrics count every protocol; SIGTERM ends the Watch and exits 0.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/train_helpers.bash" # check_sanitizers

PUBLISH=${EDDY_STORE_PUBLISH:?set by CTest: the store_publish helper}
REF=${EDDY_PREDICT_REF:?set by CTest: the predict_ref helper}
FM=${EDDY_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
[[ -f $FM/t10k-images-idx3-ubyte.gz ]] || { echo "SKIP: Fashion-MNIST not found in $FM (install dataset-fashion-mnist)"; exit 77; }
command -v curl >/dev/null || { echo "SKIP: curl not installed"; exit 77; }
command -v protoc >/dev/null || { echo "SKIP: protoc not installed (protobuf-compiler)"; exit 77; }
$PY -c 'import grpc, google.protobuf' 2>/dev/null || { echo "SKIP: python3-grpcio / python3-protobuf not installed"; exit 77; }

N=500
MAX_BODY=1048576
mkdir -p "$TMP/py" "$TMP/store/fmnist"
check_rc 0 "protoc generates the Python classes from src/serve/proto" -- \
  protoc --python_out="$TMP/py" -I"$SRC/src/serve/proto" grpc_service.proto health.proto

# ---- configuration ----
check_rc 2 "serve.grpc_bind without a port is a config error" -- "$EDDY" serve -c /dev/null --set serve.grpc_bind=localhost
check_grep "$TMP/err" 'serve.grpc_bind = "localhost": expected host:port (port 0..65535), or nothing for none' \
  "the bad serve.grpc_bind is named"
$PY -c 'import socket, time; s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); print(s.getsockname()[1], flush=True); time.sleep(30)' >"$TMP/taken" &
TAKER=$!
PIDS+=("$TAKER")
for _ in $(seq 50); do [[ -s $TMP/taken ]] && break; sleep 0.1; done
check_rc 1 "a gRPC port in use: exit 1" -- "$EDDY" serve -c /dev/null --set http.bind=127.0.0.1:0 \
  --set serve.store="$TMP/store" --set serve.grpc_bind="127.0.0.1:$(cat "$TMP/taken")"
check_grep "$TMP/err" "Address already in use" "the reason is named"
kill "$TAKER" 2>/dev/null

# ---- a replica before its first version ----
cat >"$TMP/replica.ini" <<EOF2
[model]
name = fmnist
[serve]
store = $TMP/store
poll_seconds = 1
threads = 2
grpc_bind = 127.0.0.1:0
[http]
bind = 127.0.0.1:0
max_body_bytes = $MAX_BODY
EOF2
CHECKS=$((CHECKS + 1))
if start_serve replica -c "$TMP/replica.ini"; then pass "replica up (HTTP $REPLICA_PORT)"; else
  fail "the replica did not start"
  cat "$TMP/replica.err" >&2
  finish
  exit 1
fi
HP=$REPLICA_PORT
GP=$(sed -n 's/.*gRPC listening on port \([0-9]*\).*/\1/p' "$TMP/replica.err" | head -n 1)
CHECKS=$((CHECKS + 1))
if [[ -n $GP ]]; then pass "gRPC listening on port $GP"; else fail "no gRPC port logged"; fi
sleep 1.5 # a poll of the empty store

http_code() { curl -s -o "$TMP/body" -w '%{http_code}' "$@"; }
check_rc 0 "GET /v2/health/live before any version" -- http_code "http://127.0.0.1:$HP/v2/health/live"
check_grep "$TMP/out" 200 "live before any version"
check_rc 0 "GET /v2/health/ready before any version" -- http_code "http://127.0.0.1:$HP/v2/health/ready"
check_grep "$TMP/out" 400 "not ready (400) before any version"
check_rc 0 "GET /v2/models/fmnist/ready before any version" -- http_code "http://127.0.0.1:$HP/v2/models/fmnist/ready"
check_grep "$TMP/out" 400 "the model is not ready (400) before any version"
check_rc 0 "GET /v2/models/fmnist before any version" -- http_code "http://127.0.0.1:$HP/v2/models/fmnist"
check_grep "$TMP/out" 503 "model metadata: 503 before any version"
check_rc 0 "POST /v2/models/fmnist/infer before any version" -- http_code -X POST --data '{}' "http://127.0.0.1:$HP/v2/models/fmnist/infer"
check_grep "$TMP/out" 503 "infer: 503 before any version"
check_grep "$TMP/body" "no version promoted yet" "the 503 says why"

$PY - "$TMP/py" "$GP" >"$TMP/out" 2>"$TMP/err" <<'PYEOF'
import json, sys
sys.path.insert(0, sys.argv[1])
import grpc, grpc_service_pb2 as pb, health_pb2 as hpb
ch = grpc.insecure_channel("127.0.0.1:" + sys.argv[2])
def call(name, req, resp, svc="inference.GRPCInferenceService"):
    try:
        r = ch.unary_unary("/%s/%s" % (svc, name), request_serializer=req.SerializeToString,
                           response_deserializer=resp.FromString)(req, timeout=10)
        return "OK", r
    except grpc.RpcError as e:
        return e.code().name, e.details()
out = {"live": call("ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse)[1].live,
       "ready": call("ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse)[1].ready,
       "model_ready": call("ModelReady", pb.ModelReadyRequest(name="fmnist"), pb.ModelReadyResponse)[1].ready,
       "meta": call("ModelMetadata", pb.ModelMetadataRequest(name="fmnist"), pb.ModelMetadataResponse),
       "infer": call("ModelInfer", pb.ModelInferRequest(model_name="fmnist"), pb.ModelInferResponse),
       "health": call("Check", hpb.HealthCheckRequest(), hpb.HealthCheckResponse, "grpc.health.v1.Health")[1].status}
print(json.dumps(out))
PYEOF
cat "$TMP/out"
check_py "gRPC before any version: live, not ready, UNAVAILABLE with the reason, NOT_SERVING" \
  'j["live"] and not j["ready"] and not j["model_ready"] and j["meta"][0] == "UNAVAILABLE" and j["infer"] == ["UNAVAILABLE", "no version promoted yet"] and j["health"] == 2'

# A health Watch, open from before the first version until the replica stops.
$PY - "$TMP/py" "$GP" >"$TMP/watch.out" 2>"$TMP/watch.err" <<'PYEOF' &
import sys
sys.path.insert(0, sys.argv[1])
import grpc, health_pb2 as hpb
ch = grpc.insecure_channel("127.0.0.1:" + sys.argv[2])
watch = ch.unary_stream("/grpc.health.v1.Health/Watch", request_serializer=hpb.HealthCheckRequest.SerializeToString,
                        response_deserializer=hpb.HealthCheckResponse.FromString)
try:
    for r in watch(hpb.HealthCheckRequest()):
        print(hpb.HealthCheckResponse.ServingStatus.Name(r.status), flush=True)
except grpc.RpcError as e:
    print("END", e.code().name, e.details(), flush=True)
PYEOF
WATCH_PID=$!
PIDS+=("$WATCH_PID")
for _ in $(seq 50); do [[ -s $TMP/watch.out ]] && break; sleep 0.1; done

# ---- one version ----
check_rc 0 "publish a Fashion-MNIST model (3000 training images) as v1" -- "$PUBLISH" --fashion-mnist "$TMP/store" fmnist 3000
CHECKS=$((CHECKS + 1))
deadline=$((SECONDS + 15))
until [[ $(curl -s "http://127.0.0.1:$HP/healthz") == *'"version":1'* ]] || ((SECONDS > deadline)); do sleep 0.1; done
if ((SECONDS <= deadline)); then pass "the replica serves v1"; else fail "the replica never served v1"; tail -n 5 "$TMP/replica.err" >&2; fi
check_rc 0 "the learner's predictions for $N test images" -- bash -c "'$REF' '$TMP/store/fmnist/v000001' fashion-mnist:test $N >'$TMP/ref.tsv'"

$PY "$SRC/tests/e2e/oip_client.py" "$TMP/py" "$HP" "$GP" fmnist 1 "$TMP/ref.tsv" "$MAX_BODY" >"$TMP/client.out" 2>"$TMP/client.err"
cat "$TMP/client.out" "$TMP/client.err"
summary=$(tail -n 1 "$TMP/client.out")
if [[ $summary == '{"checks": '* ]]; then
  CHECKS=$((CHECKS + $($PY -c 'import json,sys; print(json.loads(sys.argv[1])["checks"])' "$summary")))
  FAILS=$((FAILS + $($PY -c 'import json,sys; print(json.loads(sys.argv[1])["fails"])' "$summary")))
else
  CHECKS=$((CHECKS + 1))
  fail "oip_client.py did not finish"
fi

# ---- metrics: every protocol counted in the same families, with the precision that served ----
curl -sf "http://127.0.0.1:$HP/metrics" >"$TMP/metrics"
metric() { awk -v n="$1" '$1 == n { print int($2) }' "$TMP/metrics"; }
for series in 'eddy_predict_requests_total{protocol="v1",code="200"}' 'eddy_predict_requests_total{protocol="v2",code="200"}' \
  'eddy_predict_requests_total{protocol="grpc",code="200"}' 'eddy_predict_requests_total{protocol="v2",code="400"}' \
  'eddy_predict_requests_total{protocol="grpc",code="400"}' 'eddy_predict_requests_total{protocol="grpc",code="404"}' \
  'eddy_predict_requests_total{protocol="v2",code="413"}' \
  'eddy_grpc_requests_total{method="inference.GRPCInferenceService/ModelInfer",grpc_code="INVALID_ARGUMENT"}' \
  'eddy_grpc_requests_total{method="grpc.health.v1.Health/Check",grpc_code="OK"}' \
  'eddy_predict_precision_requests_total{protocol="v1",precision="fp32",reason="config"}' \
  'eddy_predict_precision_requests_total{protocol="v2",precision="fp16",reason="request"}' \
  'eddy_predict_precision_requests_total{protocol="grpc",precision="bf16",reason="request"}'; do
  v=$(metric "$series")
  CHECKS=$((CHECKS + 1))
  if [[ -n $v ]] && ((v > 0)); then pass "$series = $v"; else fail "$series is '$v'"; fi
done
if command -v promtool >/dev/null; then
  check_rc 0 "promtool check metrics" -- promtool check metrics <"$TMP/metrics"
fi
v1=$(metric 'eddy_predict_instances_total{protocol="v1"}')
grpc=$(metric 'eddy_predict_instances_total{protocol="grpc"}')
CHECKS=$((CHECKS + 1))
if ((v1 >= 2 * N && grpc >= 4 * N)); then pass "events predicted by protocol: v1 $v1, grpc $grpc"; else fail "instances: v1 '$v1', grpc '$grpc'"; fi

# ---- clean stop ----
CHECKS=$((CHECKS + 1))
if kill -TERM "$REPLICA_PID" && wait "$REPLICA_PID"; then pass "SIGTERM: the replica exits 0"; else fail "the replica did not exit 0 on SIGTERM"; fi
wait "$WATCH_PID"
cat "$TMP/watch.out"
check_rc 0 "the Watch's statuses" -- tr '\n' ' ' <"$TMP/watch.out"
check_grep "$TMP/out" "NOT_SERVING SERVING END UNAVAILABLE the replica is stopping" \
  "the Watch saw NOT_SERVING, then SERVING, then the end with the replica"
check_sanitizers
finish
