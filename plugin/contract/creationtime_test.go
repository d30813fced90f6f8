package contract

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestCreationTimeReadsBothShapes(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    int64
		wantErr string
	}{
		{name: "unix seconds (aes, chacha) => as is", raw: `1795459136`, want: 1795459136},
		{name: "object with creation_time (rsa, ed25519) => truncated to seconds", raw: `{"creation_time":"2026-11-23T18:38:56.814723969Z","name":"rsa-2048","public_key":"..."}`, want: 1795459136},
		{name: "zero => error", raw: `0`, wantErr: "not a time"},
		{name: "object without creation_time => error", raw: `{"name":"rsa-2048"}`, wantErr: "no creation time"},
		{name: "string => error", raw: `"1795459136"`, wantErr: "no creation time"},
		{name: "zero time => error", raw: `{"creation_time":"0001-01-01T00:00:00Z"}`, wantErr: "not a time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CreationTime(json.RawMessage(tt.raw))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("CreationTime(%s) = %d, %v; want an error saying %q", tt.raw, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("CreationTime(%s) = %d, %v; want %d", tt.raw, got, err, tt.want)
			}
		})
	}
}
