package vaulttest

import (
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// HA is a Vault cluster of several nodes on integrated storage (raft), on
// loopback: one is active, the others are standbys that forward requests to
// it and take over when it dies.
type HA struct {
	Nodes     []*Server
	RootToken string

	t         testing.TB
	unsealKey string
}

// StartHA starts n Vault nodes with integrated storage, initialises and
// unseals the first, joins the others to it with raft join, unseals them,
// and waits until every node is up. They are stopped when the test ends.
func StartHA(t testing.TB, n int) *HA {
	t.Helper()
	if n < 1 {
		t.Fatalf("vaulttest: StartHA needs at least one node, not %d", n)
	}
	bin := Binary(t)
	h := &HA{t: t}
	for i := 1; i <= n; i++ {
		h.Nodes = append(h.Nodes, startRaftNode(t, bin, fmt.Sprintf("node%d", i), nil))
	}

	first := h.Nodes[0]
	first.initialise()
	h.unsealKey, h.RootToken = first.unsealKey, first.RootToken
	for _, s := range h.Nodes {
		s.unsealKey, s.RootToken = h.unsealKey, h.RootToken
		s.Client.SetToken(h.RootToken)
	}
	first.unseal() // waits until it is active
	// Autopilot promotes a joined node to voter only after it has been
	// healthy for server_stabilization_time (10s by default). Until then
	// the cluster has one voter and cannot survive losing it.
	if _, err := first.Client.Logical().Write("sys/storage/raft/autopilot/configuration", map[string]any{
		"server_stabilization_time": "1s",
	}); err != nil {
		t.Fatalf("configure raft autopilot: %v", err)
	}

	for _, s := range h.Nodes[1:] {
		resp, err := s.Client.Sys().RaftJoin(&api.RaftJoinRequest{LeaderAPIAddr: first.Addr})
		if err != nil || !resp.Joined {
			t.Fatalf("vault operator raft join on %s: joined=%v err=%v\n%s", s.Addr, resp != nil && resp.Joined, err, s.logTail())
		}
		h.unsealStandby(s)
	}
	h.waitVoters(n)
	return h
}

// waitVoters waits until the raft configuration lists n voters, so that the
// cluster keeps quorum when any one node dies.
func (h *HA) waitVoters(n int) {
	h.t.Helper()
	var voters int
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		voters = 0
		sec, err := h.Nodes[0].Client.Logical().Read("sys/storage/raft/configuration")
		if err == nil && sec != nil {
			cfg, _ := sec.Data["config"].(map[string]any)
			servers, _ := cfg["servers"].([]any)
			for _, srv := range servers {
				if m, _ := srv.(map[string]any); m["voter"] == true {
					voters++
				}
			}
			if voters == n {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	h.t.Fatalf("raft has %d voters after 60s, want %d", voters, n)
}

// Addrs are the nodes' API addresses, in order.
func (h *HA) Addrs() []string {
	out := make([]string, len(h.Nodes))
	for i, s := range h.Nodes {
		out[i] = s.Addr
	}
	return out
}

// unsealStandby unseals a node that joined the cluster and waits until it
// serves as an unsealed member (active or standby).
func (h *HA) unsealStandby(s *Server) {
	h.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		// A freshly joined node may still be fetching the raft snapshot;
		// unseal answers once it can take the key.
		st, err := s.Client.Sys().Unseal(h.unsealKey)
		if err == nil && !st.Sealed {
			break
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("vault unseal of %s: sealed=%v err=%v\n%s", s.Addr, st != nil && st.Sealed, err, s.logTail())
		}
		time.Sleep(200 * time.Millisecond)
	}
	for !time.Now().After(deadline) {
		if code, _ := s.healthGet(""); code == http.StatusOK || code == http.StatusTooManyRequests {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.t.Fatalf("vault node %s did not come up as active or standby in 60s:\n%s", s.Addr, s.logTail())
}

// Active returns the node that is active now, or nil if none is.
func (h *HA) Active() *Server {
	for _, s := range h.Nodes {
		if s.cmd == nil {
			continue // stopped
		}
		if code, _ := s.healthGet(""); code == http.StatusOK {
			return s
		}
	}
	return nil
}

// WaitActive waits up to timeout for a node to be active and returns it;
// it fails the test if none becomes active.
func (h *HA) WaitActive(timeout time.Duration) *Server {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if s := h.Active(); s != nil {
			return s
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("no active Vault node within %s", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Client returns a root client of the active node.
func (h *HA) Client() *api.Client {
	h.t.Helper()
	return h.WaitActive(30 * time.Second).Client
}

// Kill kills a node with SIGKILL, as a crash would, and waits for it to exit.
func (h *HA) Kill(s *Server) {
	h.t.Helper()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
	s.cmd = nil
}

// KillActive kills the active node and returns it.
func (h *HA) KillActive() *Server {
	h.t.Helper()
	s := h.WaitActive(30 * time.Second)
	h.Kill(s)
	return s
}

// Restart starts a stopped or killed node again with its data and unseals
// it; it rejoins as a standby (or becomes active if it wins an election).
func (h *HA) Restart(s *Server) {
	h.t.Helper()
	if s.cmd != nil {
		s.Stop()
	}
	s.start()
	h.unsealStandby(s)
}
