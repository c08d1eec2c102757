package dpstest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/testlog"

	"github.com/jonboulle/clockwork"

	"github.com/fieldgate/fieldgate/sas"
)

func TestRegisterAssigns(t *testing.T) {
	tests := []struct {
		name       string
		regID      string
		auth       func(e *env) string
		body       string
		wantDevice string
		wantKey    string
		wantGroup  string
		wantEcho   string
	}{
		{
			name:       "individual enrollment with device id and payload",
			regID:      indRegID,
			auth:       func(e *env) string { return e.token(t, indRegID, indKey, time.Hour) },
			body:       `{"registrationId":"` + indRegID + `","payload":{"modelId":"dtmi:fieldgate:gw;1","n":[1, 2]}}`,
			wantDevice: indDeviceID,
			wantKey:    indKey,
			wantEcho:   `{"modelId":"dtmi:fieldgate:gw;1","n":[1,2]}`,
		},
		{
			name:       "group enrollment with the published derivation and token vectors",
			regID:      vecRegID,
			auth:       func(*env) string { return vecToken },
			body:       regBody(vecRegID),
			wantDevice: vecRegID,
			wantKey:    vecDerived,
			wantGroup:  "default",
		},
		{
			name:  "group enrollment without skn and with an upper-case id scope in sr",
			regID: "gw-42",
			auth: func(e *env) string {
				k, _ := sas.ParseKey(vecDerivedFor(t, "gw-42"))
				tok, err := sas.New(strings.ToUpper(testScope)+"/registrations/gw-42", "", e.clk.Now().Add(time.Hour).Unix(), k)
				if err != nil {
					t.Fatal(err)
				}
				return tok.String()
			},
			body:       regBody("gw-42"),
			wantDevice: "gw-42",
			wantKey:    vecDerivedFor(t, "gw-42"),
			wantGroup:  "default",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			auth := tc.auth(e)
			opID := e.register(t, tc.regID, auth, tc.body)
			if got := e.reg.upserts(); len(got) != 1 || got[0] != [2]string{tc.wantDevice, tc.wantKey} {
				t.Fatalf("registry upserts = %v; want one upsert of %s with the device key", redactCalls(got), tc.wantDevice)
			}
			e.clk.Advance(2 * time.Second)
			op := e.poll(t, tc.regID, opID, auth, http.StatusOK)
			rs := op.RegistrationState
			if op.Status != StatusAssigned || op.OperationID != opID || rs == nil {
				t.Fatalf("poll = %+v; want assigned with registrationState", op)
			}
			if rs.RegistrationID != tc.regID || rs.DeviceID != tc.wantDevice || rs.AssignedHub != testHub ||
				rs.Status != StatusAssigned || rs.Substatus != SubstatusInitialAssignment || rs.ETag == "" {
				t.Fatalf("registrationState = %+v", rs)
			}
			if rs.CreatedDateTimeUTC != "2023-11-14T21:13:20.0000000Z" || rs.LastUpdatedDateTimeUTC != rs.CreatedDateTimeUTC {
				t.Fatalf("times = %s / %s; want both the register time 2023-11-14T21:13:20.0000000Z",
					rs.CreatedDateTimeUTC, rs.LastUpdatedDateTimeUTC)
			}
			if string(rs.Payload) != tc.wantEcho {
				t.Fatalf("payload echo = %s; want %s", rs.Payload, tc.wantEcho)
			}
			gotGroup := ""
			if rs.SymmetricKey != nil {
				gotGroup = rs.SymmetricKey.EnrollmentGroupID
			}
			if gotGroup != tc.wantGroup {
				t.Fatalf("symmetricKey.enrollmentGroupId = %q; want %q", gotGroup, tc.wantGroup)
			}
			regs := e.s.Registrations()
			want := Registration{RegistrationID: tc.regID, At: t0, Status: StatusAssigned, DeviceID: tc.wantDevice,
				AssignedHub: testHub, Substatus: SubstatusInitialAssignment, EnrollmentGroupID: tc.wantGroup}
			if len(regs) != 1 || !regs[0].At.Equal(want.At) || fmt.Sprint(stripAt(regs[0])) != fmt.Sprint(stripAt(want)) {
				t.Fatalf("Registrations() = %+v; want [%+v]", regs, want)
			}
			if e.s.Requests() != 2 {
				t.Fatalf("Requests() = %d; want 2", e.s.Requests())
			}
		})
	}
}

