package spool

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// filled creates a spool in dir with n records in batches and closes it.
func filled(t *testing.T, dir string, o Options, n int) []Record {
	t.Helper()
	s := mustOpen(t, dir, o)
	var out []Record
	for i := 0; i < n; i += 50 {
		batch := make([]Record, 0, 50)
		for j := i; j < min(i+50, n); j++ {
			batch = append(batch, rec(j))
		}
		got, err := s.Append(context.Background(), batch...)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, got...)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCorruptFileQuarantined(t *testing.T) {
	ps := os.Getpagesize()
	rnd := func(n int) []byte {
		b := make([]byte, n)
		r := rand.New(rand.NewPCG(1, 2))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	tests := []struct {
		name       string
		damage     func(b []byte) []byte
		minSalvage int
	}{
		{"truncated below two pages", func(b []byte) []byte { return b[:ps+100] }, 0},
		{"truncated tail", func(b []byte) []byte { return b[:3*ps] }, 0},
		// The last commit's pages (root included) are gone: the previous
		// meta page's tree still holds everything but the last batch of 50.
		{"last used page cut off", func(b []byte) []byte { return b[:(highWater(b, ps)-1)*ps] }, 350},
		{"zero-filled", func(b []byte) []byte { return make([]byte, len(b)) }, 0},
		{"zero-filled data pages", func(b []byte) []byte { clear(b[2*ps:]); return b }, 0},
		{"random bytes", func(b []byte) []byte { return rnd(len(b)) }, 0},
		{"random data pages", func(b []byte) []byte { copy(b[2*ps:], rnd(len(b)-2*ps)); return b }, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			o, clk, lb := testOpts(t)
			in := filled(t, dir, o, 400)
			lastSeq := in[len(in)-1].Seq
			path := filepath.Join(dir, dbFileName)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			damaged := tc.damage(b)
			if err := os.WriteFile(path, damaged, 0o600); err != nil {
				t.Fatal(err)
			}

			s := mustOpen(t, dir, o)

			qpath := path + ".corrupt-" + strconv.FormatInt(clk.Now().Unix(), 10)
			kept, err := os.ReadFile(qpath)
			if err != nil {
				t.Fatalf("quarantined file %s: %v", qpath, err)
			}
			if !bytes.Equal(kept, damaged) {
				t.Fatalf("quarantined file differs from the damaged one")
			}
			if lines := lb.lines("level=ERROR", "path="+path, "quarantined_as="+qpath); len(lines) != 1 {
				t.Fatalf("want one ERROR line naming %s and %s; log:\n%s", path, qpath, lb)
			}
			st := s.Stats()
			if st.NextSeq <= lastSeq {
				t.Fatalf("NextSeq after quarantine = %d; want > %d (never reuse)", st.NextSeq, lastSeq)
			}
			salvaged := allPending(t, s)
			for _, r := range salvaged {
				if r.Seq == 0 || r.Seq > lastSeq || !sameRecord(r, in[r.Seq-1]) {
					t.Fatalf("salvaged record %+v was never appended as such", r)
				}
			}
			t.Logf("salvaged %d of %d records; next seq %d", len(salvaged), len(in), st.NextSeq)
			if len(salvaged) < tc.minSalvage {
				t.Fatalf("salvaged %d records; want at least %d", len(salvaged), tc.minSalvage)
			}
			if len(salvaged) != st.Depth {
				t.Fatalf("Depth %d but %d pending", st.Depth, len(salvaged))
			}
			got := appendN(t, s, 0, 2)
			if got[0].Seq != st.NextSeq || got[1].Seq != st.NextSeq+1 {
				t.Fatalf("appends after quarantine got %v; want from %d", seqs(got), st.NextSeq)
			}
			// The fresh file is healthy: a reopen neither quarantines nor loses.
			_ = s.Close()
			s2 := mustOpen(t, dir, o)
			if n := len(lb.lines("quarantined_as")); n != 1 {
				t.Fatalf("reopen quarantined again (%d lines)", n)
			}
			if got := s2.Stats().Depth; got != len(salvaged)+2 {
				t.Fatalf("depth after reopen %d; want %d", got, len(salvaged)+2)
			}
		})
	}
}

// highWater returns the page count recorded by the newest meta page.
func highWater(b []byte, ps int) int {
	best, hw := uint64(0), 0
	for _, off := range []int{0, ps} {
		m := b[off+16:]
		if txid := binary.LittleEndian.Uint64(m[48:]); txid >= best {
			best, hw = txid, int(binary.LittleEndian.Uint64(m[40:]))
		}
	}
	return hw
}

func TestEmptyFileIsFresh(t *testing.T) {
	dir := t.TempDir()
	o, _, _ := testOpts(t)
	in := filled(t, dir, o, 10)
	if err := os.Truncate(filepath.Join(dir, dbFileName), 0); err != nil {
		t.Fatal(err)
	}
	s := mustOpen(t, dir, o)
	if got := s.Stats().NextSeq; got <= in[len(in)-1].Seq {
		t.Fatalf("NextSeq = %d after the db was emptied; want past %d via seq.next", got, in[len(in)-1].Seq)
	}
}

func TestSeqContinuesWithoutDatabase(t *testing.T) {
	dir := t.TempDir()
	o, _, _ := testOpts(t)
	in := filled(t, dir, o, 2600) // crosses two reservation blocks
	if err := os.Remove(filepath.Join(dir, dbFileName)); err != nil {
		t.Fatal(err)
	}
	s := mustOpen(t, dir, o)
	if got, last := s.Stats().NextSeq, in[len(in)-1].Seq; got <= last || got > last+seqBlock+50 {
		t.Fatalf("NextSeq without db = %d; want in (%d, %d]", got, last, last+seqBlock+50)
	}
}

// leafPages returns the live leaf pages of the records bucket (8-byte keys)
// with their keys, ordered by first key.
func leafPages(t *testing.T, path string) (ids []int, keys [][]uint64) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ps := db.Info().PageSize
	type leaf struct {
		id   int
		keys []uint64
	}
	var leaves []leaf
	_ = db.View(func(tx *bolt.Tx) error {
		for id := 2; ; id++ {
			info, err := tx.Page(id)
			if err != nil || info == nil {
				return err
			}
			if info.Type != "leaf" {
				continue
			}
			p := raw[id*ps:]
			count := int(binary.LittleEndian.Uint16(p[10:]))
			var ks []uint64
			for i := range count {
				e := p[16+16*i:]
				pos, ksize := binary.LittleEndian.Uint32(e[4:]), binary.LittleEndian.Uint32(e[8:])
				if ksize != 8 {
					ks = nil
					break
				}
				off := 16 + 16*i + int(pos)
				ks = append(ks, binary.BigEndian.Uint64(p[off:]))
			}
			if len(ks) > 0 {
				leaves = append(leaves, leaf{id, ks})
			}
		}
	})
	slices.SortFunc(leaves, func(a, b leaf) int { return int(a.keys[0]) - int(b.keys[0]) })
	for _, l := range leaves {
		ids = append(ids, l.id)
		keys = append(keys, l.keys)
	}
	return ids, keys
}

