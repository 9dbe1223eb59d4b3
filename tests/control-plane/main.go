// Command muster-k8s is a multi-call binary holding the Kubernetes control-plane
// components that Muster's integration tests run: etcd, kube-apiserver,
// kube-controller-manager and kube-scheduler, all at the versions pinned in
// go.mod.
//
// The component is chosen by the name the binary was invoked as (a symlink
// named after the component) or, failing that, by the first argument:
//
//	kube-apiserver --etcd-servers=...           # via symlink
//	muster-k8s kube-apiserver --etcd-servers=... # via first argument
//
// Exactly one component runs per process. The upstream commands install
// process-wide signal handlers and share global registries (feature gates,
// metrics, logging), so running two of them in one process is not supported.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	_ "time/tzdata" // CronJob time zones, as in the upstream binaries.

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics on /metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // kubernetes_build_info
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

const self = "muster-k8s"

// cobraComponents are the upstream components that expose a cobra command.
var cobraComponents = map[string]func() *cobra.Command{
	"kube-apiserver":          apiserver.NewAPIServerCommand,
	"kube-controller-manager": controllermanager.NewControllerManagerCommand,
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
}

func main() {
	name, args := pick(os.Args)
	switch {
	case name == "etcd":
		// etcdmain expects argv including the program name.
		etcdmain.Main(append([]string{"etcd"}, args...))
	case cobraComponents[name] != nil:
		cmd := cobraComponents[name]()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	default:
		usage(name)
		os.Exit(2)
	}
}

// pick returns the component name and its arguments: the basename of argv[0]
// when that names a component, else the first argument.
func pick(argv []string) (string, []string) {
	if len(argv) == 0 {
		return "", nil
	}
	base := filepath.Base(argv[0])
	if known(base) {
		return base, argv[1:]
	}
	if len(argv) > 1 {
		return argv[1], argv[2:]
	}
	return "", nil
}

func known(name string) bool {
	return name == "etcd" || cobraComponents[name] != nil
}

func usage(got string) {
	names := []string{"etcd"}
	for n := range cobraComponents {
		names = append(names, n)
	}
	sort.Strings(names)
	if got != "" {
		fmt.Fprintf(os.Stderr, "%s: unknown component %q\n", self, got)
	}
	fmt.Fprintf(os.Stderr, "usage: %s <component> [flags...]  (or invoke through a symlink named after the component)\n", self)
	fmt.Fprintf(os.Stderr, "components: %v\n", names)
}
