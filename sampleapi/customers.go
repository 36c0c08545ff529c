package sampleapi

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/ids"
)

func (s *Server) createCustomer(w http.ResponseWriter, r *http.Request, c caller) error {
	if err := noQuery(r); err != nil {
		return err
	}
	p, err := readCustomerParams(w, r, c)
	if err != nil {
		return err
	}
	// One clock reading for the id and created, so that the id's time prefix
	// and the created field agree.
	now := s.now()
	cus := customer{ID: ids.NewAt(ids.Customer, now), Livemode: c.Livemode, CreatedAt: now}
	if err := p.apply(&cus); err != nil {
		return err
	}
	if err := s.store.insert(r.Context(), c.OrgID, cus); err != nil {
		return fmt.Errorf("creating customer: %w", err)
	}
	writeJSON(w, http.StatusOK, render(cus, c))
	return nil
}

func (s *Server) getCustomer(w http.ResponseWriter, r *http.Request, c caller) error {
	if err := noQuery(r); err != nil {
		return err
	}
	id := r.PathValue("id")
	// A malformed id cannot exist; answer without a database round trip.
	if !ids.Valid(id, ids.Customer) {
		return errNotFound
	}
	cus, err := s.store.get(r.Context(), c.OrgID, c.Livemode, id)
	if err != nil {
		return fmt.Errorf("getting customer: %w", err)
	}
	writeJSON(w, http.StatusOK, render(cus, c))
	return nil
}

func (s *Server) updateCustomer(w http.ResponseWriter, r *http.Request, c caller) error {
	if err := noQuery(r); err != nil {
		return err
	}
	id := r.PathValue("id")
	p, err := readCustomerParams(w, r, c)
	if err != nil {
		return err
	}
	if !ids.Valid(id, ids.Customer) {
		return errNotFound
	}
	cus, err := s.store.update(r.Context(), c.OrgID, c.Livemode, id, p.apply)
	if err != nil {
		return fmt.Errorf("updating customer: %w", err)
	}
	writeJSON(w, http.StatusOK, render(cus, c))
	return nil
}

func (s *Server) deleteCustomer(w http.ResponseWriter, r *http.Request, c caller) error {
	if err := noQuery(r); err != nil {
		return err
	}
	if err := noBody(w, r, c.nameField); err != nil {
		return err
	}
	id := r.PathValue("id")
	if !ids.Valid(id, ids.Customer) {
		return errNotFound
	}
	if err := s.store.delete(r.Context(), c.OrgID, c.Livemode, id); err != nil {
		return fmt.Errorf("deleting customer: %w", err)
	}
	writeJSON(w, http.StatusOK, deletedCustomer{ID: id, Object: "customer", Deleted: true})
	return nil
}

// List limits of DESIGN §5.
const (
	defaultListLimit = 10
	maxListLimit     = 100
)

func (s *Server) listCustomers(w http.ResponseWriter, r *http.Request, c caller) error {
	q, err := parseListQuery(r.URL.Query())
	if err != nil {
		return err
	}
	page, hasMore, err := s.store.list(r.Context(), c.OrgID, c.Livemode, q)
	if err != nil {
		return fmt.Errorf("listing customers: %w", err)
	}
	data := make([]any, len(page))
	for i, cus := range page {
		data[i] = render(cus, c)
	}
	writeJSON(w, http.StatusOK, list{Object: "list", URL: "/v1/customers", HasMore: hasMore, Data: data})
	return nil
}

func parseListQuery(v url.Values) (listQuery, error) {
	q := listQuery{Limit: defaultListLimit}
	for _, key := range slices.Sorted(maps.Keys(v)) {
		if len(v[key]) > 1 {
			return q, apierror.ParameterInvalid(key, fmt.Sprintf("Parameter %s was sent more than once.", printable(key)))
		}
		val := v[key][0]
		switch key {
		case "limit":
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 || n > maxListLimit {
				return q, apierror.ParameterInvalid("limit",
					fmt.Sprintf("Invalid limit: must be an integer from 1 to %d.", maxListLimit))
			}
			q.Limit = n
		case "starting_after", "ending_before":
			// Ids sort by creation time, so any well-formed id is a position;
			// it need not exist (it may have been deleted since).
			if !ids.Valid(val, ids.Customer) {
				return q, apierror.ParameterInvalid(key, fmt.Sprintf("Invalid %s: expected a customer id (cus_…).", key))
			}
			if key == "starting_after" {
				q.StartingAfter = &val
			} else {
				q.EndingBefore = &val
			}
		case "email":
			if err := validateText("email", val, maxEmailLen); err != nil {
				return q, err
			}
			q.Email = &val
		default:
			return q, apierror.InvalidRequest("parameter_unknown", printable(key),
				fmt.Sprintf("Received unknown parameter: %s.", printable(key)))
		}
	}
	if q.StartingAfter != nil && q.EndingBefore != nil {
		return q, apierror.ParameterInvalid("ending_before",
			"Pass starting_after or ending_before, not both: they page in opposite directions.")
	}
	return q, nil
}

// noQuery refuses query parameters on endpoints that take none (POST
// parameters belong in the body), so a misplaced one is not silently ignored.
func noQuery(r *http.Request) error {
	for key := range r.URL.Query() {
		return apierror.InvalidRequest("parameter_unknown", printable(key),
			fmt.Sprintf("Received unknown parameter: %s.", printable(key)))
	}
	return nil
}

// customerV20261101 is the customer object since API version 2026-11-01.
type customerV20261101 struct {
	ID          string            `json:"id"`
	Object      string            `json:"object"`
	Created     int64             `json:"created"`
	Livemode    bool              `json:"livemode"`
	Email       *string           `json:"email"`
	Name        *string           `json:"name"`
	Description *string           `json:"description"`
	Phone       *string           `json:"phone"`
	Metadata    map[string]string `json:"metadata"`
}

// customerV20260601 is the customer object before 2026-11-01, when the
// display name was called full_name.
type customerV20260601 struct {
	ID          string            `json:"id"`
	Object      string            `json:"object"`
	Created     int64             `json:"created"`
	Livemode    bool              `json:"livemode"`
	Email       *string           `json:"email"`
	FullName    *string           `json:"full_name"`
	Description *string           `json:"description"`
	Phone       *string           `json:"phone"`
	Metadata    map[string]string `json:"metadata"`
}

// render is the customer object in the caller's API version.
func render(cus customer, c caller) any {
	v := customerV20261101{
		ID: cus.ID, Object: "customer", Created: cus.CreatedAt.Unix(), Livemode: cus.Livemode,
		Email: cus.Email, Name: cus.Name, Description: cus.Description, Phone: cus.Phone,
		Metadata: nonNil(cus.Metadata),
	}
	if c.nameField == "full_name" {
		return customerV20260601{
			ID: v.ID, Object: v.Object, Created: v.Created, Livemode: v.Livemode,
			Email: v.Email, FullName: v.Name, Description: v.Description, Phone: v.Phone, Metadata: v.Metadata,
		}
	}
	return v
}

type deletedCustomer struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Deleted bool   `json:"deleted"`
}

type list struct {
	Object  string `json:"object"`
	URL     string `json:"url"`
	HasMore bool   `json:"has_more"`
	Data    []any  `json:"data"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own types reach here; failing to encode them is a bug.
		apierror.Write(w, fmt.Errorf("encoding response: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
