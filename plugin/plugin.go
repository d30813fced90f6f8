// Package plugin implements the KMSv2 service (k8s.io/kms) on a Vault
// transit key.
//
// Encrypt wraps the API server's DEK seed with the transit key and derives
// the key_id from the version that actually encrypted, read from the
// ciphertext's "vault:vN:" prefix; Decrypt unwraps ciphertexts of any version
// Vault still allows. Status is answered from memory: a background loop (Run)
// reads the key's metadata once per refresh interval.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
	"k8s.io/kms/pkg/service"

	"github.com/vaultkms/vault-kms-plugin/plugin/vault"
)

// Transit is the part of Vault transit the plugin uses.
type Transit interface {
	Encrypt(ctx context.Context, plaintext []byte) (string, error)
	Decrypt(ctx context.Context, ciphertext string) ([]byte, error)
	ReadKey(ctx context.Context) (vault.KeyInfo, error)
	HMAC(ctx context.Context, version int, input []byte) (string, error)
}

// Config configures a Plugin.
type Config struct {
	// Mount and Key name the transit key; they appear in key_ids.
	Mount, Key string
	// RefreshInterval is how often Run reads the key's metadata.
	RefreshInterval time.Duration
}

// Plugin is the KMSv2 service.
type Plugin struct {
	transit  Transit
	name     string // "<mount>/<key>"
	mount    string
	key      string
	interval time.Duration
	now      func() time.Time

	status atomic.Pointer[snapshot]

	mu     sync.Mutex
	keyIDs map[int]cachedKeyID
}

// cachedKeyID is the key_id of one key version, valid while the version's
// creation record is unchanged (a deleted and re-created key has a new one).
type cachedKeyID struct {
	created string
	id      string
}

var _ service.Service = (*Plugin)(nil)

// snapshot is what Status reports, observed at one point in time.
type snapshot struct {
	healthz    string
	keyID      string
	version    int
	observedAt time.Time // when the Vault call that produced it started
}

const healthzOK = "ok"

// New returns a Plugin. It does no I/O; Status reports unhealthy until the
// first refresh succeeds.
func New(t Transit, cfg Config) *Plugin {
	p := &Plugin{
		transit:  t,
		mount:    strings.Trim(cfg.Mount, "/"),
		key:      cfg.Key,
		interval: cfg.RefreshInterval,
		now:      time.Now,
		keyIDs:   map[int]cachedKeyID{},
	}
	p.name = p.mount + "/" + p.key
	p.status.Store(&snapshot{healthz: "starting: key metadata not read from Vault yet"})
	return p
}

// Status implements service.Service from memory, without calling Vault.
func (p *Plugin) Status(context.Context) (*service.StatusResponse, error) {
	s := p.status.Load()
	return &service.StatusResponse{Version: "v2", Healthz: s.healthz, KeyID: s.keyID}, nil
}

// KeyVersion is the latest key version the plugin has seen, 0 if none.
func (p *Plugin) KeyVersion() int { return p.status.Load().version }

// Healthy returns nil when Status reports "ok", else the reason.
func (p *Plugin) Healthy() error {
	if s := p.status.Load(); s.healthz != healthzOK {
		return errors.New(s.healthz)
	}
	return nil
}

