#!/usr/bin/env bash
# The operations assets in ops/ are valid and name real things: promtool checks the Prometheus
# config and alert rules and runs their unit tests (alerts_test.yml); the Grafana dashboard has a
# datasource variable that every panel and query uses; every metric an alert or a panel queries
# is exposed by a live `eddy train` (broker + trainer + a few events) and by a live `eddy serve`
# (or, while that command does not exist, is in the replica metric contract listed below); each
# alert's runbook link is a section of docs/operations.md; the systemd units pass
# `systemd-analyze verify` (the ranks' unit too, where mpirun is installed); the Slurm batch script
# parses; and the units' reason for leaving MemoryDenyWriteExecute off still holds.
source "$(dirname "$0")/lib.bash"
source "$(dirname "$0")/train_helpers.bash"

OPS=$SRC/ops
need_command curl
$PY -c 'import yaml' 2>/dev/null || skip "python3-yaml not installed (ops/setup-deps installs it)"
HAVE_PROMTOOL=1
command -v promtool >/dev/null || { HAVE_PROMTOOL=0; echo "skip: promtool not installed (Debian package prometheus): no promtool checks"; }

# Replica metric families of the `eddy serve` contract, used until the command exists:
# name:type (histograms expose _bucket, _sum and _count).
REPLICA_CONTRACT="eddy_replica_model_version:gauge eddy_replica_swaps_total:counter
eddy_replica_refusals_total:counter eddy_replica_last_swap_timestamp_seconds:gauge
eddy_replica_announcements_total:counter eddy_replica_heartbeat_errors_total:counter
eddy_predict_requests_total:counter eddy_predict_instances_total:counter
eddy_predict_latency_seconds:histogram eddy_event_to_serve_seconds:histogram
eddy_http_requests_total:counter eddy_http_request_duration_seconds:histogram"

# ---- Prometheus: config, rules, rule unit tests ----
if [[ $HAVE_PROMTOOL == 1 ]]; then
  check_rc 0 "promtool check config ops/prometheus/prometheus.yml" -- promtool check config "$OPS/prometheus/prometheus.yml"
  check_grep "$TMP/out" "1 rule files found" "prometheus.yml loads alerts.yml"
  check_rc 0 "promtool check rules ops/prometheus/alerts.yml" -- promtool check rules "$OPS/prometheus/alerts.yml"
  check_rc 0 "promtool test rules ops/prometheus/alerts_test.yml" -- promtool test rules "$OPS/prometheus/alerts_test.yml"
  check_grep "$TMP/out" "SUCCESS" "alert unit tests pass"
fi

# ---- Alerts: labels, annotations, runbook sections; every alert has unit tests ----
CHECKS=$((CHECKS + 1))
if $PY - "$OPS/prometheus/alerts.yml" "$OPS/prometheus/alerts_test.yml" "$SRC/docs/operations.md" <<'PYEOF'; then pass "every alert has for, severity, summary, description, a runbook section and firing + quiet tests"; else fail "alert structure"; fi
import re, sys, yaml
rules = [r for g in yaml.safe_load(open(sys.argv[1]))["groups"] for r in g["rules"] if "alert" in r]
tests = yaml.safe_load(open(sys.argv[2]))["tests"]
doc = open(sys.argv[3]).read()
# GitHub's heading anchors: lower case, punctuation other than - and _ dropped, spaces to -.
anchors = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
           for h in re.findall(r"^#+ (.*)$", doc, re.M)}
fired, quiet = set(), set()
for t in tests:
    for a in t["alert_rule_test"]:
        (fired if a.get("exp_alerts") else quiet).add(a["alertname"])
bad = []
for r in rules:
    n, ann = r["alert"], r.get("annotations", {})
    if "for" not in r: bad.append(n + ": no for")
    if r.get("labels", {}).get("severity") not in ("warning", "critical"): bad.append(n + ": severity")
    for k in ("summary", "description", "runbook_url"):
        if not ann.get(k): bad.append(n + ": no " + k)
    m = re.fullmatch(r"docs/operations\.md#([\w-]+)", ann.get("runbook_url", ""))
    if not m or m.group(1) not in anchors: bad.append(n + ": runbook %r is not a docs/operations.md section" % ann.get("runbook_url"))
    if n not in fired: bad.append(n + ": no test where it fires")
    if n not in quiet: bad.append(n + ": no test where it stays quiet")
print("%d alerts: %s" % (len(rules), " ".join(r["alert"] for r in rules)))
for b in bad: print("  " + b, file=sys.stderr)
sys.exit(1 if bad or len(rules) < 8 else 0)
PYEOF

