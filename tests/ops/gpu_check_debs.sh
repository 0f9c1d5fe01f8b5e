#!/usr/bin/env bash
# ops/gpu-check's Debian-package fallback on this machine (CTest: cuda_gpu_check_debs, in the CUDA
# build). With EDDY_GPU_CHECK_FORCE_DEBS=1 every C library comes from the .debs of
# ops/gpu-check-debs (cached in SRC/.gpu-debs), unpacked with ar + tar (the path for images without
# dpkg-deb), as on a GPU machine that has none of them. Asserts: it builds; no header of the system's
# copies of those packages is compiled, the multiarch OpenSSL headers come from the prefix, the
# programs resolve the packages' libraries; without a GPU (CUDA_VISIBLE_DEVICES=-1)
# `ops/gpu-check --tests-only` says "no CUDA device" and exits 77, its logs in $OUT. Then a test
# program that crashes (a stand-in) gives a FAILED row with its last lines, later rows still run,
# exit 1; and missing packages fail the dependencies row, table printed. Exit 77 when the packages
# cannot be fetched (no network, no apt).
#   tests/ops/gpu_check_debs.sh SRC WORKDIR
set -uo pipefail
src=$1
work=$2
mkdir -p "$work"
fails=0
check() { # check DESCRIPTION COMMAND...: one assertion
  local what=$1
  shift
  if "$@"; then
    echo "ok: $what"
  else
    echo "FAILED: $what"
    fails=$((fails + 1))
  fi
}
has() { grep -q -E -- "$2" "$1"; }   # has FILE REGEX
lacks() { ! grep -q -E -- "$2" "$1"; }

debs=${EDDY_GPU_DEBS_CACHE:-$src/.gpu-debs}
if ! "$src/ops/gpu-check-debs" "$debs" >"$work/fetch.log" 2>&1; then
  cat "$work/fetch.log"
  echo "skipped: the Debian packages cannot be fetched into $debs (see above)"
  exit 77
fi
tail -n 1 "$work/fetch.log"

build=$work/build
out=$work/out
rm -rf "$out" && mkdir -p "$out"
rm -f "$build/tests/cuda_host" # a stand-in left by an earlier run is rebuilt
gpu_check() { # gpu_check LOG [VAR=VALUE...]: ops/gpu-check --tests-only on the forced packages
  local log=$1
  shift
  env EDDY_GPU_DEBS="$debs" EDDY_GPU_CHECK_FORCE_DEBS=1 EDDY_GPU_CHECK_UNPACK=ar EDDY_GPU_CHECK_BUILD="$build" \
    OUT="$out" CUDA_VISIBLE_DEVICES=-1 "$@" "$src/ops/gpu-check" --tests-only >"$log" 2>&1
}

echo "== ops/gpu-check --tests-only, every C library from the packages =="
gpu_check "$work/run.log"
rc=$?
sed -n '/^GPU check/,$p' "$work/run.log"
check "exit status 77 (no CUDA device), got $rc" test "$rc" -eq 77
check "says no CUDA device" has "$work/run.log" "^gpu-check: no CUDA device"
check "every library from the packages, no oneDNN" has "$work/run.log" \
  "^  dependencies +ok: cJSON debs, xxHash debs, OpenSSL debs, zlib debs, inih debs, cmocka debs, oneDNN none"
check "configure ok" has "$work/run.log" "^  configure +ok"
check "build ok, all three test programs" has "$work/run.log" \
  "^  build +ok .*: cuda_host gpu_learner gpu_data_fashion_mnist$"
check "libraries resolved into the prefix" has "$work/run.log" \
  "^  libraries +ok: all found; from the packages: libcjson.so.1 libcmocka.so.0 libcrypto.so.3 libxxhash.so.0 libz.so.1"
check "cuda_host passed" has "$work/run.log" "^  cuda_host +passed"
for t in gpu_learner gpu_nccl gpu_data_fashion_mnist; do
  check "$t: skipped, no CUDA device" has "$work/run.log" "^  $t +skipped: no CUDA device"
done
check "no FAILED row" lacks "$work/run.log" "^  [a-z_ /0-9]+ +FAILED"
for f in table.txt build.log libraries.log cuda_host.log gpu_learner.log gpu_nccl.log; do
  check "\$OUT has $f" test -s "$out/$f"
done

# The headers compiled: the prefix's, never the system's copies of the same packages.
deps=$work/headers.txt
if [[ -f "$build/.ninja_deps" ]]; then
  ninja -C "$build" -t deps >"$deps" 2>/dev/null
