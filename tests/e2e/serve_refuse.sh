#!/usr/bin/env bash
# `eddy serve` refuses damaged versions and keeps serving the one it had. Two replicas without
# Kafka, polling every second: one reads a shared snapshot store (serve.store), the other fetches
# over HTTP from a static stand-in for the trainer's routes (python3 -m http.server over the same
# versions, laid out as /v1/versions/current and /v1/snapshots/V/FILE). Versions are published with
# the store API in a staging store, damaged there, then made CURRENT: a truncated weights file, a
# flipped byte, weights of another shape (manifest re-hashed so only the shape check can catch it),
# a manifest whose sha256 is wrong, a safetensors header over the replica's 1 MiB cap, and a
# manifest of another version. Each is refused (log line naming the problem, refusal counter up,
# X-Eddy-Version unchanged, predictions still answered); a good version afterwards is served.
# Also: before any version, /healthz and /v1/predict answer 503 with the reason; bad requests
# answer 400 naming the instance and field; oversize bodies 413; usage errors exit 2.
source "$(dirname "$0")/lib.bash"

PUBLISH=${EDDY_STORE_PUBLISH:?set by CTest: the store_publish helper}
need_command curl

STAGE=$TMP/stage
LIVE=$TMP/live
WEB=$TMP/web
mkdir -p "$LIVE/demo" "$WEB/v1/versions" "$WEB/v1/snapshots"

