// Package chaos_test is fieldgate's fault suite: it breaks the hub, the agent,
// the disk and the network on purpose and counts readings committed to the
// spool against readings the emulated IoT Hub received. A committed reading
// (its spool Append returned) must arrive; duplicates are allowed (delivery is
// at-least-once) and counted.
//
// `go test ./agent/chaos` runs one short round of each scenario; `make chaos`
// (-tags chaos) runs more rounds and writes the figures for RELIABILITY.md.
package chaos_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/agent/agenttest"
	"github.com/fieldgate/fieldgate/agent/hub/hubtest"
	"github.com/fieldgate/fieldgate/agent/spool"
	"github.com/fieldgate/fieldgate/agent/telemetry"
)

const dev = "fieldgate-test"

// fieldgateBin is built once by TestMain for the subprocess scenarios.
var fieldgateBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fieldgate-chaos-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fieldgateBin = filepath.Join(dir, "fieldgate")
	out, err := exec.Command("go", "build", "-o", fieldgateBin, "github.com/fieldgate/fieldgate/cmd/fieldgate").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos: building fieldgate: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is one scenario's tally, printed for RELIABILITY.md.
type result struct {
	Scenario   string
	Committed  uint64 // seqs 1..Committed were committed to the spool
	Received   int    // distinct seqs the hub received
	Pending    int    // committed seqs still in the spool at the end
	Lost       int
	Duplicates int
	Recovery   time.Duration // longest time from a fault's end to the next received record
	Conditions string
}

func (r result) String() string {
	return fmt.Sprintf("| %s | %d | %d | %d | %d | %s | %s |", r.Scenario, r.Committed, r.Lost, r.Duplicates, r.Pending,
		r.Recovery.Round(10*time.Millisecond), r.Conditions)
}

// tally compares the hub's records with the spool left in stateDir (the
// agent must be stopped). Every seq in 1..NextSeq-1 must have arrived or still
// be pending in the spool.
func tally(t *testing.T, h *hubtest.Hub, stateDir string) result {
	t.Helper()
	seen := received(t, h)
	sp, err := spool.Open(stateDir, spool.Options{})
	if err != nil {
		t.Fatalf("reopening the spool: %v", err)
	}
	defer sp.Close()
	st := sp.Stats()
	pending := map[uint64]bool{}
	for after := uint64(0); ; {
		recs, err := sp.Pending(after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			pending[r.Seq] = true
			after = r.Seq
		}
	}
	res := result{Committed: st.NextSeq - 1, Received: len(seen), Pending: len(pending)}
	var lost []uint64
	for s := uint64(1); s < st.NextSeq; s++ {
		n := seen[s]
		if n > 1 {
			res.Duplicates += n - 1
		}
		if n == 0 && !pending[s] {
			lost = append(lost, s)
		}
	}
	res.Lost = len(lost)
	if len(lost) > 0 {
		t.Errorf("%d committed readings lost (first: %v); dropped by a full spool: %d", len(lost), lost[:min(10, len(lost))], st.Dropped)
	}
	if st.Dropped > 0 {
		t.Errorf("spool dropped %d records: the scenario must not fill the spool", st.Dropped)
	}
	return res
}

// received counts, per seq, the records the hub received.
func received(t *testing.T, h *hubtest.Hub) map[uint64]int {
	t.Helper()
	seen := map[uint64]int{}
	msgs, _ := h.Messages(dev, 0)
	for _, m := range msgs {
		recs, err := telemetry.Decode(m.Body)
		if err != nil {
			t.Fatalf("message %d: %v", m.N, err)
		}
		for _, r := range recs {
			seen[r.Seq]++
		}
	}
	return seen
}

// agentProc is the fieldgate binary running as a subprocess.
type agentProc struct {
	cmd  *exec.Cmd
	logs *os.File
	done chan error
}

func startAgent(t *testing.T, cfg, logPath string) *agentProc {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(fieldgateBin, "run", "--config", cfg)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &agentProc{cmd: cmd, logs: f, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); f.Close() }()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *agentProc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.waitOnce()
}

var waitMu sync.Mutex

func (p *agentProc) waitOnce() <-chan error {
	waitMu.Lock()
	defer waitMu.Unlock()
	ch := make(chan error, 1)
	go func() {
		select {
		case err, ok := <-p.done:
			if ok {
				close(p.done)
			}
			ch <- err
		case <-time.After(30 * time.Second):
			ch <- fmt.Errorf("agent did not exit")
		}
	}()
	return ch
}

// stop sends SIGTERM and waits for a clean exit.
func (p *agentProc) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("agent exit after SIGINT: %v", err)
		}
		close(p.done)
	case <-time.After(20 * time.Second):
		t.Error("agent did not exit within 20s of SIGINT")
		_ = p.cmd.Process.Kill()
	}
}

