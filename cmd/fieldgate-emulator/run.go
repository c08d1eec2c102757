package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/fieldgate/fieldgate/agent/hub/hubtest"
	"github.com/fieldgate/fieldgate/internal/devcert"
	"github.com/fieldgate/fieldgate/internal/emuconfig"
	"github.com/fieldgate/fieldgate/provisioning/dpstest"
	"github.com/fieldgate/fieldgate/sas"
)

// serverCertLifetime is how long an issued server certificate is valid after
// the (skewed) start time.
const serverCertLifetime = 365 * 24 * time.Hour

// runOptions configure startEmulator.
type runOptions struct {
	Config *emuconfig.Config // loaded and validated; flags already applied
	Skew   time.Duration     // added to Clock.Now for every time check
	Clock  clockwork.Clock   // or nil (real clock)
	Logger *slog.Logger      // or nil (discard)
}

// emulator is a running hub + DPS pair behind one MQTT/TLS listener and one
// HTTPS listener.
type emulator struct {
	cfg         *emuconfig.Config
	skew        time.Duration
	clock       clockwork.Clock
	log         *slog.Logger
	hub         *hubtest.Hub
	dps         *dpstest.Server
	policyKey   *sas.Key
	assignedHub string
	httpsLn     net.Listener
	srv         *http.Server
	serveErr    chan error
	closeOnce   sync.Once
	closeErr    error
}

// now is the emulator's (possibly skewed) clock.
func (e *emulator) now() time.Time { return e.clock.Now().Add(e.skew) }

// startEmulator loads the CA, issues the server certificate for the skewed
// clock, starts the hub (MQTT over TLS) and serves DPS, MQTT over WebSocket,
// the service API and the emulator endpoints on the HTTPS listener.
func startEmulator(o runOptions) (_ *emulator, err error) {
	cfg := o.Config
	e := &emulator{cfg: cfg, skew: o.Skew, clock: o.Clock, log: o.Logger, serveErr: make(chan error, 1)}
	if e.clock == nil {
		e.clock = clockwork.NewRealClock()
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	e.policyKey, err = sas.ParseKey(cfg.ServicePolicy.Key)
	if err != nil {
		return nil, fmt.Errorf("fieldgate-emulator: service_policy.key: %w", err)
	}

	ca, err := devcert.LoadCA(cfg.CAFile, cfg.CAKeyFile)
	if err != nil {
		return nil, fmt.Errorf("fieldgate-emulator: %w", err)
	}
	start := e.now()
	notBefore := start.Add(-time.Hour)
	notAfter := start.Add(serverCertLifetime)
	if caEnd := ca.Certificate().NotAfter; notAfter.After(caEnd) {
		notAfter = caEnd
	}
	if caStart := ca.Certificate().NotBefore; notBefore.Before(caStart) {
		e.log.Warn("the emulator clock is before the CA's validity; devices whose clock agrees with the emulator will reject the CA — re-run init with a matching clock",
			"emulator_time", start.UTC(), "ca_not_before", caStart.UTC())
	}
	cert, err := ca.Issue([]string{cfg.HubHost}, notBefore, notAfter)
	if err != nil {
		return nil, fmt.Errorf("fieldgate-emulator: %w", err)
	}
	tlsConfig := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		Time:         e.now,
	}

	hubState, dpsState := "", ""
	if cfg.StateDir != "" {
		hubState, dpsState = filepath.Join(cfg.StateDir, "hub"), filepath.Join(cfg.StateDir, "dps")
		for _, d := range []string{cfg.StateDir, hubState, dpsState} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return nil, fmt.Errorf("fieldgate-emulator: state_dir: %w", err)
			}
		}
	}

	e.hub, err = hubtest.New(hubtest.Options{
		HubHost:       cfg.HubHost,
		MQTTAddr:      cfg.MQTTAddr,
		TLSConfig:     tlsConfig,
		ServicePolicy: hubtest.Policy{Name: cfg.ServicePolicy.Name, Key: cfg.ServicePolicy.Key},
		Now:           e.now,
		TokenGrace:    cfg.TokenGrace,
		StateDir:      hubState,
		Clock:         e.clock,
		Logger:        e.log.With("component", "hub"),
		ExtraFaults:   e.extraFaults,
	})
	if err != nil {
		return nil, fmt.Errorf("fieldgate-emulator: hub: %w", err)
	}
	defer func() {
		if err != nil {
			e.hub.Close()
		}
	}()
	for _, d := range cfg.Devices {
		if err := e.hub.UpsertDevice(d.ID, d.Key); err != nil {
			return nil, fmt.Errorf("fieldgate-emulator: device %q: %w", d.ID, err)
		}
	}
	if err := e.hub.Start(); err != nil {
		return nil, fmt.Errorf("fieldgate-emulator: hub: %w", err)
	}
	e.assignedHub = assignedHub(cfg.HubHost, e.hub.MQTTAddr())

	opts := dpstest.Options{
		IDScope:     cfg.IDScope,
		AssignedHub: e.assignedHub,
		Registry:    e.hub,
		Now:         e.now,
		RetryAfter:  cfg.DPSRetryAfter,
		StateDir:    dpsState,
		Logger:      e.log.With("component", "dps"),
	}
	for _, g := range cfg.EnrollmentGroups {
		opts.Groups = append(opts.Groups, dpstest.Group{ID: g.ID, Key: g.Key, Disabled: g.Disabled})
	}
	for _, en := range cfg.Enrollments {
		opts.Enrollments = append(opts.Enrollments, dpstest.Enrollment{RegistrationID: en.RegistrationID, Key: en.Key, DeviceID: en.DeviceID, Disabled: en.Disabled})
	}
	e.dps, err = dpstest.New(opts)
	if err != nil {
		return nil, fmt.Errorf("fieldgate-emulator: dps: %w", err)
	}

	ln, err := net.Listen("tcp", cfg.HTTPSAddr)
	if err != nil {
		return nil, fmt.Errorf("fieldgate-emulator: https_addr %s: %w", cfg.HTTPSAddr, err)
	}
	e.httpsLn = ln
	e.srv = &http.Server{
		Handler:           e.handler(),
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(e.log.With("component", "https").Handler(), slog.LevelInfo), // TLS handshake failures (wrong CA or clock)
	}
	go func() {
		err := e.srv.ServeTLS(ln, "", "")
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.serveErr <- fmt.Errorf("fieldgate-emulator: https: %w", err)
		}
	}()
	e.log.Info("emulator started", "hub_host", cfg.HubHost, "mqtt_addr", e.MQTTAddr(), "https_addr", e.HTTPSAddr(),
		"assigned_hub", e.assignedHub, "id_scope", cfg.IDScope, "clock_skew", e.skew.String())
	return e, nil
}

