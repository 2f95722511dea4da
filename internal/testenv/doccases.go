package testenv

import (
	"go/parser"
	"go/token"
	"slices"
	"strings"
	"testing"
)

// DocListsCases fails the test unless the bullet list in the package
// documentation of file (a doc.go) names exactly cases, in order: each item
// starts with a case's name, followed by nothing, a space or a colon. It
// keeps a suite's documented list of named subtests true.
func DocListsCases(t testing.TB, file string, cases []string) {
	t.Helper()
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
