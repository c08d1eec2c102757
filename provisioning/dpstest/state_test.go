package dpstest

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/internal/testlog"
)

func TestPersistenceAcrossNew(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, func(o *Options) { o.StateDir = dir })
	auth := e.token(t, indRegID, indKey, 2*time.Hour)
	first := e.poll(t, indRegID, e.register(t, indRegID, auth, `{"registrationId":"`+indRegID+`","payload":{"k":"v"}}`), auth, http.StatusOK)
	e.s.FailNext(vecRegID, 1)
	failedOp := e.register(t, vecRegID, vecToken, regBody(vecRegID))
	before := e.s.Registrations()

	// A new Server on the same directory (same clock, same configuration).
	e.clk.Advance(time.Minute)
	s2, err := New(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	e.s = s2
	after := e.s.Registrations()
	if fmt.Sprint(stripAts(after)) != fmt.Sprint(stripAts(before)) || len(after) != 2 ||
		!after[0].At.Equal(before[0].At) || !after[1].At.Equal(before[1].At) {
		t.Fatalf("Registrations() after New = %+v; want %+v", after, before)
	}
	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"failed operation still pollable", func(t *testing.T) {
			op := e.poll(t, vecRegID, failedOp, vecToken, http.StatusOK)
			if op.Status != StatusFailed || op.RegistrationState.ErrorCode != FailCodeNoHub {
				t.Fatalf("operation = %+v; want failed 400208", op.RegistrationState)
			}
		}},
		{"status lookup returns the stored state", func(t *testing.T) {
			w := e.do(t, http.MethodPost, statusPath(indRegID), auth, "")
			var rs registrationState
			decodeJSON(t, w, &rs)
			if fmt.Sprint(rs) != fmt.Sprint(*first.RegistrationState) {
				t.Fatalf("lookup = %+v; want %+v", rs, *first.RegistrationState)
			}
		}},
		{"substatus history continues", func(t *testing.T) {
			op := e.poll(t, indRegID, e.register(t, indRegID, auth, regBody(indRegID)), auth, http.StatusOK)
			if op.RegistrationState.Substatus != SubstatusReprovisionedToInitialAssignment ||
				op.RegistrationState.CreatedDateTimeUTC != first.RegistrationState.CreatedDateTimeUTC {
				t.Fatalf("after restart = %+v; want reprovisioned with the original createdDateTimeUtc", op.RegistrationState)
			}
		}},
		{"failed registration did not count as an assignment", func(t *testing.T) {
			op := e.poll(t, vecRegID, e.register(t, vecRegID, vecToken, regBody(vecRegID)), vecToken, http.StatusOK)
			if op.RegistrationState.Substatus != SubstatusInitialAssignment {
				t.Fatalf("substatus = %s; want initialAssignment", op.RegistrationState.Substatus)
			}
		}},
		{"state file is private and no temporary file is left", func(t *testing.T) {
			fi, err := os.Stat(filepath.Join(dir, StateFileName))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Fatalf("state file mode = %v; want 0600", fi.Mode().Perm())
			}
			ents, _ := os.ReadDir(dir)
			if len(ents) != 1 {
				t.Fatalf("state dir holds %d entries; want only %s", len(ents), StateFileName)
			}
			data, _ := os.ReadFile(filepath.Join(dir, StateFileName))
			for _, secret := range []string{indKey, groupKey, vecDerived, vecTokenSig} {
				if strings.Contains(string(data), secret) {
					t.Fatal("state file contains a key or signature")
				}
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.run)
	}
	// Third generation sees all four registrations.
	s3, err := New(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(s3.Registrations()); got != 4 {
		t.Fatalf("third Server has %d registrations; want 4", got)
	}
}

func stripAts(rs []Registration) []Registration {
	out := make([]Registration, len(rs))
	for i, r := range rs {
		out[i] = stripAt(r)
	}
	return out
}

