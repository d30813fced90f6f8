package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kmsservice "k8s.io/kms/pkg/service"

	"github.com/vaultkms/vault-kms-plugin/e2e/cluster"
)

const namespace = "default"

// keyIDPattern is the plugin's key_id: vault-transit:<mount>/<key>:v<N>:<tag>,
// the tag the version's creation time in decimal (-key-id-mode=metadata,
// the default) or an HMAC fingerprint in hex (hmac); both fit [0-9a-f]+.
var keyIDPattern = regexp.MustCompile(`^vault-transit:transit/kubernetes:v(\d+):[0-9a-f]+$`)

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// secretValue is a plaintext that cannot appear in etcd by accident.
func secretValue(name string) string {
	return "e2e-plaintext-" + name + "-" + randomHex(12)
}

func newSecret(name, value string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Data:       map[string][]byte{"password": []byte(value)},
	}
}

func tryCreateSecret(ctx context.Context, a *cluster.APIServer, name, value string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := a.Client.CoreV1().Secrets(namespace).Create(ctx, newSecret(name, value), metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create secret %s through %s: %w", name, a.Name, err)
	}
	return nil
}

// createSecrets creates n Secrets named prefix-0..n-1 through a and returns
// name → plaintext.
func createSecrets(t *testing.T, a *cluster.APIServer, prefix string, n int) map[string]string {
	t.Helper()
	out := map[string]string{}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("%s-%d", prefix, i)
		value := secretValue(name)
		if err := tryCreateSecret(context.Background(), a, name, value); err != nil {
			t.Fatal(err)
		}
		out[name] = value
	}
	return out
}

func readSecret(ctx context.Context, a *cluster.APIServer, name string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := a.Client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("read secret %s through %s: %w", name, a.Name, err)
	}
	return string(s.Data["password"]), nil
}

// checkReads reads every Secret through a and returns one error per Secret
// that did not read back its plaintext.
func checkReads(a *cluster.APIServer, secrets map[string]string) []error {
	var errs []error
	for name, want := range secrets {
		got, err := readSecret(context.Background(), a, name)
		switch {
		case err != nil:
			errs = append(errs, err)
		case got != want:
			errs = append(errs, fmt.Errorf("secret %s through %s: read %q, wrote %q", name, a.Name, got, want))
		}
	}
	return errs
}

func assertReads(t *testing.T, a *cluster.APIServer, secrets map[string]string) {
	t.Helper()
	errs := checkReads(a, secrets)
	for _, err := range errs {
		t.Error(err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
}

// assertStoredEncrypted checks the raw etcd value of a Secret: it starts
// with k8s:enc:kms:v2:<provider>:, holds an EncryptedObject with one of our
// key_ids, and contains the plaintext neither raw nor base64-encoded.
func assertStoredEncrypted(t *testing.T, c *cluster.Cluster, name, plaintext string) *cluster.Stored {
	t.Helper()
	raw, err := c.Etcd.Get(context.Background(), cluster.SecretKey(namespace, name))
	if err != nil {
		t.Fatal(err)
	}
	if raw == nil {
		t.Fatalf("etcd has no value for %s", cluster.SecretKey(namespace, name))
	}
	for _, form := range []string{plaintext, base64.StdEncoding.EncodeToString([]byte(plaintext))} {
		if bytes.Contains(raw, []byte(form)) {
			t.Fatalf("etcd value of secret %s contains its plaintext %q", name, form)
		}
	}
	stored, err := cluster.ParseStored(raw)
	if err != nil {
		t.Fatalf("secret %s: %v", name, err)
	}
	if !keyIDPattern.MatchString(stored.Object.KeyID) {
		t.Fatalf("secret %s: stored key_id %q is not vault-transit:transit/kubernetes:v<N>:<tag>", name, stored.Object.KeyID)
	}
	return stored
}

// assertPluginDecrypts decrypts a stored object's DEK source through the
// plugin directly, as an API server with a cold cache would.
func assertPluginDecrypts(t *testing.T, kms kmsservice.Service, stored *cluster.Stored) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := kms.Decrypt(ctx, "e2e-"+randomHex(4), &kmsservice.DecryptRequest{
		Ciphertext:  stored.Object.EncryptedDEKSource,
		KeyID:       stored.Object.KeyID,
		Annotations: stored.Object.Annotations,
	})
	if err != nil {
		t.Fatalf("plugin could not decrypt the DEK source of a stored object (key_id %s): %v", stored.Object.KeyID, err)
	}
}

// statusKeyID returns the key_id the plugin reports, failing unless it is
// healthy.
func statusKeyID(t *testing.T, kms kmsservice.Service) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := kms.Status(ctx)
	if err != nil {
		t.Fatalf("plugin Status: %v", err)
	}
	if st.Healthz != "ok" || st.Version != "v2" {
		t.Fatalf("plugin Status: version %q healthz %q, want v2 ok", st.Version, st.Healthz)
	}
	return st.KeyID
}

