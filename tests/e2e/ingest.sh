#!/usr/bin/env bash
# `eddy ingest` end to end: kcat (an external client, explicit partitions) and `eddy produce` feed
# the topic, bad events among them. The buffer must hold every event once, byte-exact, in
# per-partition order, the bad ones as dead letters (and copies on the dead-letter topic), and the
# stored offsets must equal the partition ends. Then ingest is killed with SIGKILL and restarted
# with Kafka's default session timeouts: it must store again within 5 s of its start, continue
# exactly, and leave the group's committed offsets (what lag tools show) at the partition ends.
# Last, a kcat balanced consumer joins that group while ingest runs: kcat gets every partition
# (ingest is no member: it assigns its partitions itself) and ingest keeps storing all of them.
# Runs against `eddy broker`, and again against a real Kafka broker when EDDY_TEST_KAFKA_BOOTSTRAP
# is set (topics auto-created there; one partition used).
source "$(dirname "$0")/lib.bash"

need_command kcat
CHECK=${EDDY_INGEST_CHECK:-$(dirname "$EDDY")/tests/ingest_check}
[[ -x $CHECK ]] || skip "ingest_check helper not built ($CHECK)"

# events FILE PREFIX N PARTITION_TAG: N valid events, one JSON object per line.
events() {
  $PY - "$@" <<'PYEOF'
import json, sys
path, prefix, n, tag = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with open(path, "w") as f:
    for i in range(n):
        e = {"id": f"{prefix}{i}", "ts": 1732780000000 + i, "label": i % 2,
             "weight": [1, 0.5, 2.25][i % 3], "dense": [i * 0.001, -1.0 / (i + 3)],
             "sparse": {"user": f"u{i % 13}", "price": i * 0.25}, "src": tag}
        f.write(json.dumps(e) + "\n")
PYEOF
}

# kcat_produce BOOT TOPIC PARTITION FILE: key = id, explicit partition.
kcat_produce() {
  $PY -c 'import json,sys
for l in open(sys.argv[1]): print(json.loads(l)["id"] + ":" + l.strip())' "$4" |
    kcat -P -b "$1" -t "$2" -p "$3" -K: -X message.timeout.ms=20000
}

# check_buffer WHAT CONFIG DIR EXPECTED_DL ENDS_TOPIC PARTS FILES...: runs the checker and compares.
check_buffer() {
  local what=$1 cfg=$2 dir=$3 want_dl=$4 topic=$5 parts=$6
  shift 6
  local args=()
  for f in "$@"; do args+=(--expect "$f"); done
  "$CHECK" -c "$cfg" --path "$dir" "${args[@]}" >"$TMP/out" 2>"$TMP/check.err"
  local ends="{"
  for ((p = 0; p < parts; p++)); do
    local end
    end=$(kcat -Q -b "$BOOT" -t "$topic:$p:-1" 2>/dev/null | awk '{print $NF}')
    ends+="\"$topic/$p\": ${end:-0}, "
  done
  ends="${ends%, }}"
  local want=0
  for f in "$@"; do want=$((want + $(wc -l <"$f"))); done
  check_py "$what: every event once, byte-exact, in partition order ($want)" \
    "j['distinct'] == $want and j['events'] == $want and j['duplicates'] == 0 and j['missing'] == 0 and j['unexpected'] == 0 and j['mismatched'] == 0 and j['out_of_order'] == 0"
  check_py "$what: $want_dl dead letters" "j['dead_letters'] == $want_dl"
  check_py "$what: stored offsets == partition ends $ends" "j['offsets'] == $ends"
  [[ -s $TMP/check.err ]] && sed 's/^/  checker: /' "$TMP/check.err" | head -n 10 >&2
}

wait_stored() { # wait_stored CFG DIR N SECONDS: until the buffer holds N events + dead letters
  local end=$((SECONDS + $4))
  while ((SECONDS < end)); do
    local n
    n=$("$CHECK" --path "$2" 2>/dev/null | $PY -c 'import json,sys; j=json.load(sys.stdin); print(j["events"]+j["dead_letters"])' 2>/dev/null)
    [[ -n $n && $n -ge $3 ]] && return 0
    sleep 0.3
  done
  return 1
}

