#!/usr/bin/env bash
# The gate under a concept shift, through the real service: 4000 Fashion-MNIST events whose labels
# become (y + 1) mod 10 halfway. The detector fires at the shift, the holdout window restarts
# there, and the gate compares the candidate with CURRENT on post-shift events, so the served
# CURRENT follows onto the new labels (scored on the test images relabelled the same way).
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/train_helpers.bash"
source "$(dirname "$0")/gate_helpers.bash"

gate_start shift 4000
gate_produce 400
gate_snapshot
gate_versions >"$TMP/versions.txt"
sed 's/^/  /' "$TMP/versions.txt"
$PY "$SRC/tests/e2e/drift_stream.py" "$FM" "$TMP/test_shifted.jsonl" test 10000 1 >/dev/null
CUR=$(current_version)
CHECKS=$((CHECKS + 1))
if "$EDDY" eval -c "$TMP/train.ini" --version "$CUR" --data "$TMP/test_shifted.jsonl" --json >"$TMP/cur.json" &&
  $PY - "$TMP/cur.json" "$MODEL_DIR/v$(printf %06d "$CUR")/manifest.json" <<'PYEOF'; then pass "served CURRENT v$CUR follows onto the new labels"; else fail "CURRENT v$CUR stayed on the old concept"; fi
import json, sys
e, m = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
print("  CURRENT v%d: cursor %d, accuracy %.3f on the relabelled test images" % (m["version"], m["buffer_cursor"], e["accuracy"]))
sys.exit(0 if m["buffer_cursor"] > 3000 and e["accuracy"] > 0.6 else 1)
PYEOF
check_status 5 "s['drift']['detected'] >= 1 and 1990 <= s['drift']['last_seq'] <= 2100" \
  "the drift detector fired at the shift (seq 2000)"
check_trainer_stops TERM "trainer"
check_sanitizers
finish
