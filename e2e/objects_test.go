package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/vaultkms/vault-kms-plugin/e2e/cluster"
)

// objects are Secrets and ConfigMaps a test wrote, name → plaintext.
type objects struct {
	Secrets, ConfigMaps map[string]string
}

// add records the Secrets of m (a load's writes) beside o's.
func (o objects) add(secrets map[string]string) objects {
	all := make(map[string]string, len(o.Secrets)+len(secrets))
	for k, v := range o.Secrets {
		all[k] = v
	}
	for k, v := range secrets {
		all[k] = v
	}
	return objects{Secrets: all, ConfigMaps: o.ConfigMaps}
}

// fillObjects writes secrets Secrets and configMaps ConfigMaps with
// distinct plaintexts, spread over apis, with 16 writers and no client-side
// rate limit.
func fillObjects(t testing.TB, apis []*cluster.APIServer, prefix string, secrets, configMaps int) objects {
	t.Helper()
	clients := make([]*kubernetes.Clientset, len(apis))
	for i, a := range apis {
		cfg := *a.Config
		cfg.QPS, cfg.Burst = -1, 0
		clients[i] = kubernetes.NewForConfigOrDie(&cfg)
	}
	type item struct {
		configMap bool
		name      string
	}
	work := make(chan item)
	out := objects{Secrets: map[string]string{}, ConfigMaps: map[string]string{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Go(func() {
			client := clients[w%len(clients)]
			for it := range work {
				value := secretValue(it.name)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				var err error
				if it.configMap {
					_, err = client.CoreV1().ConfigMaps(namespace).Create(ctx, &corev1.ConfigMap{
						ObjectMeta: metav1.ObjectMeta{Name: it.name, Namespace: namespace},
						Data:       map[string]string{"value": value}}, metav1.CreateOptions{})
				} else {
					_, err = client.CoreV1().Secrets(namespace).Create(ctx, newSecret(it.name, value), metav1.CreateOptions{})
				}
				cancel()
				if err != nil {
					select {
					case errs <- fmt.Errorf("create %s: %w", it.name, err):
					default:
					}
					continue
				}
				mu.Lock()
				if it.configMap {
					out.ConfigMaps[it.name] = value
				} else {
					out.Secrets[it.name] = value
				}
				mu.Unlock()
			}
		})
	}
	for i := range secrets {
		work <- item{name: fmt.Sprintf("%s-s-%05d", prefix, i)}
	}
	for i := range configMaps {
		work <- item{configMap: true, name: fmt.Sprintf("%s-cm-%05d", prefix, i)}
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return out
}

// assertAllRead lists the Secrets and ConfigMaps through a, pages of 500
// from etcd (resourceVersion "" reads through the cache to etcd), and
// fails unless every object of want reads back its plaintext.
func assertAllRead(t *testing.T, a *cluster.APIServer, want objects) {
	t.Helper()
	got := objects{Secrets: map[string]string{}, ConfigMaps: map[string]string{}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for cont := ""; ; {
		l, err := a.Client.CoreV1().Secrets(namespace).List(ctx, metav1.ListOptions{Limit: 500, Continue: cont})
		if err != nil {
			t.Fatalf("list Secrets through %s: %v", a.Name, err)
		}
		for _, s := range l.Items {
			got.Secrets[s.Name] = string(s.Data["password"])
		}
		if cont = l.Continue; cont == "" {
			break
		}
	}
	for cont := ""; ; {
		l, err := a.Client.CoreV1().ConfigMaps(namespace).List(ctx, metav1.ListOptions{Limit: 500, Continue: cont})
		if err != nil {
			t.Fatalf("list ConfigMaps through %s: %v", a.Name, err)
		}
		for _, cm := range l.Items {
			got.ConfigMaps[cm.Name] = cm.Data["value"]
		}
		if cont = l.Continue; cont == "" {
			break
		}
	}
	bad := 0
	for kind, pair := range map[string][2]map[string]string{"Secret": {want.Secrets, got.Secrets}, "ConfigMap": {want.ConfigMaps, got.ConfigMaps}} {
		for name, value := range pair[0] {
			if pair[1][name] != value {
				if bad < 5 {
					t.Errorf("%s %s through %s: read %q, wrote %q", kind, name, a.Name, pair[1][name], value)
				}
				bad++
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d Secrets and %d ConfigMaps did not read back through %s", bad, len(want.Secrets), len(want.ConfigMaps), a.Name)
	}
}
