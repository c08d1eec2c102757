package agent_test

import (
	"github.com/fieldgate/fieldgate/internal/testlog"

	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/fieldgate/fieldgate/agent"
	"github.com/fieldgate/fieldgate/agent/agenttest"
	"github.com/fieldgate/fieldgate/agent/config"
	"github.com/fieldgate/fieldgate/agent/hub/hubtest"
	"github.com/fieldgate/fieldgate/agent/telemetry"
	"github.com/fieldgate/fieldgate/agent/timesync/ntptest"
)

// warp advances the fake clock by step every real millisecond until the
// test ends: agent timers (sampling, backoff, DPS polling, token refresh)
// run many times faster than real time without any test sleeping for them.
func warp(t *testing.T, clk *clockwork.FakeClock, step time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				clk.Advance(step)
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

type harness struct {
	t    *testing.T
	emu  *agenttest.Emulator
	clk  *clockwork.FakeClock
	dir  string
	cfg  string
	logs *testlog.Buffer
}

func newHarness(t *testing.T, ac agenttest.AgentConfig) *harness {
	t.Helper()
	clk := clockwork.NewFakeClockAt(time.Now().UTC().Truncate(time.Second))
	logs := &testlog.Buffer{}
	emu := agenttest.Start(t, agenttest.Options{Now: clk.Now,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	dir := t.TempDir()
	if ac.StateDir == "" {
		ac.StateDir = dir + "/state"
	}
	path, err := emu.WriteAgentConfig(dir, ac)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, emu: emu, clk: clk, dir: dir, cfg: path, logs: logs}
}

// start runs an agent until the returned stop is called; stop returns Run's
// error.
func (h *harness) start(mod func(*agent.Options)) (*agent.Agent, func() error) {
	h.t.Helper()
	cfg, err := config.Load(h.cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	o := agent.Options{
		Config:  cfg,
		Logger:  slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Clock:   h.clk,
		Version: "test",
		Getenv:  func(string) string { return "" },
	}
	if mod != nil {
		mod(&o)
	}
	a, err := agent.New(o)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(20 * time.Second):
				runErr = errors.New("Run did not return within 20s")
			}
		})
		return runErr
	}
	h.t.Cleanup(func() { _ = stop() })
	return a, stop
}

// num reads a JSON number whatever its decoded Go type.
func num(v any) float64 {
	f, err := strconv.ParseFloat(fmt.Sprint(v), 64)
	if err != nil {
		return -1
	}
	return f
}

