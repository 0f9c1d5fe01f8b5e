#!/usr/bin/env bash
# `eddy buffer inspect` on buffers written by tests/e2e/buffer_fill.c (the replay buffer API, as
# ingest uses it): counts, seq range, offsets, labels, reservoir and dead letters in text and
# --json; a live writer holding the buffer open; eviction; usage errors and a missing path.
source "$(dirname "$0")/lib.bash"

FILL=${EDDY_BUFFER_FILL:-$(dirname "$EDDY")/tests/buffer_fill}
[[ -x $FILL ]] || skip "buffer_fill helper not built ($FILL)"

check_rc 0 "eddy --help lists buffer" -- "$EDDY" --help && check_grep "$TMP/out" "buffer inspect --path DIR" "help names buffer inspect"
check_rc 0 "buffer --help" -- "$EDDY" buffer --help && check_grep "$TMP/out" "--path DIR" "buffer --help documents --path"
check_rc 0 "buffer inspect --help" -- "$EDDY" buffer inspect --help && check_grep "$TMP/out" "read-only" "inspect --help says read-only"
check_rc 2 "buffer without subcommand" -- "$EDDY" buffer
check_rc 2 "unknown buffer subcommand" -- "$EDDY" buffer frob && check_grep "$TMP/err" "unknown subcommand 'frob'" "unknown subcommand named"
check_rc 2 "inspect without --path" -- "$EDDY" buffer inspect && check_grep "$TMP/err" "--path DIR is required" "missing --path named"
check_rc 2 "inspect with bad --examples" -- "$EDDY" buffer inspect --path "$TMP" --examples x

# A missing path is an error that names it, and nothing is created.
check_rc 1 "inspect a missing path" -- "$EDDY" buffer inspect --path "$TMP/nope"
check_grep "$TMP/err" "$TMP/nope" "missing path named"
CHECKS=$((CHECKS + 1))
if [[ -e $TMP/nope ]]; then fail "inspect created $TMP/nope"; else pass "nothing created"; fi
mkdir "$TMP/empty"
check_rc 1 "inspect a folder that is not a buffer" -- "$EDDY" buffer inspect --path "$TMP/empty"
CHECKS=$((CHECKS + 1))
if [[ -z $(ls -A "$TMP/empty") ]]; then pass "not-a-buffer folder left untouched"; else fail "inspect wrote into $TMP/empty"; fi

# 1000 events over 3 partitions, 4 labels, 7 dead letters (3 reasons), a reservoir of 20 per class.
check_rc 0 "fill a buffer" -- "$FILL" --path "$TMP/buf" --events 1000 --batch 100 --classes 4 --partitions 3 \
  --bad 7 --reservoir 20
check_rc 0 "inspect (text)" -- "$EDDY" buffer inspect --path "$TMP/buf"
check_grep "$TMP/out" "events        1000 (seq 0..999)" "text: count and seq range"
check_grep "$TMP/out" "evicted       0" "text: nothing evicted"
check_grep "$TMP/out" "dead letters  7 stored" "text: dead letter count"
check_grep "$TMP/out" "events/0  337" "text: offset of partition 0 (334 events + 3 bad)"
check_grep "$TMP/out" "events/2  335" "text: offset of partition 2 (333 events + 2 bad)"
check_grep "$TMP/out" "event_not_json" "text: reasons listed"
check_grep "$TMP/out" "label 12 out of range 0..3" "text: an example message"
check_grep "$TMP/out" 'raw: garbage\x01\xff' "text: raw prefix, binary escaped"
check_grep "$TMP/out" "20 of 250" "text: reservoir kept of seen"

check_rc 0 "inspect --json" -- "$EDDY" buffer inspect --path "$TMP/buf" --json
check_py "json: counts" 'j["events"] == 1000 and j["first_seq"] == 0 and j["next_seq"] == 1000 and j["evicted"] == 0'
check_py "json: bytes positive" 'j["bytes"] > 1000 * 30'
check_py "json: offsets per partition" 'sorted((o["topic"], o["partition"], o["next_offset"]) for o in j["offsets"]) == [("events", 0, 337), ("events", 1, 335), ("events", 2, 335)]'
check_py "json: labels" 'j["labels"] == {"0": 250, "1": 250, "2": 250, "3": 250}'
check_py "json: reservoir" 'all(j["reservoir"][c] == {"kept": 20, "seen": 250} for c in "0123")'
check_py "json: dead letters by reason" 'j["dead_letters"] == 7 and j["dead_letters_by_reason"] == {"event_not_json": 3, "event_label_range": 2, "event_dense_len": 2}'
check_py "json: 5 examples, newest first" 'len(j["dead_letter_examples"]) == 5 and j["dead_letter_examples"][0]["reason"] == "event_not_json"'
check_py "json: example fields" 'all(set(d) >= {"topic", "partition", "offset", "reason", "message", "raw_prefix"} for d in j["dead_letter_examples"])'
check_rc 0 "inspect --json --examples 0" -- "$EDDY" buffer inspect --path "$TMP/buf" --json --examples 0
check_py "json: --examples 0" 'j["dead_letter_examples"] == [] and j["dead_letters"] == 7'

