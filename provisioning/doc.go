// Package provisioning owns the device side of the Azure Device Provisioning
// Service (DPS): it registers a device over the HTTPS device API with a
// symmetric-key SAS token, polls the operation until DPS assigns an IoT hub,
// fails or reports the enrollment disabled, and caches the assignment in the
// state directory so that a reboot does not call DPS again.
//
// Register honours the service's throttling contract: Retry-After (floor
// 2 s, cap 300 s), at most 5 requests per 10 s per registration, exponential
// backoff with full jitter for 429, 5xx and network errors, and a slow retry
// for 401/403/404 (an enrollment that does not exist yet). Every wait runs on
// an injected clockwork.Clock, and every response is parsed defensively: a
// broken or malicious DPS produces an error, never a panic.
//
// Imported by the agent (agent, cmd/fieldgate). The DPS emulator lives in
// provisioning/dpstest; this package never imports it outside tests.
package provisioning
