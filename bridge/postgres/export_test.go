package postgres

import (
	"context"
	"log/slog"

	"github.com/jackc/pgx/v5"

	"github.com/switchboard-go/switchboard/bridge"
)

// OpenTraced opens a bridge whose connections report every statement to tr.
func OpenTraced(ctx context.Context, raw string, tr pgx.QueryTracer) (*Bridge, error) {
	u, err := bridge.ParseURL(raw)
	if err != nil {
		return nil, err
	}
	c, err := parseURL(u)
	if err != nil {
		return nil, err
	}
	c.pool.ConnConfig.Tracer = tr
	return newBridge(ctx, c, slog.Default())
}
