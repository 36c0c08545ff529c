package sampleapi

import (
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ids"
)

func TestCustomerLifecycle(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		post   func(e *env, target string, fields map[string]string, metadata map[string]string) response
		update func(e *env, target string) response
	}{
		{
			name: "json",
			post: func(e *env, target string, f, md map[string]string) response {
				return e.postJSON(orgA, target, mustJSON(t, map[string]any{
					"email": f["email"], "name": f["name"], "description": f["description"], "phone": f["phone"], "metadata": md,
				}))
			},
			update: func(e *env, target string) response {
				return e.postJSON(orgA, target, `{"name":"Ada King","phone":null,"metadata":{"plan":"team","seats":"5"}}`)
			},
		},
		{
			name: "form",
			post: func(e *env, target string, f, md map[string]string) response {
				v := url.Values{}
				for k, val := range f {
					v.Set(k, val)
				}
				for k, val := range md {
					v.Set("metadata["+k+"]", val)
				}
				return e.postForm(orgA, target, v.Encode())
			},
			update: func(e *env, target string) response {
				return e.postForm(orgA, target, "name=Ada+King&phone=&metadata[plan]=team&metadata[seats]=5")
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			before := time.Now().Unix()

			res := tc.post(e, "/v1/customers",
				map[string]string{"email": "ada@example.com", "name": "Ada Lovelace", "description": "analyst", "phone": "+44 20 7946 0000"},
				map[string]string{"plan": "pro"})
			var created customerJSON
			res.decode(t, http.StatusOK, &created)
			if !ids.Valid(created.ID, ids.Customer) || created.Object != "customer" || created.Livemode {
				t.Fatalf("created = %+v", created)
			}
			if created.Created < before || created.Created > time.Now().Unix() {
				t.Errorf("created = %d, not within the test", created.Created)
			}
			if deref(created.Email) != "ada@example.com" || deref(created.Name) != "Ada Lovelace" ||
				deref(created.Description) != "analyst" || deref(created.Phone) != "+44 20 7946 0000" ||
				!maps.Equal(created.Metadata, map[string]string{"plan": "pro"}) {
				t.Errorf("created = %+v", created)
			}
			if v := res.header.Get("Api-Version"); v != "2026-11-01" {
				t.Errorf("Api-Version = %q", v)
			}

			var got customerJSON
			e.get(orgA, "/v1/customers/"+created.ID).decode(t, http.StatusOK, &got)
			if got.ID != created.ID || deref(got.Email) != "ada@example.com" || got.Created != created.Created {
				t.Errorf("get = %+v, want %+v", got, created)
			}

			var updated customerJSON
			tc.update(e, "/v1/customers/"+created.ID).decode(t, http.StatusOK, &updated)
			if deref(updated.Name) != "Ada King" || updated.Phone != nil || deref(updated.Email) != "ada@example.com" ||
				!maps.Equal(updated.Metadata, map[string]string{"plan": "team", "seats": "5"}) {
				t.Errorf("updated = %+v", updated)
			}

			var l listJSON
			e.get(orgA, "/v1/customers").decode(t, http.StatusOK, &l)
			if l.Object != "list" || l.URL != "/v1/customers" || l.HasMore || len(l.Data) != 1 || l.Data[0].ID != created.ID ||
				deref(l.Data[0].Name) != "Ada King" {
				t.Errorf("list = %+v", l)
			}

			res = e.delete(orgA, "/v1/customers/"+created.ID)
			if res.status != http.StatusOK || !maps.Equal(res.fields(t), map[string]any{"id": created.ID, "object": "customer", "deleted": true}) {
				t.Errorf("delete = %d %s", res.status, res.raw)
			}
			e.get(orgA, "/v1/customers/"+created.ID).assertError(t, wantError{404, "invalid_request_error", "resource_missing", "id"})
			e.delete(orgA, "/v1/customers/"+created.ID).assertError(t, wantError{404, "invalid_request_error", "resource_missing", "id"})
		})
	}
}

