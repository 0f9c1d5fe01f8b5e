#!/usr/bin/env bash
# A retrain rollback over a bad range, through the real service: 4000 Fashion-MNIST events whose
# labels become (y + 1) mod 10 from event 2000 on (seq = event index: one partition). The operator
# rolls back to the last version before the shift with --retrain --skip 2000:3999; the trainer
# rebuilds the holdout window without the skipped events, re-trains the events before the shift,
# and the retrained version is promoted (it scores well on the original labels). The holdout holds
# no skipped event and no event twice: a restart, which rebuilds it from the buffer, finds the
# same count.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/train_helpers.bash"
source "$(dirname "$0")/gate_helpers.bash"

gate_start shift 4000
gate_produce 400
gate_versions >"$TMP/versions.txt"
sed 's/^/  /' "$TMP/versions.txt"
PRE=$($PY -c 'import sys; r=[l.split(None,3) for l in open(sys.argv[1])]; print(max(int(x[0]) for x in r if x[1]=="promoted" and int(x[2]) <= 2000))' "$TMP/versions.txt")
check_rc 0 "eddy ctl rollback $PRE --retrain --skip 2000:3999" -- "$EDDY" ctl --url "http://127.0.0.1:$PORT" \
  --token-file "$TMP/token" rollback "$PRE" --retrain --skip 2000:3999
check_status 60 "s['buffer']['cursor'] == 4000 and s['parent'] == $PRE and s['holdout']['seqs'] is not None and s['holdout']['seqs'][1] < 2000" \
  "retrained up to the shift; the holdout window holds no skipped event"
HOLD=$($PY -c 'import json; print(json.load(open("'"$TMP/status.json"'"))["holdout"]["events"])')
gate_snapshot
CHECKS=$((CHECKS + 1))
if $PY -c 'import json,sys; m=json.load(open(sys.argv[1])); print("  v%d %s: %s" % (m["version"], m["status"], m["reason"])); sys.exit(0 if m["status"] == "promoted" and m["parent"] == int(sys.argv[2]) else 1)' \
  "$MODEL_DIR/v$(printf %06d "$NEWEST")/manifest.json" "$PRE"; then
  pass "the retrained version v$NEWEST is promoted"
else
  fail "the retrained version v$NEWEST is not promoted"
fi
gate_eval "$(current_version)" "$TMP/cur.json"
CHECKS=$((CHECKS + 1))
if $PY -c 'import json,sys; e=json.load(open(sys.argv[1])); print("  CURRENT v%d accuracy %.3f on the original labels" % (e["version"], e["accuracy"])); sys.exit(0 if e["accuracy"] > 0.65 else 1)' "$TMP/cur.json"; then
  pass "CURRENT scores on the original labels"
else
  fail "CURRENT does not score on the original labels"
fi
check_trainer_stops TERM "trainer"
CHECKS=$((CHECKS + 1))
if start_trainer "$TMP/train2.err" -c "$TMP/train.ini"; then pass "restarted"; else fail "restart"; fi
check_status 30 "s['holdout']['events'] == $HOLD and s['holdout']['seqs'][1] < 2000 and s['buffer']['skip'] == [2000, 3999]" \
  "after the restart the rebuilt holdout has the same $HOLD events (none twice, none skipped)"
check_trainer_stops TERM "restarted trainer"
check_sanitizers
finish
