package telemetry

import (
	"testing"

	"github.com/fieldgate/fieldgate/agent/spool"
)

func BenchmarkPack4KB(b *testing.B) {
	recs := benchRecords(256)
	b.ReportAllocs()
	for b.Loop() {
		m, n, err := Pack(recs, 4096)
		if err != nil || n == 0 {
			b.Fatal(err)
		}
		b.ReportMetric(float64(len(m.Body))/float64(n), "bytes/record")
	}
}

func benchRecords(n int) []spool.Record {
	out := make([]spool.Record, n)
	for i := range out {
		out[i] = rec(uint64(i+1), map[string]float64{"temperature_c": 21.4 + float64(i)/10, "humidity_pct": 40.25})
	}
	return out
}