func TestCustomerObjectShape(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// An empty create is valid, as in Stripe: every string is null and
	// metadata is an empty object, never null or missing.
	for name, res := range map[string]response{
		"no body":    e.do(request{id: &orgA, method: http.MethodPost, target: "/v1/customers"}),
		"empty json": e.postJSON(orgA, "/v1/customers", `{}`),
		"empty strings": e.postJSON(orgA, "/v1/customers",
			`{"email":"","name":"","description":"","phone":"","metadata":{"x":""}}`),
	} {
		if res.status != http.StatusOK {
			t.Fatalf("%s: status %d: %s", name, res.status, res.raw)
		}
		f := res.fields(t)
		want := []string{"created", "description", "email", "id", "livemode", "metadata", "name", "object", "phone"}
		if got := slices.Sorted(maps.Keys(f)); !slices.Equal(got, want) {
			t.Errorf("%s: keys = %v, want %v", name, got, want)
		}
		for _, k := range []string{"email", "name", "description", "phone"} {
			if f[k] != nil {
				t.Errorf("%s: %s = %v, want null", name, k, f[k])
			}
		}
		if md, ok := f["metadata"].(map[string]any); !ok || len(md) != 0 {
			t.Errorf("%s: metadata = %v, want {}", name, f["metadata"])
		}
	}
	// Lengths count characters: 256 two-byte characters are a valid name.
	long := strings.Repeat("é", maxNameLen)
	c := e.mustCreate(orgA, mustJSON(t, map[string]string{"name": long}))
	if deref(c.Name) != long {
		t.Errorf("name of %d runes not kept", maxNameLen)
	}
	// Live keys create live customers.
	if live := e.mustCreate(orgALive, `{}`); !live.Livemode {
		t.Error("customer created with a live identity is not livemode")
	}
}

func TestUpdateMetadataMerge(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	start := map[string]string{"a": "1", "b": "2", "c": "3"}
	cases := []struct {
		name        string
		contentType string
		body        string
		want        map[string]string
	}{
		{"json adds and overwrites", "application/json", `{"metadata":{"b":"20","d":"4"}}`, map[string]string{"a": "1", "b": "20", "c": "3", "d": "4"}},
		{"json empty value deletes", "application/json", `{"metadata":{"a":""}}`, map[string]string{"b": "2", "c": "3"}},
		{"json null value deletes", "application/json", `{"metadata":{"a":null}}`, map[string]string{"b": "2", "c": "3"}},
		{"json empty string clears", "application/json", `{"metadata":""}`, map[string]string{}},
		{"json null clears", "application/json", `{"metadata":null}`, map[string]string{}},
		{"json other fields keep metadata", "application/json", `{"email":"x@example.com"}`, start},
		{"form adds", "application/x-www-form-urlencoded", "metadata[d]=4", map[string]string{"a": "1", "b": "2", "c": "3", "d": "4"}},
		{"form empty value deletes", "application/x-www-form-urlencoded", "metadata[c]=", map[string]string{"a": "1", "b": "2"}},
		{"form empty metadata clears", "application/x-www-form-urlencoded", "metadata=", map[string]string{}},
		{"form clear then set", "application/x-www-form-urlencoded", "metadata=&metadata[z]=26", map[string]string{"z": "26"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := e.mustCreate(orgA, mustJSON(t, map[string]any{"metadata": start}))
			res := e.do(request{id: &orgA, method: http.MethodPost, target: "/v1/customers/" + c.ID, contentType: tc.contentType, body: tc.body})
			var got customerJSON
			res.decode(t, http.StatusOK, &got)
			if !maps.Equal(got.Metadata, tc.want) {
				t.Errorf("metadata = %v, want %v", got.Metadata, tc.want)
			}
			// And it was stored, not only rendered.
			var stored customerJSON
			e.get(orgA, "/v1/customers/"+c.ID).decode(t, http.StatusOK, &stored)
			if !maps.Equal(stored.Metadata, tc.want) {
				t.Errorf("stored metadata = %v, want %v", stored.Metadata, tc.want)
			}
		})
	}

	t.Run("merge past 50 keys is refused and changes nothing", func(t *testing.T) {
		md := map[string]string{}
		for i := range maxMetadataKeys {
			md[fmt.Sprintf("k%d", i)] = "v"
		}
		c := e.mustCreate(orgA, mustJSON(t, map[string]any{"metadata": md, "name": "Before"}))
		e.postJSON(orgA, "/v1/customers/"+c.ID, `{"name":"After","metadata":{"one_more":"v"}}`).
			assertError(t, wantError{400, "invalid_request_error", "parameter_invalid", "metadata"})
		var got customerJSON
		e.get(orgA, "/v1/customers/"+c.ID).decode(t, http.StatusOK, &got)
		if len(got.Metadata) != maxMetadataKeys || deref(got.Name) != "Before" {
			t.Errorf("customer changed by a refused update: %+v", got)
		}
		// Replacing a key at the limit is fine.
		var replaced customerJSON
		e.postJSON(orgA, "/v1/customers/"+c.ID, `{"metadata":{"k0":"","one_more":"v"}}`).decode(t, http.StatusOK, &replaced)
		if _, ok := replaced.Metadata["k0"]; len(replaced.Metadata) != maxMetadataKeys || ok || replaced.Metadata["one_more"] != "v" {
			t.Errorf("metadata = %v", replaced.Metadata)
		}
	})
}

