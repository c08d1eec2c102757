package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/agent/agenttest"
	"github.com/fieldgate/fieldgate/agent/timesync/ntptest"
)

func TestDoctorExitCodeIsFailures(t *testing.T) {
	var out, errb bytes.Buffer
	e := &env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }, now: time.Now}
	code := runMain(context.Background(), []string{"doctor", "--json", "--config", filepath.Join(t.TempDir(), "missing.toml")}, e)
	var rs []struct{ Name, Status, Detail, Fix string }
	if err := json.Unmarshal(out.Bytes(), &rs); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out.String())
	}
	if code != 1 || len(rs) != 1 || rs[0].Name != "config" || rs[0].Status != "fail" || !strings.Contains(rs[0].Fix, "fieldgate check") {
		t.Errorf("doctor = %d %+v", code, rs)
	}
}

// TestDoctorAgainstEmulator provisions through `fieldgate provision` and then
// runs `fieldgate doctor --json`: no check fails, the exit code is 0, and
// neither the key nor a token is printed.
func TestDoctorAgainstEmulator(t *testing.T) {
	emu := agenttest.Start(t, agenttest.Options{RetryAfter: 1})
	ntp, err := ntptest.Start(ntptest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ntp.Close)
	dir := t.TempDir()
	path, err := emu.WriteAgentConfig(dir, agenttest.AgentConfig{StateDir: filepath.Join(dir, "state"), NTPServers: []string{ntp.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	e := &env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }, now: time.Now}
	if code := runMain(ctx, []string{"provision", "--config", path}, e); code != 0 {
		t.Fatalf("provision = %d\n%s\n%s", code, out.String(), errb.String())
	}
	out.Reset()
	errb.Reset()
	code := runMain(ctx, []string{"doctor", "--json", "--timeout", "5s", "--config", path}, e)
	var rs []struct{ Name, Status, Detail, Fix string }
	if err := json.Unmarshal(out.Bytes(), &rs); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out.String())
	}
	if code != 0 {
		t.Errorf("doctor exit = %d, want 0\n%s", code, out.String())
	}
	ok := map[string]bool{}
	for _, r := range rs {
		ok[r.Name] = r.Status == "ok"
		if r.Status == "fail" {
			t.Errorf("%s failed: %s (fix: %s)", r.Name, r.Detail, r.Fix)
		}
	}
	for _, name := range []string{"config", "key", "clock", "assignment", "tls DPS", "tls hub", "token", "hub connect", "state dir"} {
		if !ok[name] {
			t.Errorf("%s not ok\n%s", name, out.String())
		}
	}
	if s := out.String(); strings.Contains(s, agenttest.GroupKey[:12]) || strings.Contains(s, "sig=") {
		t.Errorf("doctor output leaks a secret:\n%s", s)
	}
}
