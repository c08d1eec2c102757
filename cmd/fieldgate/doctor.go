package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"time"

	"github.com/fieldgate/fieldgate/agent/config"
	"github.com/fieldgate/fieldgate/internal/doctor"
)

var doctorCmd = &command{
	name:    "doctor",
	summary: "diagnose a field install: config, key, clock, DNS, TLS, token, hub CONNECT, devices, sensors, disk",
	usage: `fieldgate doctor [--config FILE] [--json] [--timeout DURATION]

Runs every check and prints ✓ (ok), ✗ (failed, with the fix), ! (warning) or
- (skipped). The exit status is the number of failed checks.`,
}

func init() { doctorCmd.run = runDoctor; register(doctorCmd) }

func runDoctor(ctx context.Context, e *env, args []string) int {
	fs := doctorCmd.flags()
	path := fs.String("config", config.DefaultPath, "config `FILE`")
	asJSON := fs.Bool("json", false, "print the results as JSON")
	timeout := fs.Duration("timeout", 10*time.Second, "timeout of each network step")
	if code, done := doctorCmd.parse(e, fs, args); done {
		return code
	}
	cfg, err := config.Load(*path)
	o := doctor.Options{Config: cfg, ConfigPath: *path, ConfigErr: err, Timeout: *timeout, Getenv: e.Getenv,
		Systemctl: systemctlIsActive, Root: hostRoot}
	results := doctor.Run(ctx, o)
	if *asJSON {
		enc := json.NewEncoder(e.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(results)
	} else {
		marks := map[doctor.Status]string{doctor.OK: "✓", doctor.Fail: "✗", doctor.Warn: "!", doctor.Skip: "-"}
		for _, r := range results {
			fmt.Fprintf(e.Stdout, "%s %-16s %s\n", marks[r.Status], r.Name, r.Detail)
			if r.Fix != "" && (r.Status == doctor.Fail || r.Status == doctor.Warn) {
				fmt.Fprintf(e.Stdout, "  %-16s fix: %s\n", "", r.Fix)
			}
		}
		n := doctor.Failures(results)
		fmt.Fprintf(e.Stdout, "\n%d checks, %d failed\n", len(results), n)
	}
	return min(doctor.Failures(results), 125)
}

// systemctlIsActive asks systemd about the unit; it is the only command
// fieldgate runs, and only when systemctl exists.
func systemctlIsActive(ctx context.Context) (string, error) {
	p, err := exec.LookPath("systemctl")
	if err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, p, "is-active", "fieldgate.service").Output()
	return string(out), err
}
