package timesync

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beevik/ntp"
	"github.com/jonboulle/clockwork"

	"github.com/fieldgate/fieldgate/agent/timesync/ntptest"
)

// tolerance for offsets measured over real UDP loopback.
const tolerance = 50 * time.Millisecond

// logSink collects JSON log records for assertions.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logSink) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// records returns the logged records whose message contains msg.
func (l *logSink) records(t *testing.T, msg string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		if s, _ := m["msg"].(string); strings.Contains(s, msg) {
			out = append(out, m)
		}
	}
	return out
}

func eventually(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func startNTP(t *testing.T, o ntptest.Options) *ntptest.Server {
	t.Helper()
	s, err := ntptest.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func kernel(v bool) func() (bool, error) { return func() (bool, error) { return v, nil } }

func noStep(t *testing.T) func(time.Time) error {
	return func(time.Time) error {
		t.Error("SetSystemClock called; want no step")
		return nil
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestSync_measuresOffset(t *testing.T) {
	for _, off := range []time.Duration{2 * time.Hour, -2 * time.Hour, 0} {
		t.Run(off.String(), func(t *testing.T) {
			srv := startNTP(t, ntptest.Options{Offset: off})
			s := New(Options{Servers: []string{srv.Addr()}, Timeout: 2 * time.Second, KernelSynced: kernel(false), SetSystemClock: noStep(t)})
			if isClosed(s.Synced()) {
				t.Fatal("Synced() closed before any sync")
			}
			st, err := s.Sync(context.Background())
			if err != nil {
				t.Fatalf("Sync() error = %v; want nil", err)
			}
			if d := abs(st.Offset - off); d > tolerance {
				t.Errorf("Status.Offset = %v; want %v ± %v", st.Offset, off, tolerance)
			}
			if d := abs(s.Now().Sub(time.Now().Add(off))); d > tolerance {
				t.Errorf("Now() = %v; want real now + %v ± %v", s.Now(), off, tolerance)
			}
			if s.Now().Location() != time.UTC {
				t.Errorf("Now().Location() = %v; want UTC", s.Now().Location())
			}
			if !st.Synced || st.Source != SourceNTP || st.Server != srv.Addr() || st.Stratum != 2 || st.LastError != "" {
				t.Errorf("Status = %+v; want synced from ntp server %s stratum 2", st, srv.Addr())
			}
			if d := abs(st.LastSync.Sub(time.Now().Add(off))); d > time.Second {
				t.Errorf("Status.LastSync = %v; want corrected time ≈ %v", st.LastSync, time.Now().Add(off))
			}
			if !isClosed(s.Synced()) {
				t.Error("Synced() not closed after a valid answer")
			}
			if s.Status() != st {
				t.Errorf("Status() = %+v; want %+v (as returned by Sync)", s.Status(), st)
			}
		})
	}
}

func TestSync_fakeClockBase(t *testing.T) {
	// A device that booted in 1970: the injected clock is far off and NTP
	// is 2 h ahead of the real time.
	fake := clockwork.NewFakeClockAt(time.Date(1970, 1, 1, 0, 1, 0, 0, time.UTC))
	srv := startNTP(t, ntptest.Options{Offset: 2 * time.Hour})
	s := New(Options{Servers: []string{srv.Addr()}, Timeout: 2 * time.Second, Clock: fake, KernelSynced: kernel(false), SetSystemClock: noStep(t)})
	if got := s.Now(); !got.Equal(fake.Now()) {
		t.Errorf("Now() before sync = %v; want the injected clock %v", got, fake.Now())
	}
	if _, err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := time.Now().Add(2 * time.Hour)
	if d := abs(s.Now().Sub(want)); d > tolerance {
		t.Errorf("Now() = %v; want %v ± %v", s.Now(), want, tolerance)
	}
	before := s.Now()
	fake.Advance(90 * time.Second)
	if got := s.Now().Sub(before); got != 90*time.Second {
		t.Errorf("Now() advanced by %v after fake.Advance(90s); want 90s", got)
	}
}

func TestSync_rejectsInvalidAndPicksAnother(t *testing.T) {
	bad := []struct {
		name string
		opts ntptest.Options
		want error
	}{
		{name: "kiss_of_death", opts: ntptest.Options{KissCode: "RATE"}, want: ntp.ErrKissOfDeath},
		{name: "stratum16", opts: ntptest.Options{Stratum: 16}, want: ntp.ErrInvalidStratum},
		{name: "leap_not_in_sync", opts: ntptest.Options{Leap: 3}, want: ntp.ErrInvalidLeapSecond},
		{name: "stale_reference", opts: ntptest.Options{ReferenceAge: 40 * time.Hour}, want: ntp.ErrServerClockFreshness},
	}
	for _, tc := range bad {
		t.Run(tc.name+"/alone", func(t *testing.T) {
			b := startNTP(t, tc.opts)
			s := New(Options{Servers: []string{b.Addr()}, Timeout: 2 * time.Second, KernelSynced: kernel(false)})
			st, err := s.Sync(context.Background())
			if !errors.Is(err, ErrNoUsableServer) || !errors.Is(err, tc.want) {
				t.Fatalf("Sync() error = %v; want ErrNoUsableServer wrapping %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), b.Addr()) {
				t.Errorf("Sync() error = %q; want it to name the server %s", err, b.Addr())
			}
			if tc.opts.KissCode != "" && !strings.Contains(err.Error(), `"RATE"`) {
				t.Errorf("Sync() error = %q; want the kiss code", err)
			}
			if st.Synced || st.Source != SourceSystem || st.LastError != err.Error() {
				t.Errorf("Status = %+v; want unsynced system with LastError", st)
			}
		})
		t.Run(tc.name+"/with_good", func(t *testing.T) {
			b := startNTP(t, tc.opts)
			good := startNTP(t, ntptest.Options{Offset: time.Hour})
			s := New(Options{Servers: []string{b.Addr(), good.Addr()}, Timeout: 2 * time.Second, KernelSynced: kernel(false)})
			st, err := s.Sync(context.Background())
			if err != nil {
				t.Fatalf("Sync() error = %v; want nil", err)
			}
			if st.Server != good.Addr() || abs(st.Offset-time.Hour) > tolerance {
				t.Errorf("Status = %+v; want server %s with offset 1h", st, good.Addr())
			}
			if b.Requests() != 1 || good.Requests() != 1 {
				t.Errorf("requests bad=%d good=%d; want 1 each", b.Requests(), good.Requests())
			}
		})
	}
}

// fakeResponse is a valid stratum-2 answer.
func fakeResponse(offset, rtt, rootDelay time.Duration) *ntp.Response {
	now := time.Now()
	return &ntp.Response{
		ClockOffset:   offset,
		RTT:           rtt,
		Version:       4,
		Stratum:       2,
		ReferenceTime: now.Add(-time.Minute),
		Time:          now,
		RootDelay:     rootDelay,
		RootDistance:  (rtt + rootDelay) / 2,
	}
}

func TestSync_picksBest(t *testing.T) {
	type answer struct {
		offset, rtt, rootDelay time.Duration
		err                    error
	}
	tests := []struct {
		name    string
		answers map[string]answer
		servers []string
		want    string
	}{
		{
			name:    "lowest_root_distance",
			servers: []string{"a", "b", "c"},
			answers: map[string]answer{
				"a": {offset: 1 * time.Second, rtt: 40 * time.Millisecond, rootDelay: 30 * time.Millisecond},
				"b": {offset: 2 * time.Second, rtt: 10 * time.Millisecond, rootDelay: 10 * time.Millisecond},
				"c": {offset: 3 * time.Second, rtt: 80 * time.Millisecond, rootDelay: 1 * time.Millisecond},
			},
			want: "b",
		},
		{
			name:    "rtt_breaks_tie",
			servers: []string{"a", "b"},
			answers: map[string]answer{
				"a": {offset: 1 * time.Second, rtt: 30 * time.Millisecond, rootDelay: 10 * time.Millisecond},
				"b": {offset: 2 * time.Second, rtt: 20 * time.Millisecond, rootDelay: 20 * time.Millisecond},
			},
			want: "b",
		},
		{
			name:    "order_breaks_full_tie",
			servers: []string{"a", "b"},
			answers: map[string]answer{
				"a": {offset: 1 * time.Second, rtt: 20 * time.Millisecond},
				"b": {offset: 2 * time.Second, rtt: 20 * time.Millisecond},
			},
			want: "a",
		},
		{
			name:    "errors_skipped",
			servers: []string{"a", "b"},
			answers: map[string]answer{
				"a": {err: errors.New("boom")},
				"b": {offset: 2 * time.Second, rtt: 900 * time.Millisecond},
			},
			want: "b",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := func(_ context.Context, host string, _ ntp.QueryOptions) (*ntp.Response, error) {
				a := tc.answers[host]
				if a.err != nil {
					return nil, a.err
				}
				return fakeResponse(a.offset, a.rtt, a.rootDelay), nil
			}
			s := New(Options{Servers: tc.servers, Query: q, KernelSynced: kernel(false)})
			st, err := s.Sync(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if st.Server != tc.want || st.Offset != tc.answers[tc.want].offset {
				t.Errorf("Sync() chose %s offset %v; want %s offset %v", st.Server, st.Offset, tc.want, tc.answers[tc.want].offset)
			}
		})
	}
}

func TestSync_serverPortAndOptions(t *testing.T) {
	type call struct {
		host    string
		port    int
		timeout time.Duration
		sysTime bool
	}
	var (
		mu    sync.Mutex
		calls = map[string]call{}
	)
	q := func(_ context.Context, host string, o ntp.QueryOptions) (*ntp.Response, error) {
		mu.Lock()
		defer mu.Unlock()
		calls[host] = call{host: host, port: o.Port, timeout: o.Timeout, sysTime: o.GetSystemTime != nil}
		return nil, errors.New("unreachable")
	}
	servers := []string{"pool.example", "ntp.example:1123", "[2001:db8::1]:4123", "2001:db8::2", "bad:port"}
	t.Run("injected_clock", func(t *testing.T) {
		s := New(Options{Servers: servers, Query: q, Timeout: 3 * time.Second, Clock: clockwork.NewFakeClock(), KernelSynced: kernel(false)})
		_, err := s.Sync(context.Background())
		if !errors.Is(err, ErrNoUsableServer) {
			t.Fatalf("Sync() error = %v; want ErrNoUsableServer", err)
		}
		if !strings.Contains(err.Error(), `"bad:port"`) {
			t.Errorf("Sync() error = %q; want it to name the malformed server", err)
		}
		want := map[string]call{
			"pool.example": {host: "pool.example", port: 123, timeout: 3 * time.Second, sysTime: true},
			"ntp.example":  {host: "ntp.example", port: 1123, timeout: 3 * time.Second, sysTime: true},
			"2001:db8::1":  {host: "2001:db8::1", port: 4123, timeout: 3 * time.Second, sysTime: true},
			"2001:db8::2":  {host: "2001:db8::2", port: 123, timeout: 3 * time.Second, sysTime: true},
		}
		mu.Lock()
		defer mu.Unlock()
		if len(calls) != len(want) {
			t.Errorf("queried %v; want %v", calls, want)
		}
		for h, w := range want {
			if calls[h] != w {
				t.Errorf("query for %s = %+v; want %+v", h, calls[h], w)
			}
		}
	})
	t.Run("real_clock_uses_kernel_timestamps", func(t *testing.T) {
		mu.Lock()
		clear(calls)
		mu.Unlock()
		s := New(Options{Servers: []string{"pool.example"}, Query: q, KernelSynced: kernel(false)})
		s.Sync(context.Background())
		mu.Lock()
		defer mu.Unlock()
		if c := calls["pool.example"]; c.sysTime || c.timeout != DefaultTimeout {
			t.Errorf("query = %+v; want no GetSystemTime and the default timeout", c)
		}
	})
}

func TestSync_unreachableFallback(t *testing.T) {
	tests := []struct {
		name       string
		kernel     func() (bool, error)
		wantSource Source
		wantSynced bool
		wantLog    string
	}{
		{name: "kernel_synced", kernel: kernel(true), wantSource: SourceKernel, wantSynced: true, wantLog: "trusting the kernel clock"},
		{name: "kernel_unsynced", kernel: kernel(false), wantSource: SourceSystem, wantSynced: false, wantLog: "TIME NOT VERIFIED"},
		{name: "kernel_error", kernel: func() (bool, error) { return true, errors.New("adjtimex: ENOSYS") }, wantSource: SourceSystem, wantSynced: false, wantLog: "TIME NOT VERIFIED"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := startNTP(t, ntptest.Options{Drop: true})
			var logs logSink
			s := New(Options{Servers: []string{srv.Addr()}, Timeout: 150 * time.Millisecond, KernelSynced: tc.kernel, Logger: logs.logger()})
			st, err := s.Sync(context.Background())
			var ne net.Error
			if !errors.Is(err, ErrNoUsableServer) || !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("Sync() error = %v; want ErrNoUsableServer wrapping a timeout", err)
			}
			if !strings.Contains(err.Error(), "UDP port") {
				t.Errorf("Sync() error = %q; want a hint about UDP reachability", err)
			}
			if st.Source != tc.wantSource || st.Synced != tc.wantSynced || st.LastError == "" {
				t.Errorf("Status = %+v; want source %s synced %v with LastError", st, tc.wantSource, tc.wantSynced)
			}
			if isClosed(s.Synced()) != tc.wantSynced {
				t.Errorf("Synced() closed = %v; want %v", isClosed(s.Synced()), tc.wantSynced)
			}
			recs := logs.records(t, tc.wantLog)
			if len(recs) != 1 || recs[0]["level"] != "WARN" {
				t.Errorf("log records %q = %v; want one WARN", tc.wantLog, recs)
			}
			if srv.Requests() != 1 {
				t.Errorf("server requests = %d; want 1", srv.Requests())
			}
			// Corrected time is the system clock.
			if d := abs(time.Until(s.Now())); d > tolerance {
				t.Errorf("Now() = %v; want system time", s.Now())
			}
		})
	}
}

func TestSync_keepsOffsetWhenServerGoesAway(t *testing.T) {
	srv := startNTP(t, ntptest.Options{Offset: time.Hour})
	var logs logSink
	s := New(Options{Servers: []string{srv.Addr()}, Timeout: 150 * time.Millisecond, KernelSynced: kernel(false), Logger: logs.logger()})
	first, err := s.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	srv.SetDrop(true)
	st, err := s.Sync(context.Background())
	if !errors.Is(err, ErrNoUsableServer) {
		t.Fatalf("Sync() error = %v; want ErrNoUsableServer", err)
	}
	if !st.Synced || st.Source != SourceNTP || st.Offset != first.Offset || st.LastSync != first.LastSync || st.LastError == "" {
		t.Errorf("Status = %+v; want the first sync kept (%+v) with LastError", st, first)
	}
	if d := abs(s.Now().Sub(time.Now().Add(time.Hour))); d > tolerance {
		t.Errorf("Now() = %v; want still corrected by 1h", s.Now())
	}
	if n := len(logs.records(t, "keeping the last measured offset")); n != 1 {
		t.Errorf("got %d 'keeping the last measured offset' logs; want 1", n)
	}
	if n := len(logs.records(t, "TIME NOT VERIFIED")); n != 0 {
		t.Errorf("got %d loud warnings; want 0 while an offset is known", n)
	}
}

func TestSync_noServers(t *testing.T) {
	for _, k := range []bool{false, true} {
		t.Run(fmt.Sprintf("kernel_%v", k), func(t *testing.T) {
			q := func(context.Context, string, ntp.QueryOptions) (*ntp.Response, error) {
				t.Error("Query called with no servers")
				return nil, errors.New("unexpected")
			}
			s := New(Options{Query: q, KernelSynced: kernel(k)})
			if !isClosed(s.Synced()) || !s.Status().Synced {
				t.Fatalf("New(no servers): Synced closed=%v status=%+v; want synced", isClosed(s.Synced()), s.Status())
			}
			st, err := s.Sync(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			want := SourceSystem
			if k {
				want = SourceKernel
			}
			if st.Source != want || !st.Synced || st.KernelSynced != k {
				t.Errorf("Status = %+v; want source %s synced", st, want)
			}
			if !s.WaitSynced(context.Background(), time.Hour) {
				t.Error("WaitSynced() = false; want true")
			}
		})
	}
}

func TestSync_jumpLogged(t *testing.T) {
	srv := startNTP(t, ntptest.Options{Offset: 2 * time.Hour})
	var logs logSink
	s := New(Options{Servers: []string{srv.Addr()}, Timeout: 2 * time.Second, KernelSynced: kernel(false), Logger: logs.logger(), JumpThreshold: 500 * time.Millisecond})
	if _, err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	first := logs.records(t, "system clock differs from NTP time")
	if len(first) != 1 || first[0]["level"] != "WARN" {
		t.Fatalf("first sync logs = %v; want one WARN about the system clock", first)
	}
	// A small change stays below the threshold.
	srv.SetOffset(2*time.Hour + 100*time.Millisecond)
	if _, err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if recs := logs.records(t, "corrected clock jumped"); len(recs) != 0 {
		t.Fatalf("jump logged for a 100ms change: %v", recs)
	}
	srv.SetOffset(2*time.Hour + 5*time.Second)
	st, err := s.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	recs := logs.records(t, "corrected clock jumped")
	if len(recs) != 1 || recs[0]["level"] != "WARN" {
		t.Fatalf("jump logs = %v; want one WARN", recs)
	}
	oldOff := time.Duration(recs[0]["old_offset"].(float64))
	newOff := time.Duration(recs[0]["new_offset"].(float64))
	if abs(oldOff-(2*time.Hour+100*time.Millisecond)) > tolerance || abs(newOff-(2*time.Hour+5*time.Second)) > tolerance || newOff != st.Offset {
		t.Errorf("jump log old_offset=%v new_offset=%v; want ≈2h0m0.1s and %v", oldOff, newOff, st.Offset)
	}
}

func TestSync_step(t *testing.T) {
	tests := []struct {
		name       string
		lag        time.Duration // the injected clock is this far behind real time
		offset     time.Duration
		threshold  time.Duration
		stepErr    error
		wantCalled bool
		wantOffset bool // status offset stays the measured one
		wantLog    string
	}{
		{name: "steps", lag: time.Minute, offset: 2 * time.Hour, wantCalled: true, wantLog: "stepped the system clock"},
		{name: "below_threshold", lag: 2 * time.Second, offset: 0, threshold: 5 * time.Second},
		{name: "not_permitted", lag: time.Minute, offset: 2 * time.Hour, stepErr: errors.New("timesync: step system clock: operation not permitted"), wantCalled: true, wantOffset: true, wantLog: "cannot step the system clock"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := clockwork.NewFakeClockAt(time.Now().Add(-tc.lag))
			srv := startNTP(t, ntptest.Options{Offset: tc.offset})
			var (
				logs   logSink
				called []time.Time
			)
			set := func(target time.Time) error {
				called = append(called, target)
				if tc.stepErr != nil {
					return tc.stepErr
				}
				fake.Advance(target.Sub(fake.Now())) // the system clock now reads target
				return nil
			}
			s := New(Options{Servers: []string{srv.Addr()}, Timeout: 2 * time.Second, Clock: fake, StepSystemClock: true,
				StepThreshold: tc.threshold, SetSystemClock: set, KernelSynced: kernel(false), Logger: logs.logger()})
			st, err := s.Sync(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			want := time.Now().Add(tc.offset)
			if (len(called) == 1) != tc.wantCalled || len(called) > 1 {
				t.Fatalf("SetSystemClock calls = %v; want called=%v once", called, tc.wantCalled)
			}
			if tc.wantCalled && abs(called[0].Sub(want)) > tolerance {
				t.Errorf("SetSystemClock(%v); want ≈ %v", called[0], want)
			}
			switch measured := tc.lag + tc.offset; {
			case tc.wantCalled && !tc.wantOffset:
				if st.Offset != 0 {
					t.Errorf("Status.Offset = %v after a step; want 0", st.Offset)
				}
			case abs(st.Offset-measured) > tolerance:
				t.Errorf("Status.Offset = %v; want the measured offset %v", st.Offset, measured)
			}
			if d := abs(s.Now().Sub(want)); d > tolerance {
				t.Errorf("Now() = %v; want %v ± %v", s.Now(), want, tolerance)
			}
			if tc.wantLog != "" {
				if recs := logs.records(t, tc.wantLog); len(recs) != 1 {
					t.Errorf("logs %q = %v; want 1", tc.wantLog, recs)
				}
			}
		})
	}
}

func TestSync_contextCancelled(t *testing.T) {
	srv := startNTP(t, ntptest.Options{Drop: true})
	var logs logSink
	s := New(Options{Servers: []string{srv.Addr()}, Timeout: 10 * time.Second, KernelSynced: kernel(false), Logger: logs.logger()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := s.Sync(ctx)
		done <- err
	}()
	eventually(t, 5*time.Second, func() bool { return srv.Requests() == 1 })
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Sync() error = %v; want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Sync did not return after cancel")
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("Sync returned after %v; want promptly after cancel", time.Since(start))
	}
	if n := len(logs.records(t, "TIME NOT VERIFIED")); n != 0 {
		t.Errorf("loud warning logged on cancel")
	}
}

func TestRun_resyncsOnFakeClock(t *testing.T) {
	fake := clockwork.NewFakeClock()
	srv := startNTP(t, ntptest.Options{Offset: time.Hour})
	s := New(Options{Servers: []string{srv.Addr()}, Timeout: 2 * time.Second, ResyncInterval: 10 * time.Minute, Clock: fake, KernelSynced: kernel(false)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	waitCtx, waitCancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer waitCancel()
	for i := 1; i <= 3; i++ {
		if err := fake.BlockUntilContext(waitCtx, 1); err != nil {
			t.Fatalf("round %d: Run never waited on the clock: %v", i, err)
		}
		if got := srv.Requests(); got != i {
			t.Fatalf("round %d: server requests = %d; want %d", i, got, i)
		}
		fake.Advance(10*time.Minute - time.Second)
		if !hasWaiter(fake) || srv.Requests() != i {
			t.Fatalf("round %d: resync happened before ResyncInterval", i)
		}
		fake.Advance(time.Second)
		eventually(t, 5*time.Second, func() bool { return srv.Requests() == i+1 })
	}
	if !isClosed(s.Synced()) {
		t.Error("Synced() not closed")
	}
}

// hasWaiter reports whether the fake clock has at least one pending timer
// right now.
func hasWaiter(fake *clockwork.FakeClock) bool {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return fake.BlockUntilContext(ctx, 1) == nil
}

func TestRun_backoffWhileUnsynced(t *testing.T) {
	fake := clockwork.NewFakeClock()
	var (
		calls atomic.Int32
		fail  atomic.Bool
	)
	fail.Store(true)
	q := func(context.Context, string, ntp.QueryOptions) (*ntp.Response, error) {
		calls.Add(1)
		if fail.Load() {
			return nil, errors.New("network unreachable")
		}
		return fakeResponse(time.Second, time.Millisecond, 0), nil
	}
	s := New(Options{Servers: []string{"pool.example"}, Query: q, ResyncInterval: 30 * time.Second, Clock: fake, KernelSynced: kernel(false)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	waitCtx, waitCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer waitCancel()
	// Each step: the delay before the next round, and whether that next
	// round succeeds.
	steps := []struct {
		delay       time.Duration
		nextSucceed bool
	}{
		{5 * time.Second, false}, {10 * time.Second, false}, {20 * time.Second, false}, {30 * time.Second, false},
		{30 * time.Second, true},  // capped at ResyncInterval; this round succeeds
		{30 * time.Second, false}, // synced: regular interval; next fails
		{5 * time.Second, false},  // back-off restarts at 5s
	}
	for i, st := range steps {
		want := int32(i + 1)
		if err := fake.BlockUntilContext(waitCtx, 1); err != nil {
			t.Fatalf("step %d: Run never waited: %v", i, err)
		}
		if got := calls.Load(); got != want {
			t.Fatalf("step %d: queries = %d; want %d", i, got, want)
		}
		fail.Store(!st.nextSucceed)
		fake.Advance(st.delay - time.Millisecond)
		if !hasWaiter(fake) || calls.Load() != want {
			t.Fatalf("step %d: next round came before %v", i, st.delay)
		}
		fake.Advance(time.Millisecond)
		eventually(t, 5*time.Second, func() bool { return calls.Load() == want+1 })
	}
}

func TestRun_kernelSyncedUsesRegularInterval(t *testing.T) {
	fake := clockwork.NewFakeClock()
	var calls atomic.Int32
	q := func(context.Context, string, ntp.QueryOptions) (*ntp.Response, error) {
		calls.Add(1)
		return nil, errors.New("network unreachable")
	}
	s := New(Options{Servers: []string{"pool.example"}, Query: q, ResyncInterval: time.Minute, Clock: fake, KernelSynced: kernel(true)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitCtx, waitCancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer waitCancel()
	if err := fake.BlockUntilContext(waitCtx, 1); err != nil {
		t.Fatal(err)
	}
	fake.Advance(time.Minute - time.Millisecond)
	if !hasWaiter(fake) || calls.Load() != 1 {
		t.Fatal("retried before ResyncInterval although the kernel is synced")
	}
	fake.Advance(time.Millisecond)
	eventually(t, 5*time.Second, func() bool { return calls.Load() == 2 })
	if st := s.Status(); st.Source != SourceKernel || !st.Synced {
		t.Errorf("Status = %+v; want kernel source", st)
	}
}

func TestWaitSynced(t *testing.T) {
	t.Run("times_out_on_fake_clock", func(t *testing.T) {
		fake := clockwork.NewFakeClock()
		var logs logSink
		s := New(Options{Servers: []string{"pool.example"}, Clock: fake, Logger: logs.logger()})
		res := make(chan bool, 1)
		go func() { res <- s.WaitSynced(context.Background(), 30*time.Second) }()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := fake.BlockUntilContext(ctx, 1); err != nil {
			t.Fatal(err)
		}
		fake.Advance(30 * time.Second)
		select {
		case got := <-res:
			if got {
				t.Error("WaitSynced() = true; want false")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("WaitSynced did not return")
		}
		if recs := logs.records(t, "proceeding on the unverified system clock"); len(recs) != 1 || recs[0]["level"] != "WARN" {
			t.Errorf("logs = %v; want one WARN", recs)
		}
	})
	t.Run("returns_when_synced", func(t *testing.T) {
		fake := clockwork.NewFakeClock()
		q := func(context.Context, string, ntp.QueryOptions) (*ntp.Response, error) {
			return fakeResponse(0, time.Millisecond, 0), nil
		}
		s := New(Options{Servers: []string{"pool.example"}, Clock: fake, Query: q, KernelSynced: kernel(false)})
		res := make(chan bool, 1)
		go func() { res <- s.WaitSynced(context.Background(), time.Hour) }()
		if _, err := s.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-res:
			if !got {
				t.Error("WaitSynced() = false; want true")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("WaitSynced did not return after sync")
		}
	})
	t.Run("context_cancelled", func(t *testing.T) {
		s := New(Options{Servers: []string{"pool.example"}, Clock: clockwork.NewFakeClock()})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if s.WaitSynced(ctx, time.Hour) {
			t.Error("WaitSynced(cancelled) = true; want false")
		}
	})
}

func TestNow_concurrent(t *testing.T) {
	srv := startNTP(t, ntptest.Options{Offset: time.Hour})
	s := New(Options{Servers: []string{srv.Addr()}, Timeout: 2 * time.Second, KernelSynced: kernel(false)})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = s.Now()
				_ = s.Status()
			}
		})
	}
	for range 5 {
		if _, err := s.Sync(context.Background()); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
	if d := abs(s.Now().Sub(time.Now().Add(time.Hour))); d > tolerance {
		t.Errorf("Now() = %v; want real now + 1h", s.Now())
	}
}

func TestDefaultQuery_againstNTPTest(t *testing.T) {
	srv := startNTP(t, ntptest.Options{Offset: -3 * time.Second})
	host, port, err := ParseServer(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	r, err := ntpQuery(context.Background(), host, ntp.QueryOptions{Port: port, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	if abs(r.ClockOffset+3*time.Second) > tolerance {
		t.Errorf("ClockOffset = %v; want -3s", r.ClockOffset)
	}
}

func TestParseServer(t *testing.T) {
	tests := []struct {
		in       string
		wantHost string
		wantPort int
		wantErr  bool
	}{
		{in: "pool.ntp.org", wantHost: "pool.ntp.org", wantPort: 123},
		{in: " pool.ntp.org ", wantHost: "pool.ntp.org", wantPort: 123},
		{in: "127.0.0.1:12300", wantHost: "127.0.0.1", wantPort: 12300},
		{in: "[::1]:1234", wantHost: "::1", wantPort: 1234},
		{in: "[::1]", wantHost: "::1", wantPort: 123},
		{in: "fe80::1", wantHost: "fe80::1", wantPort: 123},
		{in: "", wantErr: true},
		{in: "host:", wantErr: true},
		{in: "host:0", wantErr: true},
		{in: "host:65536", wantErr: true},
		{in: "host:ntp", wantErr: true},
		{in: ":123", wantErr: true},
		{in: "[]", wantErr: true},
		{in: "[::1]x", wantErr: true},
		{in: "[::1", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			h, p, err := ParseServer(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParseServer(%q) error = %v; wantErr %v", tc.in, err, tc.wantErr)
			}
			if err != nil {
				if !strings.HasPrefix(err.Error(), "timesync: ") {
					t.Errorf("ParseServer(%q) error = %q; want the timesync: prefix", tc.in, err)
				}
				return
			}
			if h != tc.wantHost || p != tc.wantPort {
				t.Errorf("ParseServer(%q) = %q, %d; want %q, %d", tc.in, h, p, tc.wantHost, tc.wantPort)
			}
		})
	}
}

func TestKernelStateSynced(t *testing.T) {
	tests := []struct {
		name     string
		state    int
		status   int64
		maxError int64
		want     bool
	}{
		{name: "ok", state: 0, status: 0x2001, maxError: 500_000, want: true},
		{name: "leap_insert_ok", state: 1, status: 0x0011, maxError: 1000, want: true},
		{name: "time_error", state: 5, status: 0, maxError: 1000, want: false},
		{name: "sta_unsync", state: 0, status: 0x0040, maxError: 1000, want: false},
		{name: "maxerror_16s", state: 0, status: 0, maxError: 16_000_000, want: false},
		{name: "maxerror_negative", state: 0, status: 0, maxError: -1, want: false},
		{name: "boot_default", state: 5, status: 0x0040, maxError: 16_000_000, want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := kernelStateSynced(tc.state, tc.status, tc.maxError); got != tc.want {
				t.Errorf("kernelStateSynced(%d, %#x, %d) = %v; want %v", tc.state, tc.status, tc.maxError, got, tc.want)
			}
		})
	}
}

func TestSystemClock(t *testing.T) {
	var c Clock = SystemClock{}
	if d := abs(time.Since(c.Now())); d > time.Second || c.Now().Location() != time.UTC {
		t.Errorf("SystemClock.Now() = %v; want current UTC time", c.Now())
	}
}

func FuzzParseServer(f *testing.F) {
	for _, s := range []string{"pool.ntp.org", "127.0.0.1:123", "[::1]:123", "::1", "[", "]:", "a:b:c", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, p, err := ParseServer(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "timesync: ") {
				t.Fatalf("error without prefix: %v", err)
			}
			return
		}
		if h == "" || p < 1 || p > 65535 {
			t.Fatalf("ParseServer(%q) = %q, %d", s, h, p)
		}
	})
}

// steppedWall is a system wall clock that an operator steps while the
// monotonic clock (the fake) runs on.
type steppedWall struct {
	clk  *clockwork.FakeClock
	step atomic.Int64 // nanoseconds added to the fake clock
}

func (w *steppedWall) Now() time.Time { return w.clk.Now().Add(time.Duration(w.step.Load())) }

func TestSync_systemClockSteps(t *testing.T) {
	// True time is the fake clock; the NTP server serves it. The system wall
	// clock starts 3 min slow and is then stepped by ±1 h.
	fake := clockwork.NewFakeClockAt(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC))
	wall := &steppedWall{clk: fake}
	wall.step.Store(int64(-3 * time.Minute))
	srv := startNTP(t, ntptest.Options{Now: fake.Now})
	var logs logSink
	s := New(Options{Servers: []string{srv.Addr()}, Timeout: 2 * time.Second, Clock: fake, Wall: wall.Now,
		KernelSynced: kernel(false), SetSystemClock: noStep(t), Logger: logs.logger()})
	if got := s.Now(); !got.Equal(wall.Now()) {
		t.Fatalf("Now() before sync = %v; want the system wall clock %v", got, wall.Now())
	}
	if _, err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		step time.Duration // total system clock error after the step
	}{
		{"forward 1h", time.Hour - 3*time.Minute},
		{"back to the start", -3 * time.Minute},
		{"back 1h", -time.Hour - 3*time.Minute},
		{"forward 1h again", -3 * time.Minute},
	}
	last := s.Now()
	for _, tt := range steps {
		t.Run(tt.name, func(t *testing.T) {
			wall.step.Store(int64(tt.step))
			fake.Advance(10 * time.Second)
			// Between measurements corrected time ignores the step.
			got := s.Now()
			if d := abs(got.Sub(fake.Now())); d > tolerance {
				t.Errorf("Now() after the step = %v; want true time %v ± %v", got, fake.Now(), tolerance)
			}
			if !got.After(last) {
				t.Errorf("Now() went from %v to %v: not monotonic", last, got)
			}
			// A resync measures the stepped clock and keeps time continuous.
			st, err := s.Sync(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if d := abs(st.Offset + tt.step); d > tolerance {
				t.Errorf("offset = %v; want %v", st.Offset, -tt.step)
			}
			if d := abs(s.Now().Sub(fake.Now())); d > tolerance {
				t.Errorf("Now() after resync = %v; want %v", s.Now(), fake.Now())
			}
			last = s.Now()
		})
	}
	if recs := logs.records(t, "corrected clock jumped"); len(recs) != 0 {
		t.Errorf("system clock steps logged as corrected-clock jumps: %v", recs)
	}
	if recs := logs.records(t, "system clock was stepped"); len(recs) != len(steps) {
		t.Errorf("%d step logs; want %d: %v", len(recs), len(steps), recs)
	}
}
