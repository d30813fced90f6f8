package nodefs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	apiserverv1 "k8s.io/apiserver/pkg/apis/apiserver/v1"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/render"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rollout"
)

// newFileMode is the mode of a manifest kmsctl creates, as kubeadm makes
// its own; a file kmsctl replaces keeps its mode.
const newFileMode = fs.FileMode(0o600)

// Rendered is what kms.yaml renders for the desired revision: the two
// things a step cannot carry and the driver must not re-invent.
type Rendered struct {
	// Pod is the static pod manifest, render.StaticPod; WritePod writes it.
	Pod []byte
	// Provider is the provider's EncryptionConfiguration entry,
	// render.KMSProvider; AddReadOnly inserts it.
	Provider apiserverv1.ProviderConfiguration
}

// Apply makes node f's files what step asks:
//   - WritePod writes r.Pod, which must render step.Revision, replacing the
//     pod of the same provider;
//   - AddReadOnly inserts r.Provider right after step.After, the write
//     provider; Promote moves step.Provider to the front; RemoveProvider
//     deletes it (never the write provider);
//   - RemovePod deletes step.Provider's static pod;
//   - RollBack restores the last-known-good files byte for byte, after
//     checking they are the step's Config, and deletes the kmsctl pods not
//     among them;
//   - Confirm checks the files are the step's Config and keeps them as the
//     node's last-known-good.
//
// A step already applied changes nothing. Apply persists no progress: the
// caller saves it before (a change) or after (Confirm) calling Apply.
func (s *Store) Apply(f NodeFiles, step rollout.Step, r Rendered) error {
	if err := s.apply(f, step, r); err != nil {
		return fmt.Errorf("%s on node %s: %w", step.Action, f.Name, err)
	}
	return nil
}

func (s *Store) apply(f NodeFiles, step rollout.Step, r Rendered) error {
	if err := s.held(); err != nil {
		return err
	}
	if step.Node != f.Name {
		return fmt.Errorf("the step is for node %q", step.Node)
	}
	if err := checkNodeName(f.Name); err != nil {
		return err
	}
	switch step.Action {
	case rollout.WritePod:
		return writePod(f, step.Revision, r.Pod)
	case rollout.AddReadOnly:
		if r.Provider.KMS == nil || r.Provider.KMS.Name != step.Provider {
			return fmt.Errorf("the rendered provider entry is not kms provider %s: render kms.yaml again and observe again", step.Provider)
		}
		return editConfig(f, func(c *encryptionConfig) error { return c.addReadOnly(r.Provider, step.After) })
	case rollout.Promote:
		return editConfig(f, func(c *encryptionConfig) error { return c.promote(step.Provider) })
	case rollout.RemoveProvider:
		return editConfig(f, func(c *encryptionConfig) error { return c.removeProvider(step.Provider) })
	case rollout.RemovePod:
		return removePod(f, step.Provider)
	case rollout.RollBack:
		return s.rollBack(f, step.Config)
	case rollout.Confirm:
		return s.confirm(f, step.Config)
	}
	return fmt.Errorf("a %s step changes no file", step.Action)
}

// checkNodeName refuses a name that is not one directory name.
func checkNodeName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("node name %q cannot name a directory", name)
	}
	return nil
}

// writePod writes data as rev's static pod: over the file that holds the
// provider's pod now, or as render.NodeManifestFile for a new provider.
func writePod(f NodeFiles, rev lifecycle.Revision, data []byte) error {
	got, ours, err := parseManifest(data)
	switch {
	case err != nil:
		return fmt.Errorf("the manifest to write: %w", err)
	case !ours:
		return fmt.Errorf("the manifest to write is not a plugin static pod (no label %s)", render.LabelProvider)
	case got != rev:
		return fmt.Errorf("the manifest to write is revision %s (image %s, args %s), not %s (image %s, args %s): render kms.yaml again and observe again",
			got, got.ImageDigest, got.ArgsHash, rev, rev.ImageDigest, rev.ArgsHash)
	}
	pods, err := scanManifests(f.ManifestDir)
	if err != nil {
		return err
	}
	if m, ok := pods[rev.Provider]; ok {
		return writeIfChanged(filepath.Join(f.ManifestDir, m.file), data, newFileMode)
	}
	p := filepath.Join(f.ManifestDir, render.NodeManifestFile(rev.Provider))
	if _, err := os.Lstat(p); err == nil {
		// Not in pods, so not a pod of this provider: someone else's file.
		return fmt.Errorf("%s exists and is not the static pod of %s: move it away", p, rev.Provider)
	}
	return writeFileAtomic(p, data, newFileMode)
}

