#!/usr/bin/env bash
# The gate under a class-incremental stream, through the real service: 5 tasks of 2 Fashion-MNIST
# classes each (2500 events a task: with 1500 the last task was sometimes not learned well enough
# for the gate before the stream ended, when the machine was loaded), one after the other, produced into a running trainer with
# class-balanced replay (ratio 0.5).
# Every task start is a drift (the new classes' loss jumps), the holdout window restarts on the
# new task and the gate compares the candidate with CURRENT on those events, so CURRENT follows
# the trainer: at the end the served version scores within 0.03 of the newest model on every
# class of fashion-mnist:test. The drift counter and the verdicts' criteria are checked too.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/train_helpers.bash"
source "$(dirname "$0")/gate_helpers.bash"

gate_start classinc 2500 -- replay.strategy=balanced replay.ratio=0.5
gate_produce 500
gate_snapshot
gate_versions >"$TMP/versions.txt"
sed 's/^/  /' "$TMP/versions.txt"
CUR=$(current_version)
gate_eval "$CUR" "$TMP/cur.json"
gate_eval "$NEWEST" "$TMP/newest.json"
CHECKS=$((CHECKS + 1))
if $PY - "$TMP/cur.json" "$TMP/newest.json" <<'PYEOF'; then pass "served CURRENT v$CUR is within 0.03 of the newest v$NEWEST on every class"; else fail "CURRENT v$CUR does not follow the newest v$NEWEST"; fi
import json, sys
cur, new = (json.load(open(p)) for p in sys.argv[1:3])
ca = [c["accuracy"] for c in cur["per_class"]]
na = [c["accuracy"] for c in new["per_class"]]
print("  CURRENT v%d: %s (all %.3f)" % (cur["version"], " ".join("%.2f" % a for a in ca), cur["accuracy"]))
print("  newest  v%d: %s (all %.3f)" % (new["version"], " ".join("%.2f" % a for a in na), new["accuracy"]))
# The newest model knows more than its last task (a 2-class model scores 0.2 overall: replay
# works), or the comparison would say little.
sys.exit(0 if new["accuracy"] > 0.5 and all(abs(a - b) <= 0.03 for a, b in zip(ca, na)) else 1)
PYEOF
check_status 5 "s['drift']['detected'] >= 4" "the drift detector fired at the task changes (>= 4 times)"
curl -sf "http://127.0.0.1:$PORT/metrics" >"$TMP/metrics.txt"
check_grep "$TMP/metrics.txt" "eddy_drift_detected_total" "/metrics has eddy_drift_detected_total"
check_grep "$TMP/metrics.txt" 'eddy_prequential_class_accuracy{class="9"}' "/metrics has the per-class accuracy"
CHECKS=$((CHECKS + 1))
if $PY - "$MODEL_DIR/v$(printf %06d "$NEWEST")/manifest.json" <<'PYEOF'; then pass "the verdict records every criterion with both numbers"; else fail "verdict record"; fi
import json, sys
g = json.load(open(sys.argv[1]))["gate"]
names = [c["name"] for c in g["criteria"]]
print("  ", json.dumps(g)[:400])
vc = [c for c in g["criteria"] if c["name"] == "vs_current"]
ok = names[:4] == ["finite", "holdout_events", "vs_prior", "vs_current"] and g["events"] >= 50
ok = ok and (not vc or vc[0]["result"] == "skipped" or (vc[0]["candidate"] is not None and vc[0]["reference"] is not None))
sys.exit(0 if ok else 1)
PYEOF
check_trainer_stops TERM "trainer"
check_sanitizers
finish
