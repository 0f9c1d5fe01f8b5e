#!/usr/bin/env bash
# `eddy` command line and `eddy learn` on small JSONL data: help, usage and config errors (exit 2
# with FILE:LINE: key = "value": reason), bad records counted and skipped, --save readable by an
# independent safetensors reader, fp16 with loss scaling.
source "$(dirname "$0")/lib.bash"

check_rc 0 "eddy --help" -- "$EDDY" --help && check_grep "$TMP/out" "learn -c CONFIG" "--help lists learn"
check_rc 2 "unknown command" -- "$EDDY" frobnicate && check_grep "$TMP/err" "unknown command 'frobnicate'" "unknown command named"
check_rc 2 "eddy with no command" -- "$EDDY"
check_rc 0 "eddy learn --help" -- "$EDDY" learn --help && check_grep "$TMP/out" "--save FILE" "learn --help documents --save"
check_rc 2 "learn without -c" -- "$EDDY" learn --data x.jsonl && check_grep "$TMP/err" "-c CONFIG is required" "missing -c named"
check_rc 2 "learn with bad --limit" -- "$EDDY" learn -c x --data y --limit abc

# A small logistic model with sparse features, and data made here.
cat >"$TMP/small.ini" <<'INI'
[model]
name = small
hash_bits = 10
embed_dim = 4
dense_dim = 3
hidden = 8
head = logistic

[train]
batch_size = 16
optimizer = adam
lr = 0.05
seed = 7
INI
$PY - "$TMP/good.jsonl" <<'PYEOF'
import json, random, sys
rng = random.Random(1)
with open(sys.argv[1], "w") as f:
    for i in range(2000):
        x = [rng.uniform(-1, 1) for _ in range(3)]
        color = rng.choice(["red", "green", "blue"])
        y = 1 if (x[0] + 0.5 * x[1] + (0.8 if color == "red" else -0.4)) > 0 else 0
        ev = {"id": f"e-{i}", "ts": 1732780000000 + i, "label": y, "dense": x,
              "sparse": {"color": color, "size": rng.uniform(0, 2)}}
        f.write(json.dumps(ev) + "\n")
PYEOF
cat >"$TMP/bad.jsonl" <<'BAD'
this is not json
{"dense": [0.1, 0.2, 0.3]}
{"label": 7, "dense": [0.1, 0.2, 0.3]}
{"label": 1, "dense": [0.1, 0.2]}
{"label": 1, "dense": [0.1, 1e999, 0.3]}
{"label": "yes", "dense": [0.1, 0.2, 0.3]}
BAD
cat "$TMP/good.jsonl" >"$TMP/mixed.jsonl"
sed -n '1,3p' "$TMP/bad.jsonl" >>"$TMP/mixed.jsonl"
head -n 100 "$TMP/good.jsonl" >>"$TMP/mixed.jsonl"
sed -n '4,6p' "$TMP/bad.jsonl" >>"$TMP/mixed.jsonl"

# Configuration errors name file, line, key and value; nothing runs.
printf '[train]\nbatch_size = 8\nlr = abc\n' >"$TMP/bad-lr.ini"
check_rc 2 "non-numeric lr" -- "$EDDY" learn -c "$TMP/bad-lr.ini" --data "$TMP/good.jsonl"
check_grep "$TMP/err" "bad-lr.ini:3: train.lr = \"abc\"" "bad lr names file:line, key and value"
printf '[model]\nhash_bits = 10\n[trian]\nlr = 1\n' >"$TMP/bad-section.ini"
check_rc 2 "unknown section" -- "$EDDY" learn -c "$TMP/bad-section.ini" --data "$TMP/good.jsonl"
check_grep "$TMP/err" "bad-section.ini:4" "unknown section names the line"
check_rc 2 "--set out of range" -- "$EDDY" learn -c "$TMP/small.ini" --data "$TMP/good.jsonl" --set train.batch_size=0
check_grep "$TMP/err" "--set: train.batch_size = \"0\"" "--set error names the override"
check_rc 2 "missing config file" -- "$EDDY" learn -c "$TMP/nope.ini" --data "$TMP/good.jsonl"
check_grep "$TMP/err" "nope.ini" "missing config named"
check_rc 1 "missing dataset" -- "$EDDY" learn -c "$TMP/small.ini" --data "$TMP/missing.jsonl"
check_grep "$TMP/err" "missing.jsonl" "missing dataset named"
check_rc 1 "only bad records" -- "$EDDY" learn -c "$TMP/small.ini" --data "$TMP/bad.jsonl"
check_grep "$TMP/err" "no valid training examples" "all-bad dataset is a failure with a reason"

