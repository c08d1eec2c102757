package hub_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/fieldgate/fieldgate/agent/hub"
	"github.com/fieldgate/fieldgate/agent/hub/hubtest"
	"github.com/fieldgate/fieldgate/agent/hub/propbag"
	"github.com/fieldgate/fieldgate/internal/devcert"
	"github.com/fieldgate/fieldgate/sas"
)

const deviceKey = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="

type env struct {
	hub   *hubtest.Hub
	ca    *devcert.CA
	clk   *clockwork.FakeClock
	start time.Time
}

// newEnv starts the IoT Hub emulator over TLS on loopback with device dev1;
// the emulator and the client share a fake wall clock.
func newEnv(t *testing.T) *env {
	t.Helper()
	start := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	clk := clockwork.NewFakeClockAt(start)
	// Certificates are valid around the fake clock, not the real one: TLS is
	// verified on the client's (injected) clock.
	ca, err := devcert.NewCA(start)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue([]string{"localhost"}, start.Add(-time.Hour), start.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	h, err := hubtest.New(hubtest.Options{
		HubHost:   "localhost",
		MQTTAddr:  "127.0.0.1:0",
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		Now:       clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	if err := h.UpsertDevice("dev1", deviceKey); err != nil {
		t.Fatal(err)
	}
	return &env{hub: h, ca: ca, clk: clk, start: start}
}

// recorder is a hub.Handler that records what arrives.
type recorder struct {
	mu        sync.Mutex
	connected int
	desired   [][]byte
	c2d       []hub.C2DMessage
	methods   []string
	onConnect func(ctx context.Context, c *hub.Conn)
}

func (r *recorder) Connected(ctx context.Context, c *hub.Conn) {
	r.mu.Lock()
	r.connected++
	f := r.onConnect
	r.mu.Unlock()
	if f != nil {
		f(ctx, c)
	}
}
func (r *recorder) Desired(_ context.Context, p []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.desired = append(r.desired, p)
}
func (r *recorder) Method(_ context.Context, name string, payload []byte) (int, []byte) {
	r.mu.Lock()
	r.methods = append(r.methods, name)
	r.mu.Unlock()
	if name == "echo" {
		return 200, payload
	}
	return 404, []byte(`{"error":"unknown method"}`)
}
func (r *recorder) C2D(_ context.Context, m hub.C2DMessage) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.c2d = append(r.c2d, m)
}

func (e *env) client(t *testing.T, h hub.Handler, mod func(*hub.Options)) *hub.Client {
	t.Helper()
	key, err := sas.ParseKey(deviceKey)
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(e.hub.MQTTAddr())
	o := hub.Options{
		Host:       "localhost:" + port,
		DeviceID:   "dev1",
		Signer:     key,
		TLSConfig:  &tls.Config{RootCAs: e.ca.Pool()},
		Now:        e.clk.Now,
		Clock:      e.clk,
		TokenTTL:   time.Hour,
		Handler:    h,
		Rand:       func() float64 { return 0 }, // no backoff waits
		BackoffMin: time.Millisecond,
	}
	if mod != nil {
		mod(&o)
	}
	c, err := hub.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// oneAttempt makes the client wait for the (never advanced) fake clock after
// its first failure, so a test sees exactly one attempt.
func oneAttempt(o *hub.Options) {
	o.Rand = func() float64 { return 1 }
	o.BackoffMin = time.Second
}

func run(t *testing.T, c *hub.Client) (cancel func() error) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	var err error
	cancel = func() error {
		once.Do(func() {
			stop()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				err = errors.New("Run did not return within 10s of cancel")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = cancel() })
	return cancel
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitConn(t *testing.T, c *hub.Client) *hub.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := c.WaitConn(ctx)
	if err != nil {
		t.Fatalf("WaitConn: %v", err)
	}
	return conn
}

func TestTelemetryTwinMethodsC2D(t *testing.T) {
	e := newEnv(t)
	rec := &recorder{}
	c := e.client(t, rec, func(o *hub.Options) { o.ModelID = "dtmi:com:fieldgate:gateway;1" })
	stop := run(t, c)
	conn := waitConn(t, c)
	ctx := context.Background()

	t.Run("telemetry with system properties", func(t *testing.T) {
		err := conn.Publish(ctx, hub.Message{Body: []byte(`{"records":[]}`), Properties: []propbag.Pair{
			{Key: "$.mid", Value: "m-1"}, {Key: "$.ct", Value: "application/json"}, {Key: "$.ce", Value: "utf-8"}, {Key: "site", Value: "plant 7&x"},
		}})
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
		msgs, _ := e.hub.Messages("dev1", 0)
		if len(msgs) != 1 {
			t.Fatalf("hub recorded %d messages, want 1 (PUBACK implies recorded)", len(msgs))
		}
		m := msgs[0]
		if m.SystemProperties["$.mid"] != "m-1" || m.SystemProperties["$.ct"] != "application/json" || m.Properties["site"] != "plant 7&x" {
			t.Errorf("properties = %v / %v", m.SystemProperties, m.Properties)
		}
		conns := e.hub.Connections()
		if last := conns[len(conns)-1]; last.ModelID != "dtmi:com:fieldgate:gateway;1" || last.APIVersion != hub.APIVersion {
			t.Errorf("connection = %+v", last)
		}
	})
	t.Run("twin get and reported patch", func(t *testing.T) {
		v, err := conn.ReportProperties(ctx, []byte(`{"fieldgate":{"version":"test"}}`))
		if err != nil || v < 1 {
			t.Fatalf("ReportProperties = %d, %v", v, err)
		}
		doc, err := conn.TwinGet(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var twin struct {
			Reported map[string]any `json:"reported"`
		}
		if err := json.Unmarshal(doc, &twin); err != nil {
			t.Fatal(err)
		}
		if fg, _ := twin.Reported["fieldgate"].(map[string]any); fg["version"] != "test" {
			t.Errorf("reported = %v", twin.Reported)
		}
	})
	t.Run("desired patch pushed", func(t *testing.T) {
		if _, err := e.hub.PatchDesired("dev1", map[string]any{"telemetryInterval": "10s"}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "desired patch", func() bool {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			return len(rec.desired) == 1 && strings.Contains(string(rec.desired[0]), `"telemetryInterval":"10s"`)
		})
	})
	t.Run("direct methods", func(t *testing.T) {
		res, err := e.hub.InvokeMethod(ctx, "dev1", "echo", json.RawMessage(`{"a":1}`), 5*time.Second)
		if err != nil || res.Status != 200 || string(res.Payload) != `{"a":1}` {
			t.Fatalf("echo = %+v, %v", res, err)
		}
		res, err = e.hub.InvokeMethod(ctx, "dev1", "nope", nil, 5*time.Second)
		if err != nil || res.Status != 404 {
			t.Fatalf("unknown = %+v, %v", res, err)
		}
	})
	t.Run("c2d with properties", func(t *testing.T) {
		err := e.hub.SendC2D("dev1", hubtest.C2DMessage{Body: []byte("hello"), Properties: map[string]string{"method": "getDiagnostics", "a b": "c/d"}, MessageID: "c2d-1"})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "c2d", func() bool {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			return len(rec.c2d) == 1
		})
		m := rec.c2d[0]
		if string(m.Body) != "hello" || m.Properties["method"] != "getDiagnostics" || m.Properties["a b"] != "c/d" || m.System["mid"] != "c2d-1" {
			t.Errorf("c2d = %+v", m)
		}
		eventually(t, "c2d acknowledged", func() bool { return len(e.hub.C2DQueue("dev1")) == 0 })
	})
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Errorf("Run after cancel = %v, want context.Canceled", err)
	}
	if st := c.Status(); st.State != hub.StateStopped || st.Connects != 1 {
		t.Errorf("status = %+v", st)
	}
}

func TestTokenRefreshBeforeExpiry(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, &recorder{}, func(o *hub.Options) { o.TokenTTL = 10 * time.Minute })
	run(t, c)
	first := waitConn(t, c)
	var expiries []time.Time
	for i := 0; i < 3; i++ {
		st := c.Status()
		expiries = append(expiries, st.TokenExpiry)
		// Advance the shared clock to 80 % of the token lifetime: the client
		// reconnects with a fresh token; the hub never cuts it.
		e.clk.BlockUntilContext(context.Background(), 2)
		e.clk.Advance(8*time.Minute + time.Second)
		eventually(t, "reconnect with a fresh token", func() bool { return c.Status().Connects == i+2 })
		waitConn(t, c)
	}
	if first.Lost() == nil {
		t.Fatal("nil Lost channel")
	}
	select {
	case <-first.Lost():
	default:
		t.Error("first connection still live after refresh")
	}
	for i := 1; i < len(expiries); i++ {
		if !expiries[i].After(expiries[i-1]) {
			t.Errorf("token expiry %d = %v, not after %v", i, expiries[i], expiries[i-1])
		}
	}
	for _, cn := range e.hub.Connections() {
		if cn.Reason == "token expired" {
			t.Errorf("the hub cut a connection for an expired token: %+v", cn)
		}
	}
}

func TestAuthRefusedRepeatedly(t *testing.T) {
	e := newEnv(t)
	e.hub.RefuseConnects(100)
	c := e.client(t, &recorder{}, func(o *hub.Options) { o.MaxAuthFailures = 3 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := c.Run(ctx)
	if !errors.Is(err, hub.ErrAuthRejected) {
		t.Fatalf("Run = %v, want ErrAuthRejected", err)
	}
	if st := e.hub.Stats(); st.ConnectRefused != 3 {
		t.Errorf("hub saw %d refused CONNECTs, want exactly 3 (protocol version pinned, no 3.1 retry)", st.ConnectRefused)
	}
}

func TestAuthRefusedUnverifiedClockKeepsTrying(t *testing.T) {
	e := newEnv(t)
	e.hub.RefuseConnects(4)
	c := e.client(t, &recorder{}, func(o *hub.Options) {
		o.MaxAuthFailures = 3
		o.ClockVerified = func() bool { return false }
	})
	run(t, c)
	waitConn(t, c)
	if st := c.Status(); st.Connects != 1 || st.AuthFailures != 0 {
		t.Errorf("status = %+v", st)
	}
}

func TestWrongKeyIsRefused(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, &recorder{}, func(o *hub.Options) {
		o.Signer = sas.NewKey([]byte("not the device key"))
		o.MaxAuthFailures = 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Run(ctx); !errors.Is(err, hub.ErrAuthRejected) {
		t.Fatalf("Run = %v, want ErrAuthRejected", err)
	}
}

func TestDropAndReconnect(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, &recorder{}, nil)
	run(t, c)
	first := waitConn(t, c)
	e.hub.DropConnections("dev1")
	select {
	case <-first.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("drop not noticed")
	}
	if err := first.Publish(context.Background(), hub.Message{Body: []byte("x")}); !errors.Is(err, hub.ErrConnectionLost) {
		t.Errorf("Publish on lost conn = %v, want ErrConnectionLost", err)
	}
	eventually(t, "reconnect", func() bool { return c.Status().Connects == 2 })
	second := waitConn(t, c)
	if err := second.Publish(context.Background(), hub.Message{Body: []byte("y")}); err != nil {
		t.Fatalf("Publish after reconnect: %v", err)
	}
}

func TestWithheldPubackIsConnectionLost(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, &recorder{}, nil)
	run(t, c)
	conn := waitConn(t, c)
	e.hub.WithholdPubacks(time.Hour)
	done := make(chan error, 1)
	go func() { done <- conn.Publish(context.Background(), hub.Message{Body: []byte("x")}) }()
	select {
	case err := <-done:
		t.Fatalf("Publish returned %v without a PUBACK", err)
	case <-time.After(200 * time.Millisecond):
	}
	e.hub.DropConnections("dev1")
	select {
	case err := <-done:
		if !errors.Is(err, hub.ErrConnectionLost) {
			t.Fatalf("Publish = %v, want ErrConnectionLost", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Publish did not return after the connection dropped")
	}
}

func TestTLSRefusals(t *testing.T) {
	e := newEnv(t)
	other, err := devcert.NewCA(e.start)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		mod  func(*hub.Options)
		want string
	}{
		{"wrong CA", func(o *hub.Options) { o.TLSConfig = &tls.Config{RootCAs: other.Pool()} }, "certificate signed by unknown authority"},
		{"wrong host name", func(o *hub.Options) {
			o.Host = "wrong-hub.example:8883"
			o.Dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, e.hub.MQTTAddr())
			}
		}, "certificate is valid for"},
		{"verification cannot be disabled", func(o *hub.Options) {
			o.TLSConfig = &tls.Config{InsecureSkipVerify: true, RootCAs: other.Pool()}
		}, "certificate signed by unknown authority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := e.client(t, &recorder{}, func(o *hub.Options) {
				tt.mod(o)
				oneAttempt(o)
			})
			run(t, c)
			eventually(t, "a failed attempt", func() bool { return c.Status().LastError != "" })
			if st := c.Status(); !strings.Contains(st.LastError, tt.want) || st.Connects != 0 {
				t.Errorf("status = %+v, want error containing %q", st, tt.want)
			}
		})
	}
}

func TestExpiredCertificateRefused(t *testing.T) {
	e := newEnv(t)
	// TLS validity is checked on the device's corrected clock: two days
	// ahead, the server certificate (valid for 24 h) has expired.
	c := e.client(t, &recorder{}, func(o *hub.Options) {
		o.Now = func() time.Time { return time.Now().Add(48 * time.Hour) }
		oneAttempt(o)
	})
	run(t, c)
	eventually(t, "a failed attempt", func() bool { return c.Status().LastError != "" })
	if st := c.Status(); !strings.Contains(st.LastError, "expired") || st.Connects != 0 {
		t.Errorf("status = %+v, want a certificate expiry error", st)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	_, err := hub.New(hub.Options{Transport: "amqp"})
	if err == nil {
		t.Fatal("want error")
	}
	for _, want := range []string{"Host is empty", "DeviceID is empty", "Signer is nil", "Handler is nil", `"amqp"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