func TestSalvageSkipsDamagedLeaf(t *testing.T) {
	for _, which := range []string{"first", "middle", "last"} {
		t.Run(which, func(t *testing.T) {
			dir := t.TempDir()
			o, _, lb := testOpts(t)
			in := filled(t, dir, o, 1500)
			path := filepath.Join(dir, dbFileName)
			ids, keys := leafPages(t, path)
			if len(ids) < 5 {
				t.Fatalf("setup: only %d leaves", len(ids))
			}
			i := map[string]int{"first": 0, "middle": len(ids) / 2, "last": len(ids) - 1}[which]
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			ps := os.Getpagesize()
			if _, err := f.WriteAt(make([]byte, ps), int64(ids[i]*ps)); err != nil {
				t.Fatal(err)
			}
			_ = f.Close()

			s := mustOpen(t, dir, o)
			got := allPending(t, s)
			lost := map[uint64]bool{}
			for _, k := range keys[i] {
				lost[k] = true
			}
			var want []uint64
			for _, r := range in {
				if !lost[r.Seq] {
					want = append(want, r.Seq)
				}
			}
			if !slices.Equal(seqs(got), want) {
				t.Fatalf("salvaged %d records; want all %d outside the zeroed leaf %d..%d", len(got), len(want),
					keys[i][0], keys[i][len(keys[i])-1])
			}
			for _, r := range got {
				if !sameRecord(r, in[r.Seq-1]) {
					t.Fatalf("salvaged %+v differs from the appended record", r)
				}
			}
			if len(lb.lines("level=ERROR", "quarantined_as", "salvaged_records="+strconv.Itoa(len(want)))) != 1 {
				t.Fatalf("want the ERROR line with the salvage count; log:\n%s", lb)
			}
			if s.Stats().NextSeq != in[len(in)-1].Seq+1 && s.Stats().NextSeq < 1500 {
				t.Fatalf("NextSeq %d went backwards", s.Stats().NextSeq)
			}
		})
	}
}

