#!/usr/bin/env bash
# Builds RingKernel's test and bench binaries here (x86-64, release, all features) into gpu-bin/
# (git-ignored), with a run.sh, so they can be copied to a machine with a GPU and run there with
# nothing else installed (no Rust toolchain needed there).
#
#   scripts/gpu-check.sh            # build into gpu-bin/
#   gpu-bin/run.sh                  # on the GPU machine: every test binary, then the GPU benches
#
# What runs on the GPU today: the wgpu suite (needs a Vulkan driver there) and the CUDA probe
# (prints what it found: driver version, device, NVRTC). The CUDA launch path is not implemented,
# so there is no CUDA kernel test or bench yet.
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

cargo test --workspace --all-features --release --no-run --message-format=json 2>/dev/null | collect > "$out/.tests"
cargo bench -p ringkernel --all-features --no-run --message-format=json 2>/dev/null | collect > "$out/.benches"
while read -r exe; do cp "$exe" "$out/test-$(basename "$exe")"; done < "$out/.tests"
while read -r exe; do cp "$exe" "$out/bench-$(basename "$exe")"; done < "$out/.benches"
rm -f "$out/.tests" "$out/.benches"

cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs every copied test binary (GPU tests skip with a message when no device is found), then the
# GPU benches. Set RINGKERNEL_REQUIRE_WGPU=1 to turn a missing wgpu adapter into a failure.
cd "$(dirname "$0")"
status=0
for t in ./test-*; do
  echo "== $t"
  # derive_ui needs the source tree and cargo; the proc-macro crate's own test binary links the
  # toolchain's libstd dynamically. Neither runs without a Rust toolchain.
  case "$t" in
    *derive_ui*|*ringkernel_derive*) echo "skipped (needs a Rust toolchain)"; continue ;;
  esac
  "$t" --test-threads=2 || status=1
done
for b in ./bench-wgpu-*; do
  [ -e "$b" ] || continue
  echo "== $b"
  "$b" --bench || status=1
done
exit $status
RUN
chmod +x "$out/run.sh"
ls -la "$out" | head -40
du -sh "$out"
