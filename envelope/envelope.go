package envelope

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Metadata keys; see the package documentation.
const (
	KeyCorrelationID = "correlation_id"
	KeyCausationID   = "causation_id"
	KeyTraceparent   = "traceparent"
	KeyTracestate    = "tracestate"
	KeyPrincipalID   = "principal_id"
	KeyTenantID      = "tenant_id"
	KeyDeadline      = "deadline"
	KeyReplyTo       = "reply_to"
	KeyKind          = "kind"
	KeyError         = "error"
)

// Values of KeyKind.
const (
	KindCommand = "command"
	KindEvent   = "event"
	KindReply   = "reply"
)

// Meta is what a handler knows about the message it is handling. The engine
// derives every outgoing message's metadata from it; handlers never copy it
// by hand.
type Meta struct {
	MessageID     string    // this message's id
	CorrelationID string    // shared by every message of one conversation
	CausationID   string    // the message that caused this one ("" at the edge)
	Traceparent   string    // W3C traceparent of this message
	Tracestate    string    // W3C tracestate, copied unchanged
	PrincipalID   string    // who the conversation acts for
	TenantID      string    // whose data it concerns
	Deadline      time.Time // zero: none
}

type metaKey struct{}

// WithMeta returns ctx carrying m.
func WithMeta(ctx context.Context, m Meta) context.Context {
	return context.WithValue(ctx, metaKey{}, m)
}

// MetaFrom returns the Meta in ctx and whether there was one.
func MetaFrom(ctx context.Context) (Meta, bool) {
	m, ok := ctx.Value(metaKey{}).(Meta)
	return m, ok
}

// Read extracts Meta from a message's metadata. A malformed deadline or
// traceparent is ignored (treated as absent); the caller decides whether
// missing values are acceptable.
func Read(msg *message.Message) Meta {
	md := msg.Metadata
	m := Meta{
		MessageID:     msg.UUID,
		CorrelationID: md.Get(KeyCorrelationID),
		CausationID:   md.Get(KeyCausationID),
		Tracestate:    md.Get(KeyTracestate),
		PrincipalID:   md.Get(KeyPrincipalID),
		TenantID:      md.Get(KeyTenantID),
	}
	if tp := md.Get(KeyTraceparent); ValidTraceparent(tp) {
		m.Traceparent = tp
	}
	if d := md.Get(KeyDeadline); d != "" {
		if t, err := time.Parse(time.RFC3339Nano, d); err == nil {
			m.Deadline = t
		}
	}
	return m
}

// Child returns the Meta of a new message with id caused by parent: same
// correlation, principal, tenant and trace; parent's id as causation; a new
// span id; the earlier of parent's deadline and deadline. A zero parent (a
// call from outside any handler) starts a new conversation and trace whose
// correlation id is the new message's id.
func Child(parent Meta, id string, deadline time.Time) Meta {
	m := parent
	m.MessageID = id
	m.CausationID = parent.MessageID
	if m.CorrelationID == "" {
		m.CorrelationID = id
	}
	m.Traceparent = ChildTraceparent(parent.Traceparent)
	if !deadline.IsZero() && (m.Deadline.IsZero() || deadline.Before(m.Deadline)) {
		m.Deadline = deadline
	}
	return m
}

// Write sets m's values on msg's metadata (empty values are left out). The
// message id is not written: it is msg.UUID.
func Write(msg *message.Message, m Meta) {
	set := func(k, v string) {
		if v != "" {
			msg.Metadata.Set(k, v)
		}
	}
	set(KeyCorrelationID, m.CorrelationID)
	set(KeyCausationID, m.CausationID)
	set(KeyTraceparent, m.Traceparent)
	set(KeyTracestate, m.Tracestate)
	set(KeyPrincipalID, m.PrincipalID)
	set(KeyTenantID, m.TenantID)
	if !m.Deadline.IsZero() {
		msg.Metadata.Set(KeyDeadline, m.Deadline.UTC().Format(time.RFC3339Nano))
	}
}

// TraceID returns the trace id of a traceparent, or "".
func TraceID(traceparent string) string {
	if !ValidTraceparent(traceparent) {
		return ""
	}
	return traceparent[3:35]
}

// ChildTraceparent returns a traceparent in the same trace as parent with a
// new span id, or the start of a new sampled trace when parent is invalid.
func ChildTraceparent(parent string) string {
	if ValidTraceparent(parent) {
		return parent[:36] + randomHex(8) + parent[52:]
	}
	return "00-" + randomHex(16) + "-" + randomHex(8) + "-01"
}

// ValidTraceparent reports whether s is a version-00 W3C traceparent with
// non-zero trace and span ids.
func ValidTraceparent(s string) bool {
	if len(s) != 55 || s[:3] != "00-" || s[35] != '-' || s[52] != '-' {
		return false
	}
	for i, c := range s {
		if i == 2 || i == 35 || i == 52 {
			continue
		}
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return strings.Trim(s[3:35], "0") != "" && strings.Trim(s[36:52], "0") != ""
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Route says where a message being handled was going: the service and
// handler it reached, the consumer group and the topic. The engine puts it
// in every handler's context; middleware that records messages (such as the
// dead-letter middleware) reads it.
type Route struct {
	Service string // "<name>.v<version>"
	Handler string // command or event name
	Group   string // consumer group
	Topic   string
	Kind    string // KindCommand or KindEvent
}

type routeKey struct{}

// WithRoute returns ctx carrying r.
func WithRoute(ctx context.Context, r Route) context.Context {
	return context.WithValue(ctx, routeKey{}, r)
}

// RouteFrom returns the Route in ctx.
func RouteFrom(ctx context.Context) (Route, bool) {
	r, ok := ctx.Value(routeKey{}).(Route)
	return r, ok
}
