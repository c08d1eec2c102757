// Package identity owns loading the device's symmetric key: from a key file,
// from an enrollment-group key file (the device key is then derived from the
// registration id and the group key destroyed), or from a systemd credential.
// Key files readable or writable by group or others are refused with the
// chmod command that fixes them, and no error ever contains key material.
//
// Imported by the agent and by cmd/fieldgate (doctor, provision), so both load
// keys by exactly the same rules.
package identity

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/fieldgate/fieldgate/internal/secretfile"
	"github.com/fieldgate/fieldgate/sas"
)

// CredentialsDirEnv is the environment variable systemd sets to the
// directory holding the unit's credentials (LoadCredential=,
// LoadCredentialEncrypted=, SetCredential=).
const CredentialsDirEnv = "CREDENTIALS_DIRECTORY"

// Source says where the key comes from. Exactly one of KeyFile, GroupKeyFile
// and Credential must be set.
type Source struct {
	KeyFile        string // per-device key file (mode 0600 or 0400)
	GroupKeyFile   string // enrollment-group key file; needs RegistrationID
	Credential     string // systemd credential name holding the device key
	RegistrationID string // required with GroupKeyFile: the derivation input
	CredentialsDir string // $CREDENTIALS_DIRECTORY, required with Credential
}

// Kind names the configured source ("key_file", "group_key_file",
// "key_credential"), or "" when none is set.
func (s Source) Kind() string {
	switch {
	case s.KeyFile != "":
		return "key_file"
	case s.GroupKeyFile != "":
		return "group_key_file"
	case s.Credential != "":
		return "key_credential"
	}
	return ""
}

// LoadKey returns the device key described by src. For a group key the
// device key is sas.DeriveKey(groupKey, RegistrationID) and the group key is
// destroyed before LoadKey returns. The caller owns the returned key and
// should Destroy it when done.
//
// Files (key_file, group_key_file) are read by secretfile.Read and refused
// when group or others may access them. Credentials are not held to that
// rule: systemd writes each credential with mode 0400 and then grants the
// unit's user read access with a POSIX ACL, and a file with an ACL reports
// the ACL mask in its group bits (0440), although only root and the unit's
// user can read it; the privacy comes from the per-unit credentials directory
// (accessible to that user only, read-only, on a non-swappable ramfs where
// possible). A credential readable by others (mode & 0o007), which systemd
// never produces, is still refused.
func LoadKey(src Source) (*sas.Key, error) {
	n := 0
	for _, v := range []string{src.KeyFile, src.GroupKeyFile, src.Credential} {
		if v != "" {
			n++
		}
	}
	switch n {
	case 0:
		return nil, errors.New("identity: no key configured; set one of key_file, group_key_file or key_credential in [provisioning.attestation]")
	case 1:
	default:
		return nil, errors.New("identity: more than one of key_file, group_key_file and key_credential is set; keep exactly one")
	}
	switch {
	case src.KeyFile != "":
		return loadFile(src.KeyFile, "key_file")
	case src.GroupKeyFile != "":
		if src.RegistrationID == "" {
			return nil, fmt.Errorf("identity: group_key_file %s needs the registration id to derive the device key; set registration_id", src.GroupKeyFile)
		}
		group, err := loadFile(src.GroupKeyFile, "group_key_file")
		if err != nil {
			return nil, err
		}
		defer group.Destroy()
		k, err := sas.DeriveKey(group, src.RegistrationID)
		if err != nil {
			return nil, fmt.Errorf("identity: derive the device key from group_key_file %s: %w", src.GroupKeyFile, err)
		}
		return k, nil
	default:
		return loadCredential(src.CredentialsDir, src.Credential)
	}
}

// loadFile reads and parses a key file with the permission check.
func loadFile(path, setting string) (*sas.Key, error) {
	b, err := secretfile.Read(path)
	if err != nil {
		return nil, fmt.Errorf("identity: %s: %w", setting, err)
	}
	defer clear(b)
	k, err := sas.ParseKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("identity: %s %s does not hold a key: %w", setting, path, err)
	}
	return k, nil
}

// loadCredential reads the credential name from dir.
func loadCredential(dir, name string) (*sas.Key, error) {
	if dir == "" {
		return nil, fmt.Errorf("identity: key_credential %q is set but $%s is not; run fieldgate from a systemd unit with LoadCredential=%s:/path/to/key (or LoadCredentialEncrypted=), or use key_file", name, CredentialsDirEnv, name)
	}
	if name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return nil, fmt.Errorf("identity: key_credential %q is not a credential name; use the name given in LoadCredential=NAME:PATH", name)
	}
	path := filepath.Join(dir, name)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("identity: key_credential %q: %w; check LoadCredential=%s:… in the unit", name, err, name)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("identity: key_credential %q: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("identity: key_credential %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o007 != 0 {
		return nil, fmt.Errorf("identity: key_credential %s has mode %04o and is accessible by others; fix: chmod o-rwx %s (systemd creates credentials 0400)", path, uint32(perm), path)
	}
	b, err := io.ReadAll(io.LimitReader(f, secretfile.MaxSize+1))
	defer clear(b)
	if err != nil {
		return nil, fmt.Errorf("identity: read key_credential %s: %w", path, err)
	}
	if len(b) > secretfile.MaxSize {
		return nil, fmt.Errorf("identity: key_credential %s is larger than %d bytes; it must hold only the base64 key", path, secretfile.MaxSize)
	}
	k, err := sas.ParseKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("identity: key_credential %s does not hold a key: %w", path, err)
	}
	return k, nil
}
