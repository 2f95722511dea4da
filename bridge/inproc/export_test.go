package inproc

import "time"

// NewWithCloseTimeout is New with a subscriber close bound other than
// CloseTimeout, for tests that must not wait 30 s.
func NewWithCloseTimeout(d time.Duration) *Bus {
	b := New()
	b.closeTimeout = d
	return b
}
