package envelope_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/switchboard-go/switchboard/internal/envelope"
)

// TestErrorDetailsKeepTheirTypes: integral numbers come back as int, as
// the handler put them, at every depth; other numbers as float64.
func TestErrorDetailsKeepTheirTypes(t *testing.T) {
	t.Parallel()
	e := &envelope.Error{Code: 413, Message: "m", Details: map[string]any{
		"limit": 1 << 20, "ratio": 0.5, "neg": -3, "name": "x", "ok": true, "none": nil,
		"nested": map[string]any{"n": 7, "list": []any{1, 2.5, "s"}},
		"huge":   1e300,
	}}
	back := envelope.UnmarshalError(envelope.MarshalError(e))
	want := map[string]any{
		"limit": 1 << 20, "ratio": 0.5, "neg": -3, "name": "x", "ok": true, "none": nil,
		"nested": map[string]any{"n": 7, "list": []any{1, 2.5, "s"}},
		"huge":   1e300,
	}
	if !reflect.DeepEqual(back.Details, want) {
		t.Errorf("details after the wire:\n got %#v\nwant %#v", back.Details, want)
	}
}

func TestTracestate(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]bool{
		"":                  true,
		"congo=t61rcWkgMzE": true,
		"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE": true,
		" rojo=1 , ,congo=2\t":                    true,
		"tenant1@vendor=x":                        true,
		"a/b*c_d-e=v v":                           true,
		strings.Repeat("k=v,", 32)[:127]:          true,
		strings.Repeat("k=v,", 33):                false, // 33 members
		"k=" + strings.Repeat("v", 257):           false, // value over 256
		"k=" + strings.Repeat("v", 520):           false, // over 512 in all
		"Upper=v":                                 false,
		"1key=v":                                  false,
		"key":                                     false,
		"key=":                                    false,
		"key=a,b":                                 false,
		"key=a\x7f":                               false,
		"key=a=b":                                 false,
		"key=\x01":                                false,
		"key=é":                                   false,
		"t@v@w=x":                                 false,
		"@v=x":                                    false,
	} {
		if got := envelope.ValidTracestate(s); got != want {
			t.Errorf("ValidTracestate(%q) = %v", s, got)
		}
	}
}

// TestReadDropsWhatIsMalformedOrHuge: an oversized or malformed
// tracestate, a tracestate without a valid traceparent and values over the
// entry limit are not read, and a child never inherits them.
func TestReadDropsWhatIsMalformedOrHuge(t *testing.T) {
	t.Parallel()
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	read := func(md map[string]string) envelope.Meta {
		msg := message.NewMessage("m", nil)
		for k, v := range md {
			msg.Metadata.Set(k, v)
		}
		return envelope.Read(msg)
	}
	huge := "k=" + strings.Repeat("v", 8<<20)
	if m := read(map[string]string{envelope.KeyTraceparent: tp, envelope.KeyTracestate: huge}); m.Tracestate != "" || m.Traceparent != tp {
		t.Errorf("8 MiB tracestate read: %d bytes", len(m.Tracestate))
	}
	if m := read(map[string]string{envelope.KeyTraceparent: tp, envelope.KeyTracestate: "BAD"}); m.Tracestate != "" {
		t.Errorf("malformed tracestate read: %q", m.Tracestate)
	}
	if m := read(map[string]string{envelope.KeyTracestate: "k=v"}); m.Tracestate != "" {
		t.Errorf("tracestate without traceparent read: %q", m.Tracestate)
	}
	if m := read(map[string]string{envelope.KeyTraceparent: tp, envelope.KeyTracestate: "k=v"}); m.Tracestate != "k=v" {
		t.Errorf("valid tracestate dropped: %q", m.Tracestate)
	}
	if m := read(map[string]string{envelope.KeyPrincipalID: strings.Repeat("p", envelope.MaxMetadataEntryBytes)}); m.PrincipalID != "" {
		t.Errorf("oversized principal read: %d bytes", len(m.PrincipalID))
	}
	child := envelope.Child(envelope.Meta{Traceparent: tp, Tracestate: huge}, "c", time.Time{})
	if child.Tracestate != "" {
		t.Errorf("child inherited a %d-byte tracestate", len(child.Tracestate))
	}
	if child := envelope.Child(envelope.Meta{Traceparent: "bad", Tracestate: "k=v"}, "c", time.Time{}); child.Tracestate != "" {
		t.Errorf("a new trace inherited tracestate %q", child.Tracestate)
	}
}

func TestCheckMetadata(t *testing.T) {
	t.Parallel()
	md := func(n, size int) message.Metadata {
		m := message.Metadata{}
		for i := range n {
			m[fmt.Sprintf("k%02d", i)] = strings.Repeat("v", size)
		}
		return m
	}
	for name, c := range map[string]struct {
		md message.Metadata
		ok bool
	}{
		"typical":        {message.Metadata{"correlation_id": "c", "traceparent": "x"}, true},
		"at entry limit": {md(1, envelope.MaxMetadataEntryBytes-3), true},
		"over entry":     {md(1, envelope.MaxMetadataEntryBytes-2), false},
		"at total limit": {md(4, envelope.MaxMetadataBytes/4-3), true},
		"over total":     {md(5, envelope.MaxMetadataBytes/5), false},
		"at key limit":   {md(envelope.MaxMetadataKeys, 1), true},
		"too many keys":  {md(envelope.MaxMetadataKeys+1, 1), false},
	} {
		err := envelope.CheckMetadata(c.md)
		if (err == nil) != c.ok {
			t.Errorf("%s: CheckMetadata = %v", name, err)
		}
		if err != nil && (err.Code != 431 || err.Reason != envelope.ReasonMetadataTooLarge || strings.Contains(err.Error(), "vvvv")) {
			t.Errorf("%s: %v, want a 431 that shows no value", name, err)
		}
	}
}

// TestMalformedErrorReply: anything but exactly one error object is a 502
// saying so, trailing data included.
func TestMalformedErrorReply(t *testing.T) {
	t.Parallel()
	good := string(envelope.MarshalError(&envelope.Error{Code: 409, Message: "m"}))
	if e := envelope.UnmarshalError([]byte(" " + good + "\n")); e.Code != 409 {
		t.Errorf("a valid reply with surrounding space: %v", e)
	}
	for _, bad := range []string{"", "null", "{}", good + "garbage", good + "}", good + good, `{"code":200}`, `[` + good + `]`} {
		if e := envelope.UnmarshalError([]byte(bad)); e.Code != 502 || e.Reason != "bad_reply" {
			t.Errorf("UnmarshalError(%q) = %v, want a 502 bad_reply", bad, e)
		}
	}
}
