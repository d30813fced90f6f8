package clusterstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rollout"
)

// apiServer serves the one ConfigMap the way kube-apiserver does for these
// calls: get, create (409 AlreadyExists if it exists), update (409
// Conflict unless the resourceVersion sent is the stored one). It stands
// in for client-go's dynamic fake, whose dependencies are not in go.sum;
// over HTTP, the real dynamic client and its error decoding are tested too.
type apiServer struct {
	mu      sync.Mutex
	cm      *corev1.ConfigMap // nil: does not exist
	version int
	writes  int
}

const path = "/api/v1/namespaces/" + Namespace + "/configmaps"

func (a *apiServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && r.URL.Path == path+"/"+Name:
		if a.cm == nil {
			status(w, http.StatusNotFound, metav1.StatusReasonNotFound, "configmaps \""+Name+"\" not found")
			return
		}
		reply(w, http.StatusOK, a.cm)
	case r.Method == http.MethodPost && r.URL.Path == path:
		if a.cm != nil {
			status(w, http.StatusConflict, metav1.StatusReasonAlreadyExists, "configmaps \""+Name+"\" already exists")
			return
		}
		a.store(w, r, http.StatusCreated)
	case r.Method == http.MethodPut && r.URL.Path == path+"/"+Name:
		if a.cm == nil {
			status(w, http.StatusNotFound, metav1.StatusReasonNotFound, "configmaps \""+Name+"\" not found")
			return
		}
		a.store(w, r, http.StatusOK)
	default:
		http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusBadRequest)
	}
}

func (a *apiServer) store(w http.ResponseWriter, r *http.Request, code int) {
	body, _ := io.ReadAll(r.Body)
	cm := &corev1.ConfigMap{}
	if err := json.Unmarshal(body, cm); err != nil {
		status(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error())
		return
	}
	if a.cm != nil && cm.ResourceVersion != a.cm.ResourceVersion {
		status(w, http.StatusConflict, metav1.StatusReasonConflict, "the object has been modified; please apply your changes to the latest version and try again")
		return
	}
	a.version++
	a.writes++
	cm.ResourceVersion = strconv.Itoa(a.version)
	a.cm = cm
	reply(w, code, cm)
}

// set stores cm as another writer would, at a new version.
func (a *apiServer) set(cm *corev1.ConfigMap) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.version++
	cm.ResourceVersion = strconv.Itoa(a.version)
	a.cm = cm
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func status(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	reply(w, code, &metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure, Code: int32(code), Reason: reason, Message: msg})
}

func newStore(t *testing.T) (*Store, *apiServer) {
	t.Helper()
	a := &apiServer{}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	kube, err := dynamic.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return New(kube), a
}

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

var r2 = lifecycle.Revision{Name: "2", Provider: "vault-a-11111111", ImageDigest: "sha256:aa", ArgsHash: "sha256:bb"}

func observed(name string, pods ...lifecycle.Revision) lifecycle.Node {
	return lifecycle.Node{
		Name:       name,
		OnDisk:     lifecycle.NodeConfig{Pods: pods, Providers: []lifecycle.Provider{{Name: r2.Provider, KMS: true}, {Name: lifecycle.IdentityProvider}}},
		ConfigHash: "sha256:" + strings.Repeat("c", 64),
	}
}

