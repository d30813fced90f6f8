package cluster

import (
	"bytes"
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"
	kmsv2api "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2"
)

// Stored is a value as kube-apiserver stored it in etcd through the KMSv2
// provider: the prefix and the EncryptedObject after it.
type Stored struct {
	Raw    []byte
	Object *kmsv2api.EncryptedObject
}

// ParseStored checks that raw starts with StoragePrefix and decodes the
// EncryptedObject that follows. It decrypts nothing.
func ParseStored(raw []byte) (*Stored, error) {
	return ParseStoredBy(raw, ProviderName)
}

// ProviderOf returns the name of the KMSv2 provider a stored value was
// written through, if it was.
func ProviderOf(raw []byte) (string, bool) {
	rest, ok := bytes.CutPrefix(raw, []byte("k8s:enc:kms:v2:"))
	if !ok {
		return "", false
	}
	// Provider names cannot contain ':' (the API server's validation).
	name, _, ok := bytes.Cut(rest, []byte(":"))
	return string(name), ok && len(name) > 0
}

// ParseStoredBy checks that raw was written through the KMSv2 provider
// named provider and decodes the EncryptedObject after the prefix.
func ParseStoredBy(raw []byte, provider string) (*Stored, error) {
	prefix := "k8s:enc:kms:v2:" + provider + ":"
	rest, ok := bytes.CutPrefix(raw, []byte(prefix))
	if !ok {
		n := min(len(raw), len(prefix)+8)
		return nil, fmt.Errorf("stored value does not start with %q: starts with %q", prefix, raw[:n])
	}
	var obj kmsv2api.EncryptedObject
	if err := proto.Unmarshal(rest, &obj); err != nil {
		return nil, fmt.Errorf("decode EncryptedObject after %q: %w", prefix, err)
	}
	if obj.KeyID == "" || len(obj.EncryptedDEKSource) == 0 || len(obj.EncryptedData) == 0 {
		return nil, fmt.Errorf("EncryptedObject is incomplete: key_id %q, %d bytes of encrypted DEK source, %d bytes of data", obj.KeyID, len(obj.EncryptedDEKSource), len(obj.EncryptedData))
	}
	return &Stored{Raw: raw, Object: &obj}, nil
}

// StoredSecret reads a Secret's value from etcd and parses it.
func (e *Etcd) StoredSecret(ctx context.Context, namespace, name string) (*Stored, error) {
	raw, err := e.Get(ctx, SecretKey(namespace, name))
	if err != nil {
		return nil, err
	}
	if raw == nil {
		return nil, fmt.Errorf("etcd has no key %s", SecretKey(namespace, name))
	}
	return ParseStored(raw)
}
