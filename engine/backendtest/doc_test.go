package backendtest

import (
	"testing"

	"github.com/switchboard-go/switchboard/internal/testenv"
)

func TestDocListsTheCases(t *testing.T) {
	testenv.DocListsCases(t, "doc.go", engineCases, func(c engineCase) string { return c.name })
}
