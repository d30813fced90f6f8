// Package metrics records the plugin's Prometheus metrics and serves them,
// with liveness and readiness endpoints, on a loopback port.
//
// Labels are bounded (method, gRPC code, Vault operation, outcome); no
// label or value ever carries a key_id, token, ciphertext or plaintext.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"
	"k8s.io/klog/v2"

	"github.com/vaultkms/vault-kms-plugin/plugin/vault"
)

const namespace = "vault_kms_plugin"

// Metrics is the plugin's metric registry.
type Metrics struct {
	reg             *prometheus.Registry
	requests        *prometheus.CounterVec
	inFlight        *prometheus.GaugeVec
	requestDuration *prometheus.HistogramVec
	vaultDuration   *prometheus.HistogramVec
	logins          *prometheus.CounterVec
	renewals        *prometheus.CounterVec
}

// New returns Metrics with the Go and process collectors registered.
// tokenExpiry, keyVersion and healthy are read at scrape time; healthy is
// nil when Status reports healthz "ok".
func New(tokenExpiry func() time.Time, keyVersion func() int, healthy func() error) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "requests_total",
			Help: "KMS gRPC calls by method and gRPC status code.",
		}, []string{"method", "code"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "requests_in_flight",
			Help: "KMS gRPC calls being served, by method.",
		}, []string{"method"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "request_duration_seconds",
			Help:    "Latency of KMS gRPC calls by method and gRPC status code.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"method", "code"}),
		vaultDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "vault_request_duration_seconds",
			Help:    "Latency of calls to Vault by operation and outcome (ok, no_answer, or the HTTP status).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"operation", "outcome"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "vault_logins_total",
			Help: "Vault logins by outcome.",
		}, []string{"outcome"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "vault_token_renewals_total",
			Help: "Vault token renewals by outcome.",
		}, []string{"outcome"}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.inFlight, m.requestDuration, m.vaultDuration, m.logins, m.renewals,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "vault_token_expiry_seconds",
			Help: "Seconds until the current Vault token expires; 0 if there is none or it does not expire.",
		}, func() float64 {
			at := tokenExpiry()
			if at.IsZero() {
				return 0
			}
			return max(time.Until(at).Seconds(), 0)
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "transit_key_version",
			Help: "Latest version of the transit key the plugin has seen; 0 before the first successful read.",
		}, func() float64 { return float64(keyVersion()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "healthy",
			Help: "1 when Status reports healthz ok, else 0; /readyz gives the reason.",
		}, func() float64 {
			if healthy() != nil {
				return 0
			}
			return 1
		}),
	)
	return m
}

// RequestStarted records that a KMS gRPC call began.
func (m *Metrics) RequestStarted(method string) { m.inFlight.WithLabelValues(method).Inc() }

// ObserveRequest records that a KMS gRPC call finished.
func (m *Metrics) ObserveRequest(method string, code codes.Code, d time.Duration) {
	m.inFlight.WithLabelValues(method).Dec()
	m.requests.WithLabelValues(method, code.String()).Inc()
	m.requestDuration.WithLabelValues(method, code.String()).Observe(d.Seconds())
}

// ObserveVault records one call to Vault.
func (m *Metrics) ObserveVault(op string, d time.Duration, err error) {
	m.vaultDuration.WithLabelValues(op, outcome(err)).Observe(d.Seconds())
}

// Login records a login attempt.
func (m *Metrics) Login(err error) { m.logins.WithLabelValues(outcome(err)).Inc() }

// Renew records a renewal attempt.
func (m *Metrics) Renew(err error) { m.renewals.WithLabelValues(outcome(err)).Inc() }

func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	var ve *vault.Error
	switch {
	case !errors.As(err, &ve):
		return "error"
	case ve.Status == 0:
		return "no_answer"
	default:
		return strconv.Itoa(ve.Status)
	}
}

// Handler serves /metrics, /livez (the process answers), and /readyz and
// /healthz (the KMS is usable: ready returns nil).
func (m *Metrics) Handler(ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	health := func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	}
	mux.HandleFunc("/readyz", health)
	mux.HandleFunc("/healthz", health)
	return mux
}

// Serve serves h on 127.0.0.1:port until ctx ends. It returns once listening.
func Serve(ctx context.Context, port int, h http.Handler) (net.Addr, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("listen for metrics: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "Metrics server stopped")
		}
	}()
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	return ln.Addr(), nil
}
