// Package testenv gives tests the real servers they need: their URLs (from
// the environment, with the local defaults), a hard failure naming the
// command that starts a server that is unreachable, and outages that stop a
// broker or cut every database connection for restart tests.
//
// Test binaries run in parallel, and an outage must not hit another
// package's test. Each process that uses a server holds a shared file lock on
// it until it exits; Outage upgrades that lock to an exclusive one, so an
// outage waits until no other test process is using the server.
package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"go.uber.org/goleak"
)

// Server names accepted by URL and Outage.
const (
	NATS     = "nats"
	AMQP     = "amqp"
	Postgres = "postgres"
	MQTT     = "mqtt"
)

type server struct {
	env, def, start string
}

var servers = map[string]server{
	NATS:     {"SWITCHBOARD_TEST_NATS", "nats://127.0.0.1:4222", "scripts/services.sh start nats"},
	AMQP:     {"SWITCHBOARD_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/", "scripts/services.sh start rabbitmq"},
	Postgres: {"SWITCHBOARD_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/switchboard_test?sslmode=disable", "scripts/services.sh start postgres"},
	MQTT:     {"SWITCHBOARD_TEST_MQTT", "mqtt://127.0.0.1:1883", "scripts/services.sh start mosquitto"},
}

var (
	mu    sync.Mutex
	locks = map[string]*os.File{}
)

// URL returns the server's URL and fails the test when it is unreachable.
// It also takes the process's shared lock on the server (see the package doc).
func URL(t testing.TB, name string) string {
	t.Helper()
	s, ok := servers[name]
	if !ok {
		t.Fatalf("testenv: unknown server %q", name)
	}
	raw := os.Getenv(s.env)
	if raw == "" {
		raw = s.def
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("testenv: $%s=%q: %v", s.env, raw, err)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), map[string]string{NATS: "4222", AMQP: "5672", Postgres: "5432", MQTT: "1883"}[name])
	}
	lock(t, name, syscall.LOCK_SH) // first: waits while another process's outage runs
	if err := Reachable(host, 3*time.Second); err != nil {
		t.Fatalf("%s is required and unreachable at %s (%v).\nStart it with: %s\n(or point $%s at a running server)", name, host, err, s.start, s.env)
	}
	if name == Postgres {
		if err := ensureDatabase(raw); err != nil {
			t.Fatalf("testenv: creating the test database of %s: %v", u.Redacted(), err)
		}
	}
	return raw
}

// created holds the outcome of ensureDatabase per URL, once per process.
var created sync.Map // URL → *dbOnce

type dbOnce struct {
	once sync.Once
	err  error
}

// ensureDatabase creates the URL's database when it does not exist: on a
// new machine nothing else does (scripts/services.sh creates it in start,
// not in check, which is what make test runs), and every package and
// benchmark must work whichever runs first.
func ensureDatabase(raw string) error {
	v, _ := created.LoadOrStore(raw, &dbOnce{})
	d := v.(*dbOnce)
	d.once.Do(func() { d.err = createDatabase(raw) })
	return d.err
}

func createDatabase(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	name := strings.TrimPrefix(u.Path, "/")
	if name == "" {
		return nil // the server's default database
	}
	admin := *u
	admin.Path = "/postgres"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := sql.Open("pgx", admin.String())
	if err != nil {
		return err
	}
	defer db.Close()
	var exists bool
	if err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil || exists {
		return err
	}
	_, err = db.ExecContext(ctx, `CREATE DATABASE "`+strings.ReplaceAll(name, `"`, `""`)+`"`)
	// Another test process may have created it meanwhile: duplicate_database
	// (42P04), or unique_violation (23505) from a concurrent CREATE DATABASE.
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P04" || pgErr.Code == "23505") {
		return nil
	}
	return err
}

// Reachable dials host:port over TCP.
func Reachable(hostport string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", hostport, timeout)
	if err != nil {
		return err
	}
	return c.Close()
}

func lock(t testing.TB, name string, how int) {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	f := locks[name]
	if f == nil {
		var err error
		f, err = os.OpenFile(filepath.Join(os.TempDir(), "switchboard-test-"+name+".lock"), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			t.Fatalf("testenv: lock file: %v", err)
		}
		locks[name] = f
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		t.Fatalf("testenv: flock %s: %v", name, err)
	}
}

// Exclusive holds, until the test ends, the lock named name, which one test
// at a time may hold, across test processes: for tests of different
// packages that run the same services (so the same consumer groups) on the
// shared servers, where each would take the other's messages. It waits for
// the lock.
func Exclusive(t testing.TB, name string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "switchboard-test-exclusive-"+name+".lock"), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatalf("testenv: lock file: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		_ = f.Close()
		t.Fatalf("testenv: flock %s: %v", name, err)
	}
	t.Cleanup(func() { _ = f.Close() }) // closing the file releases the lock
}

