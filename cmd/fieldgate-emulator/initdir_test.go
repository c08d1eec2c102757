package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/fieldgate/fieldgate/agent/config"
	"github.com/fieldgate/fieldgate/internal/devcert"
	"github.com/fieldgate/fieldgate/internal/emuconfig"
	"github.com/fieldgate/fieldgate/sas"
)

func testEnv(t *testing.T) (env, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	var out, errOut bytes.Buffer
	return env{stdout: &out, stderr: &errOut, clock: clockwork.NewRealClock(), random: rand.Reader}, &out, &errOut
}

func TestInitWritesLoadableDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "emu")
	now := time.Now()
	res, err := initDir(dir, false, now, rand.Reader)
	if err != nil {
		t.Fatalf("initDir: %v", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("DIR mode = %o; want 700", fi.Mode().Perm())
	}
	modes := map[string]os.FileMode{
		configFileName: 0o600, caKeyFileName: 0o600, groupKeyFileName: 0o600, serviceKeyName: 0o600, caFileName: 0o644, agentFileName: 0o644,
	}
	for name, want := range modes {
		t.Run("mode "+name, func(t *testing.T) {
			fi, err := os.Stat(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != want {
				t.Errorf("mode of %s = %o; want %o", name, got, want)
			}
		})
	}

	cfg, err := emuconfig.Load(res.Config)
	if err != nil {
		t.Fatalf("emulator.toml does not load: %v", err)
	}
	if !regexp.MustCompile(`^0ne[0-9A-F]{8}$`).MatchString(cfg.IDScope) {
		t.Errorf("id_scope = %q; want 0ne + 8 upper-case hex digits", cfg.IDScope)
	}
	if cfg.HubHost != "localhost" || cfg.ServicePolicy.Name != "iothubowner" {
		t.Errorf("hub_host, policy = %q, %q; want localhost, iothubowner", cfg.HubHost, cfg.ServicePolicy.Name)
	}
	if len(cfg.EnrollmentGroups) != 1 || cfg.EnrollmentGroups[0].ID != "default" {
		t.Fatalf("enrollment groups = %d; want one named default", len(cfg.EnrollmentGroups))
	}
	for name, k := range map[string]string{"policy": cfg.ServicePolicy.Key, "group": cfg.EnrollmentGroups[0].Key} {
		key, err := sas.ParseKey(k)
		if err != nil {
			t.Fatalf("%s key: %v", name, err)
		}
		if n := len(key.Base64()); n != 44 {
			t.Errorf("%s key is %d base64 chars; want 44 (32 bytes)", name, n)
		}
	}
	if cfg.ServicePolicy.Key == cfg.EnrollmentGroups[0].Key {
		t.Error("policy and group keys are equal; want independent random keys")
	}
	if cfg.StateDir != filepath.Join(dir, "state") || cfg.CAFile != filepath.Join(dir, caFileName) {
		t.Errorf("state_dir, ca_file = %q, %q; want them inside DIR", cfg.StateDir, cfg.CAFile)
	}

	gk, err := os.ReadFile(res.GroupKey)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(gk)) != cfg.EnrollmentGroups[0].Key {
		t.Error("group.key does not hold the default enrollment group's key")
	}
	sk, err := os.ReadFile(res.ServiceKey)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(sk)) != cfg.ServicePolicy.Key {
		t.Error("service.key does not hold the service policy key")
	}

	ca, err := devcert.LoadCA(cfg.CAFile, cfg.CAKeyFile)
	if err != nil {
		t.Fatalf("CA does not load: %v", err)
	}
	srv, err := ca.Issue([]string{cfg.HubHost}, now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	pemCA, _ := os.ReadFile(res.CA)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemCA) {
		t.Fatal("ca.pem holds no certificate")
	}
	if _, err := srv.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost", CurrentTime: now}); err != nil {
		t.Fatalf("server certificate from the CA does not verify against ca.pem: %v", err)
	}

	data, err := os.ReadFile(res.AgentTOML)
	if err != nil {
		t.Fatal(err)
	}
	ac, err := config.Parse(data, res.AgentTOML)
	if err != nil {
		t.Fatalf("agent.toml is not a valid agent configuration: %v\n%s", err, data)
	}
	if len(ac.Sensors) != 2 {
		t.Fatalf("agent.toml has %d sensors; want 2", len(ac.Sensors))
	}
	checks := []struct{ name, got, want string }{
		{"log_level", ac.LogLevel, "info"},
		{"state.dir", ac.State.Dir, filepath.Join(dir, agentStateName)},
		{"provisioning.source", ac.Provisioning.Source, "dps"},
		{"provisioning.global_endpoint", ac.Provisioning.GlobalEndpoint, "https://localhost:8443"},
		{"provisioning.id_scope", ac.Provisioning.IDScope, cfg.IDScope},
		{"provisioning.registration_id", ac.Provisioning.RegistrationID, demoRegistration},
		{"provisioning.attestation.method", ac.Provisioning.Attestation.Method, "symmetric_key"},
		{"provisioning.attestation.group_key_file", ac.Provisioning.Attestation.GroupKeyFile, res.GroupKey},
		{"hub.ca_file", ac.Hub.CAFile, res.CA},
		{"hub.token_ttl", ac.Hub.TokenTTL.D().String(), "1h0m0s"},
		{"telemetry.interval", ac.Telemetry.Interval.D().String(), "5s"},
		{"sensor[0].interval", ac.Sensors[0].Interval.D().String(), "2s"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("agent.toml %s = %q; want %q", c.name, c.got, c.want)
		}
	}
	if len(ac.Time.NTPServers) != 0 {
		t.Errorf("agent.toml time.ntp_servers = %v; want [] (trust the system clock)", ac.Time.NTPServers)
	}
	if len(ac.Sensors) != 2 || len(ac.Sensors[0].Values) == 0 || ac.Sensors[0].Kind != "simulated" || ac.Sensors[1].Kind != "simulated" {
		t.Errorf("agent.toml sensors = %+v; want two simulated sensors", ac.Sensors)
	}
	if bytes.Contains(data, []byte(cfg.EnrollmentGroups[0].Key)) || bytes.Contains(data, []byte(cfg.ServicePolicy.Key)) {
		t.Error("agent.toml contains a key; it must only name the key file")
	}
}

