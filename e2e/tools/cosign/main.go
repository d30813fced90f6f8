// Command cosign builds the sigstore cosign CLI from the Go module proxy so
// tests sign images with the real tool rather than with library calls that
// could share a bug with the verifier under test.
//
// It mirrors github.com/sigstore/cosign/v2/cmd/cosign/main.go, minus the
// cloud KMS signer plugins (tests sign with key files) and the rewriting of
// single-dash long flags (tests pass POSIX flags).
package main

import (
	"errors"
	"log"
	"os"

	"github.com/sigstore/cosign/v2/cmd/cosign/cli"
	cosignerrors "github.com/sigstore/cosign/v2/cmd/cosign/errors"
)

func main() {
	if err := cli.New().Execute(); err != nil {
		// cosign maps its typed errors to documented exit codes; keep them.
		var cerr *cosignerrors.CosignError
		if errors.As(err, &cerr) {
			log.Printf("error during command execution: %v", err)
			os.Exit(cerr.ExitCode())
		}
		log.Fatalf("error during command execution: %v", err)
	}
}
