#!/usr/bin/env bash
# Device check for a machine with real NVIDIA GPUs: does the agent report what nvidia-smi reports?
#
# Runs `nvidia-smi --query-gpu=... --format=csv,noheader,nounits` before and after the agent's one-shot
# `muster-gpu-agent --dump-json` (against the real libnvidia-ml.so.1), then compares field by field
# (reference/gpu-nvml.md §2 and §7):
#
#   index, uuid, name, pci.bus_id   exact (bus id case-insensitive)
#   memory.total, memory.reserved   ceil(bytes / MiB) == nvidia-smi MiB (nvidia-smi rounds each cell up)
#   memory.used, memory.free        the same, against either sample (memory moves if something runs)
#   utilization.gpu                 within 5 percentage points of a sample (it is sampled); [N/A] on MIG
#   power.draw                      within 1 W of a sample
#   temperature.gpu                 within 2 °C of a sample
#   mig.mode.current                Enabled/Disabled == migEnabled
#
# It also records the driver version, `nvidia-smi -q`, `nvidia-smi topo -m` and the NVML symbol inventory of
# the installed library (to refresh the mock library's symbol list), all under the output directory.
# Exit status: 0 when every field agrees, 1 on any disagreement, 2 when it could not run.
#
# Usage:
#   gpu-agent/scripts/compare-nvidia-smi.sh [--agent PATH] [--out DIR] [-- extra agent args]
# Environment: NVIDIA_SMI (default nvidia-smi), PYTHON (default python3).
# Build the agent first: cargo build --release -p muster-gpu-agent (the binary is target/release/muster-gpu-agent).
set -euo pipefail

agent=""
out="nvidia-smi-check"
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --agent) agent="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
root="$(cd "$(dirname "$0")/../.." && pwd)"
if [[ -z "$agent" ]]; then
  for candidate in "$root/target/release/muster-gpu-agent" "$root/target/debug/muster-gpu-agent" "$(command -v muster-gpu-agent || true)"; do
    if [[ -n "$candidate" && -x "$candidate" ]]; then agent="$candidate"; break; fi
  done
fi
[[ -n "$agent" && -x "$agent" ]] || { echo "muster-gpu-agent not found: build it or pass --agent PATH" >&2; exit 2; }
smi="${NVIDIA_SMI:-nvidia-smi}"
python="${PYTHON:-python3}"
command -v "$smi" >/dev/null || { echo "$smi not found: this check needs a machine with an NVIDIA driver" >&2; exit 2; }
command -v "$python" >/dev/null || { echo "$python not found" >&2; exit 2; }

mkdir -p "$out"
fields="index,uuid,name,pci.bus_id,memory.total,memory.reserved,memory.used,memory.free,utilization.gpu,power.draw,temperature.gpu,mig.mode.current"
"$smi" --query-gpu="$fields" --format=csv,noheader,nounits >"$out/nvidia-smi-before.csv"
# No kubelet socket: only the NVML fields matter here.
"$agent" --dump-json --pod-resources-socket /nonexistent/kubelet.sock "${extra[@]}" >"$out/agent.json" 2>"$out/agent.log"
"$smi" --query-gpu="$fields" --format=csv,noheader,nounits >"$out/nvidia-smi-after.csv"

# Context for whoever reads the result (none of it is compared).
"$smi" --query-gpu=driver_version --format=csv,noheader >"$out/driver-version.txt" 2>&1 || true
"$smi" -q >"$out/nvidia-smi-q.txt" 2>&1 || true
"$smi" topo -m >"$out/topo.txt" 2>&1 || true
library="$(ldconfig -p 2>/dev/null | awk '/libnvidia-ml\.so\.1 / {print $NF; exit}')"
if [[ -n "$library" ]] && command -v nm >/dev/null; then
  nm -D --defined-only "$(readlink -f "$library")" | awk '$2 == "T" && $3 ~ /^nvml/ {print $3}' | sort >"$out/nvml-symbols.txt" || true
  echo "$(wc -l <"$out/nvml-symbols.txt") nvml symbols in $(readlink -f "$library")" >"$out/nvml-symbols.count"
