package spool

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

const (
	seqFileName   = "seq.next"
	seqBlock      = 1000 // seqs reserved per side-file write
	seqFileHeader = "fieldgate-spool-seq v1"
)

// formatSeqFile renders the reservation: "fieldgate-spool-seq v1 <next> <crc32c hex>\n".
func formatSeqFile(next uint64) []byte {
	body := seqFileHeader + " " + strconv.FormatUint(next, 10)
	return fmt.Appendf(nil, "%s %08x\n", body, crc32.Checksum([]byte(body), castagnoli))
}

// parseSeqFile parses the side file written by formatSeqFile.
func parseSeqFile(b []byte) (uint64, error) {
	s, ok := strings.CutSuffix(string(b), "\n")
	if !ok {
		return 0, errors.New("spool: seq.next: missing final newline (torn write?)")
	}
	i := strings.LastIndexByte(s, ' ')
	if i < 0 {
		return 0, errors.New("spool: seq.next: missing checksum")
	}
	body, sumHex := s[:i], s[i+1:]
	sum, err := strconv.ParseUint(sumHex, 16, 32)
	if err != nil || len(sumHex) != 8 {
		return 0, fmt.Errorf("spool: seq.next: bad checksum field %.16q", sumHex)
	}
	if crc32.Checksum([]byte(body), castagnoli) != uint32(sum) {
		return 0, errors.New("spool: seq.next: checksum mismatch")
	}
	num, ok := strings.CutPrefix(body, seqFileHeader+" ")
	if !ok {
		return 0, errors.New("spool: seq.next: unknown header")
	}
	next, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("spool: seq.next: %w", err)
	}
	return next, nil
}

// readSeqFile returns the reservation in dir, 0 when there is none. A garbled
// file is reported through bad (and treated as absent); other errors fail.
func readSeqFile(fsys fileSystem, dir string) (next uint64, bad error, err error) {
	b, err := fsys.ReadFile(filepath.Join(dir, seqFileName))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("spool: reading %s: %w", filepath.Join(dir, seqFileName), err)
	}
	next, perr := parseSeqFile(b)
	if perr != nil {
		return 0, perr, nil
	}
	return next, nil, nil
}

// writeFileAtomic writes data to dir/name: temp file, fsync, rename, fsync dir.
func writeFileAtomic(fsys fileSystem, dir, name string, data []byte) error {
	final := filepath.Join(dir, name)
	tmp := final + ".tmp"
	f, err := fsys.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("spool: writing %s: %w", final, err)
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		_ = fsys.Remove(tmp)
		return fmt.Errorf("spool: writing %s: %w", final, werr)
	}
	if err := fsys.Rename(tmp, final); err != nil {
		_ = fsys.Remove(tmp)
		return fmt.Errorf("spool: writing %s: %w", final, err)
	}
	return syncDir(fsys, dir)
}

// syncDir fsyncs a directory so that renames in it are durable.
func syncDir(fsys fileSystem, dir string) error {
	d, err := fsys.OpenFile(dir, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("spool: syncing directory %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("spool: syncing directory %s: %w", dir, err)
	}
	return nil
}
