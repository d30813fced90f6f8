package scan

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
)

// KV is one stored key and value.
type KV struct {
	Key   []byte
	Value []byte
}

// Reader is the read-only part of etcd the scan needs: one page of a range
// read. NewEtcdReader adapts an etcd client; tests use a map.
type Reader interface {
	// Range returns, in key order, at most limit pairs with from <= key <
	// end, as of revision rev (0: the current revision). It returns the
	// revision it read at, and more when keys beyond the page remain.
	Range(ctx context.Context, from, end string, rev, limit int64) (kvs []KV, readRev int64, more bool, err error)
}

// Defaults of Options.
const (
	DefaultPageSize  = 1000
	DefaultNameLimit = 20
)

// Options tune a scan. The zero value means the defaults.
type Options struct {
	// EtcdPrefix is kube-apiserver's --etcd-prefix (default /registry).
	EtcdPrefix string
	// PageSize is the number of keys read per range request (default 1000).
	PageSize int64
	// NameLimit is how many object names each Group keeps (default 20),
	// enough for a "what remains" message without holding every name of a
	// big cluster in memory. Negative keeps none.
	NameLimit int
	// Visit, when set, is called for every object read, in key order, with
	// its resource, its name ("namespace/name", or "name" for
	// cluster-scoped resources) and how it is stored: how a caller that
	// needs every name (kmsctl migrate's list of stale objects) gets them
	// without the report holding them all.
	Visit func(resource, object string, s Stored)
}

func (o Options) withDefaults() Options {
	if o.EtcdPrefix == "" {
		o.EtcdPrefix = DefaultEtcdPrefix
	}
	if o.PageSize <= 0 {
		o.PageSize = DefaultPageSize
	}
	if o.NameLimit == 0 {
		o.NameLimit = DefaultNameLimit
	}
	return o
}

// Report is the result of a scan. It is kmsctl's JSON output (status -o
// json, under "scan"): fields are only ever added to it.
type Report struct {
	// EtcdPrefix is the --etcd-prefix the keys were read under.
	EtcdPrefix string `json:"etcdPrefix"`
	// Revision is the etcd revision every page was read at, so the counts
	// are one consistent snapshot.
	Revision int64 `json:"revision"`
	// Resources are in the order they were asked for.
	Resources []ResourceReport `json:"resources"`
}

// ResourceReport is what one resource's objects are stored under.
type ResourceReport struct {
	// Resource is the EncryptionConfiguration name (secrets, deployments.apps).
	Resource string `json:"resource"`
	// KeyPrefix is the etcd key prefix that was read.
	KeyPrefix string `json:"keyPrefix"`
	// Total is the number of objects; the other counts split it.
	Total int `json:"total"`
	// KMSv2 counts objects written through any KMSv2 provider.
	KMSv2 int `json:"kmsv2"`
	// OtherProviders counts objects under KMS v1, aescbc, aesgcm or secretbox.
	OtherProviders int `json:"otherProviders"`
	// Unencrypted counts objects stored by the identity provider.
	Unencrypted int `json:"unencrypted"`
	// Malformed counts objects no provider can read as they are.
	Malformed int `json:"malformed"`
	// Groups split Total by how each object is stored, sorted by class,
	// provider, transit key, transit version, key_id.
	Groups []Group `json:"groups"`
}

// Group counts the objects of one resource stored the same way.
type Group struct {
	Class Class `json:"class"`
	// Provider is the provider name from the value's prefix.
	Provider string `json:"provider,omitempty"`
	// KeyID is the KMSv2 key_id.
	KeyID string `json:"keyID,omitempty"`
	// TransitKey is "<mount>/<key>" when KeyID is this plugin's.
	TransitKey string `json:"transitKey,omitempty"`
	// TransitVersion is the Vault transit key version that unwraps the DEK
	// source; 0 (omitted) for KMSv2 means unknown: not Vault transit's.
	TransitVersion int `json:"transitVersion,omitempty"`
	// DEKSourceType is the EncryptedObject's DEK source type.
	DEKSourceType string `json:"dekSourceType,omitempty"`
	// Reason says why the objects are malformed.
	Reason string `json:"reason,omitempty"`
	// Count is the number of objects.
	Count int `json:"count"`
	// Objects names the first objects in key order ("namespace/name", or
	// "name" for cluster-scoped resources), at most Options.NameLimit.
	Objects []string `json:"objects"`
}

