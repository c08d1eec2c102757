package spool

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSeqStartsAtOneAndSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	o, _, _ := testOpts(t)
	s := mustOpen(t, dir, o)
	if got := s.Stats().NextSeq; got != 1 {
		t.Fatalf("fresh Stats().NextSeq = %d; want 1", got)
	}
	first := appendN(t, s, 0, 5)
	if got := seqs(first); !slices.Equal(got, []uint64{1, 2, 3, 4, 5}) {
		t.Fatalf("seqs on a fresh dir = %v; want 1..5", got)
	}
	batch, err := s.Append(context.Background(), rec(5), rec(6), rec(7))
	if err != nil {
		t.Fatal(err)
	}
	if got := seqs(batch); !slices.Equal(got, []uint64{6, 7, 8}) {
		t.Fatalf("batch seqs = %v; want 6 7 8", got)
	}
	if err := s.Ack(1, 2, 3, 4, 5, 6, 7, 8); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	for reopen := range 3 {
		s2 := mustOpen(t, dir, o)
		want := uint64(9 + reopen*2)
		if got := s2.Stats().NextSeq; got != want {
			t.Fatalf("reopen %d: NextSeq = %d; want %d (acked seqs are never reused)", reopen, got, want)
		}
		got := appendN(t, s2, 0, 2)
		if got[0].Seq != want || got[1].Seq != want+1 {
			t.Fatalf("reopen %d: seqs %v; want %d,%d", reopen, seqs(got), want, want+1)
		}
		if err := s2.Close(); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, seqFileName))
	if err != nil {
		t.Fatalf("seq.next not written: %v", err)
	}
	if r, err := parseSeqFile(b); err != nil || r < 15 {
		t.Fatalf("seq.next reservation = %d, %v; want >= next seq", r, err)
	}
}

func TestPendingOrderAndAck(t *testing.T) {
	tests := []struct {
		name     string
		acks     []uint64
		after    uint64
		max      int
		want     []uint64
		depth    int
		oldest   uint64
		reopened bool
	}{
		{"all oldest first", nil, 0, 100, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 10, 1, false},
		{"max bounds", nil, 0, 3, []uint64{1, 2, 3}, 10, 1, false},
		{"after seq", nil, 7, 100, []uint64{8, 9, 10}, 10, 1, false},
		{"ack prefix", []uint64{1, 2, 3}, 0, 100, []uint64{4, 5, 6, 7, 8, 9, 10}, 7, 4, false},
		{"ack holes and unknown", []uint64{2, 5, 9, 999, 0}, 0, 100, []uint64{1, 3, 4, 6, 7, 8, 10}, 7, 1, false},
		{"ack twice", []uint64{4, 4}, 3, 2, []uint64{5, 6}, 9, 1, false},
		{"acks survive reopen", []uint64{1, 10}, 0, 100, []uint64{2, 3, 4, 5, 6, 7, 8, 9}, 8, 2, true},
		{"after last", nil, 10, 5, nil, 10, 1, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			o, _, _ := testOpts(t)
			s := mustOpen(t, dir, o)
			in := appendN(t, s, 0, 10)
			if err := s.Ack(tc.acks...); err != nil {
				t.Fatal(err)
			}
			if tc.reopened {
				_ = s.Close()
				s = mustOpen(t, dir, o)
			}
			got, err := s.Pending(tc.after, tc.max)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(seqs(got), tc.want) {
				t.Fatalf("Pending(%d, %d) = %v; want %v", tc.after, tc.max, seqs(got), tc.want)
			}
			for _, r := range got {
				if !sameRecord(r, in[r.Seq-1]) {
					t.Fatalf("Pending returned %+v; appended %+v", r, in[r.Seq-1])
				}
			}
			st := s.Stats()
			if st.Depth != tc.depth || st.OldestSeq != tc.oldest || st.NextSeq != 11 {
				t.Fatalf("Stats() = %+v; want depth %d oldest %d next 11", st, tc.depth, tc.oldest)
			}
		})
	}
}

func TestPendingRejectsBadMax(t *testing.T) {
	o, _, _ := testOpts(t)
	s := mustOpen(t, t.TempDir(), o)
	for _, m := range []int{0, -1} {
		if _, err := s.Pending(0, m); err == nil {
			t.Fatalf("Pending(0, %d) = nil error; want error", m)
		}
	}
}

