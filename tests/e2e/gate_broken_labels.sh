#!/usr/bin/env bash
# The gate when the labels break, through the real service: 3000 Fashion-MNIST events whose label
# turns constant (0, as an upstream bug that defaults it would make it) from event 1800 on. The
# labels then carry no signal: no candidate beats the label prior of the holdout events, so nothing
# trained past event 1800 is promoted (the buffer keeps the stream order: seq = event index), and
# the served CURRENT keeps its accuracy on the true labels. The operator sees it: drift counted,
# consecutive rejections in the status and in /metrics.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/train_helpers.bash"
source "$(dirname "$0")/gate_helpers.bash"

AT=1800
gate_start broken 3000 $AT
gate_produce 400
gate_snapshot
gate_versions >"$TMP/versions.txt"
sed 's/^/  /' "$TMP/versions.txt"
CHECKS=$((CHECKS + 1))
if $PY - "$TMP/versions.txt" "$AT" "$NEWEST" <<'PYEOF'; then pass "nothing trained past event $AT promoted; the newest v$NEWEST rejected"; else fail "a version trained on broken labels was promoted"; fi
import sys
at, newest = int(sys.argv[2]), int(sys.argv[3])
rows = [l.split(None, 3) for l in open(sys.argv[1]) if l.strip()]
bad = [r for r in rows if r[1] == "promoted" and int(r[2]) > at]
late = [r for r in rows if int(r[2]) > at]
new = [r for r in rows if int(r[0]) == newest]
ok = not bad and len(late) >= 1 and new and new[0][1] == "rejected" and "vs_prior" in new[0][3]
sys.exit(0 if ok else 1)
PYEOF
CUR=$(current_version)
gate_eval "$CUR" "$TMP/cur.json"
CHECKS=$((CHECKS + 1))
if $PY -c 'import json,sys; e=json.load(open(sys.argv[1])); print("  CURRENT v%d accuracy %.3f on the true labels" % (e["version"], e["accuracy"])); sys.exit(0 if e["accuracy"] > 0.65 else 1)' "$TMP/cur.json"; then
  pass "CURRENT v$CUR keeps its accuracy on the true labels"
else
  fail "CURRENT v$CUR lost its accuracy"
fi
check_status 5 "s['drift']['detected'] >= 1 and s['gate']['rejected_in_a_row'] >= 1" \
  "status: drift detected, rejections in a row"
curl -sf "http://127.0.0.1:$PORT/metrics" >"$TMP/metrics.txt"
check_grep "$TMP/metrics.txt" "eddy_snapshot_rejected_consecutive $($PY -c 'import json; print(json.load(open("'"$TMP/status.json"'"))["gate"]["rejected_in_a_row"])')" \
  "/metrics: eddy_snapshot_rejected_consecutive matches the status"
check_trainer_stops TERM "trainer"
check_sanitizers
finish
