#!/usr/bin/env bash
# `eddy snapshot verify` on versions published through the store API by tests/e2e/store_publish.c
# (a real learner): good versions pass in text and --json; damaged copies (truncated, flipped byte,
# wrong recorded checksum, another spec's weights with a re-computed checksum, missing file,
# incomplete manifest, unlisted file) fail with exit 1 and name the file and the problem; usage
# errors exit 2.
source "$(dirname "$0")/lib.bash"

PUBLISH=${EDDY_STORE_PUBLISH:-$(dirname "$EDDY")/tests/store_publish}
[[ -x $PUBLISH ]] || skip "store_publish helper not built ($PUBLISH)"

check_rc 0 "eddy --help lists snapshot" -- "$EDDY" --help && check_grep "$TMP/out" "snapshot verify DIR" "help names snapshot verify"
check_rc 0 "snapshot --help" -- "$EDDY" snapshot --help && check_grep "$TMP/out" "SHA-256" "snapshot --help says what is checked"
check_rc 0 "snapshot verify --help" -- "$EDDY" snapshot verify --help
check_rc 2 "snapshot without subcommand" -- "$EDDY" snapshot
check_rc 2 "unknown snapshot subcommand" -- "$EDDY" snapshot frob && check_grep "$TMP/err" "unknown subcommand 'frob'" "unknown subcommand named"
check_rc 2 "verify without DIR" -- "$EDDY" snapshot verify && check_grep "$TMP/err" "at least one DIR" "missing DIR named"
check_rc 2 "verify with an unknown option" -- "$EDDY" snapshot verify --deep "$TMP"

# Two versions of a small model, the second with BF16 weights.
STORE=$TMP/store
CHECKS=$((CHECKS + 1))
if "$PUBLISH" "$STORE" demo 1 F32 >"$TMP/pub.out" 2>"$TMP/pub.err" &&
  "$PUBLISH" "$STORE" demo 1 BF16 >>"$TMP/pub.out" 2>>"$TMP/pub.err"; then
  pass "published two versions"
else
  fail "store_publish failed"
  cat "$TMP/pub.err" >&2
  finish
  exit 1
fi
V1=$STORE/demo/v000001
V2=$STORE/demo/v000002
CHECKS=$((CHECKS + 1))
if [[ $(cat "$STORE/demo/CURRENT") == v000002 ]]; then pass "CURRENT names v000002"; else fail "CURRENT is '$(cat "$STORE/demo/CURRENT")'"; fi

check_rc 0 "verify v000001" -- "$EDDY" snapshot verify "$V1"
check_grep "$TMP/out" "OK $V1: model demo, version 1 (no parent), status promoted" "text report names the version"
check_grep "$TMP/out" "weights.safetensors" "text report lists the weights"
check_grep "$TMP/out" "bytes  sha256 " "text report gives sizes and checksums"
check_rc 0 "verify both versions at once" -- "$EDDY" snapshot verify "$V1" "$V2/"
check_rc 0 "verify v000002 --json" -- "$EDDY" snapshot verify --json "$V2"
check_py "json ok, no problems" 'j["ok"] is True and j["problems"] == []'
check_py "manifest: version 2, parent 1, BF16 weights" 'j["manifest"]["version"] == 2 and j["manifest"]["parent"] == 1 and j["manifest"]["weights_dtype"] == "BF16"'
check_py "manifest lists both files with sizes" 'sorted(j["manifest"]["files"]) == ["state.safetensors", "weights.safetensors"] and all(f["bytes"] > 0 for f in j["manifest"]["files"].values())'
check_py "NaN metric written as null" 'j["manifest"]["metrics"]["holdout"]["mse"] is None'
# the recorded sizes are the files' sizes
CHECKS=$((CHECKS + 1))
if $PY - "$V2" <<'PYEOF'; then pass "manifest sizes and sha256 match the files"; else fail "manifest sizes or sha256 differ from the files"; fi
import hashlib, json, os, sys
d = sys.argv[1]
m = json.load(open(os.path.join(d, "manifest.json")))
for name, f in m["files"].items():
    data = open(os.path.join(d, name), "rb").read()
    assert len(data) == f["bytes"], name
    assert hashlib.sha256(data).hexdigest() == f["sha256"], name
PYEOF

