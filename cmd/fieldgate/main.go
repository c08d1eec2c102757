// Command fieldgate is the device agent for Linux gateways (Raspberry Pi and
// other ARM boards) that talk to Azure IoT Hub through the Device Provisioning
// Service. It is one static binary with subcommands: the agent itself (run),
// configuration and field diagnostics (check, doctor, sensors, provision) and
// offline credential tools (token, derive-key), plus version.
//
// This package is main only: it parses flags, wires real dependencies into the
// library packages and maps results to exit codes (0 ok, 1 error, 2 usage).
// Test-only packages (emulators, fakes, httptest, the MQTT broker) must never
// be imported here; deps_test.go enforces that.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runMain(ctx, os.Args[1:], realEnv)
	stop()
	os.Exit(code)
}