# A writer keeps the buffer open and appends while inspect reads it.
"$FILL" --path "$TMP/live" --events 500 --batch 50 --partitions 2 --hold-ms 4000 >"$TMP/live.out" 2>&1 &
WRITER=$!
PIDS+=("$WRITER")
for _ in $(seq 100); do grep -q ready "$TMP/live.out" 2>/dev/null && break; sleep 0.1; done
check_grep "$TMP/live.out" "ready 500" "writer filled the buffer"
check_rc 0 "inspect while a writer has it open" -- "$EDDY" buffer inspect --path "$TMP/live" --json
check_py "json: live buffer seen" 'j["events"] >= 500 and j["first_seq"] == 0'
check_rc 0 "inspect again, later" -- "$EDDY" buffer inspect --path "$TMP/live" --json
check_py "json: the writer went on" 'j["events"] > 500'
CHECKS=$((CHECKS + 1))
if kill -0 $WRITER 2>/dev/null; then pass "writer still running during inspect"; else fail "writer exited early: $(cat "$TMP/live.out")"; fi
wait $WRITER
CHECKS=$((CHECKS + 1))
if [[ $? -eq 0 ]]; then pass "writer finished cleanly"; else fail "writer failed: $(cat "$TMP/live.out")"; fi

# Eviction by capacity.
check_rc 0 "fill with capacity 300" -- "$FILL" --path "$TMP/small" --events 1000 --batch 70 --capacity 300
check_rc 0 "inspect the evicting buffer" -- "$EDDY" buffer inspect --path "$TMP/small" --json
check_py "json: eviction" 'j["events"] == 300 and j["first_seq"] == 700 and j["next_seq"] == 1000 and j["evicted"] == 700'
check_py "json: labels count only stored events" 'sum(j["labels"].values()) == 300'

# Through the real pipeline: eddy broker -> eddy produce (the sample and bad events) -> eddy
# ingest, inspected while ingest still holds the buffer open, then after it stopped.
if ! "$EDDY" ingest --help >/dev/null 2>&1 || ! "$EDDY" broker --help >/dev/null 2>&1; then
  echo "pipeline part skipped: eddy ingest or eddy broker missing"
  finish
  exit
fi
start_broker broker --topic ev --partitions 2 || { finish; exit 1; }
printf '[model]\nname = inspect-e2e\nhash_bits = 10\nembed_dim = 4\ndense_dim = 2\nhead = logistic\n[stream]\ntopic = ev\n[buffer]\npath = %s\nsync = false\n' \
  "$TMP/pipe" >"$TMP/pipe.ini"
check_rc 0 "produce the sample events" -- "$EDDY" produce -b "$BOOT" -t ev --data "$SRC/streams/sample-events.jsonl"
check_rc 0 "produce the bad events" -- "$EDDY" produce -b "$BOOT" -t ev --data "$SRC/streams/bad-events.jsonl"
GOOD=$(grep -c . "$SRC/streams/sample-events.jsonl")
BAD=$(grep -c . "$SRC/streams/bad-events.jsonl")
"$EDDY" ingest -c "$TMP/pipe.ini" -b "$BOOT" >"$TMP/ingest.out" 2>"$TMP/ingest.err" &
INGEST=$!
PIDS+=("$INGEST")
# Poll with inspect while ingest runs (read-only next to the writer) until everything is stored.
stored=0
for _ in $(seq 300); do
  if [[ -d $TMP/pipe ]] && "$EDDY" buffer inspect --path "$TMP/pipe" --json >"$TMP/out" 2>"$TMP/err"; then
    stored=$($PY -c 'import json,sys; j=json.load(open(sys.argv[1])); print(j["events"] + j["dead_letters"])' "$TMP/out")
  fi
  [[ $stored -ge $((GOOD + BAD)) ]] && break
  sleep 0.1
done
CHECKS=$((CHECKS + 1))
if [[ $stored -eq $((GOOD + BAD)) ]] && kill -0 $INGEST 2>/dev/null; then
  pass "inspect while eddy ingest runs sees all $((GOOD + BAD)) messages"
else
  fail "inspect during ingest saw $stored of $((GOOD + BAD)) messages"; tail -n 5 "$TMP/ingest.err" >&2
fi
kill -TERM $INGEST
wait $INGEST
rc=$?
CHECKS=$((CHECKS + 1))
if [[ $rc -eq 0 ]]; then pass "eddy ingest stopped on SIGTERM"; else fail "eddy ingest exit status $rc on SIGTERM"; fi
check_rc 0 "inspect after ingest (json)" -- "$EDDY" buffer inspect --path "$TMP/pipe" --json
check_py "pipeline: good events stored" "j['events'] == $GOOD and j['first_seq'] == 0 and j['next_seq'] == $GOOD"
check_py "pipeline: one dead letter per bad class" "j['dead_letters'] == $BAD and len(j['dead_letters_by_reason']) == $BAD and all(v == 1 for v in j['dead_letters_by_reason'].values())"
check_py "pipeline: stored offsets cover every message" "sum(o['next_offset'] for o in j['offsets']) == $((GOOD + BAD)) and all(o['topic'] == 'ev' for o in j['offsets'])"
check_py "pipeline: labels of the sample events" "sum(j['labels'].values()) == $GOOD and set(j['labels']) <= {'0', '1'}"
check_py "pipeline: examples name topic and reason" "len(j['dead_letter_examples']) == 5 and all(d['topic'] == 'ev' and d['reason'].startswith('event_') for d in j['dead_letter_examples'])"
check_rc 0 "inspect after ingest (text)" -- "$EDDY" buffer inspect --path "$TMP/pipe"
check_grep "$TMP/out" "events        $GOOD (seq 0..$((GOOD - 1)))" "pipeline text: count and range"
check_grep "$TMP/out" "event_too_large" "pipeline text: reasons"

finish
