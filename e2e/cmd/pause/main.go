// Command pause is the e2e node's sandbox ("pause") image: containerd starts
// it first in every pod, and it only waits, as Kubernetes' own pause does,
// until the pod is torn down. Built here so the node needs no image from the
// internet.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
