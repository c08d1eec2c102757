package doctor

import (
	"strings"
	"testing"
	"time"
)

func TestTokenSanity(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	ttl := time.Hour
	tests := []struct {
		name      string
		exp, sys  time.Time
		want      Status
		detailHas string
	}{
		{"good", now.Add(ttl), now, OK, "corrected - system clock = 0s"},
		{"corrected clock ahead, still fine", now.Add(ttl), now.Add(-2 * time.Second), OK, "2s"},
		{"already expired", now, now, Fail, "not after the corrected clock"},
		{"beyond ttl", now.Add(2 * ttl), now, Fail, "beyond token_ttl"},
		{"past on the system clock", now.Add(ttl), now.Add(2 * ttl), Fail, "already past on the system clock"},
		{"system clock far behind", now.Add(ttl), now.Add(-time.Hour), Warn, "more than token_ttl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, st, detail, fix := tokenSanity(tt.exp, now, tt.sys, ttl)
			if name != "token" || st != tt.want || !strings.Contains(detail, tt.detailHas) {
				t.Errorf("tokenSanity = %s %s %q %q; want %s with %q", name, st, detail, fix, tt.want, tt.detailHas)
			}
			if st != OK && fix == "" {
				t.Errorf("%s without a fix", st)
			}
		})
	}
}

func TestHostPort(t *testing.T) {
	tests := []struct {
		name, in, def, host, port string
	}{
		{"dps url", "https://global.azure-devices-provisioning.net", "443", "global.azure-devices-provisioning.net", "443"},
		{"url with port", "https://127.0.0.1:8443/", "443", "127.0.0.1", "8443"},
		{"hub host", "myhub.azure-devices.net", "8883", "myhub.azure-devices.net", "8883"},
		{"hub host with port", "localhost:18883", "8883", "localhost", "18883"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, p := hostPort(tt.in, tt.def)
			if h != tt.host || p != tt.port {
				t.Errorf("hostPort(%q) = %q %q; want %q %q", tt.in, h, p, tt.host, tt.port)
			}
		})
	}
}

// FuzzHostPort: endpoint and hub names come from the config file and the
// DPS answer; splitting them never panics and never invents a port.
func FuzzHostPort(f *testing.F) {
	for _, s := range []string{"https://a.example:443/x", "hub.example", "h:1", "[::1]:8883", "://", "%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, p := hostPort(s, "8883")
		if p == "" && !strings.Contains(s, ":") {
			t.Errorf("hostPort(%q) lost the default port", s)
		}
	})
}
