// Command switchboard is the operator's CLI: it applies the library's
// database migrations, lists, inspects, replays and purges dead letters,
// runs the transactional outbox's relay and inspects its backlog, and
// checks a bridge's health. Run `switchboard -h` for the commands, and
// `switchboard <command> -h` for one command's flags.
//
//	switchboard migrate up --db postgres://app@db:5432/app
//	switchboard dlq list --service email.v1 --since 24h
//	switchboard dlq replay --all --service email.v1 --bridge postgres://app@db:5432/app
//	switchboard relay --db postgres://app@db:5432/app --bridge nats://nats:4222
//	switchboard health --bridge nats://nats:4222
//
// The database comes from --db or $SWITCHBOARD_DB, the bridge from --bridge
// or $SWITCHBOARD_BRIDGE (any backend: every one is linked in). Errors go to
// stderr with exit status 1; usage errors exit with 2.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
