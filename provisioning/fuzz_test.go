package provisioning

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzDecodeOperation feeds arbitrary DPS answers to the parser: it must
// never panic, and whatever it accepts must be safe to use.
func FuzzDecodeOperation(f *testing.F) {
	for _, s := range []string{
		assigningBody,
		assignedBody(testHub, testRegID),
		`{"status":"failed","registrationState":{"errorCode":400208,"errorMessage":"no hub"}}`,
		`{"status":"disabled"}`,
		`{"status":"assigned","registrationState":{"assignedHub":"[::1]:8883","deviceId":"d","payload":{"a":[1,2]}}}`,
		`{"operationId":"..","status":"assigning"}`,
		`<html>`, ``, `null`, `{"status":5}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		op, err := decodeOperation(body)
		if err != nil {
			if !errors.Is(err, ErrBadResponse) {
				t.Fatalf("decodeOperation error %v is not ErrBadResponse", err)
			}
			return
		}
		switch op.Status {
		case statusAssigning, statusUnassigned:
			if validOperationID(op.OperationID) != nil || op.OperationID == "" {
				t.Fatalf("accepted operation id %q", op.OperationID)
			}
		case statusAssigned:
			rs := op.RegistrationState
			if rs == nil || ValidateHubHost(rs.AssignedHub) != nil || validDeviceID(rs.DeviceID) != nil {
				t.Fatalf("accepted assignment %+v", rs)
			}
		case statusFailed, statusDisabled:
		default:
			t.Fatalf("accepted status %q", op.Status)
		}
		// Error bodies are parsed leniently and never panic either.
		_ = decodeError("register", 500, body).Error()
	})
}

// FuzzLoadCache writes arbitrary bytes as the cache file: LoadCache must not
// panic, must quarantine what it rejects, and what it accepts must survive a
// save and load unchanged.
func FuzzLoadCache(f *testing.F) {
	dir := f.TempDir()
	a := Assignment{Hub: testHub, DeviceID: "d", RegistrationID: testRegID, IDScope: testScope, Endpoint: DefaultEndpoint,
		AssignedAt: testEpoch, KeyFingerprint: "0123456789abcdef"}
	if err := SaveCache(dir, a); err != nil {
		f.Fatal(err)
	}
	valid, err := os.ReadFile(filepath.Join(dir, CacheFile))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(valid[:len(valid)/2])
	f.Add([]byte{})
	f.Add(make([]byte, 64))
	f.Add([]byte(`{"version":1}`))
	work := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		// One directory per worker process, emptied for every input (a
		// TempDir per input makes the fuzzer crawl).
		dir := filepath.Join(work, "state")
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, CacheFile)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		got, ok, err := LoadCache(dir, a.Identity())
		if err != nil {
			var ce *CorruptCacheError
			if !errors.As(err, &ce) || ce.QuarantinedTo == "" {
				t.Fatalf("LoadCache error %v is not a quarantined corrupt cache", err)
			}
			if _, err := os.Stat(path); err == nil {
				t.Fatal("rejected cache left in place")
			}
			return
		}
		if !ok {
			return // valid file of another identity
		}
		if err := validateAssignment(got); err != nil {
			t.Fatalf("accepted invalid assignment: %v", err)
		}
		if err := SaveCache(dir, got); err != nil {
			t.Fatalf("SaveCache(accepted) = %v", err)
		}
		again, ok, err := LoadCache(dir, a.Identity())
		if err != nil || !ok || again.Hub != got.Hub || again.DeviceID != got.DeviceID || string(again.Payload) != string(got.Payload) {
			t.Fatalf("round trip changed %+v into %+v (%v, %v)", got, again, ok, err)
		}
	})
}

// FuzzValidateHubHost: never panics; accepted hosts contain no URL syntax.
func FuzzValidateHubHost(f *testing.F) {
	for _, s := range []string{"h.example.net", "127.0.0.1:8883", "[::1]:1", "https://x", "a b", "[", "]:", ":"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateHubHost(s) != nil {
			return
		}
		for _, bad := range []string{"/", " ", "@", "?", "#", "\\"} {
			if strings.Contains(s, bad) {
				t.Fatalf("accepted %q containing %q", s, bad)
			}
		}
	})
}
