package emuconfig

import (
	"github.com/fieldgate/fieldgate/internal/atomicfile"

	"bytes"
	"fmt"
	"path/filepath"
	"strconv"
	"time"
	"unicode/utf8"
)

// Marshal renders cfg as a commented emulator.toml. Paths are written as
// given (relative paths stay relative to the file's directory). The result
// contains keys: treat it as a secret.
func Marshal(cfg *Config) []byte {
	var b bytes.Buffer
	kv := func(key, val, comment string) {
		line := key + " = " + val
		if comment != "" {
			line = fmt.Sprintf("%-40s # %s", line, comment)
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	b.WriteString("# fieldgate-emulator configuration (see docs/emulator.md).\n")
	b.WriteString("# It holds keys: keep it private (mode 0600). Relative paths are relative to this file.\n\n")
	kv("hub_host", quote(cfg.HubHost), "host name devices connect to and sign tokens for")
	kv("id_scope", quote(cfg.IDScope), "DPS ID scope")
	kv("mqtt_addr", quote(cfg.MQTTAddr), "MQTT over TLS (IoT Hub device API)")
	kv("https_addr", quote(cfg.HTTPSAddr), "DPS, MQTT over WebSocket, service API")
	kv("state_dir", quote(cfg.StateDir), "registry, twins, C2D queues, telemetry log")
	kv("ca_file", quote(cfg.CAFile), "CA certificate: give it to devices and SDKs")
	kv("ca_key_file", quote(cfg.CAKeyFile), "CA private key (0600)")
	kv("token_grace", quote(formatDuration(cfg.TokenGrace)), "how long a connection may outlive its token")
	retry := cfg.DPSRetryAfter
	if retry == 0 {
		retry = DefaultDPSRetryAfter
	}
	kv("dps_retry_after", strconv.Itoa(retry), "seconds, Retry-After while DPS is assigning")

	b.WriteString("\n# Shared access policy for the service API (sr = hub_host, skn = name).\n[service_policy]\n")
	name := cfg.ServicePolicy.Name
	if name == "" {
		name = DefaultServicePolicyName
	}
	kv("name", quote(name), "")
	kv("key", quote(cfg.ServicePolicy.Key), "")

	if len(cfg.EnrollmentGroups) > 0 {
		b.WriteString("\n# DPS symmetric-key enrollment groups: device key = HMAC-SHA256(group key, registration id).\n")
	}
	for _, g := range cfg.EnrollmentGroups {
		b.WriteString("[[enrollment_group]]\n")
		kv("id", quote(g.ID), "")
		kv("key", quote(g.Key), "")
		if g.Disabled {
			kv("disabled", "true", "")
		}
	}
	if len(cfg.Enrollments) > 0 {
		b.WriteString("\n# DPS individual enrollments.\n")
	} else {
		b.WriteString("\n# DPS individual enrollments, e.g.:\n# [[enrollment]]\n# registration_id = \"sensor-001\"\n# key = \"…base64…\"\n# device_id = \"sensor-001\"   # optional, defaults to registration_id\n")
	}
	for _, e := range cfg.Enrollments {
		b.WriteString("[[enrollment]]\n")
		kv("registration_id", quote(e.RegistrationID), "")
		kv("key", quote(e.Key), "")
		if e.DeviceID != "" {
			kv("device_id", quote(e.DeviceID), "")
		}
		if e.Disabled {
			kv("disabled", "true", "")
		}
	}
	if len(cfg.Devices) > 0 {
		b.WriteString("\n# Devices registered in the hub without DPS.\n")
	} else {
		b.WriteString("\n# Devices registered in the hub without DPS, e.g.:\n# [[device]]\n# id = \"sensor-002\"\n# key = \"…base64…\"\n")
	}
	for _, d := range cfg.Devices {
		b.WriteString("[[device]]\n")
		kv("id", quote(d.ID), "")
		kv("key", quote(d.Key), "")
	}
	return b.Bytes()
}

// Write validates cfg (as Load would read it back) and writes it to path with
// mode 0600, atomically. It overwrites an existing file; callers that must
// not do so check first.
func Write(path string, cfg *Config) error {
	data := Marshal(cfg)
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("emuconfig: write %s: %w", path, err)
	}
	if _, err := Parse(data, filepath.Dir(abs)); err != nil {
		return fmt.Errorf("emuconfig: refusing to write an invalid configuration to %s: %w", path, err)
	}
	return atomicfile.Write(path, data, 0o600)
}

// formatDuration writes d so that time.ParseDuration reads it back.
func formatDuration(d time.Duration) string {
	return d.String()
}

// quote renders s as a TOML basic string.
func quote(s string) string {
	var b bytes.Buffer
	b.WriteByte('"')
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		case r == utf8.RuneError && size == 1:
			b.WriteString(`\uFFFD`)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	b.WriteByte('"')
	return b.String()
}
