package envelope

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
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
	KeyScheduledFor  = "scheduled_for"
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
	// ScheduledFor is when a scheduled message was due (zero for one sent
	// at once). Read parses it, Write writes it, Child clears it: it
	// describes one message, never the messages it causes.
	ScheduledFor time.Time
}

type metaKey struct{}

// WithMeta returns ctx carrying m.
func WithMeta(ctx context.Context, m Meta) context.Context {
	return context.WithValue(ctx, metaKey{}, &m)
}

// MetaFrom returns the Meta in ctx and whether there was one.
func MetaFrom(ctx context.Context) (Meta, bool) {
	// A pointer in the context: boxing a Meta would allocate on every read.
	if m, ok := ctx.Value(metaKey{}).(*Meta); ok {
		return *m, true
	}
	return Meta{}, false
}

// EngineKey is the context key of the engine (engine.WithEngine), here so
// that Handling answers it from its Scope.
type EngineKey struct{}

// Scope is what the contexts of one handler's messages share (the engine
// makes two per handler: its Route awaited and not), so that each context
// holds one pointer to it.
type Scope struct {
	Stop   context.Context // the engine's hard stop; must carry no values
	Engine any             // under EngineKey
	Route  Route           // RouteFrom
}

// Handling returns the context a handler runs in, in one allocation (the
// engine makes one for every message it handles): the values of values, m
// (MetaFrom), s.Route (RouteFrom) and s.Engine under EngineKey; not
// values' deadline or cancellation (as context.WithoutCancel would), but
// m.Deadline (none when zero) and the cancellation of s.Stop; it ends, with
// context.Canceled, at End.
//
// What a context.WithDeadline (or WithCancel) of s.Stop would allocate per
// message, a timer included, is made only when something asks for it: Done,
// a derived context (which asks for Done), or Err and Value once the
// context has ended. Most handlers never wait on their context, and those
// calls would otherwise cost three allocations, a runtime timer and two
// passes through s.Stop's lock per message. Err before then reads the
// clock, End and s.Stop without making anything.
func Handling(values context.Context, m Meta, s *Scope) *HandlerContext {
	return &HandlerContext{values: values, meta: m, scope: s}
}

// MessageIDKey is the context key of engine.WithMessageID: the id the
// messages sent with that context take.
type MessageIDKey struct{}

// HandlerContext is Handling's context.
type HandlerContext struct {
	values context.Context
	meta   Meta
	scope  *Scope
	// state is nil while the context runs and nothing made its
	// cancellation, &endedUnmade once End came first, then the
	// cancellation once made. It only moves forward (nil, &endedUnmade,
	// made), so the loops below take at most three turns. 192 bytes in
	// all, where the context and the context.WithDeadline it replaces
	// took 576.
	state atomic.Pointer[cancellation]
}

// cancellation is a HandlerContext's context.WithDeadline (or WithCancel)
// of its Scope.Stop.
type cancellation struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// endedUnmade is HandlerContext.state after an End that came before
// anything made the cancellation.
var endedUnmade cancellation

// Deadline returns m.Deadline, when not zero.
func (h *HandlerContext) Deadline() (time.Time, bool) {
	return h.meta.Deadline, !h.meta.Deadline.IsZero()
}

// Done makes the context's cancellation, if not made yet.
func (h *HandlerContext) Done() <-chan struct{} { return h.make().Done() }

// Err is nil while the context runs, without making anything.
func (h *HandlerContext) Err() error {
	if !h.madeOrOver() {
		return nil
	}
	return h.make().Err()
}

// madeOrOver reports whether the cancellation is made or the context has
// ended (End, its deadline, Scope.Stop) all the same.
func (h *HandlerContext) madeOrOver() bool {
	if h.state.Load() != nil || h.scope.Stop.Err() != nil {
		return true
	}
	return !h.meta.Deadline.IsZero() && !time.Now().Before(h.meta.Deadline)
}