func TestPublishAndReadBack(t *testing.T) {
	ctx := context.Background()
	s, a := newStore(t)
	st, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.ResourceVersion != "" || st.Progress.InFlight != nil || len(st.Nodes) != 0 || st.Progress.LastKnownGood == nil {
		t.Fatalf("no ConfigMap loads as %+v, want an empty state with maps ready to fill", st)
	}
	n := observed("cp-1", r2)
	if !st.Publish(n, t0) {
		t.Fatal("publishing a node never observed changed nothing")
	}
	step := rollout.Step{Action: rollout.WritePod, Node: "cp-1", Revision: r2, Reason: "in place"}
	st.Progress.InFlight, st.Progress.StartedAt = &step, t0
	st.Progress.LastKnownGood["cp-1"] = n.OnDisk
	saved, err := s.Save(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if saved.ResourceVersion == "" {
		t.Error("Save returned no resourceVersion to save again from")
	}
	if got := a.cm.Labels[ManagedByLabel]; got != ManagedBy {
		t.Errorf("label %s = %q, want %q", ManagedByLabel, got, ManagedBy)
	}

	back, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := NodeState{OnDisk: n.OnDisk, ConfigHash: n.ConfigHash, ObservedAt: t0}
	if got := back.Nodes["cp-1"]; !reflect.DeepEqual(got, want) {
		t.Errorf("node read back as %+v, want %+v", got, want)
	}
	if !reflect.DeepEqual(back.Progress, st.Progress) {
		t.Errorf("progress read back as %+v, want %+v", back.Progress, st.Progress)
	}
	if back.ResourceVersion != saved.ResourceVersion {
		t.Errorf("resourceVersion %q, want %q", back.ResourceVersion, saved.ResourceVersion)
	}

	// Saving again from the new version works, and keeps what others
	// added to the metadata.
	a.cm.Annotations = map[string]string{"note": "kept"}
	back, err = s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	back.Progress.InFlight = nil
	if _, err := s.Save(ctx, back); err != nil {
		t.Fatalf("save from the version just read: %v", err)
	}
	if a.cm.Annotations["note"] != "kept" {
		t.Errorf("annotations after save: %v, want others' kept", a.cm.Annotations)
	}
}

// Two kmsctl read the same version; the second to write is refused and
// nothing it sent is stored, whether the ConfigMap existed or not.
func TestSaveAfterAnotherWriterConflicts(t *testing.T) {
	ctx := context.Background()
	for _, exists := range []bool{false, true} {
		t.Run(fmt.Sprintf("ConfigMap existed: %v", exists), func(t *testing.T) {
			s, a := newStore(t)
			if exists {
				st := Empty()
				st.Publish(observed("cp-1"), t0)
				if _, err := s.Save(ctx, st); err != nil {
					t.Fatal(err)
				}
			}
			mine, err := s.Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			theirs, err := s.Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			theirs.Publish(observed("cp-2", r2), t0)
			if _, err := s.Save(ctx, theirs); err != nil {
				t.Fatal(err)
			}
			writes := a.writes

			step := rollout.Step{Action: rollout.Promote, Node: "cp-1", Provider: r2.Provider}
			mine.Progress.InFlight, mine.Progress.StartedAt = &step, t0
			_, err = s.Save(ctx, mine)
			if !errors.Is(err, ErrConflict) {
				t.Fatalf("save from a stale version: %v, want ErrConflict", err)
			}
			if a.writes != writes {
				t.Error("the stale save was stored")
			}
			now, err := s.Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if now.Progress.InFlight != nil {
				t.Errorf("the refused step is in flight: %s", now.Progress.InFlight)
			}
			if _, ok := now.Nodes["cp-2"]; !ok {
				t.Error("the other writer's observation was lost")
			}
		})
	}
}

func TestPublishWritesOnlyWhatChanged(t *testing.T) {
	base := observed("cp-1", r2, lifecycle.Revision{Name: "1", Provider: "vault-b-22222222", ImageDigest: "sha256:dd", ArgsHash: "sha256:ee"})
	reordered := base
	reordered.OnDisk.Pods = []lifecycle.Revision{base.OnDisk.Pods[1], base.OnDisk.Pods[0]}
	otherHash := base
	otherHash.ConfigHash = "sha256:" + strings.Repeat("d", 64)
	otherPod := observed("cp-1")
	tests := []struct {
		name string
		prev *lifecycle.Node
		now  lifecycle.Node
		want bool
	}{
		{name: "never observed => publish", now: base, want: true},
		{name: "same files => nothing to save", prev: &base, now: base, want: false},
		{name: "same pods in another order => nothing to save", prev: &base, now: reordered, want: false},
		{name: "EncryptionConfiguration changed => publish", prev: &base, now: otherHash, want: true},
		{name: "static pods changed => publish", prev: &base, now: otherPod, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := Empty()
			if tt.prev != nil {
				st.Publish(*tt.prev, t0)
			}
			later := t0.Add(time.Minute)
			if got := st.Publish(tt.now, later); got != tt.want {
				t.Fatalf("Publish = %v, want %v", got, tt.want)
			}
			wantAt := t0
			if tt.want {
				wantAt = later
			}
			if got := st.Nodes["cp-1"].ObservedAt; !got.Equal(wantAt) {
				t.Errorf("observedAt = %s, want %s", got, wantAt)
			}
		})
	}
}

