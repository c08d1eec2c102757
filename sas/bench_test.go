package sas

import "testing"

func BenchmarkNewDeviceToken(b *testing.B) {
	k, err := ParseKey(derivedKey)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		tok, err := NewDeviceToken("example-hub.azure-devices.net", regID, "", 1700000000, k)
		if err != nil {
			b.Fatal(err)
		}
		_ = tok.String()
	}
}
