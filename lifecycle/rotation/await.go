package rotation

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// KeyIDSource is one API server's record of the key_ids its KMSv2 plugin's
// Status returned: hashes, as kube-apiserver's metrics carry them
// (lifecycle/apiserver.Observer).
type KeyIDSource interface {
	Name() string
	StatusKeyIDs(ctx context.Context) (map[string]time.Time, error)
}

// AwaitProgress is reported after each poll of every API server.
type AwaitProgress struct {
	// Waiting names the API servers that have not reported the key_id yet.
	Waiting []string
	// Errors are the last poll's failures, by API server.
	Errors  map[string]error
	Elapsed time.Duration
}

func (p AwaitProgress) String() string {
	s := fmt.Sprintf("%.0fs: waiting for %d API server(s) to report the new key_id: %v", p.Elapsed.Seconds(), len(p.Waiting), p.Waiting)
	for _, name := range p.Waiting {
		if err := p.Errors[name]; err != nil {
			s += fmt.Sprintf("; %s: %v", name, err)
		}
	}
	return s
}

// AwaitKeyID polls every source each interval until each has reported
// keyIDHash, so no API server still encrypts with the old key when the
// migration starts (one that had not switched would write objects under
// the old key again). A source that has reported is not asked again. It
// returns ctx's error, naming the API servers still waiting, if ctx ends
// first.
func AwaitKeyID(ctx context.Context, sources []KeyIDSource, keyIDHash string, interval time.Duration, progress func(AwaitProgress)) error {
	start := time.Now()
	waiting := slices.Clone(sources)
	for {
		p := AwaitProgress{Errors: map[string]error{}}
		var still []KeyIDSource
		for _, s := range waiting {
			seen, err := s.StatusKeyIDs(ctx)
			if err != nil {
				p.Errors[s.Name()] = err
			}
			if _, ok := seen[keyIDHash]; !ok {
				still = append(still, s)
				p.Waiting = append(p.Waiting, s.Name())
			}
		}
		waiting = still
		p.Elapsed = time.Since(start)
		if progress != nil {
			progress(p)
		}
		if len(waiting) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: API servers %v have not reported the new key_id", ctx.Err(), p.Waiting)
		case <-time.After(interval):
		}
	}
}
