// Package apiserver observes kube-apiservers through what each reports about
// its KMS providers in its own metrics, read from each API server's own
// address: behind a load balancer, one request would see one API server.
package apiserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/rest"
)

// statusKeyIDMetric is set by the API server each time a KMSv2 plugin's
// Status returns a key_id, labelled with the key_id's hash (checked in
// k8s.io/apiserver v0.37.2, storage/value/encrypt/envelope/metrics).
const statusKeyIDMetric = "apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds"

// KeyIDHash is how kube-apiserver labels a key_id in its metrics.
func KeyIDHash(keyID string) string {
	sum := sha256.Sum256([]byte(keyID))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Observer reads one API server's metrics.
type Observer struct {
	// URL is the API server's own address, https://host:port.
	URL    string
	client *http.Client
}

// New returns an Observer of the API server at url, with cfg's credentials
// and TLS settings (a kubeconfig's), whatever server cfg names.
func New(cfg *rest.Config, url string) (*Observer, error) {
	c := rest.CopyConfig(cfg)
	c.Host = url
	hc, err := rest.HTTPClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("API server %s: %w", url, err)
	}
	return &Observer{URL: strings.TrimRight(url, "/"), client: hc}, nil
}

// Observation is what one API server reports about its encryption.
type Observation struct {
	// KeyIDs maps the hash (KeyIDHash) of each key_id its KMSv2 plugins'
	// Status returned to when it was last returned.
	KeyIDs map[string]time.Time `json:"keyIDs"`
	// ConfigHash is "sha256:<hex>" of the EncryptionConfiguration file it
	// has loaded (with --encryption-provider-config-automatic-reload),
	// empty if it does not say.
	ConfigHash string `json:"configHash,omitempty"`
}

// CurrentKeyID is the hash of the key_id Status returned last, empty if
// none.
func (o Observation) CurrentKeyID() string {
	var hash string
	var at time.Time
	for h, t := range o.KeyIDs {
		if t.After(at) || (t.Equal(at) && h > hash) {
			hash, at = h, t
		}
	}
	return hash
}

// Observe reads the API server's metrics once, after asking its
// kms-providers check so that its plugins' Status is fresh. It needs "get"
// on the non-resource URLs /metrics and /readyz.
func (o *Observer) Observe(ctx context.Context) (Observation, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	o.probeKMS(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.URL+"/metrics", nil)
	if err != nil {
		return Observation{}, err
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return Observation{}, fmt.Errorf("read metrics of API server %s: %w", o.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return Observation{}, fmt.Errorf("read metrics of API server %s: %s: %s (the kubeconfig's user needs get on /metrics)", o.URL, resp.Status, strings.TrimSpace(string(body)))
	}
	return parseObservation(resp.Body)
}

// StatusKeyIDs is Observe's KeyIDs (rotation.KeyIDSource).
func (o *Observer) StatusKeyIDs(ctx context.Context) (map[string]time.Time, error) {
	obs, err := o.Observe(ctx)
	return obs.KeyIDs, err
}

// configInfoMetric carries the loaded EncryptionConfiguration's hash as a
// label (seen on kube-apiserver v1.36.3 and v1.37.2).
const configInfoMetric = "apiserver_encryption_config_controller_last_config_info"

// parseObservation reads the two metrics from a metrics exposition.
func parseObservation(r io.Reader) (Observation, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return Observation{}, fmt.Errorf("parse metrics: %w", err)
	}
	obs := Observation{KeyIDs: map[string]time.Time{}}
	for _, m := range families[statusKeyIDMetric].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() != "key_id_hash" {
				continue
			}
			at := time.Unix(int64(m.GetGauge().GetValue()), 0)
			if at.After(obs.KeyIDs[l.GetValue()]) {
				obs.KeyIDs[l.GetValue()] = at
			}
		}
	}
	for _, m := range families[configInfoMetric].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "hash" {
				obs.ConfigHash = l.GetValue()
			}
		}
	}
	return obs, nil
}

// Name is the API server's address.
func (o *Observer) Name() string { return o.URL }

// probeKMS asks the API server's kms-providers readiness check, as a
// kubelet's probe does: the API server calls its plugins' Status (and
// records the key_id) when the check runs, at most once a minute while
// healthy. Its answer does not matter here.
func (o *Observer) probeKMS(ctx context.Context) { _ = o.KMSReady(ctx) }

// KMSReady runs the API server's kms-providers readiness check
// (/readyz/kms-providers) and returns nil when it passes, else what it said.
func (o *Observer) KMSReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.URL+"/readyz/kms-providers", nil)
	if err != nil {
		return err
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return fmt.Errorf("API server %s: /readyz/kms-providers: %w", o.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("API server %s: /readyz/kms-providers answered %s: %s", o.URL, resp.Status, strings.Join(strings.Fields(string(body)), " "))
	}
	return nil
}
