//go:build integration

package plugin_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apiserver/pkg/storage/value"
	aestransformer "k8s.io/apiserver/pkg/storage/value/encrypt/aes"
	"k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	kmsservice "k8s.io/kms/pkg/service"

	"github.com/vaultkms/vault-kms-plugin/plugin/vaulttest"
)

// These tests run the real plugin binary against a real Vault, driven by the
// API server's own KMSv2 client.

func TestRoundTripThroughTheAPIServerClient(t *testing.T) {
	r := newRig(t, rigOptions{})
	ctx := context.Background()

	// GenerateTransformer is what the API server does on start: make a DEK
	// seed, Encrypt it, and validate the resulting EncryptedObject.
	transformer, obj, _, err := kmsv2.GenerateTransformer(ctx, "uid-1", r.client, true)
	if err != nil {
		t.Fatalf("GenerateTransformer: %v", err)
	}
	if !strings.HasPrefix(string(obj.EncryptedDEKSource), "vault:v1:") {
		t.Fatalf("encrypted DEK source = %q, want a transit v1 ciphertext", obj.EncryptedDEKSource)
	}
	if st := r.status(); st.KeyID != obj.KeyID || st.Version != "v2" {
		t.Fatalf("Status = %+v, Encrypt key_id = %q: they must agree", st, obj.KeyID)
	}
	if !strings.HasPrefix(obj.KeyID, "vault-transit:transit/kubernetes:v1:") || len(obj.KeyID) > 100 {
		t.Fatalf("key_id = %q", obj.KeyID)
	}

	// Decrypt the seed as the API server does after a restart, and check it
	// opens data sealed by the original transformer.
	seed, err := r.client.Decrypt(ctx, "uid-2", &kmsservice.DecryptRequest{Ciphertext: obj.EncryptedDEKSource, KeyID: obj.KeyID})
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	again, err := aestransformer.NewHKDFExtendedNonceGCMTransformer(seed)
	if err != nil {
		t.Fatal(err)
	}
	dataCtx := value.DefaultContext("/registry/secrets/default/s1")
	sealedData, err := transformer.TransformToStorage(ctx, []byte("top secret"), dataCtx)
	if err != nil {
		t.Fatal(err)
	}
	opened, _, err := again.TransformFromStorage(ctx, sealedData, dataCtx)
	if err != nil || string(opened) != "top secret" {
		t.Fatalf("data sealed with the original DEK did not open with the decrypted seed: %q, %v", opened, err)
	}
}