func TestBytesAccounting(t *testing.T) {
	o, _, _ := testOpts(t)
	s := mustOpen(t, t.TempDir(), o)
	var want int64
	for i := range 20 {
		r := rec(i)
		want += int64(len(appendRecord(nil, &r))) + keyLen
	}
	appendN(t, s, 0, 20)
	if got := s.Stats().Bytes; got != want {
		t.Fatalf("Stats().Bytes = %d; want %d", got, want)
	}
	var acked []uint64
	for i := uint64(1); i <= 20; i++ {
		acked = append(acked, i)
	}
	if err := s.Ack(acked...); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Bytes != 0 || st.Depth != 0 || st.OldestSeq != 0 {
		t.Fatalf("after acking all, Stats() = %+v; want empty", st)
	}
}

func TestDropOldestWhenFull(t *testing.T) {
	dir := t.TempDir()
	o, _, lb := testOpts(t)
	o.MaxBytes = minMaxBytes
	s := mustOpen(t, dir, o)
	r0 := rec(0)
	per := int64(len(appendRecord(nil, &r0))) + keyLen
	capacity := int(o.MaxBytes / per)

	appendN(t, s, 0, capacity+50)
	st := s.Stats()
	if st.Bytes > o.MaxBytes {
		t.Fatalf("Bytes = %d > MaxBytes %d", st.Bytes, o.MaxBytes)
	}
	if st.Dropped < 45 || st.Dropped > 55 {
		t.Fatalf("Dropped = %d; want about 50 (capacity %d)", st.Dropped, capacity)
	}
	got := allPending(t, s)
	if len(got) != st.Depth || got[len(got)-1].Seq != uint64(capacity+50) || got[0].Seq != st.Dropped+1 {
		t.Fatalf("pending %d records from %d to %d; want the newest, from %d", len(got), got[0].Seq,
			got[len(got)-1].Seq, st.Dropped+1)
	}
	checkContiguous(t, seqs(got))
	if n := len(lb.lines("level=WARN", "full")); n != 1 {
		t.Fatalf("%d 'full' warnings in one episode; want 1:\n%s", n, lb)
	}
	// Drain below 90 %, fill again: a second episode, a second warning.
	if err := s.Ack(seqs(got)...); err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 0, capacity+10)
	if n := len(lb.lines("level=WARN", "full")); n != 2 {
		t.Fatalf("%d 'full' warnings after two episodes; want 2", n)
	}
	dropped := s.Stats().Dropped
	_ = s.Close()
	s2 := mustOpen(t, dir, o)
	if got := s2.Stats().Dropped; got != dropped {
		t.Fatalf("Dropped after reopen = %d; want %d (persisted)", got, dropped)
	}
}

func TestGroupCommitConcurrentAppends(t *testing.T) {
	o, _, _ := testOpts(t)
	s := mustOpen(t, t.TempDir(), o)
	const workers, each = 8, 40
	var wg sync.WaitGroup
	var mu sync.Mutex
	var all []uint64
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				got, err := s.Append(context.Background(), rec(w*1000+i))
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				all = append(all, got[0].Seq)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	slices.Sort(all)
	if len(all) != workers*each || all[0] != 1 {
		t.Fatalf("got %d seqs starting %d; want %d from 1", len(all), all[0], workers*each)
	}
	checkContiguous(t, all)
	if got := seqs(allPending(t, s)); !slices.Equal(got, all) {
		t.Fatalf("pending seqs differ from appended ones")
	}
}

