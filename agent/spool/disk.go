package spool

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

const (
	dbFileName     = "spool.db"
	lockTimeout    = time.Second // bbolt flock wait before reporting another owner
	quarantineKeep = 100         // garbled values kept in the quarantine bucket
	maxWalkFaults  = 1000        // damaged ranges skipped before a walk gives up
	maxProbes      = 130         // Seek probes spent skipping one damaged range
)

var (
	bktRecords    = []byte("records")
	bktMeta       = []byte("meta")
	bktQuarantine = []byte("quarantine")

	keyNext        = []byte("next")
	keyDropped     = []byte("dropped")
	keyQuarantined = []byte("quarantined")
)

// errDamaged marks a panic or page fault recovered while reading the file.
var errDamaged = errors.New("spool: damaged database")

// errLocked reports that another process holds the database.
var errLocked = errors.New("spool: database is locked by another process (is another fieldgate running with the same state directory?)")

// safeCall runs fn with page faults turned into panics (a truncated file is
// mmapped past its end; reading there raises SIGBUS) and recovers any panic
// from bbolt's assertions as an errDamaged error.
func safeCall(fn func()) (err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", errDamaged, r)
		}
	}()
	fn()
	return nil
}

// isEnvErr tells an environment problem (permissions, read-only or full file
// system, I/O error, lock held) from damage inside the file.
func isEnvErr(err error) bool {
	var pe *fs.PathError
	var errno syscall.Errno
	return errors.Is(err, berrors.ErrTimeout) || errors.Is(err, errLocked) || errors.As(err, &pe) || errors.As(err, &errno)
}

type metaVals struct {
	next, dropped, quarantined uint64
	hasNext                    bool
}

func getU64(b *bolt.Bucket, k []byte) (uint64, bool) {
	v := b.Get(k)
	if len(v) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(v), true
}

func putU64(b *bolt.Bucket, k []byte, v uint64) error {
	return b.Put(k, binary.BigEndian.AppendUint64(nil, v))
}

func readMeta(tx *bolt.Tx) metaVals {
	var m metaVals
	mb := tx.Bucket(bktMeta)
	if mb == nil {
		return m
	}
	m.next, m.hasNext = getU64(mb, keyNext)
	m.dropped, _ = getU64(mb, keyDropped)
	m.quarantined, _ = getU64(mb, keyQuarantined)
	return m
}

// inspection is what a read-only walk of an existing file found.
type inspection struct {
	meta           metaVals
	depth          int
	bytes          int64
	oldest, maxSeq uint64
	bad            [][]byte // keys of garbled records, moved to quarantine on open
	damage         string   // non-empty: the file must be quarantined
	salvage        []memRec // readable records, filled when damage != ""
}

func (ins *inspection) add(seq uint64, v []byte) {
	if ins.depth == 0 || seq < ins.oldest {
		ins.oldest = seq
	}
	ins.maxSeq = max(ins.maxSeq, seq)
	ins.depth++
	ins.bytes += storedSize(v)
}

func (s *Spool) boltOptions(readOnly bool) *bolt.Options {
	return &bolt.Options{
		Timeout:         lockTimeout,
		NoFreelistSync:  true, // rebuilt from the tree at open: never trusts a damaged freelist, one page less per commit
		FreelistType:    bolt.FreelistMapType,
		ReadOnly:        readOnly,
		InitialMmapSize: s.mmapSize,
		MaxSize:         s.maxFileSize,
		NoSync:          s.noSync,
		OpenFile:        s.fs.OpenFile,
		NoStatistics:    true,
	}
}

// openBolt opens path with faults and bbolt panics turned into errDamaged.
func (s *Spool) openBolt(path string, readOnly bool) (*bolt.DB, error) {
	var db *bolt.DB
	var err error
	perr := safeCall(func() { db, err = bolt.Open(path, 0o600, s.boltOptions(readOnly)) })
	if perr != nil {
		return nil, perr
	}
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s", errLocked, path)
	}
	if err != nil {
		return nil, err
	}
	if !readOnly {
		db.AllocSize = s.allocSize
	}
	return db, nil
}

