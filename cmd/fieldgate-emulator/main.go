// Command fieldgate-emulator is a local Azure IoT Hub and Device
// Provisioning Service for development, demos and tests: MQTT 3.1.1 over TLS
// and WebSocket, the DPS device API and a service API, all verifying SAS
// tokens as the cloud does. It wires provisioning/dpstest and
// agent/hub/hubtest together; see docs/emulator.md.
//
// It is never a production hub, and the fieldgate agent binary never
// imports it.
package main

import (
	"context"
	"crypto/rand"
	"os"
	"os/signal"
	"syscall"

	"github.com/jonboulle/clockwork"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli(ctx, os.Args[1:], env{
		stdout: os.Stdout,
		stderr: os.Stderr,
		clock:  clockwork.NewRealClock(),
		random: rand.Reader,
	})
	stop()
	os.Exit(code)
}
