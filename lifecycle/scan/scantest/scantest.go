// Package scantest builds etcd values the way kube-apiserver stores them
// through this plugin's KMSv2 provider, for tests of the scan and of what
// is built on it. It decrypts nothing and needs no Vault: the values carry
// only what the scan reads (the prefix, key_id and the "vault:vN:" prefix of
// the wrapped DEK source).
package scantest

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	kmsv2api "k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2/v2"
)

// Provider is a provider name of the plugin's form.
const Provider = "vault-kubernetes-0a1b2c3d"

// TransitKey is the "<mount>/<key>" that KeyID and Value use by default.
const TransitKey = "transit/kubernetes"

// KeyID is a key_id of the plugin's form for transitKey ("<mount>/<key>")
// at version.
func KeyID(transitKey string, version int) string {
	return fmt.Sprintf("vault-transit:%s:v%d:00112233445566778899", transitKey, version)
}

// DEKSource is a Vault transit ciphertext of version v.
func DEKSource(v int) string {
	return fmt.Sprintf("vault:v%d:c2VhbGVkIERFSyBzZWVkIHNlYWxlZCBERUsgc2VlZCBzZWFsZWQ=", v)
}

// KMSv2Value is a value as kube-apiserver stores it through a KMSv2
// provider: the prefix and a marshalled EncryptedObject.
func KMSv2Value(provider, keyID, dekSource string) []byte {
	return KMSv2ValueObj(provider, &kmsv2api.EncryptedObject{
		EncryptedData:          []byte("ciphertext of the object"),
		KeyID:                  keyID,
		EncryptedDEKSource:     []byte(dekSource),
		EncryptedDEKSourceType: kmsv2api.EncryptedDEKSourceType_HKDF_SHA256_XNONCE_AES_GCM_SEED,
		Annotations:            map[string][]byte{"kms.vaultkms.io/x": []byte("y")},
	})
}

// KMSv2ValueObj is the prefix of provider followed by obj, marshalled.
func KMSv2ValueObj(provider string, obj *kmsv2api.EncryptedObject) []byte {
	b, err := proto.Marshal(obj)
	if err != nil {
		panic(err)
	}
	return append([]byte("k8s:enc:kms:v2:"+provider+":"), b...)
}

// Value is an object stored through Provider under transitKey
// ("<mount>/<key>") at transit version v.
func Value(transitKey string, v int) []byte {
	return KMSv2Value(Provider, KeyID(transitKey, v), DEKSource(v))
}