// inspect walks an existing database read-only. It returns an error only for
// environment problems; damage is reported in inspection.damage.
func (s *Spool) inspect(path string, collect bool) (inspection, error) {
	var ins inspection
	db, err := s.openBolt(path, true)
	if err != nil {
		if isEnvErr(err) {
			return ins, fmt.Errorf("spool: opening %s: %w", path, err)
		}
		ins.damage = err.Error()
		return ins, nil
	}
	defer db.Close()
	fi, err := s.fs.Stat(path)
	if err != nil {
		return ins, fmt.Errorf("spool: opening %s: %w", path, err)
	}
	if bad := s.badMetaPage(path, db.Info().PageSize); bad != "" {
		// bbolt silently falls back to the other meta page, whose tree lacks
		// the last commit: salvage (raw scan included) recovers it.
		ins.damage = bad
	}
	err = safeCall(func() {
		_ = db.View(func(tx *bolt.Tx) error {
			if need := tx.Size(); need > fi.Size() {
				ins.damage = fmt.Sprintf("file is %d bytes but its meta page describes %d (truncated)", fi.Size(), need)
			}
			if err := safeCall(func() { ins.meta = readMeta(tx) }); err != nil {
				ins.damage = "meta bucket unreadable: " + err.Error()
			}
			// Every bucket is walked so that bbolt's own reachability scan
			// at write-mode open meets no page we have not read safely.
			var names [][]byte
			if err := safeCall(func() {
				_ = tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
					names = append(names, bytes.Clone(name))
					return nil
				})
			}); err != nil {
				ins.damage = "bucket list unreadable: " + err.Error()
			}
			for _, name := range names {
				var b *bolt.Bucket
				if err := safeCall(func() { b = tx.Bucket(name) }); err != nil || b == nil {
					ins.damage = fmt.Sprintf("bucket %q unreadable", name)
					continue
				}
				if !bytes.Equal(name, bktRecords) {
					if err := safeCall(func() { _ = b.ForEach(func(_, _ []byte) error { return nil }) }); err != nil {
						ins.damage = fmt.Sprintf("bucket %q: %v", name, err)
					}
					continue
				}
				faults := walkRecords(b, func(k, v []byte) {
					if _, err := decodeStored(k, v); err != nil {
						if !collect {
							ins.bad = append(ins.bad, bytes.Clone(k))
						}
						return
					}
					seq, _ := keySeq(k)
					ins.add(seq, v)
					if collect {
						ins.salvage = append(ins.salvage, memRec{seq: seq, v: bytes.Clone(v)})
					}
				})
				if faults > 0 {
					ins.damage = fmt.Sprintf("%d damaged ranges in the records bucket", faults)
				}
			}
			return nil
		})
	})
	if err != nil {
		ins.damage = err.Error()
	}
	return ins, nil
}

// walkRecords calls fn for every readable key/value of the records bucket in
// key order. A panic or fault (a damaged page) is recovered and the walk probes
// forward with Seek, exponentially then by bisection, to the first key it can
// read again; the records in the damaged range are lost. It returns the number
// of damaged ranges met.
func walkRecords(b *bolt.Bucket, fn func(k, v []byte)) (faults int) {
	var last uint64
	started := false // false: start with First; true: continue after last
	seekOK := func(seq uint64) bool {
		return safeCall(func() { b.Cursor().Seek(seqKey(seq)) }) == nil
	}
	from := uint64(0)
	for {
		err := safeCall(func() {
			c := b.Cursor()
			var k, v []byte
			if !started {
				k, v = c.First()
			} else {
				k, v = c.Seek(seqKey(from))
			}
			for ; k != nil; k, v = c.Next() {
				if seq, ok := keySeq(k); ok {
					if started && seq <= last {
						continue // out of order: damage that Seek skipped past
					}
					last, started = seq, true
				}
				fn(k, v)
			}
		})
		if err == nil {
			return faults
		}
		faults++
		if faults >= maxWalkFaults {
			return faults
		}
		// Find the smallest seq > lo whose Seek succeeds.
		lo := last
		if !started {
			lo = 0
		}
		var hi uint64
		found := false
		step := uint64(1)
		for i := 0; i < maxProbes/2; i++ {
			k := lo + step
			if k <= lo { // wrapped
				break
			}
			if seekOK(k) {
				hi, found = k, true
				break
			}
			lo = k
			if step > math.MaxUint64/2 {
				break
			}
			step *= 2
		}
		if !found {
			return faults
		}
		for i := 0; i < maxProbes/2 && hi-lo > 1; i++ {
			mid := lo + (hi-lo)/2
			if seekOK(mid) {
				hi = mid
			} else {
				lo = mid
			}
		}
		if !started {
			last = 0
		}
		started = true
		from = hi
		if hi > 0 && hi-1 > last {
			last = hi - 1
		}
	}
}

