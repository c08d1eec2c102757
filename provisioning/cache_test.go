package provisioning

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/sas"
)

func testAssignment(t *testing.T) Assignment {
	t.Helper()
	k, _ := sas.ParseKey(testDerivedKey)
	fp, err := KeyFingerprint(k)
	if err != nil {
		t.Fatal(err)
	}
	return Assignment{
		Hub: "plant7-hub.azure-devices.net", DeviceID: testRegID, Substatus: "initialAssignment",
		RegistrationID: testRegID, IDScope: testScope, Endpoint: DefaultEndpoint,
		AssignedAt: testEpoch, Payload: json.RawMessage(`{"site":"plant-7"}`), KeyFingerprint: fp,
	}
}

func TestCacheRoundTrip(t *testing.T) {
	dir := t.TempDir()
	a := testAssignment(t)
	if err := SaveCache(dir, a); err != nil {
		t.Fatalf("SaveCache: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, CacheFile))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("cache mode = %04o; want 0600", perm)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("state dir holds %d entries after SaveCache; want only %s (no temp files)", len(entries), CacheFile)
	}
	got, ok, err := LoadCache(dir, a.Identity())
	if err != nil || !ok {
		t.Fatalf("LoadCache = %v, %v; want the assignment", ok, err)
	}
	if got.Hub != a.Hub || got.DeviceID != a.DeviceID || got.Substatus != a.Substatus || !got.AssignedAt.Equal(a.AssignedAt) ||
		string(got.Payload) != string(a.Payload) || got.Identity() != a.Identity() {
		t.Errorf("LoadCache = %+v; want %+v", got, a)
	}
	// Overwrite with a new assignment: the latest wins.
	a.Hub = "other-hub.azure-devices.net"
	if err := SaveCache(dir, a); err != nil {
		t.Fatal(err)
	}
	got, ok, _ = LoadCache(dir, a.Identity())
	if !ok || got.Hub != a.Hub {
		t.Errorf("after overwrite LoadCache hub = %q; want %q", got.Hub, a.Hub)
	}
	// The file holds no secret.
	b, _ := os.ReadFile(filepath.Join(dir, CacheFile))
	assertNoSecrets(t, "cache file", string(b))
}

func TestCacheMissing(t *testing.T) {
	a, ok, err := LoadCache(t.TempDir(), testAssignment(t).Identity())
	if err != nil || ok || a.Hub != "" {
		t.Errorf("LoadCache(empty dir) = %+v, %v, %v; want zero, false, nil", a, ok, err)
	}
	if _, err := ReadCache(t.TempDir()); !errors.Is(err, ErrNoCache) {
		t.Errorf("ReadCache(empty dir) error = %v; want ErrNoCache", err)
	}
}

func TestCacheIdentityMismatch(t *testing.T) {
	a := testAssignment(t)
	other, _ := sas.ParseKey("c2VjcmV0LWRldmljZS1rZXktZm9yLXRlc3RzLW9ubHk=")
	otherFP, _ := KeyFingerprint(other)
	tests := []struct {
		name   string
		mod    func(id *Identity)
		reason string // "" → match
	}{
		{"same", func(id *Identity) {}, ""},
		{"scope case differs", func(id *Identity) { id.IDScope = strings.ToUpper(id.IDScope) }, ""},
		{"endpoint trailing slash", func(id *Identity) { id.Endpoint += "/" }, ""},
		{"id scope changed", func(id *Identity) { id.IDScope = "0ne99999999" }, "id_scope changed"},
		{"registration id changed", func(id *Identity) { id.RegistrationID = "gw-2" }, "registration_id changed"},
		{"endpoint changed", func(id *Identity) { id.Endpoint = "https://127.0.0.1:8443" }, "global_endpoint changed"},
		{"key changed", func(id *Identity) { id.KeyFingerprint = otherFP }, "the device key changed"},
	}
	dir := t.TempDir()
	if err := SaveCache(dir, a); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := a.Identity()
			tt.mod(&want)
			got, ok, err := LoadCache(dir, want)
			if err != nil {
				t.Fatalf("LoadCache error = %v", err)
			}
			if ok != (tt.reason == "") {
				t.Fatalf("LoadCache ok = %v; want %v", ok, tt.reason == "")
			}
			if !ok && got.Hub != "" {
				t.Errorf("LoadCache returned %+v with ok=false; want zero", got)
			}
			cached, err := ReadCache(dir)
			if err != nil {
				t.Fatal(err)
			}
			reason := want.Mismatch(cached)
			if tt.reason == "" && reason != "" || !strings.Contains(reason, tt.reason) {
				t.Errorf("Mismatch = %q; want %q", reason, tt.reason)
			}
			if strings.Contains(reason, want.KeyFingerprint) || strings.Contains(reason, a.KeyFingerprint) {
				t.Errorf("Mismatch reason %q names a fingerprint", reason)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, CacheFile)); err != nil {
		t.Errorf("a mismatching cache must be left in place for the re-provisioning to overwrite: %v", err)
	}
}

