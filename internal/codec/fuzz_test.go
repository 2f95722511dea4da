package codec_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/switchboard-go/switchboard/internal/codec"
	"github.com/switchboard-go/switchboard/internal/envelope"
)

// topLevelNames are the exact keys strictIn accepts at its top level.
var topLevelNames = map[string]bool{"id": true, "Created": true, "name": true, "-": true, "addr": true, "addrs": true,
	"by_key": true, "ptr": true, "tree": true, "raw": true, "any": true, "labels": true}

// FuzzDecodeStrict: DecodeStrict never panics, fails only with a 400 (a
// field named for key problems), accepts nothing encoding/json refuses,
// and accepts a top-level object only when its keys are exact names, each
// once (checked independently, with json.Decoder's tokens).
func FuzzDecodeStrict(f *testing.F) {
	for _, s := range []string{
		`{"id":"1","Created":"x","name":"n","addr":{"city":"c"},"addrs":[{"city":"a"}],"by_key":{"k":{"city":"d"}},"tree":{"name":"r","children":[{"name":"c"}]},"raw":{"A":1,"A":2},"any":{"X":1},"labels":{"a":"1"}}`,
		`{"Name":"wrong case"}`, `{"name":"a","name":"b"}`, `{"n\u0061me":"a","name":"b"}`, `{"addr":{"City":"c"}}`,
		`{"labels":{"a":"1","a":"2"}}`, `{"tree":{"children":[{"children":[{"NAME":"deep"}]}]}}`, `{"secret":"s"}`,
		`{"name":"x"} trailing`, `{"name":`, `null`, `[]`, `"str"`, `{"reply_to":"billing.v1.charge"}`, `{"limit":1.048576e+06}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var v strictIn
		err := codec.DecodeStrict(b, &v)
		if err != nil {
			var e *envelope.Error
			if !errors.As(err, &e) || e.Code != 400 {
				t.Fatalf("DecodeStrict(%q): %v, want a 400 *Error", b, err)
			}
			return
		}
		var lenient strictIn
		if json.Unmarshal(b, &lenient) != nil {
			t.Fatalf("DecodeStrict accepted %q, which encoding/json refuses", b)
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
			return // not an object (null)
		}
		seen := map[string]bool{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				t.Fatal(err)
			}
			key := tok.(string)
			if !topLevelNames[key] || seen[key] {
				t.Fatalf("DecodeStrict accepted key %q in %q", key, b)
			}
			seen[key] = true
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				t.Fatal(err)
			}
		}
	})
}
