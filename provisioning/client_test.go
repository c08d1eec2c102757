package provisioning

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/identity"
	"github.com/fieldgate/fieldgate/provisioning/dpstest"
	"github.com/fieldgate/fieldgate/sas"
)

// newDPS runs the DPS emulator (on the harness's fake clock) behind the
// recording TLS server.
func newDPS(t *testing.T, o dpstest.Options) (*harness, *dpstest.Server) {
	t.Helper()
	var srv *dpstest.Server
	h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { srv.ServeHTTP(w, r) }))
	o.Now = h.fc.Now
	if o.IDScope == "" {
		o.IDScope = testScope
	}
	if o.AssignedHub == "" {
		o.AssignedHub = testHub
	}
	var err error
	srv, err = dpstest.New(o)
	if err != nil {
		t.Fatalf("dpstest.New: %v", err)
	}
	return h, srv
}

// signatures returns the sig of every Authorization header received.
func signatures(t *testing.T, reqs []request) []string {
	t.Helper()
	var out []string
	for _, r := range reqs {
		tok, err := sas.Parse(r.header.Get("Authorization"))
		if err != nil {
			t.Fatalf("request %s %s: Authorization is not a SAS token: %v", r.method, r.path, err)
		}
		out = append(out, tok.Signature, sas.Encode(tok.Signature))
	}
	return out
}

