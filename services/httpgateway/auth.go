package httpgateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"

	"github.com/switchboard-go/switchboard/engine"
)

// Authenticator identifies the caller of a protected endpoint. The
// principal and tenant it returns travel with the call (engine.Meta
// PrincipalID and TenantID) to every service it reaches. An error, or an
// empty principal, refuses the request: a 401 problem, or the error's own
// status when it is an *engine.Error with code 401 or 403 (its message
// becomes the problem's detail, so keep it free of secrets). Any other
// error's text is logged, not sent.
type Authenticator interface {
	// Authenticate returns whom r's credentials stand for, or why not.
	Authenticate(r *http.Request) (principal, tenant string, err error)
}

// AuthenticatorFunc adapts a function to Authenticator.
type AuthenticatorFunc func(r *http.Request) (principal, tenant string, err error)

// Authenticate implements Authenticator.
func (f AuthenticatorFunc) Authenticate(r *http.Request) (string, string, error) { return f(r) }

// Identity is whom a credential stands for.
type Identity struct {
	Principal string // the caller (engine.Meta PrincipalID); must not be empty
	Tenant    string // the caller's tenant (engine.Meta TenantID), if any
}

// BearerTokens returns an Authenticator that accepts "Authorization: Bearer
// <token>" for the tokens given, each standing for its Identity. Tokens are
// compared in constant time. It suits demos, tests and service-to-service
// secrets; put an OIDC or JWT check behind Authenticator for real users.
func BearerTokens(tokens map[string]Identity) Authenticator {
	type entry struct {
		sum [sha256.Size]byte
		id  Identity
	}
	entries := make([]entry, 0, len(tokens))
	for tok, id := range tokens {
		if tok != "" && id.Principal != "" {
			entries = append(entries, entry{sha256.Sum256([]byte(tok)), id})
		}
	}
	return AuthenticatorFunc(func(r *http.Request) (string, string, error) {
		scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			return "", "", engine.NewError(http.StatusUnauthorized, "a bearer token is required (Authorization: Bearer <token>)")
		}
		sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		var found *Identity
		for i := range entries { // no early exit: constant time in the token
			if subtle.ConstantTimeCompare(sum[:], entries[i].sum[:]) == 1 {
				found = &entries[i].id
			}
		}
		if found == nil {
			return "", "", engine.NewError(http.StatusUnauthorized, "invalid bearer token")
		}
		return found.Principal, found.Tenant, nil
	})
}

// authenticate runs the configured Authenticator.
func (g *Gateway) authenticate(r *http.Request) (principal, tenant string, err error) {
	if g.cfg.Authenticator == nil {
		return "", "", engine.NewError(http.StatusUnauthorized, "authentication required")
	}
	principal, tenant, err = g.cfg.Authenticator.Authenticate(r)
	if err != nil {
		var e *engine.Error
		if errors.As(err, &e) && (e.Code == http.StatusUnauthorized || e.Code == http.StatusForbidden) {
			return "", "", &engine.Error{Code: e.Code, Reason: e.Reason, Message: e.Message}
		}
		g.log.Info("authentication failed", "err", err, "correlation_id", infoFrom(r).correlationID)
		return "", "", engine.NewError(http.StatusUnauthorized, "invalid credentials")
	}
	if principal == "" {
		return "", "", engine.NewError(http.StatusUnauthorized, "authentication required")
	}
	return principal, tenant, nil
}
