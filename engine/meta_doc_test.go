package engine_test

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bridge/inproc"
	"github.com/switchboard-go/switchboard/engine"
)

// Meta, Route and Error are aliases of types in an internal package, so go
// doc shows none of their fields: each alias's doc comment lists them, one
// item "Name type: meaning" per field. The list must name every field, with
// its type, and nothing else.
func TestAliasDocsListEveryField(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		file, name string
		typ        reflect.Type
	}{
		{"meta.go", "Meta", reflect.TypeFor[engine.Meta]()},
		{"meta.go", "Route", reflect.TypeFor[engine.Route]()},
		{"errors.go", "Error", reflect.TypeFor[engine.Error]()},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			doc := typeDoc(t, c.file, c.name)
			if doc == "" {
				t.Fatalf("%s: no doc comment on type %s", c.file, c.name)
			}
			listed := map[string]string{}
			for _, m := range fieldItem.FindAllStringSubmatch(doc, -1) {
				listed[m[1]] = m[2]
			}
			for i := range c.typ.NumField() {
				f := c.typ.Field(i)
				if !f.IsExported() {
					continue
				}
				want := strings.ReplaceAll(f.Type.String(), "interface {}", "any")
				got, ok := listed[f.Name]
				switch {
				case !ok:
					t.Errorf("the doc of %s does not list field %s (%s)", c.name, f.Name, want)
				case got != want:
					t.Errorf("the doc of %s lists field %s as %s, its type is %s", c.name, f.Name, got, want)
				}
				delete(listed, f.Name)
			}
			for name := range listed {
				t.Errorf("the doc of %s lists %s, which is not a field", c.name, name)
			}
		})
	}
}

// RouteFrom gives a handler the route of its message: an awaited command,
// a sent one, an event.
func TestRouteFrom(t *testing.T) {
	t.Parallel()
	routes := make(chan engine.Route, 3)
	record := func(ctx context.Context) {
		r, ok := engine.RouteFrom(ctx)
		if !ok {
			t.Error("RouteFrom: no route in a handler's context")
		}
		routes <- r
	}
	cmd := engine.NewCommand[EchoIn, EchoOut]("routes", "1", "go")
	ev := engine.NewEvent[EchoIn]("routes.went")
	svc := engine.NewService("routes", "1")
	engine.Handle(svc, cmd, func(ctx context.Context, in EchoIn) (EchoOut, error) { record(ctx); return EchoOut{}, nil })
	engine.Subscribe(svc, ev, func(ctx context.Context, in EchoIn) error { record(ctx); return nil })
	e, _ := start(t, inproc.New(), engine.Config{}, svc)
	ctx := engine.WithEngine(t.Context(), e)
	if _, ok := engine.RouteFrom(ctx); ok {
		t.Error("RouteFrom outside a handler: ok")
	}
	if _, err := cmd.Invoke(ctx, EchoIn{}); err != nil {
		t.Fatal(err)
	}
	want := engine.Route{Service: "routes.v1", Handler: "go", Group: "routes.v1", Topic: cmd.String(), Kind: engine.KindCommand, Awaited: true}
	if got := <-routes; got != want {
		t.Errorf("Invoke: route %+v, want %+v", got, want)
	}
	if err := cmd.Send(ctx, EchoIn{}); err != nil {
		t.Fatal(err)
	}
	want.Awaited = false
	if got := <-routes; got != want {
		t.Errorf("Send: route %+v, want %+v", got, want)
	}
	if err := ev.Emit(ctx, EchoIn{}); err != nil {
		t.Fatal(err)
	}
	got := <-routes
	if got.Kind != engine.KindEvent || got.Handler != "routes.went" || got.Service != "routes.v1" || got.Awaited {
		t.Errorf("Emit: route %+v", got)
	}
}

// fieldItem matches a list item of a doc comment: "  - Name type: …".
var fieldItem = regexp.MustCompile(`(?m)^\s*- ([A-Z]\w*) ([^\s:]+):`)

// typeDoc returns the doc comment of type name declared in file.
func typeDoc(t *testing.T, file, name string) string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.TYPE {
			continue
		}
		for _, s := range gd.Specs {
			if ts := s.(*ast.TypeSpec); ts.Name.Name == name {
				if ts.Doc != nil {
					return ts.Doc.Text()
				}
				return gd.Doc.Text()
			}
		}
	}
	return ""
}

// EngineFrom returns the engine a context carries: WithEngine's, a
// handler's and a Background function's; none elsewhere.
func TestEngineFrom(t *testing.T) {
	t.Parallel()
	if e, ok := engine.EngineFrom(t.Context()); ok || e != nil {
		t.Errorf("EngineFrom(a bare context) = %v, %v; want nil, false", e, ok)
	}
	if e, ok := engine.EngineFrom(engine.WithEngine(t.Context(), nil)); ok || e != nil {
		t.Errorf("EngineFrom(WithEngine(nil)) = %v, %v; want nil, false", e, ok)
	}
	cmd := engine.NewCommand[EchoIn, EchoOut]("enginefrom", "1", "go")
	svc := engine.NewService("enginefrom", "1")
	inHandler := make(chan *engine.Engine, 1)
	engine.Handle(svc, cmd, func(ctx context.Context, in EchoIn) (EchoOut, error) {
		e, _ := engine.EngineFrom(ctx)
		inHandler <- e
		return EchoOut{}, nil
	})
	inBackground := make(chan *engine.Engine, 1)
	svc.Background(func(ctx context.Context) error {
		e, _ := engine.EngineFrom(ctx)
		inBackground <- e
		return nil
	})
	e, _ := start(t, inproc.New(), engine.Config{}, svc)
	ctx := engine.WithEngine(t.Context(), e)
	if got, ok := engine.EngineFrom(ctx); !ok || got != e {
		t.Errorf("EngineFrom(WithEngine(e)) = %p, %v; want %p, true", got, ok, e)
	}
	if _, err := cmd.Invoke(ctx, EchoIn{}); err != nil {
		t.Fatal(err)
	}
	if got := <-inHandler; got != e {
		t.Errorf("EngineFrom in a handler = %p, want %p", got, e)
	}
	select {
	case got := <-inBackground:
		if got != e {
			t.Errorf("EngineFrom in a Background function = %p, want %p", got, e)
		}
	case <-time.After(5 * time.Second):
		t.Error("the Background function did not run")
	}
}
