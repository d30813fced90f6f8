// Command etcd builds etcd v3.7.0, the version Kubernetes 1.37 ships, from the
// Go module proxy. Debian's etcd-server (3.4) is outside the range 1.37
// supports and its watches do not report progress, which stalls
// StorageVersionMigration. It mirrors go.etcd.io/etcd/server/v3/main.go.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
