package main

import (
	"bufio"
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The test binary is the command when $SERVERLESS_TEST_MAIN is set: the
// tests run it as a process, with the arguments after "--".
func TestMain(m *testing.M) {
	if os.Getenv("SERVERLESS_TEST_MAIN") == "1" {
		for i, a := range os.Args {
			if a == "--" {
				os.Args = append(os.Args[:1], os.Args[i+1:]...)
				break
			}
		}
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// proc is the command running as a process.
type proc struct {
	cmd    *exec.Cmd
	addr   string // where it listens, once ready
	mu     sync.Mutex
	output bytes.Buffer // stdout and stderr
	done   chan struct{}
}

// run starts the command with env (and nothing else of the test's
// environment but PATH and HOME) and args, and waits until it is ready or
// has exited.
func run(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^$", "--"}, args...)...)
	cmd.Env = append([]string{"SERVERLESS_TEST_MAIN=1", "PORT=0", "DRAIN_DELAY=0s", "PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	p := &proc{cmd: cmd, done: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = writerFunc(func(b []byte) (int, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.output.Write(b)
	})
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.output.WriteString(line + "\n")
			if a, ok := strings.CutPrefix(line, "listening on "); ok {
				p.addr = strings.Replace(a, "[::]", "127.0.0.1", 1)
			}
			p.mu.Unlock()
			if line == "ready" {
				close(ready)
			}
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	select {
	case <-ready:
	case <-p.done:
	}
	return p
}

func (p *proc) out() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.output.String()
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// get calls path with the bearer token and returns the status.
func (p *proc) get(t *testing.T, path, token string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", "http://"+p.addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Without $API_TOKEN and without demo mode, the process refuses to start
// rather than accept the published demo token.
func TestRefusesToStartWithoutAToken(t *testing.T) {
	for _, env := range [][]string{nil, {"API_TOKEN="}, {"API_TOKEN=  "}, {"SWITCHBOARD_DEMO=0"}} {
		p := run(t, env)
		select {
		case <-p.done:
		default:
			t.Fatalf("%v: it started:\n%s", env, p.out())
		}
		if code := p.cmd.ProcessState.ExitCode(); code == 0 || !strings.Contains(p.out(), "API_TOKEN") {
			t.Errorf("%v: exit code %d, want an error naming API_TOKEN:\n%s", env, code, p.out())
		}
		if strings.Contains(p.out(), DemoToken) {
			t.Errorf("%v: the output shows the demo token:\n%s", env, p.out())
		}
	}
}

// Demo mode, asked for explicitly, accepts the demo token and says so
// without printing it.
func TestDemoModeIsExplicit(t *testing.T) {
	for _, c := range []struct {
		env  []string
		args []string
	}{
		{nil, []string{"-demo"}},
		{[]string{"SWITCHBOARD_DEMO=1"}, nil},
	} {
		p := run(t, c.env, c.args...)
		if p.addr == "" {
			t.Fatalf("%v %v: not ready:\n%s", c.env, c.args, p.out())
		}
		if got := p.get(t, "/emails", DemoToken); got != http.StatusOK {
			t.Errorf("%v %v: the demo token: %d", c.env, c.args, got)
		}
		if got := p.get(t, "/emails", "guess"); got != http.StatusUnauthorized {
			t.Errorf("%v %v: another token: %d", c.env, c.args, got)
		}
		if out := p.out(); strings.Contains(out, DemoToken) || !strings.Contains(out, "demo") {
			t.Errorf("%v %v: want a warning about demo mode without the token:\n%s", c.env, c.args, out)
		}
	}
}

// With $API_TOKEN, only that token is accepted, demo mode or not, and it is
// never printed.
func TestAPITokenIsTheOnlyToken(t *testing.T) {
	const token = "t-7f3a9c"
	for _, args := range [][]string{nil, {"-demo"}} {
		p := run(t, []string{"API_TOKEN=" + token}, args...)
		if p.addr == "" {
			t.Fatalf("%v: not ready:\n%s", args, p.out())
		}
		if got := p.get(t, "/emails", token); got != http.StatusOK {
			t.Errorf("%v: $API_TOKEN: %d", args, got)
		}
		if got := p.get(t, "/emails", DemoToken); got != http.StatusUnauthorized {
			t.Errorf("%v: the demo token next to $API_TOKEN: %d", args, got)
		}
		if strings.Contains(p.out(), token) {
			t.Errorf("%v: the output shows the token:\n%s", args, p.out())
		}
	}
}
