package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/fieldgate/fieldgate/agent"
	"github.com/fieldgate/fieldgate/agent/config"
)

var runCmd = &command{
	name:    "run",
	summary: "run the agent (what the systemd service starts)",
	usage: `fieldgate run [--config FILE] [--force-provision]

Samples the configured sensors into the durable spool, gets trusted time,
provisions through DPS (or uses the cached assignment), keeps the IoT Hub
session and publishes telemetry. SIGTERM/SIGINT stop it cleanly (flushing for
up to 5 s); SIGHUP reloads sensors and intervals from the config file.`,
}

func init() { runCmd.run = runRun; register(runCmd) }

func runRun(ctx context.Context, e *env, args []string) int {
	fs := runCmd.flags()
	path := fs.String("config", config.DefaultPath, "config `FILE`")
	force := fs.Bool("force-provision", false, "ignore the cached DPS assignment and register again")
	if code, done := runCmd.parse(e, fs, args); done {
		return code
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return runCmd.fail(e, fs, err)
	}
	log := newLogger(e.Stderr, cfg.LogLevel, cfg.LogFormat)
	notify := func(state string) {
		if _, err := daemon.SdNotify(false, state); err != nil {
			log.Debug("sd_notify failed", "err", err)
		}
	}
	wd, _ := daemon.SdWatchdogEnabled(false)
	a, err := agent.New(agent.Options{
		Config:           cfg,
		Logger:           log,
		Version:          version,
		Notify:           notify,
		WatchdogInterval: wd / 2,
		Getenv:           e.Getenv,
		ForceProvision:   *force,
	})
	if err != nil {
		return runCmd.fail(e, fs, err)
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				notify("RELOADING=1\n" + daemon.SdNotifyMonotonicUsec())
				nc, err := config.Load(*path)
				if err != nil {
					log.Error("SIGHUP: new configuration rejected; keeping the running one", "err", err)
				} else {
					a.Reload(nc)
				}
				notify("READY=1")
			}
		}
	}()
	err = a.Run(ctx)
	switch {
	case errors.Is(err, agent.ErrRestartRequested):
		log.Info("exiting for restart")
		return exitOK
	case err != nil:
		log.Error("fieldgate stopped with an error", "err", err)
		return exitError
	}
	return exitOK
}

// newLogger builds the process logger on w.
func newLogger(w io.Writer, level, format string) *slog.Logger {
	var lv slog.Level
	switch strings.ToLower(level) {
	case "debug":
		lv = slog.LevelDebug
	case "warn":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		lv = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lv, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey && a.Value.Kind() == slog.KindTime {
			return slog.String(slog.TimeKey, a.Value.Time().UTC().Format(time.RFC3339Nano))
		}
		return a
	}}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