func TestRegisterGroupKeyEndToEnd(t *testing.T) {
	h, dps := newDPS(t, dpstest.Options{
		Groups:         []dpstest.Group{{ID: "fleet", Key: testGroupKey}},
		RetryAfter:     3,
		AssigningPolls: 2,
	})
	// The device holds only the group key, in a 0600 file; identity derives
	// its key.
	keyFile := filepath.Join(t.TempDir(), "group.key")
	if err := os.WriteFile(keyFile, []byte(testGroupKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := identity.LoadKey(identity.Source{GroupKeyFile: keyFile, RegistrationID: testRegID})
	if err != nil {
		t.Fatal(err)
	}
	h.opts.Signer = key
	h.opts.Payload = json.RawMessage(`{"site":"plant-7"}`)
	c := h.client()

	a, waits, err := h.register(c, 10)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	want := Assignment{
		Hub: testHub, DeviceID: testRegID, Substatus: "initialAssignment", RegistrationID: testRegID,
		IDScope: testScope, Endpoint: strings.ToLower(h.srv.URL), KeyFingerprint: c.Identity().KeyFingerprint,
	}
	if a.Hub != want.Hub || a.DeviceID != want.DeviceID || a.Substatus != want.Substatus || a.RegistrationID != want.RegistrationID ||
		a.IDScope != want.IDScope || a.Endpoint != want.Endpoint || a.KeyFingerprint != want.KeyFingerprint {
		t.Errorf("Register() = %+v; want %+v", a, want)
	}
	if string(a.Payload) != `{"site":"plant-7"}` {
		t.Errorf("Payload = %s; want the custom-allocation payload echoed by DPS", a.Payload)
	}
	if !a.AssignedAt.Equal(testEpoch.Add(9 * time.Second)) {
		t.Errorf("AssignedAt = %v; want %v (after three 3 s waits)", a.AssignedAt, testEpoch.Add(9*time.Second))
	}
	if got, want := durations(waits), []time.Duration{3 * time.Second, 3 * time.Second, 3 * time.Second}; !equalDurations(got, want) {
		t.Errorf("waits = %v; want %v (Retry-After: 3 after PUT and each assigning poll)", got, want)
	}
	reqs := h.requests()
	if len(reqs) != 4 {
		t.Fatalf("DPS saw %d requests; want PUT + 3 GETs", len(reqs))
	}
	if got, want := gaps(reqs), []time.Duration{3 * time.Second, 3 * time.Second, 3 * time.Second}; !equalDurations(got, want) {
		t.Errorf("request gaps = %v; want %v", got, want)
	}
	put := reqs[0]
	if put.method != http.MethodPut || put.path != "/"+testScope+"/registrations/"+testRegID+"/register" {
		t.Errorf("first request = %s %s; want PUT register", put.method, put.path)
	}
	for name, want := range map[string]string{
		"Content-Type": "application/json; charset=utf-8",
		"Accept":       "application/json",
		"User-Agent":   "fieldgate/test",
	} {
		if got := put.header.Get(name); got != want {
			t.Errorf("PUT header %s = %q; want %q", name, got, want)
		}
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(put.body, &body); err != nil {
		t.Fatalf("PUT body %q: %v", put.body, err)
	}
	if string(body["registrationId"]) != `"`+testRegID+`"` || string(body["payload"]) != `{"site":"plant-7"}` {
		t.Errorf("PUT body = %s; want registrationId and payload", put.body)
	}
	tok, err := sas.Parse(put.header.Get("Authorization"))
	if err != nil {
		t.Fatal(err)
	}
	if tok.KeyName != "registration" || tok.Resource != testScope+"%2Fregistrations%2F"+testRegID {
		t.Errorf("token sr=%s skn=%s; want the registration resource and skn=registration", tok.Resource, tok.KeyName)
	}
	if got, want := tok.Expiry, testEpoch.Add(time.Hour).Unix(); got != want {
		t.Errorf("token se = %d; want Now+1h = %d", got, want)
	}
	for _, r := range reqs[1:] {
		if r.method != http.MethodGet || !strings.Contains(r.path, "/operations/") {
			t.Errorf("poll = %s %s; want GET operations", r.method, r.path)
		}
	}
	regs := dps.Registrations()
	if len(regs) != 1 || regs[0].EnrollmentGroupID != "fleet" {
		t.Errorf("emulator registrations = %+v; want one through group fleet", regs)
	}
	assertNoSecrets(t, "logs", h.logs.String(), signatures(t, reqs)...)
}

func TestRegisterIndividualKey(t *testing.T) {
	const devKey = "c2VjcmV0LWRldmljZS1rZXktZm9yLXRlc3RzLW9ubHk="
	h, _ := newDPS(t, dpstest.Options{
		Enrollments: []dpstest.Enrollment{{RegistrationID: "gw-0042", Key: devKey, DeviceID: "plant7-gw42"}},
	})
	k, _ := sas.ParseKey(devKey)
	h.opts.Signer = k
	h.opts.RegistrationID = "gw-0042"
	a, waits, err := h.register(h.client(), 10)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if a.DeviceID != "plant7-gw42" || a.RegistrationID != "gw-0042" || a.Hub != testHub {
		t.Errorf("Register() = %+v; want device plant7-gw42 of gw-0042 on %s", a, testHub)
	}
	if got, want := durations(waits), []time.Duration{2 * time.Second}; !equalDurations(got, want) {
		t.Errorf("waits = %v; want %v", got, want)
	}
}

func TestRegisterAssignedDirectly(t *testing.T) {
	h := newHarness(t, script(step{status: 200, body: assignedBody("hub-7.azure-devices.net", testRegID)}))
	a, waits, err := h.register(h.client(), 5)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if a.Hub != "hub-7.azure-devices.net" || a.DeviceID != testRegID {
		t.Errorf("Register() = %+v", a)
	}
	if len(waits) != 0 || len(h.requests()) != 1 {
		t.Errorf("waits %v, %d requests; want no wait and a single PUT", waits, len(h.requests()))
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	tests := []struct {
		header string
		want   time.Duration
	}{
		{"7", 7 * time.Second},
		{"2", 2 * time.Second},
		{"", 2 * time.Second},
		{"1", 2 * time.Second},
		{"0", 2 * time.Second},
		{"-5", 2 * time.Second},
		{"2.5", 2 * time.Second},
		{"Wed, 21 Oct 2026 07:28:00 GMT", 2 * time.Second},
		{"soon", 2 * time.Second},
		{"300", 300 * time.Second},
		{"1000", 300 * time.Second},
		{"99999999999999999999", 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run("Retry-After="+tt.header, func(t *testing.T) {
			h := newHarness(t, script(
				step{status: 202, retryAfter: tt.header, body: assigningBody},
				step{status: 202, retryAfter: tt.header, body: assigningBody},
				step{status: 200, body: assignedBody(testHub, testRegID)},
			))
			_, waits, err := h.register(h.client(), 5)
			if err != nil {
				t.Fatalf("Register: %v", err)
			}
			if got, want := durations(waits), []time.Duration{tt.want, tt.want}; !equalDurations(got, want) {
				t.Errorf("waits = %v; want %v", got, want)
			}
			if got, want := gaps(h.requests()), []time.Duration{tt.want, tt.want}; !equalDurations(got, want) {
				t.Errorf("request gaps = %v; want %v", got, want)
			}
		})
	}
}

func TestRequestWindowNeverMoreThanFivePerTenSeconds(t *testing.T) {
	// Unusable answers are retried after 1 s (jitter 0) — far faster than
	// DPS allows; the request window must spread them.
	steps := make([]step, 0, 15)
	for i := 0; i < 14; i++ {
		steps = append(steps, step{status: 200, body: "<html>captive portal</html>"})
	}
	steps = append(steps, step{status: 200, body: assignedBody(testHub, testRegID)})
	h := newHarness(t, script(steps...))
	h.rands = []float64{0}
	_, waits, err := h.register(h.client(), 100)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	reqs := h.requests()
	if len(reqs) != 15 {
		t.Fatalf("%d requests; want 15", len(reqs))
	}
	if n := maxInWindow(reqs, 10*time.Second); n > 5 {
		t.Errorf("%d requests inside one 10 s window; DPS allows 5 (gaps %v)", n, gaps(reqs))
	}
	windowWaits := 0
	for _, w := range waits {
		if w.reason == "request window" {
			windowWaits++
		}
	}
	if windowWaits == 0 {
		t.Errorf("no request-window wait among %v; the test does not exercise the window", waits)
	}
}

func TestPollingAgainstEmulatorRateLimit(t *testing.T) {
	// 20 assigning polls at the minimum interval: the emulator enforces 5
	// per 10 s and answers 429 to anything faster.
	h, _ := newDPS(t, dpstest.Options{
		Groups:         []dpstest.Group{{ID: "fleet", Key: testGroupKey}},
		RetryAfter:     1, // asks for faster than allowed; the floor is 2 s
		AssigningPolls: 20,
	})
	_, _, err := h.register(h.client(), 100)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	reqs := h.requests()
	if len(reqs) != 22 {
		t.Errorf("%d requests; want PUT + 21 polls", len(reqs))
	}
	for _, r := range reqs {
		if r.status == http.StatusTooManyRequests {
			t.Errorf("emulator throttled request at %v", r.at.Sub(testEpoch))
		}
	}
	if n := maxInWindow(reqs, 10*time.Second); n > 5 {
		t.Errorf("%d requests inside one 10 s window; want ≤ 5", n)
	}
}

func TestThrottled429(t *testing.T) {
	h := newHarness(t, script(
		step{status: 429, retryAfter: "17", body: `{"errorCode":429001,"trackingId":"t-1","message":"throttled"}`},
		step{status: 429, retryAfter: "17", body: `{"errorCode":429001,"trackingId":"t-2","message":"throttled"}`},
		step{status: 202, retryAfter: "2", body: assigningBody},
		step{status: 429, body: `{"errorCode":429001}`}, // no Retry-After → backoff ≥ 5 s
		step{status: 200, body: assignedBody(testHub, testRegID)},
	))
	h.rands = []float64{0}
	_, waits, err := h.register(h.client(), 10)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	want := []time.Duration{17 * time.Second, 17 * time.Second, 2 * time.Second, 5 * time.Second}
	if got := durations(waits); !equalDurations(got, want) {
		t.Errorf("waits = %v; want %v", got, want)
	}
	reqs := h.requests()
	methods := ""
	for _, r := range reqs {
		methods += r.method + " "
	}
	if methods != "PUT PUT PUT GET GET " {
		t.Errorf("requests = %s; want the PUT retried until accepted, then the poll retried", methods)
	}
	if !strings.Contains(h.logs.String(), "429") {
		t.Errorf("429 not logged: %s", h.logs.String())
	}
}

func TestServerErrorBurstWithEmulator(t *testing.T) {
	h, dps := newDPS(t, dpstest.Options{Groups: []dpstest.Group{{ID: "fleet", Key: testGroupKey}}})
	if err := dps.InjectFaults(503, 4); err != nil {
		t.Fatal(err)
	}
	h.rands = []float64{0.5}
	a, waits, err := h.register(h.client(), 20)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if a.Hub != testHub {
		t.Errorf("hub = %q", a.Hub)
	}
	// 5 s floor + 0.5 × min(55 s, 2 s·2ⁿ), then Retry-After 2 s before the poll.
	want := []time.Duration{6 * time.Second, 7 * time.Second, 9 * time.Second, 13 * time.Second, 2 * time.Second}
	if got := durations(waits); !equalDurations(got, want) {
		t.Errorf("waits = %v; want %v", got, want)
	}
	if n := maxInWindow(h.requests(), 10*time.Second); n > 5 {
		t.Errorf("%d requests in 10 s", n)
	}
}

func TestBackoffBounds(t *testing.T) {
	tests := []struct {
		name               string
		n                  int
		base, floor, limit time.Duration
		r                  float64
		want               time.Duration
	}{
		{"network first, no jitter", 0, backoffBase, networkFloor, backoffMax, 0, time.Second},
		{"network first, max jitter", 0, backoffBase, networkFloor, backoffMax, 0.999999999, 3 * time.Second},
		{"network 5th half", 4, backoffBase, networkFloor, backoffMax, 0.5, 17 * time.Second},
		{"network capped", 20, backoffBase, networkFloor, backoffMax, 0.999999999, 60 * time.Second},
		{"5xx floor", 0, backoffBase, serverErrorFloor, backoffMax, 0, 5 * time.Second},
		{"5xx capped", 100, backoffBase, serverErrorFloor, backoffMax, 0.5, 32500 * time.Millisecond},
		{"slow first", 0, slowBase, slowFloor, slowMax, 0.5, 90 * time.Second},
		{"slow capped", 9, slowBase, slowFloor, slowMax, 0.999999999, 5 * time.Minute},
		{"bad rand treated as 0.5", 0, backoffBase, networkFloor, backoffMax, 7, 2 * time.Second},
		{"negative n", -3, backoffBase, networkFloor, backoffMax, 0.5, 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := backoff(tt.n, tt.base, tt.floor, tt.limit, tt.r).Round(time.Millisecond)
			if got != tt.want {
				t.Errorf("backoff(%d, %v, %v, %v, %v) = %v; want %v", tt.n, tt.base, tt.floor, tt.limit, tt.r, got, tt.want)
			}
		})
	}
}

func TestUnauthorizedAndNotFoundRetrySlowly(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, h *harness, dps *dpstest.Server)
		fix     func(dps *dpstest.Server) error
		logHint string
		class   error
	}{
		{
			name:    "404 enrollment not found until created",
			setup:   func(t *testing.T, h *harness, dps *dpstest.Server) {},
			fix:     func(dps *dpstest.Server) error { return dps.AddGroup(dpstest.Group{ID: "fleet", Key: testGroupKey}) },
			logHint: "enrollment not found — create the enrollment or check id_scope",
			class:   ErrNotFound,
		},
		{
			name: "401 wrong key until the group key is corrected",
			setup: func(t *testing.T, h *harness, dps *dpstest.Server) {
				if err := dps.AddGroup(dpstest.Group{ID: "fleet", Key: "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmc="}); err != nil {
					t.Fatal(err)
				}
			},
			fix:     func(dps *dpstest.Server) error { return dps.AddGroup(dpstest.Group{ID: "fleet", Key: testGroupKey}) },
			logHint: "token rejected — check the key and the device clock",
			class:   ErrUnauthorized,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var dps *dpstest.Server
			var refused atomic.Int32
			h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				rec := &statusRecorder{ResponseWriter: w, status: 200}
				dps.ServeHTTP(rec, r)
				if rec.status == 401 || rec.status == 404 {
					if refused.Add(1) == 3 {
						if err := tt.fix(dps); err != nil {
							t.Error(err)
						}
					}
				}
			}))
			var err error
			dps, err = dpstest.New(dpstest.Options{IDScope: testScope, AssignedHub: testHub, Now: h.fc.Now})
			if err != nil {
				t.Fatal(err)
			}
			tt.setup(t, h, dps)
			h.rands = []float64{0.5}
			a, waits, err := h.register(h.client(), 10)
			if err != nil {
				t.Fatalf("Register: %v", err)
			}
			if a.Hub != testHub {
				t.Errorf("hub = %q", a.Hub)
			}
			// 60 s + 0.5 × min(240 s, 60 s·2ⁿ): 90 s, 120 s, 180 s; then Retry-After.
			want := []time.Duration{90 * time.Second, 120 * time.Second, 180 * time.Second, 2 * time.Second}
			if got := durations(waits); !equalDurations(got, want) {
				t.Errorf("waits = %v; want %v", got, want)
			}
			logs := h.logs.String()
			if n := strings.Count(logs, tt.logHint); n < 1 {
				t.Errorf("log does not explain the cause %q:\n%s", tt.logHint, logs)
			}
			if n := strings.Count(logs, "level=WARN msg=\"provisioning: "+tt.logHint); n != 1 {
				t.Errorf("cause logged as its own warning %d times; want once:\n%s", n, logs)
			}
			assertNoSecrets(t, "logs", logs, signatures(t, h.requests())...)
		})
	}
}

