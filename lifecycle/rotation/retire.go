// Package rotation holds the decisions of a transit key rotation. Retire
// is pure: it takes what a scan and Vault showed and returns what to do,
// and the caller does it.
package rotation

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan"
)

// KeyState is what Vault says about the transit key (GET <mount>/keys/<key>).
type KeyState struct {
	// Name is "<mount>/<key>", as this plugin's key_ids name the key.
	Name string `json:"name"`
	// Latest is latest_version.
	Latest int `json:"latestVersion"`
	// MinDecryption is min_decryption_version.
	MinDecryption int `json:"minDecryptionVersion"`
	// MinEncryption is min_encryption_version; 0 means the latest. Vault
	// refuses a min_decryption_version above a non-zero one.
	MinEncryption int `json:"minEncryptionVersion"`
	// MinAvailable is min_available_version: versions below it were
	// trimmed and cannot be made decryptable again (0: none trimmed).
	MinAvailable int `json:"minAvailableVersion"`
}

// RetireInput is everything Retire decides from.
type RetireInput struct {
	Scan scan.Report
	Key  KeyState
	// To is the requested min_decryption_version (--to); 0 means as far as
	// the scan allows.
	To int
	// Limit bounds the objects listed in a refusal (default 20).
	Limit int
}

// RetireOutcome is what Retire decided.
type RetireOutcome string

// The outcomes.
const (
	// Raise: set min_decryption_version to RetireDecision.To.
	Raise RetireOutcome = "raise"
	// Lower: set min_decryption_version to RetireDecision.To (Undo only).
	Lower RetireOutcome = "lower"
	// Unchanged: min_decryption_version is already where it would go.
	Unchanged RetireOutcome = "unchanged"
	// Refuse: do nothing; Reason and Remaining say why.
	Refuse RetireOutcome = "refuse"
)

// Remaining is one object that blocks a retirement.
type Remaining struct {
	Resource string `json:"resource"`
	// Object is "namespace/name" (or "name").
	Object string `json:"object"`
	// TransitVersion is the version it needs; 0 when that is unknown.
	TransitVersion int `json:"transitVersion,omitempty"`
	// Why is the scan class and, for malformed objects, the reason.
	Why string `json:"why"`
}

// RetireDecision is Retire's answer.
type RetireDecision struct {
	Outcome RetireOutcome `json:"outcome"`
	// To is the min_decryption_version to set (Raise) or already set
	// (Unchanged); 0 when refused.
	To int `json:"to,omitempty"`
	// Reason explains the outcome in one sentence.
	Reason string `json:"reason"`
	// Remaining lists blocking objects, at most RetireInput.Limit, and
	// RemainingCount counts all of them.
	Remaining      []Remaining `json:"remaining,omitempty"`
	RemainingCount int         `json:"remainingCount,omitempty"`
}

