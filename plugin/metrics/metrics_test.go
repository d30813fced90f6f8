package metrics

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHealthyFollowsStatus(t *testing.T) {
	for _, tc := range []struct {
		name    string
		healthy error
		want    string
	}{
		{name: "Status ok => 1", healthy: nil, want: "vault_kms_plugin_healthy 1\n"},
		{name: "Status not ok => 0", healthy: errors.New("transit read key: no answer"), want: "vault_kms_plugin_healthy 0\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := New(time.Now, func() int { return 1 }, func() error { return tc.healthy })
			rec := httptest.NewRecorder()
			m.Handler(func() error { return nil }).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			if body := rec.Body.String(); !strings.Contains(body, tc.want) {
				t.Errorf("/metrics lacks %q:\n%s", tc.want, body)
			}
		})
	}
}
