package cluster

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Namespaces are a node's own mount and network namespaces, so that several
// nodes on this one host each look like a control-plane host of their own:
// every node's plugin binds the same metrics port (hostNetwork) and creates
// its socket in the same directory (node.socketDir of kms.yaml), as on
// identical real hosts, without colliding.
//
// A process that does nothing holds them (`unshare --mount --net sleep`);
// containerd, the kubelet and the node's kube-apiserver enter them with
// nsenter. Inside:
//   - the network has only loopback, with a node IP of its own added to it
//     (a kubelet refuses a loopback node IP). The host's services the node
//     uses (its API server, the registry, Vault) are reached at the same
//     127.0.0.1 address as on the host, through forwarders this process
//     runs: each listens inside the node's network and dials the host's.
//   - the mount table is a private copy of the host's, with the node's own
//     directories bound over the paths kms.yaml names.
//
// The namespaces go away with the last process in them.
type Namespaces struct {
	// NodeIP is the node's address inside its network namespace.
	NodeIP string
	holder *Process
	pid    int
	netns  string // /proc/<holder>/ns/net

	mu        sync.Mutex
	listeners []net.Listener
}

var nodeIPs struct {
	sync.Mutex
	next int
}

// NewNamespaces creates a node's namespaces, binds each host directory
// binds[path] over path inside them (both must exist), and forwards each of
// the host's 127.0.0.1 ports in forward into the node's loopback.
func NewNamespaces(t testing.TB, name, dir string, binds map[string]string, forward []int) *Namespaces {
	t.Helper()
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatalf("a node of its own needs unshare and nsenter (Debian's util-linux): %v", err)
	}
	ns := &Namespaces{}
	ns.holder = newProcess(t, "namespaces-"+name, dir, unshare, []string{"--mount", "--net", "--propagation", "private", "--", "sleep", "infinity"}, nil)
	ns.holder.Start()
	ns.pid = ns.holder.PID()
	ns.netns = fmt.Sprintf("/proc/%d/ns/net", ns.pid)
	own, _ := os.Readlink("/proc/self/ns/net")
	waitFor(t, 10*time.Second, ns.holder, "its own network namespace", func() error {
		if l, err := os.Readlink(ns.netns); err != nil || l == own {
			return fmt.Errorf("not yet unshared (%v)", err)
		}
		return nil
	})
	t.Cleanup(ns.closeForwards)

	nodeIPs.Lock()
	nodeIPs.next++
	ns.NodeIP = fmt.Sprintf("10.211.%d.%d", nodeIPs.next/250, nodeIPs.next%250+2)
	nodeIPs.Unlock()
	script := []string{"set -e", "ip link set lo up", "ip addr add " + ns.NodeIP + "/32 dev lo"}
	for target, source := range binds {
		script = append(script, fmt.Sprintf("mount --bind %q %q", source, target))
	}
	if out, err := exec.Command("nsenter", ns.Enter(true, "sh", "-c", strings.Join(script, "\n"))...).CombinedOutput(); err != nil {
		t.Fatalf("set up node %s's namespaces: %v\n%s", name, err, out)
	}
	for _, port := range forward {
		ns.Forward(t, port)
	}
	return ns
}

// Enter returns nsenter's arguments that run bin with args inside the
// node's mount namespace, and its network namespace too if network.
// nsenter execs bin: the process keeps its PID, and Pdeathsig.
func (ns *Namespaces) Enter(network bool, bin string, args ...string) []string {
	out := []string{"--target", strconv.Itoa(ns.pid), "--mount"}
	if network {
		out = append(out, "--net")
	}
	return append(append(out, "--", bin), args...)
}

// Forward makes the host's 127.0.0.1:port answer at 127.0.0.1:port inside
// the node's network.
func (ns *Namespaces) Forward(t testing.TB, port int) {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	var l net.Listener
	err := ns.inNetwork(func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("forward %s into the node's network: %v", addr, err)
	}
	ns.mu.Lock()
	ns.listeners = append(ns.listeners, l)
	ns.mu.Unlock()
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				out, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					return
				}
				defer out.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(out, in); closeWrite(out); done <- struct{}{} }()
				go func() { _, _ = io.Copy(in, out); closeWrite(in); done <- struct{}{} }()
				<-done
				<-done
			}()
		}
	}()
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

// DialContext dials addr from inside the node's network, for what only
// listens there (the kubelet's healthz, the plugin's metrics port).
func (ns *Namespaces) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := ns.inNetwork(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// inNetwork runs f on an OS thread that has entered the node's network
// namespace: sockets f creates belong to it, and stay there. The thread
// returns to the host's network before it is released; if it cannot, it
// is never released (Go then ends it with its goroutine).
func (ns *Namespaces) inNetwork(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		own, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer own.Close()
		target, err := os.Open(ns.netns)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter %s: %w", ns.netns, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(own.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("return to the host's network: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

func (ns *Namespaces) closeForwards() {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	for _, l := range ns.listeners {
		l.Close()
	}
	ns.listeners = nil
}
