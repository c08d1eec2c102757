package provisioning

import (
	"github.com/fieldgate/fieldgate/internal/testlog"

	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/sas"
	"github.com/jonboulle/clockwork"
)

// Test identities. The group key, registration id and derived key are the
// vector of azure-iot-protocol.md §1.6.
const (
	testScope      = "0ne00000000"
	testRegID      = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"
	testGroupKey   = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
	testDerivedKey = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="
	testHub        = "127.0.0.1:8883"
)

var testEpoch = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

// wait is one wait Register made.
type wait struct {
	d      time.Duration
	reason string
}

// request is one request a test server received, stamped with the fake clock.
type request struct {
	at     time.Time
	method string
	path   string
	header http.Header
	body   []byte
	status int
}

// harness runs a Client against a TLS test server on a fake clock. Every
// wait Register makes is reported through onWait and the driver advances
// the fake clock by exactly that much, so tests see exact timings.
type harness struct {
	t     *testing.T
	fc    *clockwork.FakeClock
	srv   *httptest.Server
	logs  *testlog.Buffer
	opts  Options
	rands []float64 // jitter values returned in turn (last one repeats); nil → 0.5

	// mu guards reqs.
	mu   sync.Mutex
	reqs []request
}

// newHarness serves h over HTTPS on 127.0.0.1, recording every request.
func newHarness(t *testing.T, h http.Handler) *harness {
	t.Helper()
	hs := &harness{t: t, fc: clockwork.NewFakeClockAt(testEpoch), logs: &testlog.Buffer{}}
	hs.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		at := hs.fc.Now()
		h.ServeHTTP(rec, r)
		hs.mu.Lock()
		hs.reqs = append(hs.reqs, request{at: at, method: r.Method, path: r.URL.Path, header: r.Header.Clone(), body: body, status: rec.status})
		hs.mu.Unlock()
	}))
	t.Cleanup(hs.srv.Close)
	key, err := sas.ParseKey(testDerivedKey)
	if err != nil {
		t.Fatal(err)
	}
	hs.opts = Options{
		Endpoint:       hs.srv.URL,
		IDScope:        testScope,
		RegistrationID: testRegID,
		Signer:         key,
		HTTPClient:     hs.srv.Client(),
		Clock:          hs.fc,
		Now:            hs.fc.Now,
		Logger:         slog.New(slog.NewTextHandler(hs.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		UserAgent:      "fieldgate/test",
	}
	return hs
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (h *harness) requests() []request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]request(nil), h.reqs...)
}

// client builds the Client from h.opts.
func (h *harness) client() *Client {
	h.t.Helper()
	c, err := New(h.opts)
	if err != nil {
		h.t.Fatalf("New: %v", err)
	}
	i := 0
	c.rand = func() float64 {
		if len(h.rands) == 0 {
			return 0.5
		}
		r := h.rands[min(i, len(h.rands)-1)]
		i++
		return r
	}
	return c
}

// register runs Register on c, driving the fake clock through at most
// maxWaits waits (then the context is cancelled) and at most 20 s of real
// time.
func (h *harness) register(c *Client, maxWaits int) (Assignment, []wait, error) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return h.registerCtx(ctx, cancel, c, maxWaits)
}

func (h *harness) registerCtx(ctx context.Context, cancel context.CancelFunc, c *Client, maxWaits int) (Assignment, []wait, error) {
	h.t.Helper()
	waitCh := make(chan wait, maxWaits+16)
	c.onWait = func(d time.Duration, reason string) {
		select {
		case waitCh <- wait{d, reason}:
		case <-ctx.Done():
		}
	}
	var (
		waits []wait
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case w := <-waitCh:
				waits = append(waits, w)
				if len(waits) > maxWaits {
					cancel()
					return
				}
				if err := h.fc.BlockUntilContext(ctx, 1); err != nil {
					return
				}
				h.fc.Advance(w.d)
			}
		}
	}()
	a, err := c.Register(ctx)
	cancel()
	wg.Wait()
	return a, waits, err
}

// assigned is a 200 assigned operation status body.
func assignedBody(hub, deviceID string) string {
	b, _ := json.Marshal(map[string]any{
		"operationId": "5.316aac5bdc130deb.b1e02da8-0000-4000-8000-000000000001",
		"status":      "assigned",
		"registrationState": map[string]any{
			"registrationId": testRegID,
			"assignedHub":    hub,
			"deviceId":       deviceID,
			"status":         "assigned",
			"substatus":      "initialAssignment",
		},
	})
	return string(b)
}

const assigningBody = `{"operationId":"5.316aac5bdc130deb.b1e02da8-0000-4000-8000-000000000001","status":"assigning"}`

// step is one scripted answer.
type step struct {
	status     int
	retryAfter string // "" → no header
	body       string
}

// script answers requests with steps in order; after the last step it
// repeats the last one.
func script(steps ...step) http.Handler {
	var mu sync.Mutex
	i := 0
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		s := steps[min(i, len(steps)-1)]
		i++
		mu.Unlock()
		if s.retryAfter != "" {
			w.Header().Set("Retry-After", s.retryAfter)
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(s.status)
		w.Write([]byte(s.body))
	})
}

// durations extracts the wait durations.
func durations(ws []wait) []time.Duration {
	out := make([]time.Duration, len(ws))
	for i, w := range ws {
		out[i] = w.d
	}
	return out
}

// gaps returns the fake-clock time between consecutive requests.
func gaps(reqs []request) []time.Duration {
	var out []time.Duration
	for i := 1; i < len(reqs); i++ {
		out = append(out, reqs[i].at.Sub(reqs[i-1].at))
	}
	return out
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// maxInWindow returns the largest number of requests inside any half-open
// window [t, t+win).
func maxInWindow(reqs []request, win time.Duration) int {
	best := 0
	for i := range reqs {
		n := 0
		for j := i; j < len(reqs) && reqs[j].at.Sub(reqs[i].at) < win; j++ {
			n++
		}
		best = max(best, n)
	}
	return best
}

// assertNoSecrets fails when s contains key material or a signature.
func assertNoSecrets(t *testing.T, what, s string, extra ...string) {
	t.Helper()
	for _, sec := range append([]string{testDerivedKey, testGroupKey, "sig=", "SharedAccessSignature sr"}, extra...) {
		if sec != "" && strings.Contains(s, sec) {
			t.Errorf("%s contains secret material %q", what, sec)
		}
	}
}