// make returns the context's cancellation, making it on first use: a
// context.WithDeadline of Scope.Stop (registered with its, as a derived
// context of it is), already ended if End came first.
func (h *HandlerContext) make() context.Context {
	for {
		was := h.state.Load()
		if was != nil && was != &endedUnmade {
			return was.ctx
		}
		c := new(cancellation)
		switch {
		case was == &endedUnmade: // End came first, before the deadline (see End)
			c.ctx, c.cancel = context.WithCancel(h.scope.Stop)
			c.cancel()
		case h.meta.Deadline.IsZero():
			c.ctx, c.cancel = context.WithCancel(h.scope.Stop)
		case !time.Now().Before(h.meta.Deadline):
			// Made after its deadline: DeadlineExceeded, even when Scope.Stop
			// ended since (its deadline came first as far as anyone could
			// have seen: nothing asked before).
			c.ctx, c.cancel = context.WithDeadline(context.Background(), h.meta.Deadline)
		default:
			c.ctx, c.cancel = context.WithDeadline(h.scope.Stop, h.meta.Deadline)
		}
		if h.state.CompareAndSwap(was, c) {
			return c.ctx
		}
		c.cancel() // another goroutine made one, or End came: look again
	}
}

// End ends the context with context.Canceled (when it has not ended
// already), as the CancelFunc of a context.WithCancel would.
func (h *HandlerContext) End() {
	for {
		switch was := h.state.Load(); was {
		case nil:
			if h.madeOrOver() {
				// Ended already (its deadline, Scope.Stop): that stays its
				// error, so make it now, and End does nothing more.
				h.make()
				continue
			}
			if h.state.CompareAndSwap(nil, &endedUnmade) {
				return
			}
		case &endedUnmade:
			return
		default:
			was.cancel()
			return
		}
	}
}

// Value looks up the context package's own keys in the context's
// cancellation, under which a derived context finds the cancellable
// context to register with (it asks for Done first, which makes it), and
// context.Cause the cause: so it is made once the context has ended, and
// until then the lookup goes to Scope.Stop, which has nothing else (values'
// lookup of that key would end in a context.WithoutCancel, and allocate
// there).
func (h *HandlerContext) Value(key any) any {
	switch key {
	case metaKey{}:
		return &h.meta
	case routeKey{}:
		return &h.scope.Route
	case EngineKey{}:
		return h.scope.Engine
	case MessageIDKey{}:
		// A handler's messages never inherit a chosen id from what it
		// was started from: each gets its own unless the handler chooses.
		// (Answered here, a miss also does not walk down to values' end.)
		return nil
	}
	var v any
	if h.madeOrOver() {
		v = h.make().Value(key)
	} else {
		v = h.scope.Stop.Value(key)
	}
	if v != nil {
		return v
	}
	return h.values.Value(key)
}

func (h *HandlerContext) String() string { return "switchboard handler context" }

// Read extracts Meta from a message's metadata. A malformed deadline,
// traceparent or tracestate is ignored (treated as absent), and so is a
// value longer than MaxMetadataEntryBytes (CheckMetadata refuses such a
// message; Read keeps what derives from it, such as an error reply, small).
// The caller decides whether missing values are acceptable.
func Read(msg *message.Message) Meta {
	md := msg.Metadata
	get := func(k string) string {
		if v := md.Get(k); len(k)+len(v) <= MaxMetadataEntryBytes {
			return v
		}
		return ""
	}
	m := Meta{
		MessageID:     msg.UUID,
		CorrelationID: get(KeyCorrelationID),
		CausationID:   get(KeyCausationID),
		PrincipalID:   get(KeyPrincipalID),
		TenantID:      get(KeyTenantID),
	}
	if tp := md.Get(KeyTraceparent); ValidTraceparent(tp) {
		m.Traceparent = tp
		if ts := md.Get(KeyTracestate); ValidTracestate(ts) {
			m.Tracestate = ts // vendor state of no valid trace means nothing
		}
	}
	m.Deadline = ParseTime(md.Get(KeyDeadline))
	m.ScheduledFor = ParseTime(md.Get(KeyScheduledFor))
	return m
}

// maxTimeBytes is the longest time value parsed: RFC 3339 with nanoseconds
// and a zone offset is 35 bytes.
const maxTimeBytes = 64

