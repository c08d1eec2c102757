package spool

import (
	"io/fs"
	"os"
	"sort"
)

// fileSystem is the slice of the os package the spool uses; tests replace it
// to inject errors such as EROFS that root cannot provoke with permissions.
type fileSystem interface {
	MkdirAll(path string, perm fs.FileMode) error
	OpenFile(name string, flag int, perm fs.FileMode) (*os.File, error)
	ReadFile(name string) ([]byte, error)
	Rename(oldpath, newpath string) error
	Remove(name string) error
	Link(oldname, newname string) error
	Stat(name string) (fs.FileInfo, error)
}

type osFS struct{}

func (osFS) MkdirAll(p string, perm fs.FileMode) error { return os.MkdirAll(p, perm) }
func (osFS) OpenFile(n string, f int, perm fs.FileMode) (*os.File, error) {
	return os.OpenFile(n, f, perm)
}
func (osFS) ReadFile(n string) ([]byte, error)  { return os.ReadFile(n) }
func (osFS) Rename(o, n string) error           { return os.Rename(o, n) }
func (osFS) Remove(n string) error              { return os.Remove(n) }
func (osFS) Link(o, n string) error             { return os.Link(o, n) }
func (osFS) Stat(n string) (fs.FileInfo, error) { return os.Stat(n) }

var _ fileSystem = osFS{}

// memRec is an encoded record held in memory.
type memRec struct {
	seq uint64
	v   []byte
}

// memQueue is the in-memory part of the spool, ordered by seq. It holds every
// record in memory-only mode and the overflow while the disk is failing.
type memQueue struct {
	recs  []memRec
	bytes int64
}

func (q *memQueue) len() int { return len(q.recs) }

func (q *memQueue) push(seq uint64, v []byte) {
	q.recs = append(q.recs, memRec{seq: seq, v: v})
	q.bytes += storedSize(v)
}

// popOldest removes and returns the oldest record's size.
func (q *memQueue) popOldest() int64 {
	sz := storedSize(q.recs[0].v)
	q.recs[0] = memRec{}
	q.recs = q.recs[1:]
	q.bytes -= sz
	if len(q.recs) == 0 {
		q.recs = nil
	}
	return sz
}

// remove deletes the given seqs (unknown ones are ignored) and returns how many
// records were removed.
func (q *memQueue) remove(seqs []uint64) int {
	n := 0
	for _, s := range seqs {
		i := sort.Search(len(q.recs), func(i int) bool { return q.recs[i].seq >= s })
		if i < len(q.recs) && q.recs[i].seq == s && q.recs[i].v != nil {
			q.bytes -= storedSize(q.recs[i].v)
			q.recs[i].v = nil
			n++
		}
	}
	if n > 0 {
		out := q.recs[:0]
		for _, r := range q.recs {
			if r.v != nil {
				out = append(out, r)
			}
		}
		clear(q.recs[len(out):])
		q.recs = out
	}
	return n
}

// after returns up to max records with seq > after, oldest first.
func (q *memQueue) after(after uint64, max int) []memRec {
	i := sort.Search(len(q.recs), func(i int) bool { return q.recs[i].seq > after })
	j := min(len(q.recs), i+max)
	return q.recs[i:j]
}

func (q *memQueue) oldest() uint64 {
	if len(q.recs) == 0 {
		return 0
	}
	return q.recs[0].seq
}

// take empties the queue and returns its records.
func (q *memQueue) take() []memRec {
	r := q.recs
	q.recs, q.bytes = nil, 0
	return r
}
