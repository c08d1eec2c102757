package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeRoot writes files (path relative to root → content) under a temp dir.
func fakeRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for rel, content := range files {
		p := filepath.Join(root, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const piCPUInfo = `processor	: 0
BogoMIPS	: 108.00
Features	: fp asimd evtstrm crc32 cpuid

Hardware	: BCM2835
Revision	: c03111
Serial		: 10000000A1B2C3D4
Model		: Raspberry Pi 4 Model B Rev 1.1
`

func TestReadHostFacts(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  HostFacts
	}{
		{
			name: "raspberry pi",
			files: map[string]string{
				"proc/cpuinfo":                      piCPUInfo,
				"etc/machine-id":                    "0123456789ABCDEF0123456789abcdef\n",
				"proc/sys/kernel/hostname":          "gw-north\n",
				"sys/class/net/lo/address":          "00:00:00:00:00:00\n",
				"sys/class/net/docker0/address":     "02:42:ac:11:00:01\n",
				"sys/class/net/eth0/address":        "DC:A6:32:01:02:03\n",
				"sys/class/net/eth0/device/vendor":  "0x14e4\n",
				"sys/class/net/wlan0/address":       "dc:a6:32:01:02:04\n",
				"sys/class/net/wlan0/device/vendor": "0x02d0\n",
			},
			want: HostFacts{Serial: "10000000a1b2c3d4", MachineID: "0123456789abcdef0123456789abcdef", Hostname: "gw-north", MAC: "dca632010203"},
		},
		{
			name: "device tree serial, /etc/hostname, virtual interface only",
			files: map[string]string{
				"proc/cpuinfo": "processor\t: 0\nSerial\t\t: 0000000000000000\n",
				"sys/firmware/devicetree/base/serial-number": "1a2b3c4d5e6f\x00",
				"etc/hostname":                   "board\n",
				"sys/class/net/veth1/address":    "0a:00:00:00:00:01\n",
				"sys/class/net/broken/address":   "zz\n",
				"sys/class/net/zero/address":     "00:00:00:00:00:00\n",
				"sys/class/net/ipip0/address":    "00:00:00:00\n",
				"etc/machine-id":                 "uninitialized\n",
				"proc/sys/kernel/hostname_other": "x",
			},
			want: HostFacts{Serial: "1a2b3c4d5e6f", Hostname: "board", MAC: "0a0000000001"},
		},
		{
			name:  "nothing known",
			files: map[string]string{"etc/os-release": "ID=debian\n"},
			want:  HostFacts{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadHostFacts(fakeRoot(t, tt.files))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("ReadHostFacts = %+v, want %+v", got, tt.want)
			}
		})
	}
	t.Run("missing root", func(t *testing.T) {
		if _, err := ReadHostFacts(filepath.Join(t.TempDir(), "nope")); err == nil || !strings.HasPrefix(err.Error(), "config: ") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("root is a file", func(t *testing.T) {
		root := fakeRoot(t, map[string]string{"f": "x"})
		if _, err := ReadHostFacts(filepath.Join(root, "f")); err == nil {
			t.Fatal("no error")
		}
	})
	t.Run("real host does not fail", func(t *testing.T) {
		if _, err := ReadHostFacts("/"); err != nil {
			t.Fatal(err)
		}
	})
}

func TestExpandRegistrationID(t *testing.T) {
	facts := HostFacts{Serial: "10000000a1b2c3d4", MachineID: "0123456789abcdef0123456789abcdef", Hostname: "GW-North", MAC: "dca632010203"}
	tests := []struct {
		name, tmpl string
		facts      HostFacts
		want       string
		wantErr    []string
	}{
		{"serial", "gw-{serial}", facts, "gw-10000000a1b2c3d4", nil},
		{"all placeholders", "{serial}.{machine_id}:{hostname}_{mac}", facts, "10000000a1b2c3d4.0123456789abcdef0123456789abcdef:gw-north_dca632010203", nil},
		{"literal lower-cased", "Site7-{mac}", facts, "site7-dca632010203", nil},
		{"no placeholders", "fieldgate-demo", HostFacts{}, "fieldgate-demo", nil},
		{"ends with dash", "{mac}-", facts, "dca632010203-", nil},
		{"missing serial", "gw-{serial}", HostFacts{MachineID: "x"}, "", []string{"{serial}", "no board serial", "{machine_id} on non-Pi boards"}},
		{"missing machine id", "{machine_id}", HostFacts{}, "", []string{"{machine_id}", "systemd-machine-id-setup"}},
		{"missing hostname", "{hostname}", HostFacts{}, "", []string{"{hostname}", "hostnamectl"}},
		{"missing mac", "{mac}", HostFacts{}, "", []string{"{mac}", "/sys/class/net"}},
		{"unknown placeholder", "gw-{uuid}", facts, "", []string{"unknown placeholder {uuid}"}},
		{"unbalanced", "gw-{serial", facts, "", []string{"without '}'"}},
		{"stray close", "gw-}", facts, "", []string{"without '{'"}},
		{"nested", "gw-{{serial}}", facts, "", []string{"without '}'"}},
		{"too long", strings.Repeat("a", 120) + "-{serial}", facts, "", []string{"limit is 128"}},
		{"bad char from fact", "{hostname}", HostFacts{Hostname: "my host"}, "", []string{`' '`}},
		{"bad ending", "{serial}.", facts, "", []string{"must end"}},
		{"empty", "", facts, "", []string{"empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ExpandRegistrationID(tt.tmpl, tt.facts)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("ExpandRegistrationID(%q) = %q, want error", tt.tmpl, got)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Fatalf("error %q does not contain %q", err, w)
					}
				}
				if !strings.HasPrefix(err.Error(), "config: ") {
					t.Fatalf("error %q lacks the component prefix", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ExpandRegistrationID(%q) = %q, %v; want %q", tt.tmpl, got, err, tt.want)
			}
			if err := ValidRegistrationID(got); err != nil {
				t.Fatalf("result %q is invalid: %v", got, err)
			}
		})
	}
}

// TestTemplateCheckAgreesWithExpansion: a template that validates expands
// without a character error when all facts are present and plain.
func TestTemplateCheckAgreesWithExpansion(t *testing.T) {
	facts := HostFacts{Serial: "abc", MachineID: "def", Hostname: "host", MAC: "001122334455"}
	for _, tmpl := range []string{"gw-{serial}", "A.B:{mac}", "x_{hostname}-", "{machine_id}"} {
		t.Run(tmpl, func(t *testing.T) {
			if msg, _ := checkRegistrationTemplate(tmpl); msg != "" {
				t.Fatalf("check: %s", msg)
			}
			if _, err := ExpandRegistrationID(tmpl, facts); err != nil {
				t.Fatal(err)
			}
		})
	}
}
