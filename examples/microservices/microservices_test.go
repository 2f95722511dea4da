// Package microservices_test proves the multi-process deployment: the user
// and email services run as two OS processes built from
// examples/microservices, talking over a real broker, driven by this test
// as a third process would.
package microservices_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	_ "github.com/switchboard-go/switchboard/bridge/all"
	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/examples/internal/scenario"
	"github.com/switchboard-go/switchboard/internal/testenv"
)

var bin string // folder of the built binaries

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "switchboard-ms-")
	if err != nil {
		panic(err)
	}
	bin = dir
	for _, name := range []string{"user", "email"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), "./"+name)
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			panic("building " + name + ": " + err.Error())
		}
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		_ = os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// process is one running example binary.
type process struct {
	cmd    *exec.Cmd
	exited chan error
}

func startProcess(t *testing.T, name, bridgeURL string) *process {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, name))
	cmd.Env = append(os.Environ(), "SWITCHBOARD_BRIDGE="+bridgeURL)
	cmd.Stderr = testWriter{t, name}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, exited: make(chan error, 1)}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "ready" {
				close(ready)
			}
		}
		p.exited <- cmd.Wait()
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	select {
	case <-ready:
	case err := <-p.exited:
		t.Fatalf("%s exited before ready: %v", name, err)
	case <-time.After(30 * time.Second):
		t.Fatalf("%s not ready after 30 s", name)
	}
	return p
}

// stop sends SIGTERM and expects a clean exit within the drain deadline.
func (p *process) stop(t *testing.T, name string) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		if err != nil {
			t.Errorf("%s exited with %v after SIGTERM", name, err)
		}
	case <-time.After(engine.DefaultDrainTimeout + 5*time.Second):
		t.Errorf("%s still running after SIGTERM and the drain deadline", name)
	}
}

type testWriter struct {
	t    *testing.T
	name string
}

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("[%s] %s", w.name, strings.TrimSpace(string(p)))
	return len(p), nil
}

func TestSeedScenarioAcrossProcesses(t *testing.T) {
	// examples/monolith runs the same services on the same servers: one
	// at a time, or each takes the other's messages.
	testenv.Exclusive(t, "examples-user-email")
	for _, server := range []string{testenv.NATS, testenv.AMQP, testenv.Postgres} {
		t.Run(server, func(t *testing.T) {
			url := testenv.URL(t, server)
			userProc := startProcess(t, "user", url)
			emailProc := startProcess(t, "email", url)

			caller, err := engine.New(engine.Config{Bridge: url})
			if err != nil {
				t.Fatal(err)
			}
			if err := caller.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			defer caller.Stop(context.Background())
			// three hops over two processes: test → user → email (command),
			// and user → email (user.created), in one conversation and trace
			scenario.Bus(t, caller)
			userProc.stop(t, "user")
			emailProc.stop(t, "email")
		})
	}
}
