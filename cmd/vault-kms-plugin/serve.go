package main

import (
	"context"
	"fmt"
	"time"

	"k8s.io/klog/v2"

	"github.com/vaultkms/vault-kms-plugin/plugin"
	"github.com/vaultkms/vault-kms-plugin/plugin/auth"
	"github.com/vaultkms/vault-kms-plugin/plugin/metrics"
	"github.com/vaultkms/vault-kms-plugin/plugin/server"
	"github.com/vaultkms/vault-kms-plugin/plugin/vault"
)

// serve wires the Vault client, token keeper, KMS service, socket and
// metrics together and serves until ctx ends.
func serve(ctx context.Context, o *options) error {
	var p *plugin.Plugin
	var keeper *auth.Keeper
	m := metrics.New(func() time.Time { return keeper.ExpiresAt() }, func() int { return p.KeyVersion() },
		func() error { return p.Healthy() })

	client, err := vault.New(vault.Config{
		Addresses: o.addresses, Namespace: o.vaultNamespace, AuthNamespace: o.vaultAuthNamespace,
		CAFile: o.tlsCAFile, ServerName: o.tlsSNI, ClientCert: o.tlsClientCert, ClientKey: o.tlsClientKey,
		Observe: m.ObserveVault,
	})
	if err != nil {
		return fmt.Errorf("configure Vault client: %w", err)
	}
	var method auth.Method = &auth.TokenFile{Path: o.vaultTokenPath}
	if o.vaultTokenPath == "" {
		method = &auth.AppRole{Client: client, Mount: o.approleMount, RoleID: o.approleRoleID,
			RoleIDPath: o.approleRoleIDPath, SecretIDPath: o.approleSecretIDPath}
	}
	keeper = auth.NewKeeper(client, method, auth.Hooks{Login: m.Login, Renew: m.Renew})
	client.SetReauth(keeper)
	transit := client.Transit(o.transitMount, o.transitKey)
	var t plugin.Transit = transit
	if o.batchMaxSize > 1 {
		t = transit.Batched(vault.BatchOptions{MaxSize: o.batchMaxSize, MaxInFlight: o.batchMaxInFlight, Window: o.batchWindow})
	}
	p = plugin.New(t, plugin.Config{
		Mount: o.transitMount, Key: o.transitKey, RefreshInterval: o.statusRefreshInterval,
		KeyIDMode: o.keyIDMode,
	})

	sock, err := server.Listen(o.socketPath, o.gid)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := server.New(sock, p, m)
	if o.metricsPort != 0 {
		if _, err := metrics.Serve(ctx, o.metricsPort, m.Handler(p.Healthy)); err != nil {
			sock.Remove()
			return err
		}
	}
	// Vault being down is not fatal: serve anyway, so the API server sees
	// the reason in Status, and recover when Vault comes back. The keeper
	// logs in at once; a refresh that races it waits for that login.
	go keeper.Run(ctx)
	go p.Run(ctx)

	if o.insecureAllowHTTP {
		klog.InfoS("Warning: -insecure-allow-http is set: an http:// Vault address off loopback carries the token and DEK seeds in clear text", "vault", o.addresses)
	}
	klog.InfoS("Serving KMSv2", "socket", o.socketPath, "vault", o.addresses, "key", o.transitMount+"/"+o.transitKey, "keyIDMode", o.keyIDMode, "metricsPort", o.metricsPort)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	select {
	case err := <-errc:
		sock.Remove()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	klog.InfoS("Shutting down: finishing calls in flight")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(shutdownCtx)
	return nil
}