func vecDerivedFor(t *testing.T, regID string) string {
	t.Helper()
	k, err := sas.DeriveDeviceKey(groupKey, regID)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func stripAt(r Registration) Registration { r.At = time.Time{}; return r }

func redactCalls(c [][2]string) []string {
	var out []string
	for _, x := range c {
		out = append(out, x[0]+"/<key>")
	}
	return out
}

func TestDerivationVector(t *testing.T) {
	// Guards the test vectors the other tests rely on.
	if got := vecDerivedFor(t, vecRegID); got != vecDerived {
		t.Fatalf("DeriveDeviceKey(vector) = %s; want %s", got, vecDerived)
	}
}

func TestReregistrationChangesSubstatus(t *testing.T) {
	e := newEnv(t, nil)
	auth := e.token(t, indRegID, indKey, time.Hour)
	first := e.poll(t, indRegID, e.register(t, indRegID, auth, regBody(indRegID)), auth, http.StatusOK)
	e.clk.Advance(time.Minute)
	second := e.poll(t, indRegID, e.register(t, indRegID, auth, regBody(indRegID)), auth, http.StatusOK)
	e.clk.Advance(time.Minute)
	third := e.poll(t, indRegID, e.register(t, indRegID, auth, regBody(indRegID)), auth, http.StatusOK)
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"first substatus", first.RegistrationState.Substatus, SubstatusInitialAssignment},
		{"second substatus", second.RegistrationState.Substatus, SubstatusReprovisionedToInitialAssignment},
		{"third substatus", third.RegistrationState.Substatus, SubstatusReprovisionedToInitialAssignment},
		{"created is kept", second.RegistrationState.CreatedDateTimeUTC, first.RegistrationState.CreatedDateTimeUTC},
		{"last updated moves", second.RegistrationState.LastUpdatedDateTimeUTC, "2023-11-14T21:14:20.0000000Z"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Fatalf("got %q; want %q", tc.got, tc.want)
			}
		})
	}
	if first.RegistrationState.ETag == second.RegistrationState.ETag {
		t.Fatal("etag did not change on re-registration")
	}
	if n := len(e.reg.upserts()); n != 3 {
		t.Fatalf("registry upserts = %d; want 3", n)
	}
	var subs []string
	for _, r := range e.s.Registrations() {
		subs = append(subs, r.Substatus)
	}
	if want := "[initialAssignment reprovisionedToInitialAssignment reprovisionedToInitialAssignment]"; fmt.Sprint(subs) != want {
		t.Fatalf("substatus history = %v; want %s", subs, want)
	}
}

func TestAuthenticationFailures(t *testing.T) {
	tests := []struct {
		name     string
		regID    string
		auth     func(e *env) string
		wantMsg  string
		wantCode int // 0 → 401002
	}{
		{name: "missing header", regID: indRegID, auth: func(*env) string { return "" }, wantMsg: "missing"},
		{name: "not a SAS token", regID: indRegID, auth: func(*env) string { return "Bearer abc" }, wantMsg: "Authorization header"},
		{name: "bad signature individual", regID: indRegID,
			auth: func(e *env) string { return e.token(t, indRegID, otherKey, time.Hour) }, wantMsg: "signature does not match"},
		{name: "group key used directly instead of derived", regID: "gw-1",
			auth: func(e *env) string { return e.token(t, "gw-1", groupKey, time.Hour) }, wantMsg: "signature matches no enrollment"},
		{name: "expired", regID: indRegID,
			auth: func(e *env) string { return e.token(t, indRegID, indKey, -time.Second) }, wantMsg: "expired"},
		{name: "expired group token", regID: "gw-1",
			auth: func(e *env) string { return e.token(t, "gw-1", vecDerivedFor(t, "gw-1"), -time.Minute) }, wantMsg: "expired"},
		{name: "wrong sr other registration", regID: indRegID,
			auth: func(e *env) string { return e.token(t, "dev-other", indKey, time.Hour) }, wantMsg: "token sr"},
		{name: "sr is only the id scope", regID: indRegID, auth: func(e *env) string {
			return signed(t, e, testScope, sas.RegistrationKeyName, indKey)
		}, wantMsg: "token sr"},
		{name: "sr is the registrations collection", regID: indRegID, auth: func(e *env) string {
			return signed(t, e, testScope+"/registrations", sas.RegistrationKeyName, indKey)
		}, wantMsg: "token sr"},
		{name: "sr below the registration", regID: indRegID, auth: func(e *env) string {
			return signed(t, e, testScope+"/registrations/"+indRegID+"/register", sas.RegistrationKeyName, indKey)
		}, wantMsg: "token sr"},
		{name: "sr with another id scope", regID: indRegID, auth: func(e *env) string {
			return signed(t, e, "0ne99999999/registrations/"+indRegID, sas.RegistrationKeyName, indKey)
		}, wantMsg: "token sr"},
		{name: "wrong skn", regID: indRegID, auth: func(e *env) string {
			return signed(t, e, testScope+"/registrations/"+indRegID, "iothubowner", indKey)
		}, wantMsg: "skn"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			auth := tc.auth(e)
			w := e.do(t, http.MethodPut, registerPath(tc.regID), auth, regBody(tc.regID))
			msg := wantError(t, w, http.StatusUnauthorized, 401002)
			if !strings.Contains(msg, tc.wantMsg) {
				t.Fatalf("message %q does not mention %q", msg, tc.wantMsg)
			}
			if tok, err := sas.Parse(auth); err == nil {
				sig := tok.Signature
				if strings.Contains(w.Body.String(), sig) || strings.Contains(e.logs.String(), sig) {
					t.Fatal("the token signature leaked into the reply or the log")
				}
			}
			if n := len(e.reg.upserts()); n != 0 {
				t.Fatalf("registry upserts = %d; want 0", n)
			}
			if len(e.s.Registrations()) != 0 {
				t.Fatal("a refused request was recorded as a registration")
			}
		})
	}
}

