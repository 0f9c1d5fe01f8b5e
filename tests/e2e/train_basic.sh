#!/usr/bin/env bash
# `eddy train` end to end: `eddy broker` + `eddy produce` of 3000 Fashion-MNIST images on 4
# partitions, then the trainer (ingest, training, publishing every 25 steps, admin API on a free
# port). Versions appear and each passes `eddy snapshot verify`; their manifests' Kafka offsets,
# step, examples and cursor grow monotonically and the offsets end at the partition ends;
# promotions are announced on snapshot.topic; the newest weights are re-read by an independent
# Python reader and equal the master weights of its state file; a download over HTTP matches the
# manifest's sha256; /metrics has the trainer's series and passes `promtool check metrics` (when
# installed). Then: SIGTERM exits 0, a restart resumes the newest version (examples continue), a
# corrupt newest state is skipped for the version before it, no loadable state at all is refused
# (exit 1, file named) unless --fresh, and usage/config errors exit 2 (a
# missing http.token_file too, named with its config line).
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/train_helpers.bash"

need_fashion_mnist train-images-idx3-ubyte.gz
need_command curl

N1=3000
N2=600
# 8 partitions and keys (ids, so an even spread): the embedded broker keeps only ~5 MiB per
# partition (docs/broker.md), and 3600 Fashion-MNIST events of ~5.5 kB must all stay readable.
require_broker --topic events --partitions 8 --topic eddy-snapshots --partitions 1
check_rc 0 "produce $N1 Fashion-MNIST images" -- "$EDDY" produce -b "$BOOT" -t events \
  --data fashion-mnist:train --limit $N1 --key id

write_token train-e2e-token
MODEL_DIR=$TMP/store/fmnist
write_trainer_config "$TMP/train.ini"

# ---- first run ----
require_trainer "$TMP/train1.err" -c "$TMP/train.ini"
check_status 90 "s['buffer']['cursor'] == $N1 and s['buffer']['next_seq'] == $N1" \
  "all $N1 events ingested and trained" || tail -n 20 "$TMP/train1.err" >&2
code=$(post /v1/snapshot '{"timeout_ms": 30000}')
CHECKS=$((CHECKS + 1))
if [[ $code == 200 ]]; then pass "POST /v1/snapshot"; else fail "POST /v1/snapshot: HTTP $code $(cat "$TMP/post.json")"; fi
LAST=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$TMP/post.json" 2>/dev/null)

nv=$(verify_all "$MODEL_DIR")
CHECKS=$((CHECKS + 1))
# How many step-triggered versions appear depends on timing (triggers that come while a publish is
# in flight are coalesced), so ask only for one of them plus the one POST /v1/snapshot made.
if [[ $nv -ge 2 ]]; then pass "$nv versions, each passes eddy snapshot verify"; else fail "verify: $nv versions verified"; fi
check_grep "$TMP/train1.err" "published v000001 (promoted" "a line is logged per published version"

# Partition ends of the events topic, for the offsets check.
ends=$(for p in 0 1 2 3 4 5 6 7; do kcat -Q -b "$BOOT" -t "events:$p:-1" 2>/dev/null | awk '{print $NF}'; done | paste -sd, -)
CHECKS=$((CHECKS + 1))
if $PY - "$MODEL_DIR" "$LAST" "$N1" <<'PYEOF'; then pass "manifests: offsets, step, examples and cursor grow; the last covers every event"; else fail "manifest sequence"; fi
import json, os, sys
d, last, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
vs = sorted(int(x[1:]) for x in os.listdir(d) if x.startswith("v"))
prev = None
promoted = 0
for v in vs:
    m = json.load(open(os.path.join(d, "v%06d" % v, "manifest.json")))
    offs = sum(o["next_offset"] for o in m["kafka_offsets"])
    cur = (offs, m["step"], m["examples"], m["buffer_cursor"])
    if prev and any(a < b for a, b in zip(cur, prev)):
        sys.exit("v%d goes backwards: %s after %s" % (v, cur, prev))
    if m["status"] == "promoted":
        promoted += 1
        if m["metrics"]["prequential"]["accuracy"] is None or m["metrics"]["holdout"]["logloss"] is None:
            sys.exit("v%d: metrics missing" % v)
    if prev and m["parent"] != v - 1:
        sys.exit("v%d: parent %s" % (v, m["parent"]))
    prev = cur
