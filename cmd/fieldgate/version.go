package main

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set at link time: go build -ldflags "-X main.version=v1.2.3 -X main.commit=abc1234".
var (
	version = "dev"
	commit  = "unknown"
)

var versionCmd = &command{
	name:    "version",
	summary: "print version, commit, Go version and platform",
	usage:   "fieldgate version [--json]",
}

func init() {
	versionCmd.run = runVersion
	register(versionCmd)
}

// buildInfo describes this binary.
type buildInfo struct {
	Version string `json:"version"`
	Commit  string `json:"commit"`
	Go      string `json:"go"`
	OS      string `json:"os"`
	Arch    string `json:"arch"`
	ARM     string `json:"goarm,omitempty"` // GOARM of 32-bit ARM builds, e.g. "6" or "7"
}

// currentBuild returns the build information of the running binary.
func currentBuild() buildInfo {
	bi, _ := debug.ReadBuildInfo()
	return makeBuildInfo(version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH, bi)
}

// makeBuildInfo combines the link-time variables with the module build
// information: GOARM for 32-bit ARM, and the VCS revision when the commit was
// not set at link time (a plain "go build" inside a git checkout).
func makeBuildInfo(version, commit, goVersion, goos, goarch string, bi *debug.BuildInfo) buildInfo {
	info := buildInfo{Version: version, Commit: commit, Go: goVersion, OS: goos, Arch: goarch}
	if bi == nil {
		return info
	}
	var rev string
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "GOARM":
			if goarch == "arm" {
				info.ARM = s.Value
			}
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if (commit == "" || commit == "unknown") && rev != "" {
		info.Commit = rev
		if modified {
			info.Commit += "-dirty"
		}
	}
	return info
}

// platform returns os/arch, with the ARM version for 32-bit ARM (linux/arm/v7).
func (b buildInfo) platform() string {
	p := b.OS + "/" + b.Arch
	if b.ARM != "" {
		p += "/v" + b.ARM
	}
	return p
}

func runVersion(_ context.Context, e *env, args []string) int {
	fs := versionCmd.flags()
	asJSON := fs.Bool("json", false, "print one JSON object instead of text")
	if code, done := versionCmd.parse(e, fs, args); done {
		return code
	}
	info := currentBuild()
	if *asJSON {
		b, err := json.Marshal(info)
		if err != nil {
			return versionCmd.fail(e, fs, err)
		}
		fmt.Fprintf(e.Stdout, "%s\n", b)
		return exitOK
	}
	fmt.Fprintf(e.Stdout, "fieldgate %s\ncommit:   %s\ngo:       %s\nplatform: %s\n", info.Version, info.Commit, info.Go, info.platform())
	return exitOK
}
