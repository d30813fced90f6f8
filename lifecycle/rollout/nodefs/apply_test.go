package nodefs

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/render"
	"github.com/vaultkms/vault-kms-plugin/lifecycle/rollout"
)

// A new key's whole life on one node, every action in the order the
// planner takes them: after each, Observe is what the planner expects, the
// hash is the file's, the other resource entries and the other owners'
// manifests are untouched.
func TestApplyEveryActionOnOneNode(t *testing.T) {
	old := loadConfig(t, "enterprise")
	q := newKey(old, "q1")
	p, n := old.ProviderName(), q.ProviderName()
	r1, rq := render.Revision(old), render.Revision(q)
	f := newNode(t, "a", old, "", otherResources)
	st := open(t)
	foreign := snapshot(t, f)
	delete(foreign, f.EncryptionConfigPath)
	delete(foreign, filepath.Join(f.ManifestDir, render.NodeManifestFile(p)))
	id := lifecycle.IdentityProvider

	for _, step := range []struct {
		step rollout.Step
		want lifecycle.NodeConfig
	}{
		{step: rollout.Step{Action: rollout.Confirm, Node: "a", Config: lifecycle.NodeConfig{Pods: pods(r1), Providers: kms(p, id)}},
			want: lifecycle.NodeConfig{Pods: pods(r1), Providers: kms(p, id)}},
		{step: rollout.Step{Action: rollout.WritePod, Node: "a", Revision: rq},
			want: lifecycle.NodeConfig{Pods: pods(r1, rq), Providers: kms(p, id)}},
		{step: rollout.Step{Action: rollout.AddReadOnly, Node: "a", Provider: n, After: p},
			want: lifecycle.NodeConfig{Pods: pods(r1, rq), Providers: kms(p, n, id)}},
		{step: rollout.Step{Action: rollout.Promote, Node: "a", Provider: n},
			want: lifecycle.NodeConfig{Pods: pods(r1, rq), Providers: kms(n, p, id)}},
		{step: rollout.Step{Action: rollout.RemoveProvider, Node: "a", Provider: p},
			want: lifecycle.NodeConfig{Pods: pods(r1, rq), Providers: kms(n, id)}},
		{step: rollout.Step{Action: rollout.RemovePod, Node: "a", Provider: p},
			want: lifecycle.NodeConfig{Pods: pods(rq), Providers: kms(n, id)}},
	} {
		t.Run(string(step.step.Action), func(t *testing.T) {
			if err := st.Apply(f, step.step, rendered(t, q)); err != nil {
				t.Fatal(err)
			}
			mustEqual(t, observe(t, f), step.want)
			config := string(read(t, f.EncryptionConfigPath))
			if !strings.HasSuffix(config, otherResources) {
				t.Errorf("the resource entries kmsctl does not manage changed:\n%s", config)
			}
			if !strings.HasPrefix(config, string(leadingComments(renderedConfig(t, old)))) {
				t.Errorf("the header comments changed:\n%s", config)
			}
			now := snapshot(t, f)
			for path, data := range foreign {
				if now[path] != data {
					t.Errorf("%s, another owner's file, changed", path)
				}
			}
			if tmp := tempFiles(t, f.ManifestDir); len(tmp) > 0 {
				t.Errorf("temp files left: %v", tmp)
			}
			// Applied twice, a step changes nothing (a resumed step).
			before := snapshot(t, f)
			if step.step.Action != rollout.Confirm {
				if err := st.Apply(f, step.step, rendered(t, q)); err != nil {
					t.Fatalf("applied again: %v", err)
				}
				sameFiles(t, snapshot(t, f), before)
			}
		})
	}
	// The new pod is render's bytes under render's name for the provider;
	// the entry added is render's.
	if got, want := read(t, filepath.Join(f.ManifestDir, render.NodeManifestFile(n))), staticPod(t, q); string(got) != string(want) {
		t.Errorf("new pod file:\n%s\nwant render's:\n%s", got, want)
	}
	c, err := parseEncryptionConfig(read(t, f.EncryptionConfigPath))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.obj.Resources[0].Providers[0], render.KMSProvider(q); !reflect.DeepEqual(got, want) {
		t.Errorf("entry for %s is %+v, want render's %+v", n, got.KMS, want.KMS)
	}
}

