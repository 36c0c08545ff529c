package router

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/ids"
)

var spec = ListSpec{IDPrefix: ids.Event, Object: "an event", Created: true}

func TestParseListCreatedWindow(t *testing.T) {
	sec := func(n int64) *time.Time { t := time.Unix(n, 0); return &t }
	for _, tc := range []struct {
		query   string
		gte, lt *time.Time
	}{
		{"", nil, nil},
		{"created=100", sec(100), sec(101)},
		{"created[gte]=100", sec(100), nil},
		{"created[gt]=100", sec(101), nil},
		{"created[lt]=100", nil, sec(100)},
		{"created[lte]=100", nil, sec(101)},
		// Several bounds narrow the window, in any order.
		{"created[gte]=100&created[gt]=150&created[lte]=300&created[lt]=200", sec(151), sec(200)},
		{"created=250&created[gte]=100", sec(250), sec(251)},
	} {
		vals, _ := url.ParseQuery(tc.query)
		q, err := ParseList(vals, spec, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.query, err)
		}
		if !sameTime(q.CreatedGTE, tc.gte) || !sameTime(q.CreatedLT, tc.lt) {
			t.Errorf("%s: [%v, %v), want [%v, %v)", tc.query, q.CreatedGTE, q.CreatedLT, tc.gte, tc.lt)
		}
	}
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

func TestParseListPaging(t *testing.T) {
	evt := ids.New(ids.Event)
	q, err := ParseList(url.Values{"limit": {"25"}, "starting_after": {evt}}, spec, nil)
	if err != nil || q.Limit != 25 || q.StartingAfter != evt || q.EndingBefore != "" {
		t.Fatalf("%+v %v", q, err)
	}
	q, err = ParseList(url.Values{}, spec, nil)
	if err != nil || q.Limit != DefaultListLimit {
		t.Fatalf("default limit: %+v %v", q, err)
	}
}

func TestParseListFilter(t *testing.T) {
	var got string
	filter := func(key, v string) (bool, error) {
		if key != "type" {
			return false, nil
		}
		got = v
		return true, nil
	}
	vals, _ := url.ParseQuery("type=customer.created")
	if _, err := ParseList(vals, spec, filter); err != nil || got != "customer.created" {
		t.Fatalf("filter saw %q, err %v", got, err)
	}
}

func TestParseListRefuses(t *testing.T) {
	noCreated := ListSpec{IDPrefix: ids.WebhookEndpoint, Object: "a webhook endpoint"}
	evt, we := ids.New(ids.Event), ids.New(ids.WebhookEndpoint)
	for _, tc := range []struct {
		query      string
		spec       ListSpec
		code       string
		param, msg string
	}{
		{"limit=0", spec, "parameter_invalid", "limit", "from 1 to 100"},
		{"limit=101", spec, "parameter_invalid", "limit", "from 1 to 100"},
		{"limit=ten", spec, "parameter_invalid", "limit", "from 1 to 100"},
		{"limit=1&limit=2", spec, "parameter_invalid", "limit", "sent more than once"},
		{"starting_after=" + we, spec, "parameter_invalid", "starting_after", "expected an event id (evt_…)"},
		{"ending_before=evt_", spec, "parameter_invalid", "ending_before", "expected an event id"},
		{"starting_after=" + evt + "&ending_before=" + evt, spec, "parameter_invalid", "ending_before", "not both"},
		{"created[gte]=yesterday", spec, "parameter_invalid", "created[gte]", "unix timestamp"},
		{"created=-1", spec, "parameter_invalid", "created", "unix timestamp"},
		{"created[gt]=99999999999999", spec, "parameter_invalid", "created[gt]", "unix timestamp"},
		{"created[gte]=100", noCreated, "parameter_unknown", "created[gte]", "unknown parameter"},
		{"colour=red", spec, "parameter_unknown", "colour", "unknown parameter: colour"},
		{"starting_after=" + we, noCreated, "", "", ""},
	} {
		vals, _ := url.ParseQuery(tc.query)
		_, err := ParseList(vals, tc.spec, nil)
		if tc.code == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.query, err)
			}
			continue
		}
		e := apierror.From(err)
		if e.Status != 400 || e.Code != tc.code || e.Param != tc.param || !strings.Contains(e.Message, tc.msg) {
			t.Errorf("%s: %d %s param %q %q; want 400 %s param %q containing %q", tc.query, e.Status, e.Code, e.Param, e.Message, tc.code, tc.param, tc.msg)
		}
	}
}