func TestGarbledValueQuarantinedAtOpen(t *testing.T) {
	dir := t.TempDir()
	o, _, lb := testOpts(t)
	s := mustOpen(t, dir, o)
	appendN(t, s, 0, 5)
	bad, err := s.Append(context.Background(), Record{TS: epoch, Sensor: "garble-me-please", Values: map[string]float64{"v": 1}})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 5, 5)
	_ = s.Close()

	path := filepath.Join(dir, dbFileName)
	b, _ := os.ReadFile(path)
	n := 0
	for i := bytes.Index(b, []byte("garble-me")); i >= 0; {
		b[i+3] ^= 0x20 // a bit flip: 'b' -> 'B'
		n++
		j := bytes.Index(b[i+1:], []byte("garble-me"))
		if j < 0 {
			break
		}
		i += 1 + j
	}
	if n == 0 {
		t.Fatal("setup: value not found in the file")
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}

	s2 := mustOpen(t, dir, o)
	st := s2.Stats()
	if st.Quarantined != 1 || st.Depth != 10 {
		t.Fatalf("Stats() = %+v; want 1 quarantined, 10 left", st)
	}
	got := seqs(allPending(t, s2))
	if slices.Contains(got, bad[0].Seq) || len(got) != 10 {
		t.Fatalf("pending %v; want the 10 good records without seq %d", got, bad[0].Seq)
	}
	if len(lb.lines("level=ERROR", "garbled", "count=1")) != 1 {
		t.Fatalf("no ERROR line for the garbled record:\n%s", lb)
	}
	if len(lb.lines("quarantined_as")) != 0 {
		t.Fatal("a garbled value must not quarantine the whole file")
	}
	s2.dbMu.RLock()
	_ = s2.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bktQuarantine).Get(seqKey(bad[0].Seq)); v == nil {
			t.Error("garbled value not kept in the quarantine bucket")
		}
		return nil
	})
	s2.dbMu.RUnlock()
	_ = s2.Close()
	s3 := mustOpen(t, dir, o)
	if q := s3.Stats().Quarantined; q != 1 {
		t.Fatalf("Quarantined after reopen = %d; want 1 (persisted)", q)
	}
}

func TestGarbledValueQuarantinedByPending(t *testing.T) {
	o, _, lb := testOpts(t)
	s := mustOpen(t, t.TempDir(), o)
	appendN(t, s, 0, 4)
	// Garble seq 2 behind the spool's back, as bit rot would.
	s.dbMu.RLock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bktRecords)
		v := bytes.Clone(b.Get(seqKey(2)))
		v[len(v)/2] ^= 1
		return b.Put(seqKey(2), v)
	})
	s.dbMu.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Pending(0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seqs(got), []uint64{1, 3, 4}) {
		t.Fatalf("Pending = %v; want the garbled seq 2 skipped", seqs(got))
	}
	st := s.Stats()
	if st.Quarantined != 1 || st.Depth != 3 {
		t.Fatalf("Stats() = %+v; want 1 quarantined, depth 3", st)
	}
	if len(lb.lines("level=ERROR", "garbled")) == 0 {
		t.Fatalf("no ERROR log:\n%s", lb)
	}
	if !strings.Contains(lb.String(), "seqs=[2]") {
		t.Fatalf("log does not name seq 2:\n%s", lb)
	}
}

