package main

import (
	"context"
	"encoding/json"
	"time"

	"github.com/fieldgate/fieldgate/agent"
	"github.com/fieldgate/fieldgate/agent/config"
)

var provisionCmd = &command{
	name:    "provision",
	summary: "register with DPS once (or show the cached assignment) and print it as JSON",
	usage: `fieldgate provision [--config FILE] [--force] [--timeout DURATION]

Without --force the cached assignment is printed when it matches the current
identity (id scope, registration id, key); with --force the device registers
with DPS again and the cache is replaced.`,
}

func init() { provisionCmd.run = runProvision; register(provisionCmd) }

func runProvision(ctx context.Context, e *env, args []string) int {
	fs := provisionCmd.flags()
	path := fs.String("config", config.DefaultPath, "config `FILE`")
	force := fs.Bool("force", false, "register with DPS even when a cached assignment exists")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after `DURATION`")
	if code, done := provisionCmd.parse(e, fs, args); done {
		return code
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return provisionCmd.fail(e, fs, err)
	}
	log := newLogger(e.Stderr, cfg.LogLevel, cfg.LogFormat)
	a, err := agent.New(agent.Options{Config: cfg, Logger: log, Version: version, Getenv: e.Getenv})
	if err != nil {
		return provisionCmd.fail(e, fs, err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	asg, err := a.ProvisionOnce(ctx, *force)
	if err != nil {
		return provisionCmd.fail(e, fs, err)
	}
	enc := json.NewEncoder(e.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(asg); err != nil {
		return provisionCmd.fail(e, fs, err)
	}
	return exitOK
}