// groupKey is what makes two objects fall into the same Group.
type groupKey struct {
	class          Class
	provider       string
	keyID          string
	transitKey     string
	transitVersion int
	dekSourceType  string
	reason         string
}

// Scan reads every key under each resource's prefix, page by page, at one
// etcd revision, and counts how each value is stored. It writes nothing and
// decrypts nothing. resources are EncryptionConfiguration names; see
// KeyPrefix for where each is read and which are refused.
func Scan(ctx context.Context, kv Reader, resources []string, opts Options) (Report, error) {
	opts = opts.withDefaults()
	if len(resources) == 0 {
		return Report{}, errors.New("scan: no resources to scan")
	}
	prefixes := make([]string, len(resources))
	for i, r := range resources {
		p, err := KeyPrefix(opts.EtcdPrefix, r)
		if err != nil {
			return Report{}, fmt.Errorf("scan: %w", err)
		}
		prefixes[i] = p
	}
	rep := Report{EtcdPrefix: opts.EtcdPrefix}
	for i, r := range resources {
		rr, rev, err := scanResource(ctx, kv, r, prefixes[i], rep.Revision, opts)
		if err != nil {
			return Report{}, err
		}
		// The first read fixes the revision; every later page reads at it.
		rep.Revision = rev
		rep.Resources = append(rep.Resources, rr)
	}
	return rep, nil
}

// scanResource counts one prefix at revision rev (0: current, then fixed).
func scanResource(ctx context.Context, kv Reader, resource, prefix string, rev int64, opts Options) (ResourceReport, int64, error) {
	rr := ResourceReport{Resource: resource, KeyPrefix: prefix}
	groups := map[groupKey]*Group{}
	from, end := prefix, prefixEnd(prefix)
	for {
		page, readRev, more, err := kv.Range(ctx, from, end, rev, opts.PageSize)
		if err != nil {
			return ResourceReport{}, 0, fmt.Errorf("scan %s: read etcd keys from %q: %w", resource, from, err)
		}
		rev = readRev
		for _, p := range page {
			s := Classify(p.Value)
			k := groupKey{s.Class, s.Provider, s.KeyID, s.TransitKey, s.TransitVersion, s.DEKSourceType, s.Reason}
			g := groups[k]
			if g == nil {
				g = &Group{Class: s.Class, Provider: s.Provider, KeyID: s.KeyID, TransitKey: s.TransitKey,
					TransitVersion: s.TransitVersion, DEKSourceType: s.DEKSourceType, Reason: s.Reason, Objects: []string{}}
				groups[k] = g
			}
			g.Count++
			name := string(p.Key[min(len(prefix), len(p.Key)):])
			if len(g.Objects) < opts.NameLimit {
				g.Objects = append(g.Objects, name)
			}
			if opts.Visit != nil {
				opts.Visit(resource, name, s)
			}
			rr.Total++
			switch s.Class {
			case ClassKMSv2:
				rr.KMSv2++
			case ClassIdentity:
				rr.Unencrypted++
			case ClassMalformed:
				rr.Malformed++
			default:
				rr.OtherProviders++
			}
		}
		if !more || len(page) == 0 {
			break
		}
		// The next page starts just after the last key read.
		from = string(page[len(page)-1].Key) + "\x00"
	}
	rr.Groups = make([]Group, 0, len(groups))
	for _, g := range groups {
		rr.Groups = append(rr.Groups, *g)
	}
	slices.SortFunc(rr.Groups, compareGroups)
	return rr, rev, nil
}

func compareGroups(a, b Group) int {
	return cmp.Or(
		cmp.Compare(classRank[a.Class], classRank[b.Class]),
		cmp.Compare(a.Provider, b.Provider),
		cmp.Compare(a.TransitKey, b.TransitKey),
		cmp.Compare(a.TransitVersion, b.TransitVersion),
		cmp.Compare(a.KeyID, b.KeyID),
		cmp.Compare(a.DEKSourceType, b.DEKSourceType),
		cmp.Compare(a.Reason, b.Reason),
	)
}

// prefixEnd is the smallest key greater than every key starting with
// prefix (etcd's clientv3.GetPrefixRangeEnd), for a range read.
func prefixEnd(prefix string) string {
	end := []byte(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return string(end[:i+1])
		}
	}
	// All 0xff: read to the end of the keyspace.
	return "\x00"
}
