package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/switchboard-go/switchboard/bridge"
)

// amqpConfig is the client configuration of one of the bridge's
// connections; ctx bounds each dial together with DialTimeout.
func (o options) amqpConfig(role string, ctx context.Context) amqp091.Config {
	return amqp091.Config{
		Heartbeat:       o.heartbeat,
		TLSClientConfig: o.tls,
		Locale:          "en_US",
		Properties:      amqp091.Table{"connection_name": o.name + "/" + role, "product": "switchboard"},
		Dial: func(network, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, DialTimeout)
			defer cancel()
			d := net.Dialer{KeepAlive: 30 * time.Second}
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// Bounds the TLS and AMQP handshakes; amqp091 clears it once
			// the connection is open.
			deadline, _ := ctx.Deadline()
			if err := c.SetDeadline(deadline); err != nil {
				_ = c.Close()
				return nil, err
			}
			return c, nil
		},
	}
}

// dialError classifies a failed connection attempt.
func (o options) dialError(err error) error {
	var aerr *amqp091.Error
	if errors.Is(err, amqp091.ErrCredentials) || errors.Is(err, amqp091.ErrVhost) ||
		(errors.As(err, &aerr) && (aerr.Code == amqp091.AccessRefused || aerr.Code == amqp091.NotAllowed)) {
		return fmt.Errorf("%w: %w: amqp %s: user %q on vhost %q (wrong user or password, unknown vhost, or no permission on it): %w",
			bridge.ErrUnreachable, ErrAccessRefused, o.addr, o.user, o.vhost, err)
	}
	return fmt.Errorf("%w: amqp %s (vhost %q): %w", bridge.ErrUnreachable, o.addr, o.vhost, err)
}

// conn is one of the bridge's two AMQP connections, kept open: a goroutine
// watches it and reconnects with backoff when it drops. Every field is
// guarded by mu; users take the current connection and a channel that is
// closed on the next change (lost or replaced).
type conn struct {
	o     options
	role  string
	log   *slog.Logger
	life  context.Context                 // cancelled when the bridge closes
	setup func(*amqp091.Connection) error // run on every new connection; may be nil

	mu      sync.Mutex
	amqp    *amqp091.Connection // nil while reconnecting
	changed chan struct{}
	done    chan struct{}  // closed when the watcher exits
	notes   sync.WaitGroup // the readers of the connections' blocking notifications
}

// dial opens the connection; ctx bounds the first dial, life the
// reconnects and the connection's lifetime.
func dial(ctx, life context.Context, o options, role string, log *slog.Logger, setup func(*amqp091.Connection) error) (*conn, error) {
	c := &conn{o: o, role: role, log: log.With("connection", role), life: life, setup: setup,
		changed: make(chan struct{}), done: make(chan struct{})}
	a, err := c.open(ctx)
	if err != nil {
		return nil, err
	}
	c.amqp = a
	go c.watch(a)
	return c, nil
}

func (c *conn) open(ctx context.Context) (*amqp091.Connection, error) {
	a, err := amqp091.DialConfig(c.o.uri, c.o.amqpConfig(c.role, ctx))
	if err != nil {
		return nil, c.o.dialError(err)
	}
	if c.setup != nil {
		if err := c.setup(a); err != nil {
			_ = a.Close()
			return nil, fmt.Errorf("amqp %s: %w", c.o.addr, err)
		}
	}
	return a, nil
}

// current returns the live connection (nil while reconnecting) and a
// channel closed when that changes.
func (c *conn) current() (*amqp091.Connection, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.amqp, c.changed
}

func (c *conn) set(a *amqp091.Connection) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.amqp = a
	close(c.changed)
	c.changed = make(chan struct{})
}

// watch waits for the connection to drop, then reconnects with exponential
// backoff (100 ms ×1.5 up to reconnect_max, jitter ±50 %) until it succeeds
// or the bridge closes.
func (c *conn) watch(a *amqp091.Connection) {
	defer close(c.done)
	for {
		lost := a.NotifyClose(make(chan *amqp091.Error, 1))
		blocked := a.NotifyBlocked(make(chan amqp091.Blocking, 4))
		c.notes.Add(1)
		go func() {
			defer c.notes.Done()
			for b := range blocked { // closed with the connection
				if b.Active {
					c.log.Warn("amqp: broker blocks publishing (resource alarm)", "reason", b.Reason)
				} else {
					c.log.Info("amqp: broker unblocked publishing")
				}
			}
		}()
		var cause *amqp091.Error
		select {
		case cause = <-lost:
		case <-c.life.Done():
			return
		}
		c.set(nil)
		select {
		case <-c.life.Done():
			return
		default:
		}
		c.log.Warn("amqp: connection lost, reconnecting", "error", undoubled(cause))
		wait := 100 * time.Millisecond
		for {
			select {
			case <-time.After(time.Duration(float64(wait) * (0.5 + rand.Float64()))):
			case <-c.life.Done():
				return
			}
			var err error
			if a, err = c.open(c.life); err == nil {
				break
			}
			c.log.Debug("amqp: reconnect failed", "error", err)
			wait = min(wait*3/2, c.o.reconnectMax)
		}
		c.set(a)
		c.log.Info("amqp: reconnected")
	}
}

// close closes the connection and waits for the goroutines of c; the
// bridge closed c.life.Done() before.
func (c *conn) close() error {
	<-c.done
	defer c.notes.Wait() // each ends when its connection has closed
	c.mu.Lock()
	a := c.amqp
	c.amqp = nil
	c.mu.Unlock()
	if a == nil || a.IsClosed() {
		return nil
	}
	if err := a.CloseDeadline(time.Now().Add(opTimeout)); err != nil && !errors.Is(err, amqp091.ErrClosed) {
		return err
	}
	return nil
}

// withChannel runs f on a new channel of a and closes the channel.
func withChannel(a *amqp091.Connection, f func(*amqp091.Channel) error) error {
	ch, err := a.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	err = f(ch)
	if cerr := ch.Close(); err == nil && cerr != nil && !errors.Is(cerr, amqp091.ErrClosed) {
		err = cerr
	}
	return err
}