fi

"$python" - "$out" <<'PY'
import csv, json, math, sys
out = sys.argv[1]
MIB = 1 << 20

def rows(name):
    with open(f"{out}/{name}") as f:
        return {int(r[0]): [c.strip() for c in r] for r in csv.reader(f) if r}

before, after = rows("nvidia-smi-before.csv"), rows("nvidia-smi-after.csv")
status = json.load(open(f"{out}/agent.json"))
devices = {d["index"]: d for d in status.get("devices", [])}
problems, lines = [], []

def number(text):
    try:
        return float(text)
    except ValueError:
        return None  # [N/A], [Not Supported]

def check(gpu, field, agent_value, smi_values, ok, shown=None):
    good = ok(agent_value, smi_values)
    lines.append(f"{gpu:>3}  {field:<18} agent={shown if shown is not None else agent_value!s:<24} nvidia-smi={' / '.join(dict.fromkeys(smi_values))}  {'ok' if good else 'MISMATCH'}")
    if not good:
        problems.append(f"GPU {gpu} {field}: agent {shown if shown is not None else agent_value} vs nvidia-smi {smi_values}")

if not status.get("nvmlAvailable"):
    problems.append(f"the agent could not use NVML: {status.get('nvmlError')}")
if sorted(devices) != sorted(before):
    problems.append(f"GPU indices differ: agent {sorted(devices)} vs nvidia-smi {sorted(before)}")

for gpu in sorted(set(devices) & set(before)):
    d, samples = devices[gpu], [before[gpu], after.get(gpu, before[gpu])]
    col = lambda i: [s[i] for s in samples]
    check(gpu, "uuid", d["uuid"], col(1), lambda a, s: a in s)
    check(gpu, "name", d["model"], col(2), lambda a, s: a in s)
    check(gpu, "pci.bus_id", d["pciBusId"], col(3), lambda a, s: a.upper() in [x.upper() for x in s])
    memory = d.get("memory") or {}
    for i, field, key in [(4, "memory.total", "totalBytes"), (5, "memory.reserved", "reservedBytes"),
                          (6, "memory.used", "usedBytes"), (7, "memory.free", "freeBytes")]:
        value = memory.get(key)
        mib = None if value is None else math.ceil(value / MIB)
        check(gpu, field, mib, col(i), lambda a, s: a is not None and any(number(x) == a for x in s),
              shown=f"{mib} MiB ({value} B)")
    utilization = (d.get("utilization") or {}).get("gpuPercent")
    check(gpu, "utilization.gpu", utilization, col(8),
          lambda a, s: (a is None and all(number(x) is None for x in s))
          or (a is not None and any(number(x) is not None and abs(number(x) - a) <= 5 for x in s)))
    power = d.get("powerWatts")
    check(gpu, "power.draw", power, col(9),
          lambda a, s: (a is None and all(number(x) is None for x in s))
          or (a is not None and any(number(x) is not None and abs(number(x) - a) <= 1.0 for x in s)))
    temperature = d.get("temperatureCelsius")
    check(gpu, "temperature.gpu", temperature, col(10),
          lambda a, s: a is not None and any(number(x) is not None and abs(number(x) - a) <= 2 for x in s))
    mig = d.get("migEnabled")
    shown = {True: "Enabled", False: "Disabled", None: "[N/A]"}[mig]
    check(gpu, "mig.mode.current", shown, col(11), lambda a, s: a in s or (a == "[N/A]" and any("N/A" in x for x in s)))

report = "\n".join(lines + [""] + (["DISAGREEMENTS:"] + problems if problems else ["every field agrees"]))
open(f"{out}/result.txt", "w").write(report + "\n")
print(report)
sys.exit(1 if problems else 0)
PY