// pluginMetric sums a plugin metric's samples that carry labels.
func pluginMetric(t *testing.T, p *cluster.Plugin, name string, labels map[string]string) float64 {
	t.Helper()
	m, err := p.Metrics()
	if err != nil {
		t.Fatalf("%s metrics: %v", p.Name, err)
	}
	return cluster.Sum(cluster.ParseMetrics(m), name, labels)
}

// waitFor polls cond every 250ms until it is true or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitLogLine waits until the process logs, after offset, a line containing
// every one of subs, and returns it.
func waitLogLine(p *cluster.Process, offset int, timeout time.Duration, subs ...string) (string, bool) {
	var found string
	ok := waitFor(timeout, func() bool {
		log := p.Log()
		if offset > len(log) {
			offset = 0
		}
		for _, line := range strings.Split(log[offset:], "\n") {
			all := true
			for _, s := range subs {
				if !strings.Contains(line, s) {
					all = false
					break
				}
			}
			if all {
				found = line
				return true
			}
		}
		return false
	})
	return found, ok
}

// call is one operation of a load run.
type call struct {
	at  time.Time
	op  string
	err error
}

// load runs steady traffic until stopped: through each API server, a write
// of a new Secret and a read of an earlier one; through each KMS client, an
// Encrypt and a Decrypt of a fresh DEK-sized plaintext. It records every call.
type load struct {
	stop chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	calls   []call
	written map[string]string
}

func startLoad(prefix string, every time.Duration, apis []*cluster.APIServer, kms []kmsservice.Service) *load {
	l := &load{stop: make(chan struct{}), written: map[string]string{}}
	for i, a := range apis {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			var mine []string
			for n := 0; ; n++ {
				name := fmt.Sprintf("%s-%d-%d", prefix, i, n)
				value := secretValue(name)
				err := tryCreateSecret(context.Background(), a, name, value)
				l.record("write", err)
				if err == nil {
					l.mu.Lock()
					l.written[name] = value
					l.mu.Unlock()
					mine = append(mine, name)
				}
				if len(mine) > 0 {
					old := mine[n%len(mine)]
					got, err := readSecret(context.Background(), a, old)
					l.mu.Lock()
					want := l.written[old]
					l.mu.Unlock()
					if err == nil && got != want {
						err = fmt.Errorf("secret %s: read %q, wrote %q", old, got, want)
					}
					l.record("read", err)
				}
				if !l.sleep(every) {
					return
				}
			}
		}()
	}
	for _, k := range kms {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				l.record("kms", kmsRoundTrip(k))
				if !l.sleep(every) {
					return
				}
			}
		}()
	}
	return l
}

func kmsRoundTrip(k kmsservice.Service) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dek := make([]byte, 32)
	_, _ = rand.Read(dek)
	uid := "e2e-" + randomHex(4)
	enc, err := k.Encrypt(ctx, uid, dek)
	if err != nil {
		return fmt.Errorf("KMS Encrypt: %w", err)
	}
	pt, err := k.Decrypt(ctx, uid, &kmsservice.DecryptRequest{Ciphertext: enc.Ciphertext, KeyID: enc.KeyID, Annotations: enc.Annotations})
	if err != nil {
		return fmt.Errorf("KMS Decrypt: %w", err)
	}
	if !bytes.Equal(pt, dek) {
		return fmt.Errorf("KMS Decrypt returned other bytes than were encrypted")
	}
	return nil
}

func (l *load) record(op string, err error) {
	l.mu.Lock()
	l.calls = append(l.calls, call{at: time.Now(), op: op, err: err})
	l.mu.Unlock()
}

func (l *load) sleep(d time.Duration) bool {
	select {
	case <-l.stop:
		return false
	case <-time.After(d):
		return true
	}
}

// Stop ends the traffic and waits for calls in flight.
func (l *load) Stop() {
	close(l.stop)
	l.wg.Wait()
}

// Calls returns the calls of kind op ("" for all) made in [from, to).
func (l *load) Calls(op string, from, to time.Time) (total int, failed []call) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.calls {
		if (op != "" && c.op != op) || c.at.Before(from) || !c.at.Before(to) {
			continue
		}
		total++
		if c.err != nil {
			failed = append(failed, c)
		}
	}
	return total, failed
}

// Written returns the Secrets written so far, name → plaintext.
func (l *load) Written() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]string, len(l.written))
	for k, v := range l.written {
		out[k] = v
	}
	return out
}

// report logs a summary of the calls per kind and every failure.
func (l *load) report(t *testing.T, from, to time.Time) (failures int) {
	t.Helper()
	for _, op := range []string{"write", "read", "kms"} {
		total, failed := l.Calls(op, from, to)
		if total == 0 {
			continue
		}
		t.Logf("%-5s calls: %d, failed: %d", op, total, len(failed))
		for _, c := range failed {
			t.Logf("  failed %s at +%.1fs: %v", c.op, c.at.Sub(from).Seconds(), c.err)
		}
		failures += len(failed)
	}
	return failures
}

func firstLine(body string, err error) string {
	if err != nil {
		return err.Error()
	}
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "[-]") {
			return line
		}
	}
	return strings.SplitN(body, "\n", 2)[0]
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