func eventually(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			if os.Getenv("FG_DUMP") != "" {
				_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
			}
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// records returns every record the hub received for dev, in arrival order.
func records(t *testing.T, hub *hubtest.Hub, dev string) []telemetry.DecodedRecord {
	t.Helper()
	msgs, _ := hub.Messages(dev, 0)
	var out []telemetry.DecodedRecord
	for _, m := range msgs {
		if m.SystemProperties["$.ct"] != "application/json" || m.SystemProperties["$.ce"] != "utf-8" || m.SystemProperties["$.mid"] == "" {
			t.Errorf("message %d system properties = %v", m.N, m.SystemProperties)
		}
		recs, err := telemetry.Decode(m.Body)
		if err != nil {
			t.Fatalf("message %d: %v", m.N, err)
		}
		out = append(out, recs...)
	}
	return out
}

// checkSeqs asserts every seq in 1..max(seq) arrived at least once and
// returns the number of distinct seqs and duplicates.
func checkSeqs(t *testing.T, recs []telemetry.DecodedRecord) (distinct, dups int) {
	t.Helper()
	seen := map[uint64]int{}
	var maxSeq uint64
	for _, r := range recs {
		seen[r.Seq]++
		maxSeq = max(maxSeq, r.Seq)
	}
	for s := uint64(1); s <= maxSeq; s++ {
		switch n := seen[s]; {
		case n == 0:
			t.Errorf("seq %d never arrived (max %d)", s, maxSeq)
		case n > 1:
			dups += n - 1
		}
	}
	return len(seen), dups
}

func TestEndToEnd(t *testing.T) {
	h := newHarness(t, agenttest.AgentConfig{})
	warp(t, h.clk, 20*time.Millisecond)
	a, stop := h.start(nil)
	const dev = "fieldgate-test"
	ctx := context.Background()

	eventually(t, "device provisioned and connected", 20*time.Second, func() bool { return h.emu.Hub.Connected(dev) })
	eventually(t, "telemetry", 20*time.Second, func() bool { return len(records(t, h.emu.Hub, dev)) >= 5 })

	t.Run("group-key provisioning", func(t *testing.T) {
		regs := h.emu.DPS.Registrations()
		if len(regs) != 1 || regs[0].Status != "assigned" || regs[0].DeviceID != dev {
			t.Fatalf("registrations = %+v", regs)
		}
	})
	t.Run("telemetry records", func(t *testing.T) {
		recs := records(t, h.emu.Hub, dev)
		for _, r := range recs {
			if r.Sensor != "env" || len(r.Values) != 2 || r.TS.IsZero() {
				t.Fatalf("record = %+v", r)
			}
		}
		checkSeqs(t, recs)
	})
	t.Run("reported state", func(t *testing.T) {
		eventually(t, "reported fieldgate section", 10*time.Second, func() bool {
			tw, err := h.emu.Hub.Twin(dev)
			return err == nil && tw.Reported["fieldgate"] != nil
		})
		tw, _ := h.emu.Hub.Twin(dev)
		fg := tw.Reported["fieldgate"].(map[string]any)
		prov, _ := fg["provisioning"].(map[string]any)
		if fg["version"] != "test" || prov["deviceId"] != dev || prov["substatus"] != "initialAssignment" {
			t.Errorf("reported fieldgate = %v", fg)
		}
	})
	t.Run("desired interval acknowledged", func(t *testing.T) {
		tw, err := h.emu.Hub.PatchDesired(dev, map[string]any{"telemetryInterval": "5s", "bogus": 1,
			"sensors": map[string]any{"env": map[string]any{"interval": "2s"}, "nope": map[string]any{"interval": "2s"}}})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "ack", 10*time.Second, func() bool {
			tw, _ := h.emu.Hub.Twin(dev)
			ack, _ := tw.Reported["telemetryInterval"].(map[string]any)
			return ack != nil && num(ack["av"]) == float64(tw.DesiredVersion)
		})
		tw, _ = h.emu.Hub.Twin(dev)
		ack := tw.Reported["telemetryInterval"].(map[string]any)
		if num(ack["ac"]) != 200 || ack["value"] != "5s" {
			t.Errorf("telemetryInterval ack = %v", ack)
		}
		if b := tw.Reported["bogus"].(map[string]any); num(b["ac"]) != 400 {
			t.Errorf("bogus ack = %v", b)
		}
		s := tw.Reported["sensors"].(map[string]any)
		if e := s["env"].(map[string]any)["interval"].(map[string]any); num(e["ac"]) != 200 {
			t.Errorf("env interval ack = %v", e)
		}
		if n := s["nope"].(map[string]any)["interval"].(map[string]any); num(n["ac"]) != 404 {
			t.Errorf("unknown sensor ack = %v", n)
		}
	})
	t.Run("direct methods", func(t *testing.T) {
		tests := []struct {
			name, method, payload string
			status                int
			contains              string
		}{
			{"diagnostics", "getDiagnostics", "", 200, `"deviceId":"fieldgate-test"`},
			{"read all sensors", "readSensors", "{}", 200, `"temperature_c"`},
			{"read one sensor", "readSensors", `{"sensor":"env"}`, 200, `"humidity_pct"`},
			{"unknown sensor", "readSensors", `{"sensor":"nope"}`, 404, "no sensor named"},
			{"unknown field", "readSensors", `{"sensr":"env"}`, 400, "readSensors takes"},
			{"setOutput without outputs", "setOutput", `{"name":"relay","value":true}`, 404, "no such output"},
			{"setOutput bad payload", "setOutput", `{"name":"relay"}`, 400, "setOutput takes"},
			{"unknown method", "selfDestruct", "", 404, "unknown method"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var p json.RawMessage
				if tt.payload != "" {
					p = json.RawMessage(tt.payload)
				}
				res, err := h.emu.Hub.InvokeMethod(ctx, dev, tt.method, p, 10*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if res.Status != tt.status || !strings.Contains(string(res.Payload), tt.contains) {
					t.Errorf("%s(%s) = %d %s; want %d containing %q", tt.method, tt.payload, res.Status, res.Payload, tt.status, tt.contains)
				}
			})
		}
	})
	t.Run("c2d", func(t *testing.T) {
		for _, m := range []hubtest.C2DMessage{
			{Body: []byte("{}"), Properties: map[string]string{"method": "getDiagnostics"}, MessageID: "c1"},
			{Body: []byte("\xff\xfe not json"), Properties: map[string]string{"x": "y"}, MessageID: "c2"},
			{Body: bytes.Repeat([]byte("["), 10000), Properties: map[string]string{"method": "readSensors"}, MessageID: "c3"},
		} {
			if err := h.emu.Hub.SendC2D(dev, m); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, "c2d handled and acknowledged", 10*time.Second, func() bool { return len(h.emu.Hub.C2DQueue(dev)) == 0 })
		eventually(t, "c2d method logged", 10*time.Second, func() bool {
			return strings.Contains(h.logs.String(), "cloud-to-device method") && strings.Contains(h.logs.String(), "message_id=c2")
		})
	})
	if err := stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	d := a.Diagnostics()
	if d.Hub.Published == 0 {
		t.Errorf("diagnostics = %+v", d)
	}
}