func TestAppendContextAndClose(t *testing.T) {
	o, _, _ := testOpts(t)
	s := mustOpen(t, t.TempDir(), o)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// The committer may still win the race for an unbuffered send; both
	// outcomes are legal but must be consistent with the spool's content.
	got, err := s.Append(ctx, rec(1))
	switch {
	case errors.Is(err, context.Canceled):
		if d := s.Stats().Depth; d != 0 {
			t.Fatalf("cancelled Append stored %d records", d)
		}
	case err == nil:
		if got[0].Seq != 1 || s.Stats().Depth != 1 {
			t.Fatalf("accepted Append: %v, depth %d", seqs(got), s.Stats().Depth)
		}
	default:
		t.Fatalf("Append(cancelled ctx) = %v", err)
	}
	if _, err := s.Append(context.Background(), Record{}); err == nil {
		t.Fatal("Append(record without sensor) = nil error")
	}
	if got, err := s.Append(context.Background()); got != nil || err != nil {
		t.Fatalf("Append() = %v, %v; want nil, nil", got, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if _, err := s.Append(context.Background(), rec(2)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close = %v; want ErrClosed", err)
	}
	if _, err := s.Pending(0, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Pending after Close = %v; want ErrClosed", err)
	}
	if err := s.Ack(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ack after Close = %v; want ErrClosed", err)
	}
}

func TestSecondOpenIsRefused(t *testing.T) {
	dir := t.TempDir()
	o, _, _ := testOpts(t)
	mustOpen(t, dir, o)
	for name, open := range map[string]func(string, Options) (*Spool, error){"Open": Open, "OpenOrMemory": OpenOrMemory} {
		t.Run(name, func(t *testing.T) {
			s, err := open(dir, o)
			if err == nil {
				_ = s.Close()
				t.Fatalf("%s of a spool held by another handle succeeded", name)
			}
			if !errors.Is(err, errLocked) || !strings.Contains(err.Error(), "another fieldgate") {
				t.Fatalf("%s error = %v; want the lock explained", name, err)
			}
		})
	}
}

func TestInvalidOptions(t *testing.T) {
	if _, err := Open(t.TempDir(), Options{MaxBytes: -1}); err == nil || !strings.Contains(err.Error(), "MaxBytes") {
		t.Fatalf("Open(MaxBytes -1) = %v; want an error naming MaxBytes", err)
	}
}

func TestCompactionRecreatesEmptyGrownFile(t *testing.T) {
	dir := t.TempDir()
	o, _, lb := testOpts(t)
	o.MaxBytes = 16 << 10
	s := mustOpen(t, dir, o)
	path := filepath.Join(dir, dbFileName)
	// Big batches grow the file past 2×MaxBytes before drop-oldest trims them.
	var last []Record
	for i := range 4 {
		batch := make([]Record, 600)
		for j := range batch {
			batch[j] = rec(i*600 + j)
		}
		var err error
		if last, err = s.Append(context.Background(), batch...); err != nil {
			t.Fatal(err)
		}
	}
	fi, _ := os.Stat(path)
	if fi.Size() <= 2*o.MaxBytes {
		t.Fatalf("setup: file is %d bytes; want > %d", fi.Size(), 2*o.MaxBytes)
	}
	before := s.Stats()
	if err := s.Ack(seqs(allPending(t, s))...); err != nil {
		t.Fatal(err)
	}
	fi2, _ := os.Stat(path)
	if fi2.Size() >= fi.Size() || fi2.Size() > 2*o.MaxBytes {
		t.Fatalf("after emptying: file %d bytes (was %d); want recreated small", fi2.Size(), fi.Size())
	}
	if len(lb.lines("recreated")) != 1 {
		t.Fatalf("no compaction log line:\n%s", lb)
	}
	st := s.Stats()
	if st.NextSeq != last[len(last)-1].Seq+1 || st.Dropped != before.Dropped || st.Depth != 0 {
		t.Fatalf("after compaction Stats() = %+v; want next %d dropped %d", st, last[len(last)-1].Seq+1, before.Dropped)
	}
	got := appendN(t, s, 0, 1)
	if got[0].Seq != st.NextSeq {
		t.Fatalf("seq after compaction = %d; want %d", got[0].Seq, st.NextSeq)
	}
	_ = s.Close()
	s2 := mustOpen(t, dir, o)
	if st2 := s2.Stats(); st2.NextSeq != st.NextSeq+1 || st2.Dropped != before.Dropped || st2.Depth != 1 {
		t.Fatalf("reopened after compaction: %+v", st2)
	}
}

func TestRetryBackoffUsesClock(t *testing.T) {
	// A memory-only spool never touches the disk; a disk spool with a
	// recorded failure waits retryInterval on the injected clock.
	dir := t.TempDir()
	o, clk, _ := testOpts(t)
	s := mustOpen(t, dir, o)
	s.mu.Lock()
	s.setDiskErrLocked(errors.New("spool: injected"))
	s.mu.Unlock()
	appendN(t, s, 0, 3)
	if st := s.Stats(); st.Overflow != 3 || st.LastError == "" {
		t.Fatalf("during back-off Stats() = %+v; want 3 in overflow and LastError", st)
	}
	clk.Advance(retryInterval)
	appendN(t, s, 3, 1)
	if st := s.Stats(); st.Overflow != 0 || st.LastError != "" || st.Depth != 4 {
		t.Fatalf("after back-off Stats() = %+v; want all 4 on disk", st)
	}
	_ = s.Close()
	s2 := mustOpen(t, dir, o)
	got := allPending(t, s2)
	if !slices.Equal(seqs(got), []uint64{1, 2, 3, 4}) {
		t.Fatalf("after reopen pending %v; want 1..4", seqs(got))
	}
}

func TestCloseFlushesOverflow(t *testing.T) {
	dir := t.TempDir()
	o, _, _ := testOpts(t)
	s := mustOpen(t, dir, o)
	s.mu.Lock()
	s.setDiskErrLocked(errors.New("spool: injected"))
	s.mu.Unlock()
	appendN(t, s, 0, 2)
	if err := s.Ack(1); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := mustOpen(t, dir, o)
	if got := seqs(allPending(t, s2)); !slices.Equal(got, []uint64{2}) {
		t.Fatalf("after Close with overflow, pending %v; want [2]", got)
	}
}

var _ = time.Second
