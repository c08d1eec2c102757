package spool

import (
	"context"
	"testing"
)

func benchSpool(b *testing.B, noSync bool) *Spool {
	b.Helper()
	s, err := Open(b.TempDir(), Options{NoSync: noSync})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

func forSync(b *testing.B, fn func(b *testing.B, s *Spool)) {
	for _, mode := range []struct {
		name   string
		noSync bool
	}{{"fsync", false}, {"nosync", true}} {
		b.Run(mode.name, func(b *testing.B) { fn(b, benchSpool(b, mode.noSync)) })
	}
}

func BenchmarkAppend1(b *testing.B) {
	forSync(b, func(b *testing.B, s *Spool) {
		r := rec(1)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Append(context.Background(), r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkAppendBatch10(b *testing.B) {
	forSync(b, func(b *testing.B, s *Spool) {
		batch := make([]Record, 10)
		for i := range batch {
			batch[i] = rec(i)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Append(context.Background(), batch...); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAppendConcurrent measures group commit: 8 goroutines per CPU each
// append one record at a time; records/commit shows the coalescing.
func BenchmarkAppendConcurrent(b *testing.B) {
	forSync(b, func(b *testing.B, s *Spool) {
		r := rec(1)
		b.ReportAllocs()
		b.SetParallelism(8)
		c0 := s.commits.Load()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Append(context.Background(), r); err != nil {
					b.Error(err)
					return
				}
			}
		})
		if n := s.commits.Load() - c0; n > 0 {
			b.ReportMetric(float64(b.N)/float64(n), "records/commit")
		}
	})
}

// BenchmarkPendingAck100 reads 100 records and acknowledges them.
func BenchmarkPendingAck100(b *testing.B) {
	forSync(b, func(b *testing.B, s *Spool) {
		batch := make([]Record, 100)
		for i := range batch {
			batch[i] = rec(i)
		}
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			if _, err := s.Append(context.Background(), batch...); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			got, err := s.Pending(0, 100)
			if err != nil || len(got) != 100 {
				b.Fatalf("Pending = %d records, %v", len(got), err)
			}
			if err := s.Ack(seqs(got)...); err != nil {
				b.Fatal(err)
			}
		}
	})
}
