package chaos_test

import (
	"github.com/fieldgate/fieldgate/internal/testlog"

	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/agent"
	"github.com/fieldgate/fieldgate/agent/agenttest"
	"github.com/fieldgate/fieldgate/agent/config"
	"github.com/fieldgate/fieldgate/agent/hub/hubtest"
	"github.com/fieldgate/fieldgate/agent/spool"
)

// TestCorruptStateFiles tears and garbles the spool and the provisioning
// cache while records are queued (scenario 3). The agent must start, log
// the repair or quarantine, keep sequence numbers moving forward, deliver
// new readings and lose no committed record. One extra case goes beyond
// what any single-copy store can survive — every byte of the spool replaced
// by random bytes — and reports how many records were inside them.
func TestCorruptStateFiles(t *testing.T) {
	damage := []struct {
		name string
		file string
		hurt func(t *testing.T, path string)
		// destroysAll: every copy of the queued records is overwritten;
		// their loss is reported, not failed.
		destroysAll bool
	}{
		{"spool truncated inside its used pages", "spool.db", func(t *testing.T, p string) { truncateTail(t, p, unusedTail(t, p)+4096) }, false},
		{"spool newest meta page random", "spool.db", garbleNewestMeta, false},
		{"spool last used pages zero-filled", "spool.db", func(t *testing.T, p string) { overwriteUsedTail(t, p, 8192, false) }, false},
		{"spool last used pages random", "spool.db", func(t *testing.T, p string) { overwriteUsedTail(t, p, 8192, true) }, false},
		{"cache truncated", "provisioning.json", func(t *testing.T, p string) { truncateTail(t, p, 10) }, false},
		{"cache random bytes", "provisioning.json", func(t *testing.T, p string) { overwriteTail(t, p, 1<<30, true) }, false},
		{"spool entirely random bytes", "spool.db", func(t *testing.T, p string) { overwriteTail(t, p, 1<<30, true) }, true},
	}
	if !fullSuite {
		damage = damage[:2]
	}
	for _, d := range damage {
		t.Run(d.name, func(t *testing.T) {
			emu := agenttest.Start(t, agenttest.Options{RetryAfter: 1})
			dir := t.TempDir()
			state := filepath.Join(dir, "state")
			cfg, err := emu.WriteAgentConfig(dir, agenttest.AgentConfig{StateDir: state, Sensors: fastSensors, Telemetry: fastTelemetry})
			if err != nil {
				t.Fatal(err)
			}
			logPath := filepath.Join(dir, "agent.log")
			p := startAgent(t, cfg, logPath)
			eventually(t, "first telemetry", 30*time.Second, func() bool { return maxSeq(emu.Hub) > 5 })
			// Queue records the hub never acknowledges, then crash.
			emu.Hub.WithholdPubacks(time.Hour)
			time.Sleep(1500 * time.Millisecond)
			p.kill()
			emu.Hub.ClearFaults()
			before := lastCommitted(t, state)
			d.hurt(t, filepath.Join(state, d.file))

			p = startAgent(t, cfg, logPath)
			eventually(t, "telemetry after the damage", 60*time.Second, func() bool { return maxSeq(emu.Hub) > before })
			p.stop(t)
			logs, _ := os.ReadFile(logPath)
			if bytes.Contains(logs, []byte("panic:")) {
				t.Error("the agent panicked")
			}
			detected := bytes.Contains(logs, []byte("quarantined")) || bytes.Contains(logs, []byte("corrupt")) || bytes.Contains(logs, []byte("unusable"))
			after := lastCommitted(t, state)
			if after <= before {
				t.Errorf("sequence went backwards or stalled: %d after, %d before the damage", after, before)
			}
			lost := missing(t, emu.Hub, state, before)
			switch {
			case !detected && len(lost) > 0:
				t.Errorf("damage went unnoticed and %d committed records were lost: %v", len(lost), lost[:min(10, len(lost))])
			case len(lost) > 0 && !d.destroysAll:
				t.Errorf("%d committed records lost: %v", len(lost), lost[:min(10, len(lost))])
			case len(lost) > 0:
				t.Logf("damage detected and logged; records inside the destroyed bytes: %d", len(lost))
			}
			matches, _ := filepath.Glob(filepath.Join(state, d.file+".corrupt-*"))
			t.Logf("%s: seq %d → %d, detected %v, quarantined copies: %d, lost %d", d.name, before, after, detected, len(matches), len(lost))
			record(result{Scenario: "3 " + d.name, Committed: before, Lost: len(lost),
				Conditions: fmt.Sprintf("damage detected: %v; seq continued %d → %d; damaged file kept: %v", detected, before, after, len(matches) > 0)})
		})
	}
}

