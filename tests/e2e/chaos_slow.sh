#!/usr/bin/env bash
# Chaos: `eddy train` and two `eddy serve` replicas on `eddy broker`, with at least 50 SIGKILLs and
# the mock cluster's faults (`eddy broker --control`), in four phases:
#   ingest     events stream in; the trainer is killed every 0.3-1.2 s while Fetch and OffsetCommit
#              requests fail and responses are delayed (RTT); then bursts, each acknowledged and
#              followed by every broker going down while the trainer is still ingesting it (the
#              trainer is killed and restarts with Kafka unreachable) and coming back;
#   publish    the stream is drained; the trainer trains from replay and publishes many versions a
#              second, and is killed every 0.3-1.0 s, every other time as soon as a version is being
#              written (.tmp-v* in the store); Produce errors and RTT hit the announcements;
#   rollback   `eddy ctl rollback V --retrain --skip A:B`, more events, and kills while it re-trains:
#              each restart resumes V's lineage (V itself, or a version published after the
#              rollback) and keeps skipping A..B while its cursor has not passed it;
#   final      faults off, the last events, a publish.
# Replicas are killed and restarted throughout (one at a time). Each replica process gets its own
# load client (2 threads, paced), stopped before that replica is killed, so every request counted
# went to a replica that was not killed meanwhile. At the end it asserts and prints: every produced
# event stored exactly once (ingest_check), every version verifies after every kill and at the end,
# CURRENT is promoted, both replicas serve CURRENT, no request failed; and how long each phase took.
# Labelled slow (the Release pass only); 1.5-2 minutes on 2 cores.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/train_helpers.bash"

CHECK=${EDDY_INGEST_CHECK:-$(dirname "$EDDY")/tests/ingest_check}
[[ -x $CHECK ]] || skip "ingest_check helper not built ($CHECK)"
need_command curl
need_command kcat "what the broker holds is checked with it"
T_TEST=$SECONDS

N1=6000   # phase ingest: streamed
NB=700    # phase ingest: per burst
BURSTS=3  # phase ingest: bursts, each followed by every broker down
N3=600    # per rollback round
ROUNDS=4  # rollback rounds
N4=500    # phase final
N=$((N1 + BURSTS * NB + ROUNDS * N3 + N4))
MODEL_DIR=$TMP/store/chaos
TPORT=$(free_port)
declare -A RPORT=([a]=$(free_port) [b]=$(free_port))
export PREDICT_LOAD_PAUSE=0.02

# ---- events: s0 .. s(N-1), one file per production ----
$PY - "$TMP" $N1 $NB $BURSTS $N3 $ROUNDS $N4 <<'PYEOF'
import json, random, sys
tmp, n1, nb, bursts, n3, rounds, n4 = sys.argv[1], *map(int, sys.argv[2:])
random.seed(13)
sizes = [("p1", n1)] + [("b-%d" % b, nb) for b in range(1, bursts + 1)]
sizes += [("p3-%d" % r, n3) for r in range(1, rounds + 1)] + [("p4", n4)]
i = 0
for name, n in sizes:
    with open("%s/%s.jsonl" % (tmp, name), "w") as f:
        for _ in range(n):
            x = [round(random.random(), 4) for _ in range(32)]
            f.write(json.dumps({"id": "s%d" % i, "label": int(x[0] + x[1] > 1), "dense": x}) + "\n")
            i += 1
json.dump({"dense": [0.5] * 32}, open(tmp + "/one.json", "w"))
PYEOF