// assignedHub is what DPS returns as assignedHub: the hub host, with the
// MQTT port appended unless it is the standard 8883.
func assignedHub(hubHost, mqttAddr string) string {
	_, port, err := net.SplitHostPort(mqttAddr)
	if err != nil || port == "8883" {
		return hubHost
	}
	return net.JoinHostPort(hubHost, port)
}

// MQTTAddr is the bound MQTT over TLS address.
func (e *emulator) MQTTAddr() string { return e.hub.MQTTAddr() }

// HTTPSAddr is the bound HTTPS address.
func (e *emulator) HTTPSAddr() string { return e.httpsLn.Addr().String() }

// AssignedHub is the assignedHub DPS hands out.
func (e *emulator) AssignedHub() string { return e.assignedHub }

// Wait blocks until ctx is done (nil) or a listener fails (its error).
func (e *emulator) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-e.serveErr:
		return err
	}
}

// Close stops the HTTPS server (waiting for requests in flight until ctx is
// done) and the hub. It is safe to call more than once.
func (e *emulator) Close(ctx context.Context) error {
	e.closeOnce.Do(func() {
		var errs []error
		if err := e.srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("fieldgate-emulator: https shutdown: %w", err))
			e.srv.Close()
		}
		if err := e.hub.Close(); err != nil {
			errs = append(errs, fmt.Errorf("fieldgate-emulator: hub close: %w", err))
		}
		e.closeErr = errors.Join(errs...)
	})
	return e.closeErr
}

// handler routes the HTTPS listener.
func (e *emulator) handler() http.Handler {
	ws := e.hub.WebSocketHandler()
	service := e.hub.ServiceHandler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case p == "/$iothub/websocket":
			ws.ServeHTTP(w, r)
		case dpstest.IsDeviceAPIPath(r.URL.EscapedPath()):
			e.dps.ServeHTTP(w, r)
		case p == "/emulator/registrations":
			e.serveRegistrations(w, r)
		case p == "/emulator/faults" && r.Method == http.MethodPost:
			e.serveFaults(w, r, service)
		default:
			service.ServeHTTP(w, r)
		}
	})
}