// Encrypt implements service.Service.
func (p *Plugin) Encrypt(ctx context.Context, uid string, plaintext []byte) (*service.EncryptResponse, error) {
	if len(plaintext) == 0 {
		return nil, status.Error(codes.InvalidArgument, "encrypt: plaintext is empty")
	}
	if len(plaintext) > maxPlaintext {
		return nil, status.Errorf(codes.InvalidArgument, "encrypt: plaintext is %d bytes; the plugin wraps DEK seeds of at most %d", len(plaintext), maxPlaintext)
	}
	started := p.now()
	ct, err := p.transit.Encrypt(ctx, plaintext)
	if err != nil {
		if vault.IsKeyNotFound(err) {
			return nil, keyNotFound("encrypt", err)
		}
		return nil, vaultStatus(ctx, "encrypt with "+p.name, err)
	}
	version, err := parseCiphertext([]byte(ct))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encrypt with %s: Vault returned an unexpected ciphertext: %v", p.name, err)
	}
	// Fingerprint afresh: Encrypt is rare (API server start, key change),
	// and a key re-created under the same name must never be reported with
	// the old key's key_id.
	id, err := p.fingerprint(ctx, version)
	if err != nil {
		return nil, vaultStatus(ctx, "encrypt with "+p.name, err)
	}
	p.mu.Lock()
	if p.keyIDs[version].id != id {
		p.keyIDs[version] = cachedKeyID{id: id} // creation unknown: Refresh fingerprints again once
	}
	p.mu.Unlock()
	// Vault encrypted with a newer version than Status last reported: the key
	// was rotated. Report it now so Status and Encrypt agree.
	p.observe(&snapshot{healthz: healthzOK, keyID: id, version: version, observedAt: started})
	klog.V(4).InfoS("Encrypted", "uid", uid, "keyVersion", version)
	return &service.EncryptResponse{Ciphertext: []byte(ct), KeyID: id}, nil
}

// Decrypt implements service.Service.
func (p *Plugin) Decrypt(ctx context.Context, uid string, req *service.DecryptRequest) ([]byte, error) {
	version, err := parseCiphertext(req.Ciphertext)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "decrypt: %v", err)
	}
	reqKey, ours := parseKeyID(req.KeyID)
	if ours && reqKey.version != version {
		// The API server stores key_id beside the ciphertext; ours always
		// name the version that encrypted. A mismatch is corruption.
		return nil, status.Errorf(codes.InvalidArgument, "decrypt: key_id says key version %d but the ciphertext is from version %d: the stored object is corrupted or was tampered with", reqKey.version, version)
	}
	pt, err := p.transit.Decrypt(ctx, string(req.Ciphertext))
	if err != nil {
		if vault.IsKeyNotFound(err) {
			return nil, keyNotFound("decrypt", err)
		}
		if vault.IsBadRequest(err) {
			return nil, p.refusedCiphertext(version, reqKey, ours, err)
		}
		return nil, vaultStatus(ctx, "decrypt with "+p.name, err)
	}
	klog.V(4).InfoS("Decrypted", "uid", uid, "keyVersion", version)
	return pt, nil
}

// refusedCiphertext explains why Vault rejected a well-formed ciphertext.
func (p *Plugin) refusedCiphertext(version int, reqKey parsedKeyID, ours bool, err error) error {
	msg := err.Error()
	lower := strings.ToLower(msg)
	switch {
	case strings.Contains(lower, "disallowed by policy"):
		return status.Errorf(codes.FailedPrecondition, "decrypt with %s: key version %d is below the key's min_decryption_version; lower it to read this object (%s)", p.name, version, msg)
	case strings.Contains(lower, "invalid key version"), strings.Contains(lower, "version is too new"):
		return status.Errorf(codes.FailedPrecondition, "decrypt with %s: key version %d does not exist (%s)", p.name, version, msg)
	case ours && reqKey.name != p.name:
		return status.Errorf(codes.FailedPrecondition, "decrypt: the object was encrypted with transit key %s but the plugin uses %s (%s)", reqKey.name, p.name, msg)
	default:
		return status.Errorf(codes.InvalidArgument, "decrypt with %s: Vault refused the ciphertext: it was tampered with or is not from this key (%s)", p.name, msg)
	}
}

// keyNotFound is the status for a transit key that does not exist (deleted,
// or a wrong -transit-key): no retry helps until someone restores the key,
// and the error names it ("transit key <mount>/<key> not found").
func keyNotFound(op string, err error) error {
	return status.Errorf(codes.FailedPrecondition, "%s: %v", op, err)
}

// vaultStatus maps a failed Vault call to a gRPC status: the caller's own
// deadline or cancellation keeps its code, anything else is Unavailable.
func vaultStatus(ctx context.Context, what string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return status.Errorf(status.FromContextError(ctxErr).Code(), "%s: %v", what, err)
	}
	return status.Errorf(codes.Unavailable, "%s: %v", what, err)
}

