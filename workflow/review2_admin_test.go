package workflow_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/workflow"
)

// TestReview2AdminIDNoRunCanHave: DEFECT (low, misleading error). Show,
// Cancel and Retry refuse an id no run can have as "not found" without a
// query, but check only its length: an id that is not printable ASCII
// (RunID's rule; `switchboard workflow show` takes it from the command
// line, where any bytes may come) goes to PostgreSQL, and an id that is not
// UTF-8 comes back as the database's encoding error (SQLSTATE 22021)
// instead of ErrRunNotFound.
func TestReview2AdminIDNoRunCanHave(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, id := range []string{"\xff\xfe", "bad\x00id", "é"} {
		ops := map[string]func() error{
			"Show":   func() error { _, err := workflow.Show(ctx, e.db, e.schema, id); return err },
			"Cancel": func() error { return workflow.Cancel(ctx, e.db, e.schema, id) },
			"Retry":  func() error { return workflow.Retry(ctx, e.db, e.schema, id) },
		}
		for name, op := range ops {
			if err := op(); !errors.Is(err, workflow.ErrRunNotFound) {
				t.Errorf("%s(%q): %v; want ErrRunNotFound", name, id, err)
			}
		}
	}
}
