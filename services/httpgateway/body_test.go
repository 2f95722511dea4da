package httpgateway_test

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/switchboard-go/switchboard/engine"
	"github.com/switchboard-go/switchboard/services/httpgateway"
)

// emptyPayloadError is what the engine itself answers for an empty
// payload: a caller sending a nil slice (JSON null) to a command.
func emptyPayloadError(t *testing.T) *engine.Error {
	t.Helper()
	eng := newEngine(t)
	var e *engine.Error
	_, err := List.Invoke(engine.WithEngine(t.Context(), eng), nil)
	if !errors.As(err, &e) {
		t.Fatalf("the engine's answer to an empty payload: %v", err)
	}
	return e
}

// A JSON null body is no input at all: 400, never a panic, on every kind of
// route (path and query fields, public, non-struct input).
func TestNullBodyIs400(t *testing.T) {
	t.Parallel()
	want := emptyPayloadError(t)
	_, srv := newGateway(t, newEngine(t), httpgateway.Config{})
	for _, c := range []struct{ method, path string }{
		{"POST", "/accounts/a42/items"},
		{"POST", "/accounts/a42/items?limit=1"},
		{"POST", "/public/echo"},
		{"POST", "/ghost"},
		{"POST", "/list"},
	} {
		for _, body := range []string{"null", " null\n"} {
			r := do(t, c.method, srv.URL+c.path, body, bearer...)
			if r.status != http.StatusBadRequest {
				t.Errorf("%s %s %q: status %d, want 400: %s", c.method, c.path, body, r.status, r.body)
				continue
			}
			if p := r.problem(t); p.Reason != want.Reason || p.Detail != want.Message || p.Field != "" {
				t.Errorf("%s %s %q: %+v, want the engine's %+v", c.method, c.path, body, p, want)
			}
		}
	}
}

// An empty body where a body is required is described as the engine
// describes an empty payload; where every body field is optional it is
// fine.
func TestEmptyBodyIsDescribedLikeTheEngine(t *testing.T) {
	t.Parallel()
	want := emptyPayloadError(t)
	if want.Code != http.StatusBadRequest {
		t.Fatalf("the engine's empty payload error: %+v", want)
	}
	_, srv := newGateway(t, newEngine(t), httpgateway.Config{})
	for _, path := range []string{"/public/echo", "/accounts/a/items", "/list"} {
		for _, body := range []string{"", "  \n"} {
			r := do(t, "POST", srv.URL+path, body, append([]string{"Content-Type", "application/json"}, bearer...)...)
			if r.status != want.Code {
				t.Errorf("%s %q: status %d, want %d: %s", path, body, r.status, want.Code, r.body)
				continue
			}
			if p := r.problem(t); p.Reason != want.Reason || p.Detail != want.Message {
				t.Errorf("%s %q: %+v, want the engine's reason %q and message %q", path, body, p, want.Reason, want.Message)
			}
		}
	}
	// No body field is required: no body is fine.
	if r := do(t, "POST", srv.URL+"/ghost", ""); r.status != http.StatusServiceUnavailable {
		t.Errorf("an optional body: %d %s", r.status, r.body)
	}
}

// Only JSON bodies are accepted, whatever the Content-Type says or omits.
func TestBodyMustBeDeclaredJSON(t *testing.T) {
	t.Parallel()
	_, srv := newGateway(t, newEngine(t), httpgateway.Config{})
	for _, c := range []struct {
		contentType string
		status      int
	}{
		{"", http.StatusUnsupportedMediaType}, // a form post without a declared type
		{"text/plain", http.StatusUnsupportedMediaType},
		{"application/x-www-form-urlencoded", http.StatusUnsupportedMediaType},
		{"multipart/form-data; boundary=x", http.StatusUnsupportedMediaType},
		{"application/json; charset=utf-16", http.StatusUnsupportedMediaType},
		{"application/jsonx", http.StatusUnsupportedMediaType},
		{"application/json;;", http.StatusUnsupportedMediaType},
		{"application/json", http.StatusOK},
		{"Application/JSON", http.StatusOK},
		{"application/json; charset=utf-8", http.StatusOK},
		{"application/json;charset=UTF-8", http.StatusOK},
		{"application/merge-patch+json", http.StatusOK},
	} {
		r := send(t, "POST", srv.URL+"/public/echo", `{"name":"x"}`, c.contentType)
		if r.status != c.status {
			t.Errorf("Content-Type %q: status %d, want %d: %s", c.contentType, r.status, c.status, r.body)
			continue
		}
		if c.status != http.StatusOK {
			if p := r.problem(t); p.Reason != "unsupported_media_type" {
				t.Errorf("Content-Type %q: %+v", c.contentType, p)
			}
		}
	}
	// No body needs no Content-Type.
	if r := send(t, "GET", srv.URL+"/accounts/a", "", ""); r.status != http.StatusUnauthorized {
		t.Errorf("GET without a body: %d %s", r.status, r.body)
	}
	if r := send(t, "POST", srv.URL+"/ghost", "", ""); r.status != http.StatusServiceUnavailable {
		t.Errorf("POST without a body, where the body is optional: %d %s", r.status, r.body)
	}
	// But an empty form is a form: a browser posts one cross-site to an
	// endpoint whose body is optional.
	for _, ct := range []string{"application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x"} {
		if r := send(t, "POST", srv.URL+"/ghost", "", ct); r.status != http.StatusUnsupportedMediaType {
			t.Errorf("an empty body of type %q: %d %s", ct, r.status, r.body)
		}
	}
}

// Every answer tells browsers not to guess its type.
func TestEveryResponseIsNosniff(t *testing.T) {
	t.Parallel()
	_, srv := newGateway(t, newEngine(t), httpgateway.Config{})
	for _, r := range []reply{
		do(t, "POST", srv.URL+"/public/echo", `{"name":"x"}`), // 200
		do(t, "POST", srv.URL+"/public/echo", `{"name":5}`),   // 400
		do(t, "GET", srv.URL+"/accounts/a", ""),               // 401
		do(t, "GET", srv.URL+"/nowhere", ""),                  // 404
		do(t, "DELETE", srv.URL+"/fail", ""),                  // 405
		do(t, "GET", srv.URL+"/openapi.json", ""),             // 200, the document
		do(t, "POST", srv.URL+"/fail", `{"code":500}`),        // 500
	} {
		if got := r.header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("status %d: X-Content-Type-Options %q", r.status, got)
		}
	}
}

// send posts body with exactly the Content-Type given ("" for none).
func send(t *testing.T, method, url, body, contentType string) reply {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = io.Copy(&b, resp.Body)
	return reply{resp.StatusCode, resp.Header, []byte(b.String())}
}
