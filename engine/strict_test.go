package engine_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/envelope"
)

type Inner struct {
	City string `json:"city"`
}

type Base struct {
	ID      string `json:"id"`
	Created string // no tag: the field name
}

type Node struct {
	Name     string  `json:"name"`
	Children []*Node `json:"children,omitempty"`
}

type strictIn struct {
	Base
	Name   string `json:"name"`
	Secret string `json:"-"`
	//lint:ignore SA5008 encoding/json documents "-," as naming the key "-"
	Dash   string            `json:"-,"`
	Addr   Inner             `json:"addr"`
	Addrs  []Inner           `json:"addrs"`
	ByKey  map[string]Inner  `json:"by_key"`
	Ptr    *Inner            `json:"ptr"`
	Tree   *Node             `json:"tree"`
	Raw    json.RawMessage   `json:"raw"`
	Any    any               `json:"any"`
	Labels map[string]string `json:"labels"`
	//lint:ignore U1000 an unexported field must not be a key
	private string
}

// TestDecodeStrictExactNames: keys must match the json names exactly and
// appear once, at every depth; the error names the field.
func TestDecodeStrictExactNames(t *testing.T) {
	ok := []string{
		`{"id":"1","Created":"x","name":"n","-":"d","addr":{"city":"c"},"addrs":[{"city":"a"},{"city":"b"}],"by_key":{"K":{"city":"c"},"k":{"city":"d"}},"ptr":{"city":"p"},"tree":{"name":"r","children":[{"name":"c"}]},"raw":{"Any":1,"any":2},"any":{"X":1,"x":2},"labels":{"A":"1","a":"2"}}`,
		`{"ptr":null,"addr":{"city":"\u0063"},"n\u0061me":"escaped key"}`,
		` { "name" : "spaces" } `,
	}
	for _, in := range ok {
		var v strictIn
		if err := engine.DecodeStrict([]byte(in), &v); err != nil {
			t.Errorf("DecodeStrict(%s): %v", in, err)
		}
	}
	bad := []struct{ in, field, says string }{
		{`{"Name":"n"}`, "Name", "unknown field"},
		{`{"NAME":"n"}`, "NAME", "unknown field"},
		{`{"ID":"1"}`, "ID", "unknown field"},           // embedded, promoted
		{`{"created":"x"}`, "created", "unknown field"}, // untagged: the Go name exactly
		{`{"secret":"s"}`, "secret", "unknown field"},   // "-" hides it
		{`{"Secret":"s"}`, "Secret", "unknown field"},
		{`{"private":"p"}`, "private", "unknown field"},
		{`{"addr":{"City":"c"}}`, "addr.City", "unknown field"},
		{`{"addrs":[{"city":"a"},{"CITY":"b"}]}`, "addrs.CITY", "unknown field"},
		{`{"by_key":{"k":{"City":"c"}}}`, "by_key.k.City", "unknown field"},
		{`{"ptr":{"City":"p"}}`, "ptr.City", "unknown field"},
		{`{"tree":{"children":[{"Name":"x"}]}}`, "tree.children.Name", "unknown field"},
		{`{"name":"a","name":"b"}`, "name", "duplicate field"},
		{`{"name":"a","Name":"b"}`, "Name", "unknown field"},
		{`{"addr":{"city":"a","city":"b"}}`, "addr.city", "duplicate field"},
		{`{"labels":{"a":"1","a":"2"}}`, "labels.a", "duplicate field"},
		{`{"id":"1","id":"2"}`, "id", "duplicate field"},
		{`{"n\u0061me":"a","name":"b"}`, "name", "duplicate field"},
	}
	for _, c := range bad {
		var v strictIn
		err := engine.DecodeStrict([]byte(c.in), &v)
		var e *engine.Error
		if !errors.As(err, &e) || e.Code != 400 || e.Details["field"] != c.field || !strings.Contains(e.Message, c.says) {
			t.Errorf("DecodeStrict(%s) = %v (details %v), want a 400 %q naming %q", c.in, err, detailsOf(e), c.says, c.field)
		}
	}
}

func detailsOf(e *engine.Error) map[string]any {
	if e == nil {
		return nil
	}
	return e.Details
}

// TestHandlerInputKeysAreExact: the engine's handlers refuse wrong-case
// and duplicate keys like DecodeStrict; a handler that allows unknown
// fields matches keys as encoding/json does.
func TestHandlerInputKeysAreExact(t *testing.T) {
	bus := inproc.New()
	start(t, bus, engine.Config{}, echoService())
	for in, field := range map[string]string{`{"Text":"a"}`: "Text", `{"text":"a","text":"b"}`: "text"} {
		r := raw(t, bus, Echo.String(), []byte(in), nil)
		we := envelope.UnmarshalError(r.Payload)
		if r.Metadata.Get(envelope.KeyError) != "1" || we.Code != 400 || we.Details["field"] != field {
			t.Errorf("%s: reply %s, want a 400 naming %q", in, r.Payload, field)
		}
	}

	lenient := inproc.New()
	start(t, lenient, engine.Config{}, echoService(engine.AllowUnknownFields()))
	r := raw(t, lenient, Echo.String(), []byte(`{"TEXT":"a","text":"b","colour":"red"}`), nil)
	var out EchoOut
	if err := json.Unmarshal(r.Payload, &out); err != nil || out.Text != "b" {
		t.Errorf("lenient handler: %s %v", r.Payload, err)
	}
}
