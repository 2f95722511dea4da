package workflow_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bridge"
	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/internal/testenv"
	"github.com/switchboard-go/switchboard/workflow"
)

// The crash test's child process: it runs the workflow service (and, on
// the in-process bus, the participants), starts every run (idempotently:
// a restarted child starts them again) and runs until it is killed.
const childEnv = "WF_CRASH_CHILD"

// crashWorkflow has four steps: charge, reserve, a local step, fail (see
// crashFault); refund and release compensate.
func crashWorkflow() *workflow.Workflow[ChargeIn, Done] {
	return workflow.New("wforders", "1", "crash", func(wf workflow.Context, in ChargeIn) (Done, error) {
		pay, err := workflow.Invoke(wf, Charge, in)
		if err != nil {
			return Done{}, err
		}
		workflow.OnFailure(wf, Refund, RefundIn{PaymentID: pay.PaymentID})
		if _, err := workflow.Invoke(wf, Reserve, in); err != nil {
			return Done{}, err
		}
		workflow.OnFailure(wf, Release, in)
		if _, err := workflow.Step(wf, "pack", func(ctx context.Context) (int, error) {
			time.Sleep(5 * time.Millisecond) // some work, so that a kill lands mid-run
			return 1, nil
		}); err != nil {
			return Done{}, err
		}
		_, err = workflow.Invoke(wf, Fail, in)
		return Done{}, err
	})
}

// crashFault is the fault injector of stock.fail: 10 % of the calls fail
// transiently (503, retried), and every order whose number is 7 modulo 50
// (2 %) fails permanently (422: the run is compensated).
func crashFault(in ChargeIn) error {
	if n, _ := strconv.Atoi(in.Order); n%50 == 7 {
		return &engine.Error{Code: http.StatusUnprocessableEntity, Message: "refused"}
	}
	if rand.IntN(10) == 0 {
		return &engine.Error{Code: http.StatusServiceUnavailable, Message: "flaky"}
	}
	return nil
}

// crashChild is the child's main.
func crashChild() int {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 2*time.Minute) // never outlive the test
	defer cancelT()
	db, err := sql.Open("pgx", os.Getenv("WF_DSN"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer db.Close()
	db.SetMaxIdleConns(40)
	e := env{db: db, schema: os.Getenv("WF_SCHEMA")}
	var bus bridge.Bridge = inproc.New()
	services := e.participants(crashFault)
	if url := os.Getenv("WF_BUS"); url != "" {
		if bus, err = bridge.Open(ctx, url); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		services = nil // the parent runs them
	}
	store := e.store()
	store.LeaseTTL = time.Second
	wf := crashWorkflow()
	orders := engine.NewService("wforders", "1")
	if err := workflow.Register(orders, store, wf); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	eng, err := engine.New(engine.Config{SharedBridge: bus, Logger: quiet()})
	if err == nil {
		err = eng.Register(append(services, orders)...)
	}
	if err == nil {
		err = eng.Start(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	n, _ := strconv.Atoi(os.Getenv("WF_RUNS"))
	cctx := engine.WithEngine(ctx, eng)
	for i := range n {
		if _, err := wf.Start(cctx, ChargeIn{Order: fmt.Sprint(i)}, workflow.RunID(fmt.Sprintf("crash-%d", i))); err != nil {
			fmt.Fprintln(os.Stderr, "start:", err)
			return 1
		}
	}
	<-ctx.Done()
	_ = eng.Stop(context.Background())
	return 0
}

// Worker processes are SIGKILLed mid-run, twice, and restarted, while a
// fault injector fails 10 % of a step's calls transiently and 2 % of the
// runs permanently: every run ends completed or failed and compensated,
// and each participant's effect happened once (counted in the
// participant's own table, behind outbox.Inbox) — each compensation once
// for each failed run, none for the others — on the in-process bus (the
// participants die with the worker) and on NATS (they live on).
func TestCrashResumesEachEffectOnce(t *testing.T) {
	for _, tr := range []struct{ name, bus string }{{"inproc", ""}, {"nats", testenv.URL(t, testenv.NATS)}} {
		t.Run(tr.name, func(t *testing.T) {
			e := newEnv(t)
			const runs = 100
			if tr.bus != "" {
				b := openBus(t, tr.bus)
				startEngine(t, b, e.participants(crashFault)...)
			}
			start := func() *exec.Cmd {
				cmd := exec.Command(os.Args[0], "-test.run=^$")
				cmd.Env = append(os.Environ(), childEnv+"=1", "WF_DSN="+testenv.URL(t, testenv.Postgres), "WF_SCHEMA="+e.schema,
					"WF_BUS="+tr.bus, "WF_RUNS="+strconv.Itoa(runs))
				cmd.Stderr = os.Stderr
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				return cmd
			}
			effects := func() int {
				var n int
				if err := e.db.QueryRow(`SELECT count(*) FROM "` + e.schema + `".effects`).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			for _, at := range []int{runs / 2, 2 * runs} { // of the 3*runs effects
				child := start()
				eventually(t, 30*time.Second, fmt.Sprintf("%d effects", at), func() bool { return effects() >= at })
				if err := child.Process.Kill(); err != nil {
					t.Fatal(err)
				}
				_ = child.Wait()
				t.Logf("killed a worker at %d effects", effects())
			}
			last := start()
			t.Cleanup(func() {
				_ = last.Process.Signal(syscall.SIGTERM)
				_ = last.Wait()
			})
			eventually(t, 60*time.Second, "every run ended", func() bool { return e.statuses(t, "completed")+e.statuses(t, "failed") == runs })
			const failing = runs / 50
			if n := e.statuses(t, "failed"); n != failing {
				t.Errorf("%d runs failed, want %d", n, failing)
			}
			var dup int
			if err := e.db.QueryRow(`SELECT count(*) FROM (SELECT kind, key FROM "` + e.schema + `".effects GROUP BY kind, key HAVING count(*) > 1) d`).Scan(&dup); err != nil {
				t.Fatal(err)
			}
			// charge and reserve for every run, fail for the completed ones,
			// refund and release for the failed ones.
			if n, want := effects(), 3*runs-failing+2*failing; n != want || dup != 0 {
				t.Errorf("%d effects (%d twice or more), want %d, each once", n, dup, want)
			}
			for i := 7; i < runs; i += 50 {
				o := strconv.Itoa(i)
				if e.effects(t, "refund", "p-"+o) != 1 || e.effects(t, "release", o) != 1 || e.effects(t, "fail", o) != 0 {
					t.Errorf("order %s: not compensated once", o)
				}
			}
			var resumed int
			if err := e.db.QueryRow(`SELECT count(*) FROM "` + e.schema + `".workflow_runs WHERE claims > 1`).Scan(&resumed); err != nil {
				t.Fatal(err)
			}
			t.Logf("%d runs resumed by another worker", resumed)
			if resumed == 0 {
				t.Error("no run was resumed after a kill")
			}
		})
	}
}

// openBus opens a bridge to url, closed when the test ends.
func openBus(t testing.TB, url string) bridge.Bridge {
	t.Helper()
	b, err := bridge.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}
