package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/switchboard-go/switchboard/migrations"
)

// `schedule list` lists the waiting scheduled messages, the first due
// first; `schedule cancel` deletes them, and nothing else.
func TestScheduleListAndCancel(t *testing.T) {
	e := newEnv(t)
	if _, err := migrations.Up(context.Background(), e.db, migrations.Config{Schema: e.schema}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.Exec(`INSERT INTO "` + e.schema + `".outbox (topic, uuid, payload, deliver_at, forwarded_at) VALUES
		('event.later', 's-2', '\x00', now() + interval '2 hours', NULL),
		('event.soon', 's-1', '\x00', now() + interval '1 hour', NULL),
		('event.now', 'i-1', '\x00', NULL, NULL),
		('event.sent', 's-0', '\x00', now() - interval '1 hour', now())`); err != nil {
		t.Fatal(err)
	}
	schedule := func(args ...string) (int, string, string) {
		return cli(t, append(append([]string{"schedule"}, args...), e.dbArgs()...)...)
	}
	code, out, errOut := schedule("list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[1], "s-1") || !strings.HasPrefix(lines[2], "s-2") {
		t.Errorf("list: exit %d, %q %q", code, out, errOut)
	}
	var list []struct {
		MessageID string `json:"message_id"`
		Topic     string `json:"topic"`
		DeliverAt string `json:"deliver_at"`
	}
	if code, out, _ := schedule("list", "--json"); code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != 2 ||
		list[0].MessageID != "s-1" || list[0].Topic != "event.soon" || list[0].DeliverAt == "" {
		t.Fatalf("list --json: exit %d, %q", code, out)
	}
	// A message due in an hour is not a backlog.
	if code, out, _ := cli(t, append([]string{"outbox", "stats", "--json"}, e.dbArgs()...)...); code != 0 || !strings.Contains(out, `"backlog":1,`) || !strings.Contains(out, `"scheduled":2}`) {
		t.Errorf("outbox stats --json: exit %d, %q", code, out)
	}
	// Only waiting scheduled messages are cancelled: not the immediate
	// row, not the forwarded one, not an unknown id.
	if code, out, errOut := schedule("cancel", "s-1", "i-1", "s-0", "nope"); code != 0 || !strings.HasPrefix(out, "1 scheduled message(s) cancelled") {
		t.Errorf("cancel: exit %d, %q %q", code, out, errOut)
	}
	if code, out, _ := schedule("list", "--json"); code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].MessageID != "s-2" {
		t.Errorf("list after cancel: exit %d, %q", code, out)
	}
	if code, _, errOut := schedule("cancel"); code != 2 || !strings.Contains(errOut, "give the ids") {
		t.Errorf("cancel without ids: exit %d, %q", code, errOut)
	}
	if code, _, errOut := schedule("frob"); code != 2 || !strings.Contains(errOut, "unknown action") {
		t.Errorf("unknown action: exit %d, %q", code, errOut)
	}
}
