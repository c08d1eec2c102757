// Package dpstest owns the Device Provisioning Service emulator: the DPS
// device API (symmetric-key attestation over HTTPS) as an http.Handler, for
// in-process tests and for the fieldgate-emulator binary. It is test and
// emulator code only; the fieldgate agent binary must never import it.
//
// Endpoints (api-version 2019-03-31, 2021-06-01 or 2021-10-01 is required):
//
//	PUT  /{idScope}/registrations/{regId}/register                  register (billable)
//	GET  /{idScope}/registrations/{regId}/operations/{operationId}  operation status
//	POST /{idScope}/registrations/{regId}                           registration status lookup
//
// Every request needs an Authorization header holding a SAS token whose
// decoded sr is exactly {idScope}/registrations/{regId} (the id scope compared
// case-insensitively; a prefix such as the bare id scope is refused), whose
// skn is "registration" or absent, that is signed by the individual
// enrollment key or by the key derived from an enrollment group key, and that
// has not expired on the emulator clock (Options.Now, no grace period).
//
// Behaviour chosen where DPS is not documented, so tests can rely on it:
//   - A registration id with an individual enrollment is verified with that
//     key only. Otherwise every enrollment group (disabled ones too) is tried
//     in order and the first whose derived key verifies the signature wins.
//     When groups exist but none verifies, the reply is 401 (401002), as DPS
//     answers a device with a wrongly derived key; when there is neither an
//     individual enrollment nor any group the reply is 404 (404201).
//   - PUT register always answers 202 {"operationId","status":"assigning"}
//     with Retry-After (Options.RetryAfter seconds). The outcome is decided
//     and the device identity upserted in the hub at that moment. The first
//     Options.AssigningPolls operation GETs answer 202 "assigning"; the next
//     answers 200 with the outcome (assigned, disabled or failed). With the
//     default AssigningPolls of 0 the first poll already reports the outcome.
//   - Only the latest operation of a registration id can be polled; an older
//     or unknown operation id answers 404 (404202), as does a status lookup
//     for a registration id that never registered.
//   - More than RateLimit authenticated requests (register, poll, lookup) of
//     one registration id inside RateWindow answer 429 (429001) with a
//     Retry-After saying when the oldest counted request leaves the window.
//     Refused requests do not count. A request exactly RateWindow old no
//     longer counts.
//
// Error replies have the DPS shape {"errorCode","trackingId","message",
// "timestampUtc"} and an x-ms-error-code header. Error codes used: 400001
// (api-version missing or unsupported), 400004 (bad request body or
// registration id), 401002 (authentication), 404000 (no such endpoint),
// 404001 (unknown id scope), 404201 (no enrollment), 404202 (unknown
// operation or registration), 405000 (method), 413001 (body over
// MaxBodyBytes), 415001 (Content-Type not JSON), 429001 (throttled), and
// status×1000+1 for injected faults. A failed operation carries
// registrationState.errorCode 400208 by default (FailNext) or 500001 when the
// hub registry refused the device.
//
// The handler owns only paths of the shapes above. A binary that shares its
// HTTPS listener with other handlers routes with IsDeviceAPIPath:
//
//	if dpstest.IsDeviceAPIPath(r.URL.EscapedPath()) { dps.ServeHTTP(w, r); return }
//
// With Options.StateDir set, registrations, their substatus history and the
// latest operation of every registration id survive a new Server on the same
// directory (atomic JSON file). Enrollments and groups are configuration and
// are not persisted; faults, FailNext counters and rate windows are in memory.
package dpstest
