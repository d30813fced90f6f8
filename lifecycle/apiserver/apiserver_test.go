package apiserver

import (
	"strings"
	"testing"
	"time"
)

func TestParseStatusKeyIDs(t *testing.T) {
	in := `# HELP apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds [ALPHA] The last time in seconds when a keyID was returned by the Status RPC call.
# TYPE apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds gauge
apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds{apiserver_id_hash="sha256:aa",key_id_hash="sha256:old",provider_name="vault"} 1.7e+09
apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds{apiserver_id_hash="sha256:aa",key_id_hash="sha256:new",provider_name="vault"} 1.8e+09
# TYPE apiserver_envelope_encryption_key_id_hash_total counter
apiserver_envelope_encryption_key_id_hash_total{apiserver_id_hash="sha256:aa",key_id_hash="sha256:other",provider_name="vault",transformation_type="to_storage"} 3
`
	in += `# TYPE apiserver_encryption_config_controller_last_config_info gauge
apiserver_encryption_config_controller_last_config_info{apiserver_id_hash="sha256:aa",hash="sha256:cfg"} 1
`
	obs, err := parseObservation(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	got := obs.KeyIDs
	if len(got) != 2 || !got["sha256:new"].Equal(time.Unix(1.8e9, 0)) || got["sha256:old"].IsZero() {
		t.Fatalf("parsed %v, want old and new from the Status metric only", got)
	}
	if obs.CurrentKeyID() != "sha256:new" || obs.ConfigHash != "sha256:cfg" {
		t.Fatalf("current key_id %q, config hash %q", obs.CurrentKeyID(), obs.ConfigHash)
	}
	if none, err := parseObservation(strings.NewReader("# TYPE up gauge\nup 1\n")); err != nil || len(none.KeyIDs) != 0 || none.ConfigHash != "" {
		t.Fatalf("no KMS metric => %v, %v; want none", none, err)
	}
}

// KeyIDHash must match kube-apiserver's labels (k8s.io/apiserver
// storage/value/encrypt/envelope/metrics: sha256 of the key_id, hex).
func TestKeyIDHash(t *testing.T) {
	if got := KeyIDHash("k"); got != "sha256:8254c329a92850f6d539dd376f4816ee2764517da5e0235514af433164480d7a" {
		t.Fatalf("KeyIDHash = %s", got)
	}
}