func signed(t *testing.T, e *env, resource, skn, key string) string {
	t.Helper()
	k, err := sas.ParseKey(key)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := sas.New(resource, skn, e.clk.Now().Add(time.Hour).Unix(), k)
	if err != nil {
		t.Fatal(err)
	}
	return tok.String()
}

func TestTokenExpiryUsesEmulatorClock(t *testing.T) {
	e := newEnv(t, nil)
	auth := e.token(t, indRegID, indKey, 10*time.Second)
	e.clk.Advance(10 * time.Second) // now == se: still valid
	opID := e.register(t, indRegID, auth, regBody(indRegID))
	e.clk.Advance(time.Second) // now == se+1: expired
	wantError(t, e.do(t, http.MethodGet, operationPath(indRegID, opID), auth, ""), http.StatusUnauthorized, 401002)
}

func TestNotFound(t *testing.T) {
	tests := []struct {
		name     string
		noGroups bool
		method   string
		path     string
		regID    string
		body     string
		wantCode int
	}{
		{name: "unknown registration without any group", noGroups: true, method: http.MethodPut,
			path: registerPath("dev-unknown"), regID: "dev-unknown", body: regBody("dev-unknown"), wantCode: 404201},
		{name: "unknown operation id", method: http.MethodGet,
			path: operationPath(indRegID, "5.0000000000000000.nope"), regID: indRegID, wantCode: 404202},
		{name: "status lookup before any registration", method: http.MethodPost,
			path: statusPath(indRegID), regID: indRegID, body: regBody(indRegID), wantCode: 404202},
		{name: "unknown id scope", method: http.MethodPut,
			path: "/0ne99999999/registrations/" + indRegID + "/register?api-version=2021-06-01", regID: indRegID,
			body: regBody(indRegID), wantCode: 404001},
		{name: "not a device API path", method: http.MethodGet, path: "/devices/x?api-version=2021-06-01", wantCode: 404000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(o *Options) {
				if tc.noGroups {
					o.Groups = nil
				}
			})
			auth := ""
			if tc.regID != "" {
				key := indKey
				if tc.regID != indRegID {
					key = otherKey
				}
				auth = e.token(t, tc.regID, key, time.Hour)
			}
			wantError(t, e.do(t, tc.method, tc.path, auth, tc.body), http.StatusNotFound, tc.wantCode)
		})
	}
}

