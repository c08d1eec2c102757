package main

import (
	"encoding/json"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

// setVersion replaces the link-time version variables for one test.
func setVersion(t *testing.T, v, c string) {
	t.Helper()
	oldV, oldC := version, commit
	version, commit = v, c
	t.Cleanup(func() { version, commit = oldV, oldC })
}

func TestVersionCommand(t *testing.T) {
	setVersion(t, "v1.2.3-4-gabcdef0", "abcdef0")
	platform := runtime.GOOS + "/" + runtime.GOARCH
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"text", nil, []string{"fieldgate v1.2.3-4-gabcdef0\n", "commit:   abcdef0\n", "go:       " + runtime.Version() + "\n", "platform: " + platform}},
		{"json", []string{"--json"}, []string{`"version":"v1.2.3-4-gabcdef0"`, `"commit":"abcdef0"`, `"go":"` + runtime.Version() + `"`, `"os":"` + runtime.GOOS + `"`, `"arch":"` + runtime.GOARCH + `"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := execCLI(t, "", append([]string{"version"}, tt.args...)...)
			if r.code != exitOK || r.stderr != "" {
				t.Fatalf("fieldgate version %q = exit %d, stderr %q", tt.args, r.code, r.stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("stdout = %q; want it to contain %q", r.stdout, w)
				}
			}
			if tt.name == "json" {
				var got buildInfo
				if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
					t.Fatalf("output is not JSON: %v", err)
				}
				if got.Version != "v1.2.3-4-gabcdef0" || got.Commit != "abcdef0" || got.OS != runtime.GOOS || got.Arch != runtime.GOARCH {
					t.Errorf("decoded %+v", got)
				}
			}
		})
	}
}

func TestMakeBuildInfo(t *testing.T) {
	settings := func(kv ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{}
		for i := 0; i+1 < len(kv); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return bi
	}
	tests := []struct {
		name           string
		commit, goarch string
		bi             *debug.BuildInfo
		wantCommit     string
		wantPlatform   string
	}{
		{"no build info", "unknown", "amd64", nil, "unknown", "linux/amd64"},
		{"armv7 build", "abc", "arm", settings("GOARM", "7"), "abc", "linux/arm/v7"},
		{"armv6 build", "abc", "arm", settings("GOARM", "6"), "abc", "linux/arm/v6"},
		{"GOARM ignored off arm", "abc", "arm64", settings("GOARM", "7"), "abc", "linux/arm64"},
		{"vcs revision when commit unset", "unknown", "amd64", settings("vcs.revision", "0123456789abcdef", "vcs.modified", "false"), "0123456789abcdef", "linux/amd64"},
		{"dirty vcs revision", "", "amd64", settings("vcs.revision", "0123", "vcs.modified", "true"), "0123-dirty", "linux/amd64"},
		{"ldflags commit wins over vcs", "feedbee", "amd64", settings("vcs.revision", "0123"), "feedbee", "linux/amd64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := makeBuildInfo("v1", tt.commit, "go1.26.8", "linux", tt.goarch, tt.bi)
			if got.Commit != tt.wantCommit || got.platform() != tt.wantPlatform || got.Version != "v1" || got.Go != "go1.26.8" {
				t.Errorf("makeBuildInfo(%q, %s) = %+v (platform %s); want commit %q platform %s", tt.commit, tt.goarch, got, got.platform(), tt.wantCommit, tt.wantPlatform)
			}
		})
	}
}