// Retire decides how far the transit key's min_decryption_version may be
// raised. Objects "under the key" are the scan's KMSv2 objects whose key_id
// names Key.Name; objects under other providers or keys, and unencrypted
// ones, need nothing from this key. The rules, first match wins:
//
//  1. Vault's state is inconsistent (Latest < 1, MinDecryption < 1 or
//     above Latest) => refuse: nothing can be decided from it.
//  2. To is above Latest => refuse: that version does not exist.
//  3. To is below MinDecryption => refuse: lowering is `retire --undo`.
//  4. Some object under the key has no readable transit version, or some
//     object is malformed => refuse, listing them: the scan cannot prove
//     which version they need.
//  5. Some object under the key needs a version below MinDecryption =>
//     refuse, listing them: Vault already cannot unwrap them; lower
//     min_decryption_version (--undo) before anything else.
//  6. The target is To if given, else the oldest version any object under
//     the key needs, else (no object under the key) Latest.
//  7. Some object under the key needs a version below the target =>
//     refuse, listing them (only possible with To).
//  8. The target equals MinDecryption => unchanged.
//  9. MinEncryption is set and below the target => refuse: Vault keeps
//     min_encryption_version >= min_decryption_version, so it would reject
//     the write; raise min_encryption_version (or set it to 0) first.
//  10. Otherwise => raise to the target.
func Retire(in RetireInput) RetireDecision {
	limit := in.Limit
	if limit == 0 {
		limit = 20
	}
	k := in.Key

	// STEP 1
	if d, bad := inconsistent(k); bad {
		return d
	}
	// STEP 2
	if in.To > k.Latest {
		return RetireDecision{Outcome: Refuse, Reason: fmt.Sprintf(
			"--to %d: transit key %s has no version above %d", in.To, k.Name, k.Latest)}
	}
	// STEP 3
	if in.To != 0 && in.To < k.MinDecryption {
		return RetireDecision{Outcome: Refuse, Reason: fmt.Sprintf(
			"--to %d is below the current min_decryption_version %d: retire only raises it; use --undo to lower it", in.To, k.MinDecryption)}
	}

	// Gather, per resource and group, what the key's objects need.
	var unknown, below []blocking
	oldest := 0
	for _, r := range in.Scan.Resources {
		for _, g := range r.Groups {
			switch {
			case g.Class == scan.ClassMalformed:
				unknown = append(unknown, blocking{r.Resource, g, "malformed: " + g.Reason})
			case g.Class == scan.ClassKMSv2 && g.TransitKey == k.Name && g.TransitVersion == 0:
				unknown = append(unknown, blocking{r.Resource, g, "kms-v2 under " + k.Name + " with a DEK source not wrapped by Vault transit"})
			case g.Class == scan.ClassKMSv2 && g.TransitKey == k.Name:
				if oldest == 0 || g.TransitVersion < oldest {
					oldest = g.TransitVersion
				}
			}
		}
	}
	// STEP 4
	if len(unknown) > 0 {
		d := refusal(unknown, limit)
		d.Reason = fmt.Sprintf("%d objects whose transit key version the scan cannot read: no version can be proven unneeded", d.RemainingCount)
		return d
	}
	// STEP 5
	if oldest != 0 && oldest < k.MinDecryption {
		below = objectsBelow(in.Scan, k.Name, k.MinDecryption)
		d := refusal(below, limit)
		d.Reason = fmt.Sprintf("%d objects need transit key versions below min_decryption_version %d, which Vault already refuses to unwrap: lower it with --undo first", d.RemainingCount, k.MinDecryption)
		return d
	}
	// STEP 6
	target := in.To
	if target == 0 {
		target = k.Latest
		if oldest != 0 {
			target = oldest
		}
	}
	// STEP 7
	if oldest != 0 && oldest < target {
		below = objectsBelow(in.Scan, k.Name, target)
		d := refusal(below, limit)
		d.Reason = fmt.Sprintf("%d objects are still stored under transit key versions below %d; migrate them first", d.RemainingCount, target)
		return d
	}
	// STEP 8
	if target == k.MinDecryption {
		return RetireDecision{Outcome: Unchanged, To: target, Reason: fmt.Sprintf(
			"min_decryption_version is already %d", target)}
	}
	// STEP 9
	if k.MinEncryption != 0 && k.MinEncryption < target {
		return RetireDecision{Outcome: Refuse, Reason: fmt.Sprintf(
			"transit key %s has min_encryption_version %d, below %d: Vault refuses a min_decryption_version above it; raise min_encryption_version (or set it to 0, the latest) first", k.Name, k.MinEncryption, target)}
	}
	// STEP 10
	return RetireDecision{Outcome: Raise, To: target, Reason: fmt.Sprintf(
		"no object under %s needs a version below %d", k.Name, target)}
}

// blocking is one scan group that blocks a retirement.
type blocking struct {
	resource string
	group    scan.Group
	why      string
}

