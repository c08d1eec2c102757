package hw

import (
	"math"
	"testing"
)

func TestRegisterFormatDecode(t *testing.T) {
	tests := []struct {
		name string
		f    registerFormat
		b    []byte
		want float64
	}{
		{"1 byte unsigned", registerFormat{length: 1, scale: 1}, []byte{0xF0}, 240},
		{"1 byte signed", registerFormat{length: 1, signed: true, scale: 1}, []byte{0xF0}, -16},
		{"2 bytes big-endian", registerFormat{length: 2, scale: 1}, []byte{0x12, 0x34}, 0x1234},
		{"2 bytes little-endian", registerFormat{length: 2, littleEndian: true, scale: 1}, []byte{0x34, 0x12}, 0x1234},
		// TI TMP102 (SBOS397 §7.5.1.1): 12-bit two's complement, left-justified
		// in a big-endian 16-bit register, 0.0625 °C per LSB → signed 16-bit
		// × 0.0625/16. 0x1900 → 25 °C; 0xE700 → −25 °C.
		{"TMP102 25 °C", registerFormat{length: 2, signed: true, scale: 0.00390625}, []byte{0x19, 0x00}, 25},
		{"TMP102 -25 °C", registerFormat{length: 2, signed: true, scale: 0.00390625}, []byte{0xE7, 0x00}, -25},
		{"3 bytes signed", registerFormat{length: 3, signed: true, scale: 1}, []byte{0xFF, 0xFF, 0xFE}, -2},
		{"3 bytes little-endian unsigned", registerFormat{length: 3, littleEndian: true, scale: 1}, []byte{0x01, 0x00, 0x80}, 0x800001},
		{"4 bytes signed minimum", registerFormat{length: 4, signed: true, scale: 1}, []byte{0x80, 0, 0, 0}, math.MinInt32},
		{"4 bytes unsigned maximum", registerFormat{length: 4, scale: 1}, []byte{0xFF, 0xFF, 0xFF, 0xFF}, math.MaxUint32},
		{"scale and offset", registerFormat{length: 2, scale: 0.5, offset: -10}, []byte{0x00, 0x64}, 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.f.decode(tt.b)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("decode(% x) = %v; want %v", tt.b, got, tt.want)
			}
		})
	}
	if _, err := (registerFormat{length: 2, scale: 1}).decode([]byte{1}); err == nil {
		t.Error("decode of a short register did not fail")
	}
}

func FuzzRegisterDecode(f *testing.F) {
	f.Add([]byte{0x19, 0x00}, uint8(2), true, false, 0.0625, 0.0)
	f.Add([]byte{0x80, 0, 0, 0}, uint8(4), true, true, 1.0, -3.5)
	f.Fuzz(func(t *testing.T, b []byte, length uint8, signed, little bool, scale, offset float64) {
		fm := registerFormat{length: int(length), signed: signed, littleEndian: little, scale: scale, offset: offset}
		v, err := fm.decode(b)
		if err != nil {
			return
		}
		if len(b) < 1 || len(b) > 4 {
			t.Fatalf("decoded %d bytes", len(b))
		}
		if scale == 1 && offset == 0 {
			lo, hi := 0.0, math.Ldexp(1, 8*len(b))-1
			if signed {
				lo, hi = -math.Ldexp(1, 8*len(b)-1), math.Ldexp(1, 8*len(b)-1)-1
			}
			if v < lo || v > hi {
				t.Fatalf("raw %v outside [%v, %v] for %d bytes", v, lo, hi, len(b))
			}
		}
	})
}