func TestCorruptCacheQuarantined(t *testing.T) {
	valid := func(t *testing.T) []byte {
		dir := t.TempDir()
		if err := SaveCache(dir, testAssignment(t)); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(filepath.Join(dir, CacheFile))
		return b
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 512)
	for i := range random {
		random[i] = byte(rnd.UintN(256))
	}
	tests := []struct {
		name   string
		data   func(t *testing.T) []byte
		reason string
	}{
		{"empty (torn before the first write)", func(t *testing.T) []byte { return nil }, "empty"},
		{"zero-filled", func(t *testing.T) []byte { return make([]byte, 300) }, "not a JSON assignment"},
		{"truncated tail", func(t *testing.T) []byte { b := valid(t); return b[:len(b)/2] }, "not a JSON assignment"},
		{"zero-filled tail", func(t *testing.T) []byte {
			b := valid(t)
			for i := len(b) / 2; i < len(b); i++ {
				b[i] = 0
			}
			return b
		}, "not a JSON assignment"},
		{"random bytes", func(t *testing.T) []byte { return random }, "not a JSON assignment"},
		{"trailing garbage", func(t *testing.T) []byte { return append(valid(t), []byte("{}")...) }, "trailing data"},
		{"JSON of another shape", func(t *testing.T) []byte { return []byte(`[1,2]`) }, "not a JSON assignment"},
		{"future version", func(t *testing.T) []byte {
			return bytes.Replace(valid(t), []byte(`"version": 1`), []byte(`"version": 2`), 1)
		}, "format version 2"},
		{"hub with scheme", func(t *testing.T) []byte {
			return bytes.Replace(valid(t), []byte(`"hub": "`), []byte(`"hub": "https://`), 1)
		}, "invalid assignment: hub"},
		{"missing device id", func(t *testing.T) []byte {
			return bytes.Replace(valid(t), []byte(`"deviceId"`), []byte(`"deviceID_"`), 1)
		}, "deviceId"},
		{"huge", func(t *testing.T) []byte { return bytes.Repeat([]byte(" "), maxCacheFile+10) }, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, CacheFile)
			data := tt.data(t)
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			a, ok, err := LoadCache(dir, testAssignment(t).Identity())
			if ok || a.Hub != "" {
				t.Fatalf("LoadCache(corrupt) = %+v, %v; want nothing", a, ok)
			}
			var ce *CorruptCacheError
			if !errors.As(err, &ce) || !errors.Is(err, ErrCorruptCache) {
				t.Fatalf("LoadCache(corrupt) error = %v; want *CorruptCacheError", err)
			}
			if !strings.Contains(ce.Reason, tt.reason) {
				t.Errorf("reason %q does not contain %q", ce.Reason, tt.reason)
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("corrupt cache still at %s (stat err %v)", path, err)
			}
			if !strings.HasPrefix(ce.QuarantinedTo, path+".corrupt-") {
				t.Fatalf("QuarantinedTo = %q; want %s.corrupt-<unix>", ce.QuarantinedTo, path)
			}
			moved, err := os.ReadFile(ce.QuarantinedTo)
			if err != nil || !bytes.Equal(moved, data) {
				t.Errorf("quarantined file differs from the original (err %v)", err)
			}
			if !strings.Contains(ce.Error(), ce.QuarantinedTo) {
				t.Errorf("error %q does not name where the file went", ce)
			}
			// The next boot finds no cache and provisions again.
			if _, ok, err := LoadCache(dir, testAssignment(t).Identity()); ok || err != nil {
				t.Errorf("second LoadCache = %v, %v; want false, nil", ok, err)
			}
		})
	}
}

