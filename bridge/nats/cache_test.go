package nats

import (
	"fmt"
	"testing"
)

func TestStreamCacheIsBounded(t *testing.T) {
	b := &natsBridge{streams: map[string]string{}}
	for i := range 5 * maxCachedStreams {
		b.cacheStream(fmt.Sprintf("reply.i%d", i), "S")
	}
	if n := len(b.streams); n > maxCachedStreams {
		t.Errorf("%d cached streams, want at most %d", n, maxCachedStreams)
	}
	b.cacheStream("reply.last", "S")
	if b.streams["reply.last"] != "S" {
		t.Error("the newest entry was not cached")
	}
}
