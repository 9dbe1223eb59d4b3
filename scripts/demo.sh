#!/usr/bin/env bash
# Muster's main job on one machine: a local Kubernetes control plane with simulated GPU nodes, Muster's
# components running against it, the JobSets in examples/ applied and shown live until they finish.
# Extra arguments go to muster-demo (try --help, --nodes 64, --keep).
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${MUSTER_CACHE_DIR:-$HOME/.cache/muster}/control-plane/current"
if [ ! -s "$cache" ] || [ ! -x "$(cat "$cache")/kube-apiserver" ]; then
  cat >&2 <<'MSG'
==> First run: compiling the Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
    kube-scheduler, KWOK) from the Go modules. This takes about 13-17 minutes on 2 cores and ~3 GB of RAM;
    it is cached, so every later run starts in seconds.
MSG
fi
MUSTER_CONTROL_PLANE_BIN="$(bash tests/build-control-plane.sh | tail -n 1)"
export MUSTER_CONTROL_PLANE_BIN

echo "==> building Muster (the demo, the gpu-agent and the mock NVML library it loads)" >&2
cargo build --quiet -p muster-tests --bin muster-demo -p muster-gpu-agent -p muster-mock-nvml
target="${CARGO_TARGET_DIR:-target}/debug"
exec "$target/muster-demo" --gpu-agent "$target/muster-gpu-agent" --mock-nvml "$target/libmuster_mock_nvml.so" "$@"
