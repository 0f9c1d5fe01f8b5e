#!/usr/bin/env bash
# Trainer ranks under `mpirun -np 2` (DESIGN "Scaling past one machine"). A fixed split: partition
# 0 of topic split holds events A, partition 1 events B (256 each, with sparse features, so that
# the ranks touch different embedding rows). Two ranks, batch 32, train on it; one rank trains on
# topic union, whose one partition holds the same events as A[0:32] B[0:32] A[32:64] ..., with batch
# 32 x 2 micro-batches, so every step sees the same examples. Checks: `eddy ingest` ranks fill
# <buffer.path>/rank-<r> and `eddy buffer inspect` shows each rank's share; a rank that owns no
# partition is caught up at once; the log prefix and /v1/status name the ranks and show each one's
# ingest and lag; every version's manifest records both ranks' cursors and positions, with equal
# weight checksums; a replica follows the ranks' versions; the two ranks' final weights equal the one
# rank's within float tolerance, far closer than training moved them; SIGTERM stops every rank.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/train_helpers.bash"
source "$(dirname "$0")/ranks_helpers.bash"

need_mpi
need_command kcat
need_command curl

N=256 # events per partition of split
require_broker --topic split --partitions 2 --topic union --partitions 1 --topic eddy-snapshots --partitions 1 \
  --topic union-snapshots --partitions 1
write_token ranks-token

# Events: 8 dense features, a user and an item (sparse), 3 classes that depend on both.
$PY - "$TMP" $N <<'PYEOF'
import json, random, sys
tmp, n = sys.argv[1], int(sys.argv[2])
def events(tag, seed):
    r = random.Random(seed)
    out = []
    for i in range(n):
        d = [round(r.uniform(-1, 1), 4) for _ in range(8)]
        user, item = r.randrange(40), r.randrange(25)
        label = (int(d[0] > 0) + int(d[1] > 0.3) + user % 2) % 3
        out.append(json.dumps({"id": f"{tag}-{i}", "label": label, "dense": d,
                               "sparse": {"user": f"u{user}", "item": f"i{item}"}}))
    return out
a, b = events("a", 1), events("b", 2)
open(f"{tmp}/a.jsonl", "w").write("\n".join(a) + "\n")
open(f"{tmp}/b.jsonl", "w").write("\n".join(b) + "\n")
u = []
for k in range(0, n, 32):
    u += a[k:k + 32] + b[k:k + 32]
open(f"{tmp}/union.jsonl", "w").write("\n".join(u) + "\n")
PYEOF
produce_split split

common=(model.name=syn model.dense_dim=8 model.embed_dim=4 model.hash_bits=10 model.hidden=16 model.classes=3
  train.optimizer=adam train.lr=0.01 train.batch_size=32 train.holdout_fraction=0 replay.ratio=0
  snapshot.every_seconds=0)
write_trainer_config "$TMP/split.ini" "${common[@]}" stream.topic=split snapshot.every_steps=2 \
  buffer.path="$TMP/split-buffer" snapshot.store="$TMP/split-store"
write_trainer_config "$TMP/union.ini" "${common[@]}" stream.topic=union train.accum_steps=2 snapshot.every_steps=0 \
  buffer.path="$TMP/union-buffer" snapshot.store="$TMP/union-store" snapshot.topic=union-snapshots

# Ingest by rank: rank r stores partition r in its own buffer; the shares show in buffer inspect.
check_rc 0 "mpirun -np 2 eddy ingest --until-caught-up (split)" -- \
  timeout 60 "${MPIRUN[@]}" -np 2 "$EDDY" ingest -c "$TMP/split.ini" --until-caught-up
check_grep "$TMP/err" 'eddy[ingest] rank 1/2 (local 1): rank 1 of 2: assigned 1 partition of split (2 in all): [1]' \
  "the log prefix names the rank; rank 1 reads partition 1"
check_rc 0 "buffer inspect --json of the ranks' buffers" -- "$EDDY" buffer inspect --path "$TMP/split-buffer" --json
check_py "each rank's share: $N events, its own partition" \
  "j['events'] == 2 * $N and [(r['rank'], r['events'], r['share']) for r in j['ranks']] == [(0, $N, 0.5), (1, $N, 0.5)] and sorted((o['rank'], o['partition'], o['next_offset']) for o in j['offsets']) == [(0, 0, $N), (1, 1, $N)]"
check_rc 0 "buffer inspect (text)" -- "$EDDY" buffer inspect --path "$TMP/split-buffer"
check_grep "$TMP/out" "buffers of 2 ranks under" "text: the ranks' buffers"
check_grep "$TMP/out" "total           $((2 * N))  100.0%" "text: the total"
# More ranks than partitions: rank 1 owns none of union's one partition and is caught up at once.
check_rc 0 "mpirun -np 2 eddy ingest --until-caught-up (1 partition, 2 ranks)" -- \
  timeout 60 "${MPIRUN[@]}" -np 2 "$EDDY" ingest -c "$TMP/union.ini" --set buffer.path="$TMP/union-2" \
  --set kafka.group.id=spare --until-caught-up
check_grep "$TMP/err" "rank 1 of 2 owns none of the 1 partitions of union" "the rank without a partition says so"
check_rc 0 "eddy ingest --until-caught-up (union, one rank)" -- \
  timeout 60 "$EDDY" ingest -c "$TMP/union.ini" --until-caught-up

# Two ranks train the split; a replica follows rank 0's announcements.
require_ranks "$TMP/ranks.err" 2 -c "$TMP/split.ini"
check_grep "$TMP/ranks.err" "eddy[ranks] rank 1/2 (local 1): rank 1 of 2 (local rank 1): buffer $TMP/split-buffer/rank-1" \
  "rank 1 trains from its own buffer"