// createDB builds a new database at path holding recs and the counters m.
func (s *Spool) createDB(path string, m metaVals, recs []memRec) error {
	_ = s.fs.Remove(path)
	db, err := s.openBolt(path, false)
	if err != nil {
		return fmt.Errorf("spool: creating %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		rb, err := tx.CreateBucket(bktRecords)
		if err != nil {
			return err
		}
		rb.FillPercent = 1
		for _, r := range recs {
			if err := rb.Put(seqKey(r.seq), r.v); err != nil {
				return err
			}
		}
		if _, err := tx.CreateBucket(bktQuarantine); err != nil {
			return err
		}
		mb, err := tx.CreateBucket(bktMeta)
		if err != nil {
			return err
		}
		return errors.Join(putU64(mb, keyNext, m.next), putU64(mb, keyDropped, m.dropped),
			putU64(mb, keyQuarantined, m.quarantined))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = s.fs.Remove(path)
		return fmt.Errorf("spool: creating %s: %w", path, err)
	}
	return nil
}

// quarantineName picks spool.db.corrupt-<unix>, adding -N if taken.
func (s *Spool) quarantineName() string {
	base := s.path + ".corrupt-" + strconv.FormatInt(s.clock.Now().Unix(), 10)
	name := base
	for i := 2; i < 1000; i++ {
		if _, err := s.fs.Stat(name); errors.Is(err, fs.ErrNotExist) {
			break
		}
		name = base + "-" + strconv.Itoa(i)
	}
	return name
}

// rebuild replaces a damaged spool.db by a fresh one holding the salvaged
// records: the new file is built beside it, the damaged file is hard-linked
// to spool.db.corrupt-<unix> (renamed where links are unsupported) and the new
// file is renamed over spool.db, so a crash at any point leaves either the old
// file (quarantined again at the next start) or the new one.
func (s *Spool) rebuild(ins *inspection) error {
	m := metaVals{
		next:        max(s.reserved, ins.meta.next, ins.maxSeq+1, 1),
		dropped:     ins.meta.dropped,
		quarantined: ins.meta.quarantined,
		hasNext:     true,
	}
	tmp := s.path + ".tmp"
	if err := s.createDB(tmp, m, ins.salvage); err != nil {
		return err
	}
	dst := s.quarantineName()
	if err := s.fs.Link(s.path, dst); err != nil {
		if err := s.fs.Rename(s.path, dst); err != nil {
			_ = s.fs.Remove(tmp)
			return fmt.Errorf("spool: quarantining damaged %s: %w", s.path, err)
		}
	}
	if err := s.fs.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("spool: replacing damaged %s: %w", s.path, err)
	}
	if err := syncDir(s.fs, s.dir); err != nil {
		return err
	}
	s.log.Error("spool: damaged database quarantined; starting a fresh one",
		"path", s.path, "quarantined_as", dst, "reason", ins.damage,
		"salvaged_records", len(ins.salvage), "next_seq", m.next)
	ins.meta = m
	ins.bad = nil
	ins.salvage = nil
	return nil
}

