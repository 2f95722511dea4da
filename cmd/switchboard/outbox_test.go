package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/switchboard-go/switchboard/migrations"
)

// `outbox stats` counts the rows the broker refused, `outbox failed` lists
// them, `outbox retry` makes them deliverable again.
func TestOutboxFailedAndRetry(t *testing.T) {
	e := newEnv(t)
	if _, err := migrations.Up(context.Background(), e.db, migrations.Config{Schema: e.schema}); err != nil {
		t.Fatal(err)
	}
	// As the relay records refusals: one parked, one waiting for a retry,
	// one never tried.
	if _, err := e.db.Exec(`INSERT INTO "` + e.schema + `".outbox (topic, uuid, payload, attempts, parked_at, retry_at, last_error) VALUES
		('event.big', 'm-1', '\x00', 1, now(), NULL, 'nats: maximum payload exceeded'),
		('svc.v1.cmd', 'm-2', '\x00', 3, NULL, now() + interval '1 minute', 'no consumer for command topic'),
		('svc.v1.cmd', 'm-3', '\x00', 0, NULL, NULL, NULL)`); err != nil {
		t.Fatal(err)
	}
	outbox := func(args ...string) (int, string, string) {
		return cli(t, append(append([]string{"outbox"}, args...), e.dbArgs()...)...)
	}
	code, out, errOut := outbox("stats", "--json")
	var s struct{ Backlog, Retrying, Parked int }
	if code != 0 || json.Unmarshal([]byte(out), &s) != nil || s.Backlog != 2 || s.Retrying != 1 || s.Parked != 1 {
		t.Errorf("stats --json: exit %d, %q %q", code, out, errOut)
	}
	if code, out, _ := outbox("stats"); code != 0 || !strings.Contains(out, "parked:   1 rows") || !strings.Contains(out, "retrying: 1 rows") {
		t.Errorf("stats: exit %d, %q", code, out)
	}
	code, out, errOut = outbox("failed")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.Contains(lines[1], "parked") || !strings.Contains(lines[1], "maximum payload exceeded") ||
		!strings.Contains(lines[2], "retry at") || !strings.Contains(lines[2], "m-2") {
		t.Errorf("failed: exit %d, %q %q", code, out, errOut)
	}
	var list []struct {
		ID       int64  `json:"id"`
		Topic    string `json:"topic"`
		ParkedAt string `json:"parked_at"`
	}
	if code, out, _ := outbox("failed", "--json"); code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != 2 || list[0].Topic != "event.big" || list[0].ParkedAt == "" {
		t.Fatalf("failed --json: exit %d, %q", code, out)
	}
	if code, out, errOut := outbox("retry", strings.TrimSpace(strings.Fields(lines[1])[0])); code != 0 || !strings.HasPrefix(out, "1 row") {
		t.Errorf("retry ID: exit %d, %q %q", code, out, errOut)
	}
	if code, out, _ := outbox("stats", "--json"); code != 0 || !strings.Contains(out, `"parked":0`) || !strings.Contains(out, `"backlog":3`) {
		t.Errorf("stats after retry: exit %d, %q", code, out)
	}
	if code, out, errOut := outbox("retry", "--all"); code != 0 || !strings.HasPrefix(out, "1 row") {
		t.Errorf("retry --all: exit %d, %q %q", code, out, errOut)
	}
	// Discard deletes failed rows only: m-3 (never tried) stays.
	if _, err := e.db.Exec(`UPDATE "` + e.schema + `".outbox SET parked_at = now() WHERE uuid = 'm-1'`); err != nil {
		t.Fatal(err)
	}
	var ids []string // every row: discard must pick the failed ones itself
	rows, err := e.db.Query(`SELECT id FROM "` + e.schema + `".outbox ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		_ = rows.Scan(&id)
		ids = append(ids, id)
	}
	rows.Close()
	if code, out, errOut := outbox(append([]string{"discard"}, ids...)...); code != 0 || !strings.HasPrefix(out, "1 failed row(s) deleted") {
		t.Errorf("discard %v: exit %d, %q %q", ids, code, out, errOut)
	}
	if code, out, _ := outbox("stats", "--json"); code != 0 || !strings.Contains(out, `"parked":0`) || !strings.Contains(out, `"backlog":2`) {
		t.Errorf("stats after discard: exit %d, %q", code, out)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"retry"}, "give row ids or --all"},
		{[]string{"retry", "7", "--all"}, "not both"},
		{[]string{"retry", "x"}, `"x" is not a row id`},
		{[]string{"discard"}, "there is no --all"},
		{[]string{"discard", "--all"}, "there is no --all"},
		{[]string{"discard", "0"}, `"0" is not a row id`},
		{[]string{"peek"}, `unknown action "peek"`},
		{[]string{"failed", "--limit", "0"}, "--limit"},
		{[]string{"stats", "extra"}, `unexpected argument "extra"`},
	} {
		if code, _, errOut := outbox(c.args...); code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("outbox %v: exit %d, stderr %q; want exit 2 and %q", c.args, code, errOut, c.want)
		}
	}
}

// `outbox failed` prints a row's topic, message id and error (a broker's
// text, an id a caller chose) with their control characters escaped, as
// dlq show does; --json too.
func TestOutboxFailedEscapesControls(t *testing.T) {
	e := newEnv(t)
	if _, err := migrations.Up(context.Background(), e.db, migrations.Config{Schema: e.schema}); err != nil {
		t.Fatal(err)
	}
	const hostile = "\x1b]0;pwned\a\x1b[2J\u009b31m\u202e\r"
	if _, err := e.db.Exec(`INSERT INTO "`+e.schema+`".outbox (topic, uuid, payload, attempts, parked_at, last_error) VALUES
		($1, $2, '\x00', 1, now(), $3)`, "event.t"+hostile, "m"+hostile, "refused"+hostile+"\nline 2"); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"failed"}, {"failed", "--json"}} {
		code, out, errOut := cli(t, append(append([]string{"outbox"}, args...), e.dbArgs()...)...)
		if code != 0 || !strings.Contains(out, "refused") {
			t.Fatalf("outbox %v: exit %d, %q %q", args, code, out, errOut)
		}
		for _, bad := range []string{"\x1b", "\x07", "\r", "\u009b", "\u202e"} {
			if strings.Contains(out, bad) {
				t.Errorf("outbox %v prints %q raw:\n%q", args, bad, out)
			}
		}
	}
}
