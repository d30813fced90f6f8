// Package probe checks, from a control-plane node, that a KMS plugin socket
// and an API server are healthy enough for the next rollout step: the
// plugin answers Status and survives the round trip OpenShift's KMS
// preflight makes (Encrypt, then Decrypt returns the plaintext), and the API
// server's kms-providers check passes with the EncryptionConfiguration it
// loaded. It fills lifecycle.PluginHealth and lifecycle.APIServerHealth for
// the rollout planner; it decides nothing.
package probe

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	kmsapi "k8s.io/kms/apis/v2"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/apiserver"
)

// CallTimeout is each call's deadline: the API server's own for KMSv2.
const CallTimeout = 3 * time.Second

// Plugin checks the plugin serving the unix socket at path: Status must
// answer version v2, healthz "ok" and a key_id, and a random 32-byte seed
// must come back from Encrypt then Decrypt. Running is left zero: which
// revision a process runs is the caller's to tell.
func Plugin(ctx context.Context, path string) lifecycle.PluginHealth {
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return lifecycle.PluginHealth{Err: fmt.Sprintf("plugin socket %s: %v", path, err)}
	}
	defer conn.Close()
	kms := kmsapi.NewKeyManagementServiceClient(conn)

	var h lifecycle.PluginHealth
	call, cancel := context.WithTimeout(ctx, CallTimeout)
	st, err := kms.Status(call, &kmsapi.StatusRequest{})
	cancel()
	if err != nil {
		h.Err = fmt.Sprintf("plugin socket %s: Status: %v", path, err)
		return h
	}
	h.Healthz, h.KeyID = st.Healthz, st.KeyId
	switch {
	case st.Version != "v2" || st.Healthz != "ok" || st.KeyId == "":
		h.Err = fmt.Sprintf("plugin socket %s: Status answered version %q, healthz %q, key_id %q; want v2, ok and a key_id", path, st.Version, st.Healthz, st.KeyId)
		return h
	}
	h.StatusOK = true

	seed := make([]byte, 32)
	if _, err := rand.Read(seed); err != nil {
		h.Err = fmt.Sprintf("preflight: random seed: %v", err)
		return h
	}
	call, cancel = context.WithTimeout(ctx, CallTimeout)
	enc, err := kms.Encrypt(call, &kmsapi.EncryptRequest{Plaintext: seed, Uid: "kmsctl-preflight"})
	cancel()
	if err != nil {
		h.Err = fmt.Sprintf("plugin socket %s: preflight Encrypt: %v", path, err)
		return h
	}
	call, cancel = context.WithTimeout(ctx, CallTimeout)
	dec, err := kms.Decrypt(call, &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: enc.KeyId, Uid: "kmsctl-preflight", Annotations: enc.Annotations})
	cancel()
	switch {
	case err != nil:
		h.Err = fmt.Sprintf("plugin socket %s: preflight Decrypt: %v", path, err)
	case !bytes.Equal(dec.Plaintext, seed):
		h.Err = fmt.Sprintf("plugin socket %s: preflight Decrypt returned other bytes than were encrypted", path)
	default:
		h.PreflightOK = true
	}
	return h
}

// APIServer checks one API server: its kms-providers readiness check, and
// the hash of the EncryptionConfiguration it has loaded (its metrics).
func APIServer(ctx context.Context, obs *apiserver.Observer) lifecycle.APIServerHealth {
	var h lifecycle.APIServerHealth
	var errs []string
	if err := obs.KMSReady(ctx); err != nil {
		errs = append(errs, err.Error())
	} else {
		h.ReadyzKMS = true
	}
	seen, err := obs.Observe(ctx)
	if err != nil {
		errs = append(errs, err.Error())
	} else if h.LoadedConfigHash = seen.ConfigHash; h.LoadedConfigHash == "" {
		errs = append(errs, fmt.Sprintf("API server %s: its metrics carry no EncryptionConfiguration hash: run it with --encryption-provider-config-automatic-reload", obs.URL))
	}
	h.Err = strings.Join(errs, "; ")
	return h
}
