// Command kubectl is kubectl v1.37.2 from the Go module proxy, built beside
// kube-apiserver so `make demo` works on a machine without a matching
// kubectl (Debian's is 1.20, outside the supported version skew).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
)

func main() {
	os.Exit(cli.Run(cmd.NewDefaultKubectlCommand()))
}