// removePod deletes provider's static pod, if the node has one.
func removePod(f NodeFiles, provider string) error {
	pods, err := scanManifests(f.ManifestDir)
	if err != nil {
		return err
	}
	m, ok := pods[provider]
	if !ok {
		return nil
	}
	return removeFile(filepath.Join(f.ManifestDir, m.file))
}

// editConfig applies change to the node's EncryptionConfiguration and
// writes it back if that changed it.
func editConfig(f NodeFiles, change func(*encryptionConfig) error) error {
	p := f.EncryptionConfigPath
	data, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("read EncryptionConfiguration: %w", err)
	}
	c, err := parseEncryptionConfig(data)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	before, err := c.marshal()
	if err != nil {
		return err
	}
	if err := change(c); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	after, err := c.marshal()
	if err != nil {
		return err
	}
	if string(after) == string(before) {
		// Nothing changed: keep the file byte for byte, even when it is
		// not in render's layout, so its hash stays what the API server
		// has loaded.
		return nil
	}
	return writeIfChanged(p, after, newFileMode)
}

// Last-known-good files, under nodes/<node>/ in the state directory.
const (
	lkgLink       = "lkg"
	lkgDirPrefix  = "lkg."
	lkgConfigFile = "encryption-config.yaml"
	lkgManifests  = "manifests"
)

func (s *Store) nodeDir(node string) string { return filepath.Join(s.dir, nodesDir, node) }

// confirm keeps the node's files, which must be want, as its
// last-known-good set: a new directory, complete and synced, then the lkg
// link swapped to it with one rename.
func (s *Store) confirm(f NodeFiles, want lifecycle.NodeConfig) error {
	st, err := readNode(f)
	if err != nil {
		return err
	}
	if got := st.nodeConfig(); !got.Equal(want) {
		return fmt.Errorf("the node's files are now [%s], not the [%s] to confirm: they changed after they were observed; observe again", got, want)
	}
	dir := s.nodeDir(f.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("keep last-known-good files: %w", err)
	}
	// The node's directory may be new: make its entry durable too.
	for _, d := range []string{s.dir, filepath.Join(s.dir, nodesDir)} {
		if err := syncDir(d); err != nil {
			return fmt.Errorf("keep last-known-good files: %w", err)
		}
	}
	set, err := os.MkdirTemp(dir, lkgDirPrefix)
	if err != nil {
		return fmt.Errorf("keep last-known-good files: %w", err)
	}
	if err := writeLKG(set, st); err != nil {
		os.RemoveAll(set)
		return fmt.Errorf("keep last-known-good files in %s: %w", set, err)
	}
	// A symlink, not a directory, is what is swapped: rename replaces a
	// link in one step, and cannot replace a non-empty directory.
	tmpLink := filepath.Join(dir, "."+lkgLink+tmpInfix+"link")
	os.Remove(tmpLink)
	if err := os.Symlink(filepath.Base(set), tmpLink); err != nil {
		os.RemoveAll(set)
		return fmt.Errorf("keep last-known-good files: %w", err)
	}
	if err := os.Rename(tmpLink, filepath.Join(dir, lkgLink)); err != nil {
		os.Remove(tmpLink)
		os.RemoveAll(set)
		return fmt.Errorf("keep last-known-good files: %w (is %s a directory? kmsctl keeps a symlink there)", err, filepath.Join(dir, lkgLink))
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("keep last-known-good files: %w", err)
	}
	// Older sets, and any a killed kmsctl left half written.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), lkgDirPrefix) && e.Name() != filepath.Base(set) {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
	return nil
}

// writeLKG writes st's files into the new set directory (MkdirTemp made
// it 0700: the EncryptionConfiguration may hold other providers' keys) and
// syncs them.
func writeLKG(set string, st *nodeState) error {
	if err := writeNew(filepath.Join(set, lkgConfigFile), st.config); err != nil {
		return err
	}
	md := filepath.Join(set, lkgManifests)
	if err := os.Mkdir(md, 0o700); err != nil {
		return err
	}
	for _, m := range st.pods {
		if err := writeNew(filepath.Join(md, m.file), m.data); err != nil {
			return err
		}
	}
	if err := syncDir(md); err != nil {
		return err
	}
	return syncDir(set)
}

// lkgSet is a node's last-known-good files.
type lkgSet struct {
	dir       string
	config    []byte
	manifests map[string][]byte // by file name
}