# run_suite NAME BOOT TOPIC PARTS DLQ_TOPIC
run_suite() {
  local name=$1 topic=$3 parts=$4 dlq=$5
  BOOT=$2
  local dir=$TMP/$name
  mkdir -p "$dir"
  local group="eddy-e2e-$name-$$"
  cat >"$dir/cfg.ini" <<EOF
[model]
name = e2e
hash_bits = 10
embed_dim = 4
dense_dim = 2
hidden =
head = logistic
[stream]
topic = $topic
dlq_topic = $dlq
[kafka]
bootstrap.servers = $BOOT
group.id = $group
[buffer]
path = $dir/buf
sync = false
EOF
  local files=()
  for ((p = 0; p < parts; p++)); do
    events "$dir/kcat-$p.jsonl" "k$p-" 150 "kcat"
    files+=("$dir/kcat-$p.jsonl")
  done
  events "$dir/eddy.jsonl" "ep-" 200 "eddy"
  files+=("$dir/eddy.jsonl")

  # first stream: half of each kcat file, all of eddy produce's (one key: one partition, ordered)
  "$EDDY" ingest -c "$dir/cfg.ini" --idle-exit 10 >"$dir/ingest1.out" 2>"$dir/ingest1.err" &
  local ing=$!
  PIDS+=($ing)
  for ((p = 0; p < parts; p++)); do
    head -n 75 "$dir/kcat-$p.jsonl" >"$dir/a-$p.jsonl"
    kcat_produce "$BOOT" "$topic" "$p" "$dir/a-$p.jsonl" || fail "$name: kcat produce"
  done
  check_rc 0 "$name: eddy produce --key src" -- "$EDDY" produce -b "$BOOT" -t "$topic" \
    --data "$dir/eddy.jsonl" --key src
  check_rc 0 "$name: eddy produce bad events" -- "$EDDY" produce -b "$BOOT" -t "$topic" \
    --data "$SRC/streams/bad-events.jsonl"
  wait_stored "$dir/cfg.ini" "$dir/buf" $((75 * parts + 200 + 8)) 40 ||
    fail "$name: first events not stored in time"

  # the second half while it runs
  for ((p = 0; p < parts; p++)); do
    sed -n '76,$p' "$dir/kcat-$p.jsonl" >"$dir/b-$p.jsonl"
    kcat_produce "$BOOT" "$topic" "$p" "$dir/b-$p.jsonl" || fail "$name: kcat produce"
  done
  wait $ing
  local rc=$?
  CHECKS=$((CHECKS + 1))
  if [[ $rc -eq 0 ]]; then pass "$name: ingest --idle-exit exited 0"; else
    fail "$name: ingest exit $rc"
    tail -n 20 "$dir/ingest1.err" >&2
  fi
  check_grep "$dir/ingest1.err" "rank 0 of 1: assigned $parts partition" "$name: ingest assigned itself all $parts partitions"
  CHECKS=$((CHECKS + 1))
  if [[ $(grep -c "assigned" "$dir/ingest1.err") -eq 1 ]] && ! grep -Eq "revoked|lost" "$dir/ingest1.err"; then
    pass "$name: ingest's partitions never moved"
  else
    fail "$name: ingest's assignment changed"
    grep -E "assigned|revoked|lost" "$dir/ingest1.err" | tail -n 10 >&2
  fi
  check_grep "$dir/ingest1.err" "ingest done (idle" "$name: summary line"
  check_buffer "$name" "$dir/cfg.ini" "$dir/buf" 8 "$topic" "$parts" "${files[@]}"

  # dead letters were also copied to the dead-letter topic, with their reason in a header
  kcat -C -b "$BOOT" -t "$dlq" -e -q -f '%h\n' >"$dir/dlq.txt" 2>/dev/null
  CHECKS=$((CHECKS + 1))
  local n_dlq
  n_dlq=$(grep -c "eddy-reason=event_" "$dir/dlq.txt")
  if [[ $n_dlq -eq 8 ]]; then pass "$name: 8 dead letters on $dlq"; else
    fail "$name: $n_dlq dead letters with an eddy-reason header on $dlq, want 8"
  fi

  # kill -9 after a first batch, more events, a restart: stores again within 5 s of its start
  # (Kafka's default session timeouts: there is no group membership to wait out), exactly
  for ((p = 0; p < parts; p++)); do
    events "$dir/c-$p.jsonl" "c$p-" 40 "kcat"
    kcat_produce "$BOOT" "$topic" "$p" "$dir/c-$p.jsonl" || fail "$name: kcat produce"
    files+=("$dir/c-$p.jsonl")
  done
  spawn "$dir/ingest2.out" "$dir/ingest2.err" "$EDDY" ingest -c "$dir/cfg.ini"
  local killed=$SPAWNED_PID
  seconds_to_line "$(date +%s.%N)" "$dir/ingest2.err" "first batch stored" "$killed" 30 >/dev/null ||
    fail "$name: ingest stored nothing before the kill"
  kill -KILL "$killed"
  wait "$killed" 2>/dev/null
  for ((p = 0; p < parts; p++)); do
    events "$dir/d-$p.jsonl" "d$p-" 40 "kcat"
    kcat_produce "$BOOT" "$topic" "$p" "$dir/d-$p.jsonl" || fail "$name: kcat produce"
    files+=("$dir/d-$p.jsonl")
  done
  local t0
  t0=$(date +%s.%N)
  spawn "$dir/ingest3.out" "$dir/ingest3.err" timeout 60 "$EDDY" ingest -c "$dir/cfg.ini" --until-caught-up
  local restarted=$SPAWNED_PID
  check_seconds "$name: ingest restarted after kill -9 stored its first batch" \
    "$(seconds_to_line "$t0" "$dir/ingest3.err" "first batch stored" "$restarted" 30)" 5
  CHECKS=$((CHECKS + 1))
  if wait "$restarted"; then pass "$name: restarted ingest --until-caught-up exited 0"; else
    fail "$name: restarted ingest exit $?"
    tail -n 20 "$dir/ingest3.err" >&2
  fi
  check_grep "$dir/ingest3.err" "ingest done (caught up" "$name: stopped when caught up"
  check_buffer "$name after restart" "$dir/cfg.ini" "$dir/buf" 8 "$topic" "$parts" "${files[@]}"

  # the group's committed offsets, what lag tools show, are where the buffer stops
  check_rc 0 "$name: committed offsets of group $group" -- "$CHECK" -c "$dir/cfg.ini" --path "$dir/buf" --group "$group"
  check_py "$name: committed offsets == stored offsets" "j['committed'] == j['offsets']"

  # a kcat balanced consumer joins the group while ingest runs: kcat is its only member, so it
  # is assigned every partition, and ingest keeps storing all of them. (Last: on `eddy broker`
  # the group then refuses commits from non-members for good, see docs/broker.md.)
  spawn "$dir/ingest4.out" "$dir/ingest4.err" "$EDDY" ingest -c "$dir/cfg.ini" --idle-exit 5
  local ing4=$SPAWNED_PID
  kcat -b "$BOOT" -G "$group" -f '' "$topic" >/dev/null 2>"$dir/kcatG.err" &
  local kc=$!
  PIDS+=($kc)
  local joined=0
  for _ in $(seq 100); do
    grep -q "rebalanced.*assigned:" "$dir/kcatG.err" && joined=1 && break
    sleep 0.1
  done
  for ((p = 0; p < parts; p++)); do
    events "$dir/e-$p.jsonl" "e$p-" 40 "kcat"
    kcat_produce "$BOOT" "$topic" "$p" "$dir/e-$p.jsonl" || fail "$name: kcat produce"
    files+=("$dir/e-$p.jsonl")
  done
  CHECKS=$((CHECKS + 1))
  local kcat_parts
  kcat_parts=$(grep -m1 "rebalanced.*assigned:" "$dir/kcatG.err" | grep -o "$topic \[" | wc -l)
  if ((joined && kcat_parts == parts)); then pass "$name: kcat, alone in the group, was assigned all $parts partitions"; else
    fail "$name: kcat in the group: $(grep -m1 'rebalanced' "$dir/kcatG.err")"
  fi
  CHECKS=$((CHECKS + 1))
  if wait "$ing4"; then pass "$name: ingest with kcat in its group --idle-exit exited 0"; else
    fail "$name: ingest with kcat in its group exited $?"
    tail -n 20 "$dir/ingest4.err" >&2
  fi
  kill -TERM $kc
  wait $kc 2>/dev/null
  check_buffer "$name with kcat in the group" "$dir/cfg.ini" "$dir/buf" 8 "$topic" "$parts" "${files[@]}"
}