# ---- the broker and its control channel ----
require_broker --topic events --partitions 4 --topic eddy-snapshots --partitions 1 --control "$TMP/ctl"
exec {CTL}<>"$TMP/ctl"
CTL_SENT=0
declare -A FAULTS=()
# ctl KIND COMMAND: sends COMMAND to the broker, waits for its answer and counts it under KIND.
ctl() {
  local want=$((CTL_SENT + 2)) line= # line 1 of broker.out is the bootstrap line
  echo "$2" >&"$CTL"
  CTL_SENT=$((CTL_SENT + 1))
  for _ in $(seq 200); do
    line=$(sed -n "${want}p" "$TMP/broker.out")
    [[ -n $line ]] && break
    sleep 0.05
  done
  if [[ $line == "ok $2" ]]; then FAULTS[$1]=$((${FAULTS[$1]:-0} + 1)); else fail "broker control '$2': ${line:-no answer}"; fi
}
# fault I: the I-th fault of the cycle applied while the test's producer streams. Not Produce
# errors nor a broker down: with those the mock cluster loses or duplicates messages of an
# idempotent producer (seen without eddy in the loop: 7998 of 8000 acknowledged messages kept;
# 8175 copies of 8000), and
# what Kafka holds must be exactly what was produced for the exactly-once check to mean anything.
# Produce errors hit the trainer's announcements (phase publish); the broker goes down after each
# burst is acknowledged, while the trainer is still ingesting it.
fault() {
  case $(($1 % 4)) in
    0) ctl "Fetch errors" "errors Fetch 8 NOT_LEADER_FOR_PARTITION" ;;
    1) ctl "OffsetCommit errors" "errors OffsetCommit 4 COORDINATOR_NOT_AVAILABLE" ;;
    2) ctl "RTT" "rtt all 150" ;;
    3) ctl "RTT" "rtt all 0" ;;
  esac
}

write_token chaos-token
# trainer_config SECTION.KEY=VALUE...: the trainer's config for the next lives (also the replicas').
trainer_config() {
  write_trainer_config "$TMP/train.ini" model.name=chaos model.dense_dim=32 model.hidden=16 \
    model.head=logistic -model.classes train.batch_size=32 snapshot.gate.max_regression=0.5 \
    http.bind=127.0.0.1:$TPORT kafka.reconnect.backoff.max.ms=500 "$@"
}

# ---- the trainer: lives, kills, and the store after each kill ----
LIFE=0
KILLS_TRAINER=0
BAD_STORE=0
MID_PUBLISH=0
MID_DELETE=0
declare -A KILLED_IN=()
trainer_up() {
  LIFE=$((LIFE + 1))
  if ! start_trainer "$TMP/life$LIFE.err" -c "$TMP/train.ini"; then
    fail "trainer life $LIFE did not come up"
    tail -n 20 "$TMP/life$LIFE.err" >&2
    finish
    exit 1
  fi
}
# trainer_kill PHASE: SIGKILL; then every version must verify and CURRENT name one of them.
trainer_kill() {
  kill -KILL "$TRAIN_PID"
  wait "$TRAIN_PID" 2>/dev/null
  KILLS_TRAINER=$((KILLS_TRAINER + 1))
  KILLED_IN[$1]=$((${KILLED_IN[$1]:-0} + 1))
  compgen -G "$MODEL_DIR/.tmp-v*" >/dev/null && MID_PUBLISH=$((MID_PUBLISH + 1))
  compgen -G "$MODEL_DIR/.del-*" >/dev/null && MID_DELETE=$((MID_DELETE + 1))
  local nv cur
  nv=$(verify_all "$MODEL_DIR")
  cur=$(cat "$MODEL_DIR/CURRENT" 2>/dev/null)
  if [[ $nv -lt 0 || ($nv -gt 0 && (-z $cur || ! -d $MODEL_DIR/$cur)) ]]; then
    BAD_STORE=$((BAD_STORE + 1))
    echo "after trainer kill $KILLS_TRAINER: $nv versions verified, CURRENT '$cur'" >&2
  fi
}
# until_publishing SECONDS: returns as soon as a publish is being written (.tmp-v* in the store).
until_publishing() {
  local end=$((SECONDS + $1))
  while ((SECONDS < end)); do
    compgen -G "$MODEL_DIR/.tmp-v*" >/dev/null && return 0
    sleep 0.002
  done
  return 1
}
live() { sleep "$(awk -v a="$1" -v b="$2" -v r=$RANDOM 'BEGIN { printf "%.2f", a + (b - a) * r / 32767 }')"; }

