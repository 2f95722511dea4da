// Command switchboard is the operator's CLI: it applies the library's
// database migrations, lists, inspects, replays and purges dead letters,
// runs the transactional outbox's relay and inspects its backlog, lists
// and cancels scheduled messages, starts, lists, inspects, cancels and
// retries workflow runs, and checks a bridge's health. Run `switchboard -h` for the commands,
// `switchboard <command> -h` for one command's flags, and
// `switchboard <command> <action> -h` (migrate up, dlq list, outbox stats…)
// for one action's.
//
//	switchboard migrate up --db postgres://app@db:5432/app
//	switchboard dlq list --service email.v1 --since 24h
//	switchboard dlq replay --all --service email.v1 --bridge postgres://app@db:5432/app
//	switchboard relay --db postgres://app@db:5432/app --bridge nats://nats:4222
//	switchboard workflow start orders.v1.place '{"item": "book"}' --run-id order-42 --bridge nats://nats:4222
//	switchboard workflow list --status failed --workflow orders.v1.place
//	switchboard workflow show RUN-ID
//	switchboard health --bridge nats://nats:4222 --connect-timeout 3s
//
// The database comes from --db or $SWITCHBOARD_DB, the bridge from --bridge
// or $SWITCHBOARD_BRIDGE (any backend: every one is linked in). Opening
// either is bounded by --connect-timeout (default 10 s, as
// engine.DefaultConnectTimeout): an unreachable or hung server fails the
// command within it. Errors go to stderr with exit status 1; usage errors
// exit with 2.
package main
