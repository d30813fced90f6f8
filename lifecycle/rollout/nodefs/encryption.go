package nodefs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	apiserverv1 "k8s.io/apiserver/pkg/apis/apiserver/v1"
	"sigs.k8s.io/yaml"

	"github.com/vaultkms/vault-kms-plugin/lifecycle"
)

// The only EncryptionConfiguration the API server reads.
const (
	encryptionAPIVersion = "apiserver.config.k8s.io/v1"
	encryptionKind       = "EncryptionConfiguration"
)

// encryptionConfig is a parsed EncryptionConfiguration file.
type encryptionConfig struct {
	// header is the file's leading comment lines, written back as they are.
	header []byte
	obj    apiserverv1.EncryptionConfiguration
}

// parseEncryptionConfig decodes a file strictly: a field the API types do
// not know would be lost when the file is written back, so it is an error,
// not something to drop.
func parseEncryptionConfig(data []byte) (*encryptionConfig, error) {
	c := &encryptionConfig{header: leadingComments(data)}
	if err := yaml.UnmarshalStrict(data, &c.obj); err != nil {
		return nil, fmt.Errorf("not a valid %s: %s", encryptionKind, strings.Join(strings.Fields(err.Error()), " "))
	}
	if err := sameKeys(data, &c.obj); err != nil {
		return nil, err
	}
	if c.obj.APIVersion != encryptionAPIVersion || c.obj.Kind != encryptionKind {
		return nil, fmt.Errorf("is apiVersion %q kind %q, not %s %s", c.obj.APIVersion, c.obj.Kind, encryptionAPIVersion, encryptionKind)
	}
	if _, _, err := c.managed(); err != nil {
		return nil, err
	}
	return c, nil
}

// sameKeys checks that every key of the file is one that obj writes back
// spelled the same. encoding/json matches keys regardless of case, the API
// server does not: a "cacheSize" it ignores would come back as a
// "cachesize" it reads.
func sameKeys(data []byte, obj any) error {
	var orig, back any
	if err := yaml.Unmarshal(data, &orig); err != nil {
		return fmt.Errorf("not valid YAML: %w", err)
	}
	j, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(j, &back); err != nil {
		return err
	}
	return walkKeys(orig, back, "")
}

