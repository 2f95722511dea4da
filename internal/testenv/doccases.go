package testenv

import (
	"go/parser"
	"go/token"
	"slices"
	"strings"
	"testing"
)

// DocListsCases fails the test unless the bullet list in the package
// documentation of file (a doc.go) names exactly the cases of a suite's
// table, in order (name gives a case's name): each item starts with a
// case's name, followed by nothing, a space or a colon. It keeps a suite's
// documented list of named subtests true. It marks t parallel.
func DocListsCases[C any](t *testing.T, file string, table []C, name func(C) string) {
	t.Helper()
	t.Parallel()
	cases := make([]string, len(table))
	for i, c := range table {
		cases[i] = name(c)
	}
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil {
		t.Fatal(err)
	}
	if f.Doc == nil {
		t.Fatalf("%s has no package documentation", file)
	}
	var listed []string
	for line := range strings.Lines(f.Doc.Text()) {
		item, ok := strings.CutPrefix(strings.TrimSpace(line), "- ")
		if !ok {
			continue
		}
		name, _, _ := strings.Cut(item, " ")
		listed = append(listed, strings.TrimSuffix(name, ":"))
	}
	if !slices.Equal(listed, cases) {
		t.Errorf("the documentation of %s lists the cases\n\t%v\nthe suite runs\n\t%v", file, listed, cases)
	}
}
