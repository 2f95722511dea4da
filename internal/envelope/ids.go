package envelope

import (
	crand "crypto/rand"
	"encoding/hex"
	"math/rand/v2"
	"sync"
)

// Message ids and span ids come from ChaCha8 generators seeded from
// crypto/rand, one per goroutine that needs one at a time (a sync.Pool):
// as unpredictable as crypto/rand's own output (math/rand/v2 documents
// ChaCha8 as cryptographically strong; an id must not be guessable, or a
// publisher could answer a call it did not receive), without a system call
// or a lock per id. google/uuid's NewRandom reads crypto/rand for every
// id and allocates twice; NewID allocates the string only.
var generators = sync.Pool{New: func() any {
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // never fails (crypto/rand.Read's contract)
	return rand.NewChaCha8(seed)
}}

// random fills b with random bytes.
func random(b []byte) {
	g := generators.Get().(*rand.ChaCha8)
	_, _ = g.Read(b) // never fails
	generators.Put(g)
}

// NewID returns a new random message id: a version 4 UUID in its usual
// text form (36 characters, lower-case), like Watermill's NewUUID.
func NewID() string {
	var s [36]byte
	putID(s[:])
	return string(s[:])
}

// ChildTraceparent returns a traceparent in the same trace as parent with a
// new span id, or the start of a new sampled trace when parent is invalid.
func ChildTraceparent(parent string) string {
	var s [55]byte
	putTraceparent(s[:], parent, ValidTraceparent(parent))
	return string(s[:])
}

// newIDs returns NewID() and ChildTraceparent(parent) in one string
// allocation (every message the engine builds needs both); valid is
// ValidTraceparent(parent).
func newIDs(parent string, valid bool) (id, traceparent string) {
	var s [36 + 55]byte
	putID(s[:36])
	putTraceparent(s[36:], parent, valid)
	both := string(s[:])
	return both[:36], both[36:]
}

// putID writes a new id (see NewID) in s[:36].
func putID(s []byte) {
	var u [16]byte
	random(u[:])
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	hex.Encode(s[0:8], u[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], u[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], u[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], u[8:10])
	s[23] = '-'
	hex.Encode(s[24:36], u[10:16])
}

// putTraceparent writes a child traceparent of parent (see
// ChildTraceparent) in s[:55]; valid is ValidTraceparent(parent).
func putTraceparent(s []byte, parent string, valid bool) {
	if valid {
		copy(s, parent)
	} else {
		copy(s, "00-00000000000000000000000000000000-0000000000000000-01")
		var id [16]byte
		nonZero(id[:])
		hex.Encode(s[3:35], id[:])
	}
	var span [8]byte
	nonZero(span[:])
	hex.Encode(s[36:52], span[:])
}

// nonZero fills b with random bytes, not all zero (W3C: an all-zero trace
// or span id is invalid).
func nonZero(b []byte) {
	random(b)
	for _, c := range b {
		if c != 0 {
			return
		}
	}
	b[len(b)-1] = 1
}
