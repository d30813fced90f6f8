package rotation

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeAPIServer reports the new key_id from its n-th poll on, and fails
// the polls listed in fail.
type fakeAPIServer struct {
	name  string
	from  int
	fail  map[int]bool
	mu    sync.Mutex
	polls int
}

func (f *fakeAPIServer) Name() string { return f.name }

func (f *fakeAPIServer) StatusKeyIDs(context.Context) (map[string]time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.polls++
	if f.fail[f.polls] {
		return nil, errors.New("connection refused")
	}
	seen := map[string]time.Time{"sha256:old": time.Unix(1, 0)}
	if f.polls >= f.from {
		seen["sha256:new"] = time.Unix(2, 0)
	}
	return seen, nil
}

func TestAwaitKeyIDWaitsForEveryAPIServer(t *testing.T) {
	a := &fakeAPIServer{name: "a", from: 1}
	b := &fakeAPIServer{name: "b", from: 3, fail: map[int]bool{2: true}}
	var reports []AwaitProgress
	err := AwaitKeyID(context.Background(), []KeyIDSource{a, b}, "sha256:new", time.Millisecond, func(p AwaitProgress) { reports = append(reports, p) })
	if err != nil {
		t.Fatal(err)
	}
	if len(reports) != 3 {
		t.Fatalf("%d polls, want 3: %v", len(reports), reports)
	}
	if got := reports[0].Waiting; len(got) != 1 || got[0] != "b" {
		t.Errorf("first poll waits for %v, want [b]", got)
	}
	if reports[1].Errors["b"] == nil || !strings.Contains(reports[1].String(), "connection refused") {
		t.Errorf("second poll's failure not reported: %s", reports[1])
	}
	if a.polls != 1 {
		t.Errorf("API server a polled %d times after it reported, want once", a.polls)
	}
}

func TestAwaitKeyIDNamesTheLaggardsWhenTimeIsUp(t *testing.T) {
	a := &fakeAPIServer{name: "a", from: 1}
	b := &fakeAPIServer{name: "b", from: 1 << 30}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	err := AwaitKeyID(ctx, []KeyIDSource{a, b}, "sha256:new", 5*time.Millisecond, nil)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "[b]") {
		t.Fatalf("err = %v, want the deadline naming b", err)
	}
}