# ---- Grafana dashboard structure ----
CHECKS=$((CHECKS + 1))
if $PY - "$OPS/grafana/eddy-dashboard.json" "$TMP/dash_exprs.txt" <<'PYEOF'; then pass "dashboard: datasource variable, every panel and query uses it, the built-in page's panels are there"; else fail "dashboard structure"; fi
import json, sys
d = json.load(open(sys.argv[1]))
bad = []
if not isinstance(d.get("schemaVersion"), int) or d["schemaVersion"] < 36: bad.append("schemaVersion %r" % d.get("schemaVersion"))
vars_ = {v["name"]: v for v in d["templating"]["list"]}
ds = vars_.get("datasource")
if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus": bad.append("no datasource variable of type datasource, query prometheus")
for v in d["templating"]["list"]:
    if v["type"] == "query" and v.get("datasource", {}).get("uid") != "${datasource}": bad.append("variable %s: datasource" % v["name"])
panels = []
for p in d["panels"]:
    panels.append(p)
    panels.extend(p.get("panels", []))  # collapsed rows hold their panels
exprs, ids = [], set()
for p in panels:
    if p["id"] in ids: bad.append("duplicate panel id %d" % p["id"])
    ids.add(p["id"])
    if p["type"] == "row": continue
    if p.get("datasource", {}).get("uid") != "${datasource}": bad.append("panel %r: datasource %r" % (p["title"], p.get("datasource")))
    if not p.get("targets"): bad.append("panel %r: no queries" % p["title"])
    for t in p.get("targets", []):
        if t.get("datasource", {}).get("uid") != "${datasource}": bad.append("panel %r query %s: datasource" % (p["title"], t.get("refId")))
        if not t.get("expr"): bad.append("panel %r query %s: no expr" % (p["title"], t.get("refId")))
        exprs.append(t.get("expr", ""))
text = "\n".join(exprs)
# The panels of the built-in page, by the metric each one shows.
for m in ("eddy_prequential_logloss", "eddy_prequential_accuracy", "eddy_ingest_events_total", "eddy_kafka_consumer_lag",
          "eddy_buffer_events", "eddy_train_loss_scale", "eddy_train_skipped_steps_total", "eddy_event_to_serve_seconds_bucket",
          "eddy_snapshot_version", "eddy_snapshot_published_total", "eddy_snapshot_rejected_total", "eddy_replica_model_version",
          "eddy_predict_requests_total", "eddy_predict_latency_seconds_bucket"):
    if m not in text: bad.append("no panel queries " + m)
for q in ("0.5", "0.99"):
    if "histogram_quantile(%s, sum by (le) (rate(eddy_predict_latency_seconds_bucket" % q not in text: bad.append("no predict latency p" + q)
open(sys.argv[2], "w").write(text + "\n")
print("%d panels, %d queries" % (len([p for p in panels if p["type"] != "row"]), len(exprs)))
for b in bad: print("  " + b, file=sys.stderr)
sys.exit(1 if bad else 0)
PYEOF
if [[ $HAVE_PROMTOOL == 1 ]]; then
  # Every panel query, with Grafana's variables replaced, must parse as PromQL: promtool parses
  # them as recording rules.
  $PY - "$TMP/dash_exprs.txt" "$TMP/dash_rules.yml" <<'PYEOF'
import json, sys
exprs = [e for e in open(sys.argv[1]).read().split("\n") if e]
rules = [{"record": "dashboard:query_%d" % i,
          "expr": e.replace("$__rate_interval", "5m").replace("$trainer", ".+").replace("$replica", ".+")}
         for i, e in enumerate(exprs)]
json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[2], "w"))
PYEOF
  check_rc 0 "every dashboard query parses as PromQL" -- promtool check rules "$TMP/dash_rules.yml"
fi

