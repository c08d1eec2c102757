package config

import (
	"strings"
	"testing"
	"time"
)

func TestDurationText(t *testing.T) {
	tests := []struct {
		name, in string
		want     time.Duration
		wantErr  string
	}{
		{"seconds", "30s", 30 * time.Second, ""},
		{"compound", "1h30m", 90 * time.Minute, ""},
		{"millis", "250ms", 250 * time.Millisecond, ""},
		{"spaces trimmed", " 5m ", 5 * time.Minute, ""},
		{"zero", "0s", 0, ""},
		{"negative parses (validation rejects)", "-1s", -time.Second, ""},
		{"bare number", "30", 0, `duration 30 has no unit: write it as a string with a unit, e.g. "30s"`},
		{"bare float", "1.5", 0, "has no unit"},
		{"garbage", "soon", 0, `invalid duration "soon"`},
		{"empty", "", 0, "empty duration"},
		{"days are not Go syntax", "1d", 0, "invalid duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d Duration
			err := d.UnmarshalText([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("UnmarshalText(%q) error = %v, want containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("UnmarshalText(%q): %v", tt.in, err)
			}
			if d.D() != tt.want {
				t.Fatalf("UnmarshalText(%q) = %v, want %v", tt.in, d.D(), tt.want)
			}
		})
	}
}

func TestDurationStringRoundTrip(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{30 * time.Second, "30s"},
		{10 * time.Second, "10s"},
		{15 * time.Minute, "15m"},
		{time.Hour, "1h"},
		{90 * time.Minute, "1h30m"},
		{time.Hour + time.Second, "1h0m1s"},
		{250 * time.Millisecond, "250ms"},
		{0, "0s"},
		{1177 * time.Second, "19m37s"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			b, err := Duration{tt.d}.MarshalText()
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Fatalf("MarshalText(%v) = %q, want %q", tt.d, b, tt.want)
			}
			var back Duration
			if err := back.UnmarshalText(b); err != nil || back.D() != tt.d {
				t.Fatalf("round trip of %q = %v, %v; want %v", b, back.D(), err, tt.d)
			}
		})
	}
}

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in      string
		want    ByteSize
		wantErr string
	}{
		{"4096", 4096, ""},
		{"0", 0, ""},
		{"64MiB", 64 << 20, ""},
		{"64 MiB", 64 << 20, ""},
		{"512KiB", 512 << 10, ""},
		{"1GiB", 1 << 30, ""},
		{"4KB", 4000, ""},
		{"10MB", 10_000_000, ""},
		{"2GB", 2_000_000_000, ""},
		{"100B", 100, ""},
		{"1.5MiB", 3 << 19, ""},
		{"1.5B", 0, "whole number of bytes"},
		{"-1", 0, "negative"},
		{"-1KiB", 0, "negative"},
		{"MiB", 0, "number is missing"},
		{"", 0, "empty size"},
		{"64mb", 0, "invalid size"},
		{"64 TiB", 0, "invalid size"},
		{"9223372036854775807GiB", 0, "too large"},
		{"1e30", 0, "too large"},
		{"NaN", 0, "invalid size"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseByteSize(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseByteSize(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseByteSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestByteSizeStringRoundTrip(t *testing.T) {
	tests := []struct {
		in   ByteSize
		want string
	}{
		{64 << 20, "64MiB"},
		{1 << 30, "1GiB"},
		{4096, "4KiB"},
		{4000, "4000B"},
		{0, "0B"},
		{3 << 19, "1536KiB"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			b, err := tt.in.MarshalText()
			if err != nil || string(b) != tt.want {
				t.Fatalf("MarshalText(%d) = %q, %v; want %q", tt.in, b, err, tt.want)
			}
			var back ByteSize
			if err := back.UnmarshalText(b); err != nil || back != tt.in {
				t.Fatalf("round trip of %q = %d, %v", b, back, err)
			}
		})
	}
}