// authorize checks the service SAS of r as the hub's service API does: skn
// is the service policy, sr covers the hub host, signed by the policy key and
// not expired on the emulator clock. It writes 401 and returns false
// otherwise. The token never appears in the reply or the log.
func (e *emulator) authorize(w http.ResponseWriter, r *http.Request) bool {
	h := r.Header.Get("Authorization")
	var err error
	if h == "" {
		err = errors.New("missing Authorization header: want a SharedAccessSignature signed with the service policy key")
	} else if tok, perr := sas.Parse(h); perr != nil {
		err = fmt.Errorf("malformed Authorization token: %w", perr)
	} else if tok.KeyName != e.cfg.ServicePolicy.Name {
		err = fmt.Errorf("token key name %q is not the service policy %q", tok.KeyName, e.cfg.ServicePolicy.Name)
	} else if verr := sas.Verify(tok, e.policyKey, e.cfg.HubHost, e.now(), 0); verr != nil {
		err = fmt.Errorf("unauthorized: %w", verr)
	}
	if err != nil {
		e.log.Info("service request refused", "method", r.Method, "path", r.URL.Path, "reason", err.Error())
		e.writeError(w, http.StatusUnauthorized, 401002, err.Error())
		return false
	}
	return true
}

// serveRegistrations answers GET /emulator/registrations:
// {"registrations":[{"registrationId","at","status",…}]}, oldest first.
func (e *emulator) serveRegistrations(w http.ResponseWriter, r *http.Request) {
	if !e.authorize(w, r) {
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		e.writeError(w, http.StatusMethodNotAllowed, 405000, "method "+r.Method+" not allowed on "+r.URL.Path)
		return
	}
	regs := e.dps.Registrations()
	if regs == nil {
		regs = []dpstest.Registration{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"registrations": regs})
}

// dpsFault is the "dps" member of POST /emulator/faults.
type dpsFault struct {
	Status int  `json:"status"` // 429 or 5xx
	Count  int  `json:"count"`  // how many device requests answer Status
	Clear  bool `json:"clear"`  // cancel injected DPS faults
}

// extraFaults is the hub's Options.ExtraFaults: it applies the "dps" member
// of a POST /emulator/faults body ({"status":429,"count":3} or
// {"clear":true}) and refuses any other key the hub does not know.
func (e *emulator) extraFaults(extra map[string]any) error {
	for k, v := range extra {
		if k != "dps" {
			return fmt.Errorf("unknown fault key %q: want dropConnections, refuseConnects, withholdPubacksSeconds, clear or dps", k)
		}
		raw, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("fault \"dps\": %w", err)
		}
		var f dpsFault
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			return fmt.Errorf(`fault "dps" must be {"status":429 or 500-599,"count":N} or {"clear":true}: %w`, err)
		}
		if f.Clear || f.Count <= 0 {
			e.dps.ClearFaults()
			e.log.Info("dps faults cleared")
			continue
		}
		if err := e.dps.InjectFaults(f.Status, f.Count); err != nil {
			return fmt.Errorf("fault \"dps\": %w", err)
		}
		e.log.Info("dps faults injected", "status", f.Status, "count", f.Count)
	}
	return nil
}

// serveFaults passes POST /emulator/faults to the hub, which authorizes it,
// applies its own keys and hands "dps" to extraFaults. A top-level
// "clear":true the hub accepted also clears DPS faults, unless the same body
// sets new DPS faults (the hub applies clear first, then the rest).
func (e *emulator) serveFaults(w http.ResponseWriter, r *http.Request, hub http.Handler) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		e.writeError(w, http.StatusBadRequest, 400004, "read body: "+err.Error())
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	var doc struct {
		Clear bool            `json:"clear"`
		DPS   json.RawMessage `json:"dps"`
	}
	_ = json.Unmarshal(body, &doc) // the hub reports malformed bodies
	rec := &statusRecorder{ResponseWriter: w}
	hub.ServeHTTP(rec, r)
	if doc.Clear && doc.DPS == nil && rec.status == http.StatusOK {
		e.dps.ClearFaults()
		e.log.Info("dps faults cleared")
	}
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// writeError replies in the hub's error shape, stamped with the emulator clock.
func (e *emulator) writeError(w http.ResponseWriter, status, code int, msg string) {
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	writeJSON(w, status, map[string]any{
		"errorCode":    code,
		"message":      msg,
		"trackingId":   hex.EncodeToString(id),
		"timestampUtc": e.now().UTC().Format(time.RFC3339Nano),
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"errorCode":500001,"message":"encode reply"}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
