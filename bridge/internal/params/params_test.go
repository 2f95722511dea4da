package params_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/internal/params"
)

func read(t *testing.T, raw string) (*params.Reader, func() (int, time.Duration, bool, string)) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	r := params.New("x", u)
	return r, func() (int, time.Duration, bool, string) {
		n := r.Int("n", 7, 1, 10)
		d := r.Duration("d", time.Second, time.Millisecond, time.Minute)
		b := r.Bool("b", false)
		s := r.String("token", "def", func(v string) string {
			if v == "bad" {
				return "is bad"
			}
			return ""
		})
		return n, d, b, s
	}
}

func TestDefaultsAndValues(t *testing.T) {
	t.Parallel()
	r, get := read(t, "x://h/")
	if n, d, b, s := get(); n != 7 || d != time.Second || b || s != "def" || r.Err() != nil {
		t.Fatalf("defaults: %v %v %v %q %v", n, d, b, s, r.Err())
	}
	r, get = read(t, "x://h/?n=3&d=2s&b=true&token=ok")
	if n, d, b, s := get(); n != 3 || d != 2*time.Second || !b || s != "ok" || r.Err() != nil {
		t.Fatalf("values: %v %v %v %q %v", n, d, b, s, r.Err())
	}
}

func TestEveryProblemReported(t *testing.T) {
	t.Parallel()
	r, get := read(t, "x://h/?n=11&d=soon&b=maybe&token=bad&zz=1&aa=2&n2=1&n2=2")
	r.Int("n2", 0, 0, 9)
	get()
	err := r.Err()
	if !errors.Is(err, bridge.ErrBadURL) {
		t.Fatalf("want ErrBadURL, got %v", err)
	}
	for _, want := range []string{
		"parameter n: 11 is out of range [1, 10]",
		`parameter d: "soon" is not a duration`,
		`parameter b: "maybe" is not true or false`,
		"parameter token: (value hidden) is bad",
		"parameter n2: given 2 times",
		"unknown parameter aa, zz (x:// takes b, d, n, n2, token)",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "bad\"") {
		t.Errorf("secret value shown: %v", err)
	}
}

func TestKnownAndNoParameters(t *testing.T) {
	t.Parallel()
	r, _ := read(t, "x://h/?sslmode=disable")
	r.Known("sslmode")
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	r, _ = read(t, "x://h/?a=1")
	if err := r.Err(); err == nil || !strings.Contains(err.Error(), "x:// takes none") {
		t.Fatalf("got %v", err)
	}
}
