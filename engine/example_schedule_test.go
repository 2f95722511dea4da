package engine_test

import (
	"context"
	"fmt"
	"time"

	"github.com/switchboard-go/switchboard/engine"
)

type Reminder struct {
	Text string `json:"text"`
}

var ReminderDue = engine.NewEvent[Reminder]("calendar.reminder_due")

// An event scheduled 100 ms ahead, on the in-process bus (whose default
// scheduler keeps it in memory). The handler reads when it was due.
func ExampleEvent_Schedule() {
	done := make(chan struct{})
	notifier := engine.NewService("notifier", "1")
	engine.Subscribe(notifier, ReminderDue, func(ctx context.Context, r Reminder) error {
		late := time.Since(engine.MetaFrom(ctx).ScheduledFor)
		fmt.Println(r.Text, "on time:", late >= 0 && late < time.Second)
		close(done)
		return nil
	})

	eng, err := engine.New(engine.Config{})
	if err != nil {
		panic(err)
	}
	if err := eng.Register(notifier); err != nil {
		panic(err)
	}
	ctx := context.Background()
	if err := eng.Start(ctx); err != nil {
		panic(err)
	}
	defer eng.Stop(ctx)

	ctx = engine.WithEngine(ctx, eng)
	// Scheduled for in an hour, then brought forward.
	id, err := ReminderDue.Schedule(ctx, time.Now().Add(time.Hour), Reminder{Text: "stand-up"})
	if err != nil {
		panic(err)
	}
	if err := eng.Schedules().Reschedule(ctx, id, time.Now().Add(100*time.Millisecond)); err != nil {
		panic(err)
	}
	<-done
	// Output:
	// stand-up on time: true
}
