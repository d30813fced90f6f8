package plugin

import (
	"encoding/base64"
	"strings"
	"testing"
)

func sealed(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }

func TestParseCiphertext(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		version int
		wantErr string
	}{
		{name: "version 1 => 1", in: "vault:v1:" + sealed(60), version: 1},
		{name: "version 42 => 42", in: "vault:v42:" + sealed(60), version: 42},
		{name: "empty => error", in: "", wantErr: "empty"},
		{name: "no prefix => error", in: "gibberish", wantErr: "no \"vault:v\" prefix"},
		{name: "version zero => error", in: "vault:v0:" + sealed(60), wantErr: "not a positive number"},
		{name: "leading zero => error", in: "vault:v01:" + sealed(60), wantErr: "not a positive number"},
		{name: "negative version => error", in: "vault:v-1:" + sealed(60), wantErr: "not a positive number"},
		{name: "version overflow => error", in: "vault:v99999999999:" + sealed(60), wantErr: "not a positive number"},
		{name: "missing version separator => error", in: "vault:v1" + sealed(60), wantErr: "no \":\""},
		{name: "payload not base64 => error", in: "vault:v1:***", wantErr: "not base64"},
		{name: "payload with trailing garbage => error", in: "vault:v1:" + sealed(60) + "!", wantErr: "not base64"},
		{name: "truncated payload => error", in: "vault:v1:" + sealed(20), wantErr: "truncated"},
		{name: "oversize => error", in: "vault:v1:" + strings.Repeat("A", 1100), wantErr: "more than the 1024"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := parseCiphertext([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseCiphertext(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil || v != tt.version {
				t.Fatalf("parseCiphertext(%q) = %d, %v; want %d", tt.in, v, err, tt.version)
			}
		})
	}
}

func TestKeyIDRoundTrip(t *testing.T) {
	tests := []struct {
		name       string
		mount, key string
		version    int
		form       func(mount, key string, version int) string
		want       string
	}{
		{name: "hmac form, plain names => round trip", mount: "transit", key: "kubernetes", version: 3,
			form: func(m, k string, v int) string { return hmacKeyID(m, k, v, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}) },
			want: "vault-transit:transit/kubernetes:v3:0102030405060708090a"},
		{name: "metadata form, plain names => round trip", mount: "transit", key: "kubernetes", version: 3,
			form: func(m, k string, v int) string { return metadataKeyID(m, k, v, 1795459163) },
			want: "vault-transit:transit/kubernetes:v3:1795459163"},
		{name: "hmac form, nested mount and colon in key => round trip", mount: "/kms/transit/", key: "a:b", version: 12,
			form: func(m, k string, v int) string { return hmacKeyID(m, k, v, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}) },
			want: "vault-transit:kms/transit/a:b:v12:0102030405060708090a"},
		{name: "metadata form, nested mount and colon in key => round trip", mount: "/kms/transit/", key: "a:b", version: 12,
			form: func(m, k string, v int) string { return metadataKeyID(m, k, v, 1795459163) },
			want: "vault-transit:kms/transit/a:b:v12:1795459163"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := tt.form(tt.mount, tt.key, tt.version)
			if id != tt.want {
				t.Fatalf("key_id = %q, want %q", id, tt.want)
			}
			got, ok := parseKeyID(id)
			if !ok {
				t.Fatalf("parseKeyID(%q) not ours", id)
			}
			wantName := strings.Trim(tt.mount, "/") + "/" + tt.key
			if got.name != wantName || got.version != tt.version {
				t.Fatalf("parseKeyID(%q) = %+v, want name %q version %d", id, got, wantName, tt.version)
			}
		})
	}
}

func TestParseKeyIDRejectsForeignFormats(t *testing.T) {
	for _, id := range []string{
		"", "1", "vault-transit:", "vault-transit:transit/k:v1:", "vault-transit:transit/k:1:abcd",
		"vault-transit:transit/k:v0:abcd", "vault-transit:transit/k:v1:xyz", "other:transit/k:v1:abcd",
		"vault-transit:transit/k:v1:-1795459163", "vault-transit:transit/k:v1:17954591.3", "vault-transit:transit/k:v1:abc",
	} {
		if got, ok := parseKeyID(id); ok {
			t.Errorf("parseKeyID(%q) = %+v, want not ours", id, got)
		}
	}
}

func TestFingerprintFromHMAC(t *testing.T) {
	sum := base64.StdEncoding.EncodeToString([]byte("0123456789abcdefghijklmnopqrstuv"))
	fp, err := fingerprintFromHMAC("vault:v2:"+sum, 2)
	if err != nil || string(fp) != "0123456789" {
		t.Fatalf("fingerprintFromHMAC = %q, %v", fp, err)
	}
	if _, err := fingerprintFromHMAC("vault:v1:"+sum, 2); err == nil {
		t.Fatal("HMAC of another version accepted")
	}
	if _, err := fingerprintFromHMAC("vault:v2:AAAA", 2); err == nil {
		t.Fatal("short HMAC accepted")
	}
}

// FuzzParseCiphertext checks that no input panics, and that whatever is
// accepted really has the shape transit produces. Seeds: testdata/fuzz.
func FuzzParseCiphertext(f *testing.F) {
	f.Add([]byte("vault:v1:" + sealed(60)))
	f.Add([]byte("vault:v1:"))
	f.Add([]byte("vault:v:AAAA"))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parseCiphertext(b)
		if err != nil {
			return
		}
		if v < 1 || len(b) > MaxCiphertext || !strings.HasPrefix(string(b), "vault:v") {
			t.Fatalf("accepted %q as version %d", b, v)
		}
	})
}

// FuzzParseKeyID checks that parsing never panics and that every key_id the
// plugin issues parses back to its parts.
func FuzzParseKeyID(f *testing.F) {
	f.Add("vault-transit:transit/kubernetes:v1:00112233445566778899", "transit", "k", 1)
	f.Add("vault-transit:a:b:v2:ff", "a:b", "c:d", 7)
	f.Add("vault-transit:transit/kubernetes:v3:1795459163", "transit", "kubernetes", 3)
	f.Fuzz(func(t *testing.T, id, mount, key string, version int) {
		parseKeyID(id)
		if version < 1 || version > 999999999 || strings.Trim(mount, "/") != mount || mount == "" {
			return
		}
		for _, id := range []string{hmacKeyID(mount, key, version, []byte{0xab}), metadataKeyID(mount, key, version, 1795459163)} {
			got, ok := parseKeyID(id)
			if !ok || got.version != version || got.name != mount+"/"+key {
				t.Fatalf("key_id %q of (%q, %q, %d) parsed back as %+v, %v", id, mount, key, version, got, ok)
			}
		}
	})
}
