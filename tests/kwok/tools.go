//go:build tools

// Package tools pins the KWOK controller (fake nodes and pods for Muster's integration tests) so that
// `go build sigs.k8s.io/kwok/cmd/kwok` from this module is reproducible from go.sum. It lives in its own
// module: in the control-plane module, minimal version selection would lift KWOK's k8s.io libraries to
// the control plane's versions, which KWOK was not built or tested against.
package tools

import (
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