func (s *Store) readLKG(node string) (*lkgSet, error) {
	link := filepath.Join(s.nodeDir(node), lkgLink)
	dir, err := filepath.EvalSymlinks(link)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no last-known-good files at %s: kmsctl keeps them when it confirms the node, before changing it", link)
	}
	if err != nil {
		return nil, fmt.Errorf("read last-known-good files: %w", err)
	}
	set := &lkgSet{dir: dir, manifests: map[string][]byte{}}
	if set.config, err = os.ReadFile(filepath.Join(dir, lkgConfigFile)); err != nil {
		return nil, fmt.Errorf("read last-known-good files: %w", err)
	}
	entries, err := os.ReadDir(filepath.Join(dir, lkgManifests))
	if err != nil {
		return nil, fmt.Errorf("read last-known-good files: %w", err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, lkgManifests, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read last-known-good files: %w", err)
		}
		set.manifests[e.Name()] = data
	}
	return set, nil
}

// LastKnownGood is the config of node's last-known-good files kept in
// this state directory, and false when none are kept here: the driver
// checks, before changing a node, that a rollback could restore what the
// shared progress records (the files may have been kept by a kmsctl with
// another state directory, on another machine).
func (s *Store) LastKnownGood(node string) (lifecycle.NodeConfig, bool, error) {
	if err := checkNodeName(node); err != nil {
		return lifecycle.NodeConfig{}, false, err
	}
	if _, err := os.Lstat(filepath.Join(s.nodeDir(node), lkgLink)); errors.Is(err, fs.ErrNotExist) {
		return lifecycle.NodeConfig{}, false, nil
	}
	set, err := s.readLKG(node)
	if err != nil {
		return lifecycle.NodeConfig{}, false, err
	}
	kept, err := set.state()
	if err != nil {
		return lifecycle.NodeConfig{}, false, err
	}
	return kept.nodeConfig(), true, nil
}

// state reads the set as Observe reads a node.
func (l *lkgSet) state() (*nodeState, error) {
	st := &nodeState{pods: map[string]manifest{}, config: l.config}
	for file, data := range l.manifests {
		rev, ours, err := parseManifest(data)
		if err == nil && !ours {
			err = errors.New("is not a plugin static pod")
		}
		if err == nil && st.pods[rev.Provider].file != "" {
			err = fmt.Errorf("is a second static pod of provider %s", rev.Provider)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(l.dir, lkgManifests, file), err)
		}
		st.pods[rev.Provider] = manifest{file: file, data: data, rev: rev}
	}
	ec, err := parseEncryptionConfig(l.config)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(l.dir, lkgConfigFile), err)
	}
	st.ec = ec
	return st, nil
}

// rollBack restores the node's last-known-good files, which must be want.
// The order keeps every listed provider served: first the pods of the set
// (a provider's pod before any config that lists it), then the
// EncryptionConfiguration, then the removal of pods the set does not have
// (after the config no longer lists them). Interrupted, it is simply run
// again.
func (s *Store) rollBack(f NodeFiles, want lifecycle.NodeConfig) error {
	set, err := s.readLKG(f.Name)
	if err != nil {
		return err
	}
	kept, err := set.state()
	if err != nil {
		return err
	}
	if got := kept.nodeConfig(); !got.Equal(want) {
		return fmt.Errorf("the last-known-good files in %s are [%s], but the step restores [%s]: the progress and the kept files disagree; inspect both and restore the node by hand", set.dir, got, want)
	}
	current, err := scanManifests(f.ManifestDir)
	if err != nil {
		return err
	}
	byFile := map[string]bool{}
	for _, m := range current {
		byFile[m.file] = true
	}
	providers := make([]string, 0, len(kept.pods))
	for p := range kept.pods {
		providers = append(providers, p)
	}
	slices.Sort(providers)
	for _, provider := range providers {
		m := kept.pods[provider]
		p := filepath.Join(f.ManifestDir, m.file)
		if _, err := os.Lstat(p); err == nil && !byFile[m.file] {
			return fmt.Errorf("%s is no longer a static pod kmsctl owns, so it will not overwrite it with the last-known-good one: move it away", p)
		}
		if err := writeIfChanged(p, m.data, newFileMode); err != nil {
			return err
		}
		// The provider's pod moved to another file since: one pod of a
		// name, so the other file goes at once.
		if cur, ok := current[provider]; ok && cur.file != m.file {
			if err := removeFile(filepath.Join(f.ManifestDir, cur.file)); err != nil {
				return err
			}
		}
	}
	if err := writeIfChanged(f.EncryptionConfigPath, set.config, newFileMode); err != nil {
		return err
	}
	for _, m := range current {
		if _, keep := set.manifests[m.file]; !keep {
			if err := removeFile(filepath.Join(f.ManifestDir, m.file)); err != nil {
				return err
			}
		}
	}
	got, _, err := Observe(f)
	if err != nil {
		return fmt.Errorf("after restoring: %w", err)
	}
	if !got.Equal(want) {
		return fmt.Errorf("after restoring, the node's files are [%s], not [%s]", got, want)
	}
	return nil
}