// openDisk opens (creating, repairing or quarantining as needed) the database
// in s.dir and initialises the counters.
func (s *Spool) openDisk() error {
	if err := s.fs.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("spool: creating state directory %s: %w (it must be a writable directory)", s.dir, err)
	}
	reserved, bad, err := readSeqFile(s.fs, s.dir)
	if err != nil {
		return err
	}
	if bad != nil {
		s.log.Warn("spool: ignoring unreadable seq reservation", "err", bad)
	}
	s.reserved = reserved
	for _, stale := range []string{s.path + ".tmp", filepath.Join(s.dir, salvageName)} {
		_ = s.fs.Remove(stale) // best effort: a read-only dir fails below with a clearer error
	}

	var ins inspection // stays empty for a new database
	fi, err := s.fs.Stat(s.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("spool: %w", err)
	case !fi.Mode().IsRegular():
		return fmt.Errorf("spool: %s is not a regular file; move it away", s.path)
	case fi.Size() > 0:
		if ins, err = s.inspect(s.path, false); err != nil {
			return err
		}
		if ins.damage != "" {
			if err := s.salvageAndRebuild(&ins); err != nil {
				return err
			}
		}
	}

	db, err := s.openBolt(s.path, false)
	if err != nil && !isEnvErr(err) {
		// Damage the read-only walk could not see (bbolt's own scan failed).
		ins = inspection{damage: err.Error()}
		if err := s.salvageAndRebuild(&ins); err != nil {
			return err
		}
		db, err = s.openBolt(s.path, false)
	}
	if err != nil {
		return fmt.Errorf("spool: opening %s: %w", s.path, err)
	}
	if err := s.initDB(db, &ins); err != nil {
		_ = db.Close()
		return err
	}
	s.db = db
	if ins.depth == 0 {
		s.maybeCompact()
	}
	return nil
}

// salvageAndRebuild collects the readable records of the damaged file from
// the tree of its newest valid meta page and from the tree of the other meta
// page (the previous commit, usually intact when the last commit was torn),
// merges them by seq and rebuilds the database. Records only in the previous
// tree were acknowledged by the last commit and may be sent twice.
func (s *Spool) salvageAndRebuild(ins *inspection) error {
	reason := ins.damage
	sal, err := s.inspect(s.path, true)
	if err != nil {
		sal = inspection{}
	}
	if old := s.salvageOlderMeta(); len(old.salvage) > 0 {
		seen := make(map[uint64]bool, len(sal.salvage))
		for _, r := range sal.salvage {
			seen[r.seq] = true
		}
		for _, r := range old.salvage {
			if !seen[r.seq] {
				sal.salvage = append(sal.salvage, r)
			}
		}
		slices.SortFunc(sal.salvage, func(a, b memRec) int { return cmp.Compare(a.seq, b.seq) })
		sal.meta.next = max(sal.meta.next, old.meta.next)
		sal.meta.dropped = max(sal.meta.dropped, old.meta.dropped)
		sal.meta.quarantined = max(sal.meta.quarantined, old.meta.quarantined)
	}
	s.salvageRaw(&sal)
	sal.depth, sal.bytes, sal.oldest, sal.maxSeq = 0, 0, 0, 0
	for _, r := range sal.salvage {
		sal.add(r.seq, r.v)
	}
	*ins = sal
	ins.damage = reason
	return s.rebuild(ins)
}

// salvageRaw adds the records a raw scan of the damaged file finds and the
// tree walks missed (their meta, branch or root pages were destroyed). When
// the walks found records, scanned records older than the oldest of them are
// stale copies of acknowledged ones and are left out; when the walks found
// nothing, every scanned record is kept: a reading sent twice is better than
// one lost.
func (s *Spool) salvageRaw(sal *inspection) {
	seen := make(map[uint64]bool, len(sal.salvage))
	oldest := uint64(0)
	for _, r := range sal.salvage {
		seen[r.seq] = true
		if oldest == 0 || r.seq < oldest {
			oldest = r.seq
		}
	}
	added := 0
	err := s.scanFile(s.path, func(seq uint64, v []byte) {
		if seen[seq] || seq < oldest {
			return
		}
		seen[seq] = true
		sal.salvage = append(sal.salvage, memRec{seq: seq, v: bytes.Clone(v)})
		sal.meta.next = max(sal.meta.next, seq+1)
		added++
	})
	if err != nil {
		s.log.Warn("spool: raw scan of the damaged file failed", "path", s.path, "err", err)
	}
	if added > 0 {
		slices.SortFunc(sal.salvage, func(a, b memRec) int { return cmp.Compare(a.seq, b.seq) })
		s.log.Warn("spool: recovered records the damaged file's tree no longer reached", "path", s.path, "records", added)
	}
}