func TestTerminalOutcomes(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(dps *dpstest.Server)
		is     error
		code   int
		inText string
	}{
		{"disabled group", func(dps *dpstest.Server) { dps.SetGroupDisabled("fleet", true) }, ErrDisabled, 0, "disabled"},
		{"failed with no hub", func(dps *dpstest.Server) { dps.FailNext(testRegID, 1) }, ErrFailed, 400208, "link a hub"},
		{"failed with custom code", func(dps *dpstest.Server) { dps.FailNextWith(testRegID, 1, 400209, "hub said no") }, ErrFailed, 400209, "hub said no"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, dps := newDPS(t, dpstest.Options{Groups: []dpstest.Group{{ID: "fleet", Key: testGroupKey}}})
			tt.setup(dps)
			_, _, err := h.register(h.client(), 10)
			if !errors.Is(err, tt.is) {
				t.Fatalf("Register error = %v; want %v", err, tt.is)
			}
			if IsRetryable(err) {
				t.Errorf("IsRetryable(%v) = true; want false", err)
			}
			if !strings.Contains(err.Error(), tt.inText) {
				t.Errorf("error %q does not contain %q", err, tt.inText)
			}
			if tt.code != 0 {
				var fe *FailedError
				if !errors.As(err, &fe) || fe.ErrorCode != tt.code {
					t.Errorf("errors.As FailedError = %+v; want code %d", fe, tt.code)
				}
			}
		})
	}
}

