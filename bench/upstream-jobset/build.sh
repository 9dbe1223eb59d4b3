#!/usr/bin/env bash
# Builds the upstream JobSet controller (sigs.k8s.io/jobset v0.12.0, module bench/upstream-jobset), the baseline
# of `cargo bench -p muster-bench --bench reconciler`.
#
# Output: ${MUSTER_CACHE_DIR:-$HOME/.cache/muster}/upstream-jobset/<key>/jobset-controller, plus upstream's CRD
# (crd.yaml) copied from the module, where <key> hashes go.mod, go.sum, tools.go, the Go version and this script.
# A complete directory is reused as is. The directory's path is the last line of stdout.
#
# A cold build compiles controller-runtime and the k8s.io v0.36 libraries: about 5 minutes on 2 cores with an
# empty GOCACHE (seconds when warm).
#
# Usage: bench/upstream-jobset/build.sh [--force]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache_root="${MUSTER_CACHE_DIR:-$HOME/.cache/muster}/upstream-jobset"

force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { printf '[upstream-jobset %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

command -v go >/dev/null || { echo "go is not on PATH; the baseline is built from the Go module proxy" >&2; exit 1; }
go_version=$(go env GOVERSION)
key=$(
  {
    echo "go=$go_version"
    for f in go.mod go.sum tools.go build.sh; do
      printf '%s ' "$f"
      sha256sum < "$here/$f"
    done
  } | sha256sum | cut -c1-16
)
out="$cache_root/$key"

if [[ $force -eq 0 && -f "$out/.complete" ]]; then
  log "up to date (key $key)"
  echo "$out"
  exit 0
fi

mkdir -p "$cache_root"
work=$(mktemp -d "$cache_root/.building-$key.XXXXXX")
trap 'rm -rf "$work"' EXIT

version=$(cd "$here" && go list -m -f '{{.Version}}' sigs.k8s.io/jobset)
# v0.12.0 is commit f22e565a; the stamps only feed the User-Agent (`jobset/v0.12.0 (linux/amd64) f22e565`).
ldflags="-s -w -X sigs.k8s.io/jobset/pkg/version.GitVersion=$version -X sigs.k8s.io/jobset/pkg/version.GitCommit=f22e565a"
export CGO_ENABLED=0
log "key $key, $go_version, sigs.k8s.io/jobset $version"
(cd "$here" && go mod download)
start=$SECONDS
(cd "$here" && go build -mod=readonly -buildvcs=false -trimpath -ldflags "$ldflags" -o "$work/jobset-controller" sigs.k8s.io/jobset)
log "built in $((SECONDS - start))s"
module_dir=$(cd "$here" && go list -m -f '{{.Dir}}' sigs.k8s.io/jobset)
install -m 0644 "$module_dir/config/components/crd/bases/jobset.x-k8s.io_jobsets.yaml" "$work/crd.yaml"
touch "$work/.complete"

chmod 0755 "$work"
rm -rf "$out"
mv -T "$work" "$out"
trap - EXIT
# Keep this build and the previous one; older ones go.
find "$cache_root" -mindepth 1 -maxdepth 1 -type d -regextype posix-extended -regex '.*/[0-9a-f]{16}' \
  -printf '%T@ %p\n' | sort -rn | tail -n +3 | cut -d' ' -f2- | while read -r old; do
  log "removing old build $old"
  rm -rf "$old"
done
echo "$out"