// keyIDFor returns the key_id of a key version whose creation record is
// created, asking Vault for its fingerprint only when either is new.
func (p *Plugin) keyIDFor(ctx context.Context, version int, created string) (string, error) {
	p.mu.Lock()
	c, ok := p.keyIDs[version]
	p.mu.Unlock()
	if ok && created != "" && c.created == created {
		return c.id, nil
	}
	id, err := p.fingerprint(ctx, version)
	if err != nil {
		return "", err
	}
	p.mu.Lock()
	p.keyIDs[version] = cachedKeyID{created: created, id: id}
	p.mu.Unlock()
	return id, nil
}

// fingerprint asks Vault for the key_id of a key version.
func (p *Plugin) fingerprint(ctx context.Context, version int) (string, error) {
	hmac, err := p.transit.HMAC(ctx, version, fingerprintLabel)
	if err != nil {
		return "", fmt.Errorf("fingerprint key version %d: %w", version, err)
	}
	fp, err := fingerprintFromHMAC(hmac, version)
	if err != nil {
		return "", err
	}
	return keyID(p.mount, p.key, version, fp), nil
}

// observe installs s unless a newer observation is already installed.
func (p *Plugin) observe(s *snapshot) {
	for {
		cur := p.status.Load()
		if s.observedAt.Before(cur.observedAt) {
			return
		}
		if cur.healthz == s.healthz && cur.keyID == s.keyID && cur.version == s.version {
			// Nothing changed: skip the store, keep the older timestamp
			// (harmless) and avoid contending with Status readers.
			return
		}
		if p.status.CompareAndSwap(cur, s) {
			if cur.keyID != s.keyID && s.keyID != "" {
				klog.InfoS("Transit key version in use", "key", p.name, "keyVersion", s.version, "keyID", s.keyID)
			}
			if (cur.healthz == healthzOK) != (s.healthz == healthzOK) {
				klog.InfoS("KMS health changed", "healthz", s.healthz)
			}
			return
		}
	}
}

// Refresh reads the key's metadata once and updates what Status reports.
func (p *Plugin) Refresh(ctx context.Context) error {
	started := p.now()
	info, err := p.transit.ReadKey(ctx)
	if err == nil {
		var id string
		if id, err = p.keyIDFor(ctx, info.LatestVersion, info.LatestCreated); err == nil {
			p.observe(&snapshot{healthz: healthzOK, keyID: id, version: info.LatestVersion, observedAt: started})
			return nil
		}
	}
	// Keep the last key_id: the API server expects a non-empty one, and it
	// is still the key new DEKs would be wrapped with once Vault is back.
	cur := p.status.Load()
	p.observe(&snapshot{healthz: unhealthy(err), keyID: cur.keyID, version: cur.version, observedAt: started})
	return err
}

// unhealthy is the healthz text for a failed refresh: the cause, on one line
// and short, since the API server logs it on every poll.
func unhealthy(err error) string {
	msg := strings.Join(strings.Fields(err.Error()), " ")
	if vault.IsNotFound(err) && !vault.IsKeyNotFound(err) {
		msg = "transit key not found: " + msg
	}
	if len(msg) > maxHealthz {
		msg = strings.ToValidUTF8(msg[:maxHealthz], "") + "…"
	}
	return msg
}

// maxHealthz bounds the healthz text, which the API server logs on every
// poll while the plugin is unhealthy.
const maxHealthz = 300

// Run refreshes Status every RefreshInterval until ctx ends; while Vault is
// unhealthy it retries faster, so recovery shows within seconds.
func (p *Plugin) Run(ctx context.Context) {
	for {
		// A hung Vault must not delay the health report past one interval.
		callCtx, cancel := context.WithTimeout(ctx, min(p.interval/2, 10*time.Second)+time.Second)
		err := p.Refresh(callCtx)
		cancel()
		wait := p.interval
		if err != nil {
			klog.ErrorS(err, "Reading transit key metadata failed", "key", p.name)
			wait = min(p.interval, 5*time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
