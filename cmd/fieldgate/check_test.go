package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// checkKey is the content of every test key file; it must never be printed.
const checkKey = "c2VjcmV0LWRldmljZS1rZXktbmV2ZXItcHJpbnQtbWU="

type checkEnv struct {
	dir  string
	vars map[string]string
}

// newCheckEnv makes a scratch dir with a 0600 key file and points hostRoot at
// a fake host whose board serial is 10000000a1b2c3d4.
func newCheckEnv(t *testing.T) *checkEnv {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "host")
	for rel, content := range map[string]string{
		"proc/cpuinfo":             "processor\t: 0\nSerial\t\t: 10000000A1B2C3D4\n",
		"etc/machine-id":           "0123456789abcdef0123456789abcdef\n",
		"proc/sys/kernel/hostname": "gw-test\n",
	} {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := hostRoot
	hostRoot = root
	t.Cleanup(func() { hostRoot = old })
	writeFile(t, filepath.Join(dir, "device.key"), checkKey+"\n", 0o600)
	return &checkEnv{dir: dir, vars: map[string]string{}}
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // umask-proof
		t.Fatal(err)
	}
}

// config writes body as config.toml in the scratch dir and returns its path.
func (c *checkEnv) config(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(c.dir, "config.toml")
	writeFile(t, p, body, 0o644)
	return p
}

func (c *checkEnv) run(t *testing.T, args ...string) cliResult {
	t.Helper()
	var out, errOut bytes.Buffer
	e := &env{
		Stdin:  strings.NewReader(""),
		Stdout: &out,
		Stderr: &errOut,
		Getenv: func(k string) string { return c.vars[k] },
		now:    func() time.Time { return cliTestNow },
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code := runMain(ctx, append([]string{"check"}, args...), e)
	r := cliResult{code: code, stdout: out.String(), stderr: errOut.String()}
	if strings.Contains(r.stdout+r.stderr, checkKey) {
		t.Fatalf("the key was printed:\n%s\n%s", r.stdout, r.stderr)
	}
	return r
}

const checkDPS = `
[state]
dir = "state"
[provisioning]
id_scope = "0ne00000A0A"
registration_id = "gw-{serial}"
payload = { site = "plant-7", line = 2 }
[provisioning.attestation]
key_file = "device.key"
[[sensor]]
name = "env"
kind = "simulated"
interval = "10s"
values = ["temperature_c", "humidity_pct"]
[[sensor]]
name = "power"
kind = "simulated"
values = ["voltage_v"]
`

func TestCheckPlan(t *testing.T) {
	c := newCheckEnv(t)
	path := c.config(t, checkDPS)
	r := c.run(t, "--config", path)
	if r.code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{
		"config " + path + ": valid",
		"DPS at https://global.azure-devices-provisioning.net",
		"0ne00000A0A",
		`gw-10000000a1b2c3d4 (from "gw-{serial}")`,
		"keys line, site",
		"key_file " + filepath.Join(c.dir, "device.key") + " (ok)",
		"assigned by DPS",
		"fresh token after 48m",
		"keep-alive", "4m",
		"system roots, TLS 1.2 or later",
		"pool.ntp.org",
		"timeout 5s, every 15m",
		filepath.Join(c.dir, "state") + " (will be created)",
		"64MiB",
		"every 10s",
		"every 30s (telemetry.interval)",
		"temperature_c, humidity_pct",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("plan lacks %q:\n%s", want, r.stdout)
		}
	}
	if r.stderr != "" {
		t.Errorf("stderr = %q", r.stderr)
	}
}