# ---- systemd units ----
if command -v systemd-analyze >/dev/null; then
  mkdir -p "$TMP/units"
  for u in eddy-trainer.service eddy-replica@.service eddy-trainer-ranks.service; do
    # The units name /usr/local/bin/eddy, which is not installed here; verify copies that name the
    # binary under test (systemd-analyze verify checks that ExecStart is executable).
    sed "s#/usr/local/bin/eddy#$(realpath "$EDDY")#" "$OPS/systemd/$u" >"$TMP/units/$u"
  done
  units=(eddy-trainer.service eddy-replica@a.service)
  # The ranks' unit runs mpirun (openmpi-bin), which systemd-analyze needs to find.
  if [[ -x /usr/bin/mpirun ]]; then units+=(eddy-trainer-ranks.service); else
    echo "skip: /usr/bin/mpirun not installed (openmpi-bin): eddy-trainer-ranks.service not verified"
  fi
  for u in "${units[@]}"; do
    CHECKS=$((CHECKS + 1))
    if systemd-analyze verify "$TMP/units/$u" >"$TMP/verify.out" 2>&1 && ! [[ -s $TMP/verify.out ]]; then
      pass "systemd-analyze verify $u: no errors, no warnings"
    else
      fail "systemd-analyze verify $u"
      sed 's/^/  | /' "$TMP/verify.out" >&2
    fi
  done
else
  echo "skip: systemd-analyze not installed (package systemd): units not verified"
fi
CHECKS=$((CHECKS + 1))
if $PY - "$OPS/systemd" <<'PYEOF'; then pass "units: user eddy, sandboxing options, restart and stop settings; MemoryDenyWriteExecute off"; else fail "unit settings"; fi
import os, re, sys
want = {"User": "eddy", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "PrivateDevices": "yes", "SystemCallFilter": "@system-service", "Restart": "on-failure", "KillSignal": "SIGTERM"}
bad = []
for name, execstart in (("eddy-trainer.service", "/usr/local/bin/eddy train -c /etc/eddy/trainer.ini"),
                        ("eddy-replica@.service", "/usr/local/bin/eddy serve -c /etc/eddy/replica-%i.ini")):
    kv = {}
    for line in open(os.path.join(sys.argv[1], name)):
        m = re.match(r"^(\w+)=(.*)$", line.strip())
        if m: kv.setdefault(m.group(1), []).append(m.group(2))
    for k, v in want.items():
        if kv.get(k) != [v]: bad.append("%s: %s=%s, want %s" % (name, k, kv.get(k), v))
    for k in ("RestrictAddressFamilies", "LimitNOFILE", "TimeoutStopSec"):
        if k not in kv: bad.append("%s: no %s" % (name, k))
    if kv.get("ExecStart") != [execstart]: bad.append("%s: ExecStart %s" % (name, kv.get("ExecStart")))
    if "MemoryDenyWriteExecute" in kv: bad.append("%s: sets MemoryDenyWriteExecute (oneDNN's JIT needs W+X pages)" % name)
    if name == "eddy-trainer.service" and "/var/lib/eddy" not in kv.get("ReadWritePaths", []): bad.append(name + ": ReadWritePaths")
for b in bad: print("  " + b, file=sys.stderr)
sys.exit(1 if bad else 0)
PYEOF

# ---- the Slurm batch script of trainer ranks: valid bash, srun with fail-stop, a restart loop ----
check_rc 0 "ops/slurm/eddy-train.sbatch is valid bash" -- bash -n "$OPS/slurm/eddy-train.sbatch"
check_grep "$OPS/slurm/eddy-train.sbatch" "srun --mpi=pmix --kill-on-bad-exit=1" "the batch script ends a step when a rank dies"
check_grep "$OPS/slurm/eddy-train.sbatch" "eddy train -c" "the batch script runs eddy train"

# ---- oneDNN's JIT still needs writable+executable memory (why the units leave MDWE off) ----
# PR_SET_MDWE (Linux 6.3+) applies to a process what MemoryDenyWriteExecute=yes applies to a
# unit. If `eddy learn` ever runs under it, the units could turn MemoryDenyWriteExecute on.
# Under ASan the child runs with detect_leaks=0: oneDNN leaks the kernel of the primitive it
# failed to create (brgemm_kernel_create), and LeakSanitizer would turn the exit status 1 into
# an abort (ops/test sets abort_on_error=1). Every other sanitizer check stays on.
$PY -c '
import json, random
random.seed(7)
for i in range(256):
    x = [random.random() for _ in range(4)]
    print(json.dumps({"id": "m%d" % i, "label": int(x[0] > 0.5), "dense": x}))' >"$TMP/mdwe.jsonl"
printf '[model]\nname = mdwe\ndense_dim = 4\nembed_dim = 0\nhidden = 8\n[train]\nbatch_size = 16\n' >"$TMP/mdwe.ini"
$PY - "$EDDY" "$TMP/mdwe.ini" "$TMP/mdwe.jsonl" >"$TMP/mdwe.out" 2>&1 <<'PYEOF'
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
pid = os.fork()
if pid == 0:
    if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        os._exit(77)
    os.environ["ASAN_OPTIONS"] = os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
    os.execv(sys.argv[1], [sys.argv[1], "learn", "-c", sys.argv[2], "--data", sys.argv[3], "--json"])
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
PYEOF
rc=$?
if [[ $rc == 77 ]]; then
  echo "skip: this kernel has no PR_SET_MDWE (Linux 6.3+): MemoryDenyWriteExecute claim not re-checked"
