package lifecycle

import "testing"

// ArgsHash keeps argument boundaries: the same bytes split differently
// are other arguments.
func TestArgsHashKeepsBoundaries(t *testing.T) {
	seen := map[string][]string{}
	for _, args := range [][]string{nil, {""}, {"", ""}, {"-a b"}, {"-a", "b"}, {"-a", "b", ""}} {
		h := ArgsHash(args)
		if prev, ok := seen[h]; ok {
			t.Fatalf("ArgsHash(%q) == ArgsHash(%q)", args, prev)
		}
		seen[h] = args
	}
}
