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

// backend is one backend's two sides and what to clean up after them.
type backend struct {
	name    string
	sb, raw side
	cleanup func(context.Context) error
}

func nop(context.Context) error { return nil }

// openBackend prepares backend name for the run runID: everything either
// side creates is named after runID and removed by cleanup (Switchboard's
// AMQP queues expire a minute after the run instead: their names are the
// bridge's to choose).
func openBackend(ctx context.Context, name, runID string, v Variants) (*backend, error) {
	url, err := serverURL(name)
	if err != nil {
		return nil, err
	}
	b := &backend{name: name, cleanup: nop}
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
		b.sb = sbSide{url: sbURL, durable: true}
		b.raw = rawSide{open: natsTransport(url, rawPrefix, mgr, !v.RawNATSNoAutoProvision)}
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
			b.sb = sbSide{url: sbURL, durable: true}
		}
		b.raw = rawSide{open: amqpTransport(url, "wmb_", v.RawAMQPConfirm)}
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
		b.raw = rawSide{open: postgresTransport(url, "wmb_", admin), outboxRig: rawOutbox(url, "wmb_", admin)}
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

// Variants change the raw Watermill side away from its documented defaults,
// to see what a default costs (see BENCHMARKS.md). The default run uses
// none.
type Variants struct {
	// RawAMQPConfirm publishes with publisher confirms
	// (Publish.ConfirmDelivery), the guarantee Switchboard's AMQP
	// publisher gives.
	RawAMQPConfirm bool
	// RawNATSNoAutoProvision provisions raw Watermill's streams up front
	// and publishes without AutoProvision (no stream lookup per publish).
	RawNATSNoAutoProvision bool
}

// nsPrefix is the start of every namespace of run runID.
func nsPrefix(runID string) string { return "r" + runID }
