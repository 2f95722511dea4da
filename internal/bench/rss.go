package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// The RSS figure: peak resident memory of a process running the seed's
// 2-hop call (user → email) at concurrency 64 on the in-process backend —
// the monolith's shape under the c64 load. examples/monolith runs its demo
// once and has no ingress to drive it from outside, so the benchmark
// re-executes itself with -rss-child, which runs only that workload (set up,
// then the load for the window) and reports its peak RSS: VmHWM of
// /proc/self/status. (getrusage's ru_maxrss of a child is no use here: Go
// starts children with vfork semantics, and Linux carries the parent's
// high-water mark across the exec.)

// childRSS runs the c64 2-hop workload of side ("sb" or "raw") for d in a
// child process and returns its peak RSS in MiB and the calls it completed.
func childRSS(ctx context.Context, sideID string, d time.Duration) (float64, int64, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, 0, err
	}
	cmd := exec.CommandContext(ctx, exe, "-rss-child", sideID, "-rss-window", d.String())
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, 0, fmt.Errorf("rss child: %w", err)
	}
	var n, kib int64
	if _, err := fmt.Sscan(string(bytes.TrimSpace(out)), &n, &kib); err != nil {
		return 0, 0, fmt.Errorf("rss child printed %q: %w", out, err)
	}
	return float64(kib) / 1024, n, nil
}

// rssChild is the child's main: the workload alone, then the completed
// calls and the peak RSS in KiB on stdout.
func rssChild(ctx context.Context, sideID string, d time.Duration) error {
	b, err := openBackend(ctx, GoChannel, "rss")
	if err != nil {
		return err
	}
	s := b.sb
	if sideID == "raw" {
		s = b.raw
	}
	r, err := s.commands(ctx, "rss", 2)
	if err != nil {
		return err
	}
	n, _, _, err := rate(ctx, Timing{Window: d, MaxWindow: d}, HighConcurrency, r.op)
	if cerr := r.close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	kib, err := peakRSS()
	if err != nil {
		return err
	}
	fmt.Println(n, kib)
	return nil
}

// peakRSS returns VmHWM of /proc/self/status in KiB.
func peakRSS() (int64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no VmHWM in /proc/self/status")
}