# ---- replicas: one load client per replica process ----
declare -A RPID=() LPID=() LSTOP=() RINC=()
KILLS_REPLICA=0
LOADS=()
healthz_version() { curl -s --max-time 2 "http://127.0.0.1:${RPORT[$1]}/healthz" | sed -n 's/.*"version":\([0-9]*\)}.*/\1/p'; }
replica_up() {
  local inc=$((${RINC[$1]:-0} + 1))
  RINC[$1]=$inc
  if ! start_serve "r$1-$inc" -c "$TMP/train.ini" --set http.bind=127.0.0.1:${RPORT[$1]} \
    --set serve.trainer_url="http://127.0.0.1:$TPORT" --set serve.poll_seconds=1 \
    --set serve.heartbeat_seconds=1 --set serve.threads=2; then
    fail "replica $1 ($inc) did not come up"
    tail -n 20 "$TMP/r$1-$inc.err" >&2
    finish
    exit 1
  fi
  RPID[$1]=$REPLICA_PID
  for _ in $(seq 300); do
    [[ -n $(healthz_version "$1") ]] && break
    sleep 0.05
  done
  [[ -n $(healthz_version "$1") ]] || fail "replica $1 ($inc) serves nothing after 15 s"
  LSTOP[$1]=$TMP/stop-$1-$inc
  spawn "$TMP/load-$1-$inc.out" "$TMP/load-$1-$inc.err" $PY "$SRC/tests/e2e/predict_load.py" \
    "$TMP/load-$1-$inc.json" "$TMP/one.json" "${LSTOP[$1]}" 900 2 "http://127.0.0.1:${RPORT[$1]}"
  LPID[$1]=$SPAWNED_PID
  LOADS+=("$TMP/load-$1-$inc.json")
}
load_stop() { touch "${LSTOP[$1]}" && wait "${LPID[$1]}"; }
replica_kill() {
  load_stop "$1"
  kill -KILL "${RPID[$1]}"
  wait "${RPID[$1]}" 2>/dev/null
  KILLS_REPLICA=$((KILLS_REPLICA + 1))
}
NEXT_REPLICA=a
replica_cycle() { # kills the replicas in turn, a b a b ..., and starts each again
  replica_kill $NEXT_REPLICA
  replica_up $NEXT_REPLICA
  [[ $NEXT_REPLICA == a ]] && NEXT_REPLICA=b || NEXT_REPLICA=a
}

declare -A PHASE_S=()
PHASES=()
phase_end() { PHASE_S[$1]=$((SECONDS - PHASE_T0)); PHASES+=("$1"); echo "== phase $1: ${PHASE_S[$1]} s"; }

# ================= phase 1: ingest, with broker faults =================
PHASE_T0=$SECONDS
trainer_config replay.idle_steps=0 snapshot.every_steps=20 snapshot.keep=10
trainer_up
spawn "$TMP/produce1.out" "$TMP/produce1.err" "$EDDY" produce -b "$BOOT" -t events --data "$TMP/p1.jsonl" \
  --key id --rate 300 --set kafka.enable.idempotence=true
PRODUCE_PID=$SPAWNED_PID
check_status 60 "s['current_version'] is not None" "a first version promoted" || { finish; exit 1; }
replica_up a
replica_up b
STREAMING=0
FIRST_BATCHES=0
i=0
while kill -0 "$PRODUCE_PID" 2>/dev/null || ((i < 10)); do
  live 0.3 1.2
  fault $i
  kill -0 "$PRODUCE_PID" 2>/dev/null && STREAMING=$((STREAMING + 1))
  trainer_kill ingest
  trainer_up
  ((i % 3 == 2)) && replica_cycle
  i=$((i + 1))