func TestPagination(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var created []string
	for i := range 25 {
		created = append(created, e.mustCreate(orgA, fmt.Sprintf(`{"email":"c%d@example.com"}`, i)).ID)
	}
	// Newest first is id order, descending, byte by byte.
	want := slices.Clone(created)
	slices.Sort(want)
	slices.Reverse(want)

	page := func(query string) listJSON {
		t.Helper()
		var l listJSON
		e.get(orgA, "/v1/customers?"+query).decode(t, http.StatusOK, &l)
		return l
	}
	idsOf := func(l listJSON) []string {
		var out []string
		for _, c := range l.Data {
			out = append(out, c.ID)
		}
		return out
	}

	// Forward: 10, 10, 5.
	var walked []string
	forward := []struct {
		size    int
		hasMore bool
	}{{10, true}, {10, true}, {5, false}}
	query := "limit=10"
	var pages []listJSON
	for i, step := range forward {
		l := page(query)
		if len(l.Data) != step.size || l.HasMore != step.hasMore {
			t.Fatalf("page %d: %d items, has_more %v; want %d, %v", i, len(l.Data), l.HasMore, step.size, step.hasMore)
		}
		pages = append(pages, l)
		walked = append(walked, idsOf(l)...)
		query = "limit=10&starting_after=" + l.Data[len(l.Data)-1].ID
	}
	if !slices.Equal(walked, want) {
		t.Fatalf("forward walk = %v\nwant %v", walked, want)
	}

	// Back from the last page with ending_before: the pages come back the
	// same, each still newest first; the first page reports has_more=false.
	back := pages[2].Data[0].ID
	for i := 1; i >= 0; i-- {
		l := page("limit=10&ending_before=" + back)
		if !slices.Equal(idsOf(l), idsOf(pages[i])) {
			t.Fatalf("back to page %d = %v, want %v", i, idsOf(l), idsOf(pages[i]))
		}
		if l.HasMore != (i > 0) {
			t.Errorf("back to page %d: has_more = %v", i, l.HasMore)
		}
		back = l.Data[0].ID
	}

	// Short page before a cursor near the top: ending_before returns the
	// items just before it, not the newest ones.
	l := page("limit=2&ending_before=" + want[5])
	if !slices.Equal(idsOf(l), want[3:5]) || !l.HasMore {
		t.Errorf("limit=2 ending_before want[5] = %v (has_more %v), want %v, true", idsOf(l), l.HasMore, want[3:5])
	}
	// Default limit is 10; limit=100 takes everything.
	if l := page(""); len(l.Data) != 10 || !l.HasMore {
		t.Errorf("default page: %d items, has_more %v", len(l.Data), l.HasMore)
	}
	if l := page("limit=100"); len(l.Data) != 25 || l.HasMore {
		t.Errorf("limit=100: %d items, has_more %v", len(l.Data), l.HasMore)
	}
	// A deleted customer's id still works as a cursor.
	e.delete(orgA, "/v1/customers/"+want[9]).decode(t, http.StatusOK, &map[string]any{})
	if l := page("limit=3&starting_after=" + want[9]); !slices.Equal(idsOf(l), want[10:13]) {
		t.Errorf("after a deleted cursor = %v, want %v", idsOf(l), want[10:13])
	}
}