else
  CHECKS=$((CHECKS + 1))
  if [[ $rc == 1 ]] && grep -q "oneDNN.*failed" "$TMP/mdwe.out"; then
    pass "under MemoryDenyWriteExecute (PR_SET_MDWE) eddy learn fails in oneDNN, as the units say"
  else
    fail "eddy learn under PR_SET_MDWE exited $rc without a oneDNN failure: oneDNN may no longer need W+X pages; revisit MemoryDenyWriteExecute in ops/systemd"
    tail -n 5 "$TMP/mdwe.out" >&2
  fi
fi

# ---- live metrics: trainer ----
N=400
require_broker --topic events --partitions 2 --topic eddy-snapshots --partitions 1
$PY -c '
import json, random, time
random.seed(3)
now = int(time.time() * 1000)
for i in range('$N'):
    x = [random.random() for _ in range(4)]
    print(json.dumps({"id": "o%d" % i, "ts": now, "label": int(x[0] + x[1] > 1), "dense": x}))
print("{\"label\": \"not a number\"}")' >"$TMP/events.jsonl"
check_rc 0 "produce $N events and one bad one" -- "$EDDY" produce -b "$BOOT" -t events --data "$TMP/events.jsonl" --key id
write_token ops-e2e-token
write_trainer_config "$TMP/train.ini" model.name=ops model.dense_dim=4 model.hidden=8 model.head=logistic \
  -model.classes -train.optimizer train.lr=0.05 -replay.ratio snapshot.every_steps=5 -snapshot.keep \
  snapshot.topic=eddy-snapshots snapshot.gate.max_regression=1000 snapshot.gate.min_events=20
require_trainer "$TMP/train.err" -c "$TMP/train.ini"
check_status 30 "s['buffer']['cursor'] == $N" "$N events ingested and trained"
code=$(post /v1/snapshot '{"timeout_ms": 20000}')
CHECKS=$((CHECKS + 1))
if [[ $code == 200 ]]; then pass "POST /v1/snapshot (a version exists for replicas)"; else fail "POST /v1/snapshot: HTTP $code $(cat "$TMP/post.json")"; fi
curl -s -o /dev/null "http://127.0.0.1:$PORT/no-such-route"
curl -sf --max-time 5 "http://127.0.0.1:$PORT/metrics" >"$TMP/trainer.metrics"
check_grep "$TMP/trainer.metrics" 'eddy_ingest_events_total{result="invalid"} 1' "the bad event was counted (labelled series present)"

# ---- live metrics: replica, or the contract ----
if "$EDDY" serve --help >/dev/null 2>&1; then
  cat >"$TMP/serve.ini" <<EOF
