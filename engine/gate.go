package engine

import "sync"

// gate admits handler calls until Stop closes it, and counts those running,
// so that Stop can both refuse new ones and wait for the last one.
type gate struct {
	mu      sync.Mutex
	closed  bool
	running int
	idle    chan struct{} // made by close; closed once closed and running is 0
}

// enter admits one handler call, unless the gate is closed; an admitted
// call must leave.
func (g *gate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.running++
	return true
}

func (g *gate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.running--
	if g.closed && g.running == 0 {
		close(g.idle)
	}
}

// close refuses every later call and returns a channel closed once no
// admitted call is running.
func (g *gate) close() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed {
		g.closed = true
		g.idle = make(chan struct{})
		if g.running == 0 {
			close(g.idle)
		}
	}
	return g.idle
}

// inFlight returns the number of calls running.
func (g *gate) inFlight() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.running
}
