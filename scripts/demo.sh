#!/usr/bin/env bash
# Builds vgpu, starts a host daemon on the software GPU, and shows the GPU
# through the shims: `vgpu smi`, then `nvitop --once` when the test clients
# are installed (scripts/test-deps.sh). Everything runs as this user in a
# temporary directory; the daemon is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --release --locked
bin=target/release/vgpu
work=$(mktemp -d)
sock=$work/vgpu.sock
"$bin" host --listen "unix:$sock" --driver emulated >"$work/host.log" 2>&1 &
host=$!
trap 'kill $host 2>/dev/null; wait $host 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q "listening on" "$work/host.log" && break; sleep 0.1; done
grep -q "listening on" "$work/host.log" || { cat "$work/host.log"; exit 1; }
head -n 2 "$work/host.log"
export VGPU_HOST=unix:$sock
echo "== vgpu smi"
"$bin" smi
venv=${VGPU_CACHE:-.cache}/venv
if [ -x "$venv/bin/nvitop" ]; then
  echo "== nvitop --once (through the shims)"
  "$bin" run -- "$venv/bin/nvitop" --once
else
  echo "(install the NVML test clients with scripts/test-deps.sh to see nvitop too)"
fi