func TestRejected4xxIsTerminal(t *testing.T) {
	h := newHarness(t, script(step{status: 400, body: `{"errorCode":400004,"trackingId":"abc","message":"bad registration id"}`}))
	_, waits, err := h.register(h.client(), 5)
	var se *StatusError
	if !errors.As(err, &se) || se.HTTPStatus != 400 || se.ErrorCode != 400004 || se.TrackingID != "abc" || !errors.Is(err, ErrRejected) {
		t.Fatalf("Register error = %#v; want StatusError 400/400004 wrapping ErrRejected", err)
	}
	if IsRetryable(err) || len(waits) != 0 {
		t.Errorf("IsRetryable = %v, waits = %v; want a terminal error without retry", IsRetryable(err), waits)
	}
}

func TestContextCancel(t *testing.T) {
	tests := []struct {
		name     string
		handler  http.Handler
		maxWaits int
		lastIs   error
	}{
		{"while polling", script(step{status: 202, retryAfter: "2", body: assigningBody}), 3, nil},
		{"during slow 404 retry", script(step{status: 404, body: `{"errorCode":404201,"message":"no enrollment"}`}), 2, ErrNotFound},
		{"during 503 backoff", script(step{status: 503, body: `oops`}), 2, ErrServer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.handler)
			start := time.Now()
			_, _, err := h.register(h.client(), tt.maxWaits)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Register error = %v; want context.Canceled", err)
			}
			if tt.lastIs != nil && !errors.Is(err, tt.lastIs) {
				t.Errorf("error %v does not carry the last failure %v", err, tt.lastIs)
			}
			if IsRetryable(err) {
				t.Errorf("IsRetryable(cancelled) = true")
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Register took %v of real time to notice cancellation", d)
			}
		})
	}
	t.Run("already cancelled", func(t *testing.T) {
		h := newHarness(t, script(step{status: 200, body: assignedBody(testHub, testRegID)}))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := h.client().Register(ctx)
		if !errors.Is(err, context.Canceled) || len(h.requests()) != 0 {
			t.Errorf("Register(cancelled) = %v after %d requests; want context.Canceled and none", err, len(h.requests()))
		}
	})
}

