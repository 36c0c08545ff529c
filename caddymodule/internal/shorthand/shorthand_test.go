package shorthand

import "testing"

func TestPathTemplate(t *testing.T) {
	for in, want := range map[string]string{
		"/v1/files/{http.request.uri.path.file}":          "/v1/files/{file}",
		"/v1/hosts/{http.request.host}/things/{id}":       "/v1/hosts/{host}/things/{id}",
		"/v1/customers/{id}":                              "/v1/customers/{id}",
		"/v1/x/{http.request.uri.path.file}suffix":        "/v1/x/{http.request.uri.path.file}suffix", // not a whole segment
		"/v1/{http.request.method}/{http.vars.client_ip}": "/v1/{method}/{client_ip}",
	} {
		if got := PathTemplate(in); got != want {
			t.Errorf("PathTemplate(%q) = %q, want %q", in, got, want)
		}
	}
}
