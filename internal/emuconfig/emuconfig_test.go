package emuconfig

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const (
	keyA = "c2VjcmV0LWtleS1hLXNlY3JldC1rZXktYS1zZWNyZXQ=" // base64 test keys
	keyB = "a2V5LWJrZXktYmtleS1ia2V5LWJrZXktYmtleS1iMDE="
)

const minimal = `
id_scope = "0ne00012AB3"
[service_policy]
key = "` + keyA + `"
`

func TestParseDefaults(t *testing.T) {
	cfg, err := Parse([]byte(minimal), "/etc/emu")
	if err != nil {
		t.Fatalf("Parse(minimal): %v", err)
	}
	want := &Config{
		HubHost:       "localhost",
		IDScope:       "0ne00012AB3",
		MQTTAddr:      "127.0.0.1:8883",
		HTTPSAddr:     "127.0.0.1:8443",
		StateDir:      "/etc/emu/state",
		CAFile:        "/etc/emu/ca.pem",
		CAKeyFile:     "/etc/emu/ca-key.pem",
		DPSRetryAfter: 3,
		ServicePolicy: Policy{Name: "iothubowner", Key: keyA},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("Parse(minimal) =\n%+v\nwant\n%+v", cfg, want)
	}
}

func TestParseFull(t *testing.T) {
	doc := `
hub_host = "hub.local"
id_scope = "0ne00012AB3"
mqtt_addr = "0.0.0.0:18883"
https_addr = "[::1]:0"
state_dir = "/var/lib/emu"
ca_file = "certs/ca.pem"
ca_key_file = "/secrets/ca-key.pem"
token_grace = "5m"
dps_retry_after = 1

[service_policy]
name = "service"
key = "` + keyA + `"

[[enrollment_group]]
id = "default"
key = "` + keyA + `"

[[enrollment_group]]
id = "off"
key = "` + keyB + `"
disabled = true

[[enrollment]]
registration_id = "sensor-001"
key = "` + keyB + `"

[[enrollment]]
registration_id = "sensor-002"
key = "` + keyB + `"
device_id = "dev-2"
disabled = true

[[device]]
id = "plain"
key = "` + keyA + `"
`
	cfg, err := Parse([]byte(doc), "/base")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := &Config{
		HubHost: "hub.local", IDScope: "0ne00012AB3", MQTTAddr: "0.0.0.0:18883", HTTPSAddr: "[::1]:0",
		StateDir: "/var/lib/emu", CAFile: "/base/certs/ca.pem", CAKeyFile: "/secrets/ca-key.pem",
		TokenGrace: 5 * time.Minute, DPSRetryAfter: 1,
		ServicePolicy: Policy{Name: "service", Key: keyA},
		EnrollmentGroups: []EnrollmentGroup{
			{ID: "default", Key: keyA},
			{ID: "off", Key: keyB, Disabled: true},
		},
		Enrollments: []Enrollment{
			{RegistrationID: "sensor-001", Key: keyB, DeviceID: "sensor-001"},
			{RegistrationID: "sensor-002", Key: keyB, DeviceID: "dev-2", Disabled: true},
		},
		Devices: []Device{{ID: "plain", Key: keyA}},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("Parse =\n%+v\nwant\n%+v", cfg, want)
	}
}

