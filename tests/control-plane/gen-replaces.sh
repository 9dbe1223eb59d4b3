#!/usr/bin/env bash
# Regenerates the dependency pins of this module from the go.mod of k8s.io/kubernetes.
#
# k8s.io/kubernetes requires each of its staging modules (k8s.io/api, k8s.io/apiserver, ...) at the
# non-existent version v0.0.0 and replaces them with ./staging/... in its own repository. Replace
# directives of a dependency are ignored, so every consumer must pin each staging module itself. The set
# of staging modules changes between minors, so the list is read from the downloaded go.mod, never typed.
#
# It also pins go.etcd.io/etcd/server/v3 to the version k8s.io/kubernetes itself selects, so the etcd we
# run is the one the apiserver's etcd client was built and tested against.
#
# Usage: tests/control-plane/gen-replaces.sh [k8s-version]     (default: the version in go.mod, else v1.37.2)
# Then review and commit go.mod and go.sum.
set -euo pipefail

cd "$(dirname "$0")"

current=$(go mod edit -json | awk '
  /"Path": "k8s.io\/kubernetes"/ { hit = 1; next }
  hit && /"Version":/ { gsub(/[",]/, "", $2); print $2; exit }')
k8s_version=${1:-${current:-v1.37.2}}

# v1.MINOR.PATCH -> v0.MINOR.PATCH: the staging modules are tagged in lockstep.
staging_version="v0.${k8s_version#v1.}"
echo "k8s.io/kubernetes ${k8s_version} -> staging modules ${staging_version}" >&2

info=$(go mod download -json "k8s.io/kubernetes@${k8s_version}")
gomod=$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
if [[ -z "$gomod" || ! -f "$gomod" ]]; then
  printf '%s\n' "$info" >&2
  echo "could not download k8s.io/kubernetes@${k8s_version}" >&2
  exit 1
fi

# `go mod edit -json FILE` parses any go.mod; print "path version" for every requirement.
requirements=$(go mod edit -json "$gomod" | awk '
  /^\t"[A-Za-z]+":/ { inreq = ($0 ~ /"Require":/) }
  inreq && /"Path":/    { gsub(/[",]/, "", $2); path = $2 }
  inreq && /"Version":/ { gsub(/[",]/, "", $2); print path, $2 }')

staging=$(printf '%s\n' "$requirements" | awk '$2 == "v0.0.0" { print $1 }' | sort -u)
etcd_version=$(printf '%s\n' "$requirements" | awk '$1 == "go.etcd.io/etcd/server/v3" { print $2 }')
if [[ -z "$staging" ]]; then
  echo "no v0.0.0 requirements found in $gomod" >&2
  exit 1
fi
if [[ -z "$etcd_version" ]]; then
  echo "k8s.io/kubernetes@${k8s_version} does not require go.etcd.io/etcd/server/v3" >&2
  exit 1
fi

# Start from a clean slate so staging modules that were dropped upstream lose their replace too.
for old in $(go mod edit -json | awk '
    /^\t"[A-Za-z]+":/ { inrep = ($0 ~ /"Replace":/) }
    inrep && /"Old":/ { getline; if ($0 ~ /"Path":/) { gsub(/[",]/, "", $2); print $2 } }'); do
  go mod edit -dropreplace="$old"
done

args=(-require="k8s.io/kubernetes@${k8s_version}" -require="go.etcd.io/etcd/server/v3@${etcd_version}")
count=0
for mod in $staging; do
  args+=(-replace="${mod}=${mod}@${staging_version}")
  count=$((count + 1))
done
go mod edit "${args[@]}"
echo "pinned ${count} staging modules to ${staging_version}, go.etcd.io/etcd/server/v3 to ${etcd_version}" >&2

go mod tidy
echo "done; review and commit $(pwd)/go.mod and go.sum" >&2