func eventually(t *testing.T, what string, d time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func maxSeq(h *hubtest.Hub) uint64 {
	var m uint64
	msgs, _ := h.Messages(dev, 0)
	for _, msg := range msgs {
		recs, _ := telemetry.Decode(msg.Body)
		for _, r := range recs {
			m = max(m, r.Seq)
		}
	}
	return m
}

// fastSensors samples 20 readings/s across two sensors.
const fastSensors = `[[sensor]]
name = "env"
kind = "simulated"
interval = "100ms"
values = ["temperature_c", "humidity_pct"]

[[sensor]]
name = "power"
kind = "simulated"
interval = "100ms"
values = ["voltage_v", "current_a"]
`

const fastTelemetry = "interval = \"1s\"\nbatch_window = \"200ms\"\nmax_messages_per_second = 20\n"

// rounds is the number of fault rounds per scenario.
func rounds() int {
	if fullSuite {
		return 8
	}
	return 2
}

// TestHubRestarts kills the emulated IoT Hub mid-stream and starts it again
// on the same state and addresses, several times (scenario 1).
func TestHubRestarts(t *testing.T) {
	stateRoot := t.TempDir()
	emu, err := agenttest.New(agenttest.Options{StateDir: filepath.Join(stateRoot, "emu"), RetryAfter: 1}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ca, mqttAddr, httpsAddr := emu.CA, emu.Hub.MQTTAddr(), emu.HTTPSAddr()
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	cfg, err := emu.WriteAgentConfig(dir, agenttest.AgentConfig{StateDir: state, Sensors: fastSensors, Telemetry: fastTelemetry})
	if err != nil {
		t.Fatal(err)
	}
	p := startAgent(t, cfg, filepath.Join(dir, "agent.log"))
	eventually(t, "first telemetry", 30*time.Second, func() bool { return maxSeq(emu.Hub) > 10 })
	var worst time.Duration
	for i := 0; i < rounds(); i++ {
		if err := emu.Close(); err != nil {
			t.Fatalf("closing the hub: %v", err)
		}
		time.Sleep(time.Second) // the outage: the agent keeps sampling into its spool
		emu, err = agenttest.New(agenttest.Options{StateDir: filepath.Join(stateRoot, "emu"), CA: ca,
			MQTTAddr: mqttAddr, HTTPSAddr: httpsAddr, RetryAfter: 1}, t.TempDir())
		if err != nil {
			t.Fatalf("restarting the hub (round %d): %v", i, err)
		}
		before := maxSeq(emu.Hub)
		d := eventually(t, "telemetry after the hub restart", 60*time.Second, func() bool { return maxSeq(emu.Hub) > before+5 })
		worst = max(worst, d)
	}
	p.stop(t)
	defer emu.Close()
	res := tally(t, emu.Hub, state)
	res.Scenario, res.Recovery = fmt.Sprintf("1 hub killed and restarted ×%d", rounds()), worst
	res.Conditions = "20 readings/s, 1 s outages, subprocess agent"
	t.Log(res)
	record(res)
}

// TestAgentSIGKILL kills the agent with SIGKILL at random points (sampling,
// spool commits, publishes) and starts it again (scenario 2).
func TestAgentSIGKILL(t *testing.T) {
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
	var worst time.Duration
	for i := 0; i < rounds(); i++ {
		// Kill at a pseudo-random point 0.3–1.5 s into a run.
		time.Sleep(time.Duration(300+(i*397)%1200) * time.Millisecond)
		p.kill()
		before := maxSeq(emu.Hub)
		p = startAgent(t, cfg, logPath)
		d := eventually(t, "telemetry after restart", 60*time.Second, func() bool { return maxSeq(emu.Hub) > before+5 })
		worst = max(worst, d)
	}
	p.stop(t)
	res := tally(t, emu.Hub, state)
	res.Scenario, res.Recovery = fmt.Sprintf("2 agent SIGKILLed and restarted ×%d", rounds()), worst
	res.Conditions = "20 readings/s, kill points spread over 0.3–1.5 s"
	t.Log(res)
	record(res)
	logs, _ := os.ReadFile(logPath)
	if strings.Count(string(logs), "registering with DPS") > 1 {
		t.Error("a restart called DPS: the cached assignment must be used")
	}
}

var (
	resultsMu sync.Mutex
	results   []result
)

func record(r result) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	results = append(results, r)
	if path := os.Getenv("FIELDGATE_CHAOS_REPORT"); path != "" {
		sort.Slice(results, func(i, j int) bool { return results[i].Scenario < results[j].Scenario })
		var b strings.Builder
		for _, r := range results {
			b.WriteString(r.String() + "\n")
		}
		_ = os.WriteFile(path, []byte(b.String()), 0o644)
	}
}

var _ = context.Background
