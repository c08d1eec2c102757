package spool

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// roFS behaves like a read-only mount: reads work, every write is EROFS.
type roFS struct{ osFS }

func erofs(op, p string) error { return &fs.PathError{Op: op, Path: p, Err: syscall.EROFS} }

func (roFS) MkdirAll(p string, perm fs.FileMode) error {
	if fi, err := os.Stat(p); err == nil && fi.IsDir() {
		return nil
	}
	return erofs("mkdir", p)
}

func (r roFS) OpenFile(n string, flag int, perm fs.FileMode) (*os.File, error) {
	if flag&(os.O_WRONLY|os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND) != 0 {
		return nil, erofs("open", n)
	}
	return r.osFS.OpenFile(n, flag, perm)
}
func (roFS) Rename(o, n string) error { return erofs("rename", o) }
func (roFS) Remove(n string) error    { return erofs("remove", n) }
func (roFS) Link(o, n string) error   { return erofs("link", o) }

func TestOpenOrMemory(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(t *testing.T, o Options) (dir string, fsys fileSystem)
		wantNext  uint64
		wantSeqs  []uint64 // records loaded from the unusable dir
		wantInErr string
	}{
		{"read-only, no state yet", func(t *testing.T, o Options) (string, fileSystem) {
			return filepath.Join(t.TempDir(), "state"), roFS{}
		}, 1, nil, "read-only file system"},
		{"read-only with earlier records", func(t *testing.T, o Options) (string, fileSystem) {
			dir := t.TempDir()
			s := mustOpen(t, dir, o)
			appendN(t, s, 0, 30)
			if err := s.Ack(1, 2, 3, 4, 5, 6, 7, 8, 9, 10); err != nil {
				t.Fatal(err)
			}
			_ = s.Close()
			return dir, roFS{}
			// The counter continues from the seq.next reservation (1002),
			// not from spool.db's exact 31: memory-only seqs are never
			// persisted, so this keeps them clear of the next disk start.
		}, 1002, seqRange(11, 30), "read-only file system"},
		{"state dir is a file", func(t *testing.T, o Options) (string, fileSystem) {
			f := filepath.Join(t.TempDir(), "file")
			if err := os.WriteFile(f, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(f, "state"), nil
		}, 1, nil, "not a directory"},
	}
	if os.Geteuid() != 0 { // root ignores permission bits; roFS covers it there
		tests = append(tests, struct {
			name      string
			setup     func(t *testing.T, o Options) (dir string, fsys fileSystem)
			wantNext  uint64
			wantSeqs  []uint64
			wantInErr string
		}{"chmod 0500 dir", func(t *testing.T, o Options) (string, fileSystem) {
			dir := filepath.Join(t.TempDir(), "state")
			if err := os.Mkdir(dir, 0o500); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
			return dir, nil
		}, 1, nil, "permission denied"})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, _, lb := testOpts(t)
			dir, fsys := tc.setup(t, o)
			o.fs = fsys
			if _, err := Open(dir, o); err == nil || !strings.Contains(err.Error(), tc.wantInErr) {
				t.Fatalf("Open = %v; want an error containing %q", err, tc.wantInErr)
			}
			s, err := OpenOrMemory(dir, o)
			if err != nil {
				t.Fatalf("OpenOrMemory = %v; want a memory spool", err)
			}
			t.Cleanup(func() { _ = s.Close() })
			st := s.Stats()
			if !st.InMemory || !strings.Contains(st.LastError, tc.wantInErr) || st.NextSeq != tc.wantNext {
				t.Fatalf("Stats() = %+v; want InMemory, LastError with %q, NextSeq %d", st, tc.wantInErr, tc.wantNext)
			}
			if len(lb.lines("level=WARN", "memory only", "dir="+dir)) != 1 {
				t.Fatalf("want one WARN naming the dir:\n%s", lb)
			}
			if got := seqs(allPending(t, s)); !slices.Equal(got, tc.wantSeqs) {
				t.Fatalf("loaded %v; want %v", got, tc.wantSeqs)
			}
			got := appendN(t, s, 100, 3)
			if got[0].Seq != tc.wantNext {
				t.Fatalf("first seq in memory = %d; want %d", got[0].Seq, tc.wantNext)
			}
			if err := s.Ack(got[1].Seq); err != nil {
				t.Fatal(err)
			}
			want := append(slices.Clone(tc.wantSeqs), got[0].Seq, got[2].Seq)
			if p := seqs(allPending(t, s)); !slices.Equal(p, want) {
				t.Fatalf("pending %v; want %v", p, want)
			}
			for _, r := range allPending(t, s)[len(tc.wantSeqs):] {
				if !sameRecord(r, got[r.Seq-tc.wantNext]) {
					t.Fatalf("memory record %+v differs from appended", r)
				}
			}
		})
	}
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func TestMemoryOnlyDropsOldest(t *testing.T) {
	o, _, lb := testOpts(t)
	o.MaxBytes = minMaxBytes
	o.fs = roFS{}
	s, err := OpenOrMemory(filepath.Join(t.TempDir(), "x"), o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	appendN(t, s, 0, 200)
	st := s.Stats()
	if st.Bytes > o.MaxBytes || st.Dropped == 0 || st.Depth+int(st.Dropped) != 200 {
		t.Fatalf("Stats() = %+v; want bounded by %d with drops counted", st, o.MaxBytes)
	}
	got := seqs(allPending(t, s))
	if got[len(got)-1] != 200 || got[0] != st.Dropped+1 {
		t.Fatalf("kept %d..%d; want the newest", got[0], got[len(got)-1])
	}
	if n := len(lb.lines("level=WARN", "full")); n != 1 {
		t.Fatalf("%d full warnings; want 1", n)
	}
}

const envFsizeChild = "FIELDGATE_SPOOL_FSIZE_CHILD"

// TestWriteFailureOverflowsToMemory makes bbolt's writes fail for real
// (RLIMIT_FSIZE → EFBIG, as on a full disk) in a child process, so the limit
// does not touch the parent.
func TestWriteFailureOverflowsToMemory(t *testing.T) {
	if os.Getenv(envFsizeChild) != "" {
		fsizeChild(t)
		return
	}
	cmd := childCmd(t, "TestWriteFailureOverflowsToMemory", envFsizeChild+"=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child failed: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "fsize-child-checked") {
		t.Fatalf("child did not run its checks:\n%s", out)
	}
	t.Logf("child: %s", strings.TrimSpace(strings.Split(string(out), "\n")[0]))
}

func fsizeChild(t *testing.T) {
	signal.Ignore(syscall.SIGXFSZ)
	dir := t.TempDir()
	o, clk, lb := testOpts(t)
	s := mustOpen(t, dir, o)
	appendN(t, s, 0, 20)
	fi, err := os.Stat(filepath.Join(dir, dbFileName))
	if err != nil {
		t.Fatal(err)
	}
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &orig); err != nil {
		t.Fatal(err)
	}
	lim := orig
	lim.Cur = uint64(fi.Size())
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	big := Record{TS: epoch, Sensor: "big", Values: manyValues(200)}
	var appended []uint64
	for i := 0; i < 500 && s.Stats().Overflow == 0; i++ {
		got, err := s.Append(context.Background(), big)
		if err != nil {
			t.Fatalf("Append while the disk fails = %v; want nil (kept in memory)", err)
		}
		appended = append(appended, got[0].Seq)
	}
	st := s.Stats()
	if st.Overflow == 0 || !strings.Contains(st.LastError, "too large") {
		t.Fatalf("Stats() = %+v; want overflow and a LastError about the file size", st)
	}
	// More appends during the back-off go straight to memory; acks of disk
	// records hide them at once.
	more := appendN(t, s, 0, 5)
	if err := s.Ack(1, 2); err != nil {
		t.Fatal(err)
	}
	pend := seqs(allPending(t, s))
	if slices.Contains(pend, 1) || slices.Contains(pend, 2) || pend[len(pend)-1] != more[4].Seq {
		t.Fatalf("pending during failure %v; want 3..%d", pend, more[4].Seq)
	}
	checkContiguous(t, pend)
	if n := len(lb.lines("level=WARN", "disk commit failed")); n != 1 {
		t.Fatalf("%d disk warnings; want 1:\n%s", n, lb)
	}

	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &orig); err != nil {
		t.Fatal(err)
	}
	clk.Advance(retryInterval)
	last := appendN(t, s, 0, 1)
	if st := s.Stats(); st.Overflow != 0 || st.LastError != "" || st.Depth != len(pend)+1 {
		t.Fatalf("after the disk recovered Stats() = %+v; want everything on disk", st)
	}
	if len(lb.lines("work again")) != 1 {
		t.Fatalf("no recovery log:\n%s", lb)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := mustOpen(t, dir, o)
	got := seqs(allPending(t, s2))
	want := append(pend, last[0].Seq)
	if !slices.Equal(got, want) {
		t.Fatalf("after reopen pending %v; want %v", got, want)
	}
	fmt.Printf("fsize-child-checked: %d records appended, %d overflowed to memory and were written after recovery\n",
		len(appended)+6, st.Overflow+5)
}
