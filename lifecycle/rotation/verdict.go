package rotation

import (
	"fmt"

	"github.com/vaultkms/vault-kms-plugin/lifecycle/scan"
)

// VersionVerdict is kmsctl status's word on one version of the transit key.
type VersionVerdict struct {
	Version int `json:"version"`
	// Objects counts the scanned objects stored under this version.
	Objects int `json:"objects"`
	// Decryptable is whether Vault still unwraps with it (at or above
	// min_decryption_version).
	Decryptable bool `json:"decryptable"`
	// Verdict is one of the Verdict* constants; Reason says why.
	Verdict string `json:"verdict"`
	Reason  string `json:"reason"`
}

// The verdicts, stable for automation (kmsctl status -o json).
const (
	// VerdictCurrent: the latest version, which new data is written under.
	VerdictCurrent = "current"
	// VerdictNeeded: stored objects need it; migrate them first.
	VerdictNeeded = "needed"
	// VerdictSafeToRetire: no stored object needs it or any older
	// version: kmsctl retire may raise min_decryption_version above it.
	VerdictSafeToRetire = "safe-to-retire"
	// VerdictBlocked: no object needs it, but an older version is needed,
	// and min_decryption_version retires versions from the oldest up.
	VerdictBlocked = "unneeded-behind-older"
	// VerdictRetired: below min_decryption_version, and nothing needs it.
	VerdictRetired = "retired"
	// VerdictRetiredButNeeded: below min_decryption_version while stored
	// objects need it: those objects cannot be read until it is lowered.
	VerdictRetiredButNeeded = "retired-but-needed"
	// VerdictUnknown: objects whose version the scan cannot read (malformed,
	// or a DEK source not from Vault transit) may need it.
	VerdictUnknown = "unknown"
)

// Verdicts judges every version of key k from min_available_version (or 1)
// to the latest, from a scan of every encrypted resource, by the rules
// Retire applies: a version can be retired only when no object needs it or
// any version below it, and nothing unreadable might.
func Verdicts(k KeyState, rep scan.Report) []VersionVerdict {
	counts := map[int]int{}
	unknown := 0
	for _, r := range rep.Resources {
		for _, g := range r.Groups {
			switch {
			case g.Class == scan.ClassMalformed:
				unknown += g.Count
			case g.Class == scan.ClassKMSv2 && g.TransitKey == k.Name && g.TransitVersion == 0:
				unknown += g.Count
			case g.Class == scan.ClassKMSv2 && g.TransitKey == k.Name:
				counts[g.TransitVersion] += g.Count
			}
		}
	}
	var out []VersionVerdict
	neededBelow := 0 // objects under versions below the one being judged
	for v := max(k.MinAvailable, 1); v <= k.Latest; v++ {
		d := VersionVerdict{Version: v, Objects: counts[v], Decryptable: v >= k.MinDecryption}
		switch {
		case v == k.Latest:
			d.Verdict, d.Reason = VerdictCurrent, "the latest version: new data is written under it"
		case !d.Decryptable && d.Objects > 0:
			d.Verdict, d.Reason = VerdictRetiredButNeeded, fmt.Sprintf("%d objects need it but it is below min_decryption_version %d: lower it (kmsctl retire --undo) to read them", d.Objects, k.MinDecryption)
		case !d.Decryptable:
			d.Verdict, d.Reason = VerdictRetired, fmt.Sprintf("below min_decryption_version %d", k.MinDecryption)
		case d.Objects > 0:
			d.Verdict, d.Reason = VerdictNeeded, fmt.Sprintf("%d objects are stored under it: migrate them (kmsctl migrate)", d.Objects)
		case unknown > 0:
			d.Verdict, d.Reason = VerdictUnknown, fmt.Sprintf("%d objects' versions cannot be read (kmsctl status lists them); none can be proven unneeded", unknown)
		case neededBelow > 0:
			d.Verdict, d.Reason = VerdictBlocked, "no object needs it, but an older version is still needed"
		default:
			d.Verdict, d.Reason = VerdictSafeToRetire, "no stored object needs it or an older version"
		}
		if d.Decryptable {
			neededBelow += d.Objects
		}
		out = append(out, d)
	}
	return out
}
