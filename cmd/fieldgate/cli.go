package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

// Exit codes of every subcommand.
const (
	exitOK    = 0 // success, or --help
	exitError = 1 // runtime failure (bad key, unreachable service, invalid config)
	exitUsage = 2 // bad command line
)

// env is everything a subcommand may take from the process. Tests build one
// with buffers, a map-backed Getenv and a fixed now, and run commands
// in-process.
type env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string // non-nil
	now    func() time.Time    // non-nil; wall clock as seen by the command
}

// realEnv is the process environment used by main.
var realEnv = &env{
	Stdin:  os.Stdin,
	Stdout: os.Stdout,
	Stderr: os.Stderr,
	Getenv: os.Getenv,
	now:    time.Now,
}

// command is one subcommand. Each lives in its own file and adds itself with
// register from an init function. run is assigned in init (not in the
// variable's initializer) so that run may refer to the command without an
// initialization cycle:
//
//	var checkCmd = &command{
//		name:    "check",
//		summary: "validate a config file and print the plan",
//		usage:   "fieldgate check --config FILE [--json]",
//	}
//
//	func init() { checkCmd.run = runCheck; register(checkCmd) }
//
//	func runCheck(ctx context.Context, e *env, args []string) int {
//		fs := checkCmd.flags()
//		path := fs.String("config", "", "config `FILE`")
//		if code, done := checkCmd.parse(e, fs, args); done {
//			return code // --help (0) or a bad flag (2), already printed
//		}
//		if *path == "" {
//			return checkCmd.usageError(e, fs, "--config is required")
//		}
//		...
//		if err != nil {
//			return checkCmd.fail(e, fs, err) // 1, or 2 for a usagef error
//		}
//		return exitOK
//	}
//
// run returns the process exit code: exitOK, exitError or exitUsage. Output
// meant for scripts goes to e.Stdout, diagnostics to e.Stderr.
type command struct {
	name    string // as typed on the command line
	summary string // one line for "fieldgate help", lower case, no period
	usage   string // synopsis line(s) and any notes, printed above the flags
	run     func(ctx context.Context, env *env, args []string) int
}

// commands holds every registered subcommand by name. It is written only by
// init functions (through register) and read afterwards, so it needs no lock.
var commands = map[string]*command{}

// register adds c to the command table. Duplicate or incomplete commands are
// programming errors caught at start-up.
func register(c *command) {
	if c == nil || c.name == "" || c.run == nil {
		panic("fieldgate: register: command needs a name and a run function")
	}
	if _, dup := commands[c.name]; dup {
		panic("fieldgate: register: duplicate command " + c.name)
	}
	commands[c.name] = c
}

// runMain dispatches args (without the program name) to a subcommand and
// returns the exit code.
func runMain(ctx context.Context, args []string, e *env) int {
	if len(args) == 0 {
		fmt.Fprint(e.Stderr, topUsage())
		return exitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(rest) == 0 {
			fmt.Fprint(e.Stdout, topUsage())
			return exitOK
		}
		c, ok := commands[rest[0]]
		if !ok {
			fmt.Fprintf(e.Stderr, "fieldgate: unknown command %q\n\n%s", rest[0], topUsage())
			return exitUsage
		}
		// The command prints its own help, with its flags, on stdout.
		return c.run(ctx, e, []string{"--help"})
	case "-version", "--version":
		name = "version"
	}
	c, ok := commands[name]
	if !ok {
		if strings.HasPrefix(name, "-") {
			fmt.Fprintf(e.Stderr, "fieldgate: flag %s given before a command; flags follow the command, e.g. fieldgate token --help\n\n%s", name, topUsage())
		} else {
			fmt.Fprintf(e.Stderr, "fieldgate: unknown command %q\n\n%s", name, topUsage())
		}
		return exitUsage
	}
	return c.run(ctx, e, rest)
}

// topUsage lists the commands, sorted by name.
func topUsage() string {
	names := make([]string, 0, len(commands))
	width := 0
	for n := range commands {
		names = append(names, n)
		width = max(width, len(n))
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("fieldgate — device agent for Azure IoT Hub and DPS on Linux gateways\n\n")
	b.WriteString("Usage: fieldgate COMMAND [flags]\n\nCommands:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  %-*s  %s\n", width, n, commands[n].summary)
	}
	b.WriteString("\nRun \"fieldgate COMMAND --help\" for the flags of a command.\n")
	b.WriteString("Exit status: 0 ok, 1 error, 2 bad command line.\n")
	return b.String()
}

