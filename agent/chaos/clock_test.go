package chaos_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/fieldgate/fieldgate/agent"
	"github.com/fieldgate/fieldgate/agent/agenttest"
	"github.com/fieldgate/fieldgate/agent/config"
	"github.com/fieldgate/fieldgate/agent/telemetry"
	"github.com/fieldgate/fieldgate/agent/timesync"
	"github.com/fieldgate/fieldgate/agent/timesync/ntptest"
)

// TestClockStartsIn1970 (scenario 7): a board without RTC boots at the
// epoch. The agent measures the offset from NTP, signs tokens and checks TLS
// on the corrected clock, connects, and stamps readings with corrected time;
// sequence order holds.
func TestClockStartsIn1970(t *testing.T) {
	emu, state, cfg := clockRig(t, nil, nil)
	clk := clockwork.NewFakeClockAt(time.Unix(0, 0))
	// Drive the fake clock at 2× real time: timers fire, and the drift
	// between NTP rounds stays small.
	defer warp(clk, 2)()
	a, err := agent.New(agent.Options{Config: cfg, Version: "chaos", Clock: clk, Getenv: func(string) string { return "" },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	eventually(t, "telemetry from a board that booted in 1970", 60*time.Second, func() bool { return maxSeq(emu.Hub) > 5 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if d := a.Diagnostics(); !d.Clock.Synced || d.Clock.Source != "ntp" {
		t.Errorf("clock = %+v", d.Clock)
	}
	msgs, _ := emu.Hub.Messages(dev, 0)
	var last uint64
	late := 0
	for _, m := range msgs {
		recs, _ := telemetry.Decode(m.Body)
		for _, r := range recs {
			if r.Seq <= last {
				t.Errorf("seq %d after %d: order broken", r.Seq, last)
			}
			last = r.Seq
			if r.TS.Year() < 2000 {
				late++ // sampled before the first NTP answer
			}
		}
	}
	if late > 2 {
		t.Errorf("%d readings stamped before 2000: the corrected clock was not used", late)
	}
	for _, c := range emu.Hub.Connections() {
		if c.Reason == "token expired" {
			t.Errorf("token cut by the hub: %+v", c)
		}
	}
	res := tally(t, emu.Hub, state)
	res.Scenario = "7 board clock starting in 1970 (fake clock, NTP on loopback)"
	res.Conditions = "connected and stamped corrected time; seq order held"
	record(res)
}

// steppedWall is the board's system wall clock: true time (the fake clock)
// plus a step an operator or another daemon applies during the run.
type steppedWall struct {
	clk  *clockwork.FakeClock
	step atomic.Int64 // nanoseconds
}

func (w *steppedWall) Now() time.Time { return w.clk.Now().Add(time.Duration(w.step.Load())) }

// TestWallClockSteps (scenario 7): the system wall clock is stepped by +1 h,
// back, and by −1 h while the agent runs, with 30 s tokens and NTP resyncs
// every 20 s. True time (the fake clock, warped at 10× real time) drives the
// emulated hub, DPS and NTP server. Tokens must stay valid (no refusal, no
// connection cut for expiry), timestamps must follow true time without a
// jump, and seq order must hold.
func TestWallClockSteps(t *testing.T) {
	hold := 30 * time.Second // fake time spent at each step
	steps := []time.Duration{time.Hour, 0, -time.Hour}
	if fullSuite {
		hold = 2 * time.Minute
		steps = []time.Duration{time.Hour, 0, -time.Hour, 0, time.Hour}
	}
	clk := clockwork.NewFakeClockAt(time.Now().UTC().Truncate(time.Second))
	wall := &steppedWall{clk: clk}
	emu, state, cfg := clockRig(t, clk.Now, clk.Now)
	defer warp(clk, 10)()
	a, err := agent.New(agent.Options{Config: cfg, Version: "chaos", Clock: clk, Getenv: func(string) string { return "" },
		TokenTTL: 30 * time.Second,
		Time:     timesync.Options{Wall: wall.Now, ResyncInterval: 20 * time.Second},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	eventually(t, "first telemetry", 60*time.Second, func() bool { return maxSeq(emu.Hub) > 3 })
	for _, step := range steps {
		wall.step.Store(int64(step))
		until := clk.Now().Add(hold)
		eventually(t, fmt.Sprintf("%v of fake time at a %v step", hold, step), 2*hold, func() bool { return !clk.Now().Before(until) })
		if d := a.Now().Sub(clk.Now()); d > time.Second || d < -time.Second {
			t.Errorf("at a %v system clock step the agent's time is off by %v", step, d)
		}
	}
	before := maxSeq(emu.Hub)
	eventually(t, "telemetry after the last step", 30*time.Second, func() bool { return maxSeq(emu.Hub) > before })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if st := emu.Hub.Stats(); st.ConnectRefused > 0 {
		t.Errorf("the hub refused %d of %d connection attempts: a token was signed on the stepped clock", st.ConnectRefused, st.ConnectAttempts)
	}
	conns := emu.Hub.Connections()
	for _, c := range conns {
		if c.Reason == "token expired" {
			t.Errorf("connection cut for an expired token: %+v", c)
		}
	}
	msgs, _ := emu.Hub.Messages(dev, 0)
	var last uint64
	var lastTS time.Time
	jumps := 0
	for _, m := range msgs {
		recs, _ := telemetry.Decode(m.Body)
		for _, r := range recs {
			if r.Seq <= last {
				t.Errorf("seq %d after %d: order broken", r.Seq, last)
			}
			if !lastTS.IsZero() && (r.TS.Before(lastTS) || r.TS.Sub(lastTS) > 10*time.Second) {
				jumps++
				t.Errorf("seq %d stamped %v after %v: the timestamp jumped", r.Seq, r.TS, lastTS)
			}
			last, lastTS = r.Seq, r.TS
		}
	}
	res := tally(t, emu.Hub, state)
	res.Scenario = fmt.Sprintf("7 system clock stepped %v, %v each (fake clock, NTP on loopback)", steps, hold)
	res.Conditions = fmt.Sprintf("30 s tokens, resync 20 s; %d connections, %d refused, %d timestamp jumps; seq order held",
		len(conns), emu.Hub.Stats().ConnectRefused, jumps)
	t.Log(res)
	record(res)
}

// clockRig starts an NTP responder (time from ntpNow; nil = real time) and
// the emulator (emuNow; nil = real time), and writes an agent config using
// them. It returns the emulator, the state dir and the loaded config.
func clockRig(t *testing.T, ntpNow, emuNow func() time.Time) (*agenttest.Emulator, string, *config.Config) {
	t.Helper()
	ntp, err := ntptest.Start(ntptest.Options{Now: ntpNow})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ntp.Close)
	emu := agenttest.Start(t, agenttest.Options{RetryAfter: 1, Now: emuNow})
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	path, err := emu.WriteAgentConfig(dir, agenttest.AgentConfig{StateDir: state, NTPServers: []string{ntp.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return emu, state, cfg
}

// warp advances clk by factor× real time (in 1 ms ticks) until the returned
// stop is called.
func warp(clk *clockwork.FakeClock, factor int) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tk.C:
				clk.Advance(time.Duration(factor) * time.Millisecond)
			}
		}
	}()
	return func() { close(quit); <-done }
}
