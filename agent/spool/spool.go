package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	bolt "go.etcd.io/bbolt"
)

// Options configures a Spool. The zero value is usable.
type Options struct {
	// MaxBytes bounds the stored records (encoded size plus 8 bytes of key
	// each); 0 means 64 MiB. Values below 4 KiB are raised to 4 KiB.
	MaxBytes int64
	// Logger receives warnings and errors; nil discards them.
	Logger *slog.Logger
	// Clock drives disk retries and quarantine file names; nil is the real clock.
	Clock clockwork.Clock
	// NoSync skips fsync. Benchmarks only: a crash can lose or tear records.
	NoSync bool

	fs fileSystem // nil: the os package
}

// Stats is a snapshot of the spool's state.
type Stats struct {
	Depth     int    // records waiting to be acknowledged (disk and memory)
	Bytes     int64  // their size as counted against MaxBytes
	Dropped   uint64 // records dropped because the spool was full (persisted)
	NextSeq   uint64 // seq the next appended record gets
	OldestSeq uint64 // smallest waiting seq, 0 when empty
	InMemory  bool   // memory-only spool (the state directory was unusable)
	LastError string // the current degradation, "" when healthy

	Overflow    int    // records held in memory while disk writes fail
	Quarantined uint64 // garbled records moved aside (persisted)
}

// ErrClosed is returned by calls on a closed Spool.
var ErrClosed = errors.New("spool: closed")

const (
	defaultMaxBytes = 64 << 20
	minMaxBytes     = 4 << 10
	max32MaxBytes   = 240 << 20 // keeps 4×MaxBytes+8 MiB under armv7's 2 GB mmap limit
	memLimitCap     = 16 << 20  // in-memory overflow / memory-only bound
	retryInterval   = 10 * time.Second
	maxBatchReqs    = 256 // requests coalesced into one commit
)

// Spool is the durable queue. Its methods are safe for concurrent use.
type Spool struct {
	dir, path   string
	log         *slog.Logger
	clock       clockwork.Clock
	fs          fileSystem
	maxBytes    int64
	memLimit    int64
	memOnly     bool
	noSync      bool
	mmapSize    int
	maxFileSize int
	allocSize   int

	reqs      chan *request
	quit      chan struct{} // closed by Close
	done      chan struct{} // closed when the committer has exited
	closeOnce sync.Once
	closeErr  error
	commits   atomic.Uint64 // successful disk transactions (diagnostics, benchmarks)

	// dbMu guards db: Pending holds it shared while reading, the committer
	// shared while writing and exclusively to swap or close the file.
	dbMu sync.RWMutex
	db   *bolt.DB // or nil: memory-only, or not reopened after a failed compaction

	// mu guards the fields below. The committer goroutine is their only
	// writer, so it may read them without mu.
	mu          sync.Mutex
	closed      bool
	next        uint64              // seq for the next record
	reserved    uint64              // seqs below this are covered by seq.next
	seqFileErr  bool                // a reservation write failed (warned once)
	diskDepth   int                 // records in the database
	diskBytes   int64               // their stored size
	diskOldest  uint64              // smallest seq in the database, 0 if none
	mem         memQueue            // memory-only records or disk overflow; seqs above every disk seq
	hidden      map[uint64]struct{} // acked but not yet deleted from the database
	dropped     uint64
	quarantined uint64
	quarantineN int       // values in the quarantine bucket
	dropping    bool      // inside a drop-oldest episode (warning logged)
	diskErr     error     // current write failure, nil when healthy
	retryAt     time.Time // no disk attempt before this while diskErr != nil
	memReason   string    // why the spool is memory-only
}

type request struct {
	recs []Record // appended; the committer assigns Seq
	acks []uint64
	bad  [][]byte // keys Pending found garbled
	done chan struct{}
}

