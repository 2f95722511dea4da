// Command bench measures Switchboard side by side with hand-written
// Watermill doing the same work, on every backend that is reachable, in one
// run, and prints one line per figure:
//
//	<figure> <switchboard> <raw-watermill> <ratio> <unit>
//
// The ratio is > 1 when Switchboard is better (rates: switchboard/raw;
// latencies, allocations, RSS: raw/switchboard). A figure with a client-only
// ceiling ends with each side's fraction of it, "<switchboard>/<raw>"; a
// figure named <figure>@<variant> compares the same Switchboard value with
// raw Watermill tuned away from its defaults; a ceiling itself is
// "<backend>/ceiling-<name> <value> <unit>". Lines starting with '#' are
// comments: the machine first, then notes. See BENCHMARKS.md.
//
//	go run ./internal/bench                          # full run, about ten minutes
//	go run ./internal/bench -quick                   # smoke check, under a minute
//	go run ./internal/bench -backends gochannel,nats -workloads cmd-1hop-c64 -side sb -cpuprofile sb.prof
//
// Server URLs come from the variables `make test` uses
// (SWITCHBOARD_TEST_NATS, SWITCHBOARD_TEST_AMQP, SWITCHBOARD_TEST_POSTGRES),
// with the same local defaults.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := mainErr(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func mainErr(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		o          Options
		backends   = fs.String("backends", strings.Join(AllBackends, ","), "comma-separated backends to measure")
		wl         = fs.String("workloads", "", "comma-separated workloads (default: all of the mode): "+strings.Join(WorkloadNames(), ", "))
		cpuprofile = fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
		quiet      = fs.Bool("q", false, "no progress lines on stderr")
		rssChildOf = fs.String("rss-child", "", "internal: run the RSS workload of this side and exit")
		rssWindow  = fs.Duration("rss-window", 0, "how long the RSS figure's child runs the c64 load (default 3s, quick 1s)")
	)
	fs.BoolVar(&o.Quick, "quick", false, "fewer, shorter figures (a smoke check)")
	fs.StringVar(&o.Side, "side", "both", "both, sb (Switchboard only) or raw (Watermill only, with its tuned variants); the client-only ceilings run only with both")
	fs.DurationVar(&o.Timing.Warmup, "warmup", 0, "warm-up per figure (default 1s, quick 200ms)")
	fs.DurationVar(&o.Timing.Window, "window", 0, "measured time per figure (default 3s, quick 500ms)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *rssChildOf != "" {
		return rssChild(ctx, *rssChildOf, *rssWindow)
	}
	o.Backends = split(*backends)
	o.Workloads = split(*wl)
	for _, w := range o.Workloads {
		if !contains(WorkloadNames(), w) {
			return fmt.Errorf("unknown workload %q (have %s)", w, strings.Join(WorkloadNames(), ", "))
		}
	}
	for _, b := range o.Backends {
		if !contains(AllBackends, b) {
			return fmt.Errorf("unknown backend %q (have %s)", b, strings.Join(AllBackends, ", "))
		}
	}
	if o.Side != "both" && o.Side != "sb" && o.Side != "raw" {
		return fmt.Errorf("-side %q: want both, sb or raw", o.Side)
	}
	o.RSSWindow = *rssWindow
	if o.RSSWindow == 0 {
		o.RSSWindow = 3 * time.Second
		if o.Quick {
			o.RSSWindow = time.Second
		}
	}
	if !*quiet {
		o.Progress = stderr
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	return Run(ctx, o, stdout)
}

func split(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
