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
		err     error
		kind    Kind
		refused bool
	}{
		{&pgconn.PgError{Code: "40P01"}, Conflict, false},
		{fmt.Errorf("writing: %w", &pgconn.PgError{Code: "40001"}), Conflict, false},
		{&pgconn.PgError{Code: "55P03"}, Conflict, false},
		{&pgconn.PgError{Code: "57P01"}, Unavailable, false}, // admin shutdown
		{&pgconn.PgError{Code: "53300"}, Unavailable, false}, // too many connections
		{&pgconn.PgError{Code: "08006"}, Unavailable, false},
		{&pgconn.PgError{Code: "22021"}, Other, true}, // invalid byte sequence
		{&pgconn.PgError{Code: "23505"}, Other, true}, // unique violation
		{fmt.Errorf("reading: %w", io.ErrUnexpectedEOF), Unavailable, false},
		{errors.New("boom"), Other, false},
	} {
		if got := Classify(tc.err); got != tc.kind {
			t.Errorf("Classify(%v) = %d, want %d", tc.err, got, tc.kind)
		}
		if got := Refused(tc.err); got != tc.refused {
			t.Errorf("Refused(%v) = %v, want %v", tc.err, got, tc.refused)
		}
	}
}