func TestHostileResponses(t *testing.T) {
	huge := `{"operationId":"x","status":"assigning","pad":"` + strings.Repeat("A", 200<<10) + `"}`
	deep := strings.Repeat(`{"a":`, 20000) + "1" + strings.Repeat("}", 20000)
	tests := []struct {
		name   string
		status int
		body   string
		header map[string]string
	}{
		{"plain text", 200, "hello", nil},
		{"HTML captive portal", 200, "<html><body>Sign in to Wi-Fi</body></html>", nil},
		{"empty body", 202, "", nil},
		{"JSON array", 200, `[1,2,3]`, nil},
		{"JSON null", 200, `null`, nil},
		{"truncated JSON", 200, `{"operationId":"x","status":"assign`, nil},
		{"status is a number", 200, `{"operationId":"x","status":5}`, nil},
		{"registrationState is a string", 200, `{"status":"assigned","registrationState":"yes"}`, nil},
		{"assigned without registrationState", 200, `{"status":"assigned"}`, nil},
		{"assigned without hub", 200, `{"status":"assigned","registrationState":{"deviceId":"d"}}`, nil},
		{"assigned without device id", 200, `{"status":"assigned","registrationState":{"assignedHub":"h.example.net"}}`, nil},
		{"hub with scheme", 200, `{"status":"assigned","registrationState":{"assignedHub":"https://h.example.net","deviceId":"d"}}`, nil},
		{"hub with path", 200, `{"status":"assigned","registrationState":{"assignedHub":"h.example.net/x","deviceId":"d"}}`, nil},
		{"hub with space", 200, `{"status":"assigned","registrationState":{"assignedHub":"h.example .net","deviceId":"d"}}`, nil},
		{"hub with bad port", 200, `{"status":"assigned","registrationState":{"assignedHub":"h.example.net:99999","deviceId":"d"}}`, nil},
		{"hub is a number", 200, `{"status":"assigned","registrationState":{"assignedHub":42,"deviceId":"d"}}`, nil},
		{"device id with slash", 200, `{"status":"assigned","registrationState":{"assignedHub":"h.example.net","deviceId":"a/b"}}`, nil},
		{"device id too long", 200, `{"status":"assigned","registrationState":{"assignedHub":"h.example.net","deviceId":"` + strings.Repeat("d", 129) + `"}}`, nil},
		{"other registration id", 200, `{"status":"assigned","registrationState":{"registrationId":"someone-else","assignedHub":"h.example.net","deviceId":"d"}}`, nil},
		{"operation id path traversal", 202, `{"operationId":"../../admin","status":"assigning"}`, nil},
		{"operation id dot-dot", 202, `{"operationId":"..","status":"assigning"}`, nil},
		{"assigning without operation id", 202, `{"status":"assigning"}`, nil},
		{"unknown status", 200, `{"operationId":"x","status":"exploded"}`, nil},
		{"errorCode wrong type in failed", 200, `{"status":"failed","registrationState":{"errorCode":"boom"}}`, nil},
		{"body over 128 KiB", 202, huge, nil},
		{"deeply nested payload", 200, `{"status":"assigned","registrationState":{"assignedHub":"h.example.net","deviceId":"d","payload":` + deep + `}}`, nil},
		{"redirect to elsewhere", 307, "", map[string]string{"Location": "https://127.0.0.1:1/steal"}},
		{"unexpected 204", 204, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n atomic.Int32
			h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if n.Add(1) > 1 {
					w.WriteHeader(200)
					w.Write([]byte(assignedBody(testHub, testRegID)))
					return
				}
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				w.Write([]byte(tt.body))
			}))
			h.rands = []float64{0}
			a, waits, err := h.register(h.client(), 5)
			if err != nil {
				t.Fatalf("Register after one hostile answer: %v", err)
			}
			if a.Hub != testHub {
				t.Errorf("hub = %q; want the valid answer's %q", a.Hub, testHub)
			}
			if len(waits) != 1 || waits[0].d < time.Second {
				t.Errorf("waits = %v; want one backoff of at least 1 s", waits)
			}
			if !strings.Contains(h.logs.String(), "level=WARN") {
				t.Errorf("hostile answer not logged as a warning:\n%s", h.logs.String())
			}
			if len(h.logs.String()) > 8<<10 {
				t.Errorf("log grew to %d bytes; hostile content must not be echoed", len(h.logs.String()))
			}
		})
	}
}

