// Package params reads a bridge URL's query parameters with one error
// policy for every backend: every problem is reported at once (unknown
// names with the list of known ones, repeated names, values that do not
// parse or are out of range), joined and wrapped with bridge.ErrBadURL, and
// no value is quoted when its name suggests a secret.
package params

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-go/switchboard/bridge"
)

// Reader reads the parameters of one URL. Each getter marks its name as
// known; Err, called after the last getter, reports every problem.
type Reader struct {
	scheme string
	q      url.Values
	known  []string
	errs   []error
}

// New returns a Reader of u's query for the backend named scheme (used in
// messages). A query that does not parse is reported by Err.
func New(scheme string, u *url.URL) *Reader {
	r := &Reader{scheme: scheme}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		r.errs = append(r.errs, fmt.Errorf("the query does not parse"))
	}
	r.q = q
	return r
}

// value returns the parameter's only value, and whether it was given.
func (r *Reader) value(name string) (string, bool) {
	r.known = append(r.known, name)
	vs, ok := r.q[name]
	if !ok {
		return "", false
	}
	if len(vs) > 1 {
		r.fail(name, "given %d times", len(vs))
		return "", false
	}
	return vs[0], true
}

func (r *Reader) fail(name, format string, args ...any) {
	r.errs = append(r.errs, fmt.Errorf("parameter %s: "+format, append([]any{name}, args...)...))
}

// shown quotes v for a message, unless name suggests a secret.
func shown(name, v string) string {
	if bridge.SecretParam(name) {
		return "(value hidden)"
	}
	return strconv.Quote(v)
}

// String returns the parameter's value, or def. check, when not nil,
// says what is wrong with a value ("" when nothing).
func (r *Reader) String(name, def string, check func(string) string) string {
	v, ok := r.value(name)
	if !ok {
		return def
	}
	if check != nil {
		if problem := check(v); problem != "" {
			r.fail(name, "%s %s", shown(name, v), problem)
			return def
		}
	}
	return v
}

// Int returns the parameter as an integer in [lo, hi], or def.
func (r *Reader) Int(name string, def, lo, hi int) int {
	v, ok := r.value(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	switch {
	case err != nil:
		r.fail(name, "%s is not an integer", shown(name, v))
	case n < lo || n > hi:
		r.fail(name, "%d is out of range [%d, %d]", n, lo, hi)
	default:
		return n
	}
	return def
}

// Duration returns the parameter as a Go duration ("500ms", "2s") in
// [lo, hi], or def.
func (r *Reader) Duration(name string, def, lo, hi time.Duration) time.Duration {
	v, ok := r.value(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	switch {
	case err != nil:
		r.fail(name, "%s is not a duration such as 500ms or 2s", shown(name, v))
	case d < lo || d > hi:
		r.fail(name, "%s is out of range [%s, %s]", d, lo, hi)
	default:
		return d
	}
	return def
}

// Bool returns the parameter as a boolean (true/false/1/0), or def.
func (r *Reader) Bool(name string, def bool) bool {
	v, ok := r.value(name)
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.fail(name, "%s is not true or false", shown(name, v))
		return def
	}
	return b
}

// Known marks names as parameters the backend reads itself (passes on to
// its client library, say), so Err does not call them unknown.
func (r *Reader) Known(names ...string) { r.known = append(r.known, names...) }

// Err reports every problem found so far and every parameter no getter
// asked for, wrapped with bridge.ErrBadURL; nil when there is none.
func (r *Reader) Err() error {
	errs := slices.Clone(r.errs)
	var unknown []string
	for name := range r.q {
		if !slices.Contains(r.known, name) {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		known := slices.Clone(r.known)
		slices.Sort(known)
		known = slices.Compact(known)
		errs = append(errs, fmt.Errorf("unknown parameter %s (%s:// takes %s)", strings.Join(unknown, ", "), r.scheme, orNone(known)))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s: %w", bridge.ErrBadURL, r.scheme, errors.Join(errs...))
}

func orNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}
