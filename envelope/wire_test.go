package envelope_test

import (
	"reflect"
	"testing"

	"github.com/switchboard-go/switchboard/envelope"
)

// TestErrorDetailsKeepTheirTypes: integral numbers come back as int, as
// the handler put them, at every depth; other numbers as float64.
func TestErrorDetailsKeepTheirTypes(t *testing.T) {
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
