package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/vaultkms/vault-kms-plugin/plugin/vaulttest"
)

// Etcd is a single-member etcd on loopback.
type Etcd struct {
	Endpoint string // http://127.0.0.1:port
	Client   *clientv3.Client
	Proc     *Process
}

// StartEtcd starts etcd with its data in a temporary directory and waits
// until it answers.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	bin := etcdBinary.find(t)
	dir := t.TempDir()
	client := fmt.Sprintf("http://127.0.0.1:%d", vaulttest.FreePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", vaulttest.FreePort(t))
	args := []string{
		"--name=e2e",
		"--data-dir=" + filepath.Join(dir, "data"),
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=e2e=" + peer,
		"--initial-cluster-state=new",
		"--logger=zap",
		"--log-outputs=stderr",
		"--log-level=warn",
	}
	e := &Etcd{Endpoint: client, Proc: newProcess(t, "etcd", dir, bin, args, nil)}
	e.Proc.Start()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	e.Client = c
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		callCtx, callCancel := context.WithTimeout(ctx, time.Second)
		_, err := c.Get(callCtx, "/health-probe")
		callCancel()
		if err == nil {
			return e
		}
		select {
		case <-e.Proc.Exited():
			t.Fatalf("etcd exited while starting:\n%s", e.Proc.LogTail(30))
		case <-ctx.Done():
			t.Fatalf("etcd did not answer on %s in 30s: %v\n%s", client, err, e.Proc.LogTail(30))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Get returns the raw bytes stored under key, nil if there is none.
func (e *Etcd) Get(ctx context.Context, key string) ([]byte, error) {
	resp, err := e.Client.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("etcd get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return resp.Kvs[0].Value, nil
}

// SecretKey is where kube-apiserver (default --etcd-prefix) stores a Secret.
func SecretKey(namespace, name string) string {
	return "/registry/secrets/" + namespace + "/" + name
}