func TestErrorBodyEchoingTheTokenIsRedacted(t *testing.T) {
	h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		tok, _ := sas.Parse(auth)
		// A hostile DPS puts our credential into every field it can.
		b, _ := json.Marshal(map[string]any{"errorCode": 400001, "trackingId": tok.Signature, "message": "you sent " + tok.Signature})
		w.WriteHeader(400)
		w.Write(b)
	}))
	_, _, err := h.register(h.client(), 3)
	if err == nil {
		t.Fatal("Register succeeded against a 400")
	}
	sigs := signatures(t, h.requests())
	assertNoSecrets(t, "error", err.Error(), sigs...)
	assertNoSecrets(t, "logs", h.logs.String(), sigs...)
	if !strings.Contains(err.Error(), "redacted") {
		t.Errorf("error %q does not say the text was redacted", err)
	}
}

func TestMaxPollTimeStartsAFreshRegistration(t *testing.T) {
	var puts atomic.Int32
	h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && puts.Add(1) == 2 {
			w.WriteHeader(200)
			w.Write([]byte(assignedBody(testHub, testRegID)))
			return
		}
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(202)
		w.Write([]byte(assigningBody))
	}))
	h.opts.MaxPollTime = 2 * time.Minute
	_, waits, err := h.register(h.client(), 20)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	reqs := h.requests()
	last := reqs[len(reqs)-1]
	if last.method != http.MethodPut || puts.Load() != 2 {
		t.Fatalf("last request %s, %d PUTs; want a second PUT after polling for 2 min", last.method, puts.Load())
	}
	if got := last.at.Sub(reqs[0].at); got != 2*time.Minute {
		t.Errorf("second PUT after %v; want exactly MaxPollTime (4 polls × 30 s)", got)
	}
	if len(waits) != 4 {
		t.Errorf("waits = %v", waits)
	}
	if !strings.Contains(h.logs.String(), "registering again") {
		t.Errorf("fresh registration not logged")
	}
}

