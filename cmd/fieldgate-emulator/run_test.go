package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/testlog"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/jonboulle/clockwork"

	"github.com/fieldgate/fieldgate/internal/emuconfig"
	"github.com/fieldgate/fieldgate/sas"
)

// fixture is an initialised emulator directory.
type fixture struct {
	cfgPath string
	cfg     *emuconfig.Config
	pool    *x509.CertPool
}

const (
	plainDeviceID  = "plain-dev"
	plainDeviceKey = "cGxhaW4tZGV2aWNlLWtleS1wbGFpbi1kZXZpY2Uta2V5"
)

// newFixture runs init in a temporary directory and adds a hub-only device.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	res, err := initDir(t.TempDir(), false, time.Now(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := emuconfig.Load(res.Config)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Devices = append(cfg.Devices, emuconfig.Device{ID: plainDeviceID, Key: plainDeviceKey})
	if err := emuconfig.Write(res.Config, cfg); err != nil {
		t.Fatal(err)
	}
	pemCA, err := os.ReadFile(res.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemCA)
	return &fixture{cfgPath: res.Config, cfg: cfg, pool: pool}
}

// start runs the emulator in-process on free loopback ports.
func (f *fixture) start(t *testing.T, skew time.Duration, log io.Writer) *emulator {
	t.Helper()
	cfg, err := emuconfig.Load(f.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MQTTAddr, cfg.HTTPSAddr = "127.0.0.1:0", "127.0.0.1:0"
	if log == nil {
		log = io.Discard
	}
	em, err := startEmulator(runOptions{Config: cfg, Skew: skew, Clock: clockwork.NewRealClock(),
		Logger: slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatalf("startEmulator: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		em.Close(ctx)
	})
	return em
}

// tlsConfig trusts the fixture CA and sees the clock at now()+skew.
func (f *fixture) tlsConfig(skew time.Duration) *tls.Config {
	return &tls.Config{RootCAs: f.pool, ServerName: "localhost", MinVersion: tls.VersionTLS12,
		Time: func() time.Time { return time.Now().Add(skew) }}
}

func (f *fixture) httpClient(skew time.Duration) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: f.tlsConfig(skew)}}
}

// serviceToken signs a service SAS expiring at exp.
func (f *fixture) serviceToken(t *testing.T, exp time.Time) string {
	t.Helper()
	k, err := sas.ParseKey(f.cfg.ServicePolicy.Key)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := sas.New(f.cfg.HubHost, f.cfg.ServicePolicy.Name, exp.Unix(), k)
	if err != nil {
		t.Fatal(err)
	}
	return tok.String()
}