func TestParseErrors(t *testing.T) {
	policy := "[service_policy]\nkey = \"" + keyA + "\"\n"
	tests := []struct {
		name string
		doc  string
		want []string // each must appear in the error text
		n    int      // number of FieldErrors
	}{
		{"missing id_scope and policy key", "", []string{"id_scope: missing", "service_policy.key: missing"}, 2},
		{"bad id scope", "id_scope = \"0ne-x\"\n" + policy, []string{`line 1: id_scope = "0ne-x": must be 1 to 64 letters and digits`}, 1},
		{"unknown keys", "id_scope = \"s\"\nhub_hots = \"x\"\n[extra]\na = 1\n" + policy, []string{"line 2: hub_hots: unknown key", "line 3: extra: unknown key"}, 2},
		{"bad duration", "id_scope = \"s\"\ntoken_grace = \"5 minutes\"\n" + policy, []string{"line 2", "token_grace", "not a duration"}, 1},
		{"negative duration", "id_scope = \"s\"\ntoken_grace = \"-1s\"\n" + policy, []string{`line 2: token_grace = "-1s": is negative`}, 1},
		{"syntax", "id_scope = \n", []string{"line 1", "fix the TOML syntax"}, 1},
		{"wrong type", "id_scope = 5\n", []string{"line 1", "id_scope"}, 1},
		{"bad addrs", "id_scope = \"s\"\nmqtt_addr = \"8883\"\nhttps_addr = \"127.0.0.1:99999\"\n" + policy,
			[]string{`line 2: mqtt_addr = "8883": is not host:port`, `line 3: https_addr = "127.0.0.1:99999": port "99999"`}, 2},
		{"same addrs", "id_scope = \"s\"\nmqtt_addr = \"127.0.0.1:1\"\nhttps_addr = \"127.0.0.1:1\"\n" + policy, []string{"line 3: https_addr", "same address"}, 1},
		{"retry after range", "id_scope = \"s\"\ndps_retry_after = 0\n" + policy, []string{"line 2: dps_retry_after = 0: must be between 1 and 300"}, 1},
		{"bad hub host", "id_scope = \"s\"\nhub_host = \"localhost:8883\"\n" + policy, []string{"line 2: hub_host", "is not a host name"}, 1},
		{"bad policy key", "id_scope = \"s\"\n[service_policy]\nkey = \"not base64!\"\n", []string{"line 3: service_policy.key: is not a valid base64 key"}, 1},
		{"enrollment problems", "id_scope = \"s\"\n" + policy +
			"[[enrollment]]\nregistration_id = \"ok-1\"\nkey = \"" + keyA + "\"\n" +
			"[[enrollment]]\nregistration_id = \"OK-1\"\nkey = \"" + keyA + "\"\ndevice_id = \"has space\"\n" +
			"[[enrollment]]\nregistration_id = \"bad/id\"\n",
			[]string{
				`line 8: enrollment[1].registration_id = "OK-1": duplicates enrollment[0].registration_id`,
				`line 10: enrollment[1].device_id = "has space": is not a valid IoT Hub device id`,
				`line 12: enrollment[2].registration_id = "bad/id"`,
				`line 11: enrollment[2].key: missing`,
			}, 4},
		{"group and device problems", "id_scope = \"s\"\n" + policy +
			"[[enrollment_group]]\nid = \"g\"\nkey = \"" + keyA + "\"\n" +
			"[[enrollment_group]]\nid = \"G\"\nkey = \"%%%\"\n" +
			"[[device]]\nkey = \"" + keyA + "\"\n",
			[]string{
				`line 8: enrollment_group[1].id = "G": duplicates enrollment_group[0].id`,
				`line 9: enrollment_group[1].key: is not a valid base64 key`,
				`line 10: device[0].id: missing`,
			}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc), "/base")
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("Parse error = %v (%T); want *Error", err, err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "emuconfig: ") {
				t.Errorf("error %q lacks the component prefix", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error text lacks %q:\n%s", w, msg)
				}
			}
			if len(ce.Errors) != tt.n {
				t.Errorf("got %d field errors; want %d (all errors at once):\n%s", len(ce.Errors), tt.n, msg)
			}
			if strings.Contains(msg, keyA) || strings.Contains(msg, keyB) || strings.Contains(msg, "not base64!") {
				t.Errorf("error text reveals a key:\n%s", msg)
			}
		})
	}
}

func TestLoadResolvesRelativeToFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "emulator.toml")
	if err := os.WriteFile(path, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "state"); cfg.StateDir != want {
		t.Errorf("StateDir = %q; want %q", cfg.StateDir, want)
	}
	if _, err := Load(filepath.Join(dir, "missing.toml")); err == nil || !strings.Contains(err.Error(), "fieldgate-emulator init") {
		t.Errorf("Load(missing) error = %v; want a hint to run init", err)
	}
	if err := os.WriteFile(path, []byte("id_scope = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(path)
	if err == nil || !strings.Contains(err.Error(), path+": line 1") {
		t.Errorf("Load(bad) error = %v; want it to name the file and line", err)
	}
}

func TestWriteRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "emulator.toml")
	cfg := &Config{
		HubHost: "localhost", IDScope: "0ne00012AB3", MQTTAddr: "127.0.0.1:8883", HTTPSAddr: "127.0.0.1:8443",
		StateDir: "state", CAFile: "ca.pem", CAKeyFile: "ca-key.pem", TokenGrace: 90 * time.Second, DPSRetryAfter: 2,
		ServicePolicy:    Policy{Name: "iothubowner", Key: keyA},
		EnrollmentGroups: []EnrollmentGroup{{ID: "default", Key: keyB}, {ID: "x", Key: keyA, Disabled: true}},
		Enrollments:      []Enrollment{{RegistrationID: "r1", Key: keyA, DeviceID: "d1", Disabled: true}},
		Devices:          []Device{{ID: "d2", Key: keyB}},
	}
	if err := Write(path, cfg); err != nil {
		t.Fatalf("Write: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %o; want 600", fi.Mode().Perm())
	}
	got, err := Load(path)
	if err != nil {
		t.Fatalf("Load(written): %v", err)
	}
	want := *cfg
	want.StateDir, want.CAFile, want.CAKeyFile = filepath.Join(dir, "state"), filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if !reflect.DeepEqual(got, &want) {
		t.Fatalf("round trip =\n%+v\nwant\n%+v", got, &want)
	}
	bad := *cfg
	bad.IDScope = ""
	if err := Write(filepath.Join(dir, "bad.toml"), &bad); err == nil {
		t.Error("Write(invalid) succeeded; want error")
	}
	if _, err := os.Stat(filepath.Join(dir, "bad.toml")); !errors.Is(err, os.ErrNotExist) {
		t.Error("Write(invalid) left a file behind")
	}
}

func TestQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", `"plain"`},
		{`a"b\c`, `"a\"b\\c"`},
		{"tab\tnl\ncr\r", `"tab\tnl\ncr\r"`},
		{"\x00\x1f\x7f", `"\u0000\u001F\u007F"`},
		{"héllo ☃", `"héllo ☃"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := quote(tt.in); got != tt.want {
				t.Fatalf("quote(%q) = %s; want %s", tt.in, got, tt.want)
			}
		})
	}
}

// FuzzParse checks that Parse never panics and that every configuration it
// accepts survives Marshal and Parse unchanged.
func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte("id_scope = \"x\"\nstate_dir = \"a\\\"b\\u0001\"\n[service_policy]\nkey=\"" + keyA + "\"\n[[enrollment]]\nregistration_id=\"r\"\nkey=\"" + keyB + "\"\n"))
	f.Add([]byte("[[device]]\nid = 1\n"))
	f.Add([]byte("token_grace = \"1h\"\n[[enrollment_group]]\n[[enrollment_group]]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, "/base")
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Errors) == 0 {
				t.Fatalf("Parse error %v is not a non-empty *Error", err)
			}
			return
		}
		again, err := Parse(Marshal(cfg), "/base")
		if err != nil {
			t.Fatalf("Parse(Marshal(cfg)): %v\n%s", err, Marshal(cfg))
		}
		if !reflect.DeepEqual(cfg, again) {
			t.Fatalf("round trip changed the config:\n%+v\n%+v", cfg, again)
		}
	})
}
