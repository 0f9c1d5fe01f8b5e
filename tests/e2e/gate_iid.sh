#!/usr/bin/env bash
# The gate on an i.i.d. stream, through the real service: 6000 Fashion-MNIST events, a version
# every 15 steps. Holdout noise must not decide: at least 95% of the versions are promoted, and
# the drift detector stays quiet.
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
check_trainer_stops TERM "trainer"
check_sanitizers
finish
