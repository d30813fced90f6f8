package server

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	kmsapi "k8s.io/kms/apis/v2"
	"k8s.io/kms/pkg/service"
)

type stubService struct{ panicOnDecrypt bool }

func (s stubService) Encrypt(context.Context, string, []byte) (*service.EncryptResponse, error) {
	return &service.EncryptResponse{Ciphertext: []byte("c"), KeyID: "k"}, nil
}

func (s stubService) Decrypt(context.Context, string, *service.DecryptRequest) ([]byte, error) {
	if s.panicOnDecrypt {
		panic("bug")
	}
	return []byte("p"), nil
}

func (s stubService) Status(context.Context) (*service.StatusResponse, error) {
	return &service.StatusResponse{Version: "v2", Healthz: "ok", KeyID: "k"}, nil
}

func serve(t *testing.T, path string, svc service.Service) (*Server, *Socket) {
	t.Helper()
	sock, err := Listen(path, -1)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	srv := New(sock, svc, nil)
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return srv, sock
}

func dial(t *testing.T, path string) kmsapi.KeyManagementServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return kmsapi.NewKeyManagementServiceClient(conn)
}

func TestSocketIsCreatedOwnerOnlyInANewDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "dir", "kms.sock")
	serve(t, path, stubService{})
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode = %v, want socket 0600", fi.Mode())
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "kms.sock kms.sock.lock" {
		t.Fatalf("socket directory holds %v, want only the socket and its lock (temp dir left behind?)", names)
	}
	st, err := dial(t, path).Status(context.Background(), &kmsapi.StatusRequest{})
	if err != nil || st.Healthz != "ok" {
		t.Fatalf("Status over the socket = %v, %v", st, err)
	}
}

func TestSocketGroupMakesIt0660(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kms.sock")
	gid := os.Getgid()
	sock, err := Listen(path, gid)
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Remove()
	fi, _ := os.Lstat(path)
	if fi.Mode().Perm() != 0o660 {
		t.Fatalf("mode = %v, want 0660", fi.Mode().Perm())
	}
}

func TestListenRefusesToReplaceAFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kms.sock")
	if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Listen(path, -1)
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen over a regular file: %v, want refusal", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "precious" {
		t.Fatal("the file was touched")
	}
}

func TestListenRefusesALiveSocket(t *testing.T) {
	tests := []struct {
		name  string
		serve func(t *testing.T, path string)
		want  string
	}{
		{name: "a plugin serves on the path => refused by its lock", want: "another plugin holds",
			serve: func(t *testing.T, path string) { serve(t, path, stubService{}) }},
		{name: "something without the lock serves on the path => refused as live", want: "another process is serving",
			serve: func(t *testing.T, path string) {
				ln, err := net.Listen("unix", path)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { ln.Close() })
				gs := grpc.NewServer()
				kmsapi.RegisterKeyManagementServiceServer(gs, service.NewGRPCService("", 0, stubService{}))
				go func() { _ = gs.Serve(ln) }()
				t.Cleanup(gs.Stop)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "kms.sock")
			tt.serve(t, path)
			_, err := Listen(path, -1)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Listen over a live socket: %v, want %q", err, tt.want)
			}
			if _, err := dial(t, path).Status(context.Background(), &kmsapi.StatusRequest{}); err != nil {
				t.Fatalf("the live server was disturbed: %v", err)
			}
		})
	}
}

func TestListenReplacesAStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kms.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // as a crashed plugin leaves it
	serve(t, path, stubService{})
	if _, err := dial(t, path).Status(context.Background(), &kmsapi.StatusRequest{}); err != nil {
		t.Fatal(err)
	}
}

func TestShutdownRemovesOnlyOurSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kms.sock")
	srv, _ := serve(t, path, stubService{})
	srv.Shutdown(context.Background())
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("socket left after Shutdown: %v", err)
	}

	// Someone replaced the socket while we served: we must not delete theirs.
	old, err := Listen(path, -1)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	theirs, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer theirs.Close()
	old.Remove()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("old instance removed the newer socket: %v", err)
	}
}

func TestTwoPluginsStartingOnOneStaleSocket(t *testing.T) {
	// A crashed plugin left a stale socket. The first starter finds it
	// stale and is paused just before removing it; the second starts then.
	path := filepath.Join(t.TempDir(), "kms.sock")
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()

	paused, resume := make(chan struct{}), make(chan struct{})
	testHookStaleChecked = func() {
		testHookStaleChecked = nil
		close(paused)
		<-resume
	}
	defer func() { testHookStaleChecked = nil }()
	type result struct {
		sock *Socket
		err  error
	}
	first := make(chan result, 1)
	go func() { s, err := Listen(path, -1); first <- result{s, err} }()
	<-paused
	second, secondErr := Listen(path, -1)
	close(resume)
	got := <-first

	switch {
	case got.err != nil:
		t.Fatalf("the first plugin failed: %v", got.err)
	case secondErr == nil:
		second.Remove()
		t.Fatal("both plugins started on one socket path: one removed the other's socket")
	case !strings.Contains(secondErr.Error(), "another plugin holds "+path+".lock"):
		t.Fatalf("second plugin: %v, want it to name the lock", secondErr)
	}
	defer got.sock.Remove()
	fi, err := os.Lstat(path)
	if err != nil || inode(fi) != got.sock.ino {
		t.Fatalf("the socket at %s is not the first plugin's (%v)", path, err)
	}
}

func TestTheLockIsReleasedWithTheSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kms.sock")
	first, err := Listen(path, -1)
	if err != nil {
		t.Fatal(err)
	}
	first.Remove()
	second, err := Listen(path, -1)
	if err != nil {
		t.Fatalf("a plugin after a clean stop: %v", err)
	}
	second.Remove()
}

func TestAPanicCostsOneCallNotTheServer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kms.sock")
	serve(t, path, stubService{panicOnDecrypt: true})
	c := dial(t, path)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Decrypt(ctx, &kmsapi.DecryptRequest{Ciphertext: []byte("x")})
	if status.Code(err) != codes.Internal {
		t.Fatalf("Decrypt = %v, want Internal", err)
	}
	if _, err := c.Status(ctx, &kmsapi.StatusRequest{}); err != nil {
		t.Fatalf("server gone after a panic: %v", err)
	}
}

func TestOversizeRequestIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kms.sock")
	serve(t, path, stubService{})
	_, err := dial(t, path).Decrypt(context.Background(), &kmsapi.DecryptRequest{Ciphertext: make([]byte, maxMessage+1)})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("Decrypt of %d bytes = %v, want ResourceExhausted", maxMessage+1, err)
	}
}
