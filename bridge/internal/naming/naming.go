// Package naming holds what the backends share to derive broker names from
// topics and groups.
package naming

import (
	"crypto/sha256"
	"encoding/hex"
)

// ShortHash is 8 hex digits of the SHA-256 of the parts, separated by NUL
// so that ("a", "bc") and ("ab", "c") differ.
func ShortHash(parts ...string) string {
	h := sha256.New()
	for i, p := range parts {
		if i > 0 {
			h.Write([]byte{0})
		}
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil)[:4])
}