# Damaged copies: each must fail with exit 1 and a message naming the file and the problem.
n=0
damaged() { # damaged NAME: copies v000002 to $TMP/bad/NAME/v000002 and prints the path
  mkdir -p "$TMP/bad/$1"
  cp -r "$V2" "$TMP/bad/$1/"
  echo "$TMP/bad/$1/v000002"
}

D=$(damaged truncated)
truncate -s -100 "$D/weights.safetensors"
check_rc 1 "truncated weights" -- "$EDDY" snapshot verify "$D"
check_grep "$TMP/out" "weights.safetensors: size" "truncation reported as a size mismatch of weights.safetensors"
check_grep "$TMP/out" "FAILED $D" "FAILED line names the folder"
check_grep "$TMP/err" "problems found" "stderr summarises"

D=$(damaged flipped)
$PY - "$D/state.safetensors" <<'PYEOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[-5] ^= 0x40
open(p, "wb").write(bytes(b))
PYEOF
check_rc 1 "flipped byte in the state" -- "$EDDY" snapshot verify "$D"
check_grep "$TMP/out" "state.safetensors: sha256" "flipped byte reported as a sha256 mismatch of state.safetensors"
check_grep "$TMP/out" "1 problem" "only the checksum sees a flipped data byte"

D=$(damaged recorded)
$PY - "$D/manifest.json" <<'PYEOF'
import json, sys
p = sys.argv[1]
m = json.load(open(p))
m["files"]["weights.safetensors"]["sha256"] = "0" * 64
open(p, "w").write(json.dumps(m, indent=1))
PYEOF
check_rc 1 "manifest records a wrong sha256" -- "$EDDY" snapshot verify "$D"
check_grep "$TMP/out" "the manifest says 0000000000" "wrong recorded checksum reported"

D=$(damaged shapes)
"$PUBLISH" --other-weights "$D/weights.safetensors" 2 2>>"$TMP/pub.err"
$PY - "$D" <<'PYEOF'
import hashlib, json, os, sys
d = sys.argv[1]
p = os.path.join(d, "manifest.json")
m = json.load(open(p))
data = open(os.path.join(d, "weights.safetensors"), "rb").read()
m["files"]["weights.safetensors"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
m["weights_dtype"] = "F32"
open(p, "w").write(json.dumps(m, indent=1))
PYEOF
check_rc 1 "weights of another spec with a re-computed checksum" -- "$EDDY" snapshot verify "$D"
check_grep "$TMP/out" "weights.safetensors: tensor mlp.0.weight has shape [9, 9], the spec wants [8, 9]" "wrong shape named with both shapes"
check_grep "$TMP/out" "differs from the manifest's spec" "spec mismatch reported"
check_rc 1 "the same with --json" -- "$EDDY" snapshot verify --json "$D"
check_py "json: not ok, shape problems in weights.safetensors" 'j["ok"] is False and any(p["file"] == "weights.safetensors" and p["error"] == "shape" for p in j["problems"])'

D=$(damaged missing)
rm "$D/state.safetensors"
check_rc 1 "missing state file" -- "$EDDY" snapshot verify "$D"
check_grep "$TMP/out" "state.safetensors: missing" "missing file named"

D=$(damaged fields)
$PY - "$D/manifest.json" <<'PYEOF'
import json, sys
p = sys.argv[1]
m = json.load(open(p))
del m["step"]
open(p, "w").write(json.dumps(m))
PYEOF
check_rc 1 "manifest without step" -- "$EDDY" snapshot verify "$D"
check_grep "$TMP/out" 'manifest.json: "step" missing' "missing manifest field named"

D=$(damaged extra)
echo hello >"$D/notes.txt"
check_rc 1 "an unlisted file" -- "$EDDY" snapshot verify "$D"
check_grep "$TMP/out" "notes.txt: not listed in the manifest" "unlisted file named"

check_rc 1 "a folder that does not exist" -- "$EDDY" snapshot verify "$TMP/nope"
check_grep "$TMP/out" "$TMP/nope" "missing folder named"
check_rc 1 "a good and a bad folder together" -- "$EDDY" snapshot verify "$V1" "$TMP/bad/missing/v000002"
check_grep "$TMP/out" "OK $V1" "the good one still reported OK"

# The originals were never touched.
check_rc 0 "originals still verify" -- "$EDDY" snapshot verify "$V1" "$V2"
finish
