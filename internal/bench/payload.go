package main

import (
	"fmt"
	"strings"
)

// PayloadSize is the size of every message body both sides send: a JSON
// object of exactly this many bytes.
const PayloadSize = 256

// Item is the payload of every command, reply and event. ID is fixed-width,
// so json.Marshal of any Item built by newItem is PayloadSize bytes:
// {"id":"<20 digits>","pad":"<218 x>"}.
type Item struct {
	ID  string `json:"id"`
	Pad string `json:"pad"`
}

const idWidth = 20

var pad = strings.Repeat("x", PayloadSize-len(`{"id":"","pad":""}`)-idWidth)

func newItem(seq int64) Item {
	return Item{ID: fmt.Sprintf("%0*d", idWidth, seq), Pad: pad}
}

// The raw Watermill side needs one Go type per command and event: cqrs routes
// by type name (cqrs.StructName). They all marshal to the same 256 bytes.
type (
	// EchoCmd is answered with its own content.
	EchoCmd Item
	// FrontCmd is answered by sending EchoCmd and returning its reply (2 hops).
	FrontCmd Item
	// ItemEvent is the fanned-out event.
	ItemEvent Item
)
