package engine

import (
	"sync"
	"sync/atomic"
)

// gate admits handler calls until Stop closes it, and counts those running,
// so that Stop can both refuse new ones and wait for the last one. It is
// crossed twice by every message, from every handler goroutine at once: a
// mutex there was contended (7 % of the CPU of the in-process event
// fan-out), so its state is one atomic word, the count of running calls
// with a bit for closed.
type gate struct {
	state atomic.Int64 // running calls, plus closedBit once closed
	once  sync.Once    // makes idle
	idle  chan struct{}
	done  sync.Once // closes idle
}

const closedBit = int64(1) << 62

// enter admits one handler call, unless the gate is closed; an admitted
// call must leave.
func (g *gate) enter() bool {
	for {
		s := g.state.Load()
		if s&closedBit != 0 {
			return false
		}
		if g.state.CompareAndSwap(s, s+1) {
			return true
		}
	}
}

func (g *gate) leave() {
	if g.state.Add(-1) == closedBit { // the last call of a closed gate
		g.closeIdle()
	}
}

// close refuses every later call and returns a channel closed once no
// admitted call is running.
func (g *gate) close() <-chan struct{} {
	g.once.Do(func() { g.idle = make(chan struct{}) })
	for {
		s := g.state.Load()
		if s&closedBit != 0 || g.state.CompareAndSwap(s, s|closedBit) {
			break
		}
	}
	if g.state.Load() == closedBit {
		g.closeIdle()
	}
	return g.idle
}

// closeIdle closes idle, which close made before it set closedBit: the
// only way here.
func (g *gate) closeIdle() {
	g.done.Do(func() { close(g.idle) })
}

// inFlight returns the number of calls running.
func (g *gate) inFlight() int {
	return int(g.state.Load() &^ closedBit)
}
