// Package server serves a KMSv2 service on a unix socket, with the socket
// safety a sidecar on a control-plane node needs: narrow permissions, no
// clobbering of files it does not own, stale-socket cleanup, and removal on
// shutdown.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
	kmsapi "k8s.io/kms/apis/v2"
	"k8s.io/kms/pkg/service"
)

// maxMessage bounds request size. KMSv2 requests carry a ≤1 KiB ciphertext
// and ≤32 KiB of annotations; anything much larger is not from an API server.
const maxMessage = 64 << 10

// Observer is told when each call starts and how it finished.
type Observer interface {
	RequestStarted(method string)
	ObserveRequest(method string, code codes.Code, d time.Duration)
}

// Server serves one KMSv2 service.
type Server struct {
	grpc *grpc.Server
	sock *Socket
}

// New returns a Server for svc on sock; Shutdown removes sock. observer may
// be nil.
func New(sock *Socket, svc service.Service, observer Observer) *Server {
	gs := grpc.NewServer(
		grpc.MaxRecvMsgSize(maxMessage),
		// Serve calls on long-lived workers instead of a new goroutine each.
		grpc.NumStreamWorkers(4),
		grpc.ChainUnaryInterceptor(interceptor(observer)),
	)
	// k8s.io/kms's own wrapper maps the proto to service.Service; its
	// address and timeout are only used by its ListenAndServe, which we
	// replace to control the socket.
	kmsapi.RegisterKeyManagementServiceServer(gs, service.NewGRPCService("", 0, svc))
	return &Server{grpc: gs, sock: sock}
}

// Serve serves until Shutdown; it returns nil after Shutdown.
func (s *Server) Serve() error {
	err := s.grpc.Serve(s.sock.Listener)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Shutdown stops accepting calls and waits for calls in flight, or until
// ctx ends, then removes the socket.
func (s *Server) Shutdown(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
	}
	s.sock.Remove()
}

func interceptor(o Observer) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		start := time.Now()
		method := info.FullMethod[strings.LastIndexByte(info.FullMethod, '/')+1:]
		if o != nil {
			o.RequestStarted(method)
		}
		defer func() {
			// A bug must cost one call, never the sidecar: the API server
			// cannot read its Secrets without us.
			if r := recover(); r != nil {
				klog.ErrorS(nil, "Panic in KMS call", "method", method, "panic", r, "stack", string(debug.Stack()))
				err = status.Errorf(codes.Internal, "%s: internal error", method)
			}
			code := status.Code(err)
			if o != nil {
				o.ObserveRequest(method, code, time.Since(start))
			}
			if err != nil {
				klog.ErrorS(err, "KMS call failed", "method", method, "code", code.String())
			}
		}()
		return handler(ctx, req)
	}
}

// Socket is a listening unix socket that this process created.
type Socket struct {
	net.Listener
	Path string
	ino  uint64
	lock *os.File // flock on Path+".lock", held until Remove
}

// testHookStaleChecked, if set, runs between finding a stale socket and
// removing it: the window in which two starting plugins used to race.
var testHookStaleChecked func()

// Listen creates a unix socket at path with mode 0600, or 0660 owned by gid
// when gid >= 0. It creates the parent directory if missing, refuses to
// replace anything that is not a socket, and removes an existing socket only
// when nothing answers on it.
//
// The socket is bound in a private temporary directory, given its final
// mode, then linked into place, so it never exists at path with a wider
// mode, and nothing that appears at path meanwhile is replaced.
func Listen(path string, gid int) (*Socket, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("socket path %q is not absolute", path)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	// Two plugins starting at once could each find the same stale socket,
	// and one would remove the other's fresh one. The lock makes the check
	// and the replacement one step; the kernel drops it when we exit.
	lock, err := lockSocketPath(path)
	if err != nil {
		return nil, err
	}
	unlock := func(err error) (*Socket, error) {
		lock.Close()
		return nil, err
	}
	if err := removeStale(path); err != nil {
		return unlock(err)
	}
	tmpDir, err := os.MkdirTemp(dir, ".kms-socket-")
	if err != nil {
		return unlock(fmt.Errorf("create socket: %w", err))
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return unlock(fmt.Errorf("create socket: %w", err))
	}
	ln.SetUnlinkOnClose(false) // the path moves; Remove deletes it at its final name
	fail := func(err error) (*Socket, error) {
		ln.Close()
		return unlock(err)
	}
	mode := os.FileMode(0o600)
	if gid >= 0 {
		if err := os.Chown(tmp, -1, gid); err != nil {
			return fail(fmt.Errorf("set socket group %d: %w", gid, err))
		}
		mode = 0o660
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fail(fmt.Errorf("set socket mode: %w", err))
	}
	if err := linkNoReplace(tmp, path); err != nil {
		return fail(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(fmt.Errorf("create socket: %w", err))
	}
	return &Socket{Listener: ln, Path: path, ino: inode(fi), lock: lock}, nil
}

// lockSocketPath takes an exclusive flock on path+".lock". The file is
// never removed: removing it would let a newcomer lock a fresh file while
// the holder still holds the old one.
func lockSocketPath(path string) (*os.File, error) {
	lockPath := path + ".lock"
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open socket lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another plugin holds %s: it serves or is starting on %s; two plugins must not share one -listen-address", lockPath, path)
		}
		return nil, fmt.Errorf("lock %s: %w", lockPath, err)
	}
	return f, nil
}

// linkNoReplace moves the socket at tmp to path, failing if path exists.
func linkNoReplace(tmp, path string) error {
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, path, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// The filesystem cannot rename atomically without replacing; a
		// hard link never replaces either.
		err = os.Link(tmp, path)
	}
	if errors.Is(err, os.ErrExist) || errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("socket path %s was created by someone else while starting; refusing to replace it", path)
	}
	if err != nil {
		return fmt.Errorf("create socket at %s: %w", path, err)
	}
	return nil
}

// removeStale removes a socket left at path by a process that is gone.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check socket path: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket (%s); refusing to replace it: remove it or choose another -listen-address", path, fi.Mode().Type())
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("another process is serving on %s; refusing to take over its socket", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s exists and its state is unclear (%v); refusing to replace it", path, err)
	}
	if testHookStaleChecked != nil {
		testHookStaleChecked()
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	klog.InfoS("Removed stale socket", "path", path)
	return nil
}

// Remove closes the listener and deletes the socket file, unless another
// process has since replaced it with its own.
func (s *Socket) Remove() {
	s.Listener.Close()
	if fi, err := os.Lstat(s.Path); err == nil && inode(fi) == s.ino {
		if err := os.Remove(s.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
			klog.ErrorS(err, "Removing socket", "path", s.Path)
		}
	}
	if s.lock != nil {
		s.lock.Close() // releases the flock
	}
}

func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}
