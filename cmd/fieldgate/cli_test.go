package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"sort"
	"strings"
	"testing"
	"time"
)

// cliTestNow is the wall clock every in-process command sees in tests.
var cliTestNow = time.Unix(1700000000, 0)

// cliResult is what one in-process run of the CLI produced.
type cliResult struct {
	code           int
	stdout, stderr string
}

// execCLI runs "fieldgate args..." in-process with stdin as standard input,
// an empty environment and the wall clock fixed at cliTestNow.
func execCLI(t testing.TB, stdin string, args ...string) cliResult {
	t.Helper()
	var out, errOut bytes.Buffer
	e := &env{
		Stdin:  strings.NewReader(stdin),
		Stdout: &out,
		Stderr: &errOut,
		Getenv: func(string) string { return "" },
		now:    func() time.Time { return cliTestNow },
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code := runMain(ctx, args, e)
	return cliResult{code: code, stdout: out.String(), stderr: errOut.String()}
}

func TestTopLevel(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string // substring ("" means stdout must be empty)
		wantStderr string // substring ("" means stderr must be empty)
	}{
		{"no arguments lists commands on stderr", nil, exitUsage, "", "Commands:"},
		{"help", []string{"help"}, exitOK, "Commands:", ""},
		{"--help", []string{"--help"}, exitOK, "Commands:", ""},
		{"-h", []string{"-h"}, exitOK, "Commands:", ""},
		{"help of a command", []string{"help", "token"}, exitOK, "--registration-id", ""},
		{"help of an unknown command", []string{"help", "frobnicate"}, exitUsage, "", `unknown command "frobnicate"`},
		{"unknown command", []string{"frobnicate"}, exitUsage, "", `unknown command "frobnicate"`},
		{"flag before the command", []string{"--key", "x", "token"}, exitUsage, "", "flag --key given before a command"},
		{"--version is the version command", []string{"--version"}, exitOK, "platform: ", ""},
		{"--version with its flags", []string{"--version", "--json"}, exitOK, `"version":`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := execCLI(t, "", tt.args...)
			if r.code != tt.wantCode {
				t.Errorf("fieldgate %q exit = %d; want %d (stderr %q)", tt.args, r.code, tt.wantCode, r.stderr)
			}
			checkOutput(t, "stdout", r.stdout, tt.wantStdout)
			checkOutput(t, "stderr", r.stderr, tt.wantStderr)
		})
	}
}

func checkOutput(t *testing.T, which, got, want string) {
	t.Helper()
	if want == "" {
		if got != "" {
			t.Errorf("%s = %q; want empty", which, got)
		}
		return
	}
	if !strings.Contains(got, want) {
		t.Errorf("%s = %q; want it to contain %q", which, got, want)
	}
}

func TestCommandListSorted(t *testing.T) {
	r := execCLI(t, "", "help")
	_, list, ok := strings.Cut(r.stdout, "Commands:\n")
	if !ok {
		t.Fatalf("help output has no command list: %q", r.stdout)
	}
	list, _, _ = strings.Cut(list, "\n\n")
	var names []string
	for _, line := range strings.Split(list, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			t.Fatalf("command line %q has no summary", line)
		}
		names = append(names, f[0])
	}
	if !sort.StringsAreSorted(names) {
		t.Errorf("commands %v are not sorted", names)
	}
	if len(names) != len(commands) {
		t.Errorf("help lists %d commands %v; %d are registered", len(names), names, len(commands))
	}
	for _, want := range []string{"derive-key", "token", "version"} {
		if _, ok := commands[want]; !ok {
			t.Errorf("command %q is not registered", want)
		}
		if !strings.Contains(list, "  "+want+" ") {
			t.Errorf("help does not list %q: %q", want, list)
		}
	}
}

// TestEveryCommandHelpAndBadFlag holds every registered command, including
// those added in other files, to the frame's contract: --help and -h print
// the usage on stdout and exit 0; an unknown flag prints the usage on stderr
// and exits 2 without doing anything else.
func TestEveryCommandHelpAndBadFlag(t *testing.T) {
	for name := range commands {
		for _, args := range [][]string{{"--help"}, {"-h"}} {
			t.Run(name+" "+args[0], func(t *testing.T) {
				r := execCLI(t, "", append([]string{name}, args...)...)
				if r.code != exitOK {
					t.Errorf("fieldgate %s %s exit = %d; want 0 (stderr %q)", name, args[0], r.code, r.stderr)
				}
				if !strings.HasPrefix(r.stdout, "fieldgate "+name) || !strings.Contains(r.stdout, "Usage: fieldgate "+name) {
					t.Errorf("stdout = %q; want the usage of %s", r.stdout, name)
				}
				checkOutput(t, "stderr", r.stderr, "")
			})
		}
		t.Run(name+" unknown flag", func(t *testing.T) {
			r := execCLI(t, "", name, "--no-such-flag-xyz")
			if r.code != exitUsage {
				t.Errorf("fieldgate %s --no-such-flag-xyz exit = %d; want 2", name, r.code)
			}
			checkOutput(t, "stdout", r.stdout, "")
			if !strings.Contains(r.stderr, "no-such-flag-xyz") || !strings.Contains(r.stderr, "Usage: fieldgate "+name) {
				t.Errorf("stderr = %q; want the bad flag and the usage", r.stderr)
			}
		})
	}
}

func TestRegisterRejectsBadCommands(t *testing.T) {
	noop := func(context.Context, *env, []string) int { return 0 }
	tests := []struct {
		name string
		c    *command
	}{
		{"nil", nil},
		{"no name", &command{run: noop}},
		{"no run", &command{name: "zz-no-run"}},
		{"duplicate", &command{name: "token", run: noop}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(commands)
			defer func() {
				if recover() == nil {
					t.Errorf("register(%s) did not panic", tt.name)
				}
				if len(commands) != before {
					t.Errorf("register(%s) changed the command table", tt.name)
				}
			}()
			register(tt.c)
		})
	}
}

func TestFailExitCodes(t *testing.T) {
	c := &command{name: "demo", summary: "demo", usage: "fieldgate demo [--x]\n\nMore text."}
	tests := []struct {
		name       string
		err        error
		wantCode   int
		wantStderr []string
	}{
		{"runtime error", errors.New("spool: disk full"), exitError, []string{"fieldgate demo: spool: disk full\n"}},
		{"usage error", usagef("--x is required"), exitUsage, []string{"fieldgate demo: --x is required", "Usage: fieldgate demo [--x]\n", `Run "fieldgate demo --help"`}},
		{"wrapped usage error", errors.Join(errors.New("context"), usagef("bad --x")), exitUsage, []string{"fieldgate demo: bad --x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			e := &env{Stdout: &out, Stderr: &errOut}
			if got := c.fail(e, flag.NewFlagSet("demo", flag.ContinueOnError), tt.err); got != tt.wantCode {
				t.Errorf("fail(%v) = %d; want %d", tt.err, got, tt.wantCode)
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(errOut.String(), w) {
					t.Errorf("stderr = %q; want it to contain %q", errOut.String(), w)
				}
			}
			if strings.Contains(errOut.String(), "More text.") {
				t.Errorf("usage error printed the long help: %q", errOut.String())
			}
			if out.Len() != 0 {
				t.Errorf("stdout = %q; want empty", out.String())
			}
		})
	}
}
