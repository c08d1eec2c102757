// Package agenttest runs the IoT Hub and DPS emulators in-process on
// loopback, behind TLS with a throwaway CA, and writes agent configurations
// pointing at them — the harness of the agent's end-to-end tests, the chaos
// suite and the benchmarks. It is test-only: the fieldgate binary never
// imports it.
package agenttest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/agent/hub/hubtest"
	"github.com/fieldgate/fieldgate/internal/devcert"
	"github.com/fieldgate/fieldgate/provisioning/dpstest"
)

// GroupKey is the enrollment-group key the emulator accepts (base64).
const GroupKey = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="

// IDScope is the emulated DPS id scope.
const IDScope = "0ne00FG0001"

// Options configure an Emulator. The zero value works.
type Options struct {
	// Now is the emulators' wall clock (skew it to test a wrong device
	// clock); nil → time.Now.
	Now func() time.Time
	// StateDir persists the hub (registry, twins, telemetry log) and DPS;
	// "" → in memory.
	StateDir string
	// MQTTAddr / HTTPSAddr to listen on; "" → 127.0.0.1:0. Restarting an
	// emulator on the same addresses keeps agents' assignments valid.
	MQTTAddr, HTTPSAddr string
	// TokenGrace is the hub's grace after token expiry.
	TokenGrace time.Duration
	// RetryAfter for DPS 202 replies (seconds); 0 → 2.
	RetryAfter int
	Logger     *slog.Logger
	// CA reuses a certificate authority (restart an emulator that agents
	// already trust); nil → a new throwaway CA.
	CA *devcert.CA
	// OnDPSRequest, when set, sees every DPS device API request (time on
	// the real clock, method, path) before it is served.
	OnDPSRequest func(at time.Time, method, path string)
}

// Emulator is a running hub + DPS pair.
type Emulator struct {
	Hub    *hubtest.Hub
	DPS    *dpstest.Server
	CA     *devcert.CA
	CAFile string // PEM of the CA, for hub.ca_file
	Dir    string // scratch directory holding CAFile and key files

	o      Options
	https  *http.Server
	ln     net.Listener
	mu     sync.Mutex
	closed bool
}

// Start starts both emulators; t.Cleanup closes them.
func Start(t testing.TB, o Options) *Emulator {
	t.Helper()
	e, err := New(o, t.TempDir())
	if err != nil {
		t.Fatalf("agenttest: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// New starts both emulators with scratch files in dir.
func New(o Options, dir string) (*Emulator, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MQTTAddr == "" {
		o.MQTTAddr = "127.0.0.1:0"
	}
	if o.HTTPSAddr == "" {
		o.HTTPSAddr = "127.0.0.1:0"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Emulator{o: o, Dir: dir}
	// The CA itself is valid on both the real and the skewed clock; the
	// server certificate follows the emulator clock like the binary's.
	ca := o.CA
	if ca == nil {
		var err error
		ca, err = devcert.NewCA(minTime(time.Now(), o.Now()).Add(-24 * time.Hour))
		if err != nil {
			return nil, err
		}
	}
	e.CA = ca
	e.CAFile = filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(e.CAFile, ca.CertPEM(), 0o644); err != nil {
		return nil, err
	}
	now := o.Now()
	cert, err := ca.Issue([]string{"localhost"}, now.Add(-time.Hour), now.Add(30*24*time.Hour))
	if err != nil {
		return nil, err
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}

	hubDir, dpsDir := "", ""
	if o.StateDir != "" {
		hubDir, dpsDir = filepath.Join(o.StateDir, "hub"), filepath.Join(o.StateDir, "dps")
		for _, d := range []string{hubDir, dpsDir} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return nil, err
			}
		}
	}
	h, err := hubtest.New(hubtest.Options{
		HubHost:    "localhost",
		MQTTAddr:   o.MQTTAddr,
		TLSConfig:  tlsCfg,
		Now:        o.Now,
		TokenGrace: o.TokenGrace,
		StateDir:   hubDir,
		Logger:     o.Logger.With("emulator", "hub"),
	})
	if err != nil {
		return nil, err
	}
	if err := h.Start(); err != nil {
		return nil, err
	}
	e.Hub = h
	_, port, _ := net.SplitHostPort(h.MQTTAddr())
	assigned := "localhost"
	if port != "8883" {
		assigned += ":" + port
	}
	d, err := dpstest.New(dpstest.Options{
		IDScope:     IDScope,
		AssignedHub: assigned,
		Groups:      []dpstest.Group{{ID: "default", Key: GroupKey}},
		Registry:    h,
		Now:         o.Now,
		RetryAfter:  o.RetryAfter,
		StateDir:    dpsDir,
		Logger:      o.Logger.With("emulator", "dps"),
	})
	if err != nil {
		h.Close()
		return nil, err
	}
	e.DPS = d
	ln, err := net.Listen("tcp", o.HTTPSAddr)
	if err != nil {
		h.Close()
		return nil, err
	}
	e.ln = ln
	svc := h.ServiceHandler()
	ws := h.WebSocketHandler()
	mux := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/$iothub/websocket":
			ws.ServeHTTP(w, r)
		case dpstest.IsDeviceAPIPath(r.URL.EscapedPath()):
			if o.OnDPSRequest != nil {
				o.OnDPSRequest(time.Now(), r.Method, r.URL.Path)
			}
			d.ServeHTTP(w, r)
		default:
			svc.ServeHTTP(w, r)
		}
	})
	e.https = &http.Server{Handler: mux, TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = e.https.ServeTLS(ln, "", "") }()
	return e, nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// DPSEndpoint is the https base URL of the emulated DPS.