func TestCheckJSON(t *testing.T) {
	c := newCheckEnv(t)
	path := c.config(t, checkDPS)
	r := c.run(t, "--config", path, "--json")
	if r.code != exitOK {
		t.Fatalf("exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	var rep checkReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, r.stdout)
	}
	p := rep.Plan
	checks := []struct {
		name      string
		got, want any
	}{
		{"ok", rep.OK, true},
		{"registration id", p.Provisioning.RegistrationID, "gw-10000000a1b2c3d4"},
		{"key source", p.Key.Source, "key_file"},
		{"key status", p.Key.Status, "ok"},
		{"transport", p.Hub.Transport, "mqtt"},
		{"refresh", p.Hub.RefreshAfter, "48m"},
		{"spool", p.State.SpoolMaxBytes, int64(64 << 20)},
		{"sensors", len(p.Sensors), 2},
		{"inherited", p.Sensors[1].Inherited, true},
		{"ntp", strings.Join(p.Time.NTPServers, ","), "pool.ntp.org"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestCheckHostProblems(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, c *checkEnv) string // returns the config
		want    []string
		wantKey string // JSON key status
	}{
		{
			name: "key file readable by others",
			setup: func(t *testing.T, c *checkEnv) string {
				writeFile(t, filepath.Join(c.dir, "device.key"), checkKey, 0o644)
				return checkDPS
			},
			want:    []string{"mode 0644", "chmod 600"},
			wantKey: "unsafe permissions 0644",
		},
		{
			name: "key file missing",
			setup: func(t *testing.T, c *checkEnv) string {
				return strings.Replace(checkDPS, `key_file = "device.key"`, `key_file = "nope.key"`, 1)
			},
			want:    []string{"nope.key does not exist", "chmod 600"},
			wantKey: "missing",
		},
		{
			name: "no board serial",
			setup: func(t *testing.T, c *checkEnv) string {
				if err := os.Remove(filepath.Join(hostRoot, "proc", "cpuinfo")); err != nil {
					t.Fatal(err)
				}
				return checkDPS
			},
			want:    []string{"{serial}", "{machine_id} on non-Pi boards"},
			wantKey: "ok",
		},
		{
			name: "ca file without certificates",
			setup: func(t *testing.T, c *checkEnv) string {
				writeFile(t, filepath.Join(c.dir, "ca.pem"), "not a certificate\n", 0o644)
				return checkDPS + "[hub]\nca_file = \"ca.pem\"\n"
			},
			want:    []string{"hub.ca_file", "no PEM certificate"},
			wantKey: "ok",
		},
		{
			name: "ca file missing",
			setup: func(t *testing.T, c *checkEnv) string {
				return checkDPS + "[hub]\nca_file = \"missing.pem\"\n"
			},
			want:    []string{"hub.ca_file", "missing.pem"},
			wantKey: "ok",
		},
		{
			name: "state dir is a file",
			setup: func(t *testing.T, c *checkEnv) string {
				writeFile(t, filepath.Join(c.dir, "state"), "", 0o644)
				return checkDPS
			},
			want:    []string{"not a directory"},
			wantKey: "ok",
		},
		{
			name: "credential missing from the credentials directory",
			setup: func(t *testing.T, c *checkEnv) string {
				c.vars["CREDENTIALS_DIRECTORY"] = c.dir
				return strings.Replace(checkDPS, `key_file = "device.key"`, `key_credential = "fieldgate-key"`, 1)
			},
			want:    []string{`key_credential "fieldgate-key"`, "LoadCredential="},
			wantKey: "missing",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCheckEnv(t)
			path := c.config(t, tt.setup(t, c))
			r := c.run(t, "--config", path)
			if r.code != exitError {
				t.Fatalf("exit %d, want 1\n%s%s", r.code, r.stdout, r.stderr)
			}
			if !strings.Contains(r.stdout, "problems on this host:") || !strings.Contains(r.stderr, "must be fixed before it can run") {
				t.Fatalf("stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("output lacks %q:\n%s", w, r.stdout)
				}
			}
			r = c.run(t, "--config", path, "--json")
			var rep checkReport
			if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, r.stdout)
			}
			if r.code != exitError || rep.OK || len(rep.Plan.Failures) == 0 || rep.Plan.Key.Status != tt.wantKey {
				t.Fatalf("json exit %d ok %v failures %v key status %q", r.code, rep.OK, rep.Plan.Failures, rep.Plan.Key.Status)
			}
		})
	}
}

