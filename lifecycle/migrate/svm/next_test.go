package svm

import (
	"strings"
	"testing"
	"time"
)

// migration is a fixture: a followed migration of secrets in state s.
func migration(s State, msg string) *Migration {
	return &Migration{Name: "kmsctl-secrets-v3-abcde", Resource: "secrets", State: s, Message: msg}
}

func TestNext(t *testing.T) {
	limits := Limits{MaxRounds: 3, IdleTimeout: 5 * time.Minute}
	tests := []struct {
		name string
		obs  Observed
		want Action
		// reason, if set, must be in Step.Reason.
		reason string
	}{
		// Rule 1
		{name: "failed => give up naming the condition's message",
			obs:  Observed{Migration: migration(StateFailed, "migration encountered unhandled error: forbidden"), Rounds: 1, Stale: 300},
			want: GiveUp, reason: "StorageVersionMigration kmsctl-secrets-v3-abcde failed: migration encountered unhandled error: forbidden"},
		{name: "failed with nothing stale => still give up: the failure is reported",
			obs:  Observed{Migration: migration(StateFailed, "x"), Rounds: 1, Stale: 0},
			want: GiveUp, reason: "failed: x"},
		{name: "failed without a message => give up saying so",
			obs:  Observed{Migration: migration(StateFailed, ""), Rounds: 1, Stale: 3},
			want: GiveUp, reason: "failed: no message"},
		// Rule 2
		{name: "pending past the idle timeout => give up asking for the controller",
			obs:  Observed{Migration: migration(StatePending, ""), Rounds: 1, Stale: 300, Idle: 5 * time.Minute},
			want: GiveUp, reason: "storage-version-migrator-controller"},
		{name: "running past the idle timeout => give up",
			obs:  Observed{Migration: migration(StateRunning, ""), Rounds: 1, Stale: 300, Idle: 6 * time.Minute},
			want: GiveUp, reason: "without any of 300 stale objects migrated"},
		// Rule 3
		{name: "pending => wait",
			obs:  Observed{Migration: migration(StatePending, ""), Rounds: 1, Stale: 300, Idle: time.Minute},
			want: Wait},
		{name: "running => wait",
			obs:  Observed{Migration: migration(StateRunning, ""), Rounds: 1, Stale: 120, Idle: time.Second},
			want: Wait},
		{name: "running with nothing stale left => wait for its outcome",
			obs:  Observed{Migration: migration(StateRunning, ""), Rounds: 1, Stale: 0},
			want: Wait},
		{name: "adopted running migration at the last round => wait",
			obs:  Observed{Migration: migration(StateRunning, ""), Rounds: 3, Stale: 10},
			want: Wait},
		// Rule 4
		{name: "no migration and nothing stale => done without creating one",
			obs:  Observed{Stale: 0},
			want: Done},
		{name: "succeeded and nothing stale => done",
			obs:  Observed{Migration: migration(StateSucceeded, ""), Rounds: 1, Stale: 0},
			want: Done},
		{name: "succeeded at the last round and nothing stale => done",
			obs:  Observed{Migration: migration(StateSucceeded, ""), Rounds: 3, Stale: 0},
			want: Done},
		// Rule 5
		{name: "no migration and stale objects => create the first",
			obs:  Observed{Stale: 300},
			want: Create, reason: "300 objects stale"},
		// Rule 6
		{name: "succeeded but stale objects left => create another for the stragglers",
			obs:  Observed{Migration: migration(StateSucceeded, ""), Rounds: 1, Stale: 300},
			want: Create, reason: "Succeeded but 300 objects are still stale"},
		{name: "succeeded twice, stale objects left, one round to go => create the third",
			obs:  Observed{Migration: migration(StateSucceeded, ""), Rounds: 2, Stale: 4},
			want: Create},
		// Rule 7
		{name: "succeeded at the last round with stale objects left => give up, pointing at the API servers",
			obs:  Observed{Migration: migration(StateSucceeded, ""), Rounds: 3, Stale: 4},
			want: GiveUp, reason: "4 objects still stale after 3 StorageVersionMigrations Succeeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.obs.Resource = "secrets"
			got := Next(tt.obs, limits)
			if got.Action != tt.want {
				t.Errorf("Next = %s (%s), want %s", got.Action, got.Reason, tt.want)
			}
			if !strings.HasPrefix(got.Reason, "secrets: ") || !strings.Contains(got.Reason, tt.reason) || strings.Contains(got.Reason, "\n") {
				t.Errorf("reason %q: want one line naming the resource and containing %q", got.Reason, tt.reason)
			}
		})
	}
}

func TestNextDefaults(t *testing.T) {
	t.Run("zero limits => three rounds", func(t *testing.T) {
		o := Observed{Resource: "secrets", Migration: migration(StateSucceeded, ""), Stale: 1}
		o.Rounds = DefaultMaxRounds - 1
		if got := Next(o, Limits{}); got.Action != Create {
			t.Errorf("round %d: %s, want create", o.Rounds, got.Action)
		}
		o.Rounds = DefaultMaxRounds
		if got := Next(o, Limits{}); got.Action != GiveUp {
			t.Errorf("round %d: %s, want give up", o.Rounds, got.Action)
		}
	})
	t.Run("zero limits => five minutes idle", func(t *testing.T) {
		o := Observed{Resource: "secrets", Migration: migration(StatePending, ""), Rounds: 1, Stale: 1, Idle: DefaultIdleTimeout - time.Second}
		if got := Next(o, Limits{}); got.Action != Wait {
			t.Errorf("idle %s: %s, want wait", o.Idle, got.Action)
		}
		o.Idle = DefaultIdleTimeout
		if got := Next(o, Limits{}); got.Action != GiveUp {
			t.Errorf("idle %s: %s, want give up", o.Idle, got.Action)
		}
	})
}