// missing lists the seqs in 1..upTo that neither reached the hub nor remain
// in the (stopped) agent's spool.
func missing(t *testing.T, h *hubtest.Hub, state string, upTo uint64) []uint64 {
	t.Helper()
	seen := received(t, h)
	sp, err := spool.Open(state, spool.Options{})
	if err != nil {
		t.Fatalf("opening the spool: %v", err)
	}
	defer sp.Close()
	recs, err := sp.Pending(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		seen[r.Seq]++
	}
	var out []uint64
	for s := uint64(1); s <= upTo; s++ {
		if seen[s] == 0 {
			out = append(out, s)
		}
	}
	return out
}

// lastCommitted opens the (stopped) agent's spool and returns the highest
// committed sequence number.
func lastCommitted(t *testing.T, state string) uint64 {
	t.Helper()
	sp, err := spool.Open(state, spool.Options{})
	if err != nil {
		t.Fatalf("opening the spool: %v", err)
	}
	defer sp.Close()
	return sp.Stats().NextSeq - 1
}

func truncateTail(t *testing.T, path string, n int64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, max(0, fi.Size()-n)); err != nil {
		t.Fatal(err)
	}
}

// newestMeta returns the offset of the meta page of the last commit and the
// page count (high-water mark) it records.
func newestMeta(t *testing.T, f *os.File) (off int64, pages int64) {
	t.Helper()
	ps := int64(os.Getpagesize())
	b := make([]byte, 16+64)
	var best uint64
	for _, o := range []int64{0, ps} {
		if _, err := f.ReadAt(b, o); err != nil {
			t.Fatal(err)
		}
		if txid := binary.LittleEndian.Uint64(b[16+48:]); txid >= best {
			best, off, pages = txid, o, int64(binary.LittleEndian.Uint64(b[16+40:]))
		}
	}
	return off, pages
}

// unusedTail is how many bytes of the file lie beyond its used pages (bbolt
// grows the file ahead of use).
func unusedTail(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	_, pages := newestMeta(t, f)
	return max(0, fi.Size()-pages*int64(os.Getpagesize()))
}

// overwriteUsedTail overwrites the last n bytes of the used pages.
func overwriteUsedTail(t *testing.T, path string, n int64, random bool) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, pages := newestMeta(t, f)
	end := pages * int64(os.Getpagesize())
	n = min(n, end-2*int64(os.Getpagesize())) // the meta pages have their own case
	buf := make([]byte, n)
	if random {
		_, _ = rand.Read(buf)
	}
	if _, err := f.WriteAt(buf, end-n); err != nil {
		t.Fatal(err)
	}
}

// garbleNewestMeta overwrites the meta page of the last commit with random
// bytes, as a bad SD-card sector would.
func garbleNewestMeta(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	newest, _ := newestMeta(t, f)
	buf := make([]byte, os.Getpagesize())
	_, _ = rand.Read(buf)
	if _, err := f.WriteAt(buf, newest); err != nil {
		t.Fatal(err)
	}
}

func overwriteTail(t *testing.T, path string, n int64, random bool) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	n = min(n, fi.Size())
	buf := make([]byte, n)
	if random {
		_, _ = rand.Read(buf)
	}
	if _, err := f.WriteAt(buf, fi.Size()-n); err != nil {
		t.Fatal(err)
	}
}

