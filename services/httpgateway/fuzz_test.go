package httpgateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/switchboard-go/switchboard/engine"
)

type fuzzIn struct {
	ID    string         `json:"id"`
	Name  string         `json:"name"`
	Limit int8           `json:"limit,omitempty"` // small: huge numbers overflow it
	Tags  []string       `json:"tags,omitempty"`
	Note  *string        `json:"note,omitempty"`
	Score float64        `json:"score,omitempty"`
	Meta  map[string]any `json:"meta,omitempty"`
}

var (
	fuzzStruct = NewEndpoint(http.MethodPost, "/things/{id}", engine.NewCommand[fuzzIn, fuzzIn]("fuzz", "1", "things"), Query("limit", "tags"))
	fuzzList   = NewEndpoint(http.MethodPost, "/list", engine.NewCommand[[]int, []int]("fuzz", "1", "list"))
)

const fuzzMaxBody = 4 << 10

// FuzzDecodeRequest feeds arbitrary path values, query strings, media types
// and bodies to the gateway's request decoding, for an input struct with
// path and query fields and for a non-struct input. It must never panic;
// it answers only 400, 413 or 415; it accepts no declared type but JSON,
// and no body without one; a decoded input has the path values the request
// gave; and the document handed to the strict decoder
// is the body's own bytes with each path and query field added once, no
// key of it equal to another but for case.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []struct{ id, query, contentType, body string }{
		{"a42", "limit=5&tags=x&tags=y", "application/json", `{"name":"Ada","note":"hi"}`},
		// null bodies
		{"a42", "", "application/json", `null`},
		{"a42", "limit=1", "application/json", " null\n"},
		{"a42", "", "application/json", ``},
		{"a42", "", "application/json", "  \t"},
		// wrong or missing media types
		{"a42", "", "", `{"name":"x"}`},
		{"a42", "", "text/plain", `{"name":"x"}`},
		{"a42", "", "application/x-www-form-urlencoded", `name=x`},
		{"a42", "", "application/json; charset=utf-16", `{"name":"x"}`},
		{"a42", "", "application/json;;", `{"name":"x"}`},
		{"a42", "", "application/merge-patch+json; charset=UTF-8", `{"name":"x"}`},
		// nested nulls
		{"a42", "", "application/json", `{"name":null,"note":null,"tags":null,"meta":{"a":null,"b":[null,{"c":null}]}}`},
		{"a42", "", "application/json", `{"name":"x","meta":null}`},
		// huge numbers
		{"a42", "limit=99999999999999999999", "application/json", `{"name":"x"}`},
		{"a42", "limit=-129", "application/json", `{"name":"x"}`},
		{"a42", "", "application/json", `{"name":"x","score":1e400}`},
		{"a42", "", "application/json", `{"name":"x","meta":{"n":123456789012345678901234567890e300}}`},
		{"a42", "", "application/json", `[1e400]`},
		{"a42", "", "application/json", `[99999999999999999999]`},
		// path and query collisions
		{"a42", "", "application/json", `{"name":"x","id":"b"}`},
		{"a42", "", "application/json", `{"name":"x","ID":"b"}`},
		{"a42", "", "application/json", `{"name":"x","\u0069d":"b"}`},
		{"a42", "", "application/json", `{"name":"x","limit":2}`},
		{"a42", "id=b", "application/json", `{"name":"x"}`},
		{"a42", "LIMIT=1", "application/json", `{"name":"x"}`},
		{"a42", "limit=1&limit=2", "application/json", `{"name":"x"}`},
		{"a42", "%zz", "application/json", `{"name":"x"}`},
		// duplicate and wrong-case keys in the body, passed on as sent
		{"a42", "", "application/json", `{"name":"a","name":"b"}`},
		{"a42", "", "application/json", `{"name":"a","NAME":"b"}`},
		// not an object, trailing data, odd paths
		{"a42", "", "application/json", `["x"]`},
		{"a42", "", "application/json", `"x"`},
		{"a42", "", "application/json", `{"name":"x"} {}`},
		{"a42", "", "application/json", `{"name":"x"`},
		{"a42", "", "application/json", strings.Repeat("[", 20000)},
		{"\xff\xfe", "", "application/json", `{"name":"x"}`},
		{"", "tags=", "application/json", `{}`},
	} {
		f.Add(s.id, s.query, s.contentType, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, id, query, contentType string, body []byte) {
		for _, ep := range []*Endpoint{fuzzStruct, fuzzList} {
			req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
			req.URL.RawQuery = query
			req.SetPathValue("id", id)
			if contentType != "" {
				req.Header.Set("Content-Type", contentType)
			}
			doc, p := ep.document(httptest.NewRecorder(), req, fuzzMaxBody)
			if p == nil && ep == fuzzStruct {
				checkDocument(t, body, doc)
			}
			var in fuzzIn
			var list []int
			if p == nil {
				if ep == fuzzStruct {
					p = strictDecode(doc, &in)
				} else {
					p = strictDecode(doc, &list)
				}
			}
			if p != nil {
				switch {
				case p.Status == http.StatusBadRequest && p.Reason == "invalid_input",
					p.Status == http.StatusRequestEntityTooLarge && p.Reason == "payload_too_large",
					p.Status == http.StatusUnsupportedMediaType && p.Reason == "unsupported_media_type":
				default:
					t.Fatalf("%s: problem %+v", ep, p)
				}
				continue
			}
			if !isJSON(contentType) && (contentType != "" || len(bytes.TrimSpace(body)) > 0) {
				t.Fatalf("%s: a body of type %q was accepted", ep, contentType)
			}
			if ep == fuzzStruct && utf8.ValidString(id) && in.ID != id {
				t.Fatalf("path id %q decoded as %q", id, in.ID)
			}
		}
	})
}

// checkDocument checks the document of the struct endpoint: the body's
// bytes without the closing brace start it, and no key of it equals
// another but for case.
func checkDocument(t *testing.T, body, doc []byte) {
	t.Helper()
	if b := bytes.TrimSpace(body); len(b) > 0 && !bytes.HasPrefix(doc, b[:len(b)-1]) {
		t.Fatalf("the document %s does not start with the body %s", doc, b)
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("the document %s is not an object: %v", doc, err)
	}
	seen := map[string]string{} // lower-cased key → key
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("document %s: %v", doc, err)
		}
		key := tok.(string)
		lower := strings.ToLower(key)
		if prev, dup := seen[lower]; dup && (fuzzStruct.paramIn(key) != "" || fuzzStruct.paramIn(prev) != "") {
			t.Fatalf("document %s: %q and %q (a path or query field)", doc, prev, key)
		}
		seen[lower] = key
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("document %s: %v", doc, err)
		}
	}
	if _, err := dec.Token(); err != nil {
		t.Fatalf("document %s: %v", doc, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		t.Fatalf("document %s: trailing data", doc)
	}
}