func TestBadRequests(t *testing.T) {
	big := `{"registrationId":"` + indRegID + `","payload":"` + strings.Repeat("x", MaxBodyBytes) + `"}`
	base := "/" + testScope + "/registrations/" + indRegID + "/register"
	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		ctype      string
		wantStatus int
		wantCode   int
		wantMsg    string
	}{
		{name: "missing api-version", path: base, body: regBody(indRegID), wantStatus: 400, wantCode: 400001, wantMsg: "2019-03-31, 2021-06-01, 2021-10-01"},
		{name: "empty api-version", path: base + "?api-version=", body: regBody(indRegID), wantStatus: 400, wantCode: 400001, wantMsg: "missing"},
		{name: "unknown api-version", path: base + "?api-version=2018-11-01", body: regBody(indRegID), wantStatus: 400, wantCode: 400001, wantMsg: "2021-10-01"},
		{name: "api-version 2019-03-31 accepted", path: base + "?api-version=2019-03-31", body: regBody(indRegID), wantStatus: 202},
		{name: "api-version 2021-10-01 accepted", path: base + "?api-version=2021-10-01", body: regBody(indRegID), wantStatus: 202},
		{name: "empty body", path: registerPath(indRegID), body: "", wantStatus: 400, wantCode: 400004, wantMsg: "empty"},
		{name: "not JSON", path: registerPath(indRegID), body: "registrationId=dev", wantStatus: 400, wantCode: 400004, wantMsg: "not a JSON object"},
		{name: "JSON array", path: registerPath(indRegID), body: `["x"]`, wantStatus: 400, wantCode: 400004, wantMsg: "not a JSON object"},
		{name: "truncated", path: registerPath(indRegID), body: `{"registrationId":"dev-in`, wantStatus: 400, wantCode: 400004, wantMsg: "not a JSON object"},
		{name: "trailing data", path: registerPath(indRegID), body: regBody(indRegID) + `{}`, wantStatus: 400, wantCode: 400004, wantMsg: "after the JSON object"},
		{name: "registrationId missing", path: registerPath(indRegID), body: `{"payload":{}}`, wantStatus: 400, wantCode: 400004, wantMsg: "no registrationId"},
		{name: "registrationId a number", path: registerPath(indRegID), body: `{"registrationId":7}`, wantStatus: 400, wantCode: 400004, wantMsg: "a number"},
		{name: "registrationId null", path: registerPath(indRegID), body: `{"registrationId":null}`, wantStatus: 400, wantCode: 400004, wantMsg: "null"},
		{name: "registrationId mismatch", path: registerPath(indRegID), body: regBody("dev-other"), wantStatus: 400, wantCode: 400004, wantMsg: "does not match"},
		{name: "tpm attestation", path: registerPath(indRegID), body: `{"registrationId":"` + indRegID + `","tpm":{}}`, wantStatus: 400, wantCode: 400004, wantMsg: "TPM"},
		{name: "body over 96 KB", path: registerPath(indRegID), body: big, wantStatus: 413, wantCode: 413001, wantMsg: "larger than"},
		{name: "not JSON content type", path: registerPath(indRegID), body: regBody(indRegID), ctype: "text/plain", wantStatus: 415, wantCode: 415001, wantMsg: "application/json"},
		{name: "invalid registration id", path: registerPath("bad%20id"), body: regBody("bad id"), wantStatus: 400, wantCode: 400004, wantMsg: "invalid"},
		{name: "wrong method", method: http.MethodPost, path: registerPath(indRegID), body: regBody(indRegID), wantStatus: 405, wantCode: 405000, wantMsg: "PUT"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			method := tc.method
			if method == "" {
				method = http.MethodPut
			}
			r := httptest.NewRequest(method, tc.path, strings.NewReader(tc.body))
			r.Header.Set("Authorization", e.token(t, indRegID, indKey, time.Hour))
			if tc.ctype != "" {
				r.Header.Set("Content-Type", tc.ctype)
			}
			w := httptest.NewRecorder()
			e.s.ServeHTTP(w, r)
			if tc.wantStatus == http.StatusAccepted {
				if w.Code != tc.wantStatus {
					t.Fatalf("status = %d %s; want 202", w.Code, w.Body)
				}
				return
			}
			msg := wantError(t, w, tc.wantStatus, tc.wantCode)
			if !strings.Contains(msg, tc.wantMsg) {
				t.Fatalf("message %q does not mention %q", msg, tc.wantMsg)
			}
			if len(e.s.Registrations()) != 0 || len(e.reg.upserts()) != 0 {
				t.Fatal("a refused request registered the device")
			}
		})
	}
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t, nil)
	auth := e.token(t, indRegID, indKey, time.Hour)
	other := e.token(t, vecRegID, vecDerived, time.Hour)
	opID := e.register(t, indRegID, auth, regBody(indRegID)) // request 1 at t0
	for i := 2; i <= RateLimit; i++ {                        // requests 2..5, one per second
		e.clk.Advance(time.Second)
		e.poll(t, indRegID, opID, auth, http.StatusOK)
	}
	e.clk.Advance(time.Second) // t0+5s: the 6th request inside 10 s
	w := e.do(t, http.MethodGet, operationPath(indRegID, opID), auth, "")
	wantError(t, w, http.StatusTooManyRequests, 429001)
	if got := w.Header().Get("Retry-After"); got != "5" {
		t.Fatalf("Retry-After = %q; want 5 (the first request leaves the window at t0+10s)", got)
	}
	// Other registrations are not affected.
	e.register(t, vecRegID, other, regBody(vecRegID))
	// A throttled request does not count: at t0+10s the first request has left
	// the window, so exactly one more is admitted.
	e.clk.Advance(5 * time.Second)
	e.poll(t, indRegID, opID, auth, http.StatusOK)
	wantError(t, e.do(t, http.MethodGet, operationPath(indRegID, opID), auth, ""), http.StatusTooManyRequests, 429001)
	// After a full window everything is admitted again.
	e.clk.Advance(RateWindow)
	for range RateLimit {
		e.poll(t, indRegID, opID, auth, http.StatusOK)
	}
	wantError(t, e.do(t, http.MethodPost, statusPath(indRegID), auth, ""), http.StatusTooManyRequests, 429001)
}