done
wait "$PRODUCE_PID"
rc=$?
CHECKS=$((CHECKS + 1))
if [[ $rc == 0 ]]; then pass "producer: $(cat "$TMP/produce1.out")"; else fail "producer exit $rc: $(tail -n 3 "$TMP/produce1.err")"; fi
ctl "RTT" "rtt all 0"
check_status 90 "s['buffer']['next_seq'] == $N1" "phase ingest: the $N1 streamed events stored"
# Bursts: slow fetches (RTT, Fetch errors), a burst produced and acknowledged, then every broker
# goes down while the trainer is still behind; it is killed and restarts with Kafka unreachable.
DOWN_BEHIND=0
for b in $(seq $BURSTS); do
  ctl "RTT" "rtt all 300"
  ctl "Fetch errors" "errors Fetch 20 NOT_LEADER_FOR_PARTITION"
  check_rc 0 "burst $b: $NB events produced" -- "$EDDY" produce -b "$BOOT" -t events --data "$TMP/b-$b.jsonl" \
    --key id --set kafka.enable.idempotence=true
  status
  ctl "broker down and up" "down all"
  $PY -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["buffer"]["next_seq"] < int(sys.argv[2]) else 1)' \
    "$TMP/status.json" $((N1 + b * NB)) && DOWN_BEHIND=$((DOWN_BEHIND + 1))
  trainer_kill ingest
  trainer_up
  live 0.5 1.0
  ctl "broker down and up" "up all"
  ctl "RTT" "rtt all 0"
  replica_cycle
  check_status 60 "s['buffer']['next_seq'] == $((N1 + b * NB))" "burst $b: stored after the broker came back"
done
N1=$((N1 + BURSTS * NB))
FIRST_BATCHES=$(grep -l "first batch stored" "$TMP"/life*.err | wc -l)
phase_end ingest

# ================= phase 2: training and publishing =================
PHASE_T0=$SECONDS
trainer_config replay.ratio=0.9 replay.idle_steps=1000000000 snapshot.every_steps=300 snapshot.keep=8
for i in $(seq 18); do
  ((i % 5 == 1)) && ctl "Produce errors" "errors Produce 2 NOT_LEADER_FOR_PARTITION"
  ((i == 7)) && ctl "RTT" "rtt all 100"
  ((i == 12)) && ctl "RTT" "rtt all 0"
  ((i % 2 == 0)) && until_publishing 3 # every other kill aimed at a publish in progress
  trainer_kill publish
  trainer_up
  ((i % 3 == 0)) && replica_cycle
  live 0.3 1.0
done
phase_end publish

# ================= phase 3: retrain rollbacks =================
PHASE_T0=$SECONDS
trainer_config replay.ratio=0.9 replay.idle_steps=1000000000 snapshot.every_steps=3000 snapshot.keep=40
trainer_kill publish
trainer_up
live 1.5 2.0 # a few versions of this lineage
BAD_RESUME=0
RESUMES=0
# check_resume V L A B: the life just started restored V (resuming the rollback) or a version newer
# than L (published after the rollback), and skips A..B when its cursor has not passed B.
check_resume() {
  local line r cursor
  line=$(grep -m1 'restored v' "$TMP/life$LIFE.err")
  r=$(sed -n 's/.*restored v0*\([0-9]*\) .*/\1/p' <<<"$line")
  cursor=$(sed -n 's/.*buffer cursor \([0-9]*\) of.*/\1/p' <<<"$line")
  RESUMES=$((RESUMES + 1))
  if [[ -z $r ]] || ! ((r == $1 || r > $2)) || { ((cursor <= $4)) && [[ $line != *"skipping seq $3..$4"* ]]; }; then
    BAD_RESUME=$((BAD_RESUME + 1))
    echo "rollback to v$1 (latest v$2, skip $3..$4): life $LIFE: $line" >&2
  else
    echo "life $LIFE after the rollback to v$1: restored v$r, cursor $cursor"
  fi
}
for r in $(seq $ROUNDS); do
  curl -sf "http://127.0.0.1:$TPORT/v1/versions?limit=1000" >"$TMP/versions.json"
  status
  read -r V L NS < <($PY - "$TMP/versions.json" "$TMP/status.json" <<'PYEOF'
import json, sys
vs = json.load(open(sys.argv[1]))["versions"]
s = json.load(open(sys.argv[2]))
prom = sorted(v["version"] for v in vs if v["status"] == "promoted" and v["version"] != s["current_version"])
print(prom[-3] if len(prom) >= 3 else prom[0] if prom else 0, max(v["version"] for v in vs), s["buffer"]["next_seq"])
PYEOF
)
  A=$((NS + 100))
  B=$((A + 199))
  CHECKS=$((CHECKS + 1))
  if "$EDDY" ctl --url "http://127.0.0.1:$TPORT" --token-file "$TMP/token" rollback "$V" --retrain --skip "$A:$B" \
    >"$TMP/ctl.out" 2>&1; then
    pass "round $r: rollback v$V --retrain --skip $A:$B (latest v$L)"
  else
    fail "round $r: rollback v$V --retrain: $(cat "$TMP/ctl.out")"
  fi
  spawn "$TMP/produce3-$r.out" "$TMP/produce3-$r.err" "$EDDY" produce -b "$BOOT" -t events \
    --data "$TMP/p3-$r.jsonl" --key id --rate 2000
  PRODUCE_PID=$SPAWNED_PID
  for k in 1 2; do
    live 0.2 0.8
    trainer_kill rollback
    trainer_up
    check_resume "$V" "$L" "$A" "$B"
  done
  replica_cycle
  wait "$PRODUCE_PID" || fail "round $r: producer: $(tail -n 2 "$TMP/produce3-$r.err")"
  check_status 30 "s['buffer']['next_seq'] == $((N1 + r * N3))" "round $r: its $N3 events stored"
