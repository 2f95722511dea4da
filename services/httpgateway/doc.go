// Package httpgateway exposes commands as HTTP endpoints. It calls the
// engine through its public API only: each request becomes one
// Command.Invoke with engine.WithEngine and engine.WithMeta, exactly what
// any program can do. (It shares two helpers of the library's own: the
// strict JSON decoding the engine applies to payloads, and the validation
// of W3C trace headers.)
//
//	gw := httpgateway.New(httpgateway.Config{
//		Engine:        eng,
//		Authenticator: httpgateway.BearerTokens(map[string]httpgateway.Identity{token: {Principal: "ci"}}),
//	})
//	httpgateway.Route(gw, http.MethodPost, "/users", userapi.CreateUser, httpgateway.Public(), httpgateway.Status(http.StatusCreated))
//	httpgateway.Route(gw, http.MethodGet, "/users/{id}", userapi.GetUser)
//	srv := httpgateway.NewServer(":8080", gw)
//
// A Gateway is an http.Handler; mount it next to the health endpoints
// (package health). An endpoint can also be declared next to its command,
// var CreateUserHTTP = httpgateway.NewEndpoint(…), and mounted with
// Config.Endpoints or Mount.
//
// # Requests
//
// Patterns are http.ServeMux paths. Path wildcards, query parameters and a
// JSON body fill the command's input, matched by JSON field name (see
// NewEndpoint): GET and DELETE take the fields that are not in the path
// from the query string, POST, PUT and PATCH from the body (or the query
// string, for fields named with Query). A field given in two places, an
// unknown field or query parameter, a value of the wrong type, a missing
// required field (one without omitempty or omitzero, as in the OpenAPI
// document) and a failed Validate are 400 problems naming the field. The
// body is limited to Config.MaxBodyBytes (1 MiB, 413) and must be declared
// JSON: a non-empty body without "Content-Type: application/json" (or a
// +json type; a charset, if any, must be utf-8) is a 415, and so is any
// other declared type even with an empty body, so that a browser's
// cross-site form or text/plain post never reaches a command. A
// body of JSON null, and an empty body where one is required (the input is
// not a struct, or a body field is required; requestBody.required in the
// OpenAPI document), are the 400 the engine answers for an empty payload.
// The result is the JSON of the command's output, with the endpoint's
// status (200 unless Status says otherwise). Every response carries
// X-Content-Type-Options: nosniff.
//
// # Errors
//
// Every error is an RFC 9457 problem (application/problem+json, Problem)
// carrying the correlation id. Its status is the *engine.Error's code:
// 400, 401, 403, 404, 409, 413, 422 as the handler or the engine gave them
// (with their message and details), 504 for a timeout, 503 for no handler,
// an unreachable service, an open circuit or a stopping engine, 500 for
// anything else. A 5xx never carries the error's message or details, which
// can name hosts, tables and topics: its detail is fixed per reason, with
// the correlation id (and the failed message's id, when there is one) to
// find the original, which the gateway logs. The problem's type is
// "urn:switchboard:problem:<reason>" when the error has a reason
// ("invalid_input", "timeout", "no_handler", "draining", …), else
// "about:blank".
//
// # Metadata
//
// X-Correlation-Id (or Correlation-Id) and W3C traceparent (with
// tracestate) are taken from the request when present and usable, else
// generated; both start the conversation (engine.Meta) and are returned on
// every response, so every message the call causes, in any process,
// carries them.
//
// # Authentication
//
// Endpoints are protected unless marked Public. The Authenticator returns
// the principal and tenant, which flow with the call; without an
// Authenticator every protected endpoint answers 401. BearerTokens is a
// fixed-token Authenticator for demos and service credentials.
//
// # OpenAPI
//
// The gateway serves an OpenAPI 3.1 document at /openapi.json
// (Config.OpenAPIPath), regenerated on every Mount: a path per endpoint,
// its path, query and header parameters, a request body schema (the input
// without its path and query fields), the success response, and the error
// responses (400, 401 for protected endpoints, 413 and 415 for bodies, 500,
// 503, 504, and a default) referring to the Problem schema. Schemas come
// from the Go types through github.com/invopop/jsonschema: struct tags
// (json, jsonschema) apply, named structs go to components.schemas, fields
// without omitempty are required, additional properties are refused (the
// gateway decodes strictly), and nil-able fields (slices, maps, pointers)
// may be null, as encoding/json writes them. Protected operations use the
// "auth" security scheme (Config.SecurityScheme, bearer by default); public
// ones override it with an empty requirement.
//
// # Serving and shutdown
//
// NewServer returns an http.Server with every timeout set. Serve runs it
// next to an engine and shuts down in the order that loses nothing:
// Drain (new requests get a 503 problem with reason "draining",
// Connection: close and Retry-After; /readyz fails), a drain delay for load
// balancers to notice, http.Server.Shutdown (in-flight requests complete),
// then Engine.Stop (in-flight handlers finish and reply); both drains are
// bounded by the engine's DrainTimeout, and Serve gives Stop twice that,
// as Engine.Run does. Stats counts what was served and refused.
//
//	chk := health.New(health.Config{Engine: eng})
//	mux.Handle("/readyz", chk)
//	mux.Handle("/", gw)
//	err := httpgateway.Serve(ctx, eng, httpgateway.NewServer(addr, mux), ln, time.Second, chk, gw)
//
// At most Config.MaxInFlight requests (DefaultMaxInFlight, 256) are served
// at once; one more is answered at once with a 503 problem (reason
// "overloaded", Retry-After) without reading its body or calling anything,
// so a burst against a slow command costs a bounded amount of memory.
package httpgateway