// TestDPSFaults: DPS answers 429 with Retry-After and 5xx before it assigns
// (scenario 6). Provisioning completes and the agent never sends more than
// 5 DPS requests in any 10 s window.
func TestDPSFaults(t *testing.T) {
	var mu sync.Mutex
	var times []time.Time
	emu := agenttest.Start(t, agenttest.Options{RetryAfter: 2, OnDPSRequest: func(at time.Time, _, _ string) {
		mu.Lock()
		defer mu.Unlock()
		times = append(times, at)
	}})
	n429, n5xx := 2, 1
	if fullSuite {
		n429, n5xx = 4, 3
	}
	if err := emu.DPS.InjectFaults(429, n429); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	cfg, err := emu.WriteAgentConfig(dir, agenttest.AgentConfig{StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	p := startAgent(t, cfg, filepath.Join(dir, "agent.log"))
	eventually(t, "the 429s to be served", 60*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(times) >= n429
	})
	if err := emu.DPS.InjectFaults(503, n5xx); err != nil {
		t.Fatal(err)
	}
	d := eventually(t, "provisioning through the faults", 5*time.Minute, func() bool { return emu.Hub.Connected(dev) })
	p.stop(t)
	mu.Lock()
	defer mu.Unlock()
	worst := 0
	for i := range times {
		n := 0
		for j := i; j < len(times) && times[j].Sub(times[i]) < 10*time.Second; j++ {
			n++
		}
		worst = max(worst, n)
	}
	if worst > 5 {
		t.Errorf("%d DPS requests within 10 s (limit 5): %v", worst, times)
	}
	record(result{Scenario: fmt.Sprintf("6 DPS %d×429 then %d×503", n429, n5xx), Recovery: d,
		Conditions: fmt.Sprintf("%d DPS requests in total, at most %d in any 10 s", len(times), worst)})
}

// TestSpoolFullAndUnusableStateDir (scenario 8): a spool at its size limit
// drops the oldest records, counts them and reports the count in the twin;
// a state directory that cannot be used leaves the agent sampling in memory
// with a warning.
func TestSpoolFullAndUnusableStateDir(t *testing.T) {
	t.Run("spool full", func(t *testing.T) {
		emu := agenttest.Start(t, agenttest.Options{RetryAfter: 1})
		dir := t.TempDir()
		var sensors strings.Builder
		for i := 0; i < 30; i++ {
			fmt.Fprintf(&sensors, "[[sensor]]\nname = \"s%d\"\nkind = \"simulated\"\ninterval = \"100ms\"\nvalues = [\"temperature_c\", \"humidity_pct\", \"pressure_hpa\", \"voltage_v\"]\n\n", i)
		}
		cfgPath, err := emu.WriteAgentConfig(dir, agenttest.AgentConfig{StateDir: filepath.Join(dir, "state"), Sensors: sensors.String(),
			Telemetry: fastTelemetry})
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := os.ReadFile(cfgPath)
		raw = bytes.Replace(raw, []byte("[state]\n"), []byte("[state]\nspool_max_bytes = \"256KiB\"\n"), 1)
		if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		logs := &testlog.Buffer{}
		a, err := agent.New(agent.Options{Config: cfg, Version: "chaos", Getenv: func(string) string { return "" },
			Logger: slog.New(slog.NewTextHandler(logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		defer func() { cancel(); <-done }()
		eventually(t, "connected", 30*time.Second, func() bool { return emu.Hub.Connected(dev) })
		emu.Hub.WithholdPubacks(time.Hour) // nothing leaves the spool any more
		eventually(t, "spool full and dropping", 120*time.Second, func() bool { return a.Diagnostics().Spool.Dropped > 0 })
		// A desired change makes the agent report its state.
		if _, err := emu.Hub.PatchDesired(dev, map[string]any{"telemetryInterval": "1s"}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "dropped count reported in the twin", 30*time.Second, func() bool {
			tw, err := emu.Hub.Twin(dev)
			if err != nil {
				return false
			}
			fg, _ := tw.Reported["fieldgate"].(map[string]any)
			sp, _ := fg["spool"].(map[string]any)
			return sp != nil && fmt.Sprint(sp["dropped"]) != "0" && sp["dropped"] != nil
		})
		if !strings.Contains(logs.String(), "drop") {
			t.Error("no warning about dropped records")
		}
		d := a.Diagnostics()
		record(result{Scenario: "8 spool full (256 KiB limit)", Conditions: fmt.Sprintf("dropped %d oldest, depth %d, agent kept running", d.Spool.Dropped, d.Spool.Depth)})
	})
	t.Run("state dir unusable", func(t *testing.T) {
		emu := agenttest.Start(t, agenttest.Options{RetryAfter: 1})
		dir := t.TempDir()
		blocker := filepath.Join(dir, "not-a-dir")
		if err := os.WriteFile(blocker, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfgPath, err := emu.WriteAgentConfig(dir, agenttest.AgentConfig{StateDir: filepath.Join(blocker, "state")})
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		logs := &testlog.Buffer{}
		a, err := agent.New(agent.Options{Config: cfg, Version: "chaos", Getenv: func(string) string { return "" },
			Logger: slog.New(slog.NewTextHandler(logs, nil))})
		if err != nil {
			t.Fatalf("agent.New with an unusable state dir: %v", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		defer func() { cancel(); <-done }()
		eventually(t, "telemetry from the in-memory spool", 30*time.Second, func() bool { return maxSeq(emu.Hub) >= 3 })
		if !a.Diagnostics().Spool.InMemory || !strings.Contains(logs.String(), "memory only") {
			t.Errorf("spool = %+v; want in-memory with a warning", a.Diagnostics().Spool)
		}
		record(result{Scenario: "8 state dir unusable", Conditions: "sampling continued in memory with a warning"})
	})
}
