package bridgetest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bridge"
)

// killedBatch is the Concurrency of the consumer KilledConsumerLosesNothing
// kills: it dies holding this many messages, none settled.
const killedBatch = 16

// holderEnv, set in the environment of the test binary re-executed by
// KilledConsumerLosesNothing, makes the case act as the consumer to kill; its
// value is a holderOrder in JSON.
const holderEnv = "SWITCHBOARD_BRIDGETEST_HOLDER"

// What the consumer process writes on its stdout, one line each, for the
// test to wait on.
const (
	subscribedLine = "holder: subscribed"
	holdingLine    = "holder: holding " // followed by the payloads held
)

// holderOrder tells the consumer process what to do.
type holderOrder struct {
	URL  string        // opened with bridge.Open
	Spec bridge.Spec   // subscribed to; it holds Spec.Concurrency messages
	Wait time.Duration // bounds opening and each delivery
	Life time.Duration // how long it holds them before giving up on being killed
}

// A consumer process killed (SIGKILL on Unix: no Close, no Nack, nothing
// flushed) with a full batch in flight loses none of it: another member of
// its group gets every message, each held one counted as redelivered, and
// the group goes on with what is published after.
func testKilledConsumer(t *testing.T, h Harness) {
	if order := os.Getenv(holderEnv); order != "" {
		runHolder(t, order)
		return
	}
	b := h.Connect(t)
	caps := b.Capabilities()
	if !caps.Durable || !caps.CrossProcess {
		t.Logf("%s declares Durable %t and CrossProcess %t: what a consumer holds dies with its process; nothing to check",
			b.Name(), caps.Durable, caps.CrossProcess)
		return
	}
	if h.URL == "" {
		t.Fatal("Harness.URL is empty: the consumer to kill runs in another process, which opens the backend by URL")
	}
	spec := bridge.Spec{Topic: Unique("killed"), Group: "svc.v1", Kind: bridge.Command, Concurrency: killedBatch}
	holder := startHolder(t, h, spec)
	holder.await(t, h, subscribedLine) // its group exists: publishing cannot fail for want of a consumer
	before := numbered("before", 4*killedBatch)
	Publish(t, b, spec.Topic, before...)
	held := strings.Fields(strings.TrimPrefix(holder.await(t, h, holdingLine), holdingLine))
	if len(held) != killedBatch {
		t.Fatalf("the consumer process holds %d messages, want %d: %v", len(held), killedBatch, held)
	}

	// The member that survives joins while the other holds its batch, so
	// it cannot take any of it first.
	ch, _ := Subscribe(t, b, spec)
	c := newCounter()
	c.consume("survivor", ch)
	holder.kill(t)
	killed := time.Now()
	after := numbered("after", killedBatch)
	Publish(t, b, spec.Topic, after...)

	all := append(before, after...)
	missing := func() []string {
		c.mu.Lock()
		defer c.mu.Unlock()
		var out []string
		for _, p := range all {
			if c.seen[p] == 0 {
				out = append(out, p)
			}
		}
		return out
	}
	limit := h.WaitLimit() + h.DeadConsumerDelay
	for len(missing()) > 0 && time.Since(killed) < limit {
		time.Sleep(10 * time.Millisecond)
	}
	if m := missing(); len(m) > 0 {
		t.Fatalf("%d of %d messages not delivered within %s of the kill: %v (the killed consumer held %v)", len(m), len(all), limit, m, held)
	}
	took := time.Since(killed)
	time.Sleep(200 * time.Millisecond) // let a duplicate show up if there is one

	c.mu.Lock()
	defer c.mu.Unlock()
	if caps.CountsDeliveries {
		for _, p := range held {
			if n, err := strconv.Atoi(c.first[p]); err != nil || n < 2 {
				t.Errorf("%s, held by the killed consumer, came back with %s %q, want at least 2", p, bridge.DeliveryKey, c.first[p])
			}
		}
	}
	total := 0
	for _, n := range c.seen {
		total += n
	}
	t.Logf("all %d messages delivered %s after the kill (%d held by the killed consumer); %d deliveries to the survivor",
		len(all), took.Round(time.Millisecond), len(held), total)
}