func TestCorruptCacheQuarantineNamesDoNotCollide(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, CacheFile)
	seen := map[string]bool{}
	for i := 0; i < 3; i++ {
		if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := LoadCache(dir, Identity{})
		var ce *CorruptCacheError
		if !errors.As(err, &ce) || ce.QuarantinedTo == "" {
			t.Fatalf("LoadCache = %v", err)
		}
		if seen[ce.QuarantinedTo] {
			t.Fatalf("quarantine reused %s", ce.QuarantinedTo)
		}
		seen[ce.QuarantinedTo] = true
	}
}

func TestSaveCacheRefusesInvalid(t *testing.T) {
	tests := []struct {
		name string
		mod  func(a *Assignment)
		want string
	}{
		{"no hub", func(a *Assignment) { a.Hub = "" }, "hub"},
		{"hub with path", func(a *Assignment) { a.Hub = "h.example.net/x" }, "hub"},
		{"no device", func(a *Assignment) { a.DeviceID = "" }, "deviceId"},
		{"no fingerprint", func(a *Assignment) { a.KeyFingerprint = "" }, "keyFingerprint"},
		{"no time", func(a *Assignment) { a.AssignedAt = time.Time{} }, "assignedAt"},
		{"bad payload", func(a *Assignment) { a.Payload = json.RawMessage(`{`) }, "payload"},
		{"bad endpoint", func(a *Assignment) { a.Endpoint = "ftp://x" }, "endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			a := testAssignment(t)
			tt.mod(&a)
			err := SaveCache(dir, a)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("SaveCache error = %v; want it to mention %q", err, tt.want)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("SaveCache left %d files behind", len(entries))
			}
		})
	}
	t.Run("missing dir", func(t *testing.T) {
		err := SaveCache(filepath.Join(t.TempDir(), "nope"), testAssignment(t))
		if err == nil || !strings.Contains(err.Error(), "state directory") {
			t.Errorf("SaveCache(missing dir) = %v; want an error naming the state directory", err)
		}
	})
}

func TestRemoveCache(t *testing.T) {
	dir := t.TempDir()
	if err := SaveCache(dir, testAssignment(t)); err != nil {
		t.Fatal(err)
	}
	if err := RemoveCache(dir); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := LoadCache(dir, testAssignment(t).Identity()); ok {
		t.Error("cache still loads after RemoveCache")
	}
	if err := RemoveCache(dir); err != nil {
		t.Errorf("RemoveCache twice = %v; want nil", err)
	}
}

func TestKeyFingerprint(t *testing.T) {
	k1, _ := sas.ParseKey(testDerivedKey)
	k2, _ := sas.ParseKey(testGroupKey)
	f1, err := KeyFingerprint(k1)
	if err != nil {
		t.Fatal(err)
	}
	f1again, _ := KeyFingerprint(k1)
	f2, _ := KeyFingerprint(k2)
	if f1 != f1again || f1 == f2 || len(f1) != 16 {
		t.Errorf("fingerprints %q %q %q; want stable, distinct, 16 hex digits", f1, f1again, f2)
	}
	mac, _ := k1.Sign([]byte(fingerprintMessage))
	if want := strings.ToLower(strings.TrimSpace(hexOf(mac[:8]))); f1 != want {
		t.Errorf("KeyFingerprint = %q; want %q", f1, want)
	}
	if _, err := KeyFingerprint(nil); err == nil {
		t.Error("KeyFingerprint(nil) succeeded")
	}
	k1.Destroy()
	if _, err := KeyFingerprint(k1); err == nil {
		t.Error("KeyFingerprint(destroyed) succeeded")
	}
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	var s strings.Builder
	for _, c := range b {
		s.WriteByte(digits[c>>4])
		s.WriteByte(digits[c&15])
	}
	return s.String()
}
