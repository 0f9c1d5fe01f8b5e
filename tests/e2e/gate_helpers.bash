# Helpers for the gate's end-to-end tests (gate_*.sh): a Fashion-MNIST stream with a drift written
# by drift_stream.py, produced at a steady rate into a running trainer (so that the buffer keeps the
# stream's order), then every version scored on fashion-mnist:test with `eddy eval`. Sourced after
# lib.bash and train_helpers.bash; not a test itself.

# gate_start KIND N [ARG] -- [SECTION.KEY=VALUE]...: writes the stream ($TMP/stream.jsonl, its
# event count in STREAM_N), starts a broker (one partition: the buffer keeps the stream order, seq = event index) and a trainer with write_trainer_config's
# base plus the settings given; sets MODEL_DIR. Ends the test when something does not come up.
gate_start() {
  local args=()
  while (($#)) && [[ $1 != -- ]]; do args+=("$1"); shift; done
  [[ ${1:-} == -- ]] && shift
  need_fashion_mnist train-images-idx3-ubyte.gz
  need_fashion_mnist t10k-images-idx3-ubyte.gz
  need_command curl
  STREAM_N=$($PY "$SRC/tests/e2e/drift_stream.py" "$FM" "$TMP/stream.jsonl" "${args[@]}" |
    $PY -c 'import json,sys; print(json.load(sys.stdin)["events"])') || { fail "drift_stream.py ${args[*]}"; finish; exit 1; }
  require_broker --topic events --partitions 1 --topic eddy-snapshots --partitions 1
  write_token gate-e2e-token
  MODEL_DIR=$TMP/store/fmnist
  write_trainer_config "$TMP/train.ini" "$@"
  require_trainer "$TMP/train.err" -c "$TMP/train.ini"
}

# gate_produce RATE: produces the stream at RATE events/s and waits (120 s at most) until the
# trainer has trained all of it.
gate_produce() {
  check_rc 0 "produce the $STREAM_N-event stream at $1/s" -- "$EDDY" produce -b "$BOOT" -t events \
    --data "$TMP/stream.jsonl" --key id --rate "$1"
  check_status 120 "s['buffer']['cursor'] == $STREAM_N" "all $STREAM_N events trained" ||
    tail -n 20 "$TMP/train.err" >&2
}

# gate_snapshot: POST /v1/snapshot (the gate judges the newest weights); sets NEWEST to its version.
gate_snapshot() {
  local code
  code=$(post /v1/snapshot '{"timeout_ms": 60000}')
  CHECKS=$((CHECKS + 1))
  NEWEST=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$TMP/post.json" 2>/dev/null)
  if [[ $code == 200 && -n $NEWEST ]]; then pass "snapshot v$NEWEST: $(cat "$TMP/post.json" | head -c 600)"; else
    fail "POST /v1/snapshot: HTTP $code $(cat "$TMP/post.json")"
  fi
}

# gate_eval V OUT: `eddy eval --json` of version V on fashion-mnist:test into OUT.
gate_eval() {
  "$EDDY" eval -c "$TMP/train.ini" --version "$1" --data fashion-mnist:test --json >"$2" 2>"$TMP/eval.err" ||
    { fail "eddy eval --version $1: $(cat "$TMP/eval.err")"; return 1; }
}

# gate_versions: one line per version: "V STATUS CURSOR REASON" (from the manifests).
gate_versions() {
  $PY - "$MODEL_DIR" <<'PYEOF'
import json, os, sys
d = sys.argv[1]
for x in sorted(os.listdir(d)):
    if x.startswith("v"):
        m = json.load(open(os.path.join(d, x, "manifest.json")))
        print(m["version"], m["status"], m["buffer_cursor"], m["reason"])
PYEOF
}
