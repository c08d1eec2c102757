package chaos_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/fieldgate/fieldgate/agent"
	"github.com/fieldgate/fieldgate/agent/agenttest"
	"github.com/fieldgate/fieldgate/agent/config"
	"github.com/fieldgate/fieldgate/agent/telemetry"
	"github.com/fieldgate/fieldgate/agent/timesync/ntptest"
)

// TestClockStartsIn1970 (scenario 7): a board without RTC boots at the
// epoch. The agent measures the offset from NTP, signs tokens and checks TLS
// on the corrected clock, connects, and stamps readings with corrected time;
// sequence order holds.
func TestClockStartsIn1970(t *testing.T) {
	ntp, err := ntptest.Start(ntptest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ntp.Close()
	emu := agenttest.Start(t, agenttest.Options{RetryAfter: 1})
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
	clk := clockwork.NewFakeClockAt(time.Unix(0, 0))
	// Drive the fake clock at 2× real time: timers fire, and the drift
	// between NTP rounds stays small.
	stopWarp := make(chan struct{})
	go func() {
		tk := time.NewTicker(time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stopWarp:
				return
			case <-tk.C:
				clk.Advance(2 * time.Millisecond)
			}
		}
	}()
	defer close(stopWarp)
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