// An in-place revision replaces the provider's pod where it is, even under
// a name of the operator's choosing; its mode is kept.
func TestWritePodReplacesThePodInPlace(t *testing.T) {
	r1 := loadConfig(t, "dev")
	r2 := inPlace(r1, "8")
	f := newNode(t, "a", r1, render.StaticPodFile, "")
	path := filepath.Join(f.ManifestDir, render.StaticPodFile)
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	st := open(t)
	if err := st.Apply(f, rollout.Step{Action: rollout.WritePod, Node: "a", Revision: render.Revision(r2)}, rendered(t, r2)); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, observe(t, f), lifecycle.NodeConfig{Pods: pods(render.Revision(r2)), Providers: kms(r1.ProviderName())})
	if got := string(read(t, path)); got != string(staticPod(t, r2)) {
		t.Fatalf("%s is not r2's pod:\n%s", path, got)
	}
	if _, err := os.Stat(filepath.Join(f.ManifestDir, render.NodeManifestFile(r1.ProviderName()))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a second file was written for the provider: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v, %v; want 0640 kept", fi.Mode(), err)
	}
}

// The first key: the API server has identity only, in two resource entries.
func TestAddReadOnlyAfterIdentityToEveryEntry(t *testing.T) {
	cfg := loadConfig(t, "dev")
	f := newNode(t, "a", cfg, "", "")
	write(t, f.EncryptionConfigPath, []byte("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- providers:\n  - identity: {}\n  resources:\n  - secrets\n- providers:\n  - identity: {}\n  resources:\n  - configmaps\n"))
	st := open(t)
	step := rollout.Step{Action: rollout.AddReadOnly, Node: "a", Provider: cfg.ProviderName(), After: lifecycle.IdentityProvider}
	if err := st.Apply(f, step, rendered(t, cfg)); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, observe(t, f), lifecycle.NodeConfig{Pods: pods(render.Revision(cfg)), Providers: kms(lifecycle.IdentityProvider, cfg.ProviderName())})
	if got := strings.Count(string(read(t, f.EncryptionConfigPath)), "name: "+cfg.ProviderName()); got != 2 {
		t.Fatalf("provider added to %d entries, want 2:\n%s", got, read(t, f.EncryptionConfigPath))
	}
}

// A step that does not fit the files (stale, or rendered from another
// kms.yaml) is refused and changes nothing.
func TestApplyRefusesStepsThatDoNotFit(t *testing.T) {
	old := loadConfig(t, "dev")
	q := newKey(old, "q1")
	p, n := old.ProviderName(), q.ProviderName()
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, f NodeFiles)
		step  rollout.Step
		r     func(t *testing.T) Rendered
		want  string
	}{
		{name: "write-pod of a revision the manifest is not => refused", step: rollout.Step{Action: rollout.WritePod, Revision: render.Revision(inPlace(q, "q2"))}, want: "not q2/" + n},
		{name: "write-pod over someone else's file of that name => refused", step: rollout.Step{Action: rollout.WritePod, Revision: render.Revision(q)}, want: "move it away",
			setup: func(t *testing.T, f NodeFiles) {
				write(t, filepath.Join(f.ManifestDir, render.NodeManifestFile(n)), []byte("# mine\n"))
			}},
		{name: "add-read-only after a provider that does not write => refused", step: rollout.Step{Action: rollout.AddReadOnly, Provider: n, After: "vault-other-33333333"}, want: "writes with " + p},
		{name: "add-read-only with another provider's entry => refused", step: rollout.Step{Action: rollout.AddReadOnly, Provider: "vault-other-33333333", After: p}, want: "not kms provider vault-other-33333333"},
		{name: "promote a provider not listed => refused", step: rollout.Step{Action: rollout.Promote, Provider: n}, want: "add it read-only before"},
		{name: "remove the write provider => refused", step: rollout.Step{Action: rollout.RemoveProvider, Provider: p}, want: "promote another provider"},
		{name: "a step for another node => refused", step: rollout.Step{Action: rollout.Promote, Node: "b", Provider: p}, want: `for node "b"`},
		{name: "wait => refused", step: rollout.Step{Action: rollout.Wait}, want: "changes no file"},
		{name: "confirm of a config not on disk => refused", step: rollout.Step{Action: rollout.Confirm, Config: lifecycle.NodeConfig{Providers: kms(p)}}, want: "changed after they were observed"},
		{name: "roll-back without last-known-good files => refused", step: rollout.Step{Action: rollout.RollBack, Config: lifecycle.NodeConfig{Providers: kms(p)}}, want: "no last-known-good files"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newNode(t, "a", old, "", otherResources)
			if tc.setup != nil {
				tc.setup(t, f)
			}
			before := snapshot(t, f)
			step := tc.step
			if step.Node == "" {
				step.Node = "a"
			}
			st := open(t)
			err := st.Apply(f, step, rendered(t, q))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), string(step.Action)+" on node a: ") {
				t.Fatalf("err = %v\nwant %q, after the action and node", err, tc.want)
			}
			sameFiles(t, snapshot(t, f), before)
		})
	}
}

