package middleware

import (
	"errors"

	"github.com/switchboard-go/switchboard/internal/envelope"
)

type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// Permanent marks err as not worth retrying: Retry returns it at once and
// DeadLetter stores the message on its first failure. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether retrying err cannot help: it was marked with
// Permanent, or it is an *engine.Error of the 4xx class other than 408
// and 429 (invalid input, unauthorised, not found, …).
func IsPermanent(err error) bool {
	if err == nil {
		return false
	}
	var p permanentError
	if errors.As(err, &p) {
		return true
	}
	var e *envelope.Error
	return errors.As(err, &e) && e.Permanent()
}
