package main

import (
	"bytes"
	"strings"
	"testing"
)

// The program runs in-process and exits by itself; its output shows each
// scope at work: the audit line of every handled message (engine), the
// 401 of the guard (handler) and the 429 of the per-tenant limit (service).
func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := run(&out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []string{
		// engine: every handler, with the principal and tenant set at the edge
		"audit  user.v1/createUser     principal=ada    tenant=acme    → ok",
		"audit  email.v1/sendWelcome   principal=ada    tenant=acme    → ok",
		"audit  email.v1/user.created  principal=ada    tenant=acme    → ok",
		"audit  email.v1/listSent      principal=ada    tenant=-       → ok",
		"audit  user.v1/createUser     principal=grace  tenant=globex  → ok",
		// handler: the guard answers 401 and the audit log sees it
		"audit  reports.v1/sentMail    principal=-      tenant=-       → 401 Unauthorized: sign in to read reports",
		"→ refused: 401 sign in to read reports",
		"→ 2 e-mails sent",
		// service: acme's third request is refused, globex has its own bucket
		`audit  user.v1/createUser     principal=ada    tenant=acme    → 429 Too Many Requests (rate_limited): tenant "acme" used its 2 requests`,
		`→ refused: 429 tenant "acme" used its 2 requests`,
		"→ created u3",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	// The guard stops the anonymous call before the handler: listSent ran
	// once, for ada. The refused createUser never reached the e-mail service.
	if n := strings.Count(got, "email.v1/listSent"); n != 1 {
		t.Errorf("listSent audited %d times, want 1:\n%s", n, got)
	}
	if n := strings.Count(got, "email.v1/sendWelcome"); n != 3 {
		t.Errorf("sendWelcome audited %d times, want 3 (Ada, Bob, Dan):\n%s", n, got)
	}
	if n := strings.Count(got, "audit "); n != 13 {
		t.Errorf("%d audit lines, want 13:\n%s", n, got)
	}
}