// do sends an HTTPS request and returns status and body.
func do(t *testing.T, c *http.Client, method, url, auth string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// deviceKey derives a group member's key.
func (f *fixture) deviceKey(t *testing.T, regID string) *sas.Key {
	t.Helper()
	g, err := sas.ParseKey(f.cfg.EnrollmentGroups[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	k, err := sas.DeriveKey(g, regID)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// register provisions regID through the DPS HTTPS endpoint and returns the
// final operation status.
func (f *fixture) register(t *testing.T, em *emulator, regID string, exp time.Time) (int, map[string]any) {
	t.Helper()
	tok, err := sas.NewRegistrationToken(f.cfg.IDScope, regID, exp.Unix(), f.deviceKey(t, regID))
	if err != nil {
		t.Fatal(err)
	}
	c := f.httpClient(em.skew)
	base := "https://" + em.HTTPSAddr() + "/" + f.cfg.IDScope + "/registrations/" + regID
	status, body := do(t, c, http.MethodPut, base+"/register?api-version=2021-06-01", tok.String(), map[string]string{"registrationId": regID})
	if status != http.StatusAccepted {
		return status, nil
	}
	var op struct {
		OperationID string `json:"operationId"`
	}
	if err := json.Unmarshal(body, &op); err != nil || op.OperationID == "" {
		t.Fatalf("register reply %s: no operationId", body)
	}
	for range 4 {
		status, body = do(t, c, http.MethodGet, base+"/operations/"+op.OperationID+"?api-version=2021-06-01", tok.String(), nil)
		var st map[string]any
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatalf("operation reply %s: %v", body, err)
		}
		if st["status"] != "assigning" {
			return status, st
		}
	}
	t.Fatal("registration still assigning after 4 polls")
	return 0, nil
}

// connect opens a paho MQTT connection for deviceID to broker (ssl:// or
// wss:// URL) with a token expiring at exp.
func (f *fixture) connect(t *testing.T, broker, deviceID string, key sas.Signer, exp time.Time, skew time.Duration) (paho.Client, error) {
	t.Helper()
	tok, err := sas.NewDeviceToken(f.cfg.HubHost, deviceID, "", exp.Unix(), key)
	if err != nil {
		t.Fatal(err)
	}
	o := paho.NewClientOptions().AddBroker(broker).SetClientID(deviceID).
		SetUsername(f.cfg.HubHost + "/" + deviceID + "/?api-version=2021-04-12").SetPassword(tok.String()).
		SetTLSConfig(f.tlsConfig(skew)).SetProtocolVersion(4).SetCleanSession(false).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(o)
	ct := c.Connect()
	if !ct.WaitTimeout(10 * time.Second) {
		return nil, errors.New("connect timed out")
	}
	if err := ct.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

func publish(t *testing.T, c paho.Client, deviceID, body string) {
	t.Helper()
	pt := c.Publish("devices/"+deviceID+"/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8", 1, false, body)
	if !pt.WaitTimeout(10*time.Second) || pt.Error() != nil {
		t.Fatalf("publish: timed out or %v", pt.Error())
	}
}

func TestRunEndToEnd(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan *emulator, 1)
	logs := &testlog.Buffer{}
	out := &testlog.Buffer{}
	e := env{stdout: out, stderr: logs, clock: clockwork.NewRealClock(), random: rand.Reader,
		ready: func(em *emulator) { ready <- em }}
	exit := make(chan int, 1)
	go func() {
		exit <- cli(ctx, []string{"run", "--config", f.cfgPath, "--mqtt-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0",
			"--log-level", "debug", "--dps-retry-after", "1"}, e)
	}()
	var em *emulator
	select {
	case em = <-ready:
	case code := <-exit:
		t.Fatalf("run exited early with %d: %s", code, logs)
	case <-time.After(15 * time.Second):
		t.Fatal("emulator did not start")
	}
	for _, w := range []string{"MQTT (TLS)    " + em.MQTTAddr(), "HTTPS         " + em.HTTPSAddr(), "ID scope      " + f.cfg.IDScope, "CA            " + f.cfg.CAFile, "hub host      localhost"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("banner lacks %q:\n%s", w, out)
		}
	}
	_, mqttPort, _ := net.SplitHostPort(em.MQTTAddr())
	base := "https://" + em.HTTPSAddr()
	client := f.httpClient(0)
	svc := f.serviceToken(t, time.Now().Add(time.Hour))
	const regID = "e2e-device-1"

	t.Run("dps registration", func(t *testing.T) {
		status, st := f.register(t, em, regID, time.Now().Add(time.Hour))
		if status != http.StatusOK {
			t.Fatalf("operation status = %d; want 200", status)
		}
		rs, _ := st["registrationState"].(map[string]any)
		if st["status"] != "assigned" || rs["assignedHub"] != "localhost:"+mqttPort || rs["deviceId"] != regID {
			t.Fatalf("operation = %v; want assigned to localhost:%s as %s", st, mqttPort, regID)
		}
	})

	// The connection outlives the subtest: the watch subtest publishes on it.
	dev, devErr := f.connect(t, "ssl://"+em.MQTTAddr(), regID, f.deviceKey(t, regID), time.Now().Add(time.Hour), 0)
	t.Run("mqtt over tls", func(t *testing.T) {
		if devErr != nil {
			t.Fatalf("connect: %v", devErr)
		}
		publish(t, dev, regID, `{"records":[{"seq":1,"ts":"2026-11-22T10:00:00.000Z","sensor":"env","values":{"temperature_c":21.5}}]}`)
	})
	if devErr != nil {
		t.FailNow()
	}

	t.Run("mqtt over websocket", func(t *testing.T) {
		k, _ := sas.ParseKey(plainDeviceKey)
		c, err := f.connect(t, "wss://"+em.HTTPSAddr()+"/$iothub/websocket", plainDeviceID, k, time.Now().Add(time.Hour), 0)
		if err != nil {
			t.Fatalf("connect over websocket: %v", err)
		}
		publish(t, c, plainDeviceID, "ws hello")
	})

	t.Run("service api", func(t *testing.T) {
		other := f.serviceToken(t, time.Now().Add(-time.Minute))
		tests := []struct {
			name, method, path, auth string
			body                     any
			want                     int
			wantBody                 string
		}{
			{"twin without sas", http.MethodGet, "/twins/" + regID, "", nil, 401, "401002"},
			{"twin expired sas", http.MethodGet, "/twins/" + regID, other, nil, 401, "401002"},
			{"registrations without sas", http.MethodGet, "/emulator/registrations", "", nil, 401, "401002"},
			{"faults without sas", http.MethodPost, "/emulator/faults", "", map[string]any{"clear": true}, 401, "401002"},
			{"twin", http.MethodGet, "/twins/" + regID, svc, nil, 200, `"deviceId":"` + regID + `"`},
			{"device", http.MethodGet, "/devices/" + plainDeviceID, svc, nil, 200, `"deviceId":"` + plainDeviceID + `"`},
			{"desired patch", http.MethodPatch, "/twins/" + regID, svc, map[string]any{"properties": map[string]any{"desired": map[string]any{"telemetryInterval": "10s"}}}, 200, `"telemetryInterval":"10s"`},
			{"connections", http.MethodGet, "/emulator/connections", svc, nil, 200, `"transport":"mqtt-ws"`},
			{"registrations", http.MethodGet, "/emulator/registrations", svc, nil, 200, `"registrationId":"` + regID + `"`},
			{"registrations wrong method", http.MethodDelete, "/emulator/registrations", svc, nil, 405, "405000"},
			{"messages", http.MethodGet, "/emulator/messages?deviceId=" + regID, svc, nil, 200, `temperature_c`},
			{"unknown fault", http.MethodPost, "/emulator/faults", svc, map[string]any{"bogus": 1}, 400, "unknown fault key"},
			{"bad dps fault", http.MethodPost, "/emulator/faults", svc, map[string]any{"dps": map[string]any{"status": 404, "count": 1}}, 400, "not injectable"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				status, body := do(t, client, tt.method, base+tt.path, tt.auth, tt.body)
				if status != tt.want || !strings.Contains(string(body), tt.wantBody) {
					t.Fatalf("%s %s = %d %s; want %d containing %q", tt.method, tt.path, status, body, tt.want, tt.wantBody)
				}
			})
		}
	})

	t.Run("dps faults", func(t *testing.T) {
		status, body := do(t, client, http.MethodPost, base+"/emulator/faults", svc, map[string]any{"dps": map[string]any{"status": 429, "count": 1}})
		if status != 200 {
			t.Fatalf("inject = %d %s", status, body)
		}
		if status, _ := f.register(t, em, "e2e-device-2", time.Now().Add(time.Hour)); status != 429 {
			t.Fatalf("register after injecting 429 = %d; want 429", status)
		}
		if status, _ := f.register(t, em, "e2e-device-2", time.Now().Add(time.Hour)); status != 200 {
			t.Fatalf("register after the injected fault = %d; want 200", status)
		}
		do(t, client, http.MethodPost, base+"/emulator/faults", svc, map[string]any{"dps": map[string]any{"status": 503, "count": 5}})
		if status, body := do(t, client, http.MethodPost, base+"/emulator/faults", svc, map[string]any{"clear": true}); status != 200 {
			t.Fatalf("clear = %d %s", status, body)
		}
		if status, _ := f.register(t, em, "e2e-device-3", time.Now().Add(time.Hour)); status != 200 {
			t.Fatalf("register after clear = %d; want 200", status)
		}
	})

	t.Run("watch", func(t *testing.T) {
		wctx, wcancel := context.WithCancel(ctx)
		defer wcancel()
		wout := &testlog.Buffer{}
		we := env{stdout: wout, stderr: io.Discard, clock: clockwork.NewRealClock(), random: rand.Reader}
		done := make(chan int, 1)
		go func() {
			done <- cli(wctx, []string{"watch", "--config", f.cfgPath, "--https-addr", em.HTTPSAddr(), "--all", "--interval", "50ms", "--device", regID}, we)
		}()
		if !eventually(t, 10*time.Second, func() bool { return strings.Contains(wout.String(), regID+" seq=1 ") }) {
			t.Fatalf("watch did not print the stored record:\n%s", wout)
		}
		publish(t, dev, regID, `{"records":[{"seq":2,"ts":"2026-11-22T10:00:02.000Z","sensor":"env","values":{"temperature_c":21.6}}]}`)
		want := regID + " seq=2 ts=2026-11-22T10:00:02.000Z sensor=env temperature_c=21.6"
		if !eventually(t, 10*time.Second, func() bool { return strings.Contains(wout.String(), want) }) {
			t.Fatalf("watch did not print the published record %q:\n%s", want, wout)
		}
		wcancel()
		if code := <-done; code != exitOK {
			t.Fatalf("watch exit = %d; want 0", code)
		}
	})

	cancel()
	select {
	case code := <-exit:
		if code != exitOK {
			t.Fatalf("run exit after cancel = %d; want 0\n%s", code, logs)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not stop after cancel")
	}
	// Secrets never reach the log.
	secrets := []string{f.cfg.ServicePolicy.Key, f.cfg.EnrollmentGroups[0].Key, f.deviceKey(t, regID).Base64(), plainDeviceKey, svc, "sig="}
	for _, s := range secrets {
		if strings.Contains(logs.String(), s) || strings.Contains(out.String(), s) {
			t.Errorf("log or banner contains a secret (%.6s…)", s)
		}
	}
	if !strings.Contains(logs.String(), regID) {
		t.Errorf("log has no line about %s:\n%s", regID, logs)
	}
}

func TestRunClockSkew(t *testing.T) {
	f := newFixture(t)
	const skew = 2 * time.Hour
	em := f.start(t, skew, nil)
	now := time.Now()

	t.Run("certificate follows the skewed clock", func(t *testing.T) {
		tests := []struct {
			name      string
			clientNow time.Duration
			wantErr   bool
		}{
			{"client agrees with the emulator", skew, false},
			{"client clock true (2h behind)", 0, true},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", em.MQTTAddr(), f.tlsConfig(tt.clientNow))
				if c != nil {
					c.Close()
				}
				if (err != nil) != tt.wantErr {
					t.Fatalf("TLS dial error = %v; wantErr %v", err, tt.wantErr)
				}
				var inv x509.CertificateInvalidError
				if tt.wantErr && !errors.As(err, &inv) {
					t.Fatalf("TLS dial error = %v; want an x509 validity error", err)
				}
			})
		}
	})

	t.Run("device token checked on the skewed clock", func(t *testing.T) {
		k, _ := sas.ParseKey(plainDeviceKey)
		if _, err := f.connect(t, "ssl://"+em.MQTTAddr(), plainDeviceID, k, now.Add(time.Hour), skew); err == nil {
			t.Fatal("a token valid for 1h on the true clock was accepted by an emulator 2h ahead")
		}
		if _, err := f.connect(t, "ssl://"+em.MQTTAddr(), plainDeviceID, k, now.Add(3*time.Hour), skew); err != nil {
			t.Fatalf("a token valid on the skewed clock was refused: %v", err)
		}
	})

	t.Run("service token checked on the skewed clock", func(t *testing.T) {
		c := f.httpClient(skew)
		url := "https://" + em.HTTPSAddr() + "/twins/" + plainDeviceID
		if status, _ := do(t, c, http.MethodGet, url, f.serviceToken(t, now.Add(time.Hour)), nil); status != 401 {
			t.Fatalf("service token expired on the emulator clock: status %d; want 401", status)
		}
		if status, body := do(t, c, http.MethodGet, url, f.serviceToken(t, now.Add(3*time.Hour)), nil); status != 200 {
			t.Fatalf("service token valid on the emulator clock: status %d %s; want 200", status, body)
		}
	})

	t.Run("dps token checked on the skewed clock", func(t *testing.T) {
		if status, _ := f.register(t, em, "skewed-1", now.Add(time.Hour)); status != 401 {
			t.Fatalf("register with a token expired on the emulator clock = %d; want 401", status)
		}
		if status, _ := f.register(t, em, "skewed-1", now.Add(3*time.Hour)); status != 200 {
			t.Fatalf("register with a valid token = %d; want 200", status)
		}
	})
}