// Roll back restores exactly the bytes kept at confirm, whatever happened
// after, and removes the pods kmsctl wrote since.
func TestRollBackRestoresTheLastKnownGoodBytes(t *testing.T) {
	old := loadConfig(t, "enterprise")
	q := newKey(old, "q1")
	p, n := old.ProviderName(), q.ProviderName()
	f := newNode(t, "a", old, render.StaticPodFile, otherResources)
	st := open(t)
	good := observe(t, f)
	if err := st.Apply(f, rollout.Step{Action: rollout.Confirm, Node: "a", Config: good}, Rendered{}); err != nil {
		t.Fatal(err)
	}
	kept := snapshot(t, f)

	for _, s := range []rollout.Step{
		{Action: rollout.WritePod, Revision: render.Revision(q)},
		{Action: rollout.AddReadOnly, Provider: n, After: p},
		{Action: rollout.Promote, Provider: n},
		{Action: rollout.WritePod, Revision: render.Revision(inPlace(old, "r2"))},
	} {
		s.Node = "a"
		r := rendered(t, q)
		if s.Revision.Provider == p {
			r = rendered(t, inPlace(old, "r2"))
		}
		if err := st.Apply(f, s, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Apply(f, rollout.Step{Action: rollout.RollBack, Node: "a", Config: good}, Rendered{}); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, snapshot(t, f), kept)
	mustEqual(t, observe(t, f), good)

	t.Run("a rollback to a config the kept files are not => refused, nothing changed", func(t *testing.T) {
		other := good
		other.Providers = kms(n, p)
		err := st.Apply(f, rollout.Step{Action: rollout.RollBack, Node: "a", Config: other}, Rendered{})
		if err == nil || !strings.Contains(err.Error(), "disagree") {
			t.Fatalf("err = %v, want the kept files and the progress to disagree", err)
		}
		sameFiles(t, snapshot(t, f), kept)
	})
}

// A write that fails before its rename leaves the old file as it was and
// no temp file; a rollback cut short is finished by running it again.
func TestAFailedWriteLeavesTheOldFile(t *testing.T) {
	old := loadConfig(t, "dev")
	q := newKey(old, "q1")
	p, n := old.ProviderName(), q.ProviderName()
	f := newNode(t, "a", old, "", otherResources)
	st := open(t)
	good := observe(t, f)
	if err := st.Apply(f, rollout.Step{Action: rollout.Confirm, Node: "a", Config: good}, Rendered{}); err != nil {
		t.Fatal(err)
	}
	kept := snapshot(t, f)
	diskFull := errors.New("no space left on device")
	failOn := func(t *testing.T, path string) {
		files.BeforeRename = func(p string) error {
			if p == path {
				return diskFull
			}
			return nil
		}
		t.Cleanup(func() { files.BeforeRename = nil })
	}

	t.Run("write-pod of an in-place revision fails => old pod intact", func(t *testing.T) {
		failOn(t, filepath.Join(f.ManifestDir, render.NodeManifestFile(p)))
		r2 := inPlace(old, "r2")
		err := st.Apply(f, rollout.Step{Action: rollout.WritePod, Node: "a", Revision: render.Revision(r2)}, rendered(t, r2))
		if !errors.Is(err, diskFull) {
			t.Fatalf("err = %v, want the write's failure", err)
		}
		sameFiles(t, snapshot(t, f), kept)
	})
	t.Run("add-read-only fails => old config intact, no temp file", func(t *testing.T) {
		failOn(t, f.EncryptionConfigPath)
		err := st.Apply(f, rollout.Step{Action: rollout.AddReadOnly, Node: "a", Provider: n, After: p}, rendered(t, q))
		if !errors.Is(err, diskFull) || !strings.Contains(err.Error(), f.EncryptionConfigPath) {
			t.Fatalf("err = %v, want the write's failure naming the file", err)
		}
		sameFiles(t, snapshot(t, f), kept)
	})
	t.Run("roll-back cut short after the pods => run again, exact bytes", func(t *testing.T) {
		for _, s := range []rollout.Step{
			{Action: rollout.WritePod, Node: "a", Revision: render.Revision(q)},
			{Action: rollout.AddReadOnly, Node: "a", Provider: n, After: p},
		} {
			if err := st.Apply(f, s, rendered(t, q)); err != nil {
				t.Fatal(err)
			}
		}
		failOn(t, f.EncryptionConfigPath)
		back := rollout.Step{Action: rollout.RollBack, Node: "a", Config: good}
		if err := st.Apply(f, back, Rendered{}); !errors.Is(err, diskFull) {
			t.Fatalf("err = %v, want the write's failure", err)
		}
		// Cut short, the node still lists the new provider and still runs
		// its pod: the config was not restored, so the pod was not removed.
		mustEqual(t, observe(t, f), lifecycle.NodeConfig{Pods: pods(render.Revision(old), render.Revision(q)), Providers: kms(p, n)})
		files.BeforeRename = nil
		if err := st.Apply(f, back, Rendered{}); err != nil {
			t.Fatal(err)
		}
		sameFiles(t, snapshot(t, f), kept)
	})
	t.Run("a temp file a killed kmsctl left => skipped by Observe, removed by the next write", func(t *testing.T) {
		stale := filepath.Join(filepath.Dir(f.EncryptionConfigPath), "."+filepath.Base(f.EncryptionConfigPath)+tmpInfix+"4242")
		write(t, stale, []byte("half"))
		mustEqual(t, observe(t, f), good)
		if err := st.Apply(f, rollout.Step{Action: rollout.AddReadOnly, Node: "a", Provider: n, After: p}, rendered(t, q)); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("stale temp file still there: %v", err)
		}
	})
}

