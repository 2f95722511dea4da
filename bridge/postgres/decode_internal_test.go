package postgres

import "testing"

// Metadata values that are not strings (a row another producer wrote) are
// kept as their JSON text (null as "") instead of failing the row, which would be
// leased again every ack_deadline for ever; JSON null is no metadata.
func TestDecodeKeepsNonStringMetadata(t *testing.T) {
	m := decodeMessage("u1", []byte("p"), []byte(`{"a":"x","n":1,"o":{"k":true},"z":null}`))
	for k, want := range map[string]string{"a": "x", "n": "1", "o": `{"k":true}`, "z": ""} {
		if got := m.Metadata.Get(k); got != want {
			t.Errorf("metadata[%s] = %q, want %q", k, got, want)
		}
	}
	if m := decodeMessage("u2", nil, []byte("null")); len(m.Metadata) != 0 {
		t.Errorf("null metadata: %v", m.Metadata)
	}
	m = decodeMessage("u3", []byte("p"), []byte(`[1,2]`))
	if m.Metadata.Get(UnreadableMetadataKey) != "[1,2]" || string(m.Payload) != "p" {
		t.Errorf("metadata that is not an object: %v; want the message with the column under %s", m.Metadata, UnreadableMetadataKey)
	}
}