// objectsBelow returns the key's groups whose version is below v.
func objectsBelow(rep scan.Report, key string, v int) []blocking {
	var out []blocking
	for _, r := range rep.Resources {
		for _, g := range r.Groups {
			if g.Class == scan.ClassKMSv2 && g.TransitKey == key && g.TransitVersion != 0 && g.TransitVersion < v {
				out = append(out, blocking{r.Resource, g, fmt.Sprintf("kms-v2 under %s version %d", key, g.TransitVersion)})
			}
		}
	}
	return out
}

// refusal lists up to limit objects of bs, oldest version first, and counts
// all of them. A group's names are bounded by the scan's NameLimit, so
// RemainingCount can exceed what any list shows.
func refusal(bs []blocking, limit int) RetireDecision {
	slices.SortStableFunc(bs, func(a, b blocking) int {
		return cmp.Compare(a.group.TransitVersion, b.group.TransitVersion)
	})
	d := RetireDecision{Outcome: Refuse}
	for _, b := range bs {
		d.RemainingCount += b.group.Count
		for _, o := range b.group.Objects {
			if len(d.Remaining) < limit {
				d.Remaining = append(d.Remaining, Remaining{Resource: b.resource, Object: o, TransitVersion: b.group.TransitVersion, Why: b.why})
			}
		}
	}
	return d
}

// inconsistent refuses a key state nothing can be decided from.
func inconsistent(k KeyState) (RetireDecision, bool) {
	if k.Latest < 1 || k.MinDecryption < 1 || k.MinDecryption > k.Latest {
		return RetireDecision{Outcome: Refuse, Reason: fmt.Sprintf(
			"transit key %s reports latest_version %d and min_decryption_version %d: not a state to decide from", k.Name, k.Latest, k.MinDecryption)}, true
	}
	return RetireDecision{}, false
}

// UndoInput is everything Undo decides from. It needs no scan: lowering
// min_decryption_version only lets Vault decrypt with more versions, which
// can never make stored data unreadable.
type UndoInput struct {
	Key KeyState
	// To is the requested min_decryption_version (--undo --to); 0 means the
	// oldest version Vault still holds: 1, or min_available_version when
	// older versions were trimmed.
	To int
}

// Undo decides how far min_decryption_version is lowered (kmsctl retire
// --undo), so data under retired versions, such as objects restored from
// an etcd backup, can be read again. The rules, first match wins:
//
//  1. Vault's state is inconsistent (as Retire's rule 1) => refuse.
//  2. To is above MinDecryption => refuse: undo only lowers; raising is
//     retire, which needs the scan.
//  3. To is below the oldest version Vault holds (1, or MinAvailable when
//     versions were trimmed) => refuse: that version does not exist.
//  4. The target is To if given, else that oldest version.
//  5. The target equals MinDecryption => unchanged.
//  6. Otherwise => lower to the target.
func Undo(in UndoInput) RetireDecision {
	k := in.Key
	// STEP 1
	if d, bad := inconsistent(k); bad {
		return d
	}
	// STEP 2
	if in.To > k.MinDecryption {
		return RetireDecision{Outcome: Refuse, Reason: fmt.Sprintf(
			"--undo --to %d is above the current min_decryption_version %d: --undo only lowers it; raise it with retire, which checks the scan", in.To, k.MinDecryption)}
	}
	floor := max(1, k.MinAvailable)
	// STEP 3
	if in.To != 0 && in.To < floor {
		return RetireDecision{Outcome: Refuse, Reason: fmt.Sprintf(
			"--undo --to %d: transit key %s holds no version below %d", in.To, k.Name, floor)}
	}
	// STEP 4
	target := in.To
	if target == 0 {
		target = floor
	}
	// STEP 5
	if target == k.MinDecryption {
		return RetireDecision{Outcome: Unchanged, To: target, Reason: fmt.Sprintf(
			"min_decryption_version is already %d", target)}
	}
	// STEP 6
	return RetireDecision{Outcome: Lower, To: target, Reason: fmt.Sprintf(
		"lowering min_decryption_version needs no scan: it only lets Vault decrypt with versions %d to %d again", target, k.MinDecryption-1)}
}
