#!/usr/bin/env bash
# Builds the Kubernetes control plane that Muster's integration tests run against:
#   muster-k8s  one multi-call binary: etcd, kube-apiserver, kube-controller-manager, kube-scheduler
#               (module tests/control-plane), with a symlink named after each component;
#   kwok        fake nodes and pods (module tests/kwok);
#   stages.yaml our KWOK stages.
#
# Output: ${MUSTER_CACHE_DIR:-$HOME/.cache/muster}/control-plane/<key>/, where <key> hashes everything
# that determines the binaries (both modules' go.mod/go.sum and sources, the Go version, this script). A
# complete output directory is reused as is, so a warm run takes about a second. The directory's path is
# printed as the last line of stdout and written to .../control-plane/current, where the test harness
# (tests/src/lib.rs) looks for it; MUSTER_CONTROL_PLANE_BIN overrides that.
#
# A cold build compiles a large part of Kubernetes: see tests/README.md for measured time and memory.
# GOCACHE and GOMODCACHE are what make rebuilds fast; keep them between runs.
#
# Usage: tests/build-control-plane.sh [--force]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cp_mod="$here/control-plane"
kwok_mod="$here/kwok"
cache_root="${MUSTER_CACHE_DIR:-$HOME/.cache/muster}/control-plane"

force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { printf '[build-control-plane %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

command -v go >/dev/null || { echo "go is not on PATH; the control plane is built from Go modules" >&2; exit 1; }
go_version=$(go env GOVERSION)

key=$(
  {
    echo "go=$go_version"
    for f in "$cp_mod/go.mod" "$cp_mod/go.sum" "$cp_mod/main.go" \
             "$kwok_mod/go.mod" "$kwok_mod/go.sum" "$kwok_mod/tools.go" \
             "$here/build-control-plane.sh"; do
      printf '%s ' "${f#"$here"/}"
      sha256sum < "$f"
    done
  } | sha256sum | cut -c1-16
)
out="$cache_root/$key"

publish() {
  # stages.yaml is data, not a build input: refresh it even in a reused directory.
  install -m 0644 "$kwok_mod/stages.yaml" "$out/stages.yaml"
  printf '%s\n' "$out" > "$cache_root/current.tmp.$$"
  mv -f "$cache_root/current.tmp.$$" "$cache_root/current"
  log "binaries in $out"
  echo "$out"
}

if [[ $force -eq 0 && -f "$out/.complete" ]]; then
  log "up to date (key $key)"
  publish
  exit 0
fi

mkdir -p "$cache_root"
work=$(mktemp -d "$cache_root/.building-$key.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Version stamps: without them the components report v0.0.0-master+$Format, which clients and kwokctl
# refuse to parse. The version is read from go.mod so that gen-replaces.sh bumps stay the only edit.
k8s_version=$(cd "$cp_mod" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
minor=${k8s_version#v1.}
minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done

export CGO_ENABLED=0
# -mod=readonly: go.mod/go.sum are the whole truth (a GOFLAGS=-mod=mod elsewhere must not rewrite them);
# -buildvcs=false: no VCS stamp, so a clone without .git, or a new commit, changes nothing.
build_flags=(-mod=readonly -buildvcs=false -trimpath -ldflags "$ldflags")
if [[ -n "${MUSTER_GO_BUILD_VERBOSE:-}" ]]; then
  build_flags+=(-v)
fi

log "key $key, $go_version, k8s.io/kubernetes $k8s_version"
log "downloading modules (first run only)"
(cd "$cp_mod" && go mod download)
(cd "$kwok_mod" && go mod download)

start=$SECONDS
log "building muster-k8s (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) (cold: ~15 min on 2 cores; warm: seconds)"
(cd "$cp_mod" && go build "${build_flags[@]}" -o "$work/muster-k8s" .)
log "muster-k8s built in $((SECONDS - start))s"

start=$SECONDS
log "building kwok"
(cd "$kwok_mod" && go build "${build_flags[@]}" -o "$work/kwok" sigs.k8s.io/kwok/cmd/kwok)
log "kwok built in $((SECONDS - start))s"

for c in etcd kube-apiserver kube-controller-manager kube-scheduler; do
  ln -s muster-k8s "$work/$c"
done

# Smoke check: each entry point starts and reports the expected version.
got=$("$work/kube-apiserver" --version)
[[ "$got" == "Kubernetes $k8s_version" ]] || { echo "kube-apiserver --version said: $got" >&2; exit 1; }
"$work/etcd" --version >/dev/null
"$work/kwok" --version >/dev/null
touch "$work/.complete"

chmod 0755 "$work"
rm -rf "$out"
mv -T "$work" "$out"
trap - EXIT

# Keep this build and the previous one (another branch may want it back); older ones go.
find "$cache_root" -mindepth 1 -maxdepth 1 -type d -regextype posix-extended -regex '.*/[0-9a-f]{16}' \
  -printf '%T@ %p\n' | sort -rn | tail -n +3 | cut -d' ' -f2- | while read -r old; do
  log "removing old build $old"
  rm -rf "$old"
done
publish
