package agent_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/fieldgate/fieldgate/agent"
	"github.com/fieldgate/fieldgate/agent/agenttest"
	"github.com/fieldgate/fieldgate/agent/config"
	"github.com/fieldgate/fieldgate/agent/telemetry"
)

// BenchmarkReadingPipeline measures one reading's trip through sample →
// spool → publish → PUBACK → spool removal, in-process against the hub
// emulator (agenttest) over TLS on loopback, on the real clock: 100
// simulated sensors at the minimum interval (100 ms) produce about 1 000
// readings/s, batched into messages of up to 4 KB.
//
// One op is one reading acknowledged by the hub. Because readings arrive at
// the sensors' rate, ns/op is wall time per reading (≈ 1 ms, the sampling
// rate) and says nothing about cost; the cost figures are the custom
// metrics:
//   - cpu-ns/reading: user+system CPU of the whole test process per reading;
//   - allocs/op, B/op: every allocation in the process per reading.
//
// Both include the in-process emulator (TLS receive, MQTT broker, message
// store) and this benchmark's own decoding of the received messages, so
// they are upper bounds of the agent's own cost.
func BenchmarkReadingPipeline(b *testing.B) {
	emu, err := agenttest.New(agenttest.Options{RetryAfter: 1}, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer emu.Close()
	dir := b.TempDir()
	var sensors strings.Builder
	for i := range 100 {
		fmt.Fprintf(&sensors, "[[sensor]]\nname = \"s%03d\"\nkind = \"simulated\"\ninterval = \"100ms\"\nvalues = [\"temperature_c\", \"humidity_pct\"]\n\n", i)
	}
	const dev = "bench-pipeline"
	path, err := emu.WriteAgentConfig(dir, agenttest.AgentConfig{StateDir: dir + "/state", RegistrationID: dev,
		Sensors: sensors.String(), Telemetry: "interval = \"1s\"\nbatch_window = \"200ms\"\nmax_messages_per_second = 100\n"})
	if err != nil {
		b.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		b.Fatal(err)
	}
	cfg.LogLevel = "warn"
	a, err := agent.New(agent.Options{Config: cfg, Clock: clockwork.NewRealClock(), Version: "bench",
		Getenv: func(string) string { return "" }})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				b.Errorf("Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			b.Error("Run did not return within 20s")
		}
	}()

	// counter decodes only the messages that arrived since its last call.
	after, readings := 0, 0
	count := func() int {
		msgs, next := emu.Hub.Messages(dev, after)
		after = next
		for _, m := range msgs {
			recs, err := telemetry.Decode(m.Body)
			if err != nil {
				b.Fatalf("message %d: %v", m.N, err)
			}
			readings += len(recs)
		}
		return readings
	}
	wait := func(n int, d time.Duration) {
		deadline := time.Now().Add(d)
		for count() < n {
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d readings acknowledged within %s (spool %+v)", readings, n, d, a.Diagnostics().Spool)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Warm-up: provisioning, CONNECT and a couple of thousand readings.
	wait(2000, 60*time.Second)

	start := count()
	var ru0, ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.ReportAllocs()
	b.ResetTimer()
	wait(start+b.N, time.Duration(b.N)*10*time.Millisecond+30*time.Second)
	b.StopTimer()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano()-ru0.Utime.Nano()) + time.Duration(ru1.Stime.Nano()-ru0.Stime.Nano())
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(readings-start), "cpu-ns/reading")
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
}