func TestRunRestartKeepsState(t *testing.T) {
	f := newFixture(t)
	em := f.start(t, 0, nil)
	const regID = "restart-dev"
	if status, _ := f.register(t, em, regID, time.Now().Add(time.Hour)); status != 200 {
		t.Fatalf("register = %d", status)
	}
	c, err := f.connect(t, "ssl://"+em.MQTTAddr(), regID, f.deviceKey(t, regID), time.Now().Add(time.Hour), 0)
	if err != nil {
		t.Fatal(err)
	}
	publish(t, c, regID, `{"records":[{"seq":7,"ts":"t","sensor":"env","values":{"v":1}}]}`)
	svc := f.serviceToken(t, time.Now().Add(time.Hour))
	client := f.httpClient(0)
	if status, body := do(t, client, http.MethodPatch, "https://"+em.HTTPSAddr()+"/twins/"+regID, svc,
		map[string]any{"properties": map[string]any{"desired": map[string]any{"answer": 42}}}); status != 200 {
		t.Fatalf("patch = %d %s", status, body)
	}
	c.Disconnect(100)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := em.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}

	em2 := f.start(t, 0, nil)
	base := "https://" + em2.HTTPSAddr()
	checks := []struct{ name, path, want string }{
		{"device", "/devices/" + regID, `"deviceId":"` + regID + `"`},
		{"twin", "/twins/" + regID, `"answer":42`},
		{"message", "/emulator/messages?deviceId=" + regID, `\"seq\":7`},
		{"registration", "/emulator/registrations", `"registrationId":"` + regID + `"`},
	}
	for _, ch := range checks {
		t.Run(ch.name, func(t *testing.T) {
			status, body := do(t, client, http.MethodGet, base+ch.path, svc, nil)
			if status != 200 || !strings.Contains(string(body), ch.want) {
				t.Fatalf("GET %s after restart = %d %s; want 200 containing %s", ch.path, status, body, ch.want)
			}
		})
	}
	// The device connects again with its derived key after the restart.
	if _, err := f.connect(t, "ssl://"+em2.MQTTAddr(), regID, f.deviceKey(t, regID), time.Now().Add(time.Hour), 0); err != nil {
		t.Fatalf("reconnect after restart: %v", err)
	}
}