// ParseTime parses a metadata time (RFC 3339, nanoseconds allowed) as UTC;
// an empty, malformed or overlong value is the zero time.
func ParseTime(s string) time.Time {
	if s == "" || len(s) > maxTimeBytes {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t.UTC()
}

// FormatTime formats t as metadata times are written: RFC 3339 with
// nanoseconds, in UTC.
func FormatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// Child returns the Meta of a new message with id caused by parent: same
// correlation, principal, tenant and trace; parent's id as causation; a new
// span id; the earlier of parent's deadline and deadline. A zero parent (a
// call from outside any handler) starts a new conversation and trace whose
// correlation id is the new message's id. Parent's tracestate is kept only
// when it is valid and belongs to a valid traceparent (W3C: drop, never
// fail), so a Meta given to WithMeta at the edge cannot spread a huge one.
func Child(parent Meta, id string, deadline time.Time) Meta {
	valid := ValidTraceparent(parent.Traceparent)
	var tp [55]byte
	putTraceparent(tp[:], parent.Traceparent, valid)
	return child(parent, id, string(tp[:]), valid, deadline)
}

// NewChild is Child with a new message id (NewID), which it allocates with
// the new traceparent: one allocation for both, not two.
func NewChild(parent Meta, deadline time.Time) Meta {
	valid := ValidTraceparent(parent.Traceparent)
	id, traceparent := newIDs(parent.Traceparent, valid)
	return child(parent, id, traceparent, valid, deadline)
}

// child is Child with the new message's traceparent given, and whether
// parent's is valid.
func child(parent Meta, id, traceparent string, validParent bool, deadline time.Time) Meta {
	m := parent
	m.MessageID = id
	m.CausationID = parent.MessageID
	if m.CorrelationID == "" {
		m.CorrelationID = id
	}
	if !validParent || !ValidTracestate(parent.Tracestate) {
		m.Tracestate = ""
	}
	m.Traceparent = traceparent
	if !deadline.IsZero() && (m.Deadline.IsZero() || deadline.Before(m.Deadline)) {
		m.Deadline = deadline
	}
	m.ScheduledFor = time.Time{}
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
		msg.Metadata.Set(KeyDeadline, FormatTime(m.Deadline))
	}
	if !m.ScheduledFor.IsZero() {
		msg.Metadata.Set(KeyScheduledFor, FormatTime(m.ScheduledFor))
	}
}

// TraceID returns the trace id of a traceparent, or "".
func TraceID(traceparent string) string {
	if !ValidTraceparent(traceparent) {
		return ""
	}
	return traceparent[3:35]
}

// ValidTraceparent reports whether s is a version-00 W3C traceparent:
// exactly "00-" 32 lower-case hex digits (not all zero) "-" 16 lower-case
// hex digits (not all zero) "-" 2 lower-case hex digits, nothing else.
func ValidTraceparent(s string) bool {
	if len(s) != 55 || s[:3] != "00-" || s[35] != '-' || s[52] != '-' {
		return false
	}
	// Bytes, not runes: only ASCII is valid. Every message checks a
	// traceparent or two: one pass, a table, and the all-zero test folded
	// in (an id is all zero when every digit XOR '0' is).
	var trace, span byte
	for i := 3; i < 35; i++ {
		if !lowerHex[s[i]] {
			return false
		}
		trace |= s[i] ^ '0'
	}
	for i := 36; i < 52; i++ {
		if !lowerHex[s[i]] {
			return false
		}
		span |= s[i] ^ '0'
	}
	return lowerHex[s[53]] && lowerHex[s[54]] && trace != 0 && span != 0
}

// lowerHex[c]: c is a lower-case hex digit.
var lowerHex = func() (t [256]bool) {
	for _, c := range []byte("0123456789abcdef") {
		t[c] = true
	}
	return t
}()

// MaxTracestateBytes is the longest tracestate propagated (W3C Trace
// Context: "at least 512 characters"; longer ones may be dropped).
const MaxTracestateBytes = 512

// maxTracestateMembers is W3C's limit on list members.
const maxTracestateMembers = 32

