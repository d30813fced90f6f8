package vault

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/hashicorp/vault/api"

	"github.com/vaultkms/vault-kms-plugin/plugin/batch"
)

// BatchOptions configure coalescing of concurrent transit calls.
type BatchOptions = batch.Options

// Batched is a Transit whose Encrypt and Decrypt coalesce concurrent calls
// into transit batch calls (batch_input). A call alone goes out alone, with
// the plain API.
type Batched struct {
	*Transit
	enc *batch.Batcher[string, string]
	dec *batch.Batcher[string, []byte]
}

// Batched returns t with batching. Identical concurrent ciphertexts are
// decrypted once.
func (t *Transit) Batched(opts BatchOptions) *Batched {
	encOpts, decOpts := opts, opts
	encOpts.Dedupe = false // every DEK seed is fresh; nothing to share
	decOpts.Dedupe = true
	return &Batched{
		Transit: t,
		enc:     batch.New(t.encryptBatch, encOpts),
		dec:     batch.New(t.decryptBatch, decOpts),
	}
}

// Encrypt wraps plaintext, batched with concurrent calls.
func (b *Batched) Encrypt(ctx context.Context, plaintext []byte) (string, error) {
	return b.enc.Do(ctx, string(plaintext))
}

// Decrypt unwraps ciphertext, batched with concurrent calls.
func (b *Batched) Decrypt(ctx context.Context, ciphertext string) ([]byte, error) {
	return b.dec.Do(ctx, ciphertext)
}

type batchResult struct {
	Plaintext  string `json:"plaintext"`
	Ciphertext string `json:"ciphertext"`
	Error      string `json:"error"`
}

// postBatch sends a batch_input request and returns one result per input.
// Vault answers 400 when every item failed, but still lists each item's
// error, so a 400 whose body has all the results is not a batch failure.
func (t *Transit) postBatch(ctx context.Context, op, path string, input any, n int) ([]batchResult, string, error) {
	raw, err := json.Marshal(struct {
		BatchInput any `json:"batch_input"`
		// Partial failures answer 200 with per-item errors.
		PartialFailureCode int `json:"partial_failure_response_code"`
	}{input, http.StatusOK})
	if err != nil {
		return nil, "", err
	}
	var out struct {
		BatchResults []batchResult `json:"batch_results"`
	}
	// Only encrypt hears 403 for a missing key (see explainDenied).
	var explain func(context.Context, error) error
	if path == "encrypt/" {
		explain = t.explainDenied
	}
	var addr string
	err = t.c.doAuthedExplained(ctx, op, func(ctx context.Context, nd node) error {
		addr = nd.addr
		resp, err := nd.transit.Logical().WriteRawWithContext(ctx, t.base+path+t.key, raw)
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusBadRequest && resp != nil {
			var env envelope[struct {
				BatchResults []batchResult `json:"batch_results"`
			}]
			if derr := decodeBody(resp, nil, &env); derr == nil && len(env.Data.BatchResults) == n {
				out.BatchResults = env.Data.BatchResults
				return nil
			}
			return err
		}
		return decode(resp, err, &out)
	}, explain)
	if err != nil {
		return nil, addr, err
	}
	if len(out.BatchResults) != n {
		return nil, addr, fmt.Errorf("%s: Vault returned %d results for %d inputs", op, len(out.BatchResults), n)
	}
	return out.BatchResults, addr, nil
}

func (t *Transit) decryptBatch(ctx context.Context, cts []string) ([]batch.Result[[]byte], error) {
	if len(cts) == 1 {
		pt, err := t.Decrypt(ctx, cts[0])
		return []batch.Result[[]byte]{{Value: pt, Err: err}}, nil
	}
	type item struct {
		Ciphertext string `json:"ciphertext"`
	}
	in := make([]item, len(cts))
	for i, ct := range cts {
		in[i] = item{ct}
	}
	res, addr, err := t.postBatch(ctx, "transit decrypt", "decrypt/", in, len(cts))
	if err != nil {
		return nil, err
	}
	out := make([]batch.Result[[]byte], len(res))
	for i, r := range res {
		if r.Error != "" {
			out[i].Err = &Error{Op: "transit decrypt", Addr: addr, Status: http.StatusBadRequest, Errors: []string{r.Error}}
			continue
		}
		if out[i].Value, err = base64.StdEncoding.DecodeString(r.Plaintext); err != nil {
			out[i].Err = fmt.Errorf("transit decrypt: Vault returned plaintext that is not base64")
		}
	}
	return out, nil
}

func (t *Transit) encryptBatch(ctx context.Context, pts []string) ([]batch.Result[string], error) {
	if len(pts) == 1 {
		ct, err := t.Encrypt(ctx, []byte(pts[0]))
		return []batch.Result[string]{{Value: ct, Err: err}}, nil
	}
	type item struct {
		Plaintext string `json:"plaintext"`
	}
	in := make([]item, len(pts))
	for i, pt := range pts {
		in[i] = item{base64.StdEncoding.EncodeToString([]byte(pt))}
	}
	res, addr, err := t.postBatch(ctx, "transit encrypt", "encrypt/", in, len(pts))
	if err != nil {
		return nil, err
	}
	out := make([]batch.Result[string], len(res))
	for i, r := range res {
		switch {
		case r.Error != "":
			out[i].Err = &Error{Op: "transit encrypt", Addr: addr, Status: http.StatusBadRequest, Errors: []string{r.Error}}
		case r.Ciphertext == "":
			out[i].Err = fmt.Errorf("transit encrypt: Vault returned no ciphertext")
		default:
			out[i].Value = r.Ciphertext
		}
	}
	return out, nil
}
