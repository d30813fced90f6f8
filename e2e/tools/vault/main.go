// Command vault builds HashiCorp Vault from the Go module proxy so tests run
// against the real server without downloading a prebuilt binary.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
