package vaulttest

import (
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
)

// Proxy is a TCP proxy in front of a server, on its own loopback port. It
// can hang: stop forwarding bytes in both directions while keeping every
// connection open and accepting new ones without answering, as a Vault node
// whose process or network path froze without closing anything does. A
// stopped or paused Vault cannot show that: the kernel refuses or answers
// for it, and a paused process freezes every path to it at once.
type Proxy struct {
	// Addr is the proxy's address with the target's scheme, e.g.
	// https://127.0.0.1:port when the target is https.
	Addr string

	t      testing.TB
	ln     net.Listener
	target string // host:port

	mu       sync.Mutex
	hung     bool
	closed   bool
	conns    map[net.Conn]struct{} // client side and target side, while open
	accepted int
	wg       sync.WaitGroup
}

// StartProxy starts a proxy to targetAddr (scheme://host:port). It is
// closed when the test ends.
func StartProxy(t testing.TB, targetAddr string) *Proxy {
	t.Helper()
	u, err := url.Parse(targetAddr)
	if err != nil || u.Host == "" {
		t.Fatalf("vaulttest: proxy target %q: want scheme://host:port", targetAddr)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("vaulttest: proxy listen: %v", err)
	}
	p := &Proxy{
		Addr:   u.Scheme + "://" + ln.Addr().String(),
		t:      t,
		ln:     ln,
		target: u.Host,
		conns:  map[net.Conn]struct{}{},
	}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.mu.Lock()
		p.accepted++
		hung := p.hung
		p.mu.Unlock()
		if !p.track(client) {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			if hung {
				// Accepted, never answered: read and drop until the client
				// gives up, so that its close is seen.
				p.pipe(io.Discard, client)
				p.untrack(client)
				return
			}
			p.forward(client)
		}()
	}
}

// forward connects client to the target and copies both ways until either
// side closes.
func (p *Proxy) forward(client net.Conn) {
	target, err := net.Dial("tcp", p.target)
	if err != nil {
		p.untrack(client)
		return
	}
	if !p.track(target) {
		p.untrack(client)
		return
	}
	done := make(chan struct{}, 2)
	go func() { p.pipe(target, client); done <- struct{}{} }()
	go func() { p.pipe(client, target); done <- struct{}{} }()
	<-done
	// One side closed: close both, as a proxy does.
	p.untrack(client)
	p.untrack(target)
	<-done
}

// pipe copies src to dst, dropping what it reads while the proxy hangs.
func (p *Proxy) pipe(dst io.Writer, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.Hung() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// track records an open connection; false (and the connection closed) when
// the proxy is closed.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

// Hang stops forwarding: from now on no byte crosses the proxy in either
// direction, open connections stay open, and new ones are accepted and
// never answered.
func (p *Proxy) Hang() {
	p.mu.Lock()
	p.hung = true
	p.mu.Unlock()
}

// Hung reports whether the proxy hangs.
func (p *Proxy) Hung() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hung
}

// Reset closes every open connection, as a network blip or a restarted
// server does; new connections are forwarded as before.
func (p *Proxy) Reset() {
	p.mu.Lock()
	conns := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// Accepted is how many connections the proxy has accepted.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Open is how many client connections are open now (a forwarded one
// counts once).
func (p *Proxy) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for c := range p.conns {
		if c.LocalAddr().String() == p.ln.Addr().String() {
			n++
		}
	}
	return n
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	if err := p.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		p.t.Logf("vaulttest: close proxy: %v", err)
	}
	p.Reset()
	p.wg.Wait()
}