func newSpool(dir string, o Options) (*Spool, error) {
	if o.MaxBytes < 0 {
		return nil, fmt.Errorf("spool: MaxBytes is %d; want 0 (default 64 MiB) or a positive size", o.MaxBytes)
	}
	s := &Spool{
		dir:      dir,
		path:     filepath.Join(dir, dbFileName),
		log:      o.Logger,
		clock:    o.Clock,
		fs:       o.fs,
		maxBytes: o.MaxBytes,
		noSync:   o.NoSync,
		reqs:     make(chan *request),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
		next:     1,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.clock == nil {
		s.clock = clockwork.NewRealClock()
	}
	if s.fs == nil {
		s.fs = osFS{}
	}
	if s.maxBytes == 0 {
		s.maxBytes = defaultMaxBytes
	}
	if s.maxBytes < minMaxBytes {
		s.log.Warn("spool: max bytes raised to the minimum", "requested", s.maxBytes, "used", minMaxBytes)
		s.maxBytes = minMaxBytes
	}
	if strconv.IntSize == 32 && s.maxBytes > max32MaxBytes {
		s.log.Warn("spool: max bytes capped on this 32-bit platform (2 GB mmap limit)",
			"requested", s.maxBytes, "used", max32MaxBytes)
		s.maxBytes = max32MaxBytes
	}
	s.memLimit = min(s.maxBytes, memLimitCap)
	s.mmapSize = int(2 * s.maxBytes)
	s.maxFileSize = int(4*s.maxBytes + 8<<20)
	s.allocSize = int(min(max(s.maxBytes/8, 256<<10), 16<<20))
	return s, nil
}

// Open opens or creates the spool in dir (created with mode 0700). A damaged
// database is quarantined and a fresh one started, salvaging what it can. It
// fails when dir cannot be used (read-only, full, not a directory) or another
// process holds the database.
func Open(dir string, o Options) (*Spool, error) {
	s, err := newSpool(dir, o)
	if err != nil {
		return nil, err
	}
	if err := s.openDisk(); err != nil {
		return nil, err
	}
	go s.run()
	return s, nil
}

// OpenOrMemory is Open, falling back to a memory-only spool (Stats.InMemory,
// a warning logged) when dir cannot be used, so sampling continues. The
// fallback reads the seq reservation and any readable records from dir when
// it can. It still fails when another process holds the database or the
// options are invalid.
func OpenOrMemory(dir string, o Options) (*Spool, error) {
	s, err := Open(dir, o)
	if err == nil {
		return s, nil
	}
	if errors.Is(err, errLocked) {
		return nil, err
	}
	m, merr := newSpool(dir, o)
	if merr != nil {
		return nil, merr
	}
	m.memOnly = true
	m.memReason = "memory-only spool: " + err.Error()
	m.loadReadOnly()
	m.log.Warn("spool: state directory unusable; readings are kept in memory only and are lost on restart",
		"dir", dir, "err", err, "next_seq", m.next, "loaded_records", m.mem.len())
	go m.run()
	return m, nil
}

// loadReadOnly seeds a memory-only spool from whatever dir still offers.
func (s *Spool) loadReadOnly() {
	if r, _, err := readSeqFile(s.fs, s.dir); err == nil {
		s.next = max(s.next, r)
	}
	if _, err := s.fs.Stat(s.path); err != nil {
		return
	}
	ins, err := s.inspect(s.path, true)
	if err != nil {
		return
	}
	s.next = max(s.next, ins.meta.next, ins.maxSeq+1)
	s.dropped = ins.meta.dropped
	s.quarantined = ins.meta.quarantined
	for _, r := range ins.salvage {
		if s.mem.bytes+storedSize(r.v) > s.memLimit {
			break // the rest stays on disk for a later start
		}
		s.mem.push(r.seq, r.v)
	}
}

// Append assigns consecutive seqs to recs, commits them (fsync) and returns
// them with Seq set. Concurrent calls share one commit. If ctx ends before the
// records reach the committer, nothing is stored and ctx.Err() is returned.
// When disk writes fail the records are kept in memory (see Stats) and Append
// still succeeds. Invalid records (empty or long names, NaN/Inf values, see
// MaxNameLen and MaxValues) fail the whole call.
func (s *Spool) Append(ctx context.Context, recs ...Record) ([]Record, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	for i := range recs {
		if err := validate(&recs[i]); err != nil {
			return nil, err
		}
	}
	req := &request{recs: append([]Record(nil), recs...), done: make(chan struct{})}
	if err := s.submit(ctx, req); err != nil {
		return nil, err
	}
	return req.recs, nil
}

// Pending returns up to max records with Seq > afterSeq, oldest first.
// Records already acknowledged are never returned.
func (s *Spool) Pending(afterSeq uint64, max int) ([]Record, error) {
	if max <= 0 {
		return nil, fmt.Errorf("spool: pending: max is %d; want > 0", max)
	}
	if afterSeq == ^uint64(0) {
		return nil, nil
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	var hidden map[uint64]struct{}
	if len(s.hidden) > 0 {
		hidden = make(map[uint64]struct{}, len(s.hidden))
		for k := range s.hidden {
			hidden[k] = struct{}{}
		}
	}
	s.mu.Unlock()

	var out []Record
	var bad [][]byte
	last := afterSeq
	var rerr error
	s.dbMu.RLock()
	if db := s.db; db != nil {
		rerr = safeCall(func() {
			rerr = db.View(func(tx *bolt.Tx) error {
				rb := tx.Bucket(bktRecords)
				if rb == nil {
					return nil
				}
				c := rb.Cursor()
				for k, v := c.Seek(seqKey(afterSeq + 1)); k != nil && len(out) < max; k, v = c.Next() {
					seq, _ := keySeq(k)
					if _, ok := hidden[seq]; ok {
						continue
					}
					r, err := decodeStored(k, v)
					if err != nil {
						bad = append(bad, bytes.Clone(k))
						continue
					}
					out = append(out, r)
					last = seq
				}
				return nil
			})
		})
	}
	s.dbMu.RUnlock()
	if rerr != nil {
		s.log.Error("spool: reading records failed", "err", rerr)
		return nil, fmt.Errorf("spool: reading records: %w", rerr)
	}
	if len(out) < max {
		s.mu.Lock()
		for _, m := range s.mem.after(last, max-len(out)) {
			if r, err := decodeRecord(m.v); err == nil {
				out = append(out, r)
			}
		}
		s.mu.Unlock()
	}
	if len(bad) > 0 {
		s.log.Error("spool: garbled records failed their checksum; quarantining them", "count", len(bad))
		if err := s.submit(context.Background(), &request{bad: bad, done: make(chan struct{})}); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Ack removes the records with the given seqs; unknown seqs are ignored. It
// returns after the removal is committed (or, while disk writes fail, after
// the records are hidden from Pending; the deletion is retried with the disk).
func (s *Spool) Ack(seqs ...uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	return s.submit(context.Background(), &request{acks: append([]uint64(nil), seqs...), done: make(chan struct{})})
}

// Stats returns a snapshot of the spool's state.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{
		Depth:       max(s.diskDepth-len(s.hidden), 0) + s.mem.len(),
		Bytes:       s.diskBytes + s.mem.bytes,
		Dropped:     s.dropped,
		NextSeq:     s.next,
		OldestSeq:   s.diskOldest,
		InMemory:    s.memOnly,
		Quarantined: s.quarantined,
	}
	if !s.memOnly {
		st.Overflow = s.mem.len()
	}
	if st.OldestSeq == 0 {
		st.OldestSeq = s.mem.oldest()
	}
	switch {
	case s.memOnly:
		st.LastError = s.memReason
	case s.diskErr != nil:
		st.LastError = s.diskErr.Error()
	}
	return st
}

// Close stops the committer, makes a last attempt to write records held in
// memory to disk, and closes the database. Later calls return the same error.
func (s *Spool) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.quit)
		<-s.done
		s.dbMu.Lock()
		if s.db != nil {
			if err := s.db.Close(); err != nil {
				s.closeErr = fmt.Errorf("spool: closing %s: %w", s.path, err)
			}
			s.db = nil
		}
		s.dbMu.Unlock()
	})
	return s.closeErr
}