func TestRotationIsSeenWithinOneRefreshInterval(t *testing.T) {
	r := newRig(t, rigOptions{refresh: time.Second})
	ctx := context.Background()
	old, err := r.client.Encrypt(ctx, "uid", []byte("seed-under-v1"))
	if err != nil {
		t.Fatal(err)
	}

	rotated := time.Now()
	if v := r.vault.RotateKey(mount, key); v != 2 {
		t.Fatalf("rotated to version %d, want 2", v)
	}
	waitFor(t, 10*time.Second, "Status to report key version 2", func() bool {
		return strings.Contains(r.status().KeyID, ":v2:")
	})
	// One interval plus the Vault round trip, with slack for a loaded CI box.
	if seen := time.Since(rotated); seen > r.refresh+time.Second {
		t.Errorf("Status reported the rotation after %s, more than one interval (%s) plus 1s", seen, r.refresh)
	}
	st := r.status()
	if st.KeyID == old.KeyID {
		t.Fatal("key_id did not change on rotation")
	}

	resp, err := r.client.Encrypt(ctx, "uid", []byte("seed-under-v2"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.KeyID != st.KeyID || !strings.HasPrefix(string(resp.Ciphertext), "vault:v2:") {
		t.Fatalf("Encrypt after rotation: key_id %q ciphertext %.12q; Status key_id %q", resp.KeyID, resp.Ciphertext, st.KeyID)
	}
	pt, err := r.client.Decrypt(ctx, "uid", &kmsservice.DecryptRequest{Ciphertext: old.Ciphertext, KeyID: old.KeyID})
	if err != nil || string(pt) != "seed-under-v1" {
		t.Fatalf("old ciphertext after rotation: %q, %v", pt, err)
	}
	if got := r.metric("vault_kms_plugin_transit_key_version"); got != 2 {
		t.Errorf("transit_key_version metric = %v, want 2", got)
	}
}

func TestRecreatedKeyNeverReusesAKeyID(t *testing.T) {
	tests := []struct {
		name string
		o    rigOptions
		// sameSecond says whether a re-creation within the second the old
		// version was created is told apart (the metadata form's limit).
		sameSecond bool
	}{
		{name: "metadata mode => new key_id", o: rigOptions{}}, // re-created a second later
		{name: "hmac mode => new key_id", sameSecond: true,
			o: rigOptions{policy: vaulttest.PolicyHMAC(mount, key), extraArgs: []string{"-key-id-mode=hmac"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, tt.o)
			before := r.status().KeyID
			if !tt.sameSecond {
				// The metadata form's tag is v1's creation second.
				created, err := strconv.ParseInt(before[strings.LastIndexByte(before, ':')+1:], 10, 64)
				if err != nil {
					t.Fatalf("key_id %q: %v", before, err)
				}
				for time.Now().Unix() <= created {
					time.Sleep(50 * time.Millisecond)
				}
			}

			c := r.vault.Client.Logical()
			if _, err := c.Write(mount+"/keys/"+key+"/config", map[string]any{"deletion_allowed": true}); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Delete(mount + "/keys/" + key); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write(mount+"/keys/"+key, map[string]any{"type": "aes256-gcm96"}); err != nil {
				t.Fatal(err)
			}
			// Same name, same version number, different key material: Encrypt
			// must not wait for a refresh to tell.
			resp, err := r.client.Encrypt(context.Background(), "uid", []byte("seed"))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(resp.KeyID, ":v1:") {
				t.Fatalf("key_id %q, want version 1", resp.KeyID)
			}
			if resp.KeyID == before {
				t.Fatalf("re-created key got the old key_id %q", before)
			}
		})
	}
}

func TestTokenPastMaxTTLFailsNoCall(t *testing.T) {
	// token_ttl 2s and token_max_ttl 5s: over 12s of steady calls the
	// plugin must renew, hit the max TTL, and log in again several times.
	r := newRig(t, rigOptions{tokenTTL: 2 * time.Second, tokenMaxTTL: 5 * time.Second})
	ctx := context.Background()
	deadline := time.Now().Add(12 * time.Second)
	var calls, failures int
	for time.Now().Before(deadline) {
		resp, err := r.client.Encrypt(ctx, "uid", []byte("seed"))
		if err == nil {
			_, err = r.client.Decrypt(ctx, "uid", &kmsservice.DecryptRequest{Ciphertext: resp.Ciphertext, KeyID: resp.KeyID})
		}
		calls++
		if err != nil {
			failures++
			t.Errorf("call %d failed: %v", calls, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	logins := r.metric("vault_kms_plugin_vault_logins_total", `outcome="ok"`)
	renewals := r.metric("vault_kms_plugin_vault_token_renewals_total", `outcome="ok"`)
	t.Logf("%d calls, %d failures, %v logins, %v renewals", calls, failures, logins, renewals)
	if logins < 3 {
		t.Errorf("logins = %v over 12s with a 5s max TTL, want at least 3", logins)
	}
	if renewals < 1 {
		t.Errorf("renewals = %v, want at least 1", renewals)
	}
	if r.status().Healthz != "ok" {
		t.Errorf("healthz = %q", r.status().Healthz)
	}
}

func TestRotatedSecretIDIsUsedForTheNextLogin(t *testing.T) {
	r := newRig(t, rigOptions{})
	loginsBefore := r.metric("vault_kms_plugin_vault_logins_total", `outcome="ok"`)

	// Rotate as an operator would: issue a new secret ID, swap the file
	// atomically, destroy the old one. A login with the old one would fail.
	newID := r.vault.NewSecretID(r.role)
	writeFileAtomic(t, r.secretIDPath, newID)
	r.vault.DestroySecretID(r.role, r.secretID)

	waitFor(t, 10*time.Second, "a login with the new secret ID", func() bool {
		return r.metric("vault_kms_plugin_vault_logins_total", `outcome="ok"`) > loginsBefore
	})
	if failed := r.metric("vault_kms_plugin_vault_logins_total", `outcome="400"`); failed != 0 {
		t.Fatalf("%v failed logins: the old secret ID was used", failed)
	}
	if _, err := r.client.Encrypt(context.Background(), "uid", []byte("seed")); err != nil {
		t.Fatalf("Encrypt after secret-id rotation: %v", err)
	}
}

func TestVaultOutageIsReportedAndRecoveredWithoutRestart(t *testing.T) {
	r := newRig(t, rigOptions{persistent: true, refresh: time.Second})
	ctx := context.Background()
	resp, err := r.client.Encrypt(ctx, "uid", []byte("seed"))
	if err != nil {
		t.Fatal(err)
	}
	keyID := r.status().KeyID
	pid := r.plugin.cmd.Process.Pid

	r.vault.Stop()
	down := time.Now()
	waitFor(t, 10*time.Second, "healthz to stop being ok", func() bool { return r.status().Healthz != "ok" })
	// One interval, plus the retry budget the client spends riding out a
	// failover before it gives up (bounded by the refresh's deadline).
	if d := time.Since(down); d > r.refresh+2*time.Second {
		t.Errorf("outage reported after %s, more than one interval (%s) plus 2s", d, r.refresh)
	}
	st := r.status()
	t.Logf("healthz while Vault is down: %q", st.Healthz)
	if st.KeyID != keyID {
		t.Errorf("key_id changed during the outage: %q", st.KeyID)
	}
	if code, body := r.getCode("/readyz"); code != 503 || !strings.Contains(body, "connection refused") {
		t.Errorf("/readyz = %d %q, want 503 with the cause", code, body)
	}
	_, err = r.client.Decrypt(ctx, "uid", &kmsservice.DecryptRequest{Ciphertext: resp.Ciphertext, KeyID: resp.KeyID})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("Decrypt with Vault down = %v, want Unavailable", err)
	}

	r.vault.Start()
	r.waitHealthy(20 * time.Second)
	pt, err := r.client.Decrypt(ctx, "uid", &kmsservice.DecryptRequest{Ciphertext: resp.Ciphertext, KeyID: resp.KeyID})
	if err != nil || string(pt) != "seed" {
		t.Fatalf("Decrypt after Vault came back: %q, %v", pt, err)
	}
	if r.plugin.cmd.Process.Pid != pid {
		t.Fatal("plugin restarted")
	}
	select {
	case <-r.plugin.done:
		t.Fatal("plugin exited during the outage")
	default:
	}
}

func TestBadCiphertextsAreRefusedClearly(t *testing.T) {
	r := newRig(t, rigOptions{})
	ctx := context.Background()
	good, err := r.client.Encrypt(ctx, "uid", []byte("seed"))
	if err != nil {
		t.Fatal(err)
	}
	goodCT := string(good.Ciphertext)
	payload, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(goodCT, "vault:v1:"))
	tampered := append([]byte(nil), payload...)
	tampered[len(tampered)/2] ^= 0x01

	tests := []struct {
		name       string
		ciphertext string
		keyID      string
		want       codes.Code
		msg        string
	}{
		{name: "tampered payload => InvalidArgument", ciphertext: "vault:v1:" + base64.StdEncoding.EncodeToString(tampered), want: codes.InvalidArgument, msg: "tampered"},
		{name: "truncated payload => InvalidArgument", ciphertext: goodCT[:len(goodCT)-20], want: codes.InvalidArgument},
		{name: "garbage => InvalidArgument", ciphertext: "\x00\xffnot a ciphertext", want: codes.InvalidArgument, msg: "not a Vault transit ciphertext"},
		{name: "unknown key version => FailedPrecondition", ciphertext: strings.Replace(goodCT, "vault:v1:", "vault:v99:", 1), want: codes.FailedPrecondition, msg: "does not exist"},
		{name: "key_id for another version => InvalidArgument", ciphertext: goodCT, keyID: strings.Replace(good.KeyID, ":v1:", ":v2:", 1), want: codes.InvalidArgument, msg: "tampered"},
		{name: "oversize => InvalidArgument", ciphertext: "vault:v1:" + strings.Repeat("A", 4096), want: codes.InvalidArgument, msg: "1024"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.client.Decrypt(ctx, "uid", &kmsservice.DecryptRequest{Ciphertext: []byte(tt.ciphertext), KeyID: tt.keyID})
			if status.Code(err) != tt.want || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Decrypt = %v, want %v mentioning %q", err, tt.want, tt.msg)
			}
		})
	}

	t.Run("version below min_decryption_version => FailedPrecondition", func(t *testing.T) {
		r.vault.RotateKey(mount, key)
		if _, err := r.vault.Client.Logical().Write(mount+"/keys/"+key+"/config", map[string]any{"min_decryption_version": 2}); err != nil {
			t.Fatal(err)
		}
		_, err := r.client.Decrypt(ctx, "uid", &kmsservice.DecryptRequest{Ciphertext: good.Ciphertext, KeyID: good.KeyID})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "min_decryption_version") {
			t.Fatalf("Decrypt = %v, want FailedPrecondition naming min_decryption_version", err)
		}
		// Reversible: lowering it makes the object readable again.
		if _, err := r.vault.Client.Logical().Write(mount+"/keys/"+key+"/config", map[string]any{"min_decryption_version": 1}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.client.Decrypt(ctx, "uid", &kmsservice.DecryptRequest{Ciphertext: good.Ciphertext, KeyID: good.KeyID}); err != nil {
			t.Fatalf("Decrypt after lowering min_decryption_version: %v", err)
		}
	})

	// None of that hurt the plugin.
	if _, err := r.client.Decrypt(ctx, "uid", &kmsservice.DecryptRequest{Ciphertext: good.Ciphertext, KeyID: good.KeyID}); err != nil {
		t.Fatalf("good ciphertext after bad ones: %v", err)
	}
}

func TestFailoverToTheNextVaultAddress(t *testing.T) {
	dead := "http://127.0.0.1:1"
	r := newRig(t, rigOptions{addresses: func(live string) string { return dead + "," + live }})
	resp, err := r.client.Encrypt(context.Background(), "uid", []byte("seed"))
	if err != nil {
		t.Fatalf("Encrypt with the first Vault address dead: %v", err)
	}
	if _, err := r.client.Decrypt(context.Background(), "uid", &kmsservice.DecryptRequest{Ciphertext: resp.Ciphertext, KeyID: resp.KeyID}); err != nil {
		t.Fatal(err)
	}
}

func TestNoSecretInArgvLogsOrMetrics(t *testing.T) {
	r := newRig(t, rigOptions{tokenTTL: 2 * time.Second, tokenMaxTTL: 4 * time.Second})
	ctx := context.Background()
	plaintext := []byte("plaintext-dek-seed-0123456789abc")
	resp, err := r.client.Encrypt(ctx, "uid", plaintext)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.client.Decrypt(ctx, "uid", &kmsservice.DecryptRequest{Ciphertext: resp.Ciphertext, KeyID: resp.KeyID}); err != nil {
		t.Fatal(err)
	}
	// Exercise renewals, re-logins and errors so their log lines exist.
	time.Sleep(5 * time.Second)
	_, _ = r.client.Decrypt(ctx, "uid", &kmsservice.DecryptRequest{Ciphertext: []byte("vault:v1:AAAA")})

	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", r.plugin.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	places := map[string]string{
		"argv":    string(cmdline),
		"log":     r.plugin.log(),
		"metrics": r.get("/metrics"),
		"readyz":  r.get("/readyz"),
	}
	secrets := map[string]string{
		"secret ID":           r.secretID,
		"Vault token":         "hvs.",
		"root token":          r.vault.RootToken,
		"plaintext":           string(plaintext),
		"plaintext as base64": base64.StdEncoding.EncodeToString(plaintext),
		"plaintext as hex":    hex.EncodeToString(plaintext),
	}
	for where, text := range places {
		for what, secret := range secrets {
			if strings.Contains(text, secret) {
				t.Errorf("%s contains the %s", where, what)
			}
		}
	}
	if !strings.Contains(places["log"], "Renewed Vault token") && !strings.Contains(places["log"], "Logged in to Vault") {
		t.Errorf("log has no token lifecycle lines; the check above proved nothing:\n%s", tail(places["log"], 2000))
	}
}

