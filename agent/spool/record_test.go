package spool

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestRecordRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		r    Record
	}{
		{"typical", Record{Seq: 42, TS: time.Date(2026, 11, 22, 10, 0, 0, 123e6, time.UTC), Sensor: "env",
			Values: map[string]float64{"temperature_c": 21.4, "humidity_pct": 55}}},
		{"no values", Record{Seq: 1, TS: epoch, Sensor: "door"}},
		{"pre-1970 clock", Record{Seq: 7, TS: time.Unix(-86400*365, 999_999_999).UTC(), Sensor: "s",
			Values: map[string]float64{"v": math.Copysign(0, -1)}}},
		{"far future", Record{Seq: math.MaxUint64, TS: time.Date(9999, 1, 1, 0, 0, 0, 1, time.UTC), Sensor: "s",
			Values: map[string]float64{"max": math.MaxFloat64, "tiny": math.SmallestNonzeroFloat64}}},
		{"long names", Record{Seq: 3, TS: epoch, Sensor: strings.Repeat("s", MaxNameLen),
			Values: map[string]float64{strings.Repeat("v", MaxNameLen): 1}}},
		{"non-UTC input", Record{Seq: 9, TS: time.Date(2026, 1, 1, 12, 0, 0, 5, time.FixedZone("X", 3600)), Sensor: "s"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := appendRecord(nil, &tc.r)
			got, err := decodeRecord(b)
			if err != nil {
				t.Fatalf("decodeRecord(appendRecord(%v)) error %v", tc.r, err)
			}
			if !sameRecord(got, tc.r) || got.TS.Location() != time.UTC {
				t.Fatalf("decodeRecord(appendRecord(r)) = %+v; want %+v in UTC", got, tc.r)
			}
			if again := appendRecord(nil, &got); string(again) != string(b) {
				t.Fatalf("encoding is not deterministic")
			}
			// Every single-bit flip and every truncation is detected.
			for i := range b {
				for bit := range 8 {
					c := append([]byte(nil), b...)
					c[i] ^= 1 << bit
					if _, err := decodeRecord(c); !errors.Is(err, errGarbled) {
						t.Fatalf("bit %d of byte %d flipped: err = %v; want errGarbled", bit, i, err)
					}
				}
				if _, err := decodeRecord(b[:i]); !errors.Is(err, errGarbled) {
					t.Fatalf("truncated to %d bytes: err = %v; want errGarbled", i, err)
				}
			}
		})
	}
}

func TestDecodeStoredKeyMismatch(t *testing.T) {
	r := Record{Seq: 5, TS: epoch, Sensor: "s"}
	v := appendRecord(nil, &r)
	tests := []struct {
		name string
		key  []byte
		ok   bool
	}{
		{"matching key", seqKey(5), true},
		{"other seq", seqKey(6), false},
		{"short key", []byte{5}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeStored(tc.key, v)
			if (err == nil) != tc.ok {
				t.Fatalf("decodeStored(%x) err = %v; want ok=%v", tc.key, err, tc.ok)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		r       Record
		wantErr string
	}{
		{"ok", Record{Sensor: "env", Values: map[string]float64{"t": 1}}, ""},
		{"empty sensor", Record{}, "empty sensor name"},
		{"long sensor", Record{Sensor: strings.Repeat("x", MaxNameLen+1)}, "bytes, more than"},
		{"empty value name", Record{Sensor: "s", Values: map[string]float64{"": 1}}, "value name"},
		{"NaN", Record{Sensor: "s", Values: map[string]float64{"t": math.NaN()}}, "JSON cannot carry"},
		{"Inf", Record{Sensor: "s", Values: map[string]float64{"t": math.Inf(-1)}}, "JSON cannot carry"},
		{"too many values", Record{Sensor: "s", Values: manyValues(MaxValues + 1)}, "values, more than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := validate(&tc.r)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("validate() = %v; want error containing %q", err, tc.wantErr)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "spool: ") {
				t.Fatalf("error %q lacks the component prefix", err)
			}
		})
	}
}

func manyValues(n int) map[string]float64 {
	m := make(map[string]float64, n)
	for i := range n {
		m[strings.Repeat("v", 1+i%200)+string(rune('a'+i/200))] = float64(i)
	}
	return m
}

func TestSeqFile(t *testing.T) {
	good := formatSeqFile(12345)
	tests := []struct {
		name string
		in   []byte
		want uint64
		ok   bool
	}{
		{"round trip", good, 12345, true},
		{"zero", formatSeqFile(0), 0, true},
		{"max", formatSeqFile(math.MaxUint64), math.MaxUint64, true},
		{"torn", good[:len(good)-3], 0, false},
		{"no newline", good[:len(good)-1], 0, false},
		{"digit changed", []byte(strings.Replace(string(good), "12345", "12346", 1)), 0, false},
		{"empty", nil, 0, false},
		{"zeros", make([]byte, 32), 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseSeqFile(tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("parseSeqFile(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
			}
		})
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(appendRecord(nil, &Record{Seq: 1, TS: epoch, Sensor: "env", Values: map[string]float64{"t": 1.5}}))
	f.Add(appendRecord(nil, &Record{Seq: 1 << 40, TS: time.Unix(-5, 7), Sensor: "x"}))
	f.Add([]byte{recordVersion, 1, 2, 3, 1, 'a', 1, 1, 'b', 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		// With the CRC (what the spool reads) and without it (so the fuzzer
		// reaches the field decoder, which a random CRC would hide).
		for _, dec := range []func([]byte) (Record, error){decodeRecord, decodeBody} {
			r, err := dec(b)
			if err != nil {
				if !errors.Is(err, errGarbled) {
					t.Fatalf("error %v does not wrap errGarbled", err)
				}
				continue
			}
			again, err := decodeRecord(appendRecord(nil, &r))
			if err != nil || !sameRecord(again, r) {
				t.Fatalf("decoded record %+v does not round-trip: %+v, %v", r, again, err)
			}
		}
	})
}

func FuzzParseSeqFile(f *testing.F) {
	f.Add(formatSeqFile(1002))
	f.Add([]byte("fieldgate-spool-seq v1 5 00000000\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := parseSeqFile(b)
		if err != nil {
			return
		}
		if got, err := parseSeqFile(formatSeqFile(n)); err != nil || got != n {
			t.Fatalf("parsed %d does not round-trip: %d, %v", n, got, err)
		}
	})
}