start_serve replica -c "$TMP/split.ini" --set http.bind=127.0.0.1:0 --set serve.trainer_url="http://127.0.0.1:$PORT" \
  --set serve.poll_seconds=60 --set serve.heartbeat_seconds=1
check_status 60 "s['examples'] == $((2 * N)) and s['step'] == $((N / 32))" "2 ranks trained all $((2 * N)) events in $((N / 32)) steps"
check_status 10 "s['rank'] == {'rank': 0, 'ranks': 2, 'local_rank': 0} and [(r['rank'], r['ingest']['assigned'], r['ingest']['lag'], r['buffer']['untrained'], r['examples']) for r in s['ranks']] == [(0, 1, 0, 0, $N), (1, 1, 0, 0, $N)]" \
  "status: this rank, and every rank's ingest, lag and share of the examples"
CHECKS=$((CHECKS + 1))
if [[ $(post /v1/snapshot) == 200 ]]; then pass "snapshot of the final weights"; else fail "POST /v1/snapshot"; cat "$TMP/post.json" >&2; fi
V2=$(current_version)
# replica_serves V WHAT: the replica serves version V within 20 s (a check).
replica_serves() {
  CHECKS=$((CHECKS + 1))
  local deadline=$((SECONDS + 20))
  until [[ $(curl -s "http://127.0.0.1:$REPLICA_PORT/healthz") == *"\"version\":$1}"* ]] || ((SECONDS > deadline)); do
    sleep 0.2
  done
  if ((SECONDS <= deadline)); then pass "$2"; else fail "$2"; tail -n 5 "$TMP/replica.err" >&2; fi
}
replica_serves "$V2" "the replica serves the ranks' v$V2"
# One more version while the replica follows: it moves on the announcement rank 0 sends.
CHECKS=$((CHECKS + 1))
if [[ $(post /v1/snapshot) == 200 ]]; then pass "another snapshot"; else fail "POST /v1/snapshot (2)"; fi
V3=$(current_version)
replica_serves "$V3" "the replica serves the ranks' next version v$V3"
check_grep "$TMP/replica.err" "serving v$(printf %06d "$V3") (was v$(printf %06d "$V2"); announced" \
  "the replica followed rank 0's announcement"
check_ranks_stop "$TMP/ranks.err" 2 "two ranks"
kill -TERM "$REPLICA_PID" 2>/dev/null

# Every version: both ranks' positions, equal weight checksums.
check_rc 0 "manifests of every version" -- $PY - "$TMP/split-store/syn" $N <<'PYEOF'
import glob, json, sys
n = int(sys.argv[2])
bad = []
vs = sorted(glob.glob(sys.argv[1] + "/v*/manifest.json"))
for f in vs:
    m = json.load(open(f))
    r = m["ranks"]
    sums = {e["weights_xxh3"] for e in r}
    if len(r) != 2 or len(sums) != 1 or None in sums:
        bad.append(f"{f}: {len(r)} ranks, checksums {sums}")
    if [e["rank"] for e in r] != [0, 1] or [[o["partition"] for o in e["trained_offsets"]] for e in r] != [[0], [1]]:
        bad.append(f"{f}: ranks {r}")
    if sum(e["examples"] for e in r) != m["examples"]:
        bad.append(f"{f}: rank examples {[e['examples'] for e in r]} vs {m['examples']}")
last = json.load(open(vs[-1]))
if [(e["cursor"], e["trained_offsets"][0]["next_offset"]) for e in last["ranks"]] != [(n, n), (n, n)]:
    bad.append(f"last: {last['ranks']}")
print(f"{len(vs)} versions checked")
for b in bad:
    print(b, file=sys.stderr)
sys.exit(1 if bad or len(vs) < 2 else 0)
PYEOF

# One rank on the union, same examples per step.
require_trainer "$TMP/one.err" -c "$TMP/union.ini"
check_status 60 "s['examples'] == $((2 * N)) and s['step'] == $((N / 32))" "1 rank trained the union in $((N / 32)) steps"
CHECKS=$((CHECKS + 1))
if [[ $(post /v1/snapshot) == 200 ]]; then pass "snapshot of the one rank"; else fail "POST /v1/snapshot (one rank)"; fi
V1=$(current_version)
check_trainer_stops TERM "one rank"
check_rc 0 "2 ranks on the split == 1 rank on the union (float tolerance), far from the first version" -- \
  $PY - "$TMP/split-store/syn/v$(printf %06d "$V3")/weights.safetensors" \
  "$TMP/union-store/syn/v$(printf %06d "$V1")/weights.safetensors" "$TMP/split-store/syn/v000001/weights.safetensors" <<'PYEOF'
import array, json, struct, sys
def load(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    out = {}
    for k, v in head.items():
        if k == "__metadata__":
            continue
        a = array.array("f")
        a.frombytes(raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])
        out[k] = a
    return out
two, one, first = (load(p) for p in sys.argv[1:4])
worst = moved = 0.0
for k in two:
    for x, y, z in zip(two[k], one[k], first[k]):
        worst = max(worst, abs(x - y) / (abs(y) + 1e-3))
        moved = max(moved, abs(x - z) / (abs(z) + 1e-3))
print(f"worst relative difference {worst:.3g}; trained since v1: {moved:.3g}; tensors {sorted(two)}")
sys.exit(0 if sorted(two) == sorted(one) and "emb.weight" in two and worst < 1e-4 and moved > 100 * worst + 1e-3 else 1)
PYEOF
cat "$TMP/out"
check_sanitizers
finish
