package telemetry

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/agent/spool"
)

func rec(seq uint64, vals map[string]float64) spool.Record {
	return spool.Record{Seq: seq, TS: time.Date(2026, 11, 22, 10, 0, 0, 123456789, time.UTC), Sensor: "env", Values: vals}
}

func TestAppendRecordFormat(t *testing.T) {
	got := string(AppendRecord(nil, rec(42, map[string]float64{"temperature_c": 21.4, "humidity_pct": 40})))
	want := `{"seq":42,"ts":"2026-11-22T10:00:00.123Z","sensor":"env","values":{"humidity_pct":40,"temperature_c":21.4}}`
	if got != want {
		t.Errorf("AppendRecord = %s\nwant %s", got, want)
	}
	if !json.Valid([]byte(got)) {
		t.Error("not valid JSON")
	}
	odd := string(AppendRecord(nil, spool.Record{Seq: 1, TS: time.Unix(0, 0), Sensor: "a\"b\\c\n", Values: map[string]float64{"x": math.NaN(), "y": math.Inf(1), "z": -1e-300}}))
	if !json.Valid([]byte(odd)) {
		t.Errorf("escaping/non-finite values produced invalid JSON: %s", odd)
	}
}

func TestPack(t *testing.T) {
	small := func(n int) []spool.Record {
		var rs []spool.Record
		for i := 1; i <= n; i++ {
			rs = append(rs, rec(uint64(i), map[string]float64{"temperature_c": 21.25 + float64(i), "humidity_pct": 40.5}))
		}
		return rs
	}
	huge := rec(1, map[string]float64{})
	for i := 0; i < 300; i++ {
		huge.Values[fmt.Sprintf("value_%03d", i)] = float64(i)
	}
	tests := []struct {
		name      string
		recs      []spool.Record
		max       int
		wantN     int
		wantUnder bool
	}{
		{"empty", nil, 4096, 0, true},
		{"one", small(1), 4096, 1, true},
		{"all fit", small(10), 4096, 10, true},
		{"fills 4 KB", small(200), 4096, 36, true},
		{"tiny budget still sends one", small(3), 64, 1, false},
		{"oversized single record alone", []spool.Record{huge, rec(2, nil)}, 1024, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, n, err := Pack(tt.recs, tt.max)
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantN == 36 {
				// the exact count depends on encoding; what matters is the budget
				if n < 30 || n >= len(tt.recs) {
					t.Fatalf("Pack consumed %d records", n)
				}
			} else if n != tt.wantN {
				t.Fatalf("Pack consumed %d records, want %d", n, tt.wantN)
			}
			if n == 0 {
				return
			}
			if tt.wantUnder && m.Size() > tt.max {
				t.Errorf("message size %d > budget %d", m.Size(), tt.max)
			}
			got, err := Decode(m.Body)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != n || len(m.Seqs) != n {
				t.Fatalf("decoded %d records, seqs %v, want %d", len(got), m.Seqs, n)
			}
			for i, r := range got {
				if r.Seq != tt.recs[i].Seq || m.Seqs[i] != r.Seq {
					t.Errorf("record %d seq %d, want %d", i, r.Seq, tt.recs[i].Seq)
				}
			}
			if m.ID == "" || m.Properties[0].Value != m.ID || m.Properties[1].Value != "application/json" || m.Properties[2].Value != "utf-8" {
				t.Errorf("properties = %v", m.Properties)
			}
		})
	}
}

func TestPackFillsNextMessage(t *testing.T) {
	// Packing repeatedly consumes every record exactly once, in order, each
	// message within budget: the publisher's loop.
	var rs []spool.Record
	for i := 1; i <= 1000; i++ {
		rs = append(rs, rec(uint64(i), map[string]float64{"voltage_v": float64(i) / 7}))
	}
	next := uint64(1)
	msgs := 0
	for len(rs) > 0 {
		m, n, err := Pack(rs, 4096)
		if err != nil || n == 0 {
			t.Fatalf("Pack = %d, %v", n, err)
		}
		if m.Size() > 4096 {
			t.Fatalf("message %d is %d bytes", msgs, m.Size())
		}
		for _, s := range m.Seqs {
			if s != next {
				t.Fatalf("seq %d, want %d", s, next)
			}
			next++
		}
		rs = rs[n:]
		msgs++
	}
	if msgs > 1000/20 {
		t.Errorf("%d messages for 1000 records: batching below 20 records per message", msgs)
	}
}

func TestMessageIDsUnique(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := NewMessageID()
		if seen[id] || len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
			t.Fatalf("id %q repeated or malformed", id)
		}
		seen[id] = true
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"records":[{"seq":1,"ts":"2026-11-22T10:00:00.123Z","sensor":"env","values":{"a":1}}]}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = Decode(b)
	})
}
