#!/usr/bin/env bash
# Builds RingKernel's test and bench binaries here (x86-64, release, all features) into gpu-bin/
# (git-ignored), with the NVRTC they load (lib/), what they need of the machine (REQUIRES: glibc,
# NVRTC's CUDA version) and a run.sh that checks it first, so they can be copied to a machine with
# a GPU and run there with nothing else installed (no Rust toolchain needed there). A failed build
# prints the end of its log (gpu-bin/build.log).
#
#   scripts/gpu-check.sh            # build into gpu-bin/
#   gpu-bin/run.sh                  # on the GPU machine: every test binary, then the GPU benches
#
# What runs on the GPU: the CUDA suite (conformance::cuda, cuda_device: persistent kernels, device
# K2K, state snapshots; NVRTC compiles at launch) and the CUDA bench (round trip p50/p99 next to
# launch + sync and CUDA Graph replay, batched throughput, K2K hop); kernel groups (the group_*
# conformance tests on the GPU, million_instances' a_million_instances_on_a_gpu, the groups bench
# with RINGKERNEL_BACKEND=cuda); the wgpu suite where the machine has a Vulkan driver.
set -euo pipefail
cd "$(dirname "$0")/.."
out=gpu-bin
rm -rf "$out" && mkdir -p "$out"

collect() {
  # Print the executables cargo built (JSON messages), one per line.
  python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    kinds = m.get("target", {}).get("kind", [])
    if "test" in kinds or "bench" in kinds or m.get("profile", {}).get("test"):
        print(m["executable"])
'
}

# The build's own messages go to build.log and are printed when it fails (the JSON on stdout
# only lists what was built).
build() {
  if ! "$@" --message-format=json 2>>"$out/build.log" | collect >>"$out/.list"; then
    echo "gpu-check: '$*' failed; the end of $out/build.log:" >&2
    tail -n 60 "$out/build.log" >&2
    exit 1
  fi
}
: > "$out/.list"
build cargo test --workspace --all-features --release --no-run
mv "$out/.list" "$out/.tests" && : > "$out/.list"
build cargo bench -p ringkernel --all-features --no-run
mv "$out/.list" "$out/.benches"
while read -r exe; do cp "$exe" "$out/test-$(basename "$exe")"; done < "$out/.tests"
while read -r exe; do cp "$exe" "$out/bench-$(basename "$exe")"; done < "$out/.benches"
rm -f "$out/.tests" "$out/.benches"

# NVRTC travels with the binaries (the GPU machine need not have the same one): the library the
# tests here load, from LD_LIBRARY_PATH or the nvidia-cuda-nvrtc wheel .ci/run installs.
nvrtc_dir=""
for d in ${LD_LIBRARY_PATH//:/ }; do
  if ls "$d"/libnvrtc.so.* >/dev/null 2>&1; then nvrtc_dir="$d"; break; fi
done
if [ -z "$nvrtc_dir" ]; then
  nvrtc_dir="$(python3 -c 'import nvidia, pathlib; print(next(p.parent for r in nvidia.__path__ for p in pathlib.Path(r).rglob("libnvrtc.so.*") if ".alt." not in p.name))' 2>/dev/null || true)"
fi
if [ -z "$nvrtc_dir" ]; then
  echo "gpu-check: no NVRTC found (pip install nvidia-cuda-nvrtc==13.0.88, or add its folder to LD_LIBRARY_PATH)" >&2
  exit 1
fi
mkdir -p "$out/lib"
for f in "$nvrtc_dir"/libnvrtc.so.* "$nvrtc_dir"/libnvrtc-builtins.so.*; do
  case "$f" in *.alt.*) continue ;; esac
  cp -L "$f" "$out/lib/"
done
# NVRTC's version from its builtins library (libnvrtc-builtins.so.13.0 -> 13.0).
nvrtc_version="$(ls "$out/lib" | sed -n 's/^libnvrtc-builtins\.so\.\([0-9]*\.[0-9]*\)$/\1/p' | head -n 1)"
# The newest glibc symbol version anything shipped needs.
glibc="$(cat "$out"/test-* "$out"/bench-* "$out"/lib/* | grep -aoE 'GLIBC_[0-9]+\.[0-9]+(\.[0-9]+)?' | sed 's/GLIBC_//' | sort -V | tail -n 1)"
printf 'nvrtc=%s\nglibc=%s\n' "$nvrtc_version" "$glibc" > "$out/REQUIRES"

cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs every copied test binary (GPU tests skip with a message when no device is found), then the
# GPU benches. RINGKERNEL_REQUIRE_CUDA=1 (default here) turns a missing CUDA device into a failure;
# set RINGKERNEL_REQUIRE_WGPU=1 for wgpu. NVRTC is loaded by name: the copy in lib/ comes first on
# LD_LIBRARY_PATH, then the usual CUDA library folders. `run.sh bench` runs only the benches,
# `run.sh test` only the tests.
cd "$(dirname "$0")"
# What the build needs of this machine (REQUIRES, written by gpu-check.sh): checked first, so a
# mismatch is one clear line rather than a loader error or a JIT failure in every test.
. ./REQUIRES
have_glibc="$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')"
if [ -n "$glibc" ] && [ -n "$have_glibc" ] && [ "$(printf '%s\n%s\n' "$glibc" "$have_glibc" | sort -V | head -n 1)" != "$glibc" ]; then
  echo "run.sh: these binaries need glibc $glibc or newer; this machine has $have_glibc" >&2
  exit 2
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  driver_cuda="$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9]*\.[0-9]*\).*/\1/p' | head -n 1)"
  echo "driver: CUDA $driver_cuda; shipped NVRTC $nvrtc; glibc $have_glibc (needs $glibc)"
  if [ -n "$driver_cuda" ] && [ -n "$nvrtc" ] && [ "$(printf '%s\n%s\n' "$nvrtc" "$driver_cuda" | sort -V | head -n 1)" != "$nvrtc" ]; then
    echo "run.sh: the driver supports CUDA $driver_cuda, older than the shipped NVRTC $nvrtc: it cannot load the PTX NVRTC emits" >&2
    exit 2
  fi
fi
# The shipped NVRTC first, then the usual CUDA library folders.
LD_LIBRARY_PATH="$PWD/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
  [ -d "$d" ] && LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"
done
export LD_LIBRARY_PATH
export RINGKERNEL_REQUIRE_CUDA="${RINGKERNEL_REQUIRE_CUDA:-1}"
export RINGKERNEL_PTX_CACHE="${RINGKERNEL_PTX_CACHE:-$PWD/ptx-cache}"
what="${1:-all}"
status=0
for t in ./test-*; do
  [ "$what" = bench ] && break
  echo "== $t"
  # derive_ui needs the source tree and cargo; the proc-macro crate's own test binary links the
  # toolchain's libstd dynamically. Neither runs without a Rust toolchain.
  case "$t" in
    *derive_ui*|*ringkernel_derive*) echo "skipped (needs a Rust toolchain)"; continue ;;
  esac
  # Tests that open the device run one at a time: they share one GPU (and its 128 concurrent
  # grids), so in parallel they would measure and fail each other.
  case "$t" in
    *conformance*|*cuda_device*|*wgpu_device*|*million_instances*) threads=1 ;;
    *) threads=2 ;;
  esac
  "$t" --test-threads=$threads || status=1
done
for b in ./bench-cuda-* ./bench-wgpu-*; do
  [ "$what" = test ] && break
  [ -e "$b" ] || continue
  echo "== $b"
  "$b" --bench --warm-up-time 1 --measurement-time 3 || status=1
done
# Kernel groups of 1 to 100,000 actors on the GPU (RINGKERNEL_CUDA_GROUP_WORKERS sets the grid).
for b in ./bench-groups-*; do
  [ "$what" = test ] && break
  [ -e "$b" ] || continue
  echo "== $b (RINGKERNEL_BACKEND=cuda)"
  RINGKERNEL_BACKEND=cuda "$b" --bench --warm-up-time 1 --measurement-time 3 || status=1
done
exit $status
RUN
chmod +x "$out/run.sh"
ls -la "$out" | head -40
du -sh "$out"