func TestInjectedFaults(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		n         int
		wantRetry string
	}{
		{name: "429 throttling", status: 429, n: 2, wantRetry: "7"},
		{name: "500 internal error", status: 500, n: 1},
		{name: "503 unavailable", status: 503, n: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(o *Options) { o.RetryAfter = 7 })
			auth := e.token(t, indRegID, indKey, time.Hour)
			if err := e.s.InjectFaults(tc.status, tc.n); err != nil {
				t.Fatal(err)
			}
			for range tc.n {
				w := e.do(t, http.MethodPut, registerPath(indRegID), auth, regBody(indRegID))
				wantError(t, w, tc.status, tc.status*1000+1)
				if got := w.Header().Get("Retry-After"); got != tc.wantRetry {
					t.Fatalf("Retry-After = %q; want %q", got, tc.wantRetry)
				}
			}
			e.register(t, indRegID, auth, regBody(indRegID))
			if e.s.Requests() != tc.n+1 {
				t.Fatalf("Requests() = %d; want %d", e.s.Requests(), tc.n+1)
			}
		})
	}
	t.Run("ClearFaults", func(t *testing.T) {
		e := newEnv(t, nil)
		if err := e.s.InjectFaults(503, 10); err != nil {
			t.Fatal(err)
		}
		e.s.ClearFaults()
		e.register(t, indRegID, e.token(t, indRegID, indKey, time.Hour), regBody(indRegID))
	})
	t.Run("invalid status", func(t *testing.T) {
		e := newEnv(t, nil)
		for _, st := range []int{200, 404, 499, 600} {
			if err := e.s.InjectFaults(st, 1); err == nil {
				t.Fatalf("InjectFaults(%d) = nil; want an error", st)
			}
		}
	})
}

