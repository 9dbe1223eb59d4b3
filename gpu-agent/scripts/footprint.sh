#!/usr/bin/env bash
# The agent's footprint with 8 mock GPUs (tests/mock-nvml/fixtures/hgx-h100x8.json) at a 1 s poll: resident
# memory, CPU over a steady-state window, and /metrics scrape latency. Metrics-only (--no-publish): GPUNode
# writes happen on the 30 s heartbeat and are not what dominates. The mock library runs inside the agent's
# process, so its (small) cost is included; a real driver's NVML calls cost differently.
#
#   cargo build --release -p muster-gpu-agent -p muster-mock-nvml
#   gpu-agent/scripts/footprint.sh [--seconds 60] [--scrapes 200]
set -euo pipefail
seconds=60
scrapes=200
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --scrapes) scrapes="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
root="$(cd "$(dirname "$0")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}/release"
agent="$target/muster-gpu-agent"
library="$target/libmuster_mock_nvml.so"
for f in "$agent" "$library"; do
  [[ -f "$f" ]] || { echo "$f missing: cargo build --release -p muster-gpu-agent -p muster-mock-nvml" >&2; exit 2; }
done
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
MUSTER_MOCK_NVML_FIXTURE="$root/tests/mock-nvml/fixtures/hgx-h100x8.json" RUST_LOG=warn \
  "$agent" --no-publish --node-name footprint --poll-interval 1s --listen "127.0.0.1:$port" \
  --nvml-library "$library" --pod-resources-socket /nonexistent/kubelet.sock &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
python3 - "$pid" "$port" "$seconds" "$scrapes" <<'PY'
import os, sys, time, urllib.request
pid, port, seconds, scrapes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
tick = os.sysconf("SC_CLK_TCK")

def cpu_seconds():
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick  # utime + stime

def status(key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # kB -> MiB
    return float("nan")

url = f"http://127.0.0.1:{port}/metrics"
urllib.request.urlopen(url).read()  # warm
time.sleep(5)
c0, t0 = cpu_seconds(), time.monotonic()
time.sleep(seconds)
c1, t1 = cpu_seconds(), time.monotonic()
latencies = []
size = 0
for _ in range(scrapes):
    start = time.perf_counter()
    size = len(urllib.request.urlopen(url).read())
    latencies.append((time.perf_counter() - start) * 1000)
latencies.sort()
pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
threads = len(os.listdir(f"/proc/{pid}/task"))
print(f"agent, 8 mock GPUs, 1 s poll, {seconds} s window")
print(f"  RSS            {status('VmRSS'):.1f} MiB (peak {status('VmHWM'):.1f} MiB), {threads} threads")
print(f"  CPU            {100 * (c1 - c0) / (t1 - t0):.2f} % of one core ({c1 - c0:.2f} s over {t1 - t0:.0f} s)")
print(f"  /metrics       p50 {pick(0.5):.2f} ms, p99 {pick(0.99):.2f} ms, max {latencies[-1]:.2f} ms over {scrapes} scrapes, {size} bytes")
PY