require_broker --topic events --partitions 4 --topic events-dlq --partitions 1
run_suite embedded "$BOOT" events 4 events-dlq

if [[ -n ${EDDY_TEST_KAFKA_BOOTSTRAP:-} ]]; then
  t="eddy-e2e-$$-$RANDOM"
  run_suite real "$EDDY_TEST_KAFKA_BOOTSTRAP" "$t" 1 "$t-dlq"
else
  echo "skip: real Kafka part (set EDDY_TEST_KAFKA_BOOTSTRAP=host:port to run it)"
fi

# usage and configuration errors
check_rc 2 "ingest without -c" -- "$EDDY" ingest
check_grep "$TMP/err" "-c CONFIG is required" "ingest without -c says so"
printf '[stream]\ntopic = t\n' >"$TMP/nobs.ini"
check_rc 2 "ingest without bootstrap.servers" -- "$EDDY" ingest -c "$TMP/nobs.ini"
check_grep "$TMP/err" "kafka.bootstrap.servers is not set" "missing bootstrap named"
check_rc 2 "ingest with a bad kafka property" -- "$EDDY" ingest -c "$TMP/nobs.ini" -b 127.0.0.1:1 \
  --set kafka.fetch.wait.max.ms=soon
check_grep "$TMP/err" 'kafka.fetch.wait.max.ms = "soon"' "bad property named"
check_rc 2 "ingest --idle-exit abc" -- "$EDDY" ingest -c "$TMP/nobs.ini" --idle-exit abc
check_rc 2 "ingest with an unknown option" -- "$EDDY" ingest --frobnicate
check_grep "$TMP/err" "eddy ingest: unknown option '--frobnicate'" "unknown option named"
check_rc 2 "ingest -c without a value" -- "$EDDY" ingest -c
check_grep "$TMP/err" "eddy ingest: -c needs a value" "missing value named"
check_rc 2 "ingest with an operand" -- "$EDDY" ingest -c "$TMP/nobs.ini" extra
check_grep "$TMP/err" "unexpected argument 'extra'" "operand named"
check_rc 0 "ingest --help" -- "$EDDY" ingest --help
check_grep "$TMP/out" "--until-caught-up" "help lists --until-caught-up"
finish
