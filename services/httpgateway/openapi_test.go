package httpgateway_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	verrors "github.com/pb33f/libopenapi-validator/errors"

	"github.com/switchboard-go/switchboard/services/httpgateway"
)

// openAPIValidator parses doc with libopenapi and returns a validator for
// it, failing the test unless the document itself is valid OpenAPI 3.1.
func openAPIValidator(t *testing.T, doc []byte) validator.Validator {
	t.Helper()
	d, err := libopenapi.NewDocument(doc)
	if err != nil {
		t.Fatalf("libopenapi cannot read the document: %v", err)
	}
	v, errs := validator.NewValidator(d)
	if len(errs) > 0 {
		t.Fatalf("validator: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		t.Fatalf("the document is not valid OpenAPI:\n%s\n%s", describe(verrs), doc)
	}
	return v
}

func describe(errs []*verrors.ValidationError) string {
	var b strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&b, "- %s: %s (%s)\n", e.Message, e.Reason, e.HowToFix)
		for _, se := range e.SchemaValidationErrors {
			fmt.Fprintf(&b, "    %s at %s\n", se.Reason, se.KeywordLocation+" "+se.FieldPath)
		}
	}
	return b.String()
}

func TestOpenAPIDocumentIsValid31(t *testing.T) {
	t.Parallel()
	_, srv := newGateway(t, newEngine(t), httpgateway.Config{Title: "Accounts", Version: "2.0.0"})
	r := do(t, "GET", srv.URL+"/openapi.json", "")
	if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %v", r.status, r.header)
	}
	openAPIValidator(t, r.body)

	var doc struct {
		OpenAPI string `json:"openapi"`
		Info    struct{ Title, Version string }
		Paths   map[string]map[string]struct {
			OperationID string           `json:"operationId"`
			Security    *json.RawMessage `json:"security"`
			Parameters  []map[string]any `json:"parameters"`
			RequestBody *struct {
				Content map[string]struct {
					Schema struct {
						Properties map[string]any `json:"properties"`
						Required   []string       `json:"required"`
					} `json:"schema"`
				} `json:"content"`
			} `json:"requestBody"`
			Responses map[string]any `json:"responses"`
		}
		Components struct {
			Schemas         map[string]json.RawMessage `json:"schemas"`
			SecuritySchemes map[string]any             `json:"securitySchemes"`
		}
	}
	if err := json.Unmarshal(r.body, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" || doc.Info.Title != "Accounts" || doc.Info.Version != "2.0.0" {
		t.Errorf("header: %s %+v", doc.OpenAPI, doc.Info)
	}
	items := doc.Paths["/accounts/{id}/items"]["post"]
	if items.OperationID != "acct.v1.echo" || items.Security != nil {
		t.Errorf("POST items: %+v", items)
	}
	var params []string
	for _, p := range items.Parameters {
		if p["in"] != nil {
			params = append(params, fmt.Sprint(p["in"], ":", p["name"]))
		}
	}
	if strings.Join(params, " ") != "path:id query:limit query:tags" {
		t.Errorf("parameters %v", params)
	}
	body := items.RequestBody.Content["application/json"].Schema
	if _, ok := body.Properties["id"]; ok || body.Properties["name"] == nil || strings.Join(body.Required, ",") != "name" {
		t.Errorf("the body schema lacks the path and query fields: %+v", body)
	}
	for _, status := range []string{"201", "400", "401", "413", "415", "500", "503", "504", "default"} {
		if items.Responses[status] == nil {
			t.Errorf("POST items has no %s response", status)
		}
	}
	pub := doc.Paths["/public/echo"]["post"]
	if pub.Security == nil || string(*pub.Security) != "[]" || pub.Responses["401"] != nil {
		t.Errorf("a public operation overrides the security requirement: %+v", pub)
	}
	if get := doc.Paths["/accounts/{id}"]["get"]; get.RequestBody != nil || get.Responses["413"] != nil {
		t.Errorf("GET has a body: %+v", get)
	}
	for _, name := range []string{"EchoIn", "EchoOut", "FindIn", "Problem"} {
		if doc.Components.Schemas[name] == nil {
			t.Errorf("components.schemas lacks %s", name)
		}
	}
	if doc.Components.SecuritySchemes["auth"] == nil {
		t.Errorf("no security scheme")
	}
	if bytes.Contains(r.body, []byte("$defs")) {
		t.Errorf("a reference into $defs is left")
	}

	// The validator is real: a broken document fails.
	broken := bytes.Replace(r.body, []byte(`"title":"Accounts",`), nil, 1) // info.title is required
	d, err := libopenapi.NewDocument(broken)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := validator.NewValidator(d)
	if ok, _ := v.ValidateDocument(); ok {
		t.Error("the validator accepted a broken document")
	}
}

// What the gateway answers matches what its document says, for successes
// and problems alike.
func TestTrafficMatchesTheDocument(t *testing.T) {
	t.Parallel()
	gw, srv := newGateway(t, newEngine(t), httpgateway.Config{MaxBodyBytes: 512})
	v := openAPIValidator(t, gw.OpenAPI())
	for _, c := range []struct {
		method, path, body string
		auth               bool
		status             int
		validRequest       bool
	}{
		{"POST", "/accounts/a1/items?limit=2&tags=x", `{"name":"Ada"}`, true, 201, true},
		{"GET", "/accounts/a1?verbose=true", "", true, 200, true},
		{"POST", "/public/echo", `{"name":"Ada","note":"n"}`, false, 200, true},
		{"GET", "/accounts/nobody", "", true, 404, true},
		{"POST", "/fail", `{"code":409}`, false, 409, true},
		{"POST", "/fail", `{"code":500}`, false, 500, true},
		{"POST", "/ghost", `{}`, false, 503, true},
		{"GET", "/accounts/a1", "", false, 401, false},
		{"POST", "/accounts/a1/items", `{"name":5}`, true, 400, false},
		{"POST", "/public/echo", `{"name":"` + strings.Repeat("x", 600) + `"}`, false, 413, true},
	} {
		name := c.method + " " + c.path
		send := func() *http.Request {
			var rd io.Reader
			if c.body != "" {
				rd = strings.NewReader(c.body)
			}
			req, _ := http.NewRequest(c.method, srv.URL+c.path, rd)
			if c.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			if c.auth {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			return req
		}
		resp, err := http.DefaultClient.Do(send())
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("%s: %d, want %d: %s", name, resp.StatusCode, c.status, b)
			continue
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		req := send()
		var ok bool
		var errs []*verrors.ValidationError
		if c.validRequest {
			ok, errs = v.ValidateHttpRequestResponse(req, resp)
		} else {
			ok, errs = v.ValidateHttpResponse(req, resp)
		}
		if !ok {
			t.Errorf("%s (%d %s) does not match the document:\n%s", name, resp.StatusCode, b, describe(errs))
		}
	}
}
