package envelope_test

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/internal/envelope"
)

const seedTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// FuzzRead: whatever the metadata, Read yields a valid traceparent or none,
// a valid tracestate of at most 512 bytes or none, values within the entry
// limit, and a Child that carries nothing Read would drop.
func FuzzRead(f *testing.F) {
	f.Add(seedTraceparent, "congo=t61rcWkgMzE", "alice", "acme", "2030-01-02T03:04:05.123456789Z", "reply.i1")
	f.Add(seedTraceparent, "k="+strings.Repeat("v", 8<<10), "p", "t", "", "billing.v1.charge") // huge tracestate, forged reply_to
	f.Add("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "k=v", "", "", "tomorrow", "reply.a b")
	f.Add("00-00000000000000000000000000000000-00f067aa0ba902b7-01", "", strings.Repeat("p", 5000), "", "", "reply.*")
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\xff", "BAD=1", "", "", "", "reply."+strings.Repeat("x", 300))
	f.Add("", "k=v", "", "", "", "")
	f.Fuzz(func(t *testing.T, tp, ts, principal, tenant, deadline, replyTo string) {
		msg := message.NewMessage("m", nil)
		for k, v := range map[string]string{envelope.KeyTraceparent: tp, envelope.KeyTracestate: ts, envelope.KeyPrincipalID: principal,
			envelope.KeyTenantID: tenant, envelope.KeyDeadline: deadline, envelope.KeyReplyTo: replyTo, envelope.KeyCorrelationID: principal} {
			msg.Metadata.Set(k, v)
		}
		m := envelope.Read(msg)
		if m.Traceparent != "" && !envelope.ValidTraceparent(m.Traceparent) {
			t.Fatalf("Read kept traceparent %q", m.Traceparent)
		}
		if len(m.Tracestate) > envelope.MaxTracestateBytes || !envelope.ValidTracestate(m.Tracestate) || (m.Tracestate != "" && m.Traceparent == "") {
			t.Fatalf("Read kept tracestate %q (traceparent %q)", m.Tracestate, m.Traceparent)
		}
		for _, v := range []string{m.PrincipalID, m.TenantID, m.CorrelationID} {
			if len(v) > envelope.MaxMetadataEntryBytes {
				t.Fatalf("Read kept a %d-byte value", len(v))
			}
		}
		c := envelope.Child(m, "c", time.Time{})
		if !envelope.ValidTraceparent(c.Traceparent) || !envelope.ValidTracestate(c.Tracestate) {
			t.Fatalf("child %+v", c)
		}
		out := message.NewMessage("c", nil)
		envelope.Write(out, c)
		if err := envelope.CheckMetadata(out.Metadata); err != nil && err.Code != 431 {
			t.Fatalf("CheckMetadata: %v", err)
		}
	})
}

// FuzzTraceparent: ValidTraceparent accepts only the exact version-00
// form, a child of a valid one keeps its trace and flags, and tracestate
// validation never accepts more than W3C allows.
func FuzzTraceparent(f *testing.F) {
	for _, s := range []string{seedTraceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-\u00e9",
		"", "k=v,rojo@x=1", strings.Repeat("k=v,", 40), "k=" + strings.Repeat("v", 600)} {
		f.Add(s)
	}
	f.Add("00-00000000000000000000000000000000-00f067aa0ba902b7-01")
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01")
	f.Add("00-00000000000000000000000000000001-0000000000000001-00")
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := envelope.ValidTraceparent(s), validTraceparent(s); got != want {
			t.Fatalf("ValidTraceparent(%q) = %v, the W3C rule says %v", s, got, want)
		}
		if envelope.ValidTraceparent(s) {
			if len(s) != 55 || s[:3] != "00-" || strings.ToLower(s) != s {
				t.Fatalf("accepted %q", s)
			}
			c := envelope.ChildTraceparent(s)
			if !envelope.ValidTraceparent(c) || envelope.TraceID(c) != envelope.TraceID(s) || c[53:] != s[53:] {
				t.Fatalf("child %q of %q", c, s)
			}
		} else if envelope.TraceID(s) != "" {
			t.Fatalf("TraceID of invalid %q", s)
		}
		if envelope.ValidTracestate(s) {
			if len(s) > envelope.MaxTracestateBytes || strings.Count(s, "=") > 32 {
				t.Fatalf("accepted tracestate %q", s)
			}
			for i := 0; i < len(s); i++ {
				if s[i] > 0x7e || s[i] < 0x20 && s[i] != '\t' {
					t.Fatalf("accepted a non-printable tracestate %q", s)
				}
			}
		}
	})
}

// FuzzUnmarshalError: any reply payload decodes to an error with a 4xx or
// 5xx code whose details hold only JSON types (int or float64 numbers),
// and which survives another trip over the wire unchanged.
func FuzzUnmarshalError(f *testing.F) {
	f.Add([]byte(`{"code":413,"message":"m","details":{"limit":1048576,"size":1.5e6}}`))
	f.Add([]byte(`{"code":400,"reason":"invalid_input","message":"x","details":{"field":"a.b","n":[1,2.5,{"k":-3}],"big":1e400,"huge":123456789012345678901234567890}}`))
	f.Add([]byte(`{"code":200}`))
	f.Add([]byte(`{"code":"x"}`))
	f.Add([]byte(`{`))
	f.Add([]byte(`{"code":503,"code":504}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e := envelope.UnmarshalError(b)
		if e.Code < 400 || e.Code > 599 {
			t.Fatalf("code %d", e.Code)
		}
		var check func(v any)
		check = func(v any) {
			switch x := v.(type) {
			case nil, string, bool, int, float64: // float64: not written as an integer
			case map[string]any:
				for _, e := range x {
					check(e)
				}
			case []any:
				for _, e := range x {
					check(e)
				}
			default:
				t.Fatalf("details hold a %T", v)
			}
		}
		check(map[string]any(e.Details))
		again := envelope.UnmarshalError(envelope.MarshalError(e))
		a, _ := json.Marshal(e)
		b2, _ := json.Marshal(again)
		if !bytes.Equal(a, b2) {
			t.Fatalf("second trip changed it:\n%s\n%s", a, b2)
		}
	})
}

// traceparentForm is W3C's version-00 traceparent, for FuzzTraceparent.
var traceparentForm = regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$`)

// validTraceparent is ValidTraceparent written plainly: the form, and a
// trace id and a span id that are not all zeros.
func validTraceparent(s string) bool {
	return traceparentForm.MatchString(s) && strings.Trim(s[3:35], "0") != "" && strings.Trim(s[36:52], "0") != ""
}
