// Package plugin implements the KMSv2 service (k8s.io/kms) on a Vault
// transit key.
//
// Encrypt wraps the API server's DEK seed with the transit key and derives
// the key_id from the version that actually encrypted, read from the
// ciphertext's "vault:vN:" prefix; Decrypt unwraps ciphertexts of any version
// Vault still allows. Status is answered from memory: a background loop (Run)
// reads the key's metadata and makes an encrypt and decrypt round trip once
// per refresh interval.
package plugin

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sort"
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

// KeyIDMode says what the last field of a key_id is derived from (see
// hmacKeyID and metadataKeyID for the two forms).
type KeyIDMode string

const (
	// KeyIDMetadata derives key_ids from each version's creation time,
	// which "read" on <mount>/keys/<key> gives: HashiCorp's minimum policy
	// for its Vault KMS plugin is enough. A key deleted and re-created
	// within the same second as the version it replaces would repeat a
	// key_id; KeyIDHMAC exists for those who cannot rule that out.
	KeyIDMetadata KeyIDMode = "metadata"
	// KeyIDHMAC derives key_ids from the transit HMAC of a fixed label
	// under each version, which depends on the key material: no two keys
	// ever share one. It needs "update" on <mount>/hmac/<key> too.
	KeyIDHMAC KeyIDMode = "hmac"
)

// ParseKeyIDMode parses a key_id mode's name.
func ParseKeyIDMode(s string) (KeyIDMode, error) {
	switch m := KeyIDMode(s); m {
	case KeyIDMetadata, KeyIDHMAC:
		return m, nil
	}
	return "", fmt.Errorf("unknown key_id mode %q: want %s or %s", s, KeyIDMetadata, KeyIDHMAC)
}

// Config configures a Plugin.
type Config struct {
	// Mount and Key name the transit key; they appear in key_ids.
	Mount, Key string
	// RefreshInterval is how often Run reads the key's metadata and makes
	// a round trip through Vault.
	RefreshInterval time.Duration
	// KeyIDMode selects the key_id form; empty means KeyIDMetadata. Every
	// node of one cluster must use the same mode, or they report different
	// key_ids for one key version. Decrypt accepts both forms in any mode.
	KeyIDMode KeyIDMode
}

// Plugin is the KMSv2 service.
type Plugin struct {
	transit  Transit
	name     string // "<mount>/<key>"
	mount    string
	key      string
	interval time.Duration
	mode     KeyIDMode
	now      func() time.Time

	status atomic.Pointer[snapshot]

	mu     sync.Mutex
	keyIDs map[int]cachedKeyID // hmac mode: Vault calls saved per version
}

// cachedKeyID is the hmac key_id of one key version, valid while the
// version's creation time is unchanged (a deleted and re-created key has a
// new one).
type cachedKeyID struct {
	created int64 // 0: unknown, fingerprint again
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
		mode:     cfg.KeyIDMode,
		now:      time.Now,
		keyIDs:   map[int]cachedKeyID{},
	}
	if p.mode == "" {
		p.mode = KeyIDMetadata
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
		return nil, p.grpcError(ctx, p.failureOf(callEncrypt, err))
	}
	version, err := parseCiphertext([]byte(ct))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encrypt with %s: Vault returned an unexpected ciphertext: %v", p.name, err)
	}
	// Derive afresh, from Vault: Encrypt is rare (API server start, key
	// change), and a key re-created under the same name since the last
	// refresh must never be reported with the old key's key_id.
	id, err := p.encryptKeyID(ctx, version)
	if err != nil {
		return nil, p.grpcError(ctx, p.failureOf(callEncrypt, err))
	}
	// Vault encrypted with a newer version than Status last reported: the key
	// was rotated. Report it now so Status and Encrypt agree.
	p.observe(&snapshot{keyID: id, version: version, observedAt: started})
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
		f := p.failureOf(callDecrypt, err)
		f.version, f.reqKey, f.ours = version, reqKey, ours
		return nil, p.grpcError(ctx, f)
	}
	klog.V(4).InfoS("Decrypted", "uid", uid, "keyVersion", version)
	return pt, nil
}

// encryptKeyID returns the key_id of the version that just encrypted.
func (p *Plugin) encryptKeyID(ctx context.Context, version int) (string, error) {
	if p.mode != KeyIDHMAC {
		info, err := p.transit.ReadKey(ctx)
		if err != nil {
			return "", &transitError{call: callReadKey, err: err}
		}
		return p.keyIDOf(ctx, version, info)
	}
	id, err := p.fingerprint(ctx, version)
	if err != nil {
		return "", err
	}
	p.mu.Lock()
	if p.keyIDs[version].id != id {
		p.keyIDs[version] = cachedKeyID{id: id} // creation unknown: Refresh fingerprints again once
	}
	p.mu.Unlock()
	return id, nil
}

