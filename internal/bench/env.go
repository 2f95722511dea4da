package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Backend names, in the order a run measures them.
const (
	GoChannel = "gochannel"
	NATS      = "nats"
	AMQP      = "amqp"
	Postgres  = "postgres"
)

// AllBackends is every backend the program knows.
var AllBackends = []string{GoChannel, NATS, AMQP, Postgres}

// serverEnv mirrors internal/testenv: the same variables and defaults, so
// the benchmark talks to the servers `make test` uses.
var serverEnv = map[string]struct{ env, def, port string }{
	NATS:     {"SWITCHBOARD_TEST_NATS", "nats://127.0.0.1:4222", "4222"},
	AMQP:     {"SWITCHBOARD_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/", "5672"},
	Postgres: {"SWITCHBOARD_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/switchboard_test?sslmode=disable", "5432"},
}

// serverURL returns the backend's URL ("gochannel://" for the in-process
// one) and an error when its server does not answer a TCP dial.
func serverURL(backend string) (string, error) {
	if backend == GoChannel {
		return "gochannel://", nil
	}
	s, ok := serverEnv[backend]
	if !ok {
		return "", fmt.Errorf("unknown backend %q", backend)
	}
	raw := os.Getenv(s.env)
	if raw == "" {
		raw = s.def
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("$%s=%q: %w", s.env, raw, err)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), s.port)
	}
	c, err := net.DialTimeout("tcp", host, 3*time.Second)
	if err != nil {
		return raw, fmt.Errorf("%s unreachable at %s (set $%s): %w", backend, host, s.env, err)
	}
	_ = c.Close()
	return raw, nil
}

// withParams returns raw with the query parameters kv (name, value, …) set.
func withParams(raw string, kv ...string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	q := u.Query()
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// lockServer takes the lock internal/testenv's tests take on a server they
// use (a shared flock on $TMPDIR/switchboard-test-<name>.lock), so that no
// test of the same checkout stops that server (testenv.Outage takes the lock
// exclusively) while the benchmark measures it, and the benchmark waits for
// an outage in progress to end. The returned function releases it.
func lockServer(ctx context.Context, backend string) (func(), error) {
	if backend == GoChannel {
		return func() {}, nil
	}
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "switchboard-test-"+backend+".lock"), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- syscall.Flock(int(f.Fd()), syscall.LOCK_SH) }()
	select {
	case err := <-done:
		if err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("locking %s: %w", backend, err)
		}
	case <-ctx.Done():
		_ = f.Close() // the flock returns once the outage ends; the lock dies with the file
		return nil, ctx.Err()
	}
	return func() { _ = f.Close() }, nil
}
