package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written in the configuration as a string with a
// unit, such as "30s", "15m" or "1h30m" (time.ParseDuration syntax). Bare
// numbers are rejected: "interval = 30" does not say whether it means seconds
// or minutes.
type Duration struct {
	time.Duration
}

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return d.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if s == "" {
		return fmt.Errorf("empty duration: write a number with a unit, e.g. \"30s\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		if _, numErr := strconv.ParseFloat(s, 64); numErr == nil {
			return fmt.Errorf("duration %s has no unit: write it as a string with a unit, e.g. \"%ss\"", s, s)
		}
		return fmt.Errorf("invalid duration %q: use a number with a unit (ms, s, m, h), e.g. \"30s\" or \"1h30m\"", s)
	}
	d.Duration = v
	return nil
}

// String formats d compactly, as people write it: "30s", "15m", "1h",
// "1h30m", "250ms".
func (d Duration) String() string {
	s := d.Duration.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// MarshalText implements encoding.TextMarshaler; it writes the form
// UnmarshalText reads ("30s", "1h30m").
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(d.String()), nil
}

// ByteSize is a size in bytes. The configuration accepts a plain integer
// (bytes) or a string with a unit: B, KiB, MiB, GiB (powers of 1024) or KB, MB,
// GB (powers of 1000), e.g. "64MiB" or "4KB". A fractional count such as
// "1.5MiB" is accepted when it comes to whole bytes.
type ByteSize int64

var byteUnits = []struct {
	suffix string
	mult   int64
}{
	// Longest suffixes first so "KiB" is not read as "B".
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"B", 1},
}

// ParseByteSize parses the forms described on ByteSize.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("empty size: write bytes or a number with a unit, e.g. \"64MiB\"")
	}
	mult := int64(1)
	num := t
	for _, u := range byteUnits {
		if strings.HasSuffix(t, u.suffix) {
			mult = u.mult
			num = strings.TrimSpace(strings.TrimSuffix(t, u.suffix))
			break
		}
	}
	if num == "" {
		return 0, fmt.Errorf("invalid size %q: a number is missing before the unit, e.g. \"64MiB\"", s)
	}
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("invalid size %q: must not be negative", s)
		}
		if n > math.MaxInt64/mult {
			return 0, fmt.Errorf("invalid size %q: too large", s)
		}
		return ByteSize(n * mult), nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("invalid size %q: use bytes or a number with a unit (KiB, MiB, GiB, KB, MB, GB), e.g. \"64MiB\"", s)
	}
	if f < 0 {
		return 0, fmt.Errorf("invalid size %q: must not be negative", s)
	}
	v := f * float64(mult)
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	if v != math.Trunc(v) {
		return 0, fmt.Errorf("invalid size %q: is not a whole number of bytes", s)
	}
	return ByteSize(v), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (b *ByteSize) UnmarshalText(text []byte) error {
	v, err := ParseByteSize(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// MarshalText implements encoding.TextMarshaler with the exact binary unit
// when there is one ("64MiB"), else plain bytes.
func (b ByteSize) MarshalText() ([]byte, error) {
	return []byte(b.String()), nil
}

// String formats b as UnmarshalText reads it back: "64MiB", "1GiB", "4096"
// becomes "4KiB", and sizes that are no whole binary unit stay in bytes.
func (b ByteSize) String() string {
	n := int64(b)
	switch {
	case n != 0 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "GiB"
	case n != 0 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	case n != 0 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "KiB"
	}
	return strconv.FormatInt(n, 10) + "B"
}
