package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	wmsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestTransient: a publish that failed because the server could not serve
// is retried later (bridge.ErrUnreachable); one the server refused for what
// it is (a missing table, a bad value) is not.
func TestTransient(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{io.ErrUnexpectedEOF, true},
		{context.DeadlineExceeded, true},
		{fmt.Errorf("insert: %w", &pgconn.PgError{Code: "57P01"}), true}, // admin shutdown
		{&pgconn.PgError{Code: "08006"}, true},                           // connection failure
		{&pgconn.PgError{Code: "40001"}, true},                           // serialization failure
		{&pgconn.PgError{Code: "53300"}, true},                           // too many connections
		{&pgconn.PgError{Code: "42P01"}, false},                          // undefined table
		{&pgconn.PgError{Code: "22021"}, false},                          // bad byte sequence
		{&pgconn.PgError{Code: "54000"}, false},                          // program limit exceeded
		{&pgconn.PgError{}, false},
		{fmt.Errorf("publish: %w", wmsql.ErrInvalidTopicName), false}, // checked before any statement
	} {
		if got := transient(c.err); got != c.want {
			var pgErr *pgconn.PgError
			code := ""
			if errors.As(c.err, &pgErr) {
				code = pgErr.Code
			}
			t.Errorf("transient(%v %s) = %v, want %v", c.err, code, got, c.want)
		}
	}
}
