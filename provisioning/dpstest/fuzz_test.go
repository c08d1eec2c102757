package dpstest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

func FuzzRegisterBody(f *testing.F) {
	for _, s := range []string{
		`{"registrationId":"dev-1"}`,
		`{"registrationId":"dev-1","payload":{"modelId":"dtmi:x;1"}}`,
		`{"registrationId":"dev-1","payload":null}`,
		`{"registrationId":"dev-1","payload":[1,"2",{"3":4}]}`,
		`{"registrationId":"dev-1","tpm":{"endorsementKey":"AA=="}}`,
		`{"registrationId":7}`, `{"registrationId":null}`, `{}`, `null`, `[]`, ``, ` `,
		`{"registrationId":"a"} {}`, `{"registrationId":"\u00e9\ud800"}`, `{"registrationId":"a","registrationId":"b"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := decodeRegisterBody(data)
		if err != nil {
			if b.RegistrationID != "" || b.Payload != nil {
				t.Fatalf("error %v returned with a partial result", err)
			}
			return
		}
		if b.Payload != nil && !json.Valid(b.Payload) {
			t.Fatalf("payload %q is not valid JSON", b.Payload)
		}
		// Round trip: the decoded body re-encodes to an equivalent body.
		id, err := json.Marshal(b.RegistrationID)
		if err != nil {
			t.Fatal(err)
		}
		re := []byte(`{"registrationId":` + string(id))
		if b.Payload != nil {
			re = append(append(re, `,"payload":`...), b.Payload...)
		}
		re = append(re, '}')
		b2, err := decodeRegisterBody(re)
		if err != nil {
			t.Fatalf("re-encoded body %s rejected: %v", re, err)
		}
		if b2.RegistrationID != b.RegistrationID && strings.ToValidUTF8(b.RegistrationID, "\uFFFD") == b.RegistrationID {
			t.Fatalf("registrationId %q became %q", b.RegistrationID, b2.RegistrationID)
		}
		if !bytes.Equal(b2.Payload, b.Payload) {
			t.Fatalf("payload %s became %s", b.Payload, b2.Payload)
		}
	})
}

func FuzzParseRoute(f *testing.F) {
	for _, s := range []string{
		"/0ne1/registrations/dev/register", "/0ne1/registrations/dev/operations/5.a.b",
		"/0ne1/registrations/dev", "/0ne1/registrations/a%2Fb/register", "/%zz/registrations/x",
		"//registrations//register", "/a/b/c/d/e/f", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		rt, ok := parseRoute(p)
		if !ok {
			return
		}
		if rt.kind < routeRegister || rt.kind > routeStatus || rt.idScope == "" || rt.regID == "" {
			t.Fatalf("parseRoute(%q) = %+v", p, rt)
		}
		// Re-escaping the parsed segments gives the same route.
		q := "/" + url.PathEscape(rt.idScope) + "/registrations/" + url.PathEscape(rt.regID)
		switch rt.kind {
		case routeRegister:
			q += "/register"
		case routeOperation:
			q += "/operations/" + url.PathEscape(rt.operationID)
		}
		if rt2, ok := parseRoute(q); !ok || rt2 != rt {
			t.Fatalf("parseRoute(%q) = %+v; re-escaped %q = %+v, %v", p, rt, q, rt2, ok)
		}
	})
}

func FuzzDecodeState(f *testing.F) {
	f.Add([]byte(`{"version":1,"records":{},"events":[]}`))
	f.Add([]byte(`{"version":1,"records":{"a":{"registrationId":"a","assignments":1,"operation":{"id":"5.x.y","state":{"registrationId":"a","status":"assigned"}}}},"events":[{"registrationId":"a","at":"2023-11-14T21:13:20Z","status":"assigned"}]}`))
	f.Add([]byte(`{"version":1,"records":{"a":null}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := decodeState(data)
		if err != nil {
			return
		}
		re, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeState(re); err != nil {
			t.Fatalf("re-encoded state rejected: %v\n%s", err, re)
		}
	})
}

// FuzzDeviceRequest drives arbitrary requests through the whole handler: it
// must never panic and must always answer JSON with a sensible status.
func FuzzDeviceRequest(f *testing.F) {
	f.Add("PUT", "/0ne00000000/registrations/dev-individual/register", "api-version=2021-06-01", "SharedAccessSignature sr=x&sig=y&se=1", `{"registrationId":"dev-individual"}`)
	f.Add("GET", "/0ne00000000/registrations/dev/operations/5.a.b", "api-version=2019-03-31", vecToken, "")
	f.Add("POST", "/0ne00000000/registrations/"+vecRegID, "api-version=2021-10-01", vecToken, regBody(vecRegID))
	f.Add("PUT", "/0ne00000000/registrations/"+vecRegID+"/register", "api-version=2021-10-01", vecToken, `{"registrationId":"`+vecRegID+`","payload":{"a":[1]}}`)
	f.Add("PUT", "/x/registrations/y/register", "api-version=%zz", "SharedAccessSignature sr=0ne00000000%2Fregistrations%2Fy&sig=%zz&se=99999999999999999999", "{")
	clk := clockwork.NewFakeClockAt(t0)
	s, err := New(Options{
		IDScope: testScope, AssignedHub: testHub, Now: clk.Now,
		Enrollments: []Enrollment{{RegistrationID: indRegID, Key: indKey}},
		Groups:      []Group{{ID: "default", Key: groupKey}},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, method, path, query, auth, body string) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		r := httptest.NewRequest(http.MethodGet, "/", strings.NewReader(body))
		r.Method = method
		r.URL = &url.URL{Path: path, RawQuery: query}
		if u, err := url.Parse(path); err == nil && u.Path != "" {
			r.URL.RawPath = u.RawPath
		}
		r.Header.Set("Authorization", auth)
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		clk.Advance(3 * time.Second) // keep the rate limiter from answering everything
		if w.Code < 200 || w.Code > 599 {
			t.Fatalf("status %d", w.Code)
		}
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("reply is not JSON: %q", w.Body)
		}
		if w.Code >= 400 && w.Header().Get("x-ms-error-code") != strconv.Itoa(w.Code*1000+errorDetail(t, w)) {
			t.Fatalf("x-ms-error-code %q does not match status %d", w.Header().Get("x-ms-error-code"), w.Code)
		}
	})
}

// errorDetail returns errorCode mod 1000 of an error reply, checking that
// errorCode/1000 is the HTTP status.
func errorDetail(t *testing.T, w *httptest.ResponseRecorder) int {
	var eb errorBody
	if err := json.Unmarshal(w.Body.Bytes(), &eb); err != nil {
		t.Fatal(err)
	}
	if eb.ErrorCode/1000 != w.Code {
		t.Fatalf("errorCode %d for status %d", eb.ErrorCode, w.Code)
	}
	return eb.ErrorCode % 1000
}
