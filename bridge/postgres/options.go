package postgres

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/internal/params"
)

// Defaults for the URL parameters this package reads (see the package doc),
// and DialTimeout, which is not a parameter.
const (
	// DefaultSchema holds the bridge's tables unless ?schema= says otherwise.
	DefaultSchema = "switchboard"
	// DefaultPollInterval is the fallback poll, for wake-ups missed while the
	// LISTEN connection was down (?poll_interval=).
	DefaultPollInterval = 2 * time.Second
	// DefaultAckDeadline is how long a delivered message may stay unacked
	// before it is delivered again (?ack_deadline=).
	DefaultAckDeadline = 30 * time.Second
	// DefaultPrefetch is how many messages a subscription holds beyond its
	// Concurrency (?prefetch=): fetched ahead and handed to the handlers in
	// order as they finish, so the next message is ready without a round
	// trip. The same parameter, with the same meaning and default, on the
	// NATS, RabbitMQ and PostgreSQL backends.
	DefaultPrefetch = 16
	// DialTimeout bounds every connection attempt the bridge makes: at
	// Open (which the context given to bridge.Open bounds as well), as the
	// pool grows, and when the LISTEN connection is re-made. libpq's
	// connect_timeout parameter is refused in the URL.
	DialTimeout = 5 * time.Second
)

// maxInterval bounds poll_interval and ack_deadline.
const maxInterval = 24 * time.Hour

// ourParams are the URL query parameters this package consumes; every other
// parameter is left in the URL handed to pgx, except refusedParams.
var ourParams = []string{"schema", "poll_interval", "ack_deadline", "prefetch"}

// refusedParams are parameters a bridge URL must not carry, with why: pgx
// would take connect_timeout and the server would be sent nack_delay, but
// each is set in one place elsewhere.
var refusedParams = map[string]string{
	"connect_timeout": "opening is bounded by the context given to bridge.Open, every later connection by DialTimeout",
	"nack_delay":      "a nack waits the delay it asks for (bridge.NackDelayKey) or bridge.DefaultNackDelay",
}

// config is a parsed bridge URL.
type config struct {
	schema       string
	pollInterval time.Duration
	ackDeadline  time.Duration
	prefetch     int
	pool         *pgxpool.Config
	addr         string // redacted URL, for errors and logs
}

// parseURL splits u into our parameters and pgx's configuration, reporting
// every problem with ours at once.
func parseURL(u *url.URL) (config, error) {
	r := params.New(u.Scheme, u)
	c := config{
		schema: r.String("schema", DefaultSchema, func(v string) string {
			if !validSchema(v) {
				return "is not a plain identifier of at most 63 bytes ([A-Za-z_][A-Za-z0-9_]*)"
			}
			return ""
		}),
		pollInterval: r.Duration("poll_interval", DefaultPollInterval, 10*time.Millisecond, maxInterval),
		ackDeadline:  r.Duration("ack_deadline", DefaultAckDeadline, 100*time.Millisecond, maxInterval),
		prefetch:     r.Int("prefetch", DefaultPrefetch, 0, 10000),
	}
	for _, name := range slices.Sorted(maps.Keys(refusedParams)) {
		r.String(name, "", func(string) string { return "is not taken: " + refusedParams[name] })
	}
	q := u.Query()
	// Every other parameter is pgx's: we keep no list of its names (a
	// misspelt one of ours reaches the server, which refuses it at connect).
	r.Known(slices.Collect(maps.Keys(q))...)
	if err := r.Err(); err != nil {
		return c, err
	}
	for _, p := range ourParams {
		q.Del(p)
	}
	pgURL := *u
	pgURL.RawQuery = q.Encode()
	c.addr = bridge.Redact(pgURL.String())
	pc, err := pgxpool.ParseConfig(pgURL.String())
	if err != nil {
		// pgx's message may quote the URL; say only which part is wrong.
		return c, fmt.Errorf("%w: %s: %s", bridge.ErrBadURL, c.addr, redactPgx(err))
	}
	pc.ConnConfig.ConnectTimeout = DialTimeout
	c.pool = pc
	return c, nil
}

// redactPgx returns pgx's parse error without the connection string, which
// may hold a password.
func redactPgx(err error) string {
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		if pe.Unwrap() != nil {
			return pe.Unwrap().Error()
		}
		return "invalid connection string"
	}
	return err.Error()
}
