package spool

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const envCrashDir = "FIELDGATE_SPOOL_CRASH_DIR"

// TestCrashSafety re-executes the test binary as a child that appends (and
// acks the oldest records) in a loop, reporting every Append and Ack that
// returned through a pipe, and SIGKILLs it at a random point. After every
// kill the spool must hold every reported, unacknowledged record, none of the
// reported acknowledged ones, and contiguous seqs.
func TestCrashSafety(t *testing.T) {
	if dir := os.Getenv(envCrashDir); dir != "" {
		crashChild(t, dir)
		return
	}
	dir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	live := map[uint64]bool{}  // reported appended, not reported acked
	acked := map[uint64]bool{} // reported acked
	var maxSeq uint64
	const rounds = 4
	for round := range rounds {
		killAt := 20 + rng.IntN(300) // reported operations before the kill
		cmd := childCmd(t, "TestCrashSafety", envCrashDir+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		watchdog := time.AfterFunc(45*time.Second, func() { _ = cmd.Process.Kill() })
		sc := bufio.NewScanner(out)
		n := 0
		killed := false
		for sc.Scan() {
			op, arg, ok := strings.Cut(sc.Text(), " ")
			seq, perr := strconv.ParseUint(arg, 10, 64)
			if !ok || perr != nil {
				continue // test framework output
			}
			switch op {
			case "A":
				live[seq] = true
				maxSeq = max(maxSeq, seq)
			case "K":
				delete(live, seq)
				acked[seq] = true
			default:
				continue
			}
			if n++; n == killAt && !killed {
				_ = cmd.Process.Kill() // SIGKILL; lines already in the pipe are still read
				killed = true
			}
		}
		_ = cmd.Wait()
		watchdog.Stop()
		if !killed {
			t.Fatalf("round %d: child ended after %d operations before the kill at %d", round, n, killAt)
		}

		o, _, lb := testOpts(t)
		s, err := Open(dir, o)
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		present := seqs(allPending(t, s))
		st := s.Stats()
		_ = s.Close()
		if len(lb.lines("quarantined_as")) > 0 || st.Quarantined != 0 {
			t.Fatalf("round %d: SIGKILL damaged the database:\n%s", round, lb)
		}
		checkContiguous(t, present)
		for seq := range live {
			if !slices.Contains(present, seq) {
				t.Fatalf("round %d: committed seq %d lost (present %d..%d)", round, seq, present[0], present[len(present)-1])
			}
		}
		for _, seq := range present {
			if acked[seq] {
				t.Fatalf("round %d: acknowledged seq %d is back", round, seq)
			}
		}
		if st.NextSeq <= maxSeq {
			t.Fatalf("round %d: NextSeq %d not past reported seq %d", round, st.NextSeq, maxSeq)
		}
		t.Logf("round %d: killed after %d operations; %d records present, next seq %d", round, n, len(present), st.NextSeq)
	}
}

func crashChild(t *testing.T, dir string) {
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(os.Stdout)
	report := func(op string, seq uint64) {
		fmt.Fprintf(w, "%s %d\n", op, seq)
	}
	deadline := time.Now().Add(40 * time.Second)
	for i := 0; i < 100000 && time.Now().Before(deadline); i++ {
		batch := make([]Record, 1+i%4)
		for j := range batch {
			batch[j] = rec(i*4 + j)
		}
		got, err := s.Append(context.Background(), batch...)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range got {
			report("A", r.Seq)
		}
		if i%5 == 4 {
			old, err := s.Pending(0, 3)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Ack(seqs(old)...); err != nil {
				t.Fatal(err)
			}
			for _, r := range old {
				report("K", r.Seq)
			}
		}
		if err := w.Flush(); err != nil { // one write per iteration: reported = returned
			t.Fatal(err)
		}
	}
	t.Fatal("crash child was not killed")
}
