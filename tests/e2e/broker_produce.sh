#!/usr/bin/env bash
# `eddy broker` and `eddy produce` against each other and against kcat: the bootstrap line, JSONL
# lines arriving byte-exact (bad ones too), keys keeping partition and order, Fashion-MNIST events
# matching the IDX files, --rate, stdin and a truncated gzip file, a dead bootstrap failing with
# exit 1, SIGINT mid-stream, the fixed --port relay, the ~5 MiB partition limit, SIGTERM exiting 0,
# help and usage errors.
source "$(dirname "$0")/lib.bash"

need_command kcat



# stop_broker PID NAME: SIGTERM, then the exit status within 10 s must be 0.
stop_broker() {
  local pid=$1 what=$2
  CHECKS=$((CHECKS + 1))
  kill -TERM "$pid"
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    fail "$what: still running 10 s after SIGTERM"
    return 1
  fi
  wait "$pid"
  local rc=$?
  if [[ $rc -eq 0 ]]; then pass "$what exits 0 on SIGTERM"; else fail "$what: exit $rc on SIGTERM"; fi
}

free_port() {
  $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# consume TOPIC FILE: every message of TOPIC as "partition<TAB>offset<TAB>key<TAB>payload" lines.
consume() {
  timeout 30 kcat -C -b "$BOOT" -t "$1" -o beginning -e -q -f '%p\t%o\t%k\t%s\n' >"$2" 2>"$TMP/kcat.err"
}

# Help and usage.
check_rc 0 "broker --help" -- "$EDDY" broker --help && check_grep "$TMP/out" "5 MiB" "broker --help states the partition limit"
check_rc 0 "produce --help" -- "$EDDY" produce --help && check_grep "$TMP/out" "--rate N" "produce --help documents --rate"
check_rc 2 "broker --port abc" -- "$EDDY" broker --port abc
check_rc 2 "broker --partitions without --topic" -- "$EDDY" broker --partitions 3 && check_grep "$TMP/err" "must follow a --topic" "partitions without topic named"
check_rc 2 "broker --brokers 0" -- "$EDDY" broker --brokers 0
check_rc 2 "broker bad topic name" -- "$EDDY" broker --topic 'a b'
check_rc 2 "produce without arguments" -- "$EDDY" produce
check_rc 2 "produce without -b" -- "$EDDY" produce -t x --data /dev/null && check_grep "$TMP/err" "-b BOOTSTRAP is required" "missing -b named"
check_rc 2 "produce --rate -1" -- "$EDDY" produce -b 127.0.0.1:1 -t x --data /dev/null --rate -1
check_rc 2 "produce bad kafka property" -- "$EDDY" produce -b 127.0.0.1:1 -t x --data /dev/null --set kafka.acks=most && check_grep "$TMP/err" "kafka.acks" "bad property named"
check_rc 1 "produce missing data file" -- "$EDDY" produce -b 127.0.0.1:1 -t x --data "$TMP/nope.jsonl"

start_broker main --topic t1 --partitions 3 --topic one --topic lim --partitions 1 || { finish; exit 1; }
MAIN_PID=$BROKER_PID
CHECKS=$((CHECKS + 1))
if [[ $BOOT =~ ^127\.0\.0\.1:[0-9]+$ ]]; then pass "bootstrap line: $BOOT"; else fail "bootstrap line '$BOOT'"; fi

# JSONL with unique ids, keyed by user; plus a line that is not JSON and a blank line (skipped).
$PY - "$TMP/events.jsonl" <<'PYEOF'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(3000):
        f.write(json.dumps({"id": f"e-{i}", "label": i % 2, "dense": [i * 0.5, -1.25],
                            "user": f"u{i % 7}", "n": i}) + "\n")
        if i == 10: f.write("this is {not json\n")
        if i == 20: f.write("   \n")
PYEOF
check_rc 0 "produce JSONL --key user" -- "$EDDY" produce -b "$BOOT" -t t1 --data "$TMP/events.jsonl" --key user
check_grep "$TMP/out" "sent=3001 delivered=3001 failed=0" "summary counts 3001 delivered (blank line skipped)"
consume t1 "$TMP/t1.tsv"
CHECKS=$((CHECKS + 1))
if $PY - "$TMP/events.jsonl" "$TMP/t1.tsv" <<'PYEOF'; then pass "t1: payloads byte-exact, keys keep partition and order"; else fail "t1 contents"; fi
import collections, json, sys
want = [l.rstrip("\n") for l in open(sys.argv[1], encoding="utf-8") if l.strip()]
rows = [l.rstrip("\n").split("\t", 3) for l in open(sys.argv[2], encoding="utf-8")]
got = [r[3] for r in rows]
ok = True
if collections.Counter(got) != collections.Counter(want):
    print(f"  payload sets differ: {len(got)} got, {len(want)} want", file=sys.stderr); ok = False
parts = {r[0] for r in rows}
if not parts <= {"0", "1", "2"} or len(parts) < 2:
    print(f"  partitions used: {sorted(parts)}", file=sys.stderr); ok = False
by_key = collections.defaultdict(list)
for p, o, k, s in rows:
    if s.startswith("{"):
        ev = json.loads(s)
        if k != ev["user"]:
            print(f"  key {k!r} for user {ev['user']!r}", file=sys.stderr); ok = False
        by_key[k].append((p, int(o), ev["n"]))
    elif k != "":
        print(f"  non-JSON line got key {k!r}", file=sys.stderr); ok = False
for k, lst in by_key.items():
    if len({p for p, _, _ in lst}) != 1:
        print(f"  key {k} spread over partitions", file=sys.stderr); ok = False
    ns = [n for _, _, n in sorted(lst, key=lambda t: t[1])]
    if ns != sorted(ns):
        print(f"  key {k} out of order", file=sys.stderr); ok = False
sys.exit(0 if ok else 1)
PYEOF

# Fashion-MNIST test split, 500 events, into an auto-created topic; checked against the IDX files.
FM_DIR=${EDDY_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
if [[ -f $FM_DIR/t10k-images-idx3-ubyte.gz ]]; then
  check_rc 0 "produce fashion-mnist:test --limit 500" -- "$EDDY" produce -b "$BOOT" -t fm --data fashion-mnist:test --limit 500
  check_grep "$TMP/out" "sent=500 delivered=500 failed=0" "500 Fashion-MNIST events delivered"
  consume fm "$TMP/fm.tsv"
  CHECKS=$((CHECKS + 1))
  if $PY - "$FM_DIR" "$TMP/fm.tsv" <<'PYEOF'; then pass "fm: 500 events equal to the IDX images and labels"; else fail "fm contents"; fi
import gzip, json, struct, sys
d = sys.argv[1]
img = gzip.open(f"{d}/t10k-images-idx3-ubyte.gz").read()
lab = gzip.open(f"{d}/t10k-labels-idx1-ubyte.gz").read()
rows = [l.rstrip("\n").split("\t", 3) for l in open(sys.argv[2])]
seen, ok = set(), True
for p, o, k, s in rows:
    ev = json.loads(s)
    i = int(ev["id"].rsplit("-", 1)[1])
    seen.add(i)
    px = img[16 + 784 * i: 16 + 784 * (i + 1)]
    if ev["label"] != lab[8 + i] or len(ev["dense"]) != 784 or \
       any(abs(a - b / 255) > 1e-6 for a, b in zip(ev["dense"], px)):
        print(f"  event {i} differs", file=sys.stderr); ok = False; break
if seen != set(range(500)) or len(rows) != 500:
    print(f"  {len(rows)} rows, ids {min(seen)}..{max(seen)}", file=sys.stderr); ok = False
sys.exit(0 if ok else 1)
PYEOF
  timeout 10 kcat -L -b "$BOOT" -t fm >"$TMP/meta" 2>&1
  check_grep "$TMP/meta" 'topic "fm" with 4 partitions' "auto-created topic has 4 partitions"
else
  echo "note: $FM_DIR missing, Fashion-MNIST part skipped"
fi

# --rate: 200 messages at 400/s take at least 199/400 s.
T0=$(date +%s.%N)
check_rc 0 "produce --rate 400 --limit 200" -- "$EDDY" produce -b "$BOOT" -t one --data "$TMP/events.jsonl" --rate 400 --limit 200
T1=$(date +%s.%N)
CHECKS=$((CHECKS + 1))
if $PY -c "import sys; d=$T1-$T0; print(f'  {d:.3f} s'); sys.exit(0 if 0.45 <= d < 5 else 1)"; then
  pass "--rate 400 paces 200 messages over >= 0.45 s"; else fail "--rate 400 took the wrong time"; fi
check_grep "$TMP/out" "sent=200 delivered=200" "--limit 200 stops at 200"

# --data - reads standard input (gzip here); a gzip file cut short is a read error naming its line.
check_rc 0 "produce gzip JSONL from stdin" -- bash -c 'gzip -c "$1" | "$2" produce -b "$3" -t one --data - --limit 50' \
  _ "$TMP/events.jsonl" "$EDDY" "$BOOT"
check_grep "$TMP/out" "sent=50 delivered=50 failed=0" "stdin: 50 delivered"
gzip -c "$TMP/events.jsonl" >"$TMP/whole.jsonl.gz"
head -c $(($(wc -c <"$TMP/whole.jsonl.gz") / 2)) "$TMP/whole.jsonl.gz" >"$TMP/cut.jsonl.gz"
check_rc 1 "produce a truncated gzip file" -- "$EDDY" produce -b "$BOOT" -t one --data "$TMP/cut.jsonl.gz"
check_grep "$TMP/err" "cut.jsonl.gz:" "truncated gzip: read error names the file"

# SIGINT in the middle of a rate-limited stream: stops, flushes, everything sent is delivered.
"$EDDY" produce -b "$BOOT" -t one --data "$TMP/events.jsonl" --rate 500 >"$TMP/int.out" 2>"$TMP/int.err" &
PPID_=$!
PIDS+=("$PPID_")
sleep 0.6
kill -INT "$PPID_"
timeout 15 tail --pid="$PPID_" -f /dev/null
wait "$PPID_"
RC=$?
CHECKS=$((CHECKS + 1))
if [[ $RC -eq 0 ]] && $PY - "$TMP/int.out" <<'PYEOF'; then pass "SIGINT: stopped early, all sent delivered ($(cat "$TMP/int.out"))"; else fail "SIGINT: exit $RC, $(cat "$TMP/int.out")"; fi
import sys
kv = dict(x.split("=") for x in open(sys.argv[1]).read().split())
sent, dl = int(kv["sent"]), int(kv["delivered"])
sys.exit(0 if 0 < sent < 3001 and sent == dl else 1)
PYEOF

# The partition limit: of 20000 messages of 306 bytes on one partition, only ~5 MiB remain.
$PY -c "
import sys
for i in range(20000): print('{\"id\":\"lim-%06d\",\"label\":0,\"pad\":\"%s\"}' % (i, 'x' * 264))" >"$TMP/limit.jsonl"
check_rc 0 "produce 20000 x 306 B" -- "$EDDY" produce -b "$BOOT" -t lim --data "$TMP/limit.jsonl" --set kafka.batch.num.messages=1000
timeout 30 kcat -C -b "$BOOT" -t lim -p 0 -o beginning -e -q -f '%o\n' >"$TMP/lim.txt" 2>/dev/null
LIM_N=$(wc -l <"$TMP/lim.txt")
LIM_FIRST=$(head -1 "$TMP/lim.txt")
CHECKS=$((CHECKS + 1))
if [[ $LIM_N -ge 10000 && $LIM_N -lt 20000 && $LIM_FIRST -gt 0 ]]; then
  pass "partition keeps $LIM_N of 20000 (first offset $LIM_FIRST): the documented ~5 MiB"
else fail "partition limit: $LIM_N kept, first offset $LIM_FIRST"; fi

stop_broker "$MAIN_PID" "broker"

# Dead bootstrap: nothing listens there; deliveries time out and produce exits 1.
DEAD=$(free_port)
check_rc 1 "produce to a closed port" -- timeout 30 "$EDDY" produce -b "127.0.0.1:$DEAD" -t t1 --data "$TMP/events.jsonl" --limit 5 --set kafka.message.timeout.ms=1000
check_grep "$TMP/err" "5 of 5 messages failed delivery" "failed deliveries reported"
check_grep "$TMP/out" "sent=5 delivered=0 failed=5" "summary counts 5 failed"

# --port: a fixed bootstrap port relayed to the mock broker.
PORT=$(free_port)
start_broker fixed --port "$PORT" --topic f --partitions 2 && {
  CHECKS=$((CHECKS + 1))
  if [[ $BOOT == "127.0.0.1:$PORT" ]]; then pass "--port $PORT is the bootstrap"; else fail "--port: bootstrap '$BOOT'"; fi
  check_rc 0 "produce through --port" -- "$EDDY" produce -b "127.0.0.1:$PORT" -t f --data "$TMP/events.jsonl" --limit 100
  consume f "$TMP/f.tsv"
  CHECKS=$((CHECKS + 1))
  if [[ $(wc -l <"$TMP/f.tsv") -eq 100 ]] && cmp -s <(cut -f4 "$TMP/f.tsv" | sort) <(grep -v '^ *$' "$TMP/events.jsonl" | head -100 | sort); then
    pass "kcat through --port reads the 100 messages byte-exact"; else fail "--port: $(wc -l <"$TMP/f.tsv") messages"; fi
  check_rc 1 "second broker on the same --port" -- timeout 10 "$EDDY" broker --port "$PORT"
  check_grep "$TMP/err" "127.0.0.1:$PORT" "port conflict named"
  stop_broker "$BROKER_PID" "broker --port"
}

finish
