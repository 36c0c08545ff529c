package audit_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

func TestRecordAndList(t *testing.T) {
	db, _ := testenv.Pool(t)
	ctx := context.Background()
	for _, org := range []string{"org_A", "org_B"} {
		if _, err := db.Exec(ctx, `INSERT INTO organizations (id, name) VALUES ($1, $1)`, org); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	alice := audit.Actor{Type: audit.ActorUser, ID: "user_alice"}
	ops := audit.Actor{Type: audit.ActorCLI, ID: "root"}
	live := true
	// Twelve entries a minute apart: i is the minute.
	var all []string
	for i := 0; i < 12; i++ {
		e := audit.Entry{
			OrganizationID: "org_A", Actor: alice, Action: "api_key.created", TargetType: "api_key",
			TargetID: "key_1", Data: map[string]any{"i": i}, CreatedAt: t0.Add(time.Duration(i) * time.Minute),
		}
		switch {
		case i%3 == 1:
			e.Action, e.Actor, e.Livemode = "api_key.revoked", ops, &live
		case i%3 == 2:
			e.Action, e.TargetID = "membership.created", "user_bob"
		}
		err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error { return audit.Record(ctx, tx, e) })
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, "") // filled below
	}
	if err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		return audit.Record(ctx, tx, audit.Entry{OrganizationID: "org_B", Actor: alice, Action: "api_key.created", CreatedAt: t0})
	}); err != nil {
		t.Fatal(err)
	}
	log := audit.NewLog(db)
	full, err := log.List(ctx, "org_A", audit.Filter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(full.Data) != 12 || full.HasMore {
		t.Fatalf("full list: %d entries, has_more %v", len(full.Data), full.HasMore)
	}
	for i, e := range full.Data {
		all[i] = e.ID
		if want := 11 - i; e.Data["i"] != float64(want) {
			t.Fatalf("entry %d has i=%v, want %d (newest first)", i, e.Data["i"], want)
		}
	}
	minutes := func(p audit.Page) []int {
		var out []int
		for _, e := range p.Data {
			out = append(out, int(e.Data["i"].(float64)))
		}
		return out
	}

	for _, tc := range []struct {
		name    string
		filter  audit.Filter
		want    []int
		hasMore bool
	}{
		{"default limit is 10", audit.Filter{}, []int{11, 10, 9, 8, 7, 6, 5, 4, 3, 2}, true},
		{"exact action", audit.Filter{Action: "api_key.revoked", Limit: 100}, []int{10, 7, 4, 1}, false},
		{"action prefix", audit.Filter{Action: "api_key.", Limit: 3}, []int{10, 9, 7}, true},
		{"actor", audit.Filter{ActorType: audit.ActorCLI, ActorID: "root", Limit: 100}, []int{10, 7, 4, 1}, false},
		{"target", audit.Filter{TargetID: "user_bob", Limit: 100}, []int{11, 8, 5, 2}, false},
		{"since inclusive, until exclusive", audit.Filter{Since: t0.Add(3 * time.Minute), Until: t0.Add(6 * time.Minute)}, []int{5, 4, 3}, false},
		{"starting_after pages to older", audit.Filter{StartingAfter: all[2], Limit: 3}, []int{8, 7, 6}, true},
		{"ending_before pages to newer", audit.Filter{EndingBefore: all[5], Limit: 3}, []int{9, 8, 7}, true},
		{"last page", audit.Filter{StartingAfter: all[9], Limit: 5}, []int{1, 0}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := log.List(ctx, "org_A", tc.filter)
			if err != nil {
				t.Fatal(err)
			}
			if got := minutes(p); !slices.Equal(got, tc.want) || p.HasMore != tc.hasMore {
				t.Fatalf("got %v has_more=%v, want %v has_more=%v", got, p.HasMore, tc.want, tc.hasMore)
			}
			for _, e := range p.Data {
				if e.OrganizationID != "org_A" {
					t.Fatalf("entry of %s leaked into org_A's list", e.OrganizationID)
				}
			}
		})
	}

	for _, tc := range []struct {
		name   string
		filter audit.Filter
		param  string
	}{
		{"limit too large", audit.Filter{Limit: 101}, "limit"},
		{"negative limit", audit.Filter{Limit: -1}, "limit"},
		{"both cursors", audit.Filter{StartingAfter: all[1], EndingBefore: all[3]}, "ending_before"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := log.List(ctx, "org_A", tc.filter)
			if ae := apierror.From(err); err == nil || ae.Status != 400 || ae.Param != tc.param {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestRecordRefusesIncompleteEntries(t *testing.T) {
	db, _ := testenv.Pool(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		e    audit.Entry
	}{
		{"unknown actor type", audit.Entry{OrganizationID: "org_A", Action: "x", Actor: audit.Actor{Type: "robot", ID: "r"}}},
		{"no actor id", audit.Entry{OrganizationID: "org_A", Action: "x", Actor: audit.Actor{Type: audit.ActorSystem}}},
		{"no action", audit.Entry{OrganizationID: "org_A", Actor: audit.Actor{Type: audit.ActorSystem, ID: "deliverer"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := audit.Record(ctx, db, tc.e); err == nil {
				t.Fatal("recorded an incomplete entry")
			}
		})
	}
}

// TestListByEnvironment: a page of one environment holds that environment's
// entries and the organisation-wide ones, up to the limit, however many
// entries of the other environment are newer.
func TestListByEnvironment(t *testing.T) {
	db, _ := testenv.Pool(t)
	ctx := context.Background()
	if _, err := db.Exec(ctx, `INSERT INTO organizations (id, name) VALUES ('org_A', 'A')`); err != nil {
		t.Fatal(err)
	}
	live, sandbox := true, false
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	// Oldest first: an organisation-wide entry, two sandbox ones, then
	// twenty live ones. The target id names each.
	type fixture struct {
		target   string
		livemode *bool
	}
	fixtures := []fixture{{"org", nil}, {"sandbox_1", &sandbox}, {"sandbox_2", &sandbox}}
	for i := range 20 {
		fixtures = append(fixtures, fixture{fmt.Sprintf("live_%02d", i+1), &live})
	}
	for i, f := range fixtures {
		e := audit.Entry{OrganizationID: "org_A", Livemode: f.livemode, Actor: audit.Actor{Type: audit.ActorCLI, ID: "root"},
			Action: "x.y", TargetID: f.target, CreatedAt: t0.Add(time.Duration(i) * time.Minute)}
		if err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error { return audit.Record(ctx, tx, e) }); err != nil {
			t.Fatal(err)
		}
	}
	log := audit.NewLog(db)
	for _, tc := range []struct {
		name    string
		filter  audit.Filter
		want    []string
		hasMore bool
	}{
		{"sandbox: its own and the organisation's, past newer live ones", audit.Filter{Livemode: &sandbox, Limit: 3},
			[]string{"sandbox_2", "sandbox_1", "org"}, false},
		{"sandbox, a page at a time", audit.Filter{Livemode: &sandbox, Limit: 2},
			[]string{"sandbox_2", "sandbox_1"}, true},
		{"live: a full page", audit.Filter{Livemode: &live, Limit: 3},
			[]string{"live_20", "live_19", "live_18"}, true},
		{"live: the organisation's entry too", audit.Filter{Livemode: &live, Limit: 100, Until: t0.Add(5 * time.Minute)},
			[]string{"live_02", "live_01", "org"}, false},
		{"both when unset", audit.Filter{Limit: 100, Until: t0.Add(4 * time.Minute)},
			[]string{"live_01", "sandbox_2", "sandbox_1", "org"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := log.List(ctx, "org_A", tc.filter)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range p.Data {
				got = append(got, e.TargetID)
			}
			if !slices.Equal(got, tc.want) || p.HasMore != tc.hasMore {
				t.Fatalf("got %v has_more=%v, want %v has_more=%v", got, p.HasMore, tc.want, tc.hasMore)
			}
		})
	}
}