func TestAssignedHub(t *testing.T) {
	tests := []struct{ host, addr, want string }{
		{"localhost", "127.0.0.1:8883", "localhost"},
		{"localhost", "127.0.0.1:18883", "localhost:18883"},
		{"hub.local", "[::1]:1234", "hub.local:1234"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.host, " ", tt.addr), func(t *testing.T) {
			if got := assignedHub(tt.host, tt.addr); got != tt.want {
				t.Fatalf("assignedHub(%q, %q) = %q; want %q", tt.host, tt.addr, got, tt.want)
			}
		})
	}
}

func TestRunStartErrors(t *testing.T) {
	f := newFixture(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		name   string
		mutate func(c *emuconfig.Config)
		want   string
	}{
		{"https port in use", func(c *emuconfig.Config) { c.HTTPSAddr = busy.Addr().String() }, "https_addr"},
		{"mqtt port in use", func(c *emuconfig.Config) { c.MQTTAddr = busy.Addr().String() }, "MQTT"},
		{"missing CA", func(c *emuconfig.Config) { c.CAFile += ".missing" }, "CA certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := emuconfig.Load(f.cfgPath)
			if err != nil {
				t.Fatal(err)
			}
			cfg.MQTTAddr, cfg.HTTPSAddr = "127.0.0.1:0", "127.0.0.1:0"
			cfg.StateDir = t.TempDir()
			tt.mutate(cfg)
			em, err := startEmulator(runOptions{Config: cfg})
			if err == nil {
				em.Close(context.Background())
				t.Fatal("startEmulator succeeded; want error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q lacks %q", err, tt.want)
			}
		})
	}
}
