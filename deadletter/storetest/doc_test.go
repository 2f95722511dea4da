package storetest

import (
	"testing"

	"github.com/switchboard-go/switchboard/internal/testenv"
)

func TestDocListsTheCases(t *testing.T) {
	t.Parallel()
	var names []string
	for _, c := range cases {
		names = append(names, c.name)
	}
	testenv.DocListsCases(t, "doc.go", names)
}