// TestRawScanRecoversOrphanedLeaves destroys everything that leads to the
// records — both meta pages, the branch pages, the bucket roots, the meta
// bucket — with random bytes, leaving only the leaf pages: the raw scan must
// find every record.
func TestRawScanRecoversOrphanedLeaves(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	tests := []struct {
		name  string
		pages func(leaves map[int]bool, n int) []int // pages to overwrite
	}{
		{"both meta pages", func(map[int]bool, int) []int { return []int{0, 1} }},
		{"every page but the leaves", func(leaves map[int]bool, n int) []int {
			var out []int
			for id := range n {
				if !leaves[id] {
					out = append(out, id)
				}
			}
			return out
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			o, _, lb := testOpts(t)
			in := filled(t, dir, o, 1500)
			path := filepath.Join(dir, dbFileName)
			ids, _ := leafPages(t, path)
			leaves := map[int]bool{}
			for _, id := range ids {
				leaves[id] = true
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			ps := os.Getpagesize()
			for _, id := range tc.pages(leaves, len(b)/ps) {
				for i := id * ps; i < (id+1)*ps; i++ {
					b[i] = byte(rnd.Uint32())
				}
			}
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			s := mustOpen(t, dir, o)
			got := allPending(t, s)
			if !slices.Equal(seqs(got), seqs(in)) {
				t.Fatalf("recovered %d records (%v…); want all %d", len(got), seqs(got)[:min(5, len(got))], len(in))
			}
			for _, r := range got {
				if !sameRecord(r, in[r.Seq-1]) {
					t.Fatalf("recovered %+v differs from the appended record", r)
				}
			}
			if s.Stats().NextSeq <= in[len(in)-1].Seq {
				t.Fatalf("NextSeq %d would reuse a seq", s.Stats().NextSeq)
			}
			if len(lb.lines("level=ERROR", "quarantined_as")) != 1 {
				t.Fatalf("want the quarantine ERROR line; log:\n%s", lb)
			}
		})
	}
}

func TestScanRecordsSkipsStaleAndGarbage(t *testing.T) {
	r1 := Record{Seq: 7, TS: epoch, Sensor: "env", Values: map[string]float64{"t": 1}}
	r2 := Record{Seq: 8, TS: epoch, Sensor: "env", Values: map[string]float64{"t": 2}}
	stored := func(r Record) []byte { return appendRecord(seqKey(r.Seq), &r) }
	bad := stored(r2)
	bad[len(bad)-1] ^= 1 // CRC broken
	wrongKey := appendRecord(seqKey(99), &r1)
	tests := []struct {
		name string
		file []byte
		want []uint64
	}{
		{"two records", slices.Concat([]byte{0, 1, 2}, stored(r1), []byte{9}, stored(r2)), []uint64{7, 8}},
		{"broken CRC", slices.Concat(stored(r1), bad), []uint64{7}},
		{"key does not match", wrongKey, nil},
		{"truncated record", stored(r1)[:20], nil},
		{"record across a chunk boundary", slices.Concat(make([]byte, scanChunk-10), stored(r1)), []uint64{7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []uint64
			if err := scanRecords(bytes.NewReader(tt.file), int64(len(tt.file)), func(seq uint64, _ []byte) { got = append(got, seq) }); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("found %v; want %v", got, tt.want)
			}
		})
	}
}

func FuzzScanRecords(f *testing.F) {
	r := Record{Seq: 7, TS: epoch, Sensor: "env", Values: map[string]float64{"t": 1}}
	f.Add(appendRecord(seqKey(7), &r))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1, 1, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = scanRecords(bytes.NewReader(b), int64(len(b)), func(seq uint64, v []byte) {
			if _, err := decodeStored(seqKey(seq), v); err != nil {
				t.Fatalf("scan reported an invalid record: %v", err)
			}
		})
	})
}

// TestRawScanLeavesAcknowledgedOut: acknowledged records linger in freed
// pages. When the newest meta page is destroyed, the previous tree still
// bounds what is pending, and the stale copies must not come back.
func TestRawScanLeavesAcknowledgedOut(t *testing.T) {
	dir := t.TempDir()
	o, _, _ := testOpts(t)
	in := filled(t, dir, o, 1500)
	s := mustOpen(t, dir, o)
	var acked []uint64
	for _, r := range in[:700] {
		acked = append(acked, r.Seq)
	}
	if err := s.Ack(acked...); err != nil {
		t.Fatal(err)
	}
	last := appendN(t, s, 0, 1) // one more commit, so both meta pages are past the ack
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, dbFileName)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ps := os.Getpagesize()
	newest := 0
	if binary.LittleEndian.Uint64(b[ps+16+48:]) > binary.LittleEndian.Uint64(b[16+48:]) {
		newest = ps
	}
	clear(b[newest : newest+ps])
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, dir, o)
	got := seqs(allPending(t, s))
	want := append(seqs(in[700:]), last[0].Seq)
	if !slices.Equal(got, want) {
		t.Fatalf("pending after the damage: %d records %v…%v; want %d: %v…%v (acknowledged records resurrected, or the last commit lost)",
			len(got), got[:min(3, len(got))], got[max(0, len(got)-2):], len(want), want[:3], want[len(want)-2:])
	}
}