func TestEmailFilter(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ann1 := e.mustCreate(orgA, `{"email":"Ann@Example.com"}`)
	ann2 := e.mustCreate(orgA, `{"email":"ann@example.com"}`)
	e.mustCreate(orgA, `{"email":"bob@example.com"}`)
	e.mustCreate(orgA, `{"email":"ann@example.org"}`)
	e.mustCreate(orgA, `{}`)
	e.mustCreate(orgB, `{"email":"ann@example.com"}`)

	cases := []struct {
		name  string
		query string
		want  []string
	}{
		{"case-insensitive exact", "email=ANN%40example.COM", []string{ann2.ID, ann1.ID}},
		{"no partial match", "email=ann%40example", nil},
		{"with limit", "email=ann%40example.com&limit=1", []string{ann2.ID}},
		{"with cursor", "email=ann%40example.com&starting_after=" + ann2.ID, []string{ann1.ID}},
		{"nobody", "email=zed%40example.com", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var l listJSON
			e.get(orgA, "/v1/customers?"+tc.query).decode(t, http.StatusOK, &l)
			var got []string
			for _, c := range l.Data {
				got = append(got, c.ID)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	mine := e.mustCreate(orgA, `{"email":"mine@example.com","metadata":{"k":"v"}}`)
	target := "/v1/customers/" + mine.ID

	others := map[string]identity.Identity{"other org": orgB, "live environment": orgALive}
	for name, other := range others {
		t.Run(name, func(t *testing.T) {
			notFound := wantError{404, "invalid_request_error", "resource_missing", "id"}
			e.get(other, target).assertError(t, notFound)
			e.postJSON(other, target, `{"name":"hijacked"}`).assertError(t, notFound)
			e.delete(other, target).assertError(t, notFound)
			// Exactly like an id that never existed, up to the id itself.
			missingID := ids.New(ids.Customer)
			missing := e.get(other, "/v1/customers/"+missingID).assertError(t, notFound)
			got := e.get(other, target).assertError(t, notFound)
			for _, m := range []map[string]string{missing, got} {
				delete(m, "request_id")
			}
			missing["message"] = strings.ReplaceAll(missing["message"], missingID, "ID")
			got["message"] = strings.ReplaceAll(got["message"], mine.ID, "ID")
			if !maps.Equal(got, missing) {
				t.Errorf("other tenant's 404 %v differs from a missing id's %v", got, missing)
			}
			for _, q := range []string{"", "?email=mine%40example.com", "?ending_before=" + ids.New(ids.Customer)} {
				var l listJSON
				e.get(other, "/v1/customers"+q).decode(t, http.StatusOK, &l)
				if len(l.Data) != 0 {
					t.Errorf("list%s sees %d customers of org A", q, len(l.Data))
				}
			}
		})
	}
	// And org A's customer is untouched.
	var got customerJSON
	e.get(orgA, target).decode(t, http.StatusOK, &got)
	if got.Name != nil || got.Metadata["k"] != "v" {
		t.Errorf("org A's customer was changed by another tenant: %+v", got)
	}
}

func TestIdentityRequired(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cases := []struct {
		name string
		sign func(r *http.Request)
	}{
		{"unsigned", func(*http.Request) {}},
		{"stale", func(r *http.Request) { staleSigner().Apply(r, withRID(orgA)) }},
		{"tampered org", func(r *http.Request) {
			identity.NewSigner(testSecret, nil).Apply(r, withRID(orgA))
			r.Header.Set(identity.HeaderOrg, "org_B")
		}},
		{"tampered scopes", func(r *http.Request) {
			ro := orgA
			ro.Scopes = []string{"customers:read"}
			identity.NewSigner(testSecret, nil).Apply(r, withRID(ro))
			r.Header.Set(identity.HeaderScopes, "*")
		}},
		{"other secret", func(r *http.Request) { identity.NewSigner([]byte("not-the-secret"), nil).Apply(r, withRID(orgA)) }},
		{"garbage signature", func(r *http.Request) {
			identity.NewSigner(testSecret, nil).Apply(r, withRID(orgA))
			r.Header.Set(identity.HeaderSignature, "nonsense")
		}},
		// Headers signed for one request, replayed onto another.
		{"signed for another method", func(r *http.Request) {
			identity.NewSigner(testSecret, nil).Sign(r.Header, http.MethodHead, r.URL.RequestURI(), withRID(orgA))
		}},
		{"signed for another target", func(r *http.Request) {
			identity.NewSigner(testSecret, nil).Sign(r.Header, r.Method, r.URL.RequestURI()+"?limit=1", withRID(orgA))
		}},
	}
	for _, tc := range cases {
		for _, route := range []struct{ method, target string }{
			{http.MethodGet, "/v1/customers"},
			{http.MethodPost, "/v1/customers"},
			{http.MethodGet, "/v1/customers/" + ids.New(ids.Customer)},
			{http.MethodGet, "/v1/nothing-here"},
		} {
			t.Run(tc.name+" "+route.method+" "+route.target, func(t *testing.T) {
				r, _ := http.NewRequest(route.method, route.target, nil)
				tc.sign(r)
				e.serve(r, r.Header.Get("Request-Id")).
					assertError(t, wantError{401, "authentication_error", "identity_invalid", ""})
			})
		}
	}
}

// A request that bypassed the gateway cannot put what it likes into the
// response's Request-Id, its error object or the access log.
func TestImplausibleRequestIDIsNotEchoed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, bad := range []string{"evil id <b>", strings.Repeat("x", 5000), "req_1\r\nX-Injected: 1"} {
		r, _ := http.NewRequest(http.MethodGet, "/v1/customers", nil)
		r.Header["Request-Id"] = []string{bad}
		res := e.serve(r, "")
		if got := res.header.Get("Request-Id"); !strings.HasPrefix(got, "req_") || len(got) > 64 {
			t.Errorf("Request-Id = %.80q for %.40q", got, bad)
		}
		if strings.Contains(string(res.raw), "evil") || strings.Contains(string(res.raw), "xxxx") {
			t.Errorf("the error object carries the client's id: %.200s", res.raw)
		}
	}
}

func withRID(id identity.Identity) identity.Identity {
	id.RequestID = ids.New(ids.Request)
	return id
}

func TestScopes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cus := e.mustCreate(orgA, `{}`)
	restricted := func(scopes ...string) identity.Identity {
		id := orgA
		id.Scopes = scopes
		return id
	}
	readOnly := restricted("customers:read")
	writeOnly := restricted("customers:write")
	otherScope := restricted("events:read")
	none := restricted()

	routes := []struct {
		method, target, body, scope string
	}{
		{http.MethodGet, "/v1/customers", "", "customers:read"},
		{http.MethodGet, "/v1/customers/" + cus.ID, "", "customers:read"},
		{http.MethodPost, "/v1/customers", "{}", "customers:write"},
		{http.MethodPost, "/v1/customers/" + cus.ID, "{}", "customers:write"},
		{http.MethodDelete, "/v1/customers/" + cus.ID, "", "customers:write"},
	}
	for _, rt := range routes {
		for name, id := range map[string]identity.Identity{"read only": readOnly, "write only": writeOnly, "other scope": otherScope, "no scopes": none} {
			allowed := id.HasScope(rt.scope)
			t.Run(fmt.Sprintf("%s %s %s", name, rt.method, rt.target), func(t *testing.T) {
				if allowed {
					// Only exercise harmless allowed calls; delete is checked last.
					if rt.method == http.MethodDelete {
						return
					}
					res := e.do(request{id: &id, method: rt.method, target: rt.target, contentType: "application/json", body: rt.body})
					if res.status != http.StatusOK {
						t.Fatalf("status %d: %s", res.status, res.raw)
					}
					return
				}
				res := e.do(request{id: &id, method: rt.method, target: rt.target, contentType: "application/json", body: rt.body})
				got := res.assertError(t, wantError{403, "permission_error", "scope_missing", ""})
				if !strings.Contains(got["message"], rt.scope) {
					t.Errorf("message %q does not name %s", got["message"], rt.scope)
				}
			})
		}
	}
	e.delete(writeOnly, "/v1/customers/"+cus.ID).decode(t, http.StatusOK, &map[string]any{})
}

func TestAPIVersions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	old := orgA
	old.APIVersion = "2026-06-01"

	// The old version speaks full_name, in requests and responses.
	res := e.postJSON(old, "/v1/customers", `{"full_name":"Grace Hopper"}`)
	if res.status != http.StatusOK {
		t.Fatalf("create with full_name: %d %s", res.status, res.raw)
	}
	if v := res.header.Get("Api-Version"); v != "2026-06-01" {
		t.Errorf("Api-Version = %q, want 2026-06-01", v)
	}
	f := res.fields(t)
	if f["full_name"] != "Grace Hopper" {
		t.Errorf("old version response full_name = %v", f["full_name"])
	}
	if _, ok := f["name"]; ok {
		t.Error("old version response has name")
	}
	id := f["id"].(string)

	// The same customer in the new version says name.
	res = e.get(orgA, "/v1/customers/"+id)
	f = res.fields(t)
	if f["name"] != "Grace Hopper" || res.header.Get("Api-Version") != "2026-11-01" {
		t.Errorf("new version: name = %v, Api-Version = %q", f["name"], res.header.Get("Api-Version"))
	}
	if _, ok := f["full_name"]; ok {
		t.Error("new version response has full_name")
	}

	// Each version refuses the other's name, JSON and form alike.
	cases := []struct {
		name    string
		id      identity.Identity
		form    bool
		body    string
		param   string
		allowed bool
	}{
		{"old json name", old, false, `{"name":"x"}`, "name", false},
		{"old form name", old, true, "name=x", "name", false},
		{"new json full_name", orgA, false, `{"full_name":"x"}`, "full_name", false},
		{"new form full_name", orgA, true, "full_name=x", "full_name", false},
		{"old form full_name", old, true, "full_name=Grace+B.+Hopper", "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var res response
			if tc.form {
				res = e.postForm(tc.id, "/v1/customers/"+id, tc.body)
			} else {
				res = e.postJSON(tc.id, "/v1/customers/"+id, tc.body)
			}
			if tc.allowed {
				if res.status != http.StatusOK || res.fields(t)["full_name"] != "Grace B. Hopper" {
					t.Errorf("status %d: %s", res.status, res.raw)
				}
				return
			}
			res.assertError(t, wantError{400, "invalid_request_error", "parameter_unknown", tc.param})
		})
	}

	// Lists render in the caller's version too.
	var l struct{ Data []map[string]any }
	e.get(old, "/v1/customers").decode(t, http.StatusOK, &l)
	if len(l.Data) != 1 || l.Data[0]["full_name"] == nil || l.Data[0]["name"] != nil {
		t.Errorf("old version list item = %v", l.Data)
	}

	// A version this service does not know is refused, not guessed.
	future := orgA
	future.APIVersion = "2099-01-01"
	e.get(future, "/v1/customers").assertError(t, wantError{400, "invalid_request_error", "api_version_invalid", ""})
}