const (
	metaMagic    = 0xED0CDAED
	metaSumLen   = 56 // bytes of the meta struct covered by its FNV-64a checksum
	pageHdrLen   = 16
	salvageName  = dbFileName + ".salvage"
	maxPageProbe = 64 << 10
)

// metaInfo parses the bbolt meta struct at b (little-endian targets only,
// like bbolt's own files).
func metaInfo(b []byte) (pageSize uint32, txid uint64, ok bool) {
	if len(b) < metaSumLen+8 || binary.LittleEndian.Uint32(b) != metaMagic {
		return 0, 0, false
	}
	h := fnv.New64a()
	_, _ = h.Write(b[:metaSumLen])
	if h.Sum64() != binary.LittleEndian.Uint64(b[metaSumLen:]) {
		return 0, 0, false
	}
	return binary.LittleEndian.Uint32(b[8:]), binary.LittleEndian.Uint64(b[48:]), true
}

// badMetaPage names a meta page (0 or 1) whose checksum fails; bbolt writes
// both when it creates a file, so either failing is damage.
func (s *Spool) badMetaPage(path string, pageSize int) string {
	f, err := s.fs.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return ""
	}
	defer f.Close()
	buf := make([]byte, pageHdrLen+metaSumLen+8)
	for i := range 2 {
		if _, err := f.ReadAt(buf, int64(i*pageSize)); err != nil {
			return fmt.Sprintf("meta page %d unreadable: %v", i, err)
		}
		if _, _, ok := metaInfo(buf[pageHdrLen:]); !ok {
			return fmt.Sprintf("meta page %d fails its checksum", i)
		}
	}
	return ""
}

// salvageOlderMeta walks a copy of the damaged file in which the newest valid
// meta page is invalidated, so bbolt opens the tree of the previous commit.
func (s *Spool) salvageOlderMeta() inspection {
	var none inspection
	src, err := s.fs.OpenFile(s.path, os.O_RDONLY, 0)
	if err != nil {
		return none
	}
	defer src.Close()
	head := make([]byte, pageHdrLen+metaSumLen+8)
	if _, err := src.ReadAt(head, 0); err != nil {
		return none
	}
	ps, tx0, ok0 := metaInfo(head[pageHdrLen:])
	if !ok0 {
		ps = uint32(os.Getpagesize())
	}
	if ps < 512 || ps > maxPageProbe {
		return none
	}
	if _, err := src.ReadAt(head, int64(ps)); err != nil {
		return none
	}
	_, tx1, ok1 := metaInfo(head[pageHdrLen:])
	if !ok0 || !ok1 {
		return none // no second valid meta to fall back to
	}
	newest := int64(0)
	if tx1 > tx0 {
		newest = int64(ps)
	}
	tmp := filepath.Join(s.dir, salvageName)
	defer s.fs.Remove(tmp)
	dst, err := s.fs.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return none
	}
	_, err = io.Copy(dst, io.NewSectionReader(src, 0, math.MaxInt64))
	if err == nil {
		_, err = dst.WriteAt(make([]byte, 4), newest+pageHdrLen) // clear the magic
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return none
	}
	ins, err := s.inspect(tmp, true)
	if err != nil {
		return none
	}
	return ins
}