func (s *Spool) submit(ctx context.Context, req *request) error {
	select {
	case <-s.quit:
		return ErrClosed
	default:
	}
	select {
	case s.reqs <- req:
	case <-s.quit:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	<-req.done
	return nil
}

// run is the committer: it coalesces queued requests into one transaction.
func (s *Spool) run() {
	defer close(s.done)
	batch := make([]*request, 0, 16)
	for {
		select {
		case r := <-s.reqs:
			batch = append(batch[:0], r)
		case <-s.quit:
			s.shutdown()
			return
		}
	drain:
		for len(batch) < maxBatchReqs {
			select {
			case r := <-s.reqs:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		s.commit(batch, false)
		for i, r := range batch {
			close(r.done)
			batch[i] = nil
		}
	}
}

func (s *Spool) shutdown() {
	if s.memOnly {
		if n := s.mem.len(); n > 0 {
			s.log.Warn("spool: memory-only spool closed; its records are lost", "records", n)
		}
		return
	}
	if s.mem.len() == 0 && len(s.hidden) == 0 {
		return
	}
	s.commit(nil, true)
	if n := s.mem.len(); n > 0 {
		s.log.Error("spool: closing with records that could not be written to disk; they are lost",
			"records", n, "err", s.diskErr)
	}
}

// commit applies one batch. force ignores the retry back-off.
func (s *Spool) commit(batch []*request, force bool) {
	now := s.clock.Now()
	s.mu.Lock()
	var fresh []memRec
	var acks []uint64
	var bad [][]byte
	for _, r := range batch {
		for i := range r.recs {
			rec := &r.recs[i]
			rec.Seq = s.next
			s.next++
			fresh = append(fresh, memRec{seq: rec.Seq, v: appendRecord(nil, rec)})
		}
		acks = append(acks, r.acks...)
		bad = append(bad, r.bad...)
	}
	next := s.next
	useDisk := !s.memOnly && (s.diskErr == nil || force || !now.Before(s.retryAt))
	s.mu.Unlock()

	if s.memOnly {
		s.mu.Lock()
		for _, m := range fresh {
			s.mem.push(m.seq, m.v)
		}
		s.mem.remove(acks)
		s.trimMemLocked()
		s.mu.Unlock()
		return
	}

	if useDisk && len(fresh) > 0 && next > s.reserved {
		s.reserve(next + seqBlock)
	}
	var err error
	if useDisk {
		err = s.commitDisk(fresh, acks, bad, next)
		if err == nil {
			return
		}
	} else {
		err = s.diskErr
	}

	// Disk unusable: keep everything in memory.
	s.mu.Lock()
	defer s.mu.Unlock()
	if useDisk {
		if s.diskErr == nil {
			s.log.Warn("spool: disk commit failed; keeping records in memory and retrying",
				"err", err, "retry_in", retryInterval)
		}
		s.setDiskErrLocked(err)
	}
	for _, m := range fresh {
		s.mem.push(m.seq, m.v)
	}
	s.mem.remove(acks)
	memFirst := s.mem.oldest()
	for _, a := range acks {
		onDisk := s.diskDepth > 0 && a >= s.diskOldest && (memFirst == 0 || a < memFirst)
		if onDisk {
			if s.hidden == nil {
				s.hidden = make(map[uint64]struct{})
			}
			s.hidden[a] = struct{}{}
		}
	}
	s.trimMemLocked()
}

func (s *Spool) setDiskErrLocked(err error) {
	s.diskErr = err
	s.retryAt = s.clock.Now().Add(retryInterval)
}

// reserve persists a new seq reservation before seqs past the old one are used.
func (s *Spool) reserve(r uint64) {
	err := writeFileAtomic(s.fs, s.dir, seqFileName, formatSeqFile(r))
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if !s.seqFileErr {
			s.log.Warn("spool: cannot persist the seq reservation; if spool.db is lost seqs may repeat", "err", err)
		}
		s.seqFileErr = true
		return
	}
	s.seqFileErr = false
	s.reserved = r
}

// txResult is what one disk transaction changed.
type txResult struct {
	depth       int
	bytes       int64
	oldest      uint64
	dropped     uint64
	quarantined uint64
	qn          int
}

// commitDisk writes overflow, fresh records, acks and quarantines in one
// transaction and, on success, updates the counters.
func (s *Spool) commitDisk(fresh []memRec, acks []uint64, bad [][]byte, next uint64) error {
	s.dbMu.Lock()
	if s.db == nil {
		if err := s.reopenLocked(); err != nil {
			s.dbMu.Unlock()
			return err
		}
	}
	s.dbMu.Unlock()

	overflow := s.mem.recs // the committer is the only writer of mem
	var hiddenAcks []uint64
	for k := range s.hidden {
		hiddenAcks = append(hiddenAcks, k)
	}
	var res txResult
	var quarantinedSeqs []uint64
	s.dbMu.RLock()
	db := s.db
	var uerr error
	perr := safeCall(func() {
		uerr = db.Update(func(tx *bolt.Tx) error {
			res = txResult{depth: s.diskDepth, bytes: s.diskBytes, dropped: s.dropped,
				quarantined: s.quarantined, qn: s.quarantineN}
			quarantinedSeqs = quarantinedSeqs[:0]
			rb, mb, qb := tx.Bucket(bktRecords), tx.Bucket(bktMeta), tx.Bucket(bktQuarantine)
			if rb == nil || mb == nil || qb == nil {
				return errors.New("spool: database lost its buckets")
			}
			rb.FillPercent = 1 // keys only grow: fill pages completely
			del := func(k []byte) ([]byte, error) {
				v := rb.Get(k)
				if v == nil {
					return nil, nil
				}
				res.depth--
				res.bytes -= storedSize(v)
				return v, rb.Delete(k)
			}
			for _, list := range [][]uint64{acks, hiddenAcks} {
				for _, a := range list {
					if _, err := del(seqKey(a)); err != nil {
						return err
					}
				}
			}
			for _, k := range bad {
				v := rb.Get(k)
				if v == nil {
					continue
				}
				if _, err := decodeStored(k, v); err == nil {
					continue // reread fine: a transient read problem
				}
				if res.qn < quarantineKeep {
					if err := qb.Put(k, bytes.Clone(v)); err != nil {
						return err
					}
					res.qn++
				}
				if _, err := del(k); err != nil {
					return err
				}
				res.quarantined++
				seq, _ := keySeq(k)
				quarantinedSeqs = append(quarantinedSeqs, seq)
			}
			for _, list := range [][]memRec{overflow, fresh} {
				for _, m := range list {
					if err := rb.Put(seqKey(m.seq), m.v); err != nil {
						return err
					}
					res.depth++
					res.bytes += storedSize(m.v)
				}
			}
			if res.bytes > s.maxBytes {
				c := rb.Cursor()
				for k, v := c.First(); k != nil && res.bytes > s.maxBytes; k, v = c.First() {
					res.depth--
					res.bytes -= storedSize(v)
					res.dropped++
					if err := c.Delete(); err != nil {
						return err
					}
				}
			}
			if k, _ := rb.Cursor().First(); k != nil {
				res.oldest, _ = keySeq(k)
			} else {
				res.oldest = 0
			}
			return errors.Join(putU64(mb, keyNext, next), putU64(mb, keyDropped, res.dropped),
				putU64(mb, keyQuarantined, res.quarantined))
		})
	})
	s.dbMu.RUnlock()
	if perr != nil {
		s.log.Error("spool: database failed during a commit; it is checked at the next start", "err", perr)
		return perr
	}
	if uerr != nil {
		return fmt.Errorf("spool: committing to %s: %w", s.path, uerr)
	}

	s.commits.Add(1)
	s.mu.Lock()
	if s.diskErr != nil {
		s.log.Info("spool: disk writes work again", "records_written_from_memory", len(overflow))
		s.diskErr = nil
	}
	s.mem.take()
	s.hidden = nil
	newDrops := res.dropped - s.dropped
	s.diskDepth, s.diskBytes, s.diskOldest = res.depth, res.bytes, res.oldest
	s.dropped, s.quarantined, s.quarantineN = res.dropped, res.quarantined, res.qn
	s.noteDropsLocked(newDrops)
	empty := s.diskDepth == 0
	s.mu.Unlock()
	if len(quarantinedSeqs) > 0 {
		s.log.Error("spool: garbled records quarantined", "count", len(quarantinedSeqs),
			"seqs", firstN(quarantinedSeqs, 10), "path", s.path)
	}
	if empty && (len(acks) > 0 || len(hiddenAcks) > 0) {
		s.maybeCompact()
	}
	return nil
}

// trimMemLocked enforces the memory bound by dropping the oldest in-memory records.
func (s *Spool) trimMemLocked() {
	var n uint64
	for s.mem.len() > 0 && s.mem.bytes > s.memLimit {
		s.mem.popOldest()
		n++
	}
	s.dropped += n
	s.noteDropsLocked(n)
}

// noteDropsLocked logs one warning per drop episode (the caller has counted
// the n drops); an episode ends once the spool is below 90 % of its bound.
func (s *Spool) noteDropsLocked(n uint64) {
	limit := s.maxBytes
	if s.memOnly {
		limit = s.memLimit
	}
	if n > 0 {
		if !s.dropping {
			s.dropping = true
			s.log.Warn("spool: full; dropping the oldest records until the backlog drains",
				"max_bytes", limit, "dropped_total", s.dropped)
		}
		return
	}
	if s.dropping && s.diskBytes+s.mem.bytes <= limit/10*9 {
		s.dropping = false
		s.log.Info("spool: no longer full", "dropped_total", s.dropped)
	}
}
