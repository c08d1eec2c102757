package spool

import (
	"encoding/binary"
	"io"
	"os"
)

// The raw scan is the last line of salvage: when the pages that lead to the
// records (meta pages, branch pages, the bucket root) are destroyed, the leaf
// pages holding the records may still be intact. bbolt stores each value
// right after its key, so a record is recognised anywhere in the file by its
// 8-byte big-endian seq key, a self-consistent encoding carrying the same
// seq, and its CRC-32C. A false match needs a 64-bit key match and a 32-bit
// checksum match at once.

const (
	scanChunk = 1 << 20
	// maxRecordLen bounds one encoded record: header varints, a sensor name,
	// MaxValues values with the longest names, and the CRC.
	maxRecordLen = 1 + 3*binary.MaxVarintLen64 + 2*binary.MaxVarintLen64 + MaxNameLen +
		MaxValues*(binary.MaxVarintLen64+MaxNameLen+8) + crcLen
)

// scanRecords calls fn for every intact stored record found in r (size
// bytes), in file order; the same seq may be reported more than once (stale
// copies in freed pages). It reads the file in chunks that overlap by one
// record, so memory stays bounded whatever the file size.
func scanRecords(r io.ReaderAt, size int64, fn func(seq uint64, v []byte)) error {
	overlap := int64(keyLen + maxRecordLen)
	buf := make([]byte, scanChunk+overlap)
	for off := int64(0); off < size; off += scanChunk {
		n, err := r.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		if err != nil && err != io.EOF {
			return err
		}
		b := buf[:n]
		// A record is reported by the chunk in which its value starts.
		end := min(int64(n), scanChunk)
		for p := keyLen; p < int(end); p++ {
			if b[p] != recordVersion {
				continue
			}
			seq, m := binary.Uvarint(b[p+1:])
			if m <= 0 || seq == 0 || binary.BigEndian.Uint64(b[p-keyLen:p]) != seq {
				continue
			}
			l, ok := recordLen(b[p:])
			if !ok {
				continue
			}
			v := b[p : p+l]
			if _, err := decodeStored(b[p-keyLen:p], v); err != nil {
				continue
			}
			fn(seq, v)
			p += l - 1
		}
		if int64(n) < scanChunk {
			break
		}
	}
	return nil
}

// recordLen returns the length of the encoded record at the start of b
// (including its CRC), parsing only the framing.
func recordLen(b []byte) (int, bool) {
	d := decoder{b: b}
	d.byte()
	d.uvarint()
	d.varint()
	d.uvarint()
	d.string()
	n := d.uvarint()
	if n > MaxValues {
		return 0, false
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		d.string()
		d.uint64()
	}
	if d.err != nil || len(d.b) < crcLen {
		return 0, false
	}
	return len(b) - len(d.b) + crcLen, true
}

// scanFile runs scanRecords over the file at path.
func (s *Spool) scanFile(path string, fn func(seq uint64, v []byte)) error {
	f, err := s.fs.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	return scanRecords(f, fi.Size(), fn)
}
