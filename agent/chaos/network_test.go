package chaos_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/agent"
	"github.com/fieldgate/fieldgate/agent/agenttest"
	"github.com/fieldgate/fieldgate/agent/config"
)

// faultLink is a TCP path to the hub that can black-hole traffic (stop
// forwarding without closing, like a dead NAT mapping) or add latency.
type faultLink struct {
	target    string
	blackhole atomic.Bool
	latency   atomic.Int64 // ns per forwarded chunk
	mu        sync.Mutex
	conns     []net.Conn
}

func (f *faultLink) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	var d net.Dialer
	up, err := d.DialContext(ctx, network, f.target)
	if err != nil {
		return nil, err
	}
	client, agentSide := net.Pipe()
	f.mu.Lock()
	f.conns = append(f.conns, up, client)
	f.mu.Unlock()
	pump := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 && !f.blackhole.Load() {
				if l := time.Duration(f.latency.Load()); l > 0 {
					time.Sleep(l)
				}
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				if err != io.EOF {
					_ = dst.Close()
				}
				_ = dst.Close()
				return
			}
		}
	}
	go pump(up, client)
	go pump(client, up)
	return agentSide, nil
}

func (f *faultLink) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
}

// TestBlackHoleAndSlowLink (scenario 5): traffic to the hub silently stops;
// the agent notices within its keep-alive (plus ping timeout), reconnects
// after the link heals and loses nothing. Then the link gets 200 ms latency
// per chunk and telemetry still flows.
func TestBlackHoleAndSlowLink(t *testing.T) {
	keepAlive := 2 * time.Second
	hole := 5 * time.Second
	if fullSuite {
		hole = 30 * time.Second
	}
	emu := agenttest.Start(t, agenttest.Options{RetryAfter: 1})
	link := &faultLink{target: emu.Hub.MQTTAddr()}
	defer link.close()
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
	a, err := agent.New(agent.Options{Config: cfg, Version: "chaos", Getenv: func(string) string { return "" },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Dial: link.dial, KeepAlive: keepAlive})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	eventually(t, "telemetry", 30*time.Second, func() bool { return maxSeq(emu.Hub) > 10 })

	connects := a.Diagnostics().Hub.Connects
	link.blackhole.Store(true)
	detect := eventually(t, "the dead link noticed", 30*time.Second, func() bool {
		return a.Diagnostics().Hub.State != "connected" || a.Diagnostics().Hub.Connects > connects
	})
	time.Sleep(hole)
	link.blackhole.Store(false)
	before := maxSeq(emu.Hub)
	recovery := eventually(t, "telemetry after the link healed", 60*time.Second, func() bool { return maxSeq(emu.Hub) > before+20 })

	link.latency.Store(int64(200 * time.Millisecond))
	slowFrom := maxSeq(emu.Hub)
	eventually(t, "telemetry over a slow link", 60*time.Second, func() bool { return maxSeq(emu.Hub) > slowFrom+20 })
	link.latency.Store(0)

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if detect > 3*keepAlive+2*time.Second {
		t.Errorf("black hole noticed after %s with a %s keep-alive", detect, keepAlive)
	}
	res := tally(t, emu.Hub, state)
	res.Scenario = fmt.Sprintf("5 black hole for %s, then 200 ms latency", hole)
	res.Recovery = recovery
	res.Conditions = fmt.Sprintf("keep-alive %s: dead link noticed after %s", keepAlive, detect.Round(10*time.Millisecond))
	t.Log(res)
	record(res)
}