// runHolder is the consumer process: it subscribes as o.Spec, takes
// o.Spec.Concurrency messages without settling any, says which, and waits
// to be killed. It exits on its own when its stdin closes (the test that
// started it is gone) or after o.Life.
func runHolder(t *testing.T, order string) {
	var o holderOrder
	if err := json.Unmarshal([]byte(order), &o); err != nil {
		t.Fatalf("%s: %v", holderEnv, err)
	}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(2)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), o.Wait)
	b, err := bridge.Open(ctx, o.URL)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	ch, _ := Subscribe(t, b, o.Spec)
	fmt.Println(subscribedLine)
	held := make([]string, 0, o.Spec.Concurrency)
	for range o.Spec.Concurrency {
		held = append(held, string(Receive(t, ch, o.Wait).Payload)) // never settled: its handler holds it
	}
	fmt.Println(holdingLine + strings.Join(held, " "))
	time.Sleep(o.Life)
	os.Exit(2) // not killed: the test is gone or stuck
}

// holder is the consumer process as the test sees it.
type holder struct {
	cmd    *exec.Cmd
	stdin  *os.File // the write end of its stdin: the process ends when it closes
	stderr string   // the file its stderr goes to
	done   chan struct{}
	once   sync.Once

	mu    sync.Mutex
	lines []string // what it wrote on its stdout
}

// startHolder re-executes the test binary, running only the current test,
// as the consumer of spec. The process is killed when the test ends.
func startHolder(t *testing.T, h Harness, spec bridge.Spec) *holder {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	order, err := json.Marshal(holderOrder{URL: h.URL, Spec: spec, Wait: h.WaitLimit(), Life: 2 * h.WaitLimit()})
	if err != nil {
		t.Fatal(err)
	}
	p := &holder{stderr: filepath.Join(t.TempDir(), "stderr"), done: make(chan struct{})}
	errFile, err := os.Create(p.stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer errFile.Close()
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer inR.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		_ = inW.Close()
		t.Fatal(err)
	}
	defer outW.Close()
	// Files, not writers: the process gets them as they are, and no
	// goroutine of this process copies its output.
	p.cmd = exec.Command(exe, "-test.run="+exactly(t.Name()), "-test.count=1")
	p.cmd.Env = append(os.Environ(), holderEnv+"="+string(order))
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = inR, outW, errFile
	if err := p.cmd.Start(); err != nil {
		_, _ = inW.Close(), outR.Close()
		t.Fatal(err)
	}
	p.stdin = inW
	go p.read(outR)
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			errText, _ := os.ReadFile(p.stderr)
			p.mu.Lock()
			defer p.mu.Unlock()
			t.Logf("the consumer process wrote:\n%s\n%s", strings.Join(p.lines, "\n"), errText)
		}
	})
	return p
}

// exactly returns a -test.run pattern that selects the test named name
// (t.Name()) and nothing else.
func exactly(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// read collects the process's stdout until it ends.
func (p *holder) read(r *os.File) {
	defer close(p.done)
	defer r.Close()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		p.mu.Lock()
		p.lines = append(p.lines, sc.Text())
		p.mu.Unlock()
	}
}

// await returns the first line the process wrote that starts with prefix,
// failing the test if the process ends or WaitLimit passes first.
func (p *holder) await(t *testing.T, h Harness, prefix string) string {
	t.Helper()
	var line string
	WaitFor(t, h.WaitLimit(), fmt.Sprintf("the consumer process to write %q", prefix), func() bool {
		var ended bool
		select {
		case <-p.done: // checked first: a line written before the end is not missed
			ended = true
		default:
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, l := range p.lines {
			if strings.HasPrefix(l, prefix) {
				line = l
				return true
			}
		}
		if ended {
			t.Fatalf("the consumer process ended before it wrote %q", prefix)
		}
		return false
	})
	return line
}

// kill kills the process (SIGKILL on Unix) and fails the test if it had
// ended on its own.
func (p *holder) kill(t *testing.T) {
	t.Helper()
	p.stop()
	if p.cmd.ProcessState.Exited() {
		t.Fatalf("the consumer process ended on its own (%s) before it was killed", p.cmd.ProcessState)
	}
}

// stop kills the process if it still runs and waits until it and the
// reading of its output have ended.
func (p *holder) stop() {
	p.once.Do(func() {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
		_ = p.stdin.Close() // after the kill: closing it first would let the process exit by itself
		<-p.done
	})
}