func TestConcurrentCallsAllAnswerCorrectly(t *testing.T) {
	r := newRig(t, rigOptions{})
	ctx := context.Background()
	var cts []*kmsservice.EncryptResponse
	for i := 0; i < 8; i++ {
		resp, err := r.client.Encrypt(ctx, "uid", []byte(fmt.Sprintf("seed-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		cts = append(cts, resp)
	}
	var ok atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				n := (g + i) % len(cts)
				pt, err := r.client.Decrypt(ctx, "uid", &kmsservice.DecryptRequest{Ciphertext: cts[n].Ciphertext, KeyID: cts[n].KeyID})
				if err != nil || string(pt) != fmt.Sprintf("seed-%d", n) {
					t.Errorf("decrypt %d: %q, %v", n, pt, err)
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 32*20 {
		t.Fatalf("%d of %d concurrent decrypts answered correctly", ok.Load(), 32*20)
	}
	// Coalescing and dedupe: far fewer Vault calls than KMS calls.
	vaultCalls := r.metric("vault_kms_plugin_vault_request_duration_seconds_count", `operation="transit decrypt"`)
	t.Logf("%d concurrent decrypts took %v Vault calls", 32*20, vaultCalls)
	if vaultCalls == 0 || vaultCalls >= 32*20/2 {
		t.Errorf("%v Vault decrypt calls for %d concurrent decrypts of 8 ciphertexts: not coalesced", vaultCalls, 32*20)
	}
}

func TestABadCiphertextInABatchFailsOnlyItsCaller(t *testing.T) {
	// One slot to Vault, so concurrent calls are forced into shared batches.
	r := newRig(t, rigOptions{extraArgs: []string{"-batch-max-in-flight=1"}})
	ctx := context.Background()
	good := make([]*kmsservice.EncryptResponse, 16)
	for i := range good {
		resp, err := r.client.Encrypt(ctx, "uid", []byte(fmt.Sprintf("seed-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		good[i] = resp
	}
	payload, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(string(good[0].Ciphertext), "vault:v1:"))
	payload[len(payload)/2] ^= 1
	tampered := []byte("vault:v1:" + base64.StdEncoding.EncodeToString(payload))

	before := r.metric("vault_kms_plugin_vault_request_duration_seconds_count", `operation="transit decrypt"`)
	var wg sync.WaitGroup
	for round := 0; round < 5; round++ {
		for i := range good {
			wg.Add(2)
			go func() {
				defer wg.Done()
				pt, err := r.client.Decrypt(ctx, "uid", &kmsservice.DecryptRequest{Ciphertext: good[i].Ciphertext, KeyID: good[i].KeyID})
				if err != nil || string(pt) != fmt.Sprintf("seed-%d", i) {
					t.Errorf("good ciphertext %d: %q, %v", i, pt, err)
				}
			}()
			go func() {
				defer wg.Done()
				_, err := r.client.Decrypt(ctx, "uid", &kmsservice.DecryptRequest{Ciphertext: tampered})
				if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "message authentication failed") {
					t.Errorf("tampered ciphertext: %v, want InvalidArgument", err)
				}
			}()
		}
	}
	wg.Wait()
	calls := r.metric("vault_kms_plugin_vault_request_duration_seconds_count", `operation="transit decrypt"`) - before
	t.Logf("160 decrypts (80 tampered) in %v Vault calls", calls)
	if calls >= 80 {
		t.Errorf("%v Vault calls for 160 concurrent decrypts: they were not batched", calls)
	}
}

func TestGracefulShutdownFinishesCallsInFlight(t *testing.T) {
	r := newRig(t, rigOptions{})
	ctx := context.Background()
	resp, err := r.client.Encrypt(ctx, "uid", []byte("seed"))
	if err != nil {
		t.Fatal(err)
	}
	// Freeze Vault so the calls below are provably inside the plugin when
	// SIGTERM arrives.
	r.vault.Pause()
	const inFlight = 8
	errs := make(chan error, inFlight)
	for i := 0; i < inFlight; i++ {
		go func() {
			pt, err := r.client.Decrypt(ctx, "uid", &kmsservice.DecryptRequest{Ciphertext: resp.Ciphertext, KeyID: resp.KeyID})
			if err == nil && string(pt) != "seed" {
				err = fmt.Errorf("wrong plaintext %q", pt)
			}
			errs <- err
		}()
	}
	waitFor(t, 5*time.Second, "calls in flight", func() bool {
		return r.metric("vault_kms_plugin_requests_in_flight", `method="Decrypt"`) == inFlight
	})
	if err := r.plugin.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if _, err := os.Lstat(r.sock); err != nil {
		t.Fatalf("socket removed before calls in flight finished: %v", err)
	}
	r.vault.Resume()
	for i := 0; i < inFlight; i++ {
		if err := <-errs; err != nil {
			t.Errorf("call in flight at SIGTERM: %v", err)
		}
	}
	if code := r.plugin.wait(10 * time.Second); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0", code)
	}
	if _, err := os.Lstat(r.sock); !os.IsNotExist(err) {
		t.Fatalf("socket still there after shutdown: %v", err)
	}
	if !strings.Contains(r.plugin.log(), "Shutting down") {
		t.Error("no shutdown line in the log")
	}
}

func TestTLSWithCAServerNameAndClientCertificate(t *testing.T) {
	r := newRig(t, rigOptions{tls: true})
	resp, err := r.client.Encrypt(context.Background(), "uid", []byte("seed"))
	if err != nil {
		t.Fatalf("Encrypt over TLS: %v", err)
	}
	if _, err := r.client.Decrypt(context.Background(), "uid", &kmsservice.DecryptRequest{Ciphertext: resp.Ciphertext, KeyID: resp.KeyID}); err != nil {
		t.Fatal(err)
	}

	// Verification is on by default: each missing piece is refused, and
	// Status says why.
	tests := []struct {
		name string
		drop []string
		want string
	}{
		{name: "no CA file => unknown authority", drop: []string{"-tls-ca-file="}, want: "certificate signed by unknown authority"},
		{name: "no server name => certificate does not match 127.0.0.1", drop: []string{"-tls-sni="}, want: "doesn't contain any IP SANs"},
		// In TLS 1.3 the server judges the client certificate after the
		// client has finished its side of the handshake, so the client sees
		// either the server's alert or the closed connection on its first
		// write, whichever comes first.
		{name: "no client certificate => Vault refuses the handshake", drop: []string{"-tls-client-cert=", "-tls-client-key="}, want: "certificate required|broken pipe|connection reset"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, client, _ := r.startPlugin(r.argsWithout(tt.drop...))
			var st *kmsservice.StatusResponse
			waitFor(t, 10*time.Second, "a TLS failure in Status", func() bool {
				s, err := client.Status(context.Background())
				st = s
				return err == nil && !strings.HasPrefix(s.Healthz, "starting")
			})
			t.Logf("healthz: %s", st.Healthz)
			if st.Healthz == "ok" || !containsAny(st.Healthz, strings.Split(tt.want, "|")) {
				t.Fatalf("healthz = %q, want a failure mentioning %q", st.Healthz, tt.want)
			}
			if _, err := client.Encrypt(context.Background(), "uid", []byte("seed")); status.Code(err) != codes.Unavailable {
				t.Fatalf("Encrypt = %v, want Unavailable", err)
			}
			p.stop()
		})
	}
}

func TestVaultEnvironmentOfThePodIsIgnored(t *testing.T) {
	r := newRig(t, rigOptions{tls: true})
	flagValue := func(name string) string {
		for _, a := range r.args {
			if v, ok := strings.CutPrefix(a, "-"+name+"="); ok {
				return v
			}
		}
		t.Fatalf("the rig passes no -%s", name)
		return ""
	}
	// What a pod's environment may carry: malformed values that vault/api
	// refuses, and valid ones that would redirect the plugin, give it
	// another identity, or loosen TLS if they were read.
	env := append(os.Environ(),
		"VAULT_HEADERS={not json",
		"VAULT_SKIP_VERIFY=true",
		"VAULT_RATE_LIMIT=garbage",
		"VAULT_MAX_RETRIES=many",
		"VAULT_CLIENT_TIMEOUT=soon",
		"VAULT_TOKEN=s.from-the-environment",
		"VAULT_ADDR=http://127.0.0.1:1",
		"VAULT_AGENT_ADDR=http://127.0.0.1:1",
		"VAULT_NAMESPACE=env-ns",
		"VAULT_WRAP_TTL=5m",
		"VAULT_CACERT="+flagValue("tls-ca-file"),
		"VAULT_TLS_SERVER_NAME="+flagValue("tls-sni"),
	)

	t.Run("malformed and foreign VAULT_* variables => the plugin starts and serves", func(t *testing.T) {
		p, client, _ := r.startPluginEnv(r.args, env)
		waitFor(t, 30*time.Second, "Status healthz ok", func() bool {
			st, err := client.Status(context.Background())
			return err == nil && st.Healthz == "ok"
		})
		resp, err := client.Encrypt(context.Background(), "uid", []byte("seed"))
		if err != nil {
			t.Fatalf("Encrypt: %v", err)
		}
		pt, err := client.Decrypt(context.Background(), "uid", &kmsservice.DecryptRequest{Ciphertext: resp.Ciphertext, KeyID: resp.KeyID})
		if err != nil || string(pt) != "seed" {
			t.Fatalf("Decrypt = %q, %v", pt, err)
		}
		p.stop()
	})
	t.Run("VAULT_SKIP_VERIFY and VAULT_CACERT without -tls-ca-file => Vault's certificate is still refused", func(t *testing.T) {
		p, client, _ := r.startPluginEnv(r.argsWithout("-tls-ca-file="), env)
		var st *kmsservice.StatusResponse
		waitFor(t, 15*time.Second, "a TLS failure in Status", func() bool {
			s, err := client.Status(context.Background())
			st = s
			return err == nil && !strings.HasPrefix(s.Healthz, "starting")
		})
		if !strings.Contains(st.Healthz, "certificate signed by unknown authority") {
			t.Fatalf("healthz = %q, want Vault's certificate refused", st.Healthz)
		}
		p.stop()
	})
}

func TestADeletedTransitKeyIsNamedWithoutALoginStorm(t *testing.T) {
	r := newRig(t, rigOptions{})
	ctx := context.Background()
	resp, err := r.client.Encrypt(ctx, "uid", []byte("seed"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.vault.Client.Logical().Write(mount+"/keys/"+key+"/config", map[string]any{"deletion_allowed": true})
	r.vault.Must(err, "allow deletion")
	_, err = r.vault.Client.Logical().Delete(mount + "/keys/" + key)
	r.vault.Must(err, "delete transit key")
	loginsBefore := r.metric("vault_kms_plugin_vault_logins_total")

	want := "transit key " + mount + "/" + key + " not found"
	for i := 0; i < 5; i++ {
		_, err := r.client.Encrypt(ctx, "uid", []byte("seed"))
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), want) {
			t.Fatalf("Encrypt after the key was deleted = %v, want FailedPrecondition saying %q", err, want)
		}
		_, err = r.client.Decrypt(ctx, "uid", &kmsservice.DecryptRequest{Ciphertext: resp.Ciphertext, KeyID: resp.KeyID})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "tampered") {
			t.Fatalf("Decrypt after the key was deleted = %v, want FailedPrecondition saying %q", err, want)
		}
	}
	if n := r.metric("vault_kms_plugin_vault_logins_total") - loginsBefore; n != 0 {
		t.Fatalf("%v logins after the key was deleted: a missing key was taken for a refused token", n)
	}
	waitFor(t, 5*time.Second, "Status naming the missing key", func() bool {
		return strings.Contains(r.status().Healthz, want)
	})
}

func TestTokenFileAuthPicksUpANewToken(t *testing.T) {
	r := newRig(t, rigOptions{})
	newToken := func() string {
		sec, err := r.vault.Client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"kms-plugin"}, TTL: "1h"})
		if err != nil {
			t.Fatal(err)
		}
		return sec.Auth.ClientToken
	}
	tokenPath := filepath.Join(t.TempDir(), "token")
	first := newToken()
	writeFileAtomic(t, tokenPath, first)
	p, client, _ := r.startPlugin(append(r.argsWithout("-approle-"), "-vault-token-path="+tokenPath))
	waitFor(t, 10*time.Second, "healthy with a token file", func() bool {
		s, err := client.Status(context.Background())
		return err == nil && s.Healthz == "ok"
	})

	// Replace the file, then revoke the old token: the plugin must be
	// using the new one.
	writeFileAtomic(t, tokenPath, newToken())
	time.Sleep(3 * time.Second) // the keeper polls the file every 2s
	if err := r.vault.Client.Auth().Token().RevokeTree(first); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Encrypt(context.Background(), "uid", []byte("seed")); err != nil {
		t.Fatalf("Encrypt after the token file changed and the old token was revoked: %v\n%s", err, tail(p.log(), 2000))
	}
	if strings.Contains(p.log(), first) {
		t.Fatal("the token appears in the log")
	}
}

func TestRoleIDFromAFile(t *testing.T) {
	r := newRig(t, rigOptions{})
	roleIDPath := filepath.Join(t.TempDir(), "role-id")
	writeFileAtomic(t, roleIDPath, r.role.RoleID+"\n")
	_, client, _ := r.startPlugin(append(r.argsWithout("-approle-role-id="), "-approle-role-id-path="+roleIDPath))
	waitFor(t, 10*time.Second, "healthy with the role ID from a file", func() bool {
		s, err := client.Status(context.Background())
		return err == nil && s.Healthz == "ok"
	})
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
