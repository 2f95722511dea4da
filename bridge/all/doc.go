// Package all links every backend into a program, so that any bridge URL
// works: import it for its side effect.
//
//	import _ "github.com/switchboard-go/switchboard/bridge/all"
package all