// keyIDOf returns the key_id of version, given a read of the key made
// after the version existed. In hmac mode it asks Vault for the
// fingerprint only when the version or its creation time is new.
func (p *Plugin) keyIDOf(ctx context.Context, version int, info vault.KeyInfo) (string, error) {
	created, ok := info.Created[version]
	switch p.mode {
	case KeyIDMetadata:
		if !ok {
			return "", fmt.Errorf("read transit key %s: Vault lists no creation time for version %d (it lists %s)", p.name, version, listVersions(info.Created))
		}
		return metadataKeyID(p.mount, p.key, version, created), nil
	case KeyIDHMAC:
		p.mu.Lock()
		c, cached := p.keyIDs[version]
		p.mu.Unlock()
		if cached && ok && c.created == created {
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
	return "", fmt.Errorf("unknown key_id mode %q", p.mode)
}

// listVersions lists the versions of a key read, for an error.
func listVersions(created map[int]int64) string {
	if len(created) == 0 {
		return "none"
	}
	vs := make([]int, 0, len(created))
	for v := range created {
		vs = append(vs, v)
	}
	sort.Ints(vs)
	return strings.Trim(fmt.Sprint(vs), "[]")
}

// fingerprint asks Vault for the hmac key_id of a key version.
func (p *Plugin) fingerprint(ctx context.Context, version int) (string, error) {
	hmac, err := p.transit.HMAC(ctx, version, fingerprintLabel)
	if err != nil {
		return "", &transitError{call: callHMAC, version: version, err: err}
	}
	fp, err := fingerprintFromHMAC(hmac, version)
	if err != nil {
		return "", err
	}
	return hmacKeyID(p.mount, p.key, version, fp), nil
}

// observe installs obs unless a newer observation is already installed.
// An empty healthz keeps the installed one: an Encrypt proves the key_id
// but not that decrypt works, which only Refresh checks.
func (p *Plugin) observe(obs *snapshot) {
	for {
		cur := p.status.Load()
		if obs.observedAt.Before(cur.observedAt) {
			return
		}
		s := obs
		if s.healthz == "" {
			c := *obs
			c.healthz = cur.healthz
			s = &c
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

// Refresh checks the key once and updates what Status reports: it reads
// the key's metadata (latest version, key_id), then wraps a random 32-byte
// value and unwraps it again, so a policy that lost encrypt or decrypt
// turns Status non-ok within one interval even while reading the key
// still works. Two calls per interval per node are cheap next to the API
// server's traffic, so the round trip is made whatever that traffic did:
// counting on a call that succeeded before the policy changed would delay
// the report by another interval.
func (p *Plugin) Refresh(ctx context.Context) error {
	started := p.now()
	id, version, err := p.check(ctx)
	if err == nil {
		p.observe(&snapshot{healthz: healthzOK, keyID: id, version: version, observedAt: started})
		return nil
	}
	if id == "" {
		// Keep the last key_id: the API server expects a non-empty one,
		// and it is still the key new DEKs would be wrapped with once Vault
		// is back.
		cur := p.status.Load()
		id, version = cur.keyID, cur.version
	}
	p.observe(&snapshot{healthz: unhealthy(p.healthText(ctx, err)), keyID: id, version: version, observedAt: started})
	return err
}

// check reads the key and makes the round trip. It returns the key_id and
// version it read even when the round trip then fails.
func (p *Plugin) check(ctx context.Context) (string, int, error) {
	info, err := p.transit.ReadKey(ctx)
	if err != nil {
		return "", 0, &transitError{call: callReadKey, err: err}
	}
	if err := usable(info); err != nil {
		return "", 0, fmt.Errorf("transit key %s: %w", p.name, err)
	}
	id, err := p.keyIDOf(ctx, info.LatestVersion, info)
	if err != nil {
		return "", 0, err
	}
	return id, info.LatestVersion, p.roundTrip(ctx)
}

// usable refuses key types that cannot wrap and unwrap (ed25519, ecdsa,
// hmac): Vault says so in the read, before any encrypt fails.
func usable(info vault.KeyInfo) error {
	if !info.SupportsEncryption || !info.SupportsDecryption {
		return fmt.Errorf("its type %s cannot encrypt and decrypt; the plugin needs an aes256-gcm96, aes128-gcm96, chacha20-poly1305 or rsa key", info.Type)
	}
	return nil
}

// roundTrip wraps a fresh random value with the key and unwraps it.
func (p *Plugin) roundTrip(ctx context.Context) error {
	seed := make([]byte, 32)
	if _, err := rand.Read(seed); err != nil {
		return fmt.Errorf("health probe: random value: %w", err)
	}
	ct, err := p.transit.Encrypt(ctx, seed)
	if err != nil {
		return &transitError{call: callEncrypt, err: err}
	}
	if _, err := parseCiphertext([]byte(ct)); err != nil {
		return fmt.Errorf("encrypt with %s: Vault returned an unexpected ciphertext: %w", p.name, err)
	}
	pt, err := p.transit.Decrypt(ctx, ct)
	if err != nil {
		return &transitError{call: callDecrypt, err: err}
	}
	if !bytes.Equal(pt, seed) {
		return fmt.Errorf("decrypt with %s: Vault returned other bytes than it was given to encrypt", p.name)
	}
	return nil
}

// healthText is Status's text for a failed check: for a failed transit
// call, the text the API server would get for it.
func (p *Plugin) healthText(ctx context.Context, err error) string {
	var te *transitError
	if !errors.As(err, &te) {
		return err.Error()
	}
	return status.Convert(p.grpcError(ctx, p.failureOf(te.call, err))).Message()
}

// unhealthy is the healthz text for a failed refresh: the cause, on one line
// and short, since the API server logs it on every poll.
func unhealthy(msg string) string {
	msg = strings.Join(strings.Fields(msg), " ")
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
			klog.ErrorS(err, "Checking the transit key failed", "key", p.name)
			wait = min(p.interval, 5*time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