# Bad records are counted by reason and skipped; learning still happens.
check_rc 0 "learn on mixed data" -- "$EDDY" learn -c "$TMP/small.ini" --data "$TMP/mixed.jsonl" \
  --test "$TMP/good.jsonl" --json --save "$TMP/w.safetensors"
check_py "2100 examples trained" 'j["examples"] == 2100'
check_py "6 invalid records counted" 'j["invalid_events"] == 6'
check_py "one of each bad class" 'j["invalid_by_reason"] == {"event_not_json": 1, "event_label_missing": 1, "event_label_range": 1, "event_dense_len": 1, "event_nonfinite": 1, "event_type": 1}'
check_py "the model learned (test accuracy > 0.9)" 'j["test_accuracy"] > 0.9'
check_py "prequential accuracy below test accuracy" 'j["prequential_accuracy"] < j["test_accuracy"]'
check_py "json has the contract fields" 'all(k in j for k in ["examples","seconds","examples_per_second","prequential_accuracy","prequential_logloss","test_accuracy","test_logloss","skipped_steps","precision"])'

# The saved weights load in an independent safetensors reader with the spec's names and shapes.
cat >"$TMP/w.expect.json" <<'JSON'
{"tensors": {"emb.weight": {"dtype": "F32", "shape": [1024, 4]},
             "mlp.0.weight": {"dtype": "F32", "shape": [8, 7]}, "mlp.0.bias": {"dtype": "F32", "shape": [8]},
             "head.weight": {"dtype": "F32", "shape": [1, 8]}, "head.bias": {"dtype": "F32", "shape": [1]}},
 "exact": true}
JSON
CHECKS=$((CHECKS + 1))
if $PY "$SRC/tests/e2e/safetensors_interop.py" "$TMP/w.safetensors" "$TMP/w.expect.json" >"$TMP/st.out" 2>&1; then
  pass "--save output read by an independent reader"
else
  fail "--save output rejected by the independent reader"; cat "$TMP/st.out" >&2
fi
# Same seed, same data: the same weights, byte for byte.
check_rc 0 "second identical run" -- "$EDDY" learn -c "$TMP/small.ini" --data "$TMP/mixed.jsonl" --json --save "$TMP/w2.safetensors"
check_rc 0 "third run, saved again" -- "$EDDY" learn -c "$TMP/small.ini" --data "$TMP/mixed.jsonl" --json --save "$TMP/w3.safetensors"
CHECKS=$((CHECKS + 1))
if cmp -s "$TMP/w2.safetensors" "$TMP/w3.safetensors"; then pass "deterministic weights"; else fail "two identical runs saved different weights"; fi

# fp16 (emulated on the CPU) with dynamic loss scaling, and bf16; both still learn.
check_rc 0 "fp16 run" -- "$EDDY" learn -c "$TMP/small.ini" --data "$TMP/good.jsonl" --test "$TMP/good.jsonl" --json \
  --set train.precision=fp16 --set train.accum_steps=2
check_py "fp16 learns" 'j["test_accuracy"] > 0.9 and j["precision"] == "fp16"'
check_py "fp16 reports a loss scale" 'j["loss_scale"] >= 1'
check_rc 0 "bf16 run" -- "$EDDY" learn -c "$TMP/small.ini" --data "$TMP/good.jsonl" --test "$TMP/good.jsonl" --json \
  --set train.precision=bf16
check_py "bf16 learns" 'j["test_accuracy"] > 0.9 and j["precision"] == "bf16"'
check_rc 0 "--limit" -- "$EDDY" learn -c "$TMP/small.ini" --data "$TMP/good.jsonl" --json --limit 100
check_py "--limit 100 trains 100" 'j["examples"] == 100'

# Every shipped config loads (a config error would exit 2; the missing dataset exits 1).
for ini in "$SRC"/configs/*.ini; do
  check_rc 1 "$(basename "$ini") loads" -- "$EDDY" learn -c "$ini" --data "$TMP/missing.jsonl"
done

# Human-readable summary.
check_rc 0 "table output" -- "$EDDY" learn -c "$TMP/small.ini" --data "$TMP/mixed.jsonl"
check_grep "$TMP/out" "6 invalid skipped" "table reports invalid records"

finish
