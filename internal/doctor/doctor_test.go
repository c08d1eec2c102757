package doctor_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/agent/agenttest"
	"github.com/fieldgate/fieldgate/agent/config"
	"github.com/fieldgate/fieldgate/agent/timesync/ntptest"
	"github.com/fieldgate/fieldgate/internal/devcert"
	"github.com/fieldgate/fieldgate/internal/doctor"
	"github.com/fieldgate/fieldgate/provisioning"
	"github.com/fieldgate/fieldgate/sas"
)

// env is a provisioned device against the in-process emulators with a local
// NTP server.
type env struct {
	emu  *agenttest.Emulator
	ntp  *ntptest.Server
	dir  string
	path string
}

func newEnv(t *testing.T, ntpOffset time.Duration) *env {
	t.Helper()
	emu := agenttest.Start(t, agenttest.Options{RetryAfter: 1})
	ntp, err := ntptest.Start(ntptest.Options{Offset: ntpOffset})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ntp.Close)
	dir := t.TempDir()
	path, err := emu.WriteAgentConfig(dir, agenttest.AgentConfig{StateDir: filepath.Join(dir, "state"), NTPServers: []string{ntp.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{emu: emu, ntp: ntp, dir: dir, path: path}
	e.provision(t)
	return e
}

// provision registers the device with the emulated DPS and caches the
// assignment, as the agent does on its first start.
func (e *env) provision(t *testing.T) {
	t.Helper()
	cfg := e.load(t)
	key, err := sas.ParseKey(mustDerive(t, "fieldgate-test"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := provisioning.New(provisioning.Options{Endpoint: cfg.Provisioning.GlobalEndpoint, IDScope: agenttest.IDScope,
		RegistrationID: "fieldgate-test", Signer: key, HTTPClient: e.emu.HTTPClient()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := c.Register(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(cfg.State.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := provisioning.SaveCache(cfg.State.Dir, a); err != nil {
		t.Fatal(err)
	}
}

func mustDerive(t *testing.T, reg string) string {
	k, err := sas.DeriveDeviceKey(agenttest.GroupKey, reg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func (e *env) load(t *testing.T) *config.Config {
	t.Helper()
	cfg, err := config.Load(e.path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func (e *env) run(t *testing.T, mod func(*doctor.Options)) map[string]doctor.Result {
	t.Helper()
	o := doctor.Options{Config: e.load(t), ConfigPath: e.path, Timeout: 5 * time.Second, Getenv: func(string) string { return "" }}
	if mod != nil {
		mod(&o)
	}
	out := map[string]doctor.Result{}
	for _, r := range doctor.Run(context.Background(), o) {
		out[r.Name] = r
	}
	return out
}

func TestAllGreenAgainstEmulator(t *testing.T) {
	e := newEnv(t, 0)
	rs := e.run(t, func(o *doctor.Options) { o.KernelSynced = func() (bool, error) { return true, nil } })
	if d := rs["clock"].Detail; !strings.Contains(d, "kernel clock synchronized") {
		t.Errorf("clock detail %q does not report the kernel sync", d)
	}
	for _, name := range []string{"config", "registration id", "key", "clock", "assignment", "dns DPS", "tls DPS", "dns hub", "tls hub",
		"token", "hub connect", "sensor env", "state dir"} {
		r, ok := rs[name]
		if !ok || r.Status != doctor.OK {
			t.Errorf("%s = %+v, want ok", name, r)
		}
	}
	for name, r := range rs {
		if r.Status == doctor.Fail {
			t.Errorf("unexpected failure %s: %+v", name, r)
		}
		if strings.Contains(r.Detail, agenttest.GroupKey[:12]) || strings.Contains(r.Detail, "sig=") {
			t.Errorf("%s leaks a secret: %s", name, r.Detail)
		}
	}
}

func TestEachFailureNamed(t *testing.T) {
	e := newEnv(t, 0)
	other, err := devcert.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		setup func(t *testing.T, o *doctor.Options)
		check string
		want  string
		fix   string
	}{
		{"wrong CA", func(t *testing.T, o *doctor.Options) {
			p := filepath.Join(t.TempDir(), "ca.pem")
			if err := os.WriteFile(p, other.CertPEM(), 0o644); err != nil {
				t.Fatal(err)
			}
			o.Config.Hub.CAFile = p
		}, "tls DPS", "unknown authority", "CA"},
		{"key file readable by others", func(t *testing.T, o *doctor.Options) {
			if err := os.Chmod(o.Config.Provisioning.Attestation.GroupKeyFile, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Chmod(o.Config.Provisioning.Attestation.GroupKeyFile, 0o600) })
		}, "key", "0644", "chmod 600"},
		{"DPS unreachable", func(t *testing.T, o *doctor.Options) {
			o.Config.Provisioning.GlobalEndpoint = "https://localhost:1"
		}, "tls DPS", "connection refused", "allow outbound"},
		{"wrong device key", func(t *testing.T, o *doctor.Options) {
			p := filepath.Join(t.TempDir(), "other.key")
			if err := os.WriteFile(p, []byte("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			o.Config.Provisioning.Attestation.GroupKeyFile = p
		}, "hub connect", "not authorized", "provision --force"},
		{"missing I2C bus", func(t *testing.T, o *doctor.Options) {
			o.Root = t.TempDir()
			o.Config.Sensors[0].Bus = "1"
		}, "i2c /dev/i2c-1", "does not exist", "raspi-config"},
		{"state dir not writable", func(t *testing.T, o *doctor.Options) {
			f := filepath.Join(t.TempDir(), "file")
			os.WriteFile(f, nil, 0o600)
			o.Config.State.Dir = filepath.Join(f, "state")
		}, "state dir", "not a directory", "create"},
		{"config invalid", func(t *testing.T, o *doctor.Options) {
			o.Config, o.ConfigErr = nil, os.ErrNotExist
		}, "config", "file does not exist", "fieldgate check"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := e.run(t, func(o *doctor.Options) { tt.setup(t, o) })
			r := rs[tt.check]
			if r.Status != doctor.Fail || !strings.Contains(r.Detail, tt.want) || !strings.Contains(r.Fix, tt.fix) {
				t.Errorf("%s = %+v; want fail with %q and fix mentioning %q", tt.check, r, tt.want, tt.fix)
			}
		})
	}
}

func TestSkewedNTP(t *testing.T) {
	e := newEnv(t, 0)
	e.ntp.SetOffset(90 * time.Second)
	r := e.run(t, nil)["clock"]
	if r.Status != doctor.Fail || !strings.Contains(r.Detail, "1m30") || !strings.Contains(r.Fix, "timedatectl") {
		t.Errorf("clock = %+v", r)
	}
}
