package main

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/switchboard-go/switchboard/bridge"
)

// backend is one backend's sides, its client-only ceilings, and what to
// clean up after them.
type backend struct {
	name    string
	sb, raw side
	// tuned are raw Watermill set up away from its documented defaults,
	// for throughput (see each raw_*.go file); measured on the workloads
	// marked tuned.
	tuned []variant
	// clients open the client-only ceiling workloads, by workload name.
	clients map[string]func(env) (*trial, error)
	// ceilings holds the ceiling figures measured so far, by workload name.
	ceilings map[string]float64
	cleanup  func(context.Context) error
}

// variant is raw Watermill tuned one way.
type variant struct {
	name string // the figure suffix after "@"
	side side
}

func nop(context.Context) error { return nil }

// openBackend prepares backend name for the run runID: everything either
// side creates is named after runID and removed by cleanup (Switchboard's
// AMQP queues expire a minute after the run instead: their names are the
// bridge's to choose).
func openBackend(ctx context.Context, name, runID string) (*backend, error) {
	url, err := serverURL(name)
	if err != nil {
		return nil, err
	}
	b := &backend{name: name, cleanup: nop, clients: map[string]func(env) (*trial, error){}, ceilings: map[string]float64{}}
	// The outbox figures of the brokers need PostgreSQL too; without it,
	// they are skipped.
	var pgURL string
	if name != GoChannel {
		if u, err := serverURL(Postgres); err == nil {
			pgURL = u
		}
	}
	switch name {
	case GoChannel:
		b.sb = sbSide{url: url}
		b.raw = rawSide{open: gochannelTransport}
	case NATS:
		sbPrefix := "SBB_" + runID + "_"
		sbURL, err := withParams(url, "stream_prefix", sbPrefix)
		if err != nil {
			return nil, err
		}
		nc, err := nats.Connect(url)
		if err != nil {
			return nil, fmt.Errorf("nats: %w", err)
		}
		mgr, err := jetstream.New(nc)
		if err != nil {
			nc.Close()
			return nil, err
		}
		rawPrefix := "wmb_"
		b.sb = sbSide{url: sbURL, durable: true, pgURL: pgURL}
		b.raw = rawSide{open: natsTransport(url, rawPrefix, mgr, false), outboxRig: rawOutbox(pgURL, rawPrefix)}
		b.tuned = []variant{{"tuned", rawSide{open: natsTransport(url, rawPrefix, mgr, true)}}}
		b.clients[ceilingE2E] = natsCeilingE2E(url, rawPrefix)
		b.clients[ceilingReqRep] = natsCeilingReqRep(url)
		b.cleanup = func(ctx context.Context) error {
			defer nc.Close()
			return deleteStreams(ctx, mgr, sbPrefix, rawPrefix+nsPrefix(runID))
		}
	case AMQP:
		sbURL, err := withParams(url, "queue_expires", "1m")
		if err != nil {
			return nil, err
		}
		if slices.Contains(bridge.Schemes(), "amqp") {
			b.sb = sbSide{url: sbURL, durable: true, pgURL: pgURL}
		}
		b.raw = rawSide{open: amqpTransport(url, "wmb_", amqpDefaults), outboxRig: rawOutbox(pgURL, "wmb_")}
		b.tuned = []variant{
			{"tuned", rawSide{open: amqpTransport(url, "wmb_", amqpTuned)}},
			{"tuned-confirm", rawSide{open: amqpTransport(url, "wmb_", amqpTunedConfirm)}},
		}
		b.clients[ceilingE2E] = amqpCeilingE2E(url, "wmb_")
	case Postgres:
		sbSchema := "sbb_" + runID
		sbURL, err := withParams(url, "schema", sbSchema)
		if err != nil {
			return nil, err
		}
		admin, err := pgxpool.New(ctx, url)
		if err != nil {
			return nil, fmt.Errorf("postgres: %w", err)
		}
		b.sb = sbSide{url: sbURL, durable: true, pgURL: url}
		b.raw = rawSide{open: postgresTransport(url, "wmb_", admin, false), outboxRig: rawOutbox(url, "wmb_"), scheduleRig: rawSchedule(url, "wmb_")}
		b.tuned = []variant{{"tuned", rawSide{open: postgresTransport(url, "wmb_", admin, true)}}}
		b.clients[ceilingE2E] = pgCeilingE2E(url, "wmb_", admin)
		b.cleanup = func(ctx context.Context) error {
			defer admin.Close()
			_, err := admin.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{sbSchema}.Sanitize()+" CASCADE")
			return err
		}
	default:
		return nil, errors.New("unknown backend " + name)
	}
	return b, nil
}

// ceilingTrial opens the backend's client-only ceiling name; errSkip where
// it has none.
func ceilingTrial(name string) func(env) (*trial, error) {
	return func(e env) (*trial, error) {
		open := e.backend.clients[name]
		if open == nil {
			return nil, errSkip
		}
		return open(e)
	}
}

// nsPrefix is the start of every namespace of run runID.
func nsPrefix(runID string) string { return "r" + runID }