// flags returns an empty flag set for c that prints nothing by itself;
// c.parse reports errors and help. Every command must answer --help (through
// c.parse) with its usage on stdout and exit 0: "fieldgate help NAME" runs
// "NAME --help".
func (c *command) flags() *flag.FlagSet {
	fs := flag.NewFlagSet("fieldgate "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parse parses args into fs. When done is true the command must return code:
// exitOK after -h/--help printed the usage on stdout, exitUsage after a bad
// flag or a positional argument printed the error and the usage on stderr.
// Commands that take positional arguments call fs.Parse themselves and use
// helpText/usageError.
func (c *command) parse(e *env, fs *flag.FlagSet, args []string) (code int, done bool) {
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		c.printUsage(e.Stdout, fs)
		return exitOK, true
	case err != nil:
		return c.usageError(e, fs, "%v", err), true
	case fs.NArg() > 0:
		return c.usageError(e, fs, "unexpected argument %q; this command takes only flags", fs.Arg(0)), true
	}
	return exitOK, false
}

// usageError prints "fieldgate NAME: message" and the synopsis on stderr and
// returns exitUsage. fs is accepted so every error path has the same shape;
// the full flag list is left to --help.
func (c *command) usageError(e *env, _ *flag.FlagSet, format string, args ...any) int {
	synopsis, _, _ := strings.Cut(strings.TrimRight(c.usage, "\n"), "\n\n")
	fmt.Fprintf(e.Stderr, "fieldgate %s: %s\n\nUsage: %s\nRun \"fieldgate %s --help\" for details.\n",
		c.name, fmt.Sprintf(format, args...), synopsis, c.name)
	return exitUsage
}

// fail prints "fieldgate NAME: err" on stderr and returns exitError, or
// exitUsage with the usage when err is a usage error (see usagef).
func (c *command) fail(e *env, fs *flag.FlagSet, err error) int {
	var ue *usageErr
	if errors.As(err, &ue) {
		return c.usageError(e, fs, "%s", ue.msg)
	}
	fmt.Fprintf(e.Stderr, "fieldgate %s: %v\n", c.name, err)
	return exitError
}

// helpText returns the usage of c with the defaults of fs.
func (c *command) helpText(fs *flag.FlagSet) string {
	var b strings.Builder
	b.WriteString("fieldgate ")
	b.WriteString(c.name)
	if c.summary != "" {
		b.WriteString(": ")
		b.WriteString(c.summary)
	}
	b.WriteString("\n\nUsage: ")
	b.WriteString(strings.TrimRight(c.usage, "\n"))
	b.WriteString("\n")
	first := true
	fs.VisitAll(func(f *flag.Flag) {
		if first {
			b.WriteString("\nFlags:\n")
			first = false
		}
		arg, usage := flag.UnquoteUsage(f)
		b.WriteString("  --")
		b.WriteString(f.Name)
		if arg != "" {
			b.WriteString(" ")
			b.WriteString(arg)
		}
		b.WriteString("\n        ")
		b.WriteString(strings.ReplaceAll(usage, "\n", "\n        "))
		switch f.DefValue {
		case "", "0", "false", "[]":
		default:
			fmt.Fprintf(&b, " (default %s)", f.DefValue)
		}
		b.WriteString("\n")
	})
	return b.String()
}

func (c *command) printUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, c.helpText(fs))
}

// usageErr is an error caused by the command line rather than the world; fail
// turns it into exit status 2 with the usage.
type usageErr struct{ msg string }

func (e *usageErr) Error() string { return e.msg }

// usagef returns a usage error.
func usagef(format string, args ...any) error {
	return &usageErr{msg: fmt.Sprintf(format, args...)}
}

// setFlags returns the names of the flags given on the command line.
func setFlags(fs *flag.FlagSet) map[string]bool {
	m := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { m[f.Name] = true })
	return m
}
