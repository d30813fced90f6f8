package scan

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// EtcdConfig is how to reach etcd, with the meaning of kube-apiserver's
// flags of the same names (--etcd-servers is --etcd-endpoints here).
type EtcdConfig struct {
	Endpoints []string
	// CACert, Cert and Key are PEM files; all empty means plain http.
	CACert, Cert, Key string
	// DialTimeout bounds connecting (default 5s).
	DialTimeout time.Duration
}

// Dial connects to etcd. The caller closes the client.
func Dial(cfg EtcdConfig) (*clientv3.Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("connect to etcd: no endpoints")
	}
	c := clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.DialTimeout,
		// The client's own logging would interleave with kmsctl's output;
		// its errors reach us as return values.
		Logger: zap.NewNop(),
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 5 * time.Second
	}
	if cfg.CACert != "" || cfg.Cert != "" || cfg.Key != "" {
		tlsInfo := transport.TLSInfo{TrustedCAFile: cfg.CACert, CertFile: cfg.Cert, KeyFile: cfg.Key}
		tc, err := tlsInfo.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("connect to etcd: TLS client config: %w", err)
		}
		c.TLS = tc
	}
	client, err := clientv3.New(c)
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %v: %w", cfg.Endpoints, err)
	}
	return client, nil
}

// etcdReader is a Reader over an etcd client's KV API.
type etcdReader struct{ kv clientv3.KV }

// NewEtcdReader returns a Reader that issues range reads on kv. It only
// reads.
func NewEtcdReader(kv clientv3.KV) Reader { return etcdReader{kv: kv} }

// Range implements Reader with one etcd range request. Reading at a fixed
// revision can fail with "required revision has been compacted" when the
// API server compacts during a long scan (every 5 minutes by default); the
// scan then has to start again.
func (r etcdReader) Range(ctx context.Context, from, end string, rev, limit int64) ([]KV, int64, bool, error) {
	opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(limit)}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := r.kv.Get(ctx, from, opts...)
	if errors.Is(err, rpctypes.ErrCompacted) {
		return nil, 0, false, fmt.Errorf("%w (etcd compacted revision %d during the scan; run it again)", err, rev)
	}
	if err != nil {
		return nil, 0, false, err
	}
	kvs := make([]KV, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		kvs[i] = KV{Key: kv.Key, Value: kv.Value}
	}
	readRev := rev
	if readRev == 0 {
		readRev = resp.Header.Revision
	}
	return kvs, readRev, resp.More, nil
}
