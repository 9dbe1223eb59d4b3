#!/usr/bin/env bash
# Muster's main job on one machine: a local Kubernetes control plane with simulated GPU nodes, Muster's
# components running against it, the JobSets in examples/ applied and shown live until they finish.
# Extra arguments go to muster-demo (try --help, --nodes 64, --keep).
#
# On a real cluster instead (the one $KUBECONFIG points at):
#   scripts/demo.sh --install --registry <registry> --tag <tag> [--variant self-managed-certs|pod-pinning]
#   scripts/demo.sh --uninstall
# installs Muster there (kubectl apply --server-side -k deploy/...), waits for its pods, runs the examples in the
# namespace muster-examples and shows them live. --build-images first builds Muster's images from
# deploy/images/Dockerfile with docker or podman and pushes them to <registry>.
set -euo pipefail
cd "$(dirname "$0")/.."

real_cluster=false
build_images=false
registry=ghcr.io/muster-dev
tag=latest
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --install|--uninstall) real_cluster=true; args+=("$1") ;;
    --build-images) build_images=true ;;
    --registry) registry="${2:?--registry needs a value}"; args+=("$1" "$2"); shift ;;
    --registry=*) registry="${1#*=}"; args+=("$1") ;;
    --tag) tag="${2:?--tag needs a value}"; args+=("$1" "$2"); shift ;;
    --tag=*) tag="${1#*=}"; args+=("$1") ;;
    *) args+=("$1") ;;
  esac
  shift
done

if [ "$build_images" = true ]; then
  engine="$(command -v docker || command -v podman || true)"
  if [ -z "$engine" ]; then
    echo "error: --build-images needs docker or podman" >&2
    exit 1
  fi
  for image in muster-admission muster-reconciler muster-gpu-agent; do
    echo "==> building and pushing $registry/$image:$tag" >&2
    "$engine" build -f deploy/images/Dockerfile --target "$image" -t "$registry/$image:$tag" .
    "$engine" push "$registry/$image:$tag"
  done
fi

target="${CARGO_TARGET_DIR:-target}/debug"
if [ "$real_cluster" = true ]; then
  echo "==> building muster-demo" >&2
  cargo build --quiet -p muster-tests --bin muster-demo
  exec "$target/muster-demo" "${args[@]}"
fi

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
exec "$target/muster-demo" --gpu-agent "$target/muster-gpu-agent" --mock-nvml "$target/libmuster_mock_nvml.so" "${args[@]}"
