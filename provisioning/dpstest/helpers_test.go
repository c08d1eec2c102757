package dpstest

import (
	"github.com/fieldgate/fieldgate/internal/testlog"

	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/fieldgate/fieldgate/sas"
)

const (
	testScope = "0ne00000000"
	testHub   = "localhost:18883"

	indRegID    = "dev-individual"
	indDeviceID = "custom-device"

	// Group key and registration id of the derivation vector in
	// azure-iot-protocol.md §1.6, with the DPS token vector of §1.7.
	groupKey     = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
	vecRegID     = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"
	vecDerived   = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="
	vecToken     = "SharedAccessSignature sr=0ne00000000%2Fregistrations%2Fsn-007-888-abc-mac-a1-b2-c3-d4-e5-f6&sig=UcaBdA4L3Se7NlFQZcBFRndkqyymINWtRUmVT5QYWng%3D&se=1700000000&skn=registration"
	vecTokenSig  = "UcaBdA4L3Se7NlFQZcBFRndkqyymINWtRUmVT5QYWng"
	vecTokenExpi = 1700000000
)

var (
	indKey   = base64.StdEncoding.EncodeToString([]byte("individual-enrollment-key-32byte"))
	otherKey = base64.StdEncoding.EncodeToString([]byte("some-other-key-of-thirty-2-bytes"))
	// t0 is the fake emulator clock's start: one hour before the vector token expires.
	t0 = time.Unix(vecTokenExpi-3600, 0).UTC()
)

// fakeRegistry records UpsertDevice calls and fails while err is set.
type fakeRegistry struct {
	// mu guards the fields below.
	mu    sync.Mutex
	calls [][2]string // deviceID, key
	err   error
}

func (f *fakeRegistry) UpsertDevice(deviceID, primaryKey string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.calls = append(f.calls, [2]string{deviceID, primaryKey})
	return nil
}

func (f *fakeRegistry) setErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeRegistry) upserts() [][2]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][2]string(nil), f.calls...)
}

type env struct {
	s    *Server
	clk  *clockwork.FakeClock
	reg  *fakeRegistry
	logs *testlog.Buffer
	opts Options
}

func baseOptions(clk *clockwork.FakeClock, reg *fakeRegistry, logs *testlog.Buffer) Options {
	return Options{
		IDScope:     testScope,
		AssignedHub: testHub,
		Enrollments: []Enrollment{{RegistrationID: indRegID, Key: indKey, DeviceID: indDeviceID}},
		Groups:      []Group{{ID: "default", Key: groupKey}},
		Registry:    reg,
		Now:         clk.Now,
		Logger:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// newEnv starts a Server on a fake clock at t0; mutate may adjust the options.
func newEnv(t *testing.T, mutate func(*Options)) *env {
	t.Helper()
	e := &env{clk: clockwork.NewFakeClockAt(t0), reg: &fakeRegistry{}, logs: &testlog.Buffer{}}
	e.opts = baseOptions(e.clk, e.reg, e.logs)
	if mutate != nil {
		mutate(&e.opts)
	}
	s, err := New(e.opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.s = s
	return e
}

func registerPath(regID string) string {
	return "/" + testScope + "/registrations/" + regID + "/register?api-version=2021-06-01"
}

func operationPath(regID, opID string) string {
	return "/" + testScope + "/registrations/" + regID + "/operations/" + opID + "?api-version=2021-06-01"
}

func statusPath(regID string) string {
	return "/" + testScope + "/registrations/" + regID + "?api-version=2021-06-01"
}

func regBody(regID string) string {
	return `{"registrationId":"` + regID + `"}`
}

// token signs a registration token for regID with key, valid for ttl on the fake clock.
func (e *env) token(t *testing.T, regID, key string, ttl time.Duration) string {
	t.Helper()
	k, err := sas.ParseKey(key)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := sas.NewRegistrationToken(testScope, regID, e.clk.Now().Add(ttl).Unix(), k)
	if err != nil {
		t.Fatal(err)
	}
	return tok.String()
}

func (e *env) do(t *testing.T, method, target, auth, body string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	if body != "" {
		r.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	w := httptest.NewRecorder()
	e.s.ServeHTTP(w, r)
	return w
}

// register PUTs a registration and returns the operation id from the 202.
func (e *env) register(t *testing.T, regID, auth, body string) string {
	t.Helper()
	w := e.do(t, http.MethodPut, registerPath(regID), auth, body)
	if w.Code != http.StatusAccepted {
		t.Fatalf("PUT register %s = %d %s; want 202", regID, w.Code, w.Body)
	}
	if got := w.Header().Get("Retry-After"); got == "" {
		t.Fatalf("PUT register: no Retry-After header")
	}
	var op operationStatus
	decodeJSON(t, w, &op)
	if op.Status != StatusAssigning || !strings.HasPrefix(op.OperationID, "5.") {
		t.Fatalf("PUT register reply = %+v; want status assigning and an operation id", op)
	}
	return op.OperationID
}

// poll GETs an operation and expects status code want.
func (e *env) poll(t *testing.T, regID, opID, auth string, want int) operationStatus {
	t.Helper()
	w := e.do(t, http.MethodGet, operationPath(regID, opID), auth, "")
	if w.Code != want {
		t.Fatalf("GET operation = %d %s; want %d", w.Code, w.Body, want)
	}
	var op operationStatus
	decodeJSON(t, w, &op)
	return op
}

func decodeJSON(t *testing.T, w *httptest.ResponseRecorder, v any) {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Fatalf("Content-Type = %q; want application/json; charset=utf-8", ct)
	}
	if err := json.Unmarshal(w.Body.Bytes(), v); err != nil {
		t.Fatalf("reply %q is not JSON: %v", w.Body, err)
	}
}

// wantError checks an error reply's status, DPS error shape and errorCode,
// and returns its message.
func wantError(t *testing.T, w *httptest.ResponseRecorder, status, code int) string {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status = %d %s; want %d", w.Code, w.Body, status)
	}
	var eb struct {
		ErrorCode    *int    `json:"errorCode"`
		TrackingID   *string `json:"trackingId"`
		Message      *string `json:"message"`
		TimestampUTC *string `json:"timestampUtc"`
	}
	decodeJSON(t, w, &eb)
	if eb.ErrorCode == nil || eb.TrackingID == nil || eb.Message == nil || eb.TimestampUTC == nil {
		t.Fatalf("error reply %s lacks a DPS error field", w.Body)
	}
	if *eb.ErrorCode != code {
		t.Fatalf("errorCode = %d (%s); want %d", *eb.ErrorCode, *eb.Message, code)
	}
	if got := w.Header().Get("x-ms-error-code"); got != strconv.Itoa(code) {
		t.Fatalf("x-ms-error-code = %q; want %d", got, code)
	}
	if len(*eb.TrackingID) != 36 {
		t.Fatalf("trackingId %q is not a UUID", *eb.TrackingID)
	}
	if _, err := time.Parse(time.RFC3339Nano, *eb.TimestampUTC); err != nil {
		t.Fatalf("timestampUtc %q: %v", *eb.TimestampUTC, err)
	}
	return *eb.Message
}

var errRegistry = errors.New("hub: registry unavailable")