func TestOperationLostRestartsWithPUT(t *testing.T) {
	h := newHarness(t, script(
		step{status: 202, retryAfter: "2", body: assigningBody},
		step{status: 404, body: `{"errorCode":404202,"message":"unknown operation"}`},
		step{status: 200, body: assignedBody(testHub, testRegID)},
	))
	h.rands = []float64{0}
	_, waits, err := h.register(h.client(), 5)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	reqs := h.requests()
	if len(reqs) != 3 || reqs[2].method != http.MethodPut {
		t.Fatalf("requests %v; want PUT, GET (404), PUT", reqs)
	}
	if got, want := durations(waits), []time.Duration{2 * time.Second, time.Second}; !equalDurations(got, want) {
		t.Errorf("waits = %v; want %v (no slow retry for a lost operation)", got, want)
	}
}

func TestNetworkErrorsRetried(t *testing.T) {
	// A listener that accepts and closes: every request fails at the
	// transport; after 3 failures the real server takes over.
	var fails atomic.Int32
	h := newHarness(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fails.Add(1) <= 3 {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Errorf("hijack: %v", err)
				return
			}
			conn.Close()
			return
		}
		w.WriteHeader(200)
		w.Write([]byte(assignedBody(testHub, testRegID)))
	}))
	h.rands = []float64{0.5}
	_, waits, err := h.register(h.client(), 10)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	// 1 s + 0.5 × min(59 s, 2 s·2ⁿ)
	want := []time.Duration{2 * time.Second, 3 * time.Second, 5 * time.Second}
	if got := durations(waits); !equalDurations(got, want) {
		t.Errorf("waits = %v; want %v", got, want)
	}
	if !strings.Contains(h.logs.String(), "network error") {
		t.Errorf("network error not logged:\n%s", h.logs.String())
	}
}

