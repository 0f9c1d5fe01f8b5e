#!/usr/bin/env bash
# The trainer's dashboard in a real browser: `eddy broker`, `eddy produce` of 1200 Fashion-MNIST
# images, `eddy train` (publishing every 20 steps, then once more on request, so at least two
# promoted versions), two `eddy serve` replicas heartbeating to it; then Debian's chromium (driven
# by playwright-core, tests/browser/dashboard.mjs) opens the page with every non-loopback request
# blocked: every chart has data, screenshots are saved (${EDDY_ARTIFACTS:-<build>/artifacts}),
# a rollback with a wrong token shows the server's error and leaves CURRENT alone, one with the
# right token moves CURRENT and the page's replica table follows; both replicas then answer
# POST /v1/predict with X-Eddy-Version = that version. Skips (77) without node or chromium.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/train_helpers.bash"

CHROMIUM=${EDDY_CHROMIUM:-/usr/bin/chromium}
need_command node "ops/setup-deps installs nodejs"
need_command npm "ops/setup-deps installs npm"
[[ -x $CHROMIUM ]] || skip "$CHROMIUM not installed (ops/setup-deps installs chromium)"
need_fashion_mnist train-images-idx3-ubyte.gz
need_command curl

BUILD=$(cd "$(dirname "$EDDY")" && pwd)
ARTIFACTS=${EDDY_ARTIFACTS:-$BUILD/artifacts}
mkdir -p "$ARTIFACTS"
T_START=$SECONDS

# playwright-core, pinned by tests/browser/package-lock.json, in the build tree (never in the
# source tree); installed again only when the lock file changes.
DEPS=$BUILD/browser-deps
CHECKS=$((CHECKS + 1))
if ! cmp -s "$SRC/tests/browser/package-lock.json" "$DEPS/package-lock.json" ||
  [[ ! -f $DEPS/node_modules/playwright-core/package.json ]]; then
  mkdir -p "$DEPS"
  cp "$SRC/tests/browser/package.json" "$SRC/tests/browser/package-lock.json" "$DEPS/"
  if ! (cd "$DEPS" && npm ci --ignore-scripts --no-audit --no-fund --prefer-offline) >"$TMP/npm.log" 2>&1; then
    fail "npm ci of tests/browser/package-lock.json in $DEPS failed$(grep -qE 'ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ETIMEDOUT|network' "$TMP/npm.log" && echo ': the npm registry could not be reached (no network?)')"
    tail -n 20 "$TMP/npm.log" >&2
    rm -f "$DEPS/package-lock.json"
    finish
    exit 1
  fi
fi
pass "playwright-core installed in $DEPS"
cp "$SRC/tests/browser/dashboard.mjs" "$DEPS/dashboard.mjs" # resolves playwright-core from there

N=1200
require_broker --topic events --partitions 4 --topic eddy-snapshots --partitions 1
check_rc 0 "produce $N Fashion-MNIST images" -- "$EDDY" produce -b "$BOOT" -t events \
  --data fashion-mnist:train --limit $N --key id

write_token dashboard-e2e-token
write_trainer_config "$TMP/eddy.ini" model.hidden=32 buffer.capacity_events=5000 snapshot.every_steps=20 \
  snapshot.gate.max_regression=1000 snapshot.topic=eddy-snapshots serve.poll_seconds=1 serve.heartbeat_seconds=1

require_trainer "$TMP/train.err" -c "$TMP/eddy.ini"
TRAINER=http://127.0.0.1:$PORT
check_status 60 "s['buffer']['cursor'] == $N" "all $N events trained"
# One more version with everything trained; no event arrives after it, so CURRENT stays put
# until the rollback (replay.idle_steps = 0: no training while idle).
code=$(post /v1/snapshot '{"timeout_ms": 30000}')
CHECKS=$((CHECKS + 1))
npro=$(curl -sf "$TRAINER/v1/versions" | $PY -c 'import json,sys; print(sum(v["status"] == "promoted" for v in json.load(sys.stdin)["versions"]))')
if [[ $code == 200 && ${npro:-0} -ge 2 ]]; then pass "$npro promoted versions"; else
  fail "versions: POST /v1/snapshot HTTP $code, $npro promoted"
