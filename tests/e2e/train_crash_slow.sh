#!/usr/bin/env bash
# kill -9 of `eddy train` at random moments, 22 times, while it publishes a version every 2 steps
# (training goes on from replay when the stream is drained, so it is nearly always writing,
# committing, moving CURRENT or deleting old versions). After every kill: every version folder
# passes `eddy snapshot verify` and CURRENT names one of them (leftover .tmp-*/.del-* entries are
# counted: kills during a publish or a deletion). Each restart resumes the newest version (its
# step and example count never go back). At the end a writer open leaves no leftovers, and the
# newest version has trained every one of the 3000 events exactly once (holdout off):
# examples == 3000. Bounded to ~90 s.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/train_helpers.bash"

need_fashion_mnist train-images-idx3-ubyte.gz
need_command curl

N=3000
KILLS=22
require_broker --topic events --partitions 8 --topic eddy-snapshots --partitions 1
write_token crash-token
MODEL_DIR=$TMP/store/fmnist
write_trainer_config "$TMP/train.ini" model.hidden=512,512 train.holdout_fraction=0 \
  replay.ratio=0.95 replay.idle_steps=1000000000 \
  snapshot.every_steps=2 snapshot.keep=4 -snapshot.gate.max_regression

# The first life only ingests: it is paused as soon as its admin API answers, fills the buffer
# with the whole stream, and is killed. The later lives train those events from the newest
# version's cursor, slowly enough (a 784-512-512-10 MLP, 95% replay) that fresh training spans
# many lives, so kills land while fresh events are being trained, not only during replay.
check_rc 0 "produce $N Fashion-MNIST images" -- "$EDDY" produce -b "$BOOT" -t events \
  --data fashion-mnist:train --limit $N --key id
CHECKS=$((CHECKS + 1))
if start_trainer "$TMP/life0.err" -c "$TMP/train.ini" && [[ $(post /v1/pause) == 200 ]] &&
  wait_status 60 "s['buffer']['next_seq'] == $N"; then
  pass "first life: $N events ingested (trained before the pause: $($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["examples"])' "$TMP/status.json"))"
else
  fail "first life did not ingest $N events"
  tail -n 20 "$TMP/life0.err" >&2
  finish
  exit 1
fi

mid_publish=0
mid_delete=0
bad=0
back=0
prev_step=-1
prev_ex=-1
restored=0
mid_fresh=0
prev_fresh_ex=0
for ((k = 1; k <= KILLS; k++)); do
  kill -KILL "$TRAIN_PID"
  wait "$TRAIN_PID" 2>/dev/null
  compgen -G "$MODEL_DIR/.tmp-v*" >/dev/null && mid_publish=$((mid_publish + 1))
  compgen -G "$MODEL_DIR/.del-*" >/dev/null && mid_delete=$((mid_delete + 1))
  nv=$(verify_all "$MODEL_DIR")
  cur=$(cat "$MODEL_DIR/CURRENT" 2>/dev/null)
  # (before the first publish the store is empty: no versions, no CURRENT)
  if [[ $nv -lt 0 || ($nv -gt 0 && (-z $cur || ! -d $MODEL_DIR/$cur)) ]]; then
    bad=$((bad + 1))
    echo "after kill $k: $nv versions verified, CURRENT '$cur'" >&2
  fi
  if ! start_trainer "$TMP/life$k.err" -c "$TMP/train.ini"; then
    fail "restart $k failed"
    tail -n 20 "$TMP/life$k.err" >&2
    break
  fi
  line=$(grep -m1 'restored v' "$TMP/life$k.err")
  step=$(sed -n 's/.*: step \([0-9]*\), \([0-9]*\) examples.*/\1/p' <<<"$line")
  ex=$(sed -n 's/.*: step \([0-9]*\), \([0-9]*\) examples.*/\2/p' <<<"$line")
  if [[ -n $step ]]; then
    restored=$((restored + 1))
    if ((step < prev_step || ex < prev_ex)); then
      back=$((back + 1))
      echo "restart $k: step $step examples $ex after step $prev_step examples $prev_ex" >&2
    fi
    prev_step=$step
    prev_ex=$ex
    echo "life $k: restored step $step, $ex examples"
    ((ex > prev_fresh_ex && ex < N)) && mid_fresh=$((mid_fresh + 1))
    prev_fresh_ex=$ex
  fi
  # Live for 0.2 .. 1.2 s (startup included), then the next kill.
  sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", 0.2 + 1.0 * r / 32767 }')"
done
CHECKS=$((CHECKS + 1))
if [[ $bad -eq 0 ]]; then pass "after each of $KILLS kills: every version verifies, CURRENT names one"; else fail "$bad kills left a bad store"; fi
CHECKS=$((CHECKS + 1))
if [[ $restored -ge $((KILLS - 1)) && $back -eq 0 ]]; then
  pass "$restored restarts resumed the newest version; step and examples never went back (last: step $prev_step, $prev_ex examples)"
else
  fail "restarts: $restored restored, $back went back"
fi
echo "kills during a publish (a .tmp-v* left): $mid_publish; during a deletion (.del-*): $mid_delete"
CHECKS=$((CHECKS + 1))
if [[ $mid_publish -ge 1 ]]; then pass "at least one kill hit a publish in progress ($mid_publish)"; else fail "no kill hit a publish"; fi
CHECKS=$((CHECKS + 1))
if [[ $mid_fresh -ge 3 ]]; then pass "$mid_fresh lives were killed while fresh events were being trained"; else fail "only $mid_fresh lives killed during fresh training"; fi

# Final life: runs to the end of the stream; the newest version has trained each event once.
CHECKS=$((CHECKS + 1))
if wait_status 60 "s['buffer']['cursor'] == $N" && [[ $(post /v1/snapshot) == 200 ]]; then
  pass "final life caught up and published"
else
  fail "final life"
  cat "$TMP/status.json" "$TMP/post.json" >&2
fi
check_trainer_stops TERM "final life"
V=$(ls "$MODEL_DIR" | grep '^v[0-9]' | sort | tail -n 1 | sed 's/^v0*//')
leftovers=$(find "$MODEL_DIR" -maxdepth 1 \( -name '.tmp-*' -o -name '.del-*' \) | wc -l)
CHECKS=$((CHECKS + 1))
if [[ $leftovers -eq 0 ]]; then pass "no .tmp-*/.del-* leftovers after a writer opened and stopped"; else fail "$leftovers leftovers"; fi
nv=$(verify_all "$MODEL_DIR")
CHECKS=$((CHECKS + 1))
if [[ $nv -ge 1 ]]; then pass "all $nv remaining versions verify"; else fail "final verify"; fi
CHECKS=$((CHECKS + 1))
ex=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["examples"])' "$MODEL_DIR/v$(printf %06d "$V")/manifest.json" 2>/dev/null)
if [[ $ex == "$N" ]]; then pass "v$V: examples == $N (every event trained once relative to the restored state)"; else
  fail "v$V: examples $ex, want $N"
fi
check_sanitizers
finish
