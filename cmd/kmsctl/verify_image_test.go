//go:build integration

package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/image"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/image/imagetest"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/registrytest"
	"github.com/vaultkms/vault-kms-plugin/plugin/contract"
)

// runVerifyImage runs `kmsctl verify-image args...` through the root command,
// as main does, and returns what it wrote on stdout and stderr.
func runVerifyImage(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRootCmd()
	root.SetArgs(append([]string{"verify-image"}, args...))
	root.SetOut(&out)
	root.SetErr(&errOut)
	err = root.Execute()
	return out.String(), errOut.String(), err
}

// TestVerifyImage drives the command against a real registry and images
// signed by the real cosign CLI; lifecycle/image covers every refusal.
func TestVerifyImage(t *testing.T) {
	reg := registrytest.Start(t)
	key := imagetest.GenerateKeyPair(t)
	labels := map[string]string{contract.FlagInterfaceLabel: contract.FlagInterfaceVersion}

	t.Run("a signed image => its digest reference alone on stdout", func(t *testing.T) {
		ref := reg.Host + "/kmsctl/plugin:v1"
		pinned := imagetest.PushIndex(t, ref, labels, labels)
		imagetest.Sign(t, key, pinned, true)
		stdout, stderr, err := runVerifyImage(t, "--key", key.Public, "--timeout", "30s", ref)
		if err != nil {
			t.Fatalf("verify-image: %v", err)
		}
		if stdout != pinned+"\n" || stderr != "" {
			t.Fatalf("stdout %q, stderr %q; want %q and nothing", stdout, stderr, pinned+"\n")
		}
	})

	t.Run("an unsigned image => one line naming it, nothing on stdout", func(t *testing.T) {
		ref := reg.Host + "/kmsctl/unsigned:v1"
		pinned := imagetest.PushIndex(t, ref, labels, labels)
		stdout, stderr, err := runVerifyImage(t, "--key", key.Public, "--allow-insecure-registry", ref)
		if !errors.Is(err, image.ErrNoSignature) {
			t.Fatalf("verify-image = %v; want a refusal for the missing signature", err)
		}
		if line := fmt.Sprintf("kmsctl: %v", err); strings.Contains(line, "\n") || !strings.Contains(line, pinned) {
			t.Errorf("main would print %q; want one line naming %s", line, pinned)
		}
		if stdout != "" || stderr != "" {
			t.Errorf("stdout %q, stderr %q; want both empty (main prints the error)", stdout, stderr)
		}
	})

	t.Run("no --key => refused naming the flag, before any request", func(t *testing.T) {
		_, _, err := runVerifyImage(t, reg.Host+"/kmsctl/plugin:v1")
		if err == nil || !strings.Contains(err.Error(), "key") {
			t.Fatalf("verify-image without --key = %v; want an error naming --key", err)
		}
	})

	t.Run("a zero --timeout => refused naming the flag", func(t *testing.T) {
		_, _, err := runVerifyImage(t, "--key", key.Public, "--timeout", "0s", reg.Host+"/kmsctl/plugin:v1")
		if err == nil || !strings.Contains(err.Error(), "--timeout") {
			t.Fatalf("verify-image --timeout 0s = %v; want an error naming --timeout", err)
		}
	})
}
