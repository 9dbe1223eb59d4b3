//go:build tools

// Package tools pins the upstream JobSet controller (kubernetes-sigs/jobset v0.12.0, the latest release), the
// baseline of Muster's reconciler benchmark, so that `go build sigs.k8s.io/jobset` from this module is
// reproducible from go.sum. Its own module: nothing else may move its dependency versions.
package tools

import (
	_ "sigs.k8s.io/jobset"
)
