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

// Parse parses spec; a spec without CRON_TZ runs on UTC.
func Parse(spec string) (Schedule, error) {
	s, err := parser.Parse(spec)
	if err != nil {
		return nil, fmt.Errorf("cron spec %q: %w", spec, err)
	}
	if sp, ok := s.(*cron.SpecSchedule); ok && sp.Location == time.Local {
		sp.Location = time.UTC // robfig defaults to the machine's zone
	}
	return s, nil
}
