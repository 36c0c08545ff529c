package audit_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/internal/config"
	"github.com/gatehouse/gatehouse/internal/testenv"
	"github.com/gatehouse/gatehouse/migrations"
)

// The trail pages in order on a database created with a linguistic
// collation, as initdb gives on many hosts (en_US.UTF-8); ICU stands in for
// the libc locale, which this host lacks. Ids order by time in byte order
// only: before migration 0010, 24 of 80 entries came out of order.
func TestPagingOnALinguisticCollation(t *testing.T) {
	ctx := context.Background()
	base := config.String("DATABASE_URL", config.DefaultDatabaseURL)
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	name := "test_collation_" + testenv.Suffix()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name+" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)") })
	u, _ := url.Parse(base)
	u.Path = "/" + name
	if err := migrations.Up(ctx, u.String()); err != nil {
		t.Fatal(err)
	}
	db, err := pgxpool.New(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(ctx, `INSERT INTO organizations (id, name) VALUES ('org_A','A')`); err != nil {
		t.Fatal(err)
	}
	// 80 entries 10 ms apart: the ids' time digits run through 0-9A-Za-z.
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for i := 0; i < 80; i++ {
		e := audit.Entry{OrganizationID: "org_A", Actor: audit.Actor{Type: audit.ActorCLI, ID: "root"},
			Action: "x.y", CreatedAt: t0.Add(time.Duration(i) * 10 * time.Millisecond)}
		if err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error { return audit.Record(ctx, tx, e) }); err != nil {
			t.Fatal(err)
		}
	}
	log := audit.NewLog(db)
	var got []time.Time
	f := audit.Filter{Limit: 10}
	for {
		p, err := log.List(ctx, "org_A", f)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range p.Data {
			got = append(got, e.CreatedAt)
		}
		if !p.HasMore {
			break
		}
		f.StartingAfter = p.Data[len(p.Data)-1].ID
	}
	inversions := 0
	for i := 1; i < len(got); i++ {
		if got[i].After(got[i-1]) {
			inversions++
		}
	}
	if len(got) != 80 || inversions > 0 {
		t.Errorf("paged %d of 80 entries, %d out of newest-first order", len(got), inversions)
	}
}