fi
CUR=$(current_version)

# start_replica NAME: `eddy serve` on a free port following the trainer; sets RPORT.
start_replica() {
  start_serve "$1" -c "$TMP/eddy.ini" --set "serve.trainer_url=$TRAINER" || return 1
  disown "$REPLICA_PID"
  RPORT=$REPLICA_PORT
}

# replica_version PORT: the X-Eddy-Version of a prediction (empty when it does not answer 200).
replica_version() {
  $PY -c 'import json; print(json.dumps({"id": "q", "label": 0, "dense": [0.5] * 784}))' >"$TMP/event.json"
  curl -s --max-time 5 -o /dev/null -D - -X POST -H 'Content-Type: application/json' \
    --data @"$TMP/event.json" -w '%{http_code}\n' "http://127.0.0.1:$1/v1/predict" |
    tr -d '\r' | awk -F': ' 'tolower($1) == "x-eddy-version" {v = $2} /^200$/ {ok = 1} END {if (ok) print v}'
}

# wait_replicas VERSION SECONDS: until both replicas serve VERSION.
wait_replicas() {
  local end=$((SECONDS + $2))
  while ((SECONDS < end)); do
    [[ $(replica_version "$R1") == "$1" && $(replica_version "$R2") == "$1" ]] && return 0
    sleep 0.2
  done
  return 1
}

CHECKS=$((CHECKS + 1))
if start_replica replica1 && R1=$RPORT && start_replica replica2 && R2=$RPORT; then
  pass "two replicas up (ports $R1, $R2)"
else
  fail "eddy serve did not come up"
  tail -n 20 "$TMP"/replica*.err >&2
  finish
  exit 1
fi
CHECKS=$((CHECKS + 1))
if wait_replicas "$CUR" 30; then pass "both replicas serve CURRENT v$CUR"; else
  fail "replicas do not serve v$CUR: $(replica_version "$R1") / $(replica_version "$R2")"
  tail -n 5 "$TMP"/replica*.err >&2
fi

# The browser part. The trainer has sampled once a second since its start, so the charts have
# history; freshness appears with the replicas' heartbeats.
T_BROWSER=$SECONDS
CHECKS=$((CHECKS + 1))
node "$DEPS/dashboard.mjs" --url "$TRAINER" --token-file "$TMP/token" --replicas 2 \
  --artifacts "$ARTIFACTS" --chromium "$CHROMIUM" >"$TMP/browser.json" 2>"$TMP/browser.err"
rc=$?
sed 's/^/  browser: /' "$TMP/browser.err"
if [[ $rc -eq 0 ]]; then pass "dashboard checks in chromium ($((SECONDS - T_BROWSER)) s)"; else
  fail "dashboard checks in chromium (exit $rc): $(head -c 2000 "$TMP/browser.json")"
fi
echo "screenshot: $ARTIFACTS/dashboard.png"
V=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"] or "")' "$TMP/browser.json" 2>/dev/null)
CHECKS=$((CHECKS + 1))
if [[ -n $V && $V != "$CUR" ]] && wait_replicas "$V" 30; then
  pass "after the rollback both replicas answer with X-Eddy-Version: $V"
else
  fail "replicas after the rollback to v${V:-?}: $(replica_version "$R1") / $(replica_version "$R2")"
fi
check_grep "$TMP/train.err" "rollback (serve only): CURRENT = v$(printf %06d "${V:-0}")" "the trainer logged the rollback"
CHECKS=$((CHECKS + 1))
if [[ -s $ARTIFACTS/dashboard.png ]]; then pass "screenshot saved"; else fail "no screenshot at $ARTIFACTS/dashboard.png"; fi
check_trainer_stops TERM "eddy train (with its sampler thread)"
check_sanitizers
echo "dashboard_browser: $((SECONDS - T_START)) s"
finish
