package spool

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

// logBuf captures log output for assertions.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// lines returns the captured lines containing all of subs.
func (l *logBuf) lines(subs ...string) []string {
	var out []string
	for _, ln := range strings.Split(l.String(), "\n") {
		ok := ln != ""
		for _, s := range subs {
			ok = ok && strings.Contains(ln, s)
		}
		if ok {
			out = append(out, ln)
		}
	}
	return out
}

func newLog() (*slog.Logger, *logBuf) {
	lb := &logBuf{}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

var epoch = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

// testOpts returns options with a fake clock and a captured log.
func testOpts(t *testing.T) (Options, *clockwork.FakeClock, *logBuf) {
	t.Helper()
	lg, lb := newLog()
	clk := clockwork.NewFakeClockAt(epoch)
	return Options{Logger: lg, Clock: clk}, clk, lb
}

func mustOpen(t *testing.T, dir string, o Options) *Spool {
	t.Helper()
	s, err := Open(dir, o)
	if err != nil {
		t.Fatalf("Open(%s) = %v", dir, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func rec(i int) Record {
	return Record{
		TS:     epoch.Add(time.Duration(i) * time.Millisecond),
		Sensor: fmt.Sprintf("env-%d", i%3),
		Values: map[string]float64{"temperature_c": 20 + float64(i)/10, "humidity_pct": float64(i % 100)},
	}
}

func appendN(t *testing.T, s *Spool, from, n int) []Record {
	t.Helper()
	var out []Record
	for i := from; i < from+n; i++ {
		got, err := s.Append(context.Background(), rec(i))
		if err != nil {
			t.Fatalf("Append(rec %d) = %v", i, err)
		}
		out = append(out, got...)
	}
	return out
}

func allPending(t *testing.T, s *Spool) []Record {
	t.Helper()
	var out []Record
	after := uint64(0)
	for range 100000 {
		got, err := s.Pending(after, 97)
		if err != nil {
			t.Fatalf("Pending(%d) = %v", after, err)
		}
		if len(got) == 0 {
			return out
		}
		out = append(out, got...)
		after = got[len(got)-1].Seq
	}
	t.Fatal("Pending did not terminate")
	return nil
}

func seqs(recs []Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

func sameRecord(a, b Record) bool {
	return a.Seq == b.Seq && a.TS.Equal(b.TS) && a.Sensor == b.Sensor && maps.Equal(a.Values, b.Values)
}

// checkContiguous fails unless seqs are strictly increasing by one.
func checkContiguous(t *testing.T, s []uint64) {
	t.Helper()
	for i := 1; i < len(s); i++ {
		if s[i] != s[i-1]+1 {
			t.Fatalf("seqs not contiguous at %d: %d then %d", i, s[i-1], s[i])
		}
	}
}
