package identity

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fieldgate/fieldgate/internal/secretfile"
	"github.com/fieldgate/fieldgate/sas"
)

// Vector from azure-iot-protocol.md §1.6.
const (
	groupKey   = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
	regID      = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"
	derivedKey = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="
	deviceKey  = "c2VjcmV0LWRldmljZS1rZXktZm9yLXRlc3RzLW9ubHk="
)

// writeFile creates name in dir with data and exactly mode.
func writeFile(t *testing.T, dir, name, data string, mode fs.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadKey(t *testing.T) {
	dir := t.TempDir()
	keyFile := writeFile(t, dir, "device.key", deviceKey+"\n", 0o600)
	keyFile400 := writeFile(t, dir, "device400.key", deviceKey, 0o400)
	groupFile := writeFile(t, dir, "group.key", groupKey+"\n", 0o600)
	worldFile := writeFile(t, dir, "world.key", deviceKey, 0o644)
	groupReadable := writeFile(t, dir, "groupr.key", groupKey, 0o640)
	notKey := writeFile(t, dir, "notkey", "this is not base64 !!\n", 0o600)

	creds := t.TempDir()
	writeFile(t, creds, "fieldgate-key", deviceKey+"\n", 0o400)
	writeFile(t, creds, "acl-style", deviceKey, 0o440) // what ls shows for a credential with a user ACL
	writeFile(t, creds, "world", deviceKey, 0o444)
	writeFile(t, creds, "garbage", "%%%%", 0o400)

	tests := []struct {
		name    string
		src     Source
		want    string // base64 of the expected key
		wantErr []string
		isMode  bool
	}{
		{name: "key file 0600", src: Source{KeyFile: keyFile}, want: deviceKey},
		{name: "key file 0400", src: Source{KeyFile: keyFile400}, want: deviceKey},
		{name: "group key derives device key", src: Source{GroupKeyFile: groupFile, RegistrationID: regID}, want: derivedKey},
		{name: "credential 0400", src: Source{Credential: "fieldgate-key", CredentialsDir: creds}, want: deviceKey},
		{name: "credential 0440 (ACL mask) accepted", src: Source{Credential: "acl-style", CredentialsDir: creds}, want: deviceKey},
		{name: "world-readable key file refused", src: Source{KeyFile: worldFile},
			wantErr: []string{"key_file", worldFile, "0644", "chmod 600 " + worldFile}, isMode: true},
		{name: "group-readable group key refused", src: Source{GroupKeyFile: groupReadable, RegistrationID: regID},
			wantErr: []string{"group_key_file", "0640", "chmod 600"}, isMode: true},
		{name: "no source", src: Source{}, wantErr: []string{"no key configured", "key_file"}},
		{name: "two sources", src: Source{KeyFile: keyFile, Credential: "x", CredentialsDir: creds}, wantErr: []string{"more than one"}},
		{name: "group key without registration id", src: Source{GroupKeyFile: groupFile}, wantErr: []string{"registration_id"}},
		{name: "missing key file", src: Source{KeyFile: filepath.Join(dir, "nope")}, wantErr: []string{"key_file", "nope"}},
		{name: "file is not a key", src: Source{KeyFile: notKey}, wantErr: []string{notKey, "does not hold a key"}},
		{name: "credential without directory", src: Source{Credential: "fieldgate-key"}, wantErr: []string{"CREDENTIALS_DIRECTORY", "LoadCredential=fieldgate-key:"}},
		{name: "credential path traversal", src: Source{Credential: "../device.key", CredentialsDir: creds}, wantErr: []string{"not a credential name"}},
		{name: "credential dot-dot", src: Source{Credential: "..", CredentialsDir: creds}, wantErr: []string{"not a credential name"}},
		{name: "missing credential", src: Source{Credential: "absent", CredentialsDir: creds}, wantErr: []string{"absent", "LoadCredential=absent"}},
		{name: "world-readable credential", src: Source{Credential: "world", CredentialsDir: creds}, wantErr: []string{"0444", "chmod o-rwx"}},
		{name: "credential not a key", src: Source{Credential: "garbage", CredentialsDir: creds}, wantErr: []string{"does not hold a key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := LoadKey(tt.src)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("LoadKey(%+v) error = %v", tt.src, err)
				}
				if got := k.Base64(); got != tt.want {
					t.Fatalf("LoadKey(%+v) = key %q…; want %q…", tt.src, got[:6], tt.want[:6])
				}
				k.Destroy()
				return
			}
			if err == nil {
				t.Fatalf("LoadKey(%+v) = nil error; want %q", tt.src, tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("LoadKey error %q does not contain %q", err, w)
				}
			}
			for _, secret := range []string{deviceKey, groupKey, derivedKey, "this is not base64", "%%%%"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("LoadKey error %q contains file content %q", err, secret)
				}
			}
			var me *secretfile.ModeError
			if got := errors.As(err, &me); got != tt.isMode {
				t.Errorf("errors.As(%v, *secretfile.ModeError) = %v; want %v", err, got, tt.isMode)
			}
		})
	}
}

func TestDerivedKeySignsLikeOffDeviceDerivation(t *testing.T) {
	dir := t.TempDir()
	groupFile := writeFile(t, dir, "group.key", groupKey, 0o600)
	k, err := LoadKey(Source{GroupKeyFile: groupFile, RegistrationID: regID})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Destroy()
	off, err := sas.DeriveDeviceKey(groupKey, regID)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := sas.ParseKey(off)
	a, _ := sas.NewRegistrationToken("0ne00000000", regID, 1700000000, k)
	b, _ := sas.NewRegistrationToken("0ne00000000", regID, 1700000000, want)
	if a.String() != b.String() {
		t.Fatalf("token signed with loaded group-derived key differs from the off-device derivation")
	}
	if s := fmt.Sprint(k); strings.Contains(s, derivedKey) {
		t.Fatalf("formatting the key printed it: %s", s)
	}
}

func TestSourceKind(t *testing.T) {
	tests := []struct {
		src  Source
		want string
	}{
		{Source{KeyFile: "a"}, "key_file"},
		{Source{GroupKeyFile: "a"}, "group_key_file"},
		{Source{Credential: "a"}, "key_credential"},
		{Source{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.src.Kind(); got != tt.want {
				t.Errorf("Kind(%+v) = %q; want %q", tt.src, got, tt.want)
			}
		})
	}
}