m = json.load(open(os.path.join(d, "v%06d" % last, "manifest.json")))
if m["buffer_cursor"] != n or sum(o["next_offset"] for o in m["kafka_offsets"]) != n:
    sys.exit("last version: cursor %d offsets %s" % (m["buffer_cursor"], m["kafka_offsets"]))
if not (0.8 * n < m["examples"] < 0.97 * n):
    sys.exit("last version: %d examples of %d events (10%% held out)" % (m["examples"], n))
if m["metrics"]["prequential"]["accuracy"] < 0.6:
    sys.exit("prequential accuracy %s" % m["metrics"]["prequential"]["accuracy"])
print("versions %d, promoted %d, last: examples %d, prequential accuracy %.3f, holdout logloss %s"
      % (len(vs), promoted, m["examples"], m["metrics"]["prequential"]["accuracy"], m["metrics"]["holdout"]["logloss"]))
PYEOF
if command -v kcat >/dev/null; then
  CHECKS=$((CHECKS + 1))
  total=$((${ends//,/+}))
  if [[ $total -eq $N1 ]]; then pass "partition ends sum to $N1 ($ends)"; else fail "partition ends $ends"; fi
  # Announcements: one per promotion, key = model, value = the manifest.
  npro=$(grep -l '"status":.*"promoted"' "$MODEL_DIR"/v*/manifest.json | wc -l)
  # Read the whole topic (-e: exit at its end) until at least one announcement per promotion has
  # arrived (the last one may still be in flight), for at most 20 s; a duplicate would show as an
  # extra line.
  for _ in $(seq 20); do
    timeout 10 kcat -C -b "$BOOT" -t eddy-snapshots -o beginning -e -q -f '%k\t%s\n' \
      >"$TMP/ann.txt" 2>"$TMP/ann.err"
    [[ $(wc -l <"$TMP/ann.txt") -ge $npro ]] && break
    sleep 1
  done
  CHECKS=$((CHECKS + 1))
  if $PY - "$MODEL_DIR" "$TMP/ann.txt" <<'PYEOF'; then pass "every promotion announced on eddy-snapshots"; else fail "announcements"; fi
import json, os, sys
d = sys.argv[1]
want = sorted(int(x[1:]) for x in os.listdir(d) if x.startswith("v")
              and json.load(open(os.path.join(d, x, "manifest.json")))["status"] == "promoted")
got = []
for line in open(sys.argv[2]):
    k, v = line.rstrip("\n").split("\t", 1)
    m = json.loads(v)
    assert k == "fmnist" and m["model"] == "fmnist" and m["status"] == "promoted", line[:200]
    got.append(m["version"])
print("announced", got)
sys.exit(0 if sorted(got) == want else 1)
PYEOF
else
  echo "skip: kcat not installed (partition ends and announcement checks)"
fi

# ---- independent safetensors reader ----
V=$MODEL_DIR/v$(printf %06d "$LAST")
CHECKS=$((CHECKS + 1))
if $PY - "$SRC/tests/e2e" "$V" "$TMP/sidecar.json" <<'PYEOF' && $PY "$SRC/tests/e2e/safetensors_interop.py" "$V/weights.safetensors" "$TMP/sidecar.json"; then
import json, os, sys
sys.path.insert(0, sys.argv[1])
import safetensors_interop as st
v = sys.argv[2]
man = json.load(open(os.path.join(v, "manifest.json")))
# The master weights of the state file, decoded by the same standalone reader, are what the
# F32 weights file must hold exactly.
state, _ = st.load(os.path.join(v, "state.safetensors"))
shapes = {"mlp.0.weight": [64, 784], "mlp.0.bias": [64], "head.weight": [10, 64], "head.bias": [10]}
tensors = {name: {"dtype": "F32", "shape": shape, "values": state[name][2]} for name, shape in shapes.items()}
json.dump({"tensors": tensors, "metadata": {"eddy.model": "fmnist", "eddy.version": str(man["version"])},
           "exact": True, "tolerance": 0.0}, open(sys.argv[3], "w"))
PYEOF
  pass "weights.safetensors re-read by the Python reader: tensors equal the state's master weights"
else
  fail "independent safetensors reader"
fi

# ---- HTTP: a download matches the manifest, /metrics ----
CHECKS=$((CHECKS + 1))
curl -sf "http://127.0.0.1:$PORT/v1/snapshots/$LAST/weights.safetensors" -o "$TMP/dl.safetensors"
want=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["files"]["weights.safetensors"]["sha256"])' "$V/manifest.json")
got=$(sha256sum "$TMP/dl.safetensors" | cut -d' ' -f1)
if [[ $got == "$want" ]]; then pass "downloaded weights match the manifest's sha256"; else fail "download sha256 $got, want $want"; fi
curl -sf "http://127.0.0.1:$PORT/metrics" >"$TMP/metrics.txt"
for m in eddy_train_steps_total eddy_train_examples_total eddy_train_skipped_steps_total eddy_train_loss_scale \
  eddy_prequential_logloss eddy_prequential_accuracy eddy_snapshot_version eddy_snapshot_publish_seconds_bucket \
  eddy_snapshot_published_total eddy_ingest_events_total eddy_kafka_consumer_lag eddy_buffer_events; do
  check_grep "$TMP/metrics.txt" "$m" "/metrics has $m"
done
CUR=$(sed 's/^v0*//' "$MODEL_DIR/CURRENT")
check_grep "$TMP/metrics.txt" "eddy_snapshot_version $CUR" "eddy_snapshot_version is CURRENT (v$CUR)"
if command -v promtool >/dev/null; then
  check_rc 0 "promtool check metrics" -- sh -c "promtool check metrics <'$TMP/metrics.txt'"
else
  echo "skip: promtool not installed (Debian package prometheus): /metrics format not checked"
fi

# ---- clean stop, restart ----
check_trainer_stops TERM "first run"
check_grep "$TMP/train1.err" "stopped" "clean shutdown logged"
EX1=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["examples"])' "$V/manifest.json")

check_rc 0 "produce $N2 more images" -- "$EDDY" produce -b "$BOOT" -t events --data fashion-mnist:test --limit $N2 --key id
CHECKS=$((CHECKS + 1))
if start_trainer "$TMP/train2.err" -c "$TMP/train.ini"; then pass "restarted"; else fail "restart"; tail -n 20 "$TMP/train2.err" >&2; fi
check_grep "$TMP/train2.err" "restored v$(printf %06d "$LAST")" "restart restores the newest version"
CHECKS=$((CHECKS + 1))
if wait_status 90 "s['buffer']['cursor'] == $N1 + $N2 and s['examples'] > $EX1 and s['examples'] < $EX1 + $N2"; then
  pass "restart: the new events are trained once (examples $EX1 -> $($PY -c 'import json; print(json.load(open("'"$TMP/status.json"'"))["examples"])'))"
else
  fail "restart did not continue"
  cat "$TMP/status.json" >&2
fi
code=$(post /v1/snapshot)
CHECKS=$((CHECKS + 1))
NEW=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$TMP/post.json" 2>/dev/null)
if [[ $code == 200 && -n $NEW ]] &&
  $PY -c 'import json,sys; m=json.load(open(sys.argv[1])); sys.exit(0 if m["parent"] == int(sys.argv[2]) - 1 and m["examples"] > int(sys.argv[3]) else 1)' \
    "$MODEL_DIR/v$(printf %06d "$NEW")/manifest.json" "$NEW" "$EX1"; then
  pass "version $NEW continues the lineage"
else
  fail "snapshot after restart: HTTP $code $(cat "$TMP/post.json")"
fi
check_trainer_stops INT "restarted run"

# ---- corrupt state: the newest version that loads is restored; none loads: refused unless --fresh ----
NEWEST=$MODEL_DIR/v$(printf %06d "$NEW")
PREV=$(ls -d "$MODEL_DIR"/v[0-9]* | sort | tail -n 2 | head -n 1)
printf 'garbage' | dd of="$NEWEST/state.safetensors" bs=1 seek=100 conv=notrunc 2>/dev/null
CHECKS=$((CHECKS + 1))
if start_trainer "$TMP/train_skip.err" -c "$TMP/train.ini"; then pass "corrupt newest state: started without --fresh"; else fail "corrupt newest state: no start"; tail -n 20 "$TMP/train_skip.err" >&2; fi
check_grep "$TMP/train_skip.err" "v$(printf %06d "$NEW") skipped at restore: state file $NEWEST/state.safetensors is corrupt" "the skipped version is named with its problem"
check_grep "$TMP/train_skip.err" "restored ${PREV##*/}" "the version before it is restored"
check_trainer_stops TERM "run from the older version"
NEWEST=$(ls -d "$MODEL_DIR"/v[0-9]* | sort | tail -n 1) # (that run may have published)
for v in "$MODEL_DIR"/v[0-9]*; do
  printf 'garbage' | dd of="$v/state.safetensors" bs=1 seek=100 conv=notrunc 2>/dev/null
done
check_rc 1 "every state corrupt: refused" -- timeout 30 "$EDDY" train -c "$TMP/train.ini"
check_grep "$TMP/err" "$NEWEST/state.safetensors is corrupt" "the message names the newest state file"
check_grep "$TMP/err" "--fresh" "the message suggests --fresh"
NEW=$(ls -d "$MODEL_DIR"/v[0-9]* | sort | tail -n 1 | sed 's/.*v0*//')
CHECKS=$((CHECKS + 1))
if start_trainer "$TMP/train3.err" -c "$TMP/train.ini" --fresh &&
  wait_status 30 "s['last_published'] is not None and s['last_published'] > $NEW" &&
  $PY -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["parent"] is None else 1)' \
    "$MODEL_DIR/v$(printf %06d $((NEW + 1)))/manifest.json"; then
  pass "--fresh: starts from new weights (v$((NEW + 1)) has no parent)"
