package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse: any bytes either parse into a valid Config or fail with a
// *Error; Parse never panics.
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("..", "..", "configs", "fieldgate.toml")); err == nil {
		f.Add(b)
	}
	f.Add([]byte(minimal))
	f.Add([]byte(manualBase))
	f.Add([]byte("[[sensor]]\nname=\"a\"\nkind=\"simulated\"\nvalues=[\"x\"]\n[sensor.sub]\nx=1\n"))
	f.Add([]byte("[time]\nsync_timeout = 5\n[state]\nspool_max_bytes = 1.5\n"))
	f.Add([]byte("a = [1"))
	f.Add([]byte("[provisioning]\npayload = { a = { b = [1, 2.5, \"x\", 1979-05-27T07:32:00Z] } }\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.toml")
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || len(e.Problems) == 0 {
				t.Fatalf("error %v (%T) is not a non-empty *Error", err, err)
			}
			_ = e.Error()
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a config Validate rejects: %v", err)
		}
	})
}

// FuzzExpandRegistrationID: any result is a valid registration id.
func FuzzExpandRegistrationID(f *testing.F) {
	f.Add("gw-{serial}", "10000000a1b2c3d4", "host")
	f.Add("{hostname}-{mac}", "", "My Host")
	f.Add("{", "x", "y")
	f.Fuzz(func(t *testing.T, tmpl, serial, host string) {
		id, err := ExpandRegistrationID(tmpl, HostFacts{Serial: serial, Hostname: host, MachineID: "m", MAC: "001122334455"})
		if err != nil {
			return
		}
		if err := ValidRegistrationID(id); err != nil {
			t.Fatalf("ExpandRegistrationID(%q) = %q, invalid: %v", tmpl, id, err)
		}
	})
}

// FuzzParseByteSize: accepted sizes are non-negative and round-trip.
func FuzzParseByteSize(f *testing.F) {
	for _, s := range []string{"64MiB", "4KB", "1.5MiB", "-1", "1e30", "0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseByteSize(s)
		if err != nil {
			return
		}
		if b < 0 {
			t.Fatalf("ParseByteSize(%q) = %d", s, b)
		}
		back, err := ParseByteSize(b.String())
		if err != nil || back != b {
			t.Fatalf("round trip %q → %d → %q → %d, %v", s, b, b.String(), back, err)
		}
	})
}

// FuzzHostFactParsers: whatever /proc/cpuinfo or a MAC address file holds,
// the extracted fact is empty or usable in a registration id.
func FuzzHostFactParsers(f *testing.F) {
	f.Add([]byte(piCPUInfo), "dc:a6:32:01:02:03")
	f.Add([]byte("Serial : \x00\xff/..\n"), "00:00:00:00:00:00")
	f.Fuzz(func(t *testing.T, cpuinfo []byte, mac string) {
		if s := cpuinfoSerial(cpuinfo); s != "" {
			if err := ValidRegistrationID("x" + s + "x"); err != nil {
				t.Fatalf("serial %q: %v", s, err)
			}
		}
		if m := parseMAC(mac); m != "" && (len(m) != 12 || !isHex(m)) {
			t.Fatalf("parseMAC(%q) = %q", mac, m)
		}
	})
}