func TestInitRefusesOverwrite(t *testing.T) {
	dir := t.TempDir()
	first, err := initDir(dir, false, time.Now(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(first.Config)
	if _, err := initDir(dir, false, time.Now(), rand.Reader); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second init error = %v; want a refusal mentioning --force", err)
	}
	after, _ := os.ReadFile(first.Config)
	if !bytes.Equal(before, after) {
		t.Fatal("a refused init changed emulator.toml")
	}
	second, err := initDir(dir, true, time.Now(), rand.Reader)
	if err != nil {
		t.Fatalf("init --force: %v", err)
	}
	forced, _ := os.ReadFile(second.Config)
	if bytes.Equal(before, forced) {
		t.Fatal("init --force kept the old keys")
	}
}

func TestCLIUsage(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string // in stdout
		wantErr  string // in stderr
	}{
		{"no command", nil, exitUsage, "", "Usage:"},
		{"unknown command", []string{"frobnicate"}, exitUsage, "", `unknown command "frobnicate"`},
		{"help", []string{"--help"}, exitOK, "fieldgate-emulator init DIR", ""},
		{"version", []string{"version"}, exitOK, "fieldgate-emulator ", ""},
		{"init help", []string{"init", "--help"}, exitOK, "-force", ""},
		{"run help", []string{"run", "--help"}, exitOK, "-clock-skew", ""},
		{"watch help", []string{"watch", "--help"}, exitOK, "-device", ""},
		{"init unknown flag", []string{"init", "--bogus", "x"}, exitUsage, "", "flag provided but not defined: -bogus"},
		{"run unknown flag", []string{"run", "--bogus"}, exitUsage, "", "flag provided but not defined: -bogus"},
		{"watch unknown flag", []string{"watch", "--bogus"}, exitUsage, "", "flag provided but not defined: -bogus"},
		{"init no dir", []string{"init"}, exitUsage, "", "exactly one argument"},
		{"init two dirs", []string{"init", "a", "b"}, exitUsage, "", "exactly one argument"},
		{"run no config", []string{"run"}, exitUsage, "", "needs --config"},
		{"run bad log format", []string{"run", "--config", "x.toml", "--log-format", "xml"}, exitUsage, "", "--log-format"},
		{"run missing config file", []string{"run", "--config", "/nonexistent/emulator.toml"}, exitError, "", "fieldgate-emulator init"},
		{"run bad skew", []string{"run", "--config", "x", "--clock-skew", "2 hours"}, exitUsage, "", "invalid value"},
		{"watch no config", []string{"watch"}, exitUsage, "", "needs --config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, out, errOut := testEnv(t)
			code := cli(context.Background(), tt.args, e)
			if code != tt.wantCode {
				t.Fatalf("cli(%q) = %d; want %d\nstdout: %s\nstderr: %s", tt.args, code, tt.wantCode, out, errOut)
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("stdout lacks %q:\n%s", tt.wantOut, out)
			}
			if !strings.Contains(errOut.String(), tt.wantErr) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantErr, errOut)
			}
		})
	}
}

func TestCLIInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	e, out, errOut := testEnv(t)
	if code := cli(context.Background(), []string{"init", dir}, e); code != exitOK {
		t.Fatalf("init = %d; stderr: %s", code, errOut)
	}
	if !strings.Contains(out.String(), "fieldgate-emulator run --config "+filepath.Join(dir, configFileName)) {
		t.Errorf("init output lacks the next command:\n%s", out)
	}
	e, _, _ = testEnv(t)
	if code := cli(context.Background(), []string{"init", dir}, e); code != exitError {
		t.Fatalf("second init = %d; want %d", code, exitError)
	}
	e, _, errOut = testEnv(t)
	if code := cli(context.Background(), []string{"init", dir, "--force"}, e); code != exitOK {
		t.Fatalf("init DIR --force = %d; stderr: %s", code, errOut)
	}
}
