package main

import (
	"io"
	"os"
	"strings"
	"testing"

	"github.com/switchboard-go/switchboard/internal/testenv"
)

func TestOutboxExample(t *testing.T) {
	db, nats := testenv.URL(t, testenv.Postgres), testenv.URL(t, testenv.NATS)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	runErr := run(t.Context(), db, nats)
	os.Stdout = stdout
	_ = w.Close()
	out, _ := io.ReadAll(r)
	if runErr != nil {
		t.Fatalf("run: %v\n%s", runErr, out)
	}
	if got := strings.Count(string(out), "invoiced once: 1 invoice(s)"); got != 3 {
		t.Errorf("%d orders invoiced exactly once, want 3:\n%s", got, out)
	}
}
