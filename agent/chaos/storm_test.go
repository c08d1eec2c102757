package chaos_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/testlog"

	"github.com/fieldgate/fieldgate/agent"
	"github.com/fieldgate/fieldgate/agent/agenttest"
	"github.com/fieldgate/fieldgate/agent/config"
	"github.com/fieldgate/fieldgate/agent/hub"
	"github.com/fieldgate/fieldgate/agent/hub/hubtest"
	"github.com/fieldgate/fieldgate/internal/devcert"
	"github.com/fieldgate/fieldgate/sas"
)

// TestTokenStorm runs with a token lifetime of a few seconds (scenario 4):
// the agent reconnects with a fresh token every ~2.4 s, the hub never has to
// cut a connection for an expired token, and nothing is lost.
func TestTokenStorm(t *testing.T) {
	run := 8 * time.Second
	if fullSuite {
		run = 2 * time.Minute
	}
	emu := agenttest.Start(t, agenttest.Options{RetryAfter: 1})
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	path, err := emu.WriteAgentConfig(dir, agenttest.AgentConfig{StateDir: state, Sensors: fastSensors, Telemetry: fastTelemetry})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testlog.Buffer{}
	a, err := agent.New(agent.Options{Config: cfg, Version: "chaos", Getenv: func(string) string { return "" },
		Logger: slog.New(slog.NewTextHandler(logs, nil)), TokenTTL: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	eventually(t, "connected", 30*time.Second, func() bool { return emu.Hub.Connected(dev) })
	time.Sleep(run)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	conns := emu.Hub.Connections()
	for _, c := range conns {
		if c.Reason == "token expired" {
			t.Errorf("the hub cut a connection for an expired token: %+v", c)
		}
	}
	if len(conns) < int(run/(3*time.Second)) {
		t.Errorf("%d connections in %s with 3 s tokens: refresh is not happening", len(conns), run)
	}
	res := tally(t, emu.Hub, state)
	res.Scenario = fmt.Sprintf("4 token storm: 3 s tokens for %s", run)
	res.Conditions = fmt.Sprintf("%d connections, none cut by the hub", len(conns))
	t.Log(res)
	record(res)
}

// TestFleetReconnectJitter: 200 hub sessions lose their hub at once and
// reconnect when it returns (scenario 9). Full-jitter backoff must spread the
// reconnections: the peak per 100 ms is compared with the uniform ideal.
func TestFleetReconnectJitter(t *testing.T) {
	n := 200
	if !fullSuite {
		n = 60
	}
	ca, err := devcert.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue([]string{"localhost"}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	start := func(addr string) *hubtest.Hub {
		h, err := hubtest.New(hubtest.Options{HubHost: "localhost", MQTTAddr: addr, TLSConfig: tlsCfg})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Start(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			if err := h.UpsertDevice(fmt.Sprintf("dev%03d", i), agenttest.GroupKey); err != nil {
				t.Fatal(err)
			}
		}
		return h
	}
	h := start("127.0.0.1:0")
	addr := h.MQTTAddr()
	_, port, _ := net.SplitHostPort(addr)
	key, _ := sas.ParseKey(agenttest.GroupKey)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		c, err := hub.New(hub.Options{Host: "localhost:" + port, DeviceID: fmt.Sprintf("dev%03d", i), Signer: key,
			TLSConfig: &tls.Config{RootCAs: ca.Pool()}, Handler: nopHandler{}, BackoffMin: time.Second, BackoffMax: 8 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = c.Run(ctx) }()
	}
	defer func() { cancel(); wg.Wait() }()
	eventually(t, "the fleet connected", 60*time.Second, func() bool { return countConnected(h, n) == n })

	outage := 3 * time.Second
	h.Close()
	time.Sleep(outage)
	back := time.Now()
	h = start(addr)
	defer h.Close()
	eventually(t, "the fleet reconnected", 90*time.Second, func() bool { return countConnected(h, n) == n })
	var at []time.Duration
	for _, c := range h.Connections() {
		at = append(at, c.ConnectedAt.Sub(back))
	}
	sort.Slice(at, func(i, j int) bool { return at[i] < at[j] })
	span := at[len(at)-1] - at[0]
	buckets := map[int]int{}
	peak := 0
	for _, d := range at {
		b := int(d / (100 * time.Millisecond))
		buckets[b]++
		peak = max(peak, buckets[b])
	}
	ideal := float64(n) / max(1, span.Seconds()*10)
	ratio := float64(peak) / ideal
	t.Logf("%d reconnects over %s after a %s outage: peak %d per 100 ms, uniform ideal %.1f (ratio %.1f)", n, span.Round(10*time.Millisecond), outage, peak, ideal, ratio)
	if span < time.Second {
		t.Errorf("reconnections spread over only %s: no jitter", span)
	}
	if peak > n/3 {
		t.Errorf("%d of %d clients reconnected within one 100 ms slot: lockstep", peak, n)
	}
	record(result{Scenario: fmt.Sprintf("9 fleet of %d reconnecting after a %s outage", n, outage), Recovery: span,
		Conditions: fmt.Sprintf("peak %d connects/100 ms vs uniform %.1f (×%.1f); backoff 1 s→8 s full jitter", peak, ideal, ratio)})
}

func countConnected(h *hubtest.Hub, n int) int {
	c := 0
	for i := 0; i < n; i++ {
		if h.Connected(fmt.Sprintf("dev%03d", i)) {
			c++
		}
	}
	return c
}

type nopHandler struct{}

func (nopHandler) Connected(context.Context, *hub.Conn)                 {}
func (nopHandler) Desired(context.Context, []byte)                      {}
func (nopHandler) Method(context.Context, string, []byte) (int, []byte) { return 404, nil }
func (nopHandler) C2D(context.Context, hub.C2DMessage)                  {}