# publish_current V: copies staging version V into the live store and the web tree, then points
# both CURRENTs at it (the web tree's /v1/versions/current is the manifest itself).
publish_current() {
  local v=$1 name
  name=$(printf 'v%06d' "$v")
  cp -r "$STAGE/demo/$name" "$LIVE/demo/.tmp-$name" && mv "$LIVE/demo/.tmp-$name" "$LIVE/demo/$name"
  mkdir -p "$WEB/v1/snapshots/$v"
  cp "$STAGE/demo/$name"/* "$WEB/v1/snapshots/$v/"
  printf '%s\n' "$name" >"$LIVE/demo/CURRENT.tmp" && mv "$LIVE/demo/CURRENT.tmp" "$LIVE/demo/CURRENT"
  local current=$STAGE/demo/$name/manifest.json
  [[ -f $TMP/current-override.json ]] && current=$TMP/current-override.json
  cp "$current" "$WEB/v1/versions/current.tmp" && mv "$WEB/v1/versions/current.tmp" "$WEB/v1/versions/current"
  rm -f "$TMP/current-override.json"
}

# rehash V: rewrites staging V's manifest entry of weights.safetensors with the file's real size
# and sha256 (so that only the structure or shape checks can refuse it).
rehash() {
  $PY - "$STAGE/demo/$(printf 'v%06d' "$1")" <<'PYEOF'
import hashlib, json, os, sys
d = sys.argv[1]
m = json.load(open(os.path.join(d, "manifest.json")))
w = open(os.path.join(d, "weights.safetensors"), "rb").read()
m["files"]["weights.safetensors"] = {"bytes": len(w), "sha256": hashlib.sha256(w).hexdigest()}
json.dump(m, open(os.path.join(d, "manifest.json"), "w"), indent=2)
PYEOF
}

metric() { # metric PORT NAME{LABELS}: the value, or 0
  curl -sf --max-time 5 "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { print $2; found=1 } END { if (!found) print 0 }'
}

served_version() { # served_version PORT: X-Eddy-Version of a prediction, or "none"
  curl -s --max-time 5 -D - -o /dev/null -X POST --data '{"dense":[0.1,0.2,0.3,0.4,0.5],"sparse":{"a":1}}' \
    "http://127.0.0.1:$1/v1/predict" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-eddy-version" { v=$2 } END { print v ? v : "none" }'
}

wait_for() { # wait_for SECONDS CMD...: until CMD succeeds
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [[ $SECONDS -ge $deadline ]] && return 1
    sleep 0.2
  done
}

healthz_has() { # healthz_has PORT TEXT: whether the replica's /healthz body contains TEXT
  [[ $(curl -s "http://127.0.0.1:$1/healthz") == *"$2"* ]]
}

# check_serving NAME V SECONDS: a check that replica NAME's /healthz reports version V within
# SECONDS; a FAIL line is followed by the tail of its log.
check_serving() {
  local port_var=PORT_$1
  CHECKS=$((CHECKS + 1))
  if wait_for "$3" healthz_has "${!port_var}" "\"version\":$2"; then pass "$1: serving v$2"; else
    fail "$1: not serving v$2 within $3 s"
    tail -n 20 "$TMP/$1.err" >&2
  fi
}

# ---- usage ----
check_rc 2 "serve without -c" -- "$EDDY" serve
check_rc 2 "serve with a bad serve.precision" -- "$EDDY" serve -c /dev/null --set serve.precision=fp8
check_grep "$TMP/err" 'serve.precision = "fp8": expected auto, fp32, bf16, fp16 or int8' "the bad precision is named"
printf '[serve]\nthreads = 2\n[http]\ntoken_file = %s/no-such-token\n' "$TMP" >"$TMP/notoken.ini"
check_rc 2 "serve with a missing token file" -- "$EDDY" serve -c "$TMP/notoken.ini"
check_grep "$TMP/err" "$TMP/notoken.ini:4: http.token_file = \"$TMP/no-such-token\": No such file or directory" \
  "the missing token file is named with its config line"
check_rc 2 "serve with a token file that is a folder" -- "$EDDY" serve -c "$TMP/notoken.ini" --set "http.token_file=$TMP"
check_grep "$TMP/err" "--set: http.token_file = \"$TMP\": not a regular file" "a --set token file is named as --set"
check_rc 0 "serve --help" -- "$EDDY" serve --help
check_grep "$TMP/out" "X-Eddy-Version" "--help describes the predict answer"

# ---- the stand-in trainer and two replicas ----
WEB_PORT=$(free_port)
(cd "$WEB" && exec $PY -m http.server "$WEB_PORT" --bind 127.0.0.1) >"$TMP/httpd.out" 2>"$TMP/httpd.err" &
PIDS+=($!)
disown $!
cat >"$TMP/replica.ini" <<EOF2
[model]
name = demo
[serve]
poll_seconds = 1
[http]
bind = 127.0.0.1:0
EOF2
start_replica() { # start_replica NAME ARGS...: sets PORT_<NAME> and PID_<NAME>
  start_serve "$1" -c "$TMP/replica.ini" "${@:2}" || return 1
  printf -v "PORT_$1" '%s' "$REPLICA_PORT"
  printf -v "PID_$1" '%s' "$REPLICA_PID"
}
CHECKS=$((CHECKS + 1))
if start_replica store --set serve.store="$LIVE" && start_replica web --set serve.trainer_url="http://127.0.0.1:$WEB_PORT"; then
  pass "two replicas up (store: $PORT_store, http: $PORT_web)"
else
  fail "replicas did not start"
  cat "$TMP"/store.err "$TMP"/web.err >&2
  finish
  exit 1
fi

# ---- before any version ----
sleep 1.5
for r in store web; do
  port_var=PORT_$r
  check_rc 0 "$r: GET /healthz before any version" -- curl -s -o "$TMP/health.json" -w '%{http_code}' "http://127.0.0.1:${!port_var}/healthz"
  check_grep "$TMP/out" "503" "$r: /healthz is 503 before any version"
  check_grep "$TMP/health.json" '"status":"waiting"' "$r: /healthz says it is waiting"
  check_rc 0 "$r: predict before any version" -- curl -s -w '%{http_code}' -X POST --data '{"dense":[1,2,3,4,5]}' "http://127.0.0.1:${!port_var}/v1/predict"
  check_grep "$TMP/out" "503" "$r: predict is 503 before any version"
done

# ---- a good version ----
check_rc 0 "publish v1..v2 into the staging store" -- "$PUBLISH" "$STAGE" demo 2
publish_current 2
CHECKS=$((CHECKS + 1))
if wait_for 15 bash -c "[[ \$(curl -s -D - -o /dev/null -X POST --data '{\"dense\":[0.1,0.2,0.3,0.4,0.5]}' http://127.0.0.1:$PORT_store/v1/predict | tr -d '\r' | grep -i '^x-eddy-version') ]]"; then
  pass "store replica serves"
else
  fail "store replica never served v2"
  tail -n 20 "$TMP/store.err" >&2
fi
for r in store web; do
  port_var=PORT_$r
  check_serving $r 2 15
  check_rc 0 "$r: predict" -- curl -sf -X POST --data '{"instances":[{"dense":[0.1,0.2,0.3,0.4,0.5],"sparse":{"a":1,"b":"x"}},{"dense":[0,0,0,0,0]}]}' "http://127.0.0.1:${!port_var}/v1/predict"
  check_py "$r: two rows of 4 probabilities summing to 1" \
    'j["version"] == 2 and j["model"] == "demo" and len(j["predictions"]) == 2 and all(len(p) == 4 and abs(sum(p) - 1) < 1e-5 for p in j["predictions"])'
  check_rc 0 "$r: GET /v1/model" -- curl -sf "http://127.0.0.1:${!port_var}/v1/model"
  check_py "$r: /v1/model names the version and spec" 'j["version"] == 2 and j["spec"]["hidden"] == [8] and j["spec"]["classes"] == 4'
done

# ---- bad requests ----
P=$PORT_store
check_rc 0 "instance with a short dense vector" -- curl -s -w '\n%{http_code}' -X POST --data '{"instances":[{"dense":[1,2,3,4,5]},{"dense":[1,2]}]}' "http://127.0.0.1:$P/v1/predict"
check_grep "$TMP/out" 'instances[1]: dense has 2 values, expected 5' "400 names the instance and the field"
check_grep "$TMP/out" '400' "short dense vector is 400"
check_rc 0 "NaN in an event" -- curl -s -w '\n%{http_code}' -X POST --data '{"dense":[1,2,3,NaN,5]}' "http://127.0.0.1:$P/v1/predict"
check_grep "$TMP/out" '400' "invalid JSON is 400"
check_rc 0 "wrapper with an extra field" -- curl -s -w '\n%{http_code}' -X POST --data '{"instances":[{"dense":[1,2,3,4,5]}],"x":1}' "http://127.0.0.1:$P/v1/predict"
check_grep "$TMP/out" 'unexpected field \"x\" (only \"instances\" and \"precision\" are allowed)' "extra wrapper field is named"
head -c 1100000 /dev/zero | tr '\0' ' ' >"$TMP/big.json"
check_rc 0 "body over http.max_body_bytes" -- curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary @"$TMP/big.json" "http://127.0.0.1:$P/v1/predict"
check_grep "$TMP/out" '413' "oversize body is 413"
check_rc 0 "GET on predict" -- curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P/v1/predict"
check_grep "$TMP/out" '405' "GET /v1/predict is 405"

# ---- damaged versions ----
# damage V KIND: publishes version V in staging and damages it there.
damage() {
  local v=$1 kind=$2 dir
  "$PUBLISH" "$STAGE" demo 1 >/dev/null 2>&1 || { fail "publish v$v"; return 1; }
  dir=$STAGE/demo/$(printf 'v%06d' "$v")
  case $kind in
    truncated) truncate -s -100 "$dir/weights.safetensors" ;;
    flipped) $PY - "$dir/weights.safetensors" <<'PYEOF'
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[-7] ^= 0x40; open(p, "wb").write(b)
PYEOF
      ;;
    shapes) "$PUBLISH" --other-weights "$dir/weights.safetensors" "$v" && rehash "$v" ;;
    sha) $PY - "$dir/manifest.json" <<'PYEOF'
import json, sys
p = sys.argv[1]; m = json.load(open(p))
h = m["files"]["weights.safetensors"]["sha256"]
m["files"]["weights.safetensors"]["sha256"] = ("0" if h[0] != "0" else "1") + h[1:]
json.dump(m, open(p, "w"), indent=2)
PYEOF
      ;;
    header) $PY - "$dir/weights.safetensors" <<'PYEOF'
import json, struct, sys
p = sys.argv[1]; b = open(p, "rb").read()
n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
h["__metadata__"]["pad"] = "x" * (1 << 20)
t = json.dumps(h).encode(); t += b" " * ((8 - len(t) % 8) % 8)
open(p, "wb").write(struct.pack("<Q", len(t)) + t + b[8 + n:])
PYEOF
      rehash "$v" ;;
    other) # the version's folder holds v2's manifest; the stand-in trainer still announces v$v
      cp "$dir/manifest.json" "$TMP/current-override.json"
      $PY - "$dir/manifest.json" <<'PYEOF'
import json, sys
p = sys.argv[1]; m = json.load(open(p)); m["version"] = 2; m["parent"] = 1; json.dump(m, open(p, "w"))
PYEOF
      ;;
  esac
}

# expect a problem text per damage, for the store replica's and the HTTP replica's logs
declare -A WANT=(
  [truncated]="bytes, the manifest says"
  [flipped]="the manifest says"
  [shapes]="differs from the manifest's spec"
  [sha]="sha256"
  [header]="header"
  [other]="got the manifest of v000002"
)
v=2
for kind in truncated flipped shapes sha header other; do
  v=$((v + 1))
  damage $v $kind || continue
  before_store=$(metric "$PORT_store" 'eddy_replica_refusals_total{reason="verify"}')
  before_web=$(metric "$PORT_web" 'eddy_replica_refusals_total{reason="verify"}')
  publish_current $v
  for r in store web; do
    port_var=PORT_$r
    before_var=before_$r
    CHECKS=$((CHECKS + 1))
    if wait_for 10 grep -q "v$(printf '%06d' $v) refused" "$TMP/$r.err"; then pass "$r: v$v ($kind) refused"; else
      fail "$r: v$v ($kind) not refused"
      tail -n 5 "$TMP/$r.err" >&2
    fi
    CHECKS=$((CHECKS + 1))
    if grep "v$(printf '%06d' $v) refused" "$TMP/$r.err" | grep -qF "${WANT[$kind]}"; then pass "$r: the log names the problem ($kind)"; else
      fail "$r: no refusal line with '${WANT[$kind]}' for v$v"
      grep "refused" "$TMP/$r.err" | tail -n 3 >&2
    fi
    after=$(metric "${!port_var}" 'eddy_replica_refusals_total{reason="verify"}')
    CHECKS=$((CHECKS + 1))
    if [[ ${after%.*} == $((${!before_var%.*} + 1)) ]]; then pass "$r: refusal counter +1"; else
      fail "$r: refusal counter went from ${!before_var} to $after, want +1"
    fi
    got=$(served_version "${!port_var}")
    CHECKS=$((CHECKS + 1))
    if [[ $got == 2 ]]; then pass "$r: still serving v2 after the $kind version"; else fail "$r: serving '$got' after $kind, want 2"; fi
  done
done

# A refused version is not fetched again at every poll (versions are immutable): after two more
# polls each replica has refused each of the six damaged versions exactly once.
sleep 2.5
for r in store web; do
  port_var=PORT_$r
  total=$(metric "${!port_var}" 'eddy_replica_refusals_total{reason="verify"}')
  CHECKS=$((CHECKS + 1))
  if [[ ${total%.*} == 6 ]]; then pass "$r: 6 refusals in all, no retry of a refused version"; else
    fail "$r: $total refusals, want 6"
    grep -c refused "$TMP/$r.err" >&2
  fi
done

# ---- a good version after all that ----
v=$((v + 1))
check_rc 0 "publish a good v$v" -- "$PUBLISH" "$STAGE" demo 1
publish_current $v
for r in store web; do
  port_var=PORT_$r
  check_serving $r $v 10
  check_rc 0 "$r: metrics" -- curl -sf "http://127.0.0.1:${!port_var}/metrics"
  check_grep "$TMP/out" "eddy_replica_model_version $v" "$r: eddy_replica_model_version is $v"
  check_grep "$TMP/out" 'eddy_predict_requests_total{protocol="v1",code="200"}' "$r: predict requests counted by protocol and code"
  if command -v promtool >/dev/null; then
    check_rc 0 "$r: promtool check metrics" -- promtool check metrics <"$TMP/out"
  fi
  if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$TMP/$r.err"; then fail "$r: sanitizer report"; grep -A5 -E 'ERROR|runtime error' "$TMP/$r.err" | head -20 >&2; fi
done

# ---- clean stop ----
check_sigterm store "$PID_store"
check_sigterm web "$PID_web"
finish