func TestIsRetryable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"401", &StatusError{HTTPStatus: 401}, true},
		{"403", &StatusError{HTTPStatus: 403}, true},
		{"404", &StatusError{HTTPStatus: 404}, true},
		{"409", &StatusError{HTTPStatus: 409}, true},
		{"429", &StatusError{HTTPStatus: 429}, true},
		{"500", &StatusError{HTTPStatus: 500}, true},
		{"400", &StatusError{HTTPStatus: 400}, false},
		{"415", &StatusError{HTTPStatus: 415}, false},
		{"disabled", ErrDisabled, false},
		{"failed", &FailedError{ErrorCode: 400208}, false},
		{"bad response", ErrBadResponse, true},
		{"network", ErrNetwork, true},
		{"cancelled with last 503", errors.Join(context.Canceled, &StatusError{HTTPStatus: 503}), false},
		{"signer", errSigner, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsRetryable(tt.err); got != tt.want {
				t.Errorf("IsRetryable(%v) = %v; want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestNewValidatesOptions(t *testing.T) {
	key, _ := sas.ParseKey(testDerivedKey)
	base := Options{IDScope: testScope, RegistrationID: testRegID, Signer: key}
	tests := []struct {
		name    string
		mod     func(o *Options)
		wantErr string
	}{
		{"defaults", func(o *Options) {}, ""},
		{"http endpoint", func(o *Options) { o.Endpoint = "http://dps.example.net" }, "https://"},
		{"endpoint with query", func(o *Options) { o.Endpoint = "https://dps.example.net/?x=1" }, "no user, query"},
		{"endpoint without host", func(o *Options) { o.Endpoint = "https:///x" }, "https://host"},
		{"empty scope", func(o *Options) { o.IDScope = "" }, "id_scope"},
		{"scope with slash", func(o *Options) { o.IDScope = "0ne/1" }, "id_scope"},
		{"empty registration id", func(o *Options) { o.RegistrationID = "" }, "registration_id"},
		{"registration id with space", func(o *Options) { o.RegistrationID = "gw 1" }, "registration_id"},
		{"registration id ending in dot", func(o *Options) { o.RegistrationID = "gw." }, "must end"},
		{"no signer", func(o *Options) { o.Signer = nil }, "no signer"},
		{"destroyed key", func(o *Options) { k, _ := sas.ParseKey(testDerivedKey); k.Destroy(); o.Signer = k }, "key fingerprint"},
		{"payload not JSON", func(o *Options) { o.Payload = json.RawMessage(`{site:`) }, "payload"},
		{"payload too large", func(o *Options) { o.Payload = json.RawMessage(`"` + strings.Repeat("x", 70<<10) + `"`) }, "payload"},
		{"token TTL too short", func(o *Options) { o.TokenTTL = 10 * time.Second }, "token TTL"},
		{"max poll too short", func(o *Options) { o.MaxPollTime = time.Second }, "max poll"},
		{"api version with slash", func(o *Options) { o.APIVersion = "2021/06" }, "api version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base
			tt.mod(&o)
			c, err := New(o)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New(%s) error = %v", tt.name, err)
				}
				if c.base != DefaultEndpoint || c.apiVersion != DefaultAPIVersion || c.tokenTTL != time.Hour || c.maxPoll != 5*time.Minute {
					t.Errorf("defaults not applied: %+v", c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New(%s) error = %v; want it to mention %q", tt.name, err, tt.wantErr)
			}
			assertNoSecrets(t, "error", err.Error())
		})
	}
}

func TestDestroyedKeyIsTerminal(t *testing.T) {
	h := newHarness(t, script(step{status: 200, body: assignedBody(testHub, testRegID)}))
	k, _ := sas.ParseKey(testDerivedKey)
	h.opts.Signer = k
	c := h.client()
	k.Destroy()
	_, _, err := h.register(c, 3)
	if err == nil || IsRetryable(err) || len(h.requests()) != 0 {
		t.Fatalf("Register with destroyed key = %v (retryable %v, %d requests); want a terminal error before any request", err, IsRetryable(err), len(h.requests()))
	}
}

func TestRegisterSerializesConcurrentCalls(t *testing.T) {
	h := newHarness(t, script(step{status: 200, body: assignedBody(testHub, testRegID)}))
	c := h.client()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := c.Register(ctx)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Register: %v", err)
		}
	}
	if n := len(h.requests()); n != 4 {
		t.Errorf("%d requests; want 4", n)
	}
}

// Example-style check that the assignment serializes as documented for
// `fieldgate provision`.
func TestAssignmentJSON(t *testing.T) {
	a := Assignment{Hub: testHub, DeviceID: "d", RegistrationID: testRegID, IDScope: testScope, Endpoint: DefaultEndpoint,
		AssignedAt: testEpoch, KeyFingerprint: "0123456789abcdef", Payload: json.RawMessage(`{"x":1}`)}
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"hub":"127.0.0.1:8883"`, `"deviceId":"d"`, `"assignedAt":"2026-11-22T10:00:00Z"`, `"payload":{"x":1}`, `"keyFingerprint":"0123456789abcdef"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("json %s lacks %s", b, want)
		}
	}
}
