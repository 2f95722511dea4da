package httpgateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/switchboard-go/switchboard/engine"
)

// ProblemContentType is the media type of every error answer (RFC 9457).
const ProblemContentType = "application/problem+json"

// ProblemTypePrefix starts the type URI of a problem that has a reason:
// "urn:switchboard:problem:timeout". A problem without one has type
// "about:blank" and the HTTP status says it all.
const ProblemTypePrefix = "urn:switchboard:problem:"

// Problem is the body of every error answer, an RFC 9457 problem detail
// with Switchboard's extension members.
type Problem struct {
	// Type is ProblemTypePrefix + Reason, or "about:blank".
	Type string `json:"type"`
	// Title is the HTTP status text.
	Title string `json:"title"`
	// Status is the HTTP status code.
	Status int `json:"status"`
	// Detail explains this occurrence. A 5xx has a fixed detail per reason
	// and never carries internals: quote the correlation id instead.
	Detail string `json:"detail,omitempty"`
	// CorrelationID is the conversation's id, also in the X-Correlation-Id
	// header: quote it when reporting a problem.
	CorrelationID string `json:"correlationId"`
	// Reason refines the status ("invalid_input", "timeout", "draining",
	// "no_handler", …); see engine.Error.
	Reason string `json:"reason,omitempty"`
	// Field names the input field at fault, for a 400.
	Field string `json:"field,omitempty"`
	// Details are the error's details: those of a 4xx as the handler gave
	// them; of a 5xx only the failed message's id, when there is one.
	Details map[string]any `json:"details,omitempty"`
}

// problemFor turns a call's error into the problem to answer with.
func problemFor(err error) (p Problem, internal bool) {
	var e *engine.Error
	if !errors.As(err, &e) {
		return Problem{Status: http.StatusInternalServerError, Detail: "internal error", Reason: "internal"}, true
	}
	status := e.Code
	if status < 400 || status > 599 {
		status = http.StatusInternalServerError
	}
	p = Problem{Status: status, Reason: e.Reason, Detail: e.Message}
	if f, ok := e.Details["field"].(string); ok {
		p.Field = f
	}
	if status < 500 {
		for k, v := range e.Details {
			if k == "field" {
				continue
			}
			if p.Details == nil {
				p.Details = map[string]any{}
			}
			p.Details[k] = v
		}
		return p, false
	}
	// A server error's message and details are for the operators (the
	// gateway logs them): they can name tables, hosts and topics.
	if !isCode(p.Reason) {
		p.Reason = ""
	}
	p.Detail = serverDetail(status, p.Reason)
	if id, ok := e.Details["message_id"]; ok {
		p.Details = map[string]any{"message_id": id}
	}
	return p, false
}

// serverDetails are the fixed details of 5xx problems, by reason.
var serverDetails = map[string]string{
	"internal":      "internal error",
	"bad_reply":     "the service answered with a reply that cannot be read",
	"no_handler":    "no service handles this request now",
	"unreachable":   "the service cannot be reached",
	"circuit_open":  "the service is failing; calls to it are paused",
	"shutting_down": "the service is shutting down",
	"timeout":       "the service did not answer in time",
}

// serverDetail returns the fixed detail of a 5xx problem: its reason's, or
// its status text for a reason without one.
func serverDetail(status int, reason string) string {
	if d, ok := serverDetails[reason]; ok {
		return d
	}
	if status == http.StatusInternalServerError {
		return serverDetails["internal"]
	}
	return http.StatusText(status)
}

// isCode reports whether reason is a machine code (lower-case letters,
// digits and underscores, at most 64), as reasons are meant to be, rather
// than prose that might carry internals.
func isCode(reason string) bool {
	if len(reason) > 64 {
		return false
	}
	for i := 0; i < len(reason); i++ {
		if c := reason[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// writeError answers a failed authentication or call.
func (g *Gateway) writeError(w http.ResponseWriter, r *http.Request, ep *Endpoint, err error) {
	p, internal := problemFor(err)
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		g.log.Debug("client went away", "endpoint", ep.String(), "correlation_id", infoFrom(r).correlationID)
		p = Problem{Status: http.StatusServiceUnavailable, Reason: "cancelled", Detail: "the request was cancelled"}
		internal = false
	}
	switch {
	case internal:
		g.log.Error("endpoint failed", "endpoint", ep.String(), "command", ep.command, "correlation_id", infoFrom(r).correlationID, "err", err)
	case p.Status >= 500:
		g.log.Warn("endpoint answered with a server error", "endpoint", ep.String(), "command", ep.command, "status", p.Status, "correlation_id", infoFrom(r).correlationID, "err", err)
	}
	g.writeProblem(w, r, p)
}

// marshal encodes v as JSON without HTML escaping (no \u003c in details).
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// writeProblem writes p as application/problem+json, filling its type,
// title and correlation id.
func (g *Gateway) writeProblem(w http.ResponseWriter, r *http.Request, p Problem) {
	if p.Type == "" {
		p.Type = "about:blank"
		if p.Reason != "" {
			p.Type = ProblemTypePrefix + p.Reason
		}
	}
	if p.Title == "" {
		p.Title = http.StatusText(p.Status)
	}
	if p.CorrelationID == "" {
		p.CorrelationID = infoFrom(r).correlationID
	}
	if p.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", g.cfg.Challenge)
	}
	body, err := marshal(p)
	if err != nil { // details that do not encode: drop them
		p.Details = nil
		body, _ = marshal(p)
	}
	w.Header().Set("Content-Type", ProblemContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	_, _ = w.Write(body)
}