func TestTerminalStates(t *testing.T) {
	tests := []struct {
		name       string
		regID      string
		key        string
		setup      func(t *testing.T, e *env)
		wantStatus string
		wantCode   int
		wantMsg    string
	}{
		{name: "disabled individual enrollment", regID: indRegID, key: indKey, wantStatus: StatusDisabled,
			setup: func(t *testing.T, e *env) { mustOK(t, e.s.SetEnrollmentDisabled(indRegID, true)) }},
		{name: "disabled group", regID: vecRegID, key: vecDerived, wantStatus: StatusDisabled,
			setup: func(t *testing.T, e *env) { mustOK(t, e.s.SetGroupDisabled("default", true)) }},
		{name: "FailNext", regID: indRegID, key: indKey, wantStatus: StatusFailed, wantCode: 400208, wantMsg: "FailNext",
			setup: func(_ *testing.T, e *env) { e.s.FailNext(indRegID, 1) }},
		{name: "FailNextWith", regID: vecRegID, key: vecDerived, wantStatus: StatusFailed, wantCode: 400209, wantMsg: "hub says no",
			setup: func(_ *testing.T, e *env) { e.s.FailNextWith(vecRegID, 1, 400209, "hub says no") }},
		{name: "registry refuses the device", regID: indRegID, key: indKey, wantStatus: StatusFailed, wantCode: 500001, wantMsg: "refused",
			setup: func(_ *testing.T, e *env) { e.reg.setErr(errRegistry) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			tc.setup(t, e)
			auth := e.token(t, tc.regID, tc.key, time.Hour)
			op := e.poll(t, tc.regID, e.register(t, tc.regID, auth, regBody(tc.regID)), auth, http.StatusOK)
			rs := op.RegistrationState
			if op.Status != tc.wantStatus || rs == nil || rs.Status != tc.wantStatus {
				t.Fatalf("operation = %+v; want status %s", op, tc.wantStatus)
			}
			if rs.AssignedHub != "" || rs.DeviceID != "" || rs.Substatus != "" {
				t.Fatalf("registrationState %+v assigns a hub in a terminal non-assigned state", rs)
			}
			if rs.ErrorCode != tc.wantCode || !strings.Contains(rs.ErrorMessage, tc.wantMsg) {
				t.Fatalf("errorCode/errorMessage = %d %q; want %d containing %q", rs.ErrorCode, rs.ErrorMessage, tc.wantCode, tc.wantMsg)
			}
			if len(e.reg.upserts()) != 0 {
				t.Fatal("registry upserted a device that was not assigned")
			}
			if regs := e.s.Registrations(); len(regs) != 1 || regs[0].Status != tc.wantStatus || regs[0].ErrorCode != tc.wantCode {
				t.Fatalf("Registrations() = %+v", regs)
			}
			// The condition is cleared: the next registration is assigned
			// with substatus initialAssignment (nothing was assigned before).
			mustOK(t, e.s.SetEnrollmentDisabled(indRegID, false))
			mustOK(t, e.s.SetGroupDisabled("default", false))
			e.reg.setErr(nil)
			next := e.poll(t, tc.regID, e.register(t, tc.regID, auth, regBody(tc.regID)), auth, http.StatusOK)
			if next.Status != StatusAssigned || next.RegistrationState.Substatus != SubstatusInitialAssignment {
				t.Fatalf("next registration = %+v; want assigned, initialAssignment", next.RegistrationState)
			}
		})
	}
}

func mustOK(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestFailNextCounts(t *testing.T) {
	e := newEnv(t, nil)
	auth := e.token(t, indRegID, indKey, time.Hour)
	e.s.FailNext(indRegID, 2)
	var got []string
	for range 3 {
		got = append(got, e.poll(t, indRegID, e.register(t, indRegID, auth, regBody(indRegID)), auth, http.StatusOK).Status)
		e.clk.Advance(RateWindow)
	}
	if fmt.Sprint(got) != "[failed failed assigned]" {
		t.Fatalf("statuses = %v; want [failed failed assigned]", got)
	}
	e.s.FailNext(indRegID, 1)
	e.s.FailNext(indRegID, 0) // cancels
	if st := e.poll(t, indRegID, e.register(t, indRegID, auth, regBody(indRegID)), auth, http.StatusOK).Status; st != StatusAssigned {
		t.Fatalf("after cancel status = %s; want assigned", st)
	}
}

func TestAssigningPolls(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.AssigningPolls = 2; o.RetryAfter = 3 })
	auth := e.token(t, indRegID, indKey, time.Hour)
	opID := e.register(t, indRegID, auth, regBody(indRegID))
	for i := range 2 {
		w := e.do(t, http.MethodGet, operationPath(indRegID, opID), auth, "")
		if w.Code != http.StatusAccepted || w.Header().Get("Retry-After") != "3" {
			t.Fatalf("poll %d = %d Retry-After %q; want 202 with Retry-After 3", i+1, w.Code, w.Header().Get("Retry-After"))
		}
		var op operationStatus
		decodeJSON(t, w, &op)
		if op.Status != StatusAssigning || op.RegistrationState != nil {
			t.Fatalf("poll %d = %+v; want assigning without state", i+1, op)
		}
	}
	if op := e.poll(t, indRegID, opID, auth, http.StatusOK); op.Status != StatusAssigned {
		t.Fatalf("third poll = %+v; want assigned", op)
	}
}