done
phase_end rollback

# ================= phase 4: final =================
# A clean stop and a last life that trains fresh events only and publishes on request, so that
# CURRENT stays put while the replicas catch up with it.
PHASE_T0=$SECONDS
check_trainer_stops TERM "a life during the retrain, with the broker up"
trainer_config replay.idle_steps=0 snapshot.every_steps=1000000 snapshot.keep=40
trainer_up
check_rc 0 "produce the last $N4 events" -- "$EDDY" produce -b "$BOOT" -t events --data "$TMP/p4.jsonl" --key id
check_status 60 "s['buffer']['next_seq'] == $N and s['buffer']['cursor'] == $N" "all $N events stored and trained"
code=$(post /v1/snapshot '{"timeout_ms": 20000}')
CHECKS=$((CHECKS + 1))
if [[ $code == 200 ]]; then pass "a last publish: $(cat "$TMP/post.json")"; else fail "POST /v1/snapshot: HTTP $code $(cat "$TMP/post.json")"; fi
CUR=$(current_version)
SERVED=
for _ in $(seq 300); do
  [[ $(healthz_version a) == "$CUR" && $(healthz_version b) == "$CUR" ]] && SERVED=1 && break
  sleep 0.1
done
CHECKS=$((CHECKS + 1))
if [[ -n $SERVED ]]; then pass "both replicas serve CURRENT v$CUR"; else
  fail "replicas serve v$(healthz_version a) and v$(healthz_version b), CURRENT is v$CUR"
fi
load_stop a
load_stop b
check_sigterm "replica a" "${RPID[a]}"
check_sigterm "replica b" "${RPID[b]}"
check_trainer_stops TERM "the last trainer life"
phase_end final

# ================= the figures =================
# What Kafka holds must be what was produced, once each (else the exactly-once check below could
# not tell the broker's faults from eddy's).
kcat -C -b "$BOOT" -t events -o beginning -e -q -f '%k\n' >"$TMP/kafka.keys" 2>"$TMP/kcat.err"
read -r KTOTAL KDISTINCT KOK < <($PY - "$TMP/kafka.keys" $N <<'PYEOF'
import sys
keys = [l.strip() for l in open(sys.argv[1]) if l.strip()]
n = int(sys.argv[2])
print(len(keys), len(set(keys)), int(sorted(set(keys)) == sorted("s%d" % i for i in range(n))))
PYEOF
)
CHECKS=$((CHECKS + 1))
if [[ $KTOTAL == "$N" && $KOK == 1 ]]; then pass "the broker holds each of the $N produced events once"; else
  fail "the broker holds $KTOTAL messages, $KDISTINCT distinct, all produced: $KOK (a broker or producer fault, not ingest)"
