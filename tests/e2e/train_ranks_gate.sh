#!/usr/bin/env bash
# Trainer ranks under the champion/challenger gate, with a holdout (DESIGN "Scaling past one
# machine", "Snapshots"). Two ranks train topic events (partition 0 holds events a*, partition 1
# events b*) with train.holdout_fraction 0.2; then one rank trains topic union, which holds the same
# events in one partition. Checks: every rank holds events out of training (each trains fewer
# than its buffer holds) and the two ranks together train exactly the events the one rank trains,
# so they hold out the same ones; the gate's holdout window is rank 0's (its size is what rank 0
# held out, not both ranks); a version is promoted with the gate's verdict scored on that window,
# and its serving precisions (fp32, bf16, fp16, int8) are scored on the same events; every rank's
# weights checksum is in the manifest and equal; the replay draws and the drift detector leave no
# trace on rank 1 (no drift line, no holdout line). SIGTERM stops every rank.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/train_helpers.bash"
source "$(dirname "$0")/ranks_helpers.bash"

need_mpi
need_command kcat
need_command curl

N=600 # events per partition of events
require_broker --topic events --partitions 2 --topic union --partitions 1 --topic eddy-snapshots --partitions 1 \
  --topic union-snapshots --partitions 1
write_token gate-token
$PY - "$TMP" $N <<'PYEOF'
import json, random, sys
tmp, n = sys.argv[1], int(sys.argv[2])
def events(tag, seed):
    r = random.Random(seed)
    out = []
    for i in range(n):
        x = [round(r.random(), 4) for _ in range(32)]
        out.append(json.dumps({"id": f"{tag}{i}", "label": int(x[0] + x[1] > 1), "dense": x}))
    return out
a, b = events("a", 1), events("b", 2)
open(f"{tmp}/a.jsonl", "w").write("\n".join(a) + "\n")
open(f"{tmp}/b.jsonl", "w").write("\n".join(b) + "\n")
open(f"{tmp}/union.jsonl", "w").write("\n".join(a + b) + "\n")
PYEOF
produce_split events

common=(model.name=gate model.dense_dim=32 model.hidden=8 model.head=logistic -model.classes
  train.holdout_fraction=0.2 snapshot.every_steps=20 snapshot.gate.min_events=20)
write_trainer_config "$TMP/ranks.ini" "${common[@]}"
write_trainer_config "$TMP/union.ini" "${common[@]}" stream.topic=union snapshot.topic=union-snapshots \
  buffer.path="$TMP/union-buffer" snapshot.store="$TMP/union-store"

require_ranks "$TMP/ranks.err" 2 -c "$TMP/ranks.ini"
check_status 60 "all(r['buffer']['next_seq'] == $N and r['buffer']['untrained'] == 0 for r in s['ranks'])" \
  "both ranks stored and read their $N events"
check_status 10 "all(0 < r['examples'] < $N for r in s['ranks']) and s['examples'] == sum(r['examples'] for r in s['ranks'])" \
  "each rank holds some of its events out of training"
check_rc 0 "the holdout window is rank 0's" -- $PY - "$TMP/status.json" $N <<'PYEOF'
import json, sys
s, n = json.load(open(sys.argv[1])), int(sys.argv[2])
held = [n - r["examples"] for r in s["ranks"]]
print(f"held out per rank {held}; window {s['holdout']['events']}")
sys.exit(0 if s["holdout"]["events"] == held[0] and held[1] > 0 else 1)
PYEOF
cat "$TMP/out"
CHECKS=$((CHECKS + 1))
if [[ $(post /v1/snapshot) == 200 ]] && grep -q '"status":"promoted"' "$TMP/post.json"; then
  pass "a version of the ranks promoted by the gate: $(head -c 300 "$TMP/post.json")"
else
  fail "POST /v1/snapshot: $(cat "$TMP/post.json")"
fi
V=$(current_version)
check_rc 0 "v$V: gate verdict and precisions on rank 0's window, both ranks' equal checksums" -- \
  $PY - "$TMP/store/gate/v$(printf %06d "$V")/manifest.json" "$TMP/status.json" <<'PYEOF'
import json, sys
m, s = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
g, p = m["gate"], m.get("precisions", {})
sums = {r["weights_xxh3"] for r in m["ranks"]}
print(f"gate: {g['events']} events, criteria {[(c['name'], c['result']) for c in g['criteria']]}; "
      f"precisions {sorted(p)} on {[p[k]['holdout']['n'] for k in sorted(p)]} events; checksums {sums}")
ok = m["status"] == "promoted" and 20 <= g["events"] <= s["holdout"]["events"]
ok = ok and sorted(p) == ["bf16", "fp16", "fp32", "int8"] and all(p[k]["holdout"]["n"] == g["events"] for k in p)
ok = ok and len(m["ranks"]) == 2 and len(sums) == 1 and None not in sums
sys.exit(0 if ok else 1)
PYEOF
cat "$TMP/out"
CHECKS=$((CHECKS + 1))
# None of the detector's alarms, the gate's waits for the window, or the precisions scored on it
# from rank 1 (they are rank 0's: the same pattern with "rank 0/2 (local 0)" finds its lines).
only_rank0='eddy\[[a-z]+\] rank %s/2 \(local %s\): ([^ ]+: )?(drift:|holdout re-based|scheduled snapshot waits|v[0-9]+ precisions on)'
CHECKS=$((CHECKS + 1))
if grep -qE "$(printf "$only_rank0" 0 0)" "$TMP/ranks.err"; then
  pass "rank 0 logged the precisions it scored on its window"
else
  fail "no precisions line from rank 0: the pattern below cannot see rank 1's either"
fi
if grep -E "$(printf "$only_rank0" 1 1)" "$TMP/ranks.err"; then
  fail "rank 1 logged drift or holdout lines (the detector and the window are rank 0's)"
else
  pass "no drift or holdout line from rank 1"
fi
RANKS_EXAMPLES=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["examples"])' "$TMP/status.json")
check_ranks_stop "$TMP/ranks.err" 2 "two ranks"

# One rank on the union holds out the same events: it trains exactly as many.
require_trainer "$TMP/one.err" -c "$TMP/union.ini"
check_status 60 "s['buffer']['next_seq'] == $((2 * N)) and s['buffer']['cursor'] == $((2 * N))" \
  "one rank stored and read the $((2 * N)) events of union"
check_status 10 "s['examples'] == $RANKS_EXAMPLES and s['holdout']['events'] == $((2 * N - RANKS_EXAMPLES))" \
  "one rank on the union trains the $RANKS_EXAMPLES events the two ranks trained; its window holds all the others"
check_trainer_stops TERM "one rank"
check_sanitizers
finish
