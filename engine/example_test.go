package engine_test

// quickstart:begin
import (
	"context"
	"errors"
	"fmt"
	"os"

	_ "github.com/switchboard-go/switchboard/bridge/all" // every backend
	"github.com/switchboard-go/switchboard/engine"
)

type GreetIn struct {
	Name string `json:"name"`
}

type GreetOut struct {
	Text string `json:"text"`
}

// Contracts: declared once, shared by the service and its callers.
var (
	Greet   = engine.NewCommand[GreetIn, GreetOut]("greeter", "1", "greet")
	Greeted = engine.NewEvent[GreetOut]("greeter.greeted")
)

func Example() {
	greeter := engine.NewService("greeter", "1")
	engine.Handle(greeter, Greet, func(ctx context.Context, in GreetIn) (GreetOut, error) {
		if in.Name == "" {
			return GreetOut{}, engine.Invalid("name", "is required")
		}
		out := GreetOut{Text: "Hello, " + in.Name}
		return out, Greeted.Emit(ctx, out) // metadata flows on its own
	})

	// The bridge URL is the only thing that changes between deployments.
	eng, err := engine.New(engine.Config{Bridge: os.Getenv("SWITCHBOARD_BRIDGE")})
	if err != nil {
		panic(err)
	}
	if err := eng.Register(greeter); err != nil {
		panic(err)
	}
	ctx := context.Background()
	if err := eng.Start(ctx); err != nil {
		panic(err)
	}
	defer eng.Stop(ctx)

	out, err := Greet.Invoke(engine.WithEngine(ctx, eng), GreetIn{Name: "Ada"})
	fmt.Println(out.Text, err)

	_, err = Greet.Invoke(engine.WithEngine(ctx, eng), GreetIn{})
	fmt.Println(errors.Is(err, engine.ErrInvalidInput), err)
	// Output:
	// Hello, Ada <nil>
	// true 400 Bad Request (invalid_input): name: is required
}

// quickstart:end
