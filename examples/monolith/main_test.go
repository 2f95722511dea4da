package main

import (
	"io"
	"os"
	"strings"
	"testing"

	"github.com/switchboard-go/switchboard/internal/testenv"
)

// The demo runs the seed's scenario end to end and exits by itself,
// printing the trace of the nested call: in-process and on every broker,
// with nothing but SWITCHBOARD_BRIDGE changed.
func TestDemo(t *testing.T) {
	// examples/microservices runs the same services on the same servers.
	testenv.Exclusive(t, "examples-user-email")
	t.Run("gochannel", func(t *testing.T) { demo(t, "") })
	for _, server := range []string{testenv.NATS, testenv.AMQP, testenv.Postgres} {
		t.Run(server, func(t *testing.T) { demo(t, testenv.URL(t, server)) })
	}
}

func demo(t *testing.T, bridgeURL string) {
	t.Setenv("SWITCHBOARD_BRIDGE", bridgeURL)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	runErr := run(false)
	os.Stdout = stdout
	_ = w.Close()
	out, _ := io.ReadAll(r)
	if runErr != nil {
		t.Fatalf("run: %v\n%s", runErr, out)
	}
	for _, want := range []string{
		"created Ada <ada@example.com> as u1",
		"duplicate rejected: 409",
		`e-mail to ada@example.com: "Welcome, Ada"`,
		`e-mail to ada@example.com: "Getting started"`,
		"principal demo-admin",
		"  user.v1.createUser: ok\n    email.v1.sendWelcome: ok\n    event.user.created → email.v1: ok\n",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "lost!") {
		t.Errorf("metadata lost on the way:\n%s", out)
	}
}