func TestStatusLookup(t *testing.T) {
	e := newEnv(t, nil)
	auth := e.token(t, indRegID, indKey, time.Hour)
	opID := e.register(t, indRegID, auth, `{"registrationId":"`+indRegID+`","payload":{"a":1}}`)
	op := e.poll(t, indRegID, opID, auth, http.StatusOK)
	for _, body := range []string{"", regBody(indRegID)} {
		w := e.do(t, http.MethodPost, statusPath(indRegID), auth, body)
		if w.Code != http.StatusOK {
			t.Fatalf("lookup with body %q = %d %s", body, w.Code, w.Body)
		}
		var rs registrationState
		decodeJSON(t, w, &rs)
		if fmt.Sprint(rs) != fmt.Sprint(*op.RegistrationState) {
			t.Fatalf("lookup = %+v; want %+v", rs, *op.RegistrationState)
		}
	}
	wantError(t, e.do(t, http.MethodPost, statusPath(indRegID), auth, regBody("dev-other")), http.StatusBadRequest, 400004)
	if n := len(e.s.Registrations()); n != 1 {
		t.Fatalf("lookups created registrations: %d", n)
	}
	// An older operation cannot be polled once a newer one exists.
	e.clk.Advance(RateWindow)
	newOp := e.register(t, indRegID, auth, regBody(indRegID))
	wantError(t, e.do(t, http.MethodGet, operationPath(indRegID, opID), auth, ""), http.StatusNotFound, 404202)
	if newOp == opID {
		t.Fatal("operation ids repeat")
	}
}

func TestRuntimeEnrollmentChanges(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Groups = nil; o.Enrollments = nil })
	auth := e.token(t, "late-dev", indKey, time.Hour)
	wantError(t, e.do(t, http.MethodPut, registerPath("late-dev"), auth, regBody("late-dev")), http.StatusNotFound, 404201)
	mustOK(t, e.s.AddEnrollment(Enrollment{RegistrationID: "late-dev", Key: indKey}))
	e.register(t, "late-dev", auth, regBody("late-dev"))
	if got := e.reg.upserts(); len(got) != 1 || got[0] != [2]string{"late-dev", indKey} {
		t.Fatalf("upserts = %v", redactCalls(got))
	}
	mustOK(t, e.s.AddGroup(Group{ID: "g2", Key: groupKey}))
	e.register(t, vecRegID, vecToken, regBody(vecRegID))
	if !e.s.RemoveEnrollment("late-dev") || e.s.RemoveEnrollment("late-dev") {
		t.Fatal("RemoveEnrollment did not report the removal once")
	}
	if err := e.s.AddEnrollment(Enrollment{RegistrationID: "x", Key: "not base64!"}); err == nil {
		t.Fatal("AddEnrollment accepted a bad key")
	}
	if err := e.s.SetEnrollmentDisabled("nope", true); err == nil {
		t.Fatal("SetEnrollmentDisabled accepted an unknown enrollment")
	}
	if err := e.s.SetGroupDisabled("nope", true); err == nil {
		t.Fatal("SetGroupDisabled accepted an unknown group")
	}
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Options)
		wantErr string
	}{
		{"empty id scope", func(o *Options) { o.IDScope = "" }, "IDScope is empty"},
		{"id scope with slash", func(o *Options) { o.IDScope = "a/b" }, "IDScope"},
		{"empty hub", func(o *Options) { o.AssignedHub = "" }, "AssignedHub"},
		{"negative retry-after", func(o *Options) { o.RetryAfter = -1 }, "RetryAfter"},
		{"negative assigning polls", func(o *Options) { o.AssigningPolls = -1 }, "AssigningPolls"},
		{"bad enrollment key", func(o *Options) { o.Enrollments[0].Key = "%%%" }, `enrollment "dev-individual" key`},
		{"bad group key", func(o *Options) { o.Groups[0].Key = "%%%" }, `group "default" key`},
		{"empty group id", func(o *Options) { o.Groups[0].ID = "" }, "group id is empty"},
		{"invalid registration id", func(o *Options) { o.Enrollments[0].RegistrationID = "a b" }, "invalid"},
		{"duplicate enrollment", func(o *Options) { o.Enrollments = append(o.Enrollments, o.Enrollments[0]) }, "twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := baseOptions(clockwork.NewFakeClockAt(t0), &fakeRegistry{}, &testlog.Buffer{})
			o.Enrollments = append([]Enrollment(nil), o.Enrollments...)
			o.Groups = append([]Group(nil), o.Groups...)
			tc.mutate(&o)
			_, err := New(o)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New() error = %v; want one containing %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), indKey) || strings.Contains(err.Error(), groupKey) {
				t.Fatal("error text contains a key")
			}
		})
	}
}