func TestCorruptStateMovedAside(t *testing.T) {
	tests := []struct {
		name string
		data string
	}{
		{"not JSON", "{{{"},
		{"null", "null"},
		{"future version", `{"version":2,"records":{}}`},
		{"record under the wrong key", `{"version":1,"records":{"a":{"registrationId":"b"}}}`},
		{"operation without id", `{"version":1,"records":{"a":{"registrationId":"a","operation":{"state":{"registrationId":"a"}}}}}`},
		{"truncated write", `{"version":1,"records":{"a":{"registrationId":"a"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, StateFileName)
			if err := os.WriteFile(path, []byte(tc.data), 0o600); err != nil {
				t.Fatal(err)
			}
			e := newEnv(t, func(o *Options) { o.StateDir = dir })
			if n := len(e.s.Registrations()); n != 0 {
				t.Fatalf("Registrations() = %d after a corrupt file; want 0", n)
			}
			aside := path + ".corrupt-" + strconv.FormatInt(t0.Unix(), 10)
			got, err := os.ReadFile(aside)
			if err != nil || string(got) != tc.data {
				t.Fatalf("corrupt file not moved aside intact to %s: %v", aside, err)
			}
			if !strings.Contains(e.logs.String(), "level=WARN") || !strings.Contains(e.logs.String(), "corrupt") {
				t.Fatalf("no warning logged:\n%s", e.logs)
			}
			// The emulator keeps working and writes a fresh file.
			auth := e.token(t, indRegID, indKey, time.Hour)
			e.register(t, indRegID, auth, regBody(indRegID))
			if _, err := New(e.opts); err != nil {
				t.Fatal(err)
			}
			if data, err := os.ReadFile(path); err != nil || !strings.Contains(string(data), indRegID) {
				t.Fatalf("fresh state file not written: %v", err)
			}
		})
	}
}

func TestPersistFailureRollsBack(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, func(o *Options) { o.StateDir = dir })
	auth := e.token(t, indRegID, indKey, time.Hour)
	opID := e.register(t, indRegID, auth, regBody(indRegID))
	// Make the state file path a non-empty directory: the atomic rename fails.
	path := filepath.Join(dir, StateFileName)
	mustOK(t, os.Remove(path))
	mustOK(t, os.MkdirAll(filepath.Join(path, "blocker"), 0o700))
	e.s.FailNext(indRegID, 1)
	w := e.do(t, http.MethodPut, registerPath(indRegID), auth, regBody(indRegID))
	msg := wantError(t, w, http.StatusInternalServerError, 500001)
	if !strings.Contains(msg, "persist") {
		t.Fatalf("message %q does not say what failed", msg)
	}
	if n := len(e.s.Registrations()); n != 1 {
		t.Fatalf("Registrations() = %d after a failed write; want the 1 persisted before", n)
	}
	// The earlier operation is still the latest one, and the FailNext is still pending.
	if op := e.poll(t, indRegID, opID, auth, http.StatusOK); op.Status != StatusAssigned {
		t.Fatalf("earlier operation = %+v", op)
	}
	mustOK(t, os.RemoveAll(path))
	if op := e.poll(t, indRegID, e.register(t, indRegID, auth, regBody(indRegID)), auth, http.StatusOK); op.Status != StatusFailed {
		t.Fatalf("after recovery status = %s; want failed (the FailNext was rolled back, not consumed)", op.Status)
	}
	for _, ent := range mustReadDir(t, dir) {
		if strings.Contains(ent, ".tmp") {
			t.Fatalf("temporary file %s left behind", ent)
		}
	}
}

func mustReadDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestUnreadableStateIsAnError(t *testing.T) {
	dir := t.TempDir()
	mustOK(t, os.Mkdir(filepath.Join(dir, StateFileName), 0o700)) // reading it fails with EISDIR
	o := baseOptions(newEnv(t, nil).clk, &fakeRegistry{}, &testlog.Buffer{})
	o.StateDir = dir
	if _, err := New(o); err == nil || !strings.Contains(err.Error(), "dpstest: reading state") {
		t.Fatalf("New() error = %v; want a read error", err)
	}
}
