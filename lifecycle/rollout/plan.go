package rollout

import (
	"slices"
	"strings"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
)

// ApplyTo returns cfg with s's file change made, as a driver writes it to
// disk; cfg itself is not modified. Steps that change no file return cfg.
func ApplyTo(cfg lifecycle.NodeConfig, s Step) lifecycle.NodeConfig {
	d := lifecycle.NodeConfig{Pods: slices.Clone(cfg.Pods), Providers: slices.Clone(cfg.Providers)}
	switch s.Action {
	case WritePod:
		d.Pods = slices.DeleteFunc(d.Pods, func(r lifecycle.Revision) bool { return r.Provider == s.Revision.Provider })
		d.Pods = append(d.Pods, s.Revision)
	case AddReadOnly:
		i := slices.IndexFunc(d.Providers, func(p lifecycle.Provider) bool { return p.Name == s.After })
		d.Providers = slices.Insert(d.Providers, i+1, lifecycle.Provider{Name: s.Provider, KMS: true})
	case Promote:
		rest := slices.DeleteFunc(d.Providers, func(p lifecycle.Provider) bool { return p.Name == s.Provider })
		d.Providers = append([]lifecycle.Provider{{Name: s.Provider, KMS: true}}, rest...)
	case RemoveProvider:
		d.Providers = slices.DeleteFunc(d.Providers, func(p lifecycle.Provider) bool { return p.Name == s.Provider })
	case RemovePod:
		d.Pods = slices.DeleteFunc(d.Pods, func(r lifecycle.Revision) bool { return r.Provider == s.Provider })
	case RollBack:
		d = lifecycle.NodeConfig{Pods: slices.Clone(s.Config.Pods), Providers: slices.Clone(s.Config.Providers)}
	}
	return d
}

// Plan is what `kmsctl rollout plan` prints: the steps Next would return
// from o if every step turned healthy at once (pods start, API servers
// load each file), up to max steps. It stops at the first Done, Refuse or
// Wait; a Wait at the start means the cluster is not healthy now. It
// changes nothing and predicts no failure: apply observes the real
// cluster before every step.
func Plan(o Observed, max int) []Step {
	o.Nodes = slices.Clone(o.Nodes)
	o.Progress.LastKnownGood = cloneMap(o.Progress.LastKnownGood)
	var steps []Step
	for range max {
		s := Next(o)
		steps = append(steps, s)
		switch s.Action {
		case Wait, Done, Refuse:
			return steps
		case Confirm:
			o.Progress.LastKnownGood[s.Node] = s.Config
			o.Progress.InFlight = nil
			continue
		}
		step := s
		o.Progress.InFlight, o.Progress.StartedAt = &step, o.Now
		if s.Action == RollBack {
			o.Progress.Failed = &Failure{Revision: o.Desired, Node: s.Node, Reason: s.Reason}
		}
		for i := range o.Nodes {
			if o.Nodes[i].Name == s.Node {
				o.Nodes[i] = settled(o.Nodes[i], ApplyTo(o.Nodes[i].OnDisk, s))
			}
		}
	}
	return steps
}

// settled is node n once kubelet runs cfg's pods, healthy, and its API
// server has loaded cfg's provider list.
func settled(n lifecycle.Node, cfg lifecycle.NodeConfig) lifecycle.Node {
	n.OnDisk = cfg
	n.Plugins = map[string]lifecycle.PluginHealth{}
	for _, p := range cfg.Pods {
		n.Plugins[p.Provider] = lifecycle.PluginHealth{Running: p, StatusOK: true, PreflightOK: true}
	}
	names := make([]string, len(cfg.Providers))
	for i, p := range cfg.Providers {
		names[i] = p.Name
	}
	// Not a file's sha256: only equality with LoadedConfigHash matters.
	n.ConfigHash = "planned:" + strings.Join(names, ",")
	n.APIServer = lifecycle.APIServerHealth{ReadyzKMS: true, LoadedConfigHash: n.ConfigHash}
	return n
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
