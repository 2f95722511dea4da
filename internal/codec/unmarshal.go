package codec

import (
	"bytes"
	"encoding/json"
	"reflect"
	"sync"
)

// Unmarshal is json.Unmarshal(b, v) for a v that points to a zero value:
// the same result, the same error, the same v afterwards. It exists for
// allocations: json.Unmarshal builds its decoder state anew on every call
// (the state, its error context and field stack, the scanner's stack: four
// or five allocations per payload, whatever its size), while a json.Decoder
// keeps them. Unmarshal decodes small payloads with a recycled Decoder and
// falls back to json.Unmarshal, on a zeroed v, whenever that Decoder does
// not succeed exactly as json.Unmarshal would.
func Unmarshal(b []byte, v any) error {
	if len(b) > maxRecycled {
		return json.Unmarshal(b, v) // once: its error is the answer
	}
	if decodeRecycled(b, v) {
		return nil
	}
	// A failure, or trailing data, which json.Unmarshal refuses before it
	// touches v: start again from the zero value the caller gave, so that
	// both the error and what v holds are json.Unmarshal's.
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer && !rv.IsNil() {
		rv.Elem().SetZero()
	}
	return json.Unmarshal(b, v)
}

// maxRecycled is the largest payload decodeRecycled takes: a Decoder's
// buffer grows to about twice the payload, and the pool must not hold on
// to large ones. Above it the allocations saved are small beside the
// payload's own.
const maxRecycled = 8 << 10

// recycled is a Decoder reading from a bytes.Reader that is reset for each
// payload.
type recycled struct {
	r   bytes.Reader
	dec *json.Decoder
}

var decoders = sync.Pool{New: func() any {
	d := new(recycled)
	d.dec = json.NewDecoder(&d.r)
	return d
}}

// decodeRecycled decodes b into v with a recycled Decoder and reports
// whether it succeeded with nothing but the value in b, as json.Unmarshal
// would. When false, v may have been written to.
//
// A Decoder can be reused only in a state where the next payload is all it
// will read: its error, which is sticky, unset, and every byte it was given
// consumed (a Decoder buffers ahead, and a byte left in its buffer would be
// read as the start of the next payload). Decode consumes a value's last
// byte without reading further, and reads the end of the input when the
// value is a number, a string or a literal; so after a payload with nothing
// after its value, every byte is consumed, and InputOffset has advanced by
// exactly len(b). Any other outcome drops the Decoder.
func decodeRecycled(b []byte, v any) bool {
	if len(b) > maxRecycled {
		return json.Unmarshal(b, v) == nil
	}
	d := decoders.Get().(*recycled)
	d.r.Reset(b)
	start := d.dec.InputOffset()
	if err := d.dec.Decode(v); err != nil {
		return false
	}
	switch rest := b[d.dec.InputOffset()-start:]; {
	case len(rest) == 0:
		d.r.Reset(nil)
		decoders.Put(d)
		return true
	case len(bytes.TrimLeft(rest, " \t\r\n")) == 0:
		return true // trailing white space, which json.Unmarshal accepts; this Decoder holds some of it
	}
	return false // trailing data: json.Unmarshal words the error
}