// Confirm swaps the whole last-known-good set: an older set is gone, and
// what rollback restores is the newest.
func TestConfirmReplacesTheWholeSet(t *testing.T) {
	old := loadConfig(t, "dev")
	q := newKey(old, "q1")
	f := newNode(t, "a", old, "", "")
	st := open(t)
	confirm := func() {
		t.Helper()
		if err := st.Apply(f, rollout.Step{Action: rollout.Confirm, Node: "a", Config: observe(t, f)}, Rendered{}); err != nil {
			t.Fatal(err)
		}
	}
	confirm()
	if err := st.Apply(f, rollout.Step{Action: rollout.WritePod, Node: "a", Revision: render.Revision(q)}, rendered(t, q)); err != nil {
		t.Fatal(err)
	}
	confirm()
	kept := snapshot(t, f)
	good := observe(t, f)
	if err := st.Apply(f, rollout.Step{Action: rollout.RemovePod, Node: "a", Provider: q.ProviderName()}, Rendered{}); err != nil {
		t.Fatal(err)
	}
	if err := st.Apply(f, rollout.Step{Action: rollout.RollBack, Node: "a", Config: good}, Rendered{}); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, snapshot(t, f), kept)

	sets, _ := filepath.Glob(filepath.Join(st.nodeDir("a"), lkgDirPrefix+"*"))
	if len(sets) != 1 {
		t.Fatalf("%d last-known-good sets kept, want 1: %v", len(sets), sets)
	}
	if fi, err := os.Stat(sets[0]); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("set directory mode %v, %v; want 0700 (the config may hold keys)", fi.Mode(), err)
	}
}

// LastKnownGood reads back what Confirm kept, and says when nothing is kept.
func TestLastKnownGoodReadsWhatConfirmKept(t *testing.T) {
	cfg := loadConfig(t, "dev")
	f := newNode(t, "a", cfg, "", "")
	st := open(t)
	if _, ok, err := st.LastKnownGood("a"); ok || err != nil {
		t.Fatalf("before any confirm: kept %v, err %v; want none", ok, err)
	}
	want := observe(t, f)
	if err := st.Apply(f, rollout.Step{Action: rollout.Confirm, Node: "a", Config: want}, Rendered{}); err != nil {
		t.Fatal(err)
	}
	got, ok, err := st.LastKnownGood("a")
	if err != nil || !ok {
		t.Fatalf("after confirm: kept %v, err %v", ok, err)
	}
	mustEqual(t, got, want)
	if _, _, err := st.LastKnownGood("../a"); err == nil {
		t.Error("a node name that is a path was read")
	}
}
