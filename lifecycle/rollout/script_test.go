package rollout

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of testdata scripts")

// TestScripts runs the multi-step scripts under testdata/, in the style of
// etcd-raft's data-driven tests. Each block is a command, a "----" line and
// the output it must print, ended by a blank line:
//
//	init nodes=a,b,c pods=r1@old providers=old   every node healthy at r1
//	desired r2@old                               kms.yaml now renders r2
//	break r2@old [node=b]                        r2's plugin fails the preflight
//	stall c / unstall c                          c's API server stops / resumes reloading
//	retire old empty=true|false                  ask to retire provider old, with the scan's verdict
//	tick 5m1s                                    the clock moves; pods start, API servers reload
//	run                                          Next and apply, until wait, done or refuse
//	crash                                        run, but die after persisting a change, before writing it
//	crash-after-write                            run, but die after the write, before observing again
//
// A revision "r2@old" is rev("r2", "old"). `go test -rewrite` rewrites the
// expected output.
func TestScripts(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) { runScript(t, f) })
	}
}

type block struct {
	cmd  string
	want []string
	line int
}

func parseScript(t *testing.T, path string) []block {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []block
	var cur *block
	inOut := false
	sc := bufio.NewScanner(f)
	for ln := 1; sc.Scan(); ln++ {
		l := sc.Text()
		switch {
		case cur == nil && (l == "" || strings.HasPrefix(l, "#")):
		case cur == nil:
			blocks = append(blocks, block{cmd: l, line: ln})
			cur = &blocks[len(blocks)-1]
		case !inOut && l == "----":
			inOut = true
		case !inOut:
			t.Fatalf("%s:%d: want ----, got %q", path, ln, l)
		case l == "":
			cur, inOut = nil, false
		default:
			cur.want = append(cur.want, l)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return blocks
}

func runScript(t *testing.T, path string) {
	blocks := parseScript(t, path)
	w := &world{now: t0, broken: map[string]bool{}, stalled: map[string]bool{}, progress: Progress{LastKnownGood: map[string]lifecycle.NodeConfig{}}}
	var out strings.Builder
	header, _ := os.ReadFile(path)
	// Keep the comment lines before the first block when rewriting.
	for _, l := range strings.Split(string(header), "\n") {
		if !strings.HasPrefix(l, "#") && l != "" {
			break
		}
		out.WriteString(l + "\n")
	}
	failed := false
	for _, b := range blocks {
		got := w.do(t, b.cmd)
		if !slices.Equal(got, b.want) {
			failed = true
			if !*rewrite {
				t.Errorf("%s:%d: %s\ngot:\n%s\nwant:\n%s", path, b.line, b.cmd, strings.Join(got, "\n"), strings.Join(b.want, "\n"))
			}
		}
		fmt.Fprintf(&out, "%s\n----\n", b.cmd)
		for _, l := range got {
			out.WriteString(l + "\n")
		}
		out.WriteString("\n")
	}
	if *rewrite && failed {
		if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// world is a fake cluster and a driver that follows the package's ordering
// contract. Between a write and the next observation kubelet starts the
// pods on disk and each API server reloads its file, unless stalled.
type world struct {
	now      time.Time
	desired  lifecycle.Revision
	nodes    []*simNode
	broken   map[string]bool // revision name@provider, or node/revision
	stalled  map[string]bool // node
	progress Progress
	retire   string // Observed.Retire
	empty    bool   // Observed.OldProviderEmpty
}

type simNode struct {
	name    string
	disk    lifecycle.NodeConfig
	running map[string]lifecycle.Revision
	loaded  string
}

func parseRev(s string) lifecycle.Revision {
	name, provider, _ := strings.Cut(s, "@")
	return rev(name, provider)
}

func args(fields []string) map[string]string {
	m := map[string]string{}
	for _, f := range fields {
		k, v, _ := strings.Cut(f, "=")
		m[k] = v
	}
	return m
}

func (w *world) do(t *testing.T, cmd string) []string {
	f := strings.Fields(cmd)
	switch f[0] {
	case "init":
		a := args(f[1:])
		for _, name := range strings.Split(a["nodes"], ",") {
			n := &simNode{name: name, running: map[string]lifecycle.Revision{}}
			for _, p := range strings.Split(a["pods"], ",") {
				n.disk.Pods = append(n.disk.Pods, parseRev(p))
			}
			n.disk.Providers = providers(strings.Split(a["providers"], ",")...)
			w.nodes = append(w.nodes, n)
		}
		w.settle()
		return nil
	case "desired":
		w.desired = parseRev(f[1])
		return nil
	case "break":
		a := args(f[2:])
		w.broken[a["node"]+"/"+f[1]] = true
		return nil
	case "retire":
		w.retire, w.empty = f[1], args(f[2:])["empty"] == "true"
		return nil
	case "stall":
		w.stalled[f[1]] = true
		return nil
	case "unstall":
		delete(w.stalled, f[1])
		w.settle()
		return nil
	case "tick":
		d, err := time.ParseDuration(f[1])
		if err != nil {
			t.Fatal(err)
		}
		w.now = w.now.Add(d)
		w.settle()
		return nil
	case "run":
		return w.run(t, "")
	case "crash", "crash-after-write":
		return w.run(t, f[0])
	}
	t.Fatalf("unknown command %q", cmd)
	return nil
}

// run drives Next until it waits, is done or refuses; crash stops it at
// the first change, before (crash) or after (crash-after-write) the write.
func (w *world) run(t *testing.T, crash string) []string {
	var out []string
	for range 100 {
		s := Next(w.observe())
		out = append(out, s.String())
		switch s.Action {
		case Wait, Done, Refuse:
			return out
		case Confirm:
			w.progress.LastKnownGood[s.Node] = s.Config
			w.progress.InFlight = nil
			continue
		}
		// Persist first, then write.
		step := s
		w.progress.InFlight, w.progress.StartedAt = &step, w.now
		if s.Action == RollBack {
			w.progress.Failed = &Failure{Revision: w.desired, Node: s.Node, Reason: s.Reason}
		}
		if crash == "crash" {
			return append(out, "(killed before the write)")
		}
		w.apply(t, s)
		if crash == "crash-after-write" {
			return append(out, "(killed after the write)")
		}
		w.settle()
	}
	t.Fatal("no end after 100 steps")
	return nil
}

func (w *world) node(name string) *simNode {
	for _, n := range w.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// apply writes one step's change to a node's files.
func (w *world) apply(t *testing.T, s Step) {
	if !s.changesNode() {
		t.Fatalf("cannot apply %s", s)
	}
	n := w.node(s.Node)
	n.disk = ApplyTo(n.disk, s)
}

// settle is kubelet and the API servers catching up with the files.
func (w *world) settle() {
	for _, n := range w.nodes {
		n.running = map[string]lifecycle.Revision{}
		for _, p := range n.disk.Pods {
			n.running[p.Provider] = p
		}
		if !w.stalled[n.name] {
			n.loaded = hashOf(n.disk.Providers)
		}
	}
}

func (w *world) healthy(n *simNode, r lifecycle.Revision) bool {
	key := r.Name + "@" + r.Provider
	return !w.broken["/"+key] && !w.broken[n.name+"/"+key]
}

func (w *world) observe() Observed {
	o := Observed{Desired: w.desired, Now: w.now, Progress: w.progress, Retire: w.retire, OldProviderEmpty: w.empty}
	for _, n := range w.nodes {
		ln := lifecycle.Node{Name: n.name, OnDisk: n.disk, ConfigHash: hashOf(n.disk.Providers), Plugins: map[string]lifecycle.PluginHealth{}}
		ready := true
		for p, r := range n.running {
			ok := w.healthy(n, r)
			h := lifecycle.PluginHealth{Running: r, StatusOK: true, PreflightOK: ok}
			if !ok {
				h.Err = "vault: dial tcp 127.0.0.1:1: connection refused"
			}
			ln.Plugins[p] = h
		}
		for _, p := range n.disk.Providers {
			if h, ok := ln.Plugins[p.Name]; p.KMS && (!ok || !h.PreflightOK) {
				ready = false
			}
		}
		ln.APIServer = lifecycle.APIServerHealth{ReadyzKMS: ready, LoadedConfigHash: n.loaded}
		if !ready {
			ln.APIServer.Err = "[-]kms-providers failed"
		}
		o.Nodes = append(o.Nodes, ln)
	}
	return o
}
