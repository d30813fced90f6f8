package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vaultkms/vault-kms-plugin/e2e/cluster"
)

// BenchmarkListSecretsAfterRestart is the API-server-level figure of
// `make bench`: the time from an API server restart to its first complete
// LIST of 10,000 Secrets, with the KMS provider and, in the same run, with
// the identity provider. kube-apiserver decrypts every Secret while filling
// its watch cache at start, so this is where the KMS read path shows.
func BenchmarkListSecretsAfterRestart(b *testing.B) {
	const n = 10000
	kms := listAfterRestart(b, n, false)
	identity := listAfterRestart(b, n, true)
	fmt.Printf("\nkube-apiserver restart to first complete LIST of %d Secrets: KMS provider %.2fs, identity provider %.2fs (%.2fx)\n",
		n, kms.Seconds(), identity.Seconds(), kms.Seconds()/identity.Seconds())
	b.ReportMetric(kms.Seconds(), "kms-s")
	b.ReportMetric(identity.Seconds(), "identity-s")
}

func listAfterRestart(b *testing.B, n int, identity bool) time.Duration {
	c := cluster.Start(b, cluster.Options{})
	a := c.APIServers[0]
	if identity {
		// Secrets are written and read in plaintext from here on.
		if err := os.WriteFile(a.EncryptionConfigPath, []byte(`apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources:
      - secrets
    providers:
      - identity: {}
`), 0o600); err != nil {
			b.Fatal(err)
		}
		a.Restart()
		a.WaitReady(2 * time.Minute)
	}

	cfg := *a.Config
	cfg.QPS, cfg.Burst = -1, 0 // no client-side rate limit for the fill
	client, err := kubernetes.NewForConfig(&cfg)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	work := make(chan int)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				_, err := client.CoreV1().Secrets("default").Create(context.Background(), &corev1.Secret{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%05d", i)},
					Data:       map[string][]byte{"password": []byte(fmt.Sprintf("value-%05d", i))},
				}, metav1.CreateOptions{})
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("create: %v", err)
	}
	b.Logf("created %d Secrets in %s (identity=%v)", n, time.Since(start), identity)

	// Check the storage really differs between the two runs.
	raw := readEtcd(b, c, "/registry/secrets/default/bench-00000")
	if encrypted := strings.HasPrefix(raw, cluster.StoragePrefix); encrypted == identity {
		b.Fatalf("identity=%v but the stored Secret starts with %.30q", identity, raw)
	}

	a.Stop()
	restarted := time.Now()
	a.Start()
	for {
		list, err := client.CoreV1().Secrets("default").List(context.Background(), metav1.ListOptions{})
		if err == nil && countBench(list.Items) == n {
			break
		}
		if time.Since(restarted) > 5*time.Minute {
			b.Fatalf("no complete LIST within 5 minutes of the restart (last error %v)", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(restarted)
}

func countBench(items []corev1.Secret) int {
	n := 0
	for _, s := range items {
		if strings.HasPrefix(s.Name, "bench-") {
			n++
		}
	}
	return n
}

func readEtcd(b *testing.B, c *cluster.Cluster, key string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := c.Etcd.Get(ctx, key)
	if err != nil {
		b.Fatalf("read %s from etcd: %v", key, err)
	}
	return string(v)
}
