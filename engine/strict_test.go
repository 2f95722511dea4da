package engine_test

import (
	"encoding/json"
	"testing"

	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/envelope"
)

// TestHandlerInputKeysAreExact: the engine's handlers refuse wrong-case
// and duplicate keys (strict decoding, package internal/codec, whose tests
// cover it in depth); a handler that allows unknown fields matches keys as
// encoding/json does.
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
