package storetest

import (
	"testing"

	"github.com/switchboard-go/switchboard/internal/testenv"
)

func TestDocListsTheCases(t *testing.T) {
	testenv.DocListsCases(t, "doc.go", cases, func(c storeCase) string { return c.name })
}