func TestRoutesAndHealth(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	res := e.do(request{method: http.MethodGet, target: "/healthz"})
	if res.status != http.StatusOK || !maps.Equal(res.fields(t), map[string]any{"status": "ok"}) {
		t.Errorf("healthz = %d %s", res.status, res.raw)
	}

	cus := "/v1/customers/" + ids.New(ids.Customer)
	cases := []struct {
		name   string
		signed bool
		method string
		target string
		want   wantError
		allow  string
	}{
		{"unknown v1 route", true, http.MethodGet, "/v1/invoices", wantError{404, "invalid_request_error", "route_missing", ""}, ""},
		{"unknown nested route", true, http.MethodGet, cus + "/sources", wantError{404, "invalid_request_error", "route_missing", ""}, ""},
		{"unknown top-level route", false, http.MethodGet, "/nope", wantError{404, "invalid_request_error", "route_missing", ""}, ""},
		{"put on the collection", true, http.MethodPut, "/v1/customers", wantError{405, "invalid_request_error", "method_not_allowed", ""}, "GET, HEAD, POST"},
		{"patch on a customer", true, http.MethodPatch, cus, wantError{405, "invalid_request_error", "method_not_allowed", ""}, "DELETE, GET, HEAD, POST"},
		{"post to healthz", false, http.MethodPost, "/healthz", wantError{405, "invalid_request_error", "method_not_allowed", ""}, "GET, HEAD"},
		{"malformed customer id", true, http.MethodGet, "/v1/customers/cus_nope", wantError{404, "invalid_request_error", "resource_missing", "id"}, ""},
		{"valid but missing id", true, http.MethodGet, cus, wantError{404, "invalid_request_error", "resource_missing", "id"}, ""},
		{"update missing id", true, http.MethodPost, cus, wantError{404, "invalid_request_error", "resource_missing", "id"}, ""},
		{"delete malformed id", true, http.MethodDelete, "/v1/customers/evt_123", wantError{404, "invalid_request_error", "resource_missing", "id"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := request{method: tc.method, target: tc.target}
			if tc.signed {
				req.id = &orgA
			}
			res := e.do(req)
			res.assertError(t, tc.want)
			if got := res.header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow = %q, want %q", got, tc.allow)
			}
		})
	}
}
