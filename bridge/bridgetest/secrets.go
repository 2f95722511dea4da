package bridgetest

import (
	"strings"
)

// URLsWithPassword returns URLs of scheme that each carry password: URLs
// that do not parse (a missing ']', a bad escape, a forgotten host, a
// control character…), URLs with bad parameters, and well-formed URLs no
// server answers on. Tests open each one and check that password appears in
// no error, log line or output.
func URLsWithPassword(scheme, password string) []string {
	shapes := []string{
		"S://app:PW@[::1",                   // missing ']' in host
		"S://app:PW@[::1]:x",                // bad port after an IPv6 host
		"S://app:PW",                        // forgotten host: the password becomes the port
		"S://app:PW@127.0.0.1:99999",        // port out of range
		"S://app:PW@127.0.0.1:%zz",          // bad escape in the port
		"S://app:PW%zz@127.0.0.1:1",         // bad escape next to the password
		"S://app:PW@host name:1",            // space in the host
		"S://app:PW@127.0.0.1:1/\x7f",       // control character
		"S://app:PW@127.0.0.1:1/%",          // lone percent
		" S://app:PW@127.0.0.1:1",           // leading space: no scheme
		"S:app:PW@127.0.0.1:1",              // opaque
		"S://app:PW@127.0.0.1:1#fragment",   // fragment
		"S://app:PW@127.0.0.1:1/?unknown=1", // unknown parameter
		"S://app:PW@127.0.0.1:1/?ack_wait=soon&schema=bad-schema&heartbeat=x&reply_prefix=a%20b",
		"S://app:PW@127.0.0.1:1/?password=PW", // the password as a parameter
		"S://app@127.0.0.1:1/?password=PW",
		"S://app:PW@127.0.0.1:1/?pwd=PW",             // another common name for it
		"S://app:12#PW@127.0.0.1:1/",                 // unescaped '#' in the password: the rest is a fragment
		"S://app:12?PW@127.0.0.1:1/",                 // unescaped '?': the rest is a query
		"S://app:12/PW@127.0.0.1:1/",                 // unescaped '/': the rest is a path
		"S://app:12@PW@127.0.0.1:1/",                 // unescaped '@': net/url splits at the last '@', pgx at the first
		"S://app:12#PW",                              // '#' and a forgotten host
		"host=127.0.0.1 port=1 user=app password=PW", // a keyword/value string, not a URL
		"S://app:PW@127.0.0.1:1/",                    // refused
		"S://app:PW@127.0.0.1:1/db?sslmode=disable",  // refused, with a path
		"S://app:PW@unknown-host.invalid:1/",         // no such host
	}
	if strings.HasPrefix(scheme, "nats") {
		shapes = append(shapes, "S://PW@127.0.0.1:1/") // a token alone (NATS token auth)
	}
	out := make([]string, len(shapes))
	for i, s := range shapes {
		out[i] = strings.ReplaceAll(strings.Replace(s, "S:", scheme+":", 1), "PW", password)
	}
	return out
}
