package engine_test

import (
	"os"
	"strings"
	"testing"
)

// The README's quick start is Example, with main for Example and without the
// Output header: keep them identical.
func TestReadmeQuickStartIsExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	ex, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	s := string(ex)
	block := s[strings.Index(s, "// quickstart:begin\n")+len("// quickstart:begin\n") : strings.Index(s, "// quickstart:end")]
	block = strings.TrimRight(block, "\n") + "\n"
	block = strings.Replace(block, "func Example() {", "func main() {", 1)
	block = strings.Replace(block, "\t// Output:\n", "", 1)
	if !strings.Contains(string(readme), block) {
		t.Errorf("README.md's quick start differs from Example in engine/example_test.go; copy it over (func main, no Output line):\n%s", block)
	}
}
