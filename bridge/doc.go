// Package bridge is Switchboard's one distribution switch.
//
// A Bridge is opened from a URL and hands the engine a Watermill publisher
// and, for every subscription the engine needs, a Watermill subscriber with
// the delivery semantics of that subscription's Kind:
//
//	Command  competing consumers within a group (one service's instances share
//	         the work); durable where the backend is durable.
//	Event    one copy per group (per subscribing service), instances of that
//	         group compete; durable where the backend is durable.
//	Reply    delivered only to the instance that owns the reply topic; never
//	         durable.
//
// The URL scheme picks the backend. The empty string and "gochannel://" select
// the in-process backend, package bridge/inproc. Every backend registers
// itself with Register from its package's init, so a program links the ones
// it imports (bridge/all imports them all; the engine always imports
// inproc). Open fails with ErrUnknownScheme when no backend knows the scheme.
//
// Opening is bounded by the context given to Open (the engine gives it
// Config.ConnectTimeout); a backend may bound each later reconnection with
// a documented constant of its own. No backend takes a URL parameter for
// either, nor for the wait after a nack: a message nacked without a delay
// of its own (NackDelayKey) comes back after DefaultNackDelay on every
// backend.
//
// Backends never import the engine: the contract between the two is this
// package alone.
package bridge
