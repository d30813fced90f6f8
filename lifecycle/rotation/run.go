package rotation

import (
	"context"
	"fmt"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan"
)

// Key is the transit key as a retirement needs it. lifecycle/transit
// implements it against Vault; tests use a fake that records writes.
type Key interface {
	// Read returns the key's current state.
	Read(ctx context.Context) (KeyState, error)
	// SetMinDecryptionVersion sets min_decryption_version to v.
	SetMinDecryptionVersion(ctx context.Context, v int) error
}

// Scanner scans etcd for the encrypted resources, as scan.Scan does.
type Scanner func(ctx context.Context) (scan.Report, error)

// RunOptions are what the operator asked for.
type RunOptions struct {
	// Undo lowers min_decryption_version instead of raising it.
	Undo bool
	// To is --to: the min_decryption_version to set; 0 means the default
	// (see Retire and Undo).
	To int
	// Limit bounds the objects listed in a refusal (default 20).
	Limit int
	// DryRun decides and changes nothing.
	DryRun bool
}

// RunResult is what a run saw, decided and did: kmsctl retire's JSON
// output. Fields are only ever added.
type RunResult struct {
	// Key is "<mount>/<name>".
	Key    string `json:"key"`
	Undo   bool   `json:"undo"`
	DryRun bool   `json:"dryRun"`
	// ScanRevision is the etcd revision the decision was made at; 0 for
	// --undo, which needs no scan.
	ScanRevision int64 `json:"scanRevision,omitempty"`
	// Before is the key as read before deciding.
	Before   KeyState       `json:"before"`
	Decision RetireDecision `json:"decision"`
	// Applied is whether min_decryption_version was written.
	Applied bool `json:"applied"`
	// After is the key as read again after the write.
	After *KeyState `json:"after,omitempty"`
	// RolledBack is set when the scan after a raise found objects written
	// below the new minimum meanwhile, and the old minimum was restored;
	// Decision then lists them.
	RolledBack bool `json:"rolledBack,omitempty"`
}

// Run retires (or, with Undo, restores) transit key versions. The order is
// the contract:
//
//  1. Retire: scan etcd (one revision), then read the key. Undo: read the
//     key only; lowering can never make stored data unreadable.
//  2. Decide with Retire or Undo (pure). Refuse, Unchanged or DryRun:
//     stop, having written nothing.
//  3. Write min_decryption_version, then read the key again; a value other
//     than the one written is an error.
//  4. Retire only: scan again. An API server that had not yet seen the new
//     key_id may have written under a version the scan in step 1 did not
//     block; if any object is now below the new minimum, write the old
//     minimum back, read it again, and return the refusal listing them.
//
// A refusal is a result, not an error: the error is for failed I/O.
func Run(ctx context.Context, key Key, scanner Scanner, o RunOptions) (RunResult, error) {
	res := RunResult{Undo: o.Undo, DryRun: o.DryRun}
	var rep scan.Report
	// STEP 1
	if !o.Undo {
		var err error
		if rep, err = scanner(ctx); err != nil {
			return res, err
		}
		res.ScanRevision = rep.Revision
	}
	before, err := key.Read(ctx)
	if err != nil {
		return res, err
	}
	res.Key, res.Before = before.Name, before
	// STEP 2
	if o.Undo {
		res.Decision = Undo(UndoInput{Key: before, To: o.To})
	} else {
		res.Decision = Retire(RetireInput{Scan: rep, Key: before, To: o.To, Limit: o.Limit})
	}
	if o.DryRun || (res.Decision.Outcome != Raise && res.Decision.Outcome != Lower) {
		return res, nil
	}
	// STEP 3
	target := res.Decision.To
	written, after, err := set(ctx, key, target)
	res.Applied, res.After = written, after
	if err != nil {
		return res, err
	}
	if o.Undo {
		return res, nil
	}
	// STEP 4
	again, err := scanner(ctx)
	if err != nil {
		return res, fmt.Errorf("min_decryption_version is now %d, but the scan that checks nothing was written below it meanwhile failed; run `kmsctl status`, and `kmsctl retire --undo --to %d` if anything is: %w",
			target, before.MinDecryption, err)
	}
	check := Retire(RetireInput{Scan: again, Key: before, To: target, Limit: o.Limit})
	if check.Outcome != Refuse {
		return res, nil
	}
	_, restored, err := set(ctx, key, before.MinDecryption)
	res.RolledBack, res.After, res.ScanRevision = true, restored, again.Revision
	res.Decision = check
	res.Decision.Reason = fmt.Sprintf("objects were written below %d while retiring (an API server still on an old key_id?); min_decryption_version was set back to %d. %s",
		target, before.MinDecryption, check.Reason)
	if err != nil {
		return res, fmt.Errorf("restore min_decryption_version %d after objects appeared below %d: %w", before.MinDecryption, target, err)
	}
	return res, nil
}

// set writes min_decryption_version v and reads the key back to confirm.
// It returns whether the write succeeded and the state read back, if any.
func set(ctx context.Context, key Key, v int) (bool, *KeyState, error) {
	if err := key.SetMinDecryptionVersion(ctx, v); err != nil {
		return false, nil, err
	}
	after, err := key.Read(ctx)
	if err != nil {
		return true, nil, fmt.Errorf("confirm min_decryption_version %d: %w", v, err)
	}
	if after.MinDecryption != v {
		return true, &after, fmt.Errorf("set min_decryption_version %d, but the transit key %s reports %d", v, after.Name, after.MinDecryption)
	}
	return true, &after, nil
}