func walkKeys(orig, back any, at string) error {
	switch o := orig.(type) {
	case map[string]any:
		b, _ := back.(map[string]any)
		for k, v := range o {
			bv, ok := b[k]
			if !ok {
				return fmt.Errorf("field %s is not one the API server reads as written (spelled otherwise, or empty): fix it by hand", strings.TrimPrefix(at+"."+k, "."))
			}
			if err := walkKeys(v, bv, at+"."+k); err != nil {
				return err
			}
		}
	case []any:
		b, _ := back.([]any)
		for i, v := range o {
			if i < len(b) {
				if err := walkKeys(v, b[i], fmt.Sprintf("%s[%d]", at, i)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// leadingComments returns the comment and blank lines at the top of data.
func leadingComments(data []byte) []byte {
	n := 0
	for n < len(data) {
		end := bytes.IndexByte(data[n:], '\n')
		if end < 0 {
			end = len(data) - n - 1
		}
		line := bytes.TrimSpace(data[n : n+end+1])
		if len(line) > 0 && line[0] != '#' {
			break
		}
		n += end + 1
	}
	return data[:n]
}

// marshal is the file's bytes: the kept comment lines, then the object in
// the layout render writes (sorted keys), so a file render wrote and
// nothing changed comes back byte for byte.
func (c *encryptionConfig) marshal() ([]byte, error) {
	y, err := yaml.Marshal(&c.obj)
	if err != nil {
		return nil, fmt.Errorf("marshal %s: %w", encryptionKind, err)
	}
	return append(slices.Clip(c.header), y...), nil
}

// providerOf names one provider entry as lifecycle does: a KMS provider
// by its name, any other kind by its type.
func providerOf(p apiserverv1.ProviderConfiguration) (lifecycle.Provider, error) {
	var kinds []lifecycle.Provider
	if p.KMS != nil {
		kinds = append(kinds, lifecycle.Provider{Name: p.KMS.Name, KMS: true})
	}
	for _, k := range []struct {
		set  bool
		name string
	}{
		{p.Identity != nil, lifecycle.IdentityProvider},
		{p.AESCBC != nil, "aescbc"},
		{p.AESGCM != nil, "aesgcm"},
		{p.Secretbox != nil, "secretbox"},
	} {
		if k.set {
			kinds = append(kinds, lifecycle.Provider{Name: k.name})
		}
	}
	switch {
	case len(kinds) == 0:
		return lifecycle.Provider{}, fmt.Errorf("sets no provider type")
	case len(kinds) > 1:
		return lifecycle.Provider{}, fmt.Errorf("sets %d provider types; the API server takes one per entry", len(kinds))
	case kinds[0].KMS && kinds[0].Name == "":
		return lifecycle.Provider{}, fmt.Errorf("is a kms provider without a name")
	}
	return kinds[0], nil
}

// providersOf is resource entry i's provider list.
func (c *encryptionConfig) providersOf(i int) ([]lifecycle.Provider, error) {
	r := c.obj.Resources[i]
	out := make([]lifecycle.Provider, 0, len(r.Providers))
	for j, pc := range r.Providers {
		p, err := providerOf(pc)
		if err != nil {
			return nil, fmt.Errorf("resources[%d].providers[%d] %w", i, j, err)
		}
		if p.KMS && slices.Contains(out, p) {
			return nil, fmt.Errorf("resources[%d] lists kms provider %s twice", i, p.Name)
		}
		out = append(out, p)
	}
	return out, nil
}

// managed returns the resource entries whose provider list kmsctl rolls,
// and that list: the entries that list a KMS provider, or every entry when
// none does yet (the first key is added to what the API server has). They
// must all list the same providers, or a node would have two lists.
func (c *encryptionConfig) managed() ([]int, []lifecycle.Provider, error) {
	lists := make([][]lifecycle.Provider, len(c.obj.Resources))
	var idx []int
	for i := range c.obj.Resources {
		l, err := c.providersOf(i)
		if err != nil {
			return nil, nil, err
		}
		lists[i] = l
		if slices.ContainsFunc(l, func(p lifecycle.Provider) bool { return p.KMS }) {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		for i := range c.obj.Resources {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return nil, nil, nil
	}
	first := idx[0]
	for _, i := range idx[1:] {
		if !slices.Equal(lists[i], lists[first]) {
			return nil, nil, fmt.Errorf("resources[%d] (%s) lists providers %s but resources[%d] (%s) lists %s: kmsctl rolls one provider list per node, so make them equal",
				first, strings.Join(c.obj.Resources[first].Resources, ","), names(lists[first]),
				i, strings.Join(c.obj.Resources[i].Resources, ","), names(lists[i]))
		}
	}
	return idx, lists[first], nil
}

func names(ps []lifecycle.Provider) string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return "[" + strings.Join(out, ",") + "]"
}

// indexOf is the position of the provider named name in entry i, or -1.
func (c *encryptionConfig) indexOf(i int, name string) int {
	return slices.IndexFunc(c.obj.Resources[i].Providers, func(pc apiserverv1.ProviderConfiguration) bool {
		p, err := providerOf(pc)
		return err == nil && p.Name == name
	})
}

// addReadOnly inserts entry right after the write provider after, in every
// managed resource entry. It is a no-op where the provider is listed.
func (c *encryptionConfig) addReadOnly(entry apiserverv1.ProviderConfiguration, after string) error {
	idx, list, err := c.managed()
	if err != nil {
		return err
	}
	name := entry.KMS.Name
	switch {
	case len(idx) == 0:
		return fmt.Errorf("lists no resources to add %s to", name)
	case slices.ContainsFunc(list, func(p lifecycle.Provider) bool { return p.Name == name }):
		return nil
	case list[0].Name != after:
		return fmt.Errorf("writes with %s, not %s as the step expects (providers %s): observe the node again", list[0].Name, after, names(list))
	}
	for _, i := range idx {
		e := entry
		k := *entry.KMS
		e.KMS = &k
		c.obj.Resources[i].Providers = slices.Insert(slices.Clone(c.obj.Resources[i].Providers), 1, e)
	}
	return nil
}

// promote moves name to the front of every managed entry, keeping the
// others in order.
func (c *encryptionConfig) promote(name string) error {
	idx, list, err := c.managed()
	if err != nil {
		return err
	}
	if !slices.Contains(list, lifecycle.Provider{Name: name, KMS: true}) {
		return fmt.Errorf("does not list kms provider %s (providers %s): add it read-only before promoting it", name, names(list))
	}
	for _, i := range idx {
		ps := c.obj.Resources[i].Providers
		j := c.indexOf(i, name)
		moved := append([]apiserverv1.ProviderConfiguration{ps[j]}, slices.Delete(slices.Clone(ps), j, j+1)...)
		c.obj.Resources[i].Providers = moved
	}
	return nil
}

// removeProvider deletes name from every managed entry; it refuses the
// write provider, which only a promotion of another provider may replace.
func (c *encryptionConfig) removeProvider(name string) error {
	idx, list, err := c.managed()
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(list, func(p lifecycle.Provider) bool { return p.Name == name }) {
		return nil
	}
	if list[0].Name == name {
		return fmt.Errorf("writes with %s: promote another provider before removing it", name)
	}
	for _, i := range idx {
		j := c.indexOf(i, name)
		c.obj.Resources[i].Providers = slices.Delete(slices.Clone(c.obj.Resources[i].Providers), j, j+1)
	}
	return nil
}