// initDB creates missing buckets, quarantines garbled records and loads the
// counters.
func (s *Spool) initDB(db *bolt.DB, ins *inspection) error {
	var moved []uint64
	var m metaVals
	var qn int
	var uerr error
	err := safeCall(func() {
		uerr = db.Update(func(tx *bolt.Tx) error {
			rb, err := tx.CreateBucketIfNotExists(bktRecords)
			if err != nil {
				return err
			}
			qb, err := tx.CreateBucketIfNotExists(bktQuarantine)
			if err != nil {
				return err
			}
			mb, err := tx.CreateBucketIfNotExists(bktMeta)
			if err != nil {
				return err
			}
			m = readMeta(tx)
			qn = qb.Stats().KeyN
			for _, k := range ins.bad {
				v := rb.Get(k)
				if v == nil {
					continue
				}
				if qn < quarantineKeep {
					if err := qb.Put(k, bytes.Clone(v)); err != nil {
						return err
					}
					qn++
				}
				if err := rb.Delete(k); err != nil {
					return err
				}
				seq, _ := keySeq(k)
				moved = append(moved, seq)
			}
			m.quarantined += uint64(len(moved))
			if !m.hasNext {
				m.next = max(s.reserved, 1)
			}
			m.next = max(m.next, ins.maxSeq+1)
			return errors.Join(putU64(mb, keyNext, m.next), putU64(mb, keyDropped, m.dropped),
				putU64(mb, keyQuarantined, m.quarantined))
		})
	})
	if err == nil {
		err = uerr
	}
	if err != nil {
		return fmt.Errorf("spool: initialising %s: %w", s.path, err)
	}
	if len(moved) > 0 {
		s.log.Error("spool: garbled records failed their checksum and were quarantined",
			"count", len(moved), "seqs", firstN(moved, 10), "path", s.path)
	}
	s.next = m.next
	s.dropped = m.dropped
	s.quarantined = m.quarantined
	s.quarantineN = qn
	s.diskDepth = ins.depth
	s.diskBytes = ins.bytes
	s.diskOldest = ins.oldest
	return nil
}

func firstN(s []uint64, n int) []uint64 {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// maybeCompact recreates an empty database whose file grew past 2×MaxBytes
// (bbolt files never shrink). Called by the committer or during Open.
func (s *Spool) maybeCompact() {
	fi, err := s.fs.Stat(s.path)
	if err != nil || fi.Size() <= 2*s.maxBytes {
		return
	}
	s.mu.Lock()
	m := metaVals{next: s.next, dropped: s.dropped, quarantined: s.quarantined}
	s.mu.Unlock()
	tmp := s.path + ".tmp"
	if err := s.createDB(tmp, m, nil); err != nil {
		s.log.Warn("spool: compaction skipped", "err", err)
		return
	}
	s.dbMu.Lock()
	defer s.dbMu.Unlock()
	if s.db != nil {
		_ = s.db.Close()
		s.db = nil
	}
	if err := s.fs.Rename(tmp, s.path); err != nil {
		_ = s.fs.Remove(tmp)
		s.log.Warn("spool: compaction skipped", "err", err)
	} else if err := syncDir(s.fs, s.dir); err != nil {
		s.log.Warn("spool: compaction: syncing directory", "err", err)
	}
	db, err := s.openBolt(s.path, false)
	if err != nil {
		s.log.Error("spool: reopening after compaction failed; keeping records in memory until it works", "err", err)
		s.mu.Lock()
		s.setDiskErrLocked(fmt.Errorf("spool: reopening %s: %w", s.path, err))
		s.mu.Unlock()
		return
	}
	s.db = db
	s.mu.Lock()
	s.quarantineN = 0
	s.mu.Unlock()
	s.log.Info("spool: empty database recreated to give disk space back", "path", s.path,
		"old_bytes", fi.Size())
}

// reopenLocked retries opening the database after a failed compaction. The
// caller holds dbMu exclusively.
func (s *Spool) reopenLocked() error {
	db, err := s.openBolt(s.path, false)
	if err != nil {
		return fmt.Errorf("spool: reopening %s: %w", s.path, err)
	}
	s.db = db
	return nil
}
