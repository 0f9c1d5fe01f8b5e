#!/usr/bin/env bash
# The gate on an i.i.d. stream, through the real service: 6000 Fashion-MNIST events, a version
# every 15 steps. Holdout noise must not decide: at least 95% of the versions are promoted, and
# the drift detector stays quiet. Also `eddy eval` on the newest version: the table, --json of its
# weights file, and the errors (unknown version: exit 1; usage: exit 2).
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/train_helpers.bash"
source "$(dirname "$0")/gate_helpers.bash"

gate_start iid 6000 -- snapshot.every_steps=15
gate_produce 500
gate_snapshot
gate_versions >"$TMP/versions.txt"
CHECKS=$((CHECKS + 1))
if $PY - "$TMP/versions.txt" <<'PYEOF'; then pass "at least 95% of the versions promoted"; else fail "too many i.i.d. versions rejected"; fi
import sys
rows = [l.split(None, 3) for l in open(sys.argv[1]) if l.strip()]
promoted = sum(r[1] == "promoted" for r in rows)
print("  %d of %d versions promoted" % (promoted, len(rows)))
for r in rows:
    if r[1] != "promoted":
        print("  rejected:", " ".join(r))
sys.exit(0 if len(rows) >= 15 and promoted >= 0.95 * len(rows) else 1)
PYEOF
check_status 5 "s['drift']['detected'] == 0" "no drift detected on the i.i.d. stream"

# ---- eddy eval: the table, a weights file, and its errors ----
V=$MODEL_DIR/v$(printf %06d "$NEWEST")
check_rc 0 "eddy eval --version $NEWEST (table)" -- "$EDDY" eval -c "$TMP/train.ini" --version "v$(printf %06d "$NEWEST")" \
  --data fashion-mnist:test --limit 2000
check_grep "$TMP/out" "confusion (rows: label, columns: predicted)" "the table has the confusion matrix"
check_grep "$TMP/out" "2000 events" "--limit is honoured"
check_rc 0 "eddy eval --weights FILE --json" -- "$EDDY" eval -c "$TMP/train.ini" --weights "$V/weights.safetensors" \
  --data fashion-mnist:test --limit 2000 --json
check_py "the weights file scores as the version, with 10 classes and a 10x10 confusion matrix summing to the events" \
  'j["version"] is None and j["events"] == 2000 and j["accuracy"] > 0.6 and len(j["per_class"]) == 10 and sum(map(sum, j["confusion"])) == 2000'
check_rc 1 "eddy eval of a version that does not exist" -- "$EDDY" eval -c "$TMP/train.ini" --version 999 --data fashion-mnist:test
check_grep "$TMP/err" "v000999" "the missing version is named"
check_rc 2 "eddy eval with --version and --weights" -- "$EDDY" eval -c "$TMP/train.ini" --version 1 --weights x --data y
check_rc 2 "eddy eval without --data" -- "$EDDY" eval -c "$TMP/train.ini" --version 1
check_rc 2 "eddy eval --version abc" -- "$EDDY" eval -c "$TMP/train.ini" --version abc --data y
check_trainer_stops TERM "trainer"
check_sanitizers
finish
