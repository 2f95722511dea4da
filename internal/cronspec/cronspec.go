// Package cronspec parses the cron expressions of recurring schedules
// (engine.Recurrence.Spec), for the engine and every Scheduler alike.
package cronspec

import (
	"fmt"
	"time"

	"github.com/robfig/cron/v3"
)

// parser accepts five fields (minute hour day-of-month month day-of-week)
// or six with seconds first, descriptors such as "@daily", and a leading
// "CRON_TZ=<IANA zone> " (default UTC).
var parser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Schedule gives the tick after a time.
type Schedule interface {
	// Next returns the first tick strictly after t, or the zero time if
	// there is none.
	Next(t time.Time) time.Time
}

// Parse parses spec; a spec without CRON_TZ runs on UTC. A spec with
// fixed hours (not "*" in the hour field) follows the wall clock across
// daylight saving changes, as cron does: a tick whose wall time the clocks
// skip fires once, at that wall time read in the former offset (02:30 at
// 03:30 when 02:00 becomes 03:00), and a wall time the clocks repeat fires
// at its first occurrence only. A spec with every hour follows real time.
func Parse(spec string) (Schedule, error) {
	s, err := parser.Parse(spec)
	if err != nil {
		return nil, fmt.Errorf("cron spec %q: %w", spec, err)
	}
	sp, ok := s.(*cron.SpecSchedule)
	if !ok {
		return s, nil
	}
	if sp.Location == time.Local {
		sp.Location = time.UTC // robfig defaults to the machine's zone
	}
	if sp.Hour&allHours == allHours {
		return sp, nil
	}
	wall := *sp
	wall.Location = time.UTC
	return wallSchedule{sp: sp, wall: &wall}, nil
}

// allHours is the hour field of a spec that fires every hour.
const allHours = 1<<24 - 1

// maxTransitions bounds the zone transitions Next looks through between
// two ticks (robfig looks five years ahead: two a year).
const maxTransitions = 16

// wallSchedule is a spec with fixed hours in a zone that may change its
// offset: robfig's Next skips the ticks whose wall time does not exist and
// fires twice those whose wall time occurs twice.
type wallSchedule struct {
	sp   *cron.SpecSchedule
	wall *cron.SpecSchedule // sp on UTC: its ticks are wall times
}

// Next implements Schedule.
func (w wallSchedule) Next(t time.Time) time.Time {
	n := w.sp.Next(t)
	if n.IsZero() {
		return n
	}
	if end, ok := repeated(n.In(w.sp.Location)); ok {
		// The second occurrence of a wall time: go on from past the
		// repeated wall times.
		if n = w.sp.Next(end.Add(-time.Second)); n.IsZero() {
			return n
		}
	}
	if g := w.skipped(t, n); !g.IsZero() {
		return g
	}
	return n.In(t.Location())
}

// repeated reports whether the wall time of n occurred already, an offset
// change earlier (the clocks went back), and returns the end of the
// repeated wall times.
func repeated(n time.Time) (time.Time, bool) {
	start, _ := n.ZoneBounds()
	if start.IsZero() {
		return time.Time{}, false
	}
	_, now := n.Zone()
	_, before := start.Add(-time.Second).Zone()
	end := start.Add(time.Duration(before-now) * time.Second)
	return end, before > now && n.Before(end)
}

// skipped returns the first tick after t and before n whose wall time the
// clocks skipped (they went forward), at that wall time read in the former
// offset; zero if none.
func (w wallSchedule) skipped(t, n time.Time) time.Time {
	z := t.In(w.sp.Location)
	for range maxTransitions {
		_, end := z.ZoneBounds()
		if end.IsZero() || !end.Before(n) {
			return time.Time{}
		}
		_, before := z.Zone()
		z = end.In(w.sp.Location)
		_, after := z.Zone()
		if after <= before {
			continue
		}
		// The wall times from end+before to end+after do not exist.
		from := end.UTC().Add(time.Duration(before) * time.Second)
		to := end.UTC().Add(time.Duration(after) * time.Second)
		if wt := w.wall.Next(from.Add(-time.Second)); !wt.IsZero() && wt.Before(to) {
			if g := wt.Add(-time.Duration(before) * time.Second); g.After(t) {
				return g.In(t.Location())
			}
		}
	}
	return time.Time{}
}