func TestLoadRefusesWhatItCannotTrust(t *testing.T) {
	good := func() *corev1.ConfigMap {
		return &corev1.ConfigMap{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: metav1.ObjectMeta{Name: Name, Namespace: Namespace, Labels: map[string]string{ManagedByLabel: ManagedBy}},
			Data: map[string]string{
				progressKey: `{"lastKnownGood":{}}`,
				nodesKey:    `{"cp-1":{"onDisk":{"pods":[],"providers":[]},"configHash":"sha256:cc","observedAt":"2026-11-23T12:00:00Z"}}`,
			},
		}
	}
	tests := []struct {
		name   string
		change func(*corev1.ConfigMap)
		want   string // "" means it loads
	}{
		{name: "kmsctl's own => loads", change: func(*corev1.ConfigMap) {}},
		{name: "no managed-by label => not kmsctl's, left alone", change: func(c *corev1.ConfigMap) { c.Labels = nil }, want: "kmsctl did not create it"},
		{name: "progress missing => corrupt", change: func(c *corev1.ConfigMap) { delete(c.Data, progressKey) }, want: "key progress.json, is corrupt (missing)"},
		{name: "nodes missing => corrupt", change: func(c *corev1.ConfigMap) { delete(c.Data, nodesKey) }, want: "key nodes.json, is corrupt (missing)"},
		{name: "progress not JSON => corrupt", change: func(c *corev1.ConfigMap) { c.Data[progressKey] = `{"inFlight":` }, want: "key progress.json, is corrupt"},
		{name: "a field this kmsctl does not know => corrupt", change: func(c *corev1.ConfigMap) { c.Data[progressKey] = `{"phase":3}` }, want: `unknown field "phase"`},
		{name: "two JSON values => corrupt", change: func(c *corev1.ConfigMap) { c.Data[progressKey] += `{}` }, want: "data after the JSON value"},
		{name: "step in flight without startedAt => corrupt", change: func(c *corev1.ConfigMap) {
			c.Data[progressKey] = `{"inFlight":{"action":"promote","node":"cp-1","provider":"p"}}`
		}, want: "a step in flight without startedAt"},
		{name: "node without configHash => corrupt", change: func(c *corev1.ConfigMap) {
			c.Data[nodesKey] = `{"cp-1":{"onDisk":{"pods":[],"providers":[]},"observedAt":"2026-11-23T12:00:00Z"}}`
		}, want: `node "cp-1" lacks`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, a := newStore(t)
			cm := good()
			tt.change(cm)
			a.set(cm)
			st, err := s.Load(context.Background())
			if tt.want == "" {
				if err != nil || st.Nodes["cp-1"].ConfigHash != "sha256:cc" {
					t.Fatalf("Load = %+v, %v; want cp-1 read", st, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load error = %v, want %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), Namespace+"/"+Name) {
				t.Errorf("error %q does not name the ConfigMap", err)
			}
		})
	}
}

func TestLoadNamesTheRBACItNeeds(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		status(w, http.StatusForbidden, metav1.StatusReasonForbidden, "configmaps is forbidden")
	}))
	defer srv.Close()
	kube, err := dynamic.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(kube).Load(context.Background())
	if err == nil || !strings.Contains(err.Error(), "needs get, create and update on configmaps in kube-system") {
		t.Fatalf("Load = %v, want the permissions named", err)
	}
}