func TestIsDeviceAPIPath(t *testing.T) {
	tests := []struct {
		path string
		want bool
	}{
		{"/0ne1/registrations/dev/register", true},
		{"/0ne1/registrations/dev/operations/5.abc.def", true},
		{"/0ne1/registrations/dev", true},
		{"/0ne1/registrations/dev%3Ax/register", true},
		{"/0ne1/registrations/dev/register/", false},
		{"/0ne1/registrations/a%2Fb/register", true}, // one segment; refused later as an invalid id
		{"/0ne1/registrations//register", false},
		{"/twins/dev/methods", false},
		{"/devices/dev", false},
		{"/$iothub/websocket", false},
		{"/emulator/registrations", false},
		{"/0ne1/registrations/dev/operations", false},
		{"0ne1/registrations/dev", false},
		{"/0ne1/registrations/dev/%zz", false},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			if got := IsDeviceAPIPath(tc.path); got != tc.want {
				t.Fatalf("IsDeviceAPIPath(%q) = %v; want %v", tc.path, got, tc.want)
			}
		})
	}
}

func TestOverTLS(t *testing.T) {
	e := newEnv(t, nil)
	ts := httptest.NewTLSServer(e.s)
	t.Cleanup(ts.Close)
	client := ts.Client()
	client.Timeout = 10 * time.Second
	auth := e.token(t, vecRegID, vecDerived, time.Hour)

	send := func(method, path, body string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", auth)
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		req.Header.Set("Accept", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, b
	}
	resp, body := send(http.MethodPut, registerPath(vecRegID), `{"registrationId":"`+vecRegID+`","payload":{"modelId":"dtmi:x;1"}}`)
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Retry-After") != "2" {
		t.Fatalf("PUT = %d Retry-After %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	var op operationStatus
	if err := json.Unmarshal(body, &op); err != nil {
		t.Fatal(err)
	}
	resp, body = send(http.MethodGet, operationPath(vecRegID, op.OperationID), "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET = %d %s", resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, &op); err != nil {
		t.Fatal(err)
	}
	if op.Status != StatusAssigned || op.RegistrationState.AssignedHub != testHub || string(op.RegistrationState.Payload) != `{"modelId":"dtmi:x;1"}` {
		t.Fatalf("GET reply = %s", body)
	}
	resp, body = send(http.MethodPut, "/"+testScope+"/registrations/"+vecRegID+"/register", regBody(vecRegID))
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("x-ms-error-code") != "400001" {
		t.Fatalf("PUT without api-version = %d %s", resp.StatusCode, body)
	}
}

func TestConcurrentRegistrations(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.StateDir = t.TempDir() })
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		regID := fmt.Sprintf("gw-%02d", i)
		auth := e.token(t, regID, vecDerivedFor(t, regID), time.Hour)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := httptest.NewRequest(http.MethodPut, registerPath(regID), strings.NewReader(regBody(regID)))
			r.Header.Set("Authorization", auth)
			w := httptest.NewRecorder()
			e.s.ServeHTTP(w, r)
			if w.Code != http.StatusAccepted {
				errs <- fmt.Errorf("%s: %d %s", regID, w.Code, w.Body)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := len(e.s.Registrations()); got != n {
		t.Fatalf("Registrations() = %d; want %d", got, n)
	}
	if got := len(e.reg.upserts()); got != n {
		t.Fatalf("upserts = %d; want %d", got, n)
	}
}

func TestLogsNeverHoldSecrets(t *testing.T) {
	e := newEnv(t, nil)
	auth := e.token(t, indRegID, indKey, time.Hour)
	e.poll(t, indRegID, e.register(t, indRegID, auth, regBody(indRegID)), auth, http.StatusOK)
	e.register(t, vecRegID, vecToken, regBody(vecRegID))
	e.do(t, http.MethodPut, registerPath(indRegID), e.token(t, indRegID, otherKey, time.Hour), regBody(indRegID))
	e.reg.setErr(errRegistry)
	e.register(t, "gw-9", e.token(t, "gw-9", vecDerivedFor(t, "gw-9"), time.Hour), regBody("gw-9"))
	logs := e.logs.String()
	tok, _ := sas.Parse(auth)
	for _, secret := range []string{indKey, otherKey, groupKey, vecDerived, vecDerivedFor(t, "gw-9"), vecTokenSig, tok.Signature, "sig="} {
		if strings.Contains(logs, secret) {
			t.Fatalf("log output contains a secret (%.6s…):\n%s", secret, logs)
		}
	}
	if got := strings.Count(logs, `msg="dps registration"`); got != 3 {
		t.Fatalf("%d registration log lines; want 3 (one per registration):\n%s", got, logs)
	}
	if !strings.Contains(logs, "registrationId="+indRegID) || !strings.Contains(logs, "status=assigned") {
		t.Fatalf("registration log lines lack registrationId/status:\n%s", logs)
	}
}
