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
	rest, ok := bytes.CutPrefix(raw, []byte(StoragePrefix))
	if !ok {
		n := min(len(raw), len(StoragePrefix)+8)
		return nil, fmt.Errorf("stored value does not start with %q: starts with %q", StoragePrefix, raw[:n])
	}
	var obj kmsv2api.EncryptedObject
	if err := proto.Unmarshal(rest, &obj); err != nil {
		return nil, fmt.Errorf("decode EncryptedObject after %q: %w", StoragePrefix, err)
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
