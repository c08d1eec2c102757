// Package spool owns fieldgate's durable store-and-forward queue: every sensor
// reading is numbered (seq), fsync-committed to an on-disk bbolt file and kept
// until the hub publisher acknowledges it. Only the agent (package agent and its
// tests) imports it.
//
// # Guarantees
//
//   - Seq is a per-device counter: 1 on a fresh state directory, never reused,
//     contiguous while the database is healthy (it survives restarts because
//     the next value is committed in the same transaction as the records).
//   - Append returns only after the records are fsync-committed (two
//     fdatasyncs per bbolt commit); concurrent Appends and Acks are coalesced
//     by one committer goroutine into a single transaction (group commit).
//   - The spool is bounded by Options.MaxBytes (sum of encoded records plus
//     their 8-byte keys). When full the oldest records are dropped, counted in
//     Stats.Dropped (persisted) and one warning is logged per episode.
//
// # Files in the state directory
//
//   - spool.db: bbolt database, buckets "records" (key: big-endian seq, value:
//     the binary record with a CRC-32C), "meta" (next seq, dropped and
//     quarantined counters) and "quarantine" (garbled values kept for
//     inspection, at most 100 of them).
//   - seq.next: a side file holding a seq reservation. Before a seq at or past
//     the reservation is used a new block is reserved (next+n+1000), written
//     atomically (temp file, fsync, rename, fsync dir). If spool.db is lost the
//     counter restarts from the reservation, so sequence numbers never go
//     backwards (a gap of up to 1000 is the price).
//   - spool.db.corrupt-<unix>: a database bbolt could not open or read.
//
// # Damage handling
//
// At Open the whole file is walked read-only with page faults turned into
// panics (debug.SetPanicOnFault) and recovered, so a truncated, zero-filled or
// garbled file never crashes the agent. A value whose CRC does not match is
// moved to the quarantine bucket, logged and counted (Stats.Quarantined); the
// same happens when Pending meets one at run time. A file that bbolt cannot
// open, whose pages cannot be read, or that is shorter than its meta page
// says, is quarantined: the old file is kept as spool.db.corrupt-<unix> with an
// ERROR log naming both paths, and a fresh database is started holding what
// could be salvaged, which is every record with a valid CRC reachable from
//
//   - the tree of the newest valid meta page, skipping damaged subtrees by
//     probing forward with Seek (only the damaged leaves' records are lost), and
//   - the tree of the other meta page, i.e. the previous commit, read from a
//     copy of the file whose newest meta is invalidated. After a torn last
//     commit this recovers everything but that commit's records; records it
//     had acknowledged come back and are sent twice.
//
// Nothing is salvaged when both meta pages are invalid (zeroed or random
// file) or both trees are unreadable; stale pages are never scanned, so
// acknowledged records are not resurrected from free pages. The counter
// continues past the largest of the seq.next reservation, the salvaged
// counters and the largest salvaged seq.
//
// # Degraded modes
//
// When a commit fails on a live disk (ENOSPC, EFBIG, EIO, bbolt's MaxSize) the
// records are kept in a bounded in-memory overflow (min(MaxBytes, 16 MiB),
// oldest dropped and counted beyond that; MaxBytes itself is enforced again
// once the disk works), Append still succeeds, Stats.Overflow and
// Stats.LastError say so, one warning is logged, and the disk is retried by
// the first commit 10 s (on the injected clock) after the failure, with the
// overflow written first; Close makes a last attempt. Records
// held only in memory are lost if the process dies before the disk recovers;
// their seqs may then be reused because the side file cannot be written either.
// Acks that cannot be made durable hide the records from Pending at once and
// are retried with the disk; after a crash such records may be sent twice.
//
// OpenOrMemory falls back to a memory-only spool (Stats.InMemory) when the state
// directory cannot be used at all (read-only, full, not a directory). It loads
// the readable records from dir (up to the memory bound; they stay on disk
// too, so after a later start with a writable dir they may be sent twice) and
// continues the counter from the larger of the seq.next reservation and
// spool.db's counter, because seqs handed out in memory are never persisted.
// It never retries the disk: the agent has to be restarted.
//
// # Size
//
// bbolt files never shrink. When the spool is empty and the file is larger than
// 2×MaxBytes, it is recreated (new file with the counters, fsync, rename over
// the old one, fsync dir) at Open or after the Ack that emptied it.
// bbolt's MaxSize is 4×MaxBytes+8 MiB and the initial mmap 2×MaxBytes; on
// 32-bit platforms MaxBytes is capped at 240 MiB so both stay inside armv7's
// 2 GB mmap limit.
package spool