else
  fail "--fresh did not start a new lineage"
  tail -n 20 "$TMP/train3.err" >&2
fi
check_grep "$TMP/train3.err" "--fresh: starting from new weights" "--fresh logged"
check_trainer_stops TERM "--fresh run"

# ---- usage and configuration errors ----
check_rc 2 "train without -c" -- "$EDDY" train
check_grep "$TMP/err" "-c CONFIG is required" "missing -c named"
check_rc 2 "train with an unknown key" -- "$EDDY" train -c "$TMP/train.ini" --set train.frobnicate=1
check_rc 2 "train with a bad value" -- "$EDDY" train -c "$TMP/train.ini" --set snapshot.keep=0
check_grep "$TMP/err" "snapshot.keep" "bad value named"
printf '[stream]\ntopic = t\n' >"$TMP/nobs.ini"
check_rc 2 "train without bootstrap.servers" -- "$EDDY" train -c "$TMP/nobs.ini"
check_grep "$TMP/err" "kafka.bootstrap.servers is not set" "missing bootstrap named"
printf '[kafka]\nbootstrap.servers = 127.0.0.1:9\n\n[http]\ntoken_file = %s/no-such-token\n' "$TMP" >"$TMP/notoken.ini"
check_rc 2 "train with a missing token file" -- "$EDDY" train -c "$TMP/notoken.ini"
check_grep "$TMP/err" "$TMP/notoken.ini:5: http.token_file = \"$TMP/no-such-token\": No such file or directory" \
  "missing token file named with its config line"
check_rc 0 "train --help" -- "$EDDY" train --help
check_grep "$TMP/out" "--fresh" "help explains --fresh"
check_sanitizers
finish