fi
"$CHECK" --path "$TMP/buffer" --ids s:$N >"$TMP/out" 2>"$TMP/err"
check_py "every produced event stored exactly once: $(head -c 160 "$TMP/out")" \
  "j['events'] == $N and j['distinct'] == $N and j['duplicates'] == 0 and j['missing'] == 0 and j['unexpected'] == 0"
nv=$(verify_all "$MODEL_DIR")
CHECKS=$((CHECKS + 1))
if [[ $BAD_STORE == 0 && $nv -ge 1 ]]; then
  pass "every version verified after each of $KILLS_TRAINER trainer kills, and all $nv at the end"
else fail "bad stores after $BAD_STORE kills; $nv versions verify at the end"; fi
CHECKS=$((CHECKS + 1))
cur=$(cat "$MODEL_DIR/CURRENT")
if [[ $cur == "$(printf 'v%06d' "$CUR")" ]] && grep -q '"status":[[:space:]]*"promoted"' "$MODEL_DIR/$cur/manifest.json"; then
  pass "CURRENT is $cur, promoted"
else fail "CURRENT is '$cur' (want v$CUR, promoted)"; fi
read -r LREQ LFAIL LBAD < <($PY - "${LOADS[@]}" <<'PYEOF'
import json, sys
req = fail = 0
bad = []
for path in sys.argv[1:]:
    s = json.load(open(path))
    req += s["requests"]
    n = sum(s["failures"].values())
    fail += n
    if n:
        bad.append("%s: %s %s" % (path.rsplit("/", 1)[1], s["failures"], s["details"][:2]))
print(req, fail, "; ".join(bad) or "-")
PYEOF
)
CHECKS=$((CHECKS + 1))
if [[ $LFAIL == 0 && $LREQ -gt 1000 ]]; then
  pass "replica requests: $LREQ over ${#LOADS[@]} replica processes, none failed"
else fail "replica requests: $LFAIL of $LREQ failed ($LBAD)"; fi
CHECKS=$((CHECKS + 1))
if [[ $BAD_RESUME == 0 && $RESUMES == $((2 * ROUNDS)) ]]; then
  pass "$RESUMES restarts after a retrain rollback resumed its lineage and its skip range"
else fail "$BAD_RESUME of $RESUMES restarts after a retrain rollback went wrong"; fi

KILLS=$((KILLS_TRAINER + KILLS_REPLICA))
echo "SIGKILLs: $KILLS: trainer $KILLS_TRAINER (ingest ${KILLED_IN[ingest]:-0}, of them $STREAMING while events" \
  "streamed in; publish ${KILLED_IN[publish]:-0}; retrain rollback ${KILLED_IN[rollback]:-0}), replicas $KILLS_REPLICA"
echo "kills that hit a publish (.tmp-v* left): $MID_PUBLISH; a retention delete (.del-*): $MID_DELETE;" \
  "lives that resumed ingest (\"first batch stored\"): $FIRST_BATCHES; brokers down while the buffer was" \
  "behind Kafka: $DOWN_BEHIND of $BURSTS"
faults=
for k in "${!FAULTS[@]}"; do faults+="$k ${FAULTS[$k]}, "; done
echo "broker faults: ${faults%, }"
echo "phases: $(for p in "${PHASES[@]}"; do printf '%s %s s, ' "$p" "${PHASE_S[$p]}"; done)total $((SECONDS - T_TEST)) s"
CHECKS=$((CHECKS + 1))
if ((KILLS >= 50 && STREAMING >= 5 && DOWN_BEHIND >= 1 && MID_PUBLISH >= 1 && ${KILLED_IN[rollback]:-0} >= 2 * ROUNDS && KILLS_REPLICA >= 10)); then
  pass "$KILLS SIGKILLs, spread over ingest, publishing, retrain rollbacks and the replicas"
else
  fail "not enough chaos: $KILLS kills, $STREAMING while streaming, $DOWN_BEHIND downs while behind," \
    "$MID_PUBLISH mid-publish, $KILLS_REPLICA replicas"
fi
CHECKS=$((CHECKS + 1))
if ((${#FAULTS[@]} == 5)); then pass "every kind of broker fault was injected"; else fail "broker faults: ${faults%, }"; fi
check_sanitizers
finish