[model]
name = ops
[snapshot]
topic = eddy-snapshots
[kafka]
bootstrap.servers = $BOOT
[serve]
trainer_url = http://127.0.0.1:$PORT
poll_seconds = 1
heartbeat_seconds = 1
[http]
bind = 127.0.0.1:0
token_file = $TMP/token
EOF
  start_serve serve -c "$TMP/serve.ini"
  SERVE_PID=$REPLICA_PID
  RPORT=$REPLICA_PORT
  CHECKS=$((CHECKS + 1))
  if [[ -n $RPORT ]]; then pass "eddy serve is up (port $RPORT)"; else fail "eddy serve did not come up"; tail -n 20 "$TMP/serve.err" >&2; fi
  CHECKS=$((CHECKS + 1))
  ok=0
  for _ in $(seq 150); do
    [[ -n $RPORT ]] && curl -sf --max-time 2 "http://127.0.0.1:$RPORT/healthz" >/dev/null && { ok=1; break; }
    sleep 0.1
  done
  if [[ $ok == 1 ]]; then pass "replica serves a version (/healthz 200)"; else fail "replica never became healthy"; tail -n 20 "$TMP/serve.err" >&2; fi
  code=$(curl -s -o "$TMP/predict.json" -w '%{http_code}' --max-time 5 -X POST -H 'Content-Type: application/json' \
    --data '{"id": "p1", "label": 0, "dense": [0.1, 0.2, 0.3, 0.4]}' "http://127.0.0.1:$RPORT/v1/predict")
  CHECKS=$((CHECKS + 1))
  if [[ $code == 200 ]]; then pass "POST /v1/predict"; else fail "POST /v1/predict: HTTP $code $(cat "$TMP/predict.json")"; fi
  curl -sf --max-time 5 "http://127.0.0.1:$RPORT/metrics" >"$TMP/replica.metrics"
  REPLICA_SOURCE="a live eddy serve"
  # The contract list above is what this test falls back on: keep it true.
  missing=()
  for e in $REPLICA_CONTRACT; do
    grep -q "^# TYPE ${e%%:*} ${e##*:}\$" "$TMP/replica.metrics" || missing+=("${e}")
  done
  CHECKS=$((CHECKS + 1))
  if [[ ${#missing[@]} -eq 0 ]]; then pass "the replica exposes every metric of the contract list"; else fail "replica lacks ${missing[*]}"; fi
  kill -TERM "$SERVE_PID"
  for _ in $(seq 200); do kill -0 "$SERVE_PID" 2>/dev/null || break; sleep 0.05; done
  CHECKS=$((CHECKS + 1))
  if kill -0 "$SERVE_PID" 2>/dev/null; then fail "eddy serve still running 10 s after SIGTERM (the unit's KillSignal)"; else
    wait "$SERVE_PID" 2>/dev/null
    rc=$?
    if [[ $rc == 0 ]]; then pass "eddy serve stops on SIGTERM, exit 0"; else fail "eddy serve: exit $rc after SIGTERM"; fi
  fi
else
  echo "note: eddy serve does not exist yet: replica metric names are checked against the contract list in this test"
  : >"$TMP/replica.metrics"
  for e in $REPLICA_CONTRACT; do
    n=${e%%:*}
    echo "# TYPE $n ${e##*:}" >>"$TMP/replica.metrics"
  done
  REPLICA_SOURCE="the eddy serve contract"
fi
if [[ $HAVE_PROMTOOL == 1 && -s $TMP/replica.metrics && $REPLICA_SOURCE == "a live eddy serve" ]]; then
  check_rc 0 "promtool check metrics (replica)" -- sh -c "promtool check metrics <'$TMP/replica.metrics'"
fi

# ---- every metric an alert or a panel queries exists ----
CHECKS=$((CHECKS + 1))
if $PY - "$TMP/trainer.metrics" "$TMP/replica.metrics" "$OPS/prometheus/alerts.yml" "$TMP/dash_exprs.txt" <<'PYEOF'; then pass "every metric in alerts.yml and the dashboard exists (trainer: live; replica: $REPLICA_SOURCE)"; else fail "unknown metric names"; fi
import re, sys, yaml
def exposed(path):
    names = set()
    for line in open(path):
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            names.add(m.group(1))
            if m.group(2) == "histogram":
                names.update(m.group(1) + s for s in ("_bucket", "_sum", "_count"))
        elif line.strip() and not line.startswith("#"):
            names.add(re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group(0))
    return names
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "inf", "nan"}
def metric_names(expr):
    e = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    out = set()
    for m in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", e):
        if m.group(0) in KEYWORDS or e[m.end():].lstrip().startswith("("):
            continue
        out.add(m.group(0))
    return out
trainer, replica = exposed(sys.argv[1]), exposed(sys.argv[2])
known = trainer | replica | {"up"}
# The checker itself must catch an unknown name, or this test proves nothing.
assert metric_names('sum by (job) (rate(eddy_no_such_metric{a="b"}[5m])) > 1e3') == {"eddy_no_such_metric"}
assert metric_names('histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m]))) and on () y offset 30m') == {"x_bucket", "y"}
exprs = [("alert " + r["alert"], r["expr"]) for g in yaml.safe_load(open(sys.argv[3]))["groups"] for r in g["rules"]]
exprs += [("dashboard", e) for e in open(sys.argv[4]).read().split("\n") if e]
bad, used = [], set()
for where, e in exprs:
    names = metric_names(e)
    if not names: bad.append("%s: no metric in %r" % (where, e))
    used |= names
    for n in sorted(names - known): bad.append("%s: %s is not exposed" % (where, n))
print("%d expressions use %d metrics; trainer exposes %d names, replica %d" % (len(exprs), len(used), len(trainer), len(replica)))
for b in bad: print("  " + b, file=sys.stderr)
sys.exit(1 if bad else 0)
PYEOF

check_trainer_stops TERM "eddy train"
check_sanitizers
finish