func TestCheckVariants(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, c *checkEnv) string
		want  []string
	}{
		{
			name: "manual over websocket",
			setup: func(t *testing.T, c *checkEnv) string {
				return "[provisioning]\nsource = \"manual\"\nhub_host = \"myhub.azure-devices.net\"\ndevice_id = \"gw-1\"\n" +
					"[provisioning.attestation]\nkey_file = \"device.key\"\n[hub]\ntransport = \"mqtt-ws\"\n"
			},
			want: []string{"wss://myhub.azure-devices.net/$iothub/websocket", "hub host", "gw-1", "no [[sensor]] configured"},
		},
		{
			name: "manual with port",
			setup: func(t *testing.T, c *checkEnv) string {
				return "[provisioning]\nsource = \"manual\"\nhub_host = \"localhost:8884\"\ndevice_id = \"gw-1\"\n" +
					"[provisioning.attestation]\nkey_file = \"device.key\"\n"
			},
			want: []string{"mqtts://localhost:8884"},
		},
		{
			name: "group key and emulator CA, system clock trusted",
			setup: func(t *testing.T, c *checkEnv) string {
				writeFile(t, filepath.Join(c.dir, "group.key"), checkKey, 0o400)
				writeFile(t, filepath.Join(c.dir, "ca.pem"), testCAPEM(t), 0o644)
				return strings.Replace(checkDPS, `key_file = "device.key"`, `group_key_file = "group.key"`, 1) +
					"[hub]\nca_file = \"ca.pem\"\nmodel_id = \"dtmi:com:example:Gateway;1\"\n[time]\nntp_servers = []\nstep_system_clock = true\n"
			},
			want: []string{"group_key_file", "derived from it", "derive-key", "(1 certificate)", "system clock is trusted", "CAP_SYS_TIME", "dtmi:com:example:Gateway;1"},
		},
		{
			name: "credential outside systemd",
			setup: func(t *testing.T, c *checkEnv) string {
				return strings.Replace(checkDPS, `key_file = "device.key"`, `key_credential = "fieldgate-key"`, 1)
			},
			want: []string{"key_credential fieldgate-key (provided by systemd at run time)", "$CREDENTIALS_DIRECTORY"},
		},
		{
			name: "credential present",
			setup: func(t *testing.T, c *checkEnv) string {
				c.vars["CREDENTIALS_DIRECTORY"] = c.dir
				writeFile(t, filepath.Join(c.dir, "fieldgate-key"), checkKey, 0o400)
				return strings.Replace(checkDPS, `key_file = "device.key"`, `key_credential = "fieldgate-key"`, 1)
			},
			want: []string{"key_credential " + "CREDDIR/fieldgate-key (ok)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCheckEnv(t)
			path := c.config(t, tt.setup(t, c))
			r := c.run(t, "--config", path)
			if r.code != exitOK {
				t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
			for _, w := range tt.want {
				w = strings.ReplaceAll(w, "CREDDIR", c.dir)
				if !strings.Contains(r.stdout, w) {
					t.Errorf("output lacks %q:\n%s", w, r.stdout)
				}
			}
		})
	}
}

func TestCheckInvalidConfig(t *testing.T) {
	c := newCheckEnv(t)
	path := c.config(t, "log_level = \"loud\"\n[telemetry]\ninterval = \"0s\"\nintervall = \"1s\"\n")
	r := c.run(t, "--config", path)
	if r.code != exitError || r.stdout != "" {
		t.Fatalf("exit %d stdout %q", r.code, r.stdout)
	}
	for _, want := range []string{
		path + `:1: log_level = "loud": is not allowed`,
		path + `:3: telemetry.interval = "0s": must be at least 1s (e.g. "30s")`,
		path + `:4:1: telemetry.intervall: unknown key (did you mean "interval"?)`,
		"provisioning.id_scope: is required",
		"has 6 problems",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}

	r = c.run(t, "--config", path, "--json")
	var rep checkReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, r.stdout)
	}
	if r.code != exitError || rep.OK || rep.Plan != nil || len(rep.Problems) != 6 {
		t.Fatalf("json: exit %d ok %v plan %v problems %d", r.code, rep.OK, rep.Plan != nil, len(rep.Problems))
	}
	if p := rep.Problems[0]; p.Key != "log_level" || p.Line != 1 || p.Value != `"loud"` || p.Fix == "" {
		t.Fatalf("first problem = %+v", p)
	}
}

func TestCheckUnreadableConfig(t *testing.T) {
	c := newCheckEnv(t)
	missing := filepath.Join(c.dir, "missing.toml")
	r := c.run(t, "--config", missing)
	if r.code != exitError || !strings.Contains(r.stderr, "does not exist") {
		t.Fatalf("exit %d stderr %q", r.code, r.stderr)
	}
	r = c.run(t, "--config", missing, "--json")
	var rep checkReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != exitError || rep.OK || len(rep.Problems) != 1 {
		t.Fatalf("json: exit %d, %v, %+v", r.code, err, rep)
	}
	if r := c.run(t, "--config", missing, "extra"); r.code != exitUsage {
		t.Fatalf("positional argument: exit %d", r.code)
	}
}

// testCAPEM returns a self-signed CA certificate in PEM.
func testCAPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fieldgate test CA"},
		NotBefore:             cliTestNow.Add(-time.Hour),
		NotAfter:              cliTestNow.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