func (e *Emulator) DPSEndpoint() string {
	_, port, _ := net.SplitHostPort(e.ln.Addr().String())
	return "https://localhost:" + port
}

// HTTPClient trusts the emulator's CA.
func (e *Emulator) HTTPClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: e.CA.Pool(), MinVersion: tls.VersionTLS12}}}
}

// HTTPSAddr is the address of the HTTPS listener (DPS, service API, WebSocket).
func (e *Emulator) HTTPSAddr() string { return e.ln.Addr().String() }

// Close stops both emulators.
func (e *Emulator) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err1 := e.https.Shutdown(ctx)
	err2 := e.Hub.Close()
	return errors.Join(err1, err2)
}

// AgentConfig describes the agent configuration WriteAgentConfig writes.
type AgentConfig struct {
	StateDir       string   // required
	RegistrationID string   // default "fieldgate-test"
	NTPServers     []string // nil → [] (trust the system clock)
	Sensors        string   // extra TOML ([[sensor]] tables); default: one simulated "env" sensor at 1s
	Telemetry      string   // [telemetry] body; default interval 1s, batch_window 0s
	Extra          string   // appended verbatim
	Transport      string   // mqtt (default) or mqtt-ws
}

// WriteAgentConfig writes the group key (0600) and an agent config pointing
// at the emulator into dir and returns the config path.
func (e *Emulator) WriteAgentConfig(dir string, c AgentConfig) (string, error) {
	if c.RegistrationID == "" {
		c.RegistrationID = "fieldgate-test"
	}
	if c.Sensors == "" {
		c.Sensors = `[[sensor]]
name = "env"
kind = "simulated"
interval = "1s"
values = ["temperature_c", "humidity_pct"]
`
	}
	if c.Telemetry == "" {
		c.Telemetry = "interval = \"1s\"\nbatch_window = \"0s\"\nmax_messages_per_second = 50\n"
	}
	if c.Transport == "" {
		c.Transport = "mqtt"
	}
	keyFile := filepath.Join(dir, "group.key")
	if err := os.WriteFile(keyFile, []byte(GroupKey+"\n"), 0o600); err != nil {
		return "", err
	}
	ntp := "[]"
	if len(c.NTPServers) > 0 {
		ntp = `["` + strings.Join(c.NTPServers, `", "`) + `"]`
	}
	doc := fmt.Sprintf(`log_level = "debug"

[state]
dir = %q

[time]
ntp_servers = %s
sync_timeout = "1s"

[provisioning]
source = "dps"
global_endpoint = %q
id_scope = %q
registration_id = %q

[provisioning.attestation]
method = "symmetric_key"
group_key_file = %q

[hub]
transport = %q
ca_file = %q

[telemetry]
%s
%s
%s`, c.StateDir, ntp, e.DPSEndpoint(), IDScope, c.RegistrationID, keyFile, c.Transport, e.CAFile, c.Telemetry, c.Sensors, c.Extra)
	path := filepath.Join(dir, "agent.toml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		return "", err
	}
	return path, nil
}
