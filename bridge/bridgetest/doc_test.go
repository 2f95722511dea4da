package bridgetest

import (
	"testing"

	"github.com/switchboard-go/switchboard/internal/testenv"
)

func TestDocListsTheCases(t *testing.T) {
	testenv.DocListsCases(t, "doc.go", cases, func(c bridgeCase) string { return c.name })
}
