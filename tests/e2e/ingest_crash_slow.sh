#!/usr/bin/env bash
# Exactly-once ingest under kill -9: one stream of 60k uniquely-id'd small events (8 partitions)
# is produced at a steady rate while `eddy ingest` is killed with SIGKILL at random moments
# (21 times, restarted each time), then a last run drains the topic (--idle-exit). The buffer
# must hold each id exactly once and its stored offsets must equal the partition ends. Every life
# runs with the shipped Kafka defaults in the one default group (ingest assigns its partitions
# itself: no membership to wait out after a kill) and must store its first batch within 5 s of
# its start; each life runs 3.0-4.2 s, so most kills land while storing. The group's commits trail
# the buffer, so a life that took its positions from them would store duplicates.
# EDDY_CRASH_EVENTS / EDDY_CRASH_KILLS / EDDY_CRASH_SEED change the size, kills and randomness.
source "$(dirname "$0")/lib.bash"

need_command kcat
CHECK=${EDDY_INGEST_CHECK:-$(dirname "$EDDY")/tests/ingest_check}
[[ -x $CHECK ]] || skip "ingest_check helper not built ($CHECK)"

N=${EDDY_CRASH_EVENTS:-60000}
KILLS=${EDDY_CRASH_KILLS:-21}
SEED=${EDDY_CRASH_SEED:-$$}
PARTS=8
RANDOM=$SEED
echo "seed $SEED: $N events, $KILLS kills"

require_broker --topic events --partitions "$PARTS"

cat >"$TMP/cfg.ini" <<EOF
[model]
name = crash
hash_bits = 0
embed_dim = 0
dense_dim = 2
hidden =
head = logistic
[stream]
topic = events
[kafka]
bootstrap.servers = $BOOT
[buffer]
path = $TMP/buf
sync = false
EOF
$PY - "$TMP/events.jsonl" "$N" <<'PYEOF'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write('{"id":"k-%d","ts":%d,"label":%d,"dense":[%.4f,%.4f]}\n'
                % (i, 1732780000000 + i, i % 2, (i % 977) / 977.0, (i % 31) / 31.0))
PYEOF
echo "event size: $(head -c 200 "$TMP/events.jsonl" | head -n 1 | wc -c) bytes"

# ~70 s of stream at a steady rate, keyed by id so the partitioner spreads it over 8 partitions
RATE=$((N / 70 + 1))
"$EDDY" produce -b "$BOOT" -t events --data "$TMP/events.jsonl" --key id --rate $RATE \
  >"$TMP/produce.out" 2>"$TMP/produce.err" &
PRODUCER=$!
PIDS+=($PRODUCER)

stored() {
  "$CHECK" --path "$TMP/buf" 2>/dev/null | $PY -c 'import json,sys; print(json.load(sys.stdin)["events"])' 2>/dev/null || echo 0
}

kills=0
mid_stream=0
last=0
start=$SECONDS
for ((k = 1; k <= KILLS; k++)); do
  "$EDDY" ingest -c "$TMP/cfg.ini" >>"$TMP/ingest.log" 2>&1 &
  pid=$!
  PIDS+=($pid)
  t=$((30 + RANDOM % 13))
  sleep "$((t / 10)).$((t % 10))"
  if kill -KILL $pid 2>/dev/null; then kills=$((kills + 1)); fi
  wait $pid 2>/dev/null
  now=$(stored)
  [[ $now -gt $last ]] && mid_stream=$((mid_stream + 1))
  echo "kill $k at $((SECONDS - start)) s: $now events stored"
  last=$now
done

CHECKS=$((CHECKS + 1))
if wait $PRODUCER; then pass "producer delivered all $N events"; else
  fail "eddy produce failed"
  tail -n 5 "$TMP/produce.err" >&2
fi
check_rc 0 "final ingest --idle-exit 3" -- timeout 120 "$EDDY" ingest -c "$TMP/cfg.ini" --idle-exit 3 \
  ${EDDY_CRASH_FINAL_ARGS:-}
tail -n 2 "$TMP/err"

"$CHECK" --path "$TMP/buf" --ids "k-:$N" >"$TMP/out" 2>"$TMP/check.err"
ends="{"
for ((p = 0; p < PARTS; p++)); do
  end=$(kcat -Q -b "$BOOT" -t "events:$p:-1" 2>/dev/null | awk '{print $NF}')
  ends+="\"events/$p\": ${end:-0}, "
done
ends="${ends%, }}"
summary=$($PY -c 'import json,sys; j=json.load(open(sys.argv[1])); print("events %d, distinct %d, duplicates %d, missing %d" % (j["events"], j["distinct"], j["duplicates"], j["missing"]))' "$TMP/out")
echo "result: $N produced, $kills kills ($mid_stream after a life that stored events): $summary"
CHECKS=$((CHECKS + 1))
if [[ $kills -ge 20 && $mid_stream -ge 10 ]]; then pass "$kills kills, $mid_stream mid-stream"; else
  fail "only $kills kills ($mid_stream mid-stream)"
fi
# each life that stored events logged its first batch ("first batch stored S s after start"), the
# slowest within 5 s of its start
firsts=$(grep -c "first batch stored" "$TMP/ingest.log")
slowest=$(sed -n 's/.*first batch stored \([0-9.]*\) s after start.*/\1/p' "$TMP/ingest.log" | sort -g | tail -n 1)
CHECKS=$((CHECKS + 1))
if ((firsts >= mid_stream)); then pass "$firsts lives logged their first batch"; else
  fail "$firsts lives logged a first batch, $mid_stream stored events"
fi
check_seconds "slowest life's first batch after its start" "$slowest" 5
check_py "each id exactly once" \
  "j['events'] == $N and j['distinct'] == $N and j['duplicates'] == 0 and j['missing'] == 0 and j['unexpected'] == 0"
check_py "stored offsets == partition ends $ends" "j['offsets'] == $ends"
[[ -s $TMP/check.err ]] && sed 's/^/  checker: /' "$TMP/check.err" | head -n 10 >&2
finish
