package httpgateway_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/services/httpgateway"
)

type GreetIn struct {
	Name string `json:"name"`
}

type GreetOut struct {
	Text string `json:"text"`
}

var Greet = engine.NewCommand[GreetIn, GreetOut]("greeter", "1", "greet")

// One declaration exposes a command over HTTP; the gateway answers JSON,
// problems as application/problem+json, and its OpenAPI document at
// /openapi.json.
func Example() {
	greeter := engine.NewService("greeter", "1")
	engine.Handle(greeter, Greet, func(ctx context.Context, in GreetIn) (GreetOut, error) {
		if in.Name == "" {
			return GreetOut{}, engine.Invalid("name", "is required")
		}
		return GreetOut{Text: "Hello, " + in.Name + " (principal " + engine.MetaFrom(ctx).PrincipalID + ")"}, nil
	})
	eng, _ := engine.New(engine.Config{Logger: slog.New(slog.DiscardHandler)})
	_ = eng.Register(greeter)
	_ = eng.Start(context.Background())
	defer eng.Stop(context.Background())

	gw := httpgateway.New(httpgateway.Config{
		Engine:        eng,
		Authenticator: httpgateway.BearerTokens(map[string]httpgateway.Identity{"t0ken": {Principal: "ada"}}),
	})
	httpgateway.Route(gw, http.MethodPost, "/greetings", Greet)                             // protected
	httpgateway.Route(gw, http.MethodGet, "/greetings/{name}", Greet, httpgateway.Public()) // anyone

	srv := httptest.NewServer(gw) // in production: httpgateway.NewServer and httpgateway.Serve
	defer srv.Close()
	call := func(method, path, body, token string) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Header.Set("X-Correlation-Id", "corr-1")
		if body != "" {
			req.Header.Set("Content-Type", "application/json") // required: JSON only
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		fmt.Println(resp.StatusCode, resp.Header.Get("Content-Type"), strings.TrimSpace(string(b)))
	}
	call("POST", "/greetings", `{"name":"Ada"}`, "t0ken")
	call("POST", "/greetings", `{"name":"Ada"}`, "")
	call("POST", "/greetings", `{"name":""}`, "t0ken")
	call("GET", "/greetings/Bo", ``, "")
	// Output:
	// 200 application/json {"text":"Hello, Ada (principal ada)"}
	// 401 application/problem+json {"type":"about:blank","title":"Unauthorized","status":401,"detail":"a bearer token is required (Authorization: Bearer <token>)","correlationId":"corr-1"}
	// 400 application/problem+json {"type":"urn:switchboard:problem:invalid_input","title":"Bad Request","status":400,"detail":"name: is required","correlationId":"corr-1","reason":"invalid_input","field":"name"}
	// 200 application/json {"text":"Hello, Bo (principal )"}
}
