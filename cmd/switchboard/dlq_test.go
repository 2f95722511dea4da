package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/switchboard-go/switchboard/deadletter"
)

// terminalSafe reports the first rune of s a terminal could act on (any
// non-graphic rune but those in keep), or -1.
func terminalSafe(s, keep string) rune {
	if !utf8.ValidString(s) {
		return utf8.RuneError
	}
	for _, r := range s {
		if !unicode.IsGraphic(r) && !strings.ContainsRune(keep, r) {
			return r
		}
	}
	return -1
}

// printable leaves no control for the terminal, and changes nothing in
// text that has none.
func FuzzPrintable(f *testing.F) {
	for _, s := range []string{"", "plain text", "\x1b]0;title\a", "\x1b[2J", "\u009b31m", "a\u202eb", "line\nnext\ttab\r", "\xff\xfe", "\u2028", "\\x1b"} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, s string, multiline bool) {
		got := printable(s, multiline)
		keep := ""
		if multiline {
			keep = "\n\t"
		}
		if r := terminalSafe(got, keep); r != -1 {
			t.Fatalf("printable(%q, %v) = %q holds %U", s, multiline, got, r)
		}
		if terminalSafe(s, keep) == -1 && got != s {
			t.Fatalf("printable(%q, %v) = %q changed text with nothing to escape", s, multiline, got)
		}
	})
}

// writeJSON leaves no control for the terminal, and its output decodes to
// what encoding/json would have written.
func FuzzWriteJSON(f *testing.F) {
	f.Add("id\x1b[2J", "k\u009b", "v\u202e\r\n", []byte("\x00\xff"))
	f.Add("", "", "", []byte(nil))
	f.Add("\U000e0001tag", "\u2029", "\"\\", []byte(`{"a":1}`))
	f.Fuzz(func(t *testing.T, id, k, v string, payload []byte) {
		r := deadletter.Record{MessageID: id, Metadata: map[string]string{k: v}, Error: v, Payload: payload}
		var out bytes.Buffer
		if err := writeJSON(&out, r); err != nil {
			t.Fatal(err)
		}
		if c := terminalSafe(out.String(), "\n"); c != -1 {
			t.Fatalf("writeJSON holds %U:\n%q", c, out.String())
		}
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var got, exp any
		if err := json.Unmarshal(out.Bytes(), &got); err != nil {
			t.Fatalf("writeJSON wrote invalid JSON: %v\n%q", err, out.String())
		}
		_ = json.Unmarshal(want, &exp)
		g, _ := json.Marshal(got)
		e, _ := json.Marshal(exp)
		if !bytes.Equal(g, e) {
			t.Fatalf("writeJSON decodes to\n%s\nwant\n%s", g, e)
		}
	})
}