// ValidTracestate reports whether s is a W3C tracestate Switchboard
// propagates: at most MaxTracestateBytes, at most 32 comma-separated
// members (empty ones allowed), each key=value with a W3C key (lower-case
// letters, digits, '_', '-', '*', '/', optionally tenant@system) and a
// value of 1 to 256 printable ASCII characters other than ',' and '=' that
// does not end with a space. The empty string is valid.
func ValidTracestate(s string) bool {
	if len(s) > MaxTracestateBytes {
		return false
	}
	members := 0
	for member := range strings.SplitSeq(s, ",") {
		member = strings.Trim(member, " \t")
		if member == "" {
			continue
		}
		if members++; members > maxTracestateMembers {
			return false
		}
		key, value, ok := strings.Cut(member, "=")
		if !ok || !validTracestateKey(key) || !validTracestateValue(value) {
			return false
		}
	}
	return true
}

func validTracestateKey(k string) bool {
	tenant, system, multi := strings.Cut(k, "@")
	if !multi {
		return len(k) <= 256 && keyChars(k, true)
	}
	return len(tenant) <= 241 && keyChars(tenant, false) && len(system) <= 14 && keyChars(system, true)
}

// keyChars: non-empty, [a-z0-9_*/-] after a first character that is a
// lower-case letter (or, when letterFirst is false, also a digit).
func keyChars(s string, letterFirst bool) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9':
			if i == 0 && letterFirst {
				return false
			}
		case i > 0 && (c == '_' || c == '-' || c == '*' || c == '/'):
		default:
			return false
		}
	}
	return true
}

func validTracestateValue(v string) bool {
	if v == "" || len(v) > 256 || v[len(v)-1] == ' ' {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c > 0x7e || c == ',' || c == '=' {
			return false
		}
	}
	return true
}

// Limits on a message's metadata, checked by CheckMetadata when a message
// is received and before one is sent. They bound what every message copies
// to the messages it causes, and leave backends room to carry it (NATS
// counts headers in its max_payload).
const (
	// MaxMetadataKeys is the most metadata entries a message may carry.
	MaxMetadataKeys = 64
	// MaxMetadataEntryBytes bounds one entry: its key plus its value.
	MaxMetadataEntryBytes = 4096
	// MaxMetadataBytes bounds all entries together: keys plus values.
	MaxMetadataBytes = 16384
)

// ReasonMetadataTooLarge is the Reason of CheckMetadata's errors.
const ReasonMetadataTooLarge = "metadata_too_large"

// CheckMetadata returns a 431 *Error (Request Header Fields Too Large,
// reason ReasonMetadataTooLarge) when md exceeds MaxMetadataKeys,
// MaxMetadataEntryBytes or MaxMetadataBytes; its details name the limit
// and the offending key, never a value.
func CheckMetadata(md message.Metadata) *Error {
	tooLarge := func(msg string, details map[string]any) *Error {
		return &Error{Code: http.StatusRequestHeaderFieldsTooLarge, Reason: ReasonMetadataTooLarge, Message: msg, Details: details}
	}
	if len(md) > MaxMetadataKeys {
		return tooLarge(fmt.Sprintf("metadata has %d entries, the limit is %d", len(md), MaxMetadataKeys),
			map[string]any{"entries": len(md), "limit": MaxMetadataKeys})
	}
	total := 0
	for k, v := range md {
		n := len(k) + len(v)
		if n > MaxMetadataEntryBytes {
			key := k
			if len(key) > 64 {
				key = key[:64] + "…"
			}
			return tooLarge(fmt.Sprintf("metadata entry %q is %d bytes, the limit is %d", key, n, MaxMetadataEntryBytes),
				map[string]any{"key": key, "size": n, "limit": MaxMetadataEntryBytes})
		}
		total += n
	}
	if total > MaxMetadataBytes {
		return tooLarge(fmt.Sprintf("metadata is %d bytes, the limit is %d", total, MaxMetadataBytes),
			map[string]any{"size": total, "limit": MaxMetadataBytes})
	}
	return nil
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
	// Awaited: a caller waits for this message's reply (a command whose
	// reply_to names a reply topic). Decided once, before any middleware
	// runs, so that a middleware editing reply_to cannot change it.
	Awaited bool
}

type routeKey struct{}

// WithRoute returns ctx carrying r.
func WithRoute(ctx context.Context, r Route) context.Context {
	return context.WithValue(ctx, routeKey{}, &r)
}

// RouteFrom returns the Route in ctx.
func RouteFrom(ctx context.Context) (Route, bool) {
	if r, ok := ctx.Value(routeKey{}).(*Route); ok {
		return *r, true
	}
	return Route{}, false
}