// Outage takes the server away and returns a function that brings it back;
// the test must call it (Cleanup also does, once). NATS and Mosquitto are
// stopped and restarted with their own command line (Mosquitto saves its
// persistence file when stopped and reloads it); RabbitMQ's broker application is
// stopped and started (rabbitmqctl stop_app/start_app); PostgreSQL refuses new
// connections to the test database and every existing one is terminated
// with pg_terminate_backend.
func Outage(t testing.TB, name string) (restore func()) {
	t.Helper()
	raw := URL(t, name)
	lock(t, name, syscall.LOCK_EX)
	var once sync.Once
	var back func() error
	switch name {
	case NATS:
		back = stopServer(t, "nats-server", "127.0.0.1:4222")
	case MQTT:
		back = stopServer(t, "mosquitto", "127.0.0.1:1883")
	case AMQP:
		run(t, "rabbitmqctl", "stop_app")
		back = func() error { return runErr("rabbitmqctl", "start_app") }
	case Postgres:
		back = cutPostgres(t, raw)
	}
	restore = func() {
		once.Do(func() {
			if err := back(); err != nil {
				t.Errorf("testenv: bringing %s back: %v", name, err)
			}
			lock(t, name, syscall.LOCK_SH)
		})
	}
	t.Cleanup(restore)
	return restore
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if err := runErr(name, args...); err != nil {
		t.Fatal(err)
	}
}

func runErr(name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// stopServer stops the running exe (SIGTERM) and returns a function that
// starts it again with the same command line and waits for hostport.
func stopServer(t testing.TB, exe, hostport string) func() error {
	t.Helper()
	pid, cmdline := findProcess(t, exe)
	p, _ := os.FindProcess(pid)
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("testenv: stopping %s (pid %d): %v", exe, pid, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("testenv: %s (pid %d) still running 30 s after SIGTERM", exe, pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return func() error {
		cmd := exec.Command(cmdline[0], cmdline[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // outlives the test binary
		if err := cmd.Start(); err != nil {
			return err
		}
		// Waited for (reaped) by this process, which may stop it again; a
		// package checking for leaked goroutines ignores this one
		// (LeakOptions).
		go func() { _ = cmd.Wait() }()
		return waitPort(hostport, 30*time.Second)
	}
}

func waitPort(hostport string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		err := Reachable(hostport, time.Second)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func findProcess(t testing.TB, exe string) (int, []string) {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if filepath.Base(args[0]) == exe {
			return pid, args
		}
	}
	t.Fatalf("testenv: no %s process found", exe)
	return 0, nil
}

// cutPostgres makes the test database refuse connections and terminates
// every connection to it; the returned function allows connections again.
func cutPostgres(t testing.TB, raw string) func() error {
	t.Helper()
	u, _ := url.Parse(raw)
	dbname := strings.TrimPrefix(u.Path, "/")
	admin := *u
	admin.Path = "/postgres"
	db, err := sql.Open("pgx", admin.String())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ident := `"` + strings.ReplaceAll(dbname, `"`, `""`) + `"`
	if _, err := db.ExecContext(ctx, `ALTER DATABASE `+ident+` ALLOW_CONNECTIONS false`); err != nil {
		t.Fatalf("testenv: refusing connections to %s: %v", dbname, err)
	}
	if _, err := db.ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, dbname); err != nil {
		t.Fatalf("testenv: pg_terminate_backend: %v", err)
	}
	return func() error {
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := db.ExecContext(ctx, `ALTER DATABASE `+ident+` ALLOW_CONNECTIONS true`)
		return err
	}
}

// PostgresDB opens the test database (see URL) and closes it when the test
// ends.
func PostgresDB(t testing.TB) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", URL(t, Postgres))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// Schema returns a new unique schema name ("t_" and 12 hex digits; not
// created) that is dropped, with everything in it, when the test ends.
func Schema(t testing.TB, db *sql.DB) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "t_" + hex.EncodeToString(b)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, `DROP SCHEMA IF EXISTS "`+schema+`" CASCADE`); err != nil {
			t.Logf("dropping schema %s: %v", schema, err)
		}
	})
	return schema
}

// LeakOptions are the goleak options of a package that uses Outage: the
// server it restarted outlives the tests, and a goroutine waits to reap it.
func LeakOptions() []goleak.Option {
	return []goleak.Option{goleak.IgnoreAnyFunction("github.com/switchboard-go/switchboard/internal/testenv.stopServer.func1.1")}
}
