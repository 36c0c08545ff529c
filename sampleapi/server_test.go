package sampleapi

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/gatehouse/gatehouse/internal/testenv"
)

// Cursors compare ids with < and >, which only follows creation order under
// byte-wise ("C") collation; a database created with en_US.UTF-8 would sort
// 'a' before 'B'. Migration 0002 pins the column's collation so that list
// order does not depend on how the database was created.
func TestCustomerIDsUseByteOrder(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Pool(t)
	var collation string
	err := pool.QueryRow(context.Background(), `
		SELECT coalesce(collation_name, '') FROM information_schema.columns
		WHERE table_name = 'customers' AND column_name = 'id'`).Scan(&collation)
	if err != nil {
		t.Fatal(err)
	}
	if collation != "C" {
		t.Fatalf("customers.id collation = %q, want C", collation)
	}
	// And so a list puts the later id ("…a…" > "…B…" byte-wise) first.
	st := &store{pool: pool}
	older, newer := "cus_0000000B00000000000000", "cus_0000000a00000000000000"
	for _, id := range []string{older, newer} {
		if err := st.insert(context.Background(), "org_A", customer{ID: id, CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	page, _, err := st.list(context.Background(), "org_A", false, listQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 2 || page[0].ID != newer || page[1].ID != older {
		t.Fatalf("list order = %v, want %s then %s", page, newer, older)
	}
}

func TestRunStopsWhenContextEnds(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Pool(t)
	s := NewServer(Config{Addr: "127.0.0.1:0", IdentitySecret: testSecret}, pool, zaptest.NewLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Run(ctx); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
}
