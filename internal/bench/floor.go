package main

import (
	"context"
	"encoding/json"
	"fmt"
)

// The floor figures compare Switchboard in process with what the same echo
// costs without it: a Go function call, with the payload encoded to JSON
// and decoded on both ways, as Switchboard does (input and output). Their
// raw column is that direct call, not Watermill; their ratio is its share
// of Switchboard's cost, so "Switchboard in process = 1/ratio × a direct
// call". Only on the in-process backend.
func init() {
	workloads = append(workloads,
		workload{name: "floor-1hop-c1", only: GoChannel, kind: latencyKind, open: floorTrial(latencyTrial(1))},
		workload{name: "floor-1hop-c64", only: GoChannel, kind: rateKind, unit: "calls/s", open: floorTrial(rateTrial(1))},
	)
}

// floorTrial opens the workload open on Switchboard's side as it is, and on
// the other side with directSide instead of raw Watermill.
func floorTrial(open func(env) (*trial, error)) func(env) (*trial, error) {
	return func(e env) (*trial, error) {
		if e.sideID == "raw" {
			e.side = directSide{}
		}
		return open(e)
	}
}

// directSide is the echo as a direct function call; it has no events.
type directSide struct{}

// echoDirect is the echo service's handler, called directly.
//
//go:noinline
func echoDirect(_ context.Context, in Item) (Item, error) { return in, nil }

// call is one direct call of echoDirect with JSON on both ways: the
// caller encodes, the callee decodes, runs, encodes, the caller decodes.
func (directSide) call(ctx context.Context, in Item) (Item, error) {
	req, err := json.Marshal(in)
	if err != nil {
		return Item{}, err
	}
	var got Item
	if err := json.Unmarshal(req, &got); err != nil {
		return Item{}, err
	}
	res, err := echoDirect(ctx, got)
	if err != nil {
		return Item{}, err
	}
	rep, err := json.Marshal(res)
	if err != nil {
		return Item{}, err
	}
	var out Item
	return out, json.Unmarshal(rep, &out)
}

func (d directSide) commands(_ context.Context, _ string, hops int) (*rig, error) {
	if hops != 1 {
		return nil, errSkip
	}
	return &rig{
		op: func(ctx context.Context, seq int64) error {
			in := newItem(seq)
			out, err := d.call(ctx, in)
			if err == nil && out.ID != in.ID {
				err = fmt.Errorf("reply %s to call %s", out.ID, in.ID)
			}
			return err
		},
		close: func() error { return nil },
	}, nil
}

func (directSide) events(context.Context, string, int, func(int, string)) (*rig, error) {
	return nil, errSkip
}

func (directSide) publisher(context.Context, string) (*rig, error) { return nil, errSkip }

func (directSide) outbox(context.Context, string, bool, func(string)) (*outboxRig, error) {
	return nil, errSkip
}

func (directSide) scheduled(context.Context, string, func(string)) (*scheduleRig, error) {
	return nil, errSkip
}
