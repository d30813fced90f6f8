package vault

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Token is a Vault token and how long it lives.
type Token struct {
	Value     string
	TTL       time.Duration
	Renewable bool
}

type authResponse struct {
	Auth *struct {
		ClientToken   string `json:"client_token"`
		LeaseDuration int64  `json:"lease_duration"`
		Renewable     bool   `json:"renewable"`
	} `json:"auth"`
}

func (r authResponse) token(op string) (Token, error) {
	if r.Auth == nil || r.Auth.ClientToken == "" {
		return Token{}, fmt.Errorf("%s: Vault returned no token", op)
	}
	return Token{
		Value:     r.Auth.ClientToken,
		TTL:       time.Duration(r.Auth.LeaseDuration) * time.Second,
		Renewable: r.Auth.Renewable,
	}, nil
}

// LoginAppRole logs in with AppRole at auth/<mount>/login. It does not
// change the token the client uses; call SetToken with the result.
func (c *Client) LoginAppRole(ctx context.Context, mount, roleID, secretID string) (Token, error) {
	var resp authResponse
	err := c.do(ctx, "approle login", func(ctx context.Context, n node) error {
		// n.login never carries a token: a stale one has no business on a
		// login request.
		raw, err := json.Marshal(map[string]string{"role_id": roleID, "secret_id": secretID})
		if err != nil {
			return err
		}
		r, err := n.login.Logical().WriteRawWithContext(ctx, "auth/"+strings.Trim(mount, "/")+"/login", raw)
		return decodeBody(r, err, &resp)
	})
	if err != nil {
		return Token{}, err
	}
	return resp.token("approle login")
}

// RenewSelf renews the client's current token by increment.
func (c *Client) RenewSelf(ctx context.Context, increment time.Duration) (Token, error) {
	var resp authResponse
	err := c.do(ctx, "token renew", func(ctx context.Context, n node) error {
		raw, err := json.Marshal(map[string]string{"increment": fmt.Sprintf("%ds", int64(increment/time.Second))})
		if err != nil {
			return err
		}
		r, err := n.auth.Logical().WriteRawWithContext(ctx, "auth/token/renew-self", raw)
		return decodeBody(r, err, &resp)
	})
	if err != nil {
		return Token{}, err
	}
	return resp.token("token renew")
}

// LookupSelf returns the remaining TTL of the client's current token.
func (c *Client) LookupSelf(ctx context.Context) (Token, error) {
	var out struct {
		TTL       int64 `json:"ttl"`
		Renewable bool  `json:"renewable"`
	}
	err := c.do(ctx, "token lookup", func(ctx context.Context, n node) error {
		resp, err := n.auth.Logical().ReadRawWithContext(ctx, "auth/token/lookup-self")
		return decode(resp, err, &out)
	})
	if err != nil {
		return Token{}, err
	}
	return Token{TTL: time.Duration(out.TTL) * time.Second, Renewable: out.Renewable}, nil
}
