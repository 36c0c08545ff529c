package pgerr

import (
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err      error
		kind     Kind
		refused  bool
		badValue bool
	}{
		{&pgconn.PgError{Code: "40P01"}, Conflict, false, false},
		{fmt.Errorf("writing: %w", &pgconn.PgError{Code: "40001"}), Conflict, false, false},
		{&pgconn.PgError{Code: "55P03"}, Conflict, false, false},
		{&pgconn.PgError{Code: "57P01"}, Unavailable, false, false}, // admin shutdown
		{&pgconn.PgError{Code: "53300"}, Unavailable, false, false}, // too many connections
		{&pgconn.PgError{Code: "08006"}, Unavailable, false, false},
		{&pgconn.PgError{Code: "22021"}, Other, true, true},  // invalid byte sequence
		{&pgconn.PgError{Code: "23505"}, Other, true, true},  // unique violation
		{&pgconn.PgError{Code: "42P01"}, Other, true, false}, // undefined table: the statement, not the data
		{fmt.Errorf("reading: %w", io.ErrUnexpectedEOF), Unavailable, false, false},
		{errors.New("boom"), Other, false, false},
	} {
		if got := Classify(tc.err); got != tc.kind {
			t.Errorf("Classify(%v) = %d, want %d", tc.err, got, tc.kind)
		}
		if got := BadValue(tc.err); got != tc.badValue {
			t.Errorf("BadValue(%v) = %v, want %v", tc.err, got, tc.badValue)
		}
		if got := Refused(tc.err); got != tc.refused {
			t.Errorf("Refused(%v) = %v, want %v", tc.err, got, tc.refused)
		}
	}
}

// Only a failure that says the statement did not run tells the caller to
// retry later; a lost answer may hide work done, and a retry would do it
// again.
func TestErrorObject(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{"server shutting down", &pgconn.PgError{Code: "57P01"}, 503, "dependency_unavailable"},
		{"too many connections", fmt.Errorf("listing: %w", &pgconn.PgError{Code: "53300"}), 503, "dependency_unavailable"},
		{"deadlock", &pgconn.PgError{Code: "40P01"}, 429, "lock_timeout"},
		{"answer lost", fmt.Errorf("inserting customer: %w", io.ErrUnexpectedEOF), 500, "internal_error"},
		{"refused value", &pgconn.PgError{Code: "23505"}, 500, "internal_error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if e := ErrorObject(tc.err); e.Status != tc.status || e.Code != tc.code {
				t.Errorf("ErrorObject(%v) = %d %s, want %d %s", tc.err, e.Status, e.Code, tc.status, tc.code)
			}
		})
	}
}
