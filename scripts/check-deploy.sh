#!/usr/bin/env bash
# Checks of the install under deploy/: every kustomization renders (`kubectl kustomize`, no cluster needed), and
# scripts/check-deploy.py checks what was rendered (objects well formed, every manifest installed somewhere, placement
# modes and certificate variants as documented in docs/operator/guide.md, Services and ServiceMonitors that match).
# Needs kubectl and python3 with PyYAML; fails, never skips, without them.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v kubectl >/dev/null 2>&1; then
  echo "kubectl not found: the kustomizations under deploy/ cannot be rendered" >&2
  exit 1
fi
if ! command -v python3 >/dev/null 2>&1; then
  echo "python3 not found: the rendered install cannot be checked" >&2
  exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for dir in deploy deploy/controller deploy/daemonset deploy/variants/self-managed-certs deploy/variants/pod-pinning \
  deploy/variants/pod-pinning-self-managed-certs deploy/monitoring; do
  if ! kubectl kustomize "$dir" >"$tmp/${dir//\//_}.yaml"; then
    echo "kubectl kustomize $dir failed" >&2
    exit 1
  fi
done
python3 scripts/check-deploy.py "$tmp"
