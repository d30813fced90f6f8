// Package scan tells, without decrypting anything, how kube-apiserver has
// stored each object of the encrypted resources in etcd: under which
// provider, KMSv2 key_id and Vault transit key version, or not encrypted at
// all. It is the proof behind key rotation: a transit key version is retired
// only when a scan shows no object still needs it (DESIGN.md, safety
// invariant 2).
//
// Classify and KeyPrefix are pure. Scan drives a narrow Reader (one page of
// a range read) and does nothing else:
//
//  1. every resource name is mapped to its etcd key prefix first, so a
//     refused name fails the scan before anything is read;
//  2. each prefix is read in pages of Options.PageSize keys, the next page
//     starting just after the last key of the previous one;
//  3. the first page fixes the etcd revision and every later page, of every
//     resource, reads at it, so the report is one consistent snapshot;
//  4. nothing is written, and values are only decoded, never decrypted.
package scan
