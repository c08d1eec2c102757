// Package hubtest is the Azure IoT Hub emulator library: an embedded MQTT
// 3.1.1 broker (mochi-mqtt) that speaks IoT Hub's device protocol — SAS
// authentication on CONNECT, per-device topic ACLs, telemetry with property
// bags acknowledged only after it is durably recorded, device twins, direct
// methods and cloud-to-device queues — plus IoT Hub's service API as an
// http.Handler and as Go methods, and fault injection for tests.
//
// It is used in-process by tests (start it on 127.0.0.1:0) and by
// cmd/fieldgate-emulator. It is test and emulator code only: the fieldgate
// agent binary must never import it (cmd/fieldgate has a dependency test),
// and it is the only package allowed to import mochi-mqtt.
//
// Time: every validity check (SAS expiry, C2D TTL, fault windows, recorded
// timestamps) uses Options.Now, the emulator's possibly skewed wall clock.
// Timers (token-expiry disconnects, method timeouts) run on Options.Clock and
// are armed with durations computed from Options.Now, so a skewed Now still
// yields correct real-time durations.
//
// What it does not emulate: AMQP and the HTTP device API, modules and module
// twins, X.509 device authentication, file upload, routing and the built-in
// Event Hubs endpoint (telemetry is kept in an emulator-only log, see
// Messages), jobs, twin queries, C2D feedback and reject/abandon, throttling
// and daily quotas, and $metadata in twins.
package hubtest
