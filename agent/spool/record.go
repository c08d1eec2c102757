package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"time"
)

// Record is one sensor reading. Seq is assigned by Append.
type Record struct {
	Seq    uint64
	TS     time.Time
	Sensor string
	Values map[string]float64
}

// Limits enforced by Append so that every stored record can later be
// published (a record that can never be sent would block the queue).
const (
	MaxNameLen = 255 // bytes in a sensor or value name
	MaxValues  = 256 // values per record
)

const (
	recordVersion = 1
	crcLen        = 4
	keyLen        = 8
)

// errGarbled reports a stored value that fails its CRC or cannot be decoded.
var errGarbled = errors.New("spool: garbled record")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// validate checks a record before it is accepted.
func validate(r *Record) error {
	if r.Sensor == "" {
		return errors.New("spool: record has an empty sensor name; set Record.Sensor")
	}
	if len(r.Sensor) > MaxNameLen {
		return fmt.Errorf("spool: sensor name %.32q… is %d bytes, more than %d", r.Sensor, len(r.Sensor), MaxNameLen)
	}
	if len(r.Values) > MaxValues {
		return fmt.Errorf("spool: record for sensor %q has %d values, more than %d", r.Sensor, len(r.Values), MaxValues)
	}
	for k, v := range r.Values {
		if k == "" || len(k) > MaxNameLen {
			return fmt.Errorf("spool: record for sensor %q: value name %.32q must be 1..%d bytes", r.Sensor, k, MaxNameLen)
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("spool: record for sensor %q: value %q is %v, which JSON cannot carry; leave it out", r.Sensor, k, v)
		}
	}
	return nil
}

// appendRecord appends the binary encoding of r to dst:
//
//	version byte (1)
//	uvarint seq
//	varint  unix seconds of TS, uvarint nanoseconds (< 1e9)
//	uvarint len(sensor), sensor
//	uvarint number of values, then per value in name order:
//	        uvarint len(name), name, 8 bytes little-endian IEEE-754
//	4 bytes little-endian CRC-32C of everything before
func appendRecord(dst []byte, r *Record) []byte {
	start := len(dst)
	dst = append(dst, recordVersion)
	dst = binary.AppendUvarint(dst, r.Seq)
	dst = binary.AppendVarint(dst, r.TS.Unix())
	dst = binary.AppendUvarint(dst, uint64(r.TS.Nanosecond()))
	dst = binary.AppendUvarint(dst, uint64(len(r.Sensor)))
	dst = append(dst, r.Sensor...)
	dst = binary.AppendUvarint(dst, uint64(len(r.Values)))
	var small [16]string
	names := small[:0]
	for k := range r.Values {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		dst = binary.AppendUvarint(dst, uint64(len(k)))
		dst = append(dst, k...)
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(r.Values[k]))
	}
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// decodeRecord verifies the CRC of b and decodes it. It never panics.
func decodeRecord(b []byte) (Record, error) {
	if len(b) < 1+crcLen {
		return Record{}, fmt.Errorf("%w: %d bytes is too short", errGarbled, len(b))
	}
	body, sum := b[:len(b)-crcLen], binary.LittleEndian.Uint32(b[len(b)-crcLen:])
	if crc32.Checksum(body, castagnoli) != sum {
		return Record{}, fmt.Errorf("%w: checksum mismatch", errGarbled)
	}
	return decodeBody(body)
}

// decodeBody decodes a record without its CRC trailer.
func decodeBody(b []byte) (Record, error) {
	d := decoder{b: b}
	if v := d.byte(); v != recordVersion {
		return Record{}, fmt.Errorf("%w: unknown version %d", errGarbled, v)
	}
	var r Record
	r.Seq = d.uvarint()
	sec := d.varint()
	nsec := d.uvarint()
	if nsec >= 1e9 {
		d.fail("nanoseconds out of range")
	}
	r.TS = time.Unix(sec, int64(nsec)).UTC()
	r.Sensor = d.string()
	n := d.uvarint()
	if n > MaxValues || n > uint64(len(d.b)) {
		d.fail("value count out of range")
		n = 0
	}
	if d.err == nil && n > 0 {
		r.Values = make(map[string]float64, int(n))
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		k := d.string()
		f := math.Float64frombits(d.uint64())
		if d.err != nil {
			break
		}
		if _, dup := r.Values[k]; dup {
			d.fail("duplicate value name")
			break
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			// Append never stores these: a non-finite value is damage.
			d.fail("non-finite value")
			break
		}
		r.Values[k] = f
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return Record{}, d.err
	}
	return r, nil
}

// decoder reads fields from a byte slice; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", errGarbled, what)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uint64() uint64 {
	if len(d.b) < 8 {
		d.fail("truncated")
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > MaxNameLen || n > uint64(len(d.b)) {
		d.fail("string length out of range")
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// seqKey returns the bbolt key of seq (big-endian, so keys sort by seq).
func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, keyLen), seq)
}

// keySeq decodes a key; ok is false for a key that is not 8 bytes.
func keySeq(k []byte) (uint64, bool) {
	if len(k) != keyLen {
		return 0, false
	}
	return binary.BigEndian.Uint64(k), true
}

// decodeStored decodes a value read under key k and checks that both agree.
func decodeStored(k, v []byte) (Record, error) {
	seq, ok := keySeq(k)
	if !ok {
		return Record{}, fmt.Errorf("%w: key of %d bytes", errGarbled, len(k))
	}
	r, err := decodeRecord(v)
	if err != nil {
		return Record{}, err
	}
	if r.Seq != seq {
		return Record{}, fmt.Errorf("%w: value of seq %d stored under key %d", errGarbled, r.Seq, seq)
	}
	return r, nil
}

// storedSize is what a record counts against MaxBytes.
func storedSize(v []byte) int64 { return int64(len(v)) + keyLen }