func TestRestartUsesCacheAndContinuesSeq(t *testing.T) {
	h := newHarness(t, agenttest.AgentConfig{})
	warp(t, h.clk, 20*time.Millisecond)
	const dev = "fieldgate-test"
	_, stop := h.start(nil)
	eventually(t, "telemetry", 20*time.Second, func() bool { return len(records(t, h.emu.Hub, dev)) >= 3 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	reqs := h.emu.DPS.Requests()
	first := len(records(t, h.emu.Hub, dev))

	_, stop2 := h.start(nil)
	eventually(t, "telemetry after restart", 20*time.Second, func() bool { return len(records(t, h.emu.Hub, dev)) >= first+3 })
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	if got := h.emu.DPS.Requests(); got != reqs {
		t.Errorf("DPS requests after restart = %d, want %d (cached assignment)", got, reqs)
	}
	if !strings.Contains(h.logs.String(), "using cached assignment") {
		t.Error("no cache log line")
	}
	distinct, _ := checkSeqs(t, records(t, h.emu.Hub, dev))
	if distinct < first+3 {
		t.Errorf("distinct seqs = %d", distinct)
	}
}

func TestReprovisionAfterRepeatedRefusals(t *testing.T) {
	h := newHarness(t, agenttest.AgentConfig{})
	warp(t, h.clk, 20*time.Millisecond)
	const dev = "fieldgate-test"
	_, stop := h.start(nil)
	eventually(t, "connected", 20*time.Second, func() bool { return h.emu.Hub.Connected(dev) })
	// The device is deleted from the hub (moved, or re-created): CONNECT is
	// refused until DPS registers it again.
	if err := h.emu.Hub.DeleteDevice(dev); err != nil {
		t.Fatal(err)
	}
	eventually(t, "re-registration", 30*time.Second, func() bool { return len(h.emu.DPS.Registrations()) >= 2 })
	eventually(t, "connected again", 20*time.Second, func() bool { return h.emu.Hub.Connected(dev) })
	regs := h.emu.DPS.Registrations()
	if regs[len(regs)-1].Substatus != "reprovisionedToInitialAssignment" {
		t.Errorf("last registration = %+v", regs[len(regs)-1])
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestTokenRefreshShortTTL(t *testing.T) {
	h := newHarness(t, agenttest.AgentConfig{})
	warp(t, h.clk, 50*time.Millisecond)
	const dev = "fieldgate-test"
	_, stop := h.start(func(o *agent.Options) { o.TokenTTL = 20 * time.Second })
	eventually(t, "four connects", 60*time.Second, func() bool { return len(h.emu.Hub.Connections()) >= 4 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	conns := h.emu.Hub.Connections()
	for i, c := range conns {
		if c.Reason == "token expired" {
			t.Errorf("connection %d cut by the hub for an expired token", i)
		}
		if i > 0 && !c.TokenExpiry.After(conns[i-1].TokenExpiry) {
			t.Errorf("connection %d token expiry %v not after %v", i, c.TokenExpiry, conns[i-1].TokenExpiry)
		}
	}
	checkSeqs(t, records(t, h.emu.Hub, dev))
}

func TestNoSecretsInLogsOrTwin(t *testing.T) {
	h := newHarness(t, agenttest.AgentConfig{})
	warp(t, h.clk, 20*time.Millisecond)
	const dev = "fieldgate-test"
	_, stop := h.start(func(o *agent.Options) { o.TokenTTL = 20 * time.Second })
	eventually(t, "two connects", 30*time.Second, func() bool { return len(h.emu.Hub.Connections()) >= 2 })
	_, _ = h.emu.Hub.InvokeMethod(context.Background(), dev, "getDiagnostics", nil, 5*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	d, _ := h.emu.Hub.Device(dev)
	tw, _ := h.emu.Hub.Twin(dev)
	twin, _ := json.Marshal(tw)
	out := h.logs.String() + string(twin)
	for name, secret := range map[string]string{
		"group key":   agenttest.GroupKey,
		"derived key": d.PrimaryKey,
	} {
		if secret == "" {
			t.Fatalf("%s is empty", name)
		}
		if strings.Contains(out, secret) || strings.Contains(out, secret[:16]) {
			t.Errorf("%s appears in the output", name)
		}
	}
	for _, marker := range []string{"SharedAccessSignature", "sig="} {
		if strings.Contains(out, marker) {
			t.Errorf("%q appears in the output", marker)
		}
	}
}

// TestClockSkewCorrectedByNTP: the emulator runs two hours ahead (its TLS
// certificate starts then, its SAS checks use that clock) and so does the
// NTP server; the device's system clock is "wrong". The agent measures the
// offset, connects (TLS and SAS on the corrected clock) and stamps readings
// with corrected time.
func TestClockSkewCorrectedByNTP(t *testing.T) {
	const skew = 2 * time.Hour
	ahead := func() time.Time { return time.Now().Add(skew) }
	ntp, err := ntptest.Start(ntptest.Options{Offset: skew})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ntp.Close)
	emu := agenttest.Start(t, agenttest.Options{Now: ahead, RetryAfter: 1})
	dir := t.TempDir()
	path, err := emu.WriteAgentConfig(dir, agenttest.AgentConfig{StateDir: dir + "/state", NTPServers: []string{ntp.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testlog.Buffer{}
	a, err := agent.New(agent.Options{Config: cfg, Version: "test", Getenv: func(string) string { return "" },
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	const dev = "fieldgate-test"
	eventually(t, "telemetry through a skewed hub", 30*time.Second, func() bool { return len(records(t, emu.Hub, dev)) >= 2 })
	d := a.Diagnostics()
	if !d.Clock.Synced || d.Clock.Source != "ntp" || time.Duration(d.Clock.OffsetMs)*time.Millisecond < skew-time.Second {
		t.Errorf("clock = %+v, want ntp with ~%s offset", d.Clock, skew)
	}
	for _, r := range records(t, emu.Hub, dev) {
		if off := time.Until(r.TS); off < skew-time.Minute || off > skew+time.Minute {
			// Readings sampled before the first NTP answer carry the
			// system time; only the first one or two may.
			if r.Seq > 2 {
				t.Errorf("record %d ts %v is %v from now, want ~+%s", r.Seq, r.TS, off, skew)
			}
		}
	}
	conns := emu.Hub.Connections()
	if len(conns) == 0 || conns[0].TokenExpiry.Before(ahead()) {
		t.Errorf("token expiry %v is not in the skewed future", conns)
	}
}

// TestReloadSensors: SIGHUP's Reload swaps sensors and intervals without
// dropping the hub session; sections that need a restart are reported.
func TestReloadSensors(t *testing.T) {
	h := newHarness(t, agenttest.AgentConfig{})
	warp(t, h.clk, 20*time.Millisecond)
	const dev = "fieldgate-test"
	a, stop := h.start(nil)
	eventually(t, "env telemetry", 20*time.Second, func() bool { return len(records(t, h.emu.Hub, dev)) >= 2 })

	path, err := h.emu.WriteAgentConfig(t.TempDir(), agenttest.AgentConfig{StateDir: h.dir + "/state", Sensors: `[[sensor]]
name = "power"
kind = "simulated"
interval = "1s"
values = ["voltage_v"]
`, Extra: ""})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ignored := a.Reload(nc)
	// The new file points at a different group key path: provisioning
	// changes need a restart and are reported, not applied.
	if len(ignored) != 1 || ignored[0] != "provisioning" {
		t.Errorf("Reload ignored %v, want [provisioning]", ignored)
	}
	connects := len(h.emu.Hub.Connections())
	eventually(t, "power telemetry after reload", 20*time.Second, func() bool {
		for _, r := range records(t, h.emu.Hub, dev) {
			if r.Sensor == "power" {
				return true
			}
		}
		return false
	})
	if got := len(h.emu.Hub.Connections()); got != connects {
		t.Errorf("reload reconnected: %d connections, was %d", got, connects)
	}
	if _, ok := a.Diagnostics().Sensors["env"]; ok {
		t.Error("old sensor still reported after reload")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	checkSeqs(t, records(t, h.emu.Hub, dev))
}
