#!/usr/bin/env bash
# A full disk under `eddy train`, for real: the replay buffer and the snapshot store live on a
# 16 MiB tmpfs that the test fills with a file. While it is full: the events produced meanwhile
# are not stored (ingest pauses), a publish fails, /healthz answers 503 {"status": "degraded"}
# naming the buffer and the store, the status says degraded with the reason, and
# eddy_storage_write_failing{part} is 1. Once the file is removed the trainer recovers by itself
# (no restart): /healthz 200, gauges 0, every produced event stored exactly once (ingest_check),
# and the next publish works. Skipped where a tmpfs cannot be mounted (not root, no privilege).
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/train_helpers.bash"

CHECK=${EDDY_INGEST_CHECK:-$(dirname "$EDDY")/tests/ingest_check}
[[ -x $CHECK ]] || skip "ingest_check helper not built ($CHECK)"
need_command curl
DISK=$TMP/disk
mkdir -p "$DISK"
mount -t tmpfs -o size=16m tmpfs "$DISK" 2>"$TMP/mount.err" || skip "cannot mount a tmpfs here: $(cat "$TMP/mount.err")"
trap 'for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done; sleep 0.2; umount "$DISK" 2>/dev/null; cleanup' EXIT

N1=1000
N2=1000
require_broker --topic events --partitions 2 --topic eddy-snapshots --partitions 1
events() { # events FIRST COUNT: synthetic events with ids d<FIRST>..
  $PY -c '
import json, random, sys
first, n = int(sys.argv[1]), int(sys.argv[2])
random.seed(first)
for i in range(first, first + n):
    x = [random.random() for _ in range(32)]
    print(json.dumps({"id": "d%d" % i, "label": int(x[0] + x[1] > 1), "dense": x}))' "$@"
}
events 0 $N1 >"$TMP/first.jsonl"
events $N1 $N2 >"$TMP/second.jsonl"
check_rc 0 "produce $N1 events" -- "$EDDY" produce -b "$BOOT" -t events --data "$TMP/first.jsonl" --key id
write_token disk-token
write_trainer_config "$TMP/train.ini" model.name=disk model.dense_dim=32 model.hidden=8 model.head=logistic \
  -model.classes snapshot.every_steps=1000000 snapshot.gate.max_regression=1000 \
  buffer.path="$DISK/buffer" snapshot.store="$DISK/store"
require_trainer "$TMP/train.err" -c "$TMP/train.ini"
check_status 60 "s['buffer']['cursor'] == $N1" "$N1 events ingested and trained"
code=$(post /v1/snapshot '{"timeout_ms": 20000}')
CHECKS=$((CHECKS + 1))
if [[ $code == 200 ]]; then pass "a version published while there is room"; else fail "POST /v1/snapshot: HTTP $code $(cat "$TMP/post.json")"; fi

healthz() { curl -s -o "$TMP/healthz.json" -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PORT/healthz"; }
gauge() { curl -sf --max-time 2 "http://127.0.0.1:$PORT/metrics" | awk -v n="eddy_storage_write_failing{part=\"$1\"}" '$1 == n { print $2 }'; }
check_eq() { CHECKS=$((CHECKS + 1)); if [[ $2 == "$3" ]]; then pass "$1"; else fail "$1: '$2', want '$3'"; fi; }
check_eq "healthz 200 before" "$(healthz)" 200
check_eq "eddy_storage_write_failing{part=buffer} is 0" "$(gauge buffer)" 0

# ---- the disk fills up ----
dd if=/dev/zero of="$DISK/filler" bs=64k >/dev/null 2>&1
echo "free after filling: $(df -B1 --output=avail "$DISK" | tail -n 1) bytes"
check_rc 0 "produce $N2 more events while the disk is full" -- "$EDDY" produce -b "$BOOT" -t events --data "$TMP/second.jsonl" --key id
deadline=$((SECONDS + 30))
until [[ $(healthz) == 503 ]] && grep -q '"buffer: ' "$TMP/healthz.json" || ((SECONDS > deadline)); do sleep 0.2; done
CHECKS=$((CHECKS + 1))
if grep -q '"status":"degraded"' "$TMP/healthz.json" && grep -q 'No space left on device' "$TMP/healthz.json"; then
  pass "healthz 503 degraded, naming the full buffer disk: $(head -c 200 "$TMP/healthz.json")"
else
  fail "healthz while full: $(cat "$TMP/healthz.json")"
fi
code=$(post /v1/snapshot '{"timeout_ms": 20000}')
CHECKS=$((CHECKS + 1))
if [[ $code != 200 ]]; then pass "a publish on the full disk fails (HTTP $code)"; else fail "a publish on a full disk succeeded"; fi
sleep 1.5 # one sampler period
check_eq "eddy_storage_write_failing{part=buffer} is 1" "$(gauge buffer)" 1
check_eq "eddy_storage_write_failing{part=store} is 1" "$(gauge store)" 1
check_status 5 "s['state'] == 'degraded' and 'buffer: ' in s['degraded_reason'] and 'store: ' in s['degraded_reason']" \
  "status degraded, the reason names the buffer and the store"
CHECKS=$((CHECKS + 1))
stored=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["buffer"]["next_seq"])' "$TMP/status.json")
if ((stored < N1 + N2)); then pass "ingest stopped short ($stored of $((N1 + N2)) events stored)"; else fail "all events stored on a full disk?"; fi
check_grep "$TMP/train.err" "buffer writes fail: " "the trainer logged the failure"

# ---- space comes back ----
rm -f "$DISK/filler"
CHECKS=$((CHECKS + 1))
t0=$SECONDS
deadline=$((SECONDS + 60))
until [[ $(healthz) == 200 ]] || ((SECONDS > deadline)); do sleep 0.2; done
if [[ $(healthz) == 200 ]]; then pass "healthz 200 again $((SECONDS - t0)) s after the space came back, no restart"; else
  fail "healthz still $(healthz): $(cat "$TMP/healthz.json")"
fi
check_status 60 "s['buffer']['cursor'] == $N1 + $N2 and s['state'] == 'running'" "all $((N1 + N2)) events ingested and trained, running"
sleep 1.5
check_eq "eddy_storage_write_failing{part=buffer} is 0 again" "$(gauge buffer)" 0
check_eq "eddy_storage_write_failing{part=store} is 0 again" "$(gauge store)" 0
check_rc 0 "ingest_check" -- "$CHECK" --path "$DISK/buffer" --ids d:$((N1 + N2))
check_py "every event stored exactly once" "j['events'] == $((N1 + N2)) and j['distinct'] == $((N1 + N2)) and j['duplicates'] == 0 and j['missing'] == 0"
code=$(post /v1/snapshot '{"timeout_ms": 20000}')
CHECKS=$((CHECKS + 1))
if [[ $code == 200 ]]; then pass "publishing works again"; else fail "POST /v1/snapshot after recovery: HTTP $code $(cat "$TMP/post.json")"; fi
check_grep "$TMP/train.err" "buffer writes work again" "the recovery was logged"
check_trainer_stops TERM "trainer"
check_sanitizers
finish