else
  find "$build" -name '*.d' -exec cat {} + >"$deps" 2>/dev/null
fi
# One path a line: ninja -t deps indents them; depfiles put several on a line, with " \" breaks.
sed -e 's/ \\$//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]\{1,\}/\n/g' "$deps" | grep -E '\.h$' | sort -u >"$deps.sorted"
dpkg -L libcjson-dev libxxhash-dev libssl-dev zlib1g-dev libinih-dev libcmocka-dev 2>/dev/null |
  grep -E '\.h$' | sort -u >"$work/system-headers.txt"
leaked=$(comm -12 "$deps.sorted" "$work/system-headers.txt" | head -n 5 | tr '\n' ' ')
check "headers listed in the build's dependencies" test -s "$deps.sorted"
check "no system header of the packages compiled${leaked:+ (leaked: $leaked)}" test -z "$leaked"
prefix=$build/deps
check "the multiarch OpenSSL header came from the prefix" grep -q -x -F \
  "$prefix/usr/include/x86_64-linux-gnu/openssl/opensslconf.h" "$deps.sorted"
check "cJSON's header came from the prefix" grep -q -x -F "$prefix/usr/include/cjson/cJSON.h" "$deps.sorted"
check "libz.so points into the prefix" test "$(readlink -f "$prefix/usr/lib/x86_64-linux-gnu/libz.so")" = \
  "$prefix/lib/x86_64-linux-gnu/libz.so.1.2.13"

# ar + tar unpacks the same files as dpkg-deb.
if command -v dpkg-deb >/dev/null; then
  ref=$work/dpkg-ref
  rm -rf "$ref" && mkdir -p "$ref"
  for f in "$debs"/*.deb; do dpkg-deb -x "$f" "$ref"; done
  (cd "$ref" && find . -type f -printf '%p %s\n' | sort) >"$work/files-dpkg.txt"
  (cd "$prefix" && find . -type f ! -name .unpacked -printf '%p %s\n' | sort) >"$work/files-ar.txt"
  check "ar + tar unpacked the files dpkg-deb does" cmp -s "$work/files-dpkg.txt" "$work/files-ar.txt"
  rm -rf "$ref"
fi

echo "== a test program that crashes: FAILED row with its last lines, later rows still run =="
cat >"$build/tests/cuda_host" <<'EOF'
#!/bin/sh
ulimit -c 0
echo "2026-01-01T00:00:00Z INFO eddy[learner]: a line the tail leaves out"
echo "stand-in: the last words before the crash"
kill -SEGV $$
EOF
chmod +x "$build/tests/cuda_host"
touch "$build/tests/cuda_host" # newer than its inputs: the build leaves it alone
gpu_check "$work/crash.log"
rc=$?
sed -n '/^GPU check/,$p' "$work/crash.log"
check "exit status 1 after a crash, got $rc" test "$rc" -eq 1
check "cuda_host: FAILED row with the exit status" has "$work/crash.log" "^  cuda_host +FAILED \(exit 139"
check "the FAILED row shows the log's last lines" has "$work/crash.log" "^      \| stand-in: the last words before the crash"
check "INFO lines left out of the tail" lacks "$work/crash.log" "^      \|.*a line the tail leaves out"
check "the rows after the crash still ran" has "$work/crash.log" "^  gpu_data_fashion_mnist +skipped: no CUDA device"
check "the crashed test's log reached \$OUT" has "$out/cuda_host.log" "stand-in: the last words"
rm -f "$build/tests/cuda_host"

echo "== packages missing: the dependencies row fails, the table is still printed =="
mkdir -p "$work/empty-debs"
gpu_check "$work/nodebs.log" EDDY_GPU_DEBS="$work/empty-debs"
rc=$?
sed -n '/^GPU check/,$p' "$work/nodebs.log"
check "exit status 1 without packages, got $rc" test "$rc" -eq 1
check "dependencies: FAILED, naming the folder" has "$work/nodebs.log" "^  dependencies +FAILED \(EDDY_GPU_DEBS=.*empty-debs holds no .deb"
check "the table was printed" has "$work/nodebs.log" "^gpu-check: FAILED \(1 of 2 rows\)"

if ((fails > 0)); then
  echo "cuda_gpu_check_debs: $fails check(s) failed (logs in $work)"
  exit 1
fi
echo "cuda_gpu_check_debs: all checks passed"
