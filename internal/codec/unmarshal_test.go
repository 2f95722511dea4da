package codec_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/switchboard-go/switchboard/internal/codec"
)

type unmarshalTarget struct {
	Text  string            `json:"text"`
	N     int               `json:"n"`
	F     float64           `json:"f"`
	Inner *unmarshalTarget  `json:"inner"`
	List  []int             `json:"list"`
	Map   map[string]string `json:"map"`
	Raw   json.RawMessage   `json:"raw"`
	Any   any               `json:"any"`
}

// unmarshalInputs are payloads that end a recycled Decoder's use in every
// way: a value alone, trailing white space, trailing data, a truncated or
// malformed value, wrong types, and top-level values of every kind (a
// number or literal is complete only at the end of the input).
var unmarshalInputs = []string{
	`{"text":"a","n":1,"inner":{"text":"b","list":[1,2]},"map":{"k":"v"},"raw":{"x":[1]},"any":[1,"s",null]}`,
	`{"text":"a"}  `, "{\"text\":\"a\"}\n\t", `{"text":"a"} {"text":"b"}`, `{"text":"a"}x`, `{"text":"a"`, `{"text":`, ``, `   `,
	`{"n":"str","text":"kept"}`, `{"n":1.5}`, `{"list":{"a":1}}`, `{"inner":{"n":true}}`, `[1,2]`, `"str"`, `12`, `12 `, `1 2`,
	`true`, `null`, `nul`, `{"text":"\u00e9\ud83d\ude00"}`, "{\"text\":\"\xff\"}", `{"f":1e400}`, `{"Text":"case"}`, `{"unknown":1}`,
	`{"raw":1} `, `{"any":{"a":{"b":[]}}}`, `{}`, `[]`, `{"text":"a","text":"b"}`,
}

// TestUnmarshalMatchesJSON: codec.Unmarshal gives json.Unmarshal's error and
// value for each input, whatever payload the recycled Decoder read before
// (each input follows every other one).
func TestUnmarshalMatchesJSON(t *testing.T) {
	for _, before := range unmarshalInputs {
		for _, in := range unmarshalInputs {
			var discard unmarshalTarget
			_ = codec.Unmarshal([]byte(before), &discard)
			checkUnmarshal(t, []byte(in))
		}
	}
}

// FuzzUnmarshal: the same, on any input, and for a top-level any.
func FuzzUnmarshal(f *testing.F) {
	for _, s := range unmarshalInputs {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkUnmarshal(t, b)
		checkUnmarshal(t, b) // after itself: a Decoder left in a bad state shows here
		var want, got any
		wantErr, gotErr := json.Unmarshal(b, &want), codec.Unmarshal(b, &got)
		if errText(wantErr) != errText(gotErr) || !reflect.DeepEqual(want, got) {
			t.Fatalf("any: codec.Unmarshal(%q) = %#v, %v; json.Unmarshal: %#v, %v", b, got, gotErr, want, wantErr)
		}
	})
}

func checkUnmarshal(t *testing.T, b []byte) {
	t.Helper()
	var want, got unmarshalTarget
	wantErr, gotErr := json.Unmarshal(b, &want), codec.Unmarshal(b, &got)
	if errText(wantErr) != errText(gotErr) || reflect.TypeOf(wantErr) != reflect.TypeOf(gotErr) {
		t.Fatalf("codec.Unmarshal(%q): error %v, json.Unmarshal: %v", b, gotErr, wantErr)
	}
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("codec.Unmarshal(%q) = %+v, json.Unmarshal: %+v", b, got, want)
	}
}

func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}
