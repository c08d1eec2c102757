package provisioning

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/fieldgate/fieldgate/sas"
)

// CacheFile is the name of the assignment cache inside the state directory.
const CacheFile = "provisioning.json"

// cacheVersion is the format version written by SaveCache.
const cacheVersion = 1

// maxCacheFile bounds what LoadCache reads; a valid cache is far smaller.
const maxCacheFile = 256 << 10

// fingerprintMessage is what KeyFingerprint signs.
const fingerprintMessage = "fieldgate/key-fingerprint/v1"

// Errors of the cache.
var (
	// ErrNoCache: there is no cache file (first boot, or after a forced
	// re-provisioning).
	ErrNoCache = errors.New("provisioning: no cached assignment")
	// ErrCorruptCache: the cache file was unreadable as an assignment and
	// has been moved aside; the *CorruptCacheError says where. Log it and
	// provision again.
	ErrCorruptCache = errors.New("provisioning: corrupt assignment cache")
)

// CorruptCacheError reports a cache file that was moved aside.
type CorruptCacheError struct {
	Path          string // the cache file
	QuarantinedTo string // where it was moved, or "" if the move failed
	Reason        string // what was wrong (never file content)
	MoveErr       error  // why the move failed, or nil
}

func (e *CorruptCacheError) Error() string {
	if e.QuarantinedTo == "" {
		return fmt.Sprintf("provisioning: cache %s is corrupt (%s) and could not be moved aside: %v; remove it", e.Path, e.Reason, e.MoveErr)
	}
	return fmt.Sprintf("provisioning: cache %s is corrupt (%s); moved to %s, provisioning again", e.Path, e.Reason, e.QuarantinedTo)
}

// Unwrap returns ErrCorruptCache.
func (e *CorruptCacheError) Unwrap() error { return ErrCorruptCache }

// Identity is what an assignment was obtained with. A cached assignment is
// used only when all four fields match the current configuration.
type Identity struct {
	IDScope, RegistrationID, Endpoint, KeyFingerprint string
}

// Mismatch returns why a cached assignment cannot serve want, or "" when it
// can. The reason names the setting that changed, never a value of the key.
func (want Identity) Mismatch(a Assignment) string {
	var why []string
	if !strings.EqualFold(a.IDScope, want.IDScope) {
		why = append(why, fmt.Sprintf("id_scope changed (cache %q, config %q)", a.IDScope, want.IDScope))
	}
	if !strings.EqualFold(a.RegistrationID, want.RegistrationID) {
		why = append(why, fmt.Sprintf("registration_id changed (cache %q, config %q)", a.RegistrationID, want.RegistrationID))
	}
	if normalizeOrSelf(a.Endpoint) != normalizeOrSelf(want.Endpoint) {
		why = append(why, fmt.Sprintf("global_endpoint changed (cache %q, config %q)", a.Endpoint, want.Endpoint))
	}
	if a.KeyFingerprint != want.KeyFingerprint {
		why = append(why, "the device key changed")
	}
	return strings.Join(why, "; ")
}

func normalizeOrSelf(s string) string {
	if n, err := NormalizeEndpoint(s); err == nil {
		return n
	}
	return s
}

// NormalizeEndpoint checks a DPS endpoint URL (https, a host, no user info,
// query or fragment) and returns it with a lower-case scheme and host and no
// trailing slash.
func NormalizeEndpoint(s string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		return "", fmt.Errorf("provisioning: global_endpoint %q is not a URL: %w", s, err)
	}
	if !strings.EqualFold(u.Scheme, "https") {
		return "", fmt.Errorf("provisioning: global_endpoint %q must start with https:// (e.g. %s)", s, DefaultEndpoint)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", fmt.Errorf("provisioning: global_endpoint %q must be https://host[:port] with no user, query or fragment", s)
	}
	return "https://" + strings.ToLower(u.Host) + strings.TrimRight(u.EscapedPath(), "/"), nil
}

// KeyFingerprint identifies a key without revealing it: the first 8 bytes,
// in hex, of HMAC-SHA256(key, "fieldgate/key-fingerprint/v1"). It changes
// whenever the key changes, so a cached assignment made with another key is
// not used.
func KeyFingerprint(s sas.Signer) (string, error) {
	if s == nil {
		return "", errors.New("provisioning: key fingerprint: no signer")
	}
	mac, err := s.Sign([]byte(fingerprintMessage))
	if err != nil {
		return "", fmt.Errorf("provisioning: key fingerprint: %w", err)
	}
	if len(mac) < 8 {
		return "", fmt.Errorf("provisioning: key fingerprint: signer returned %d bytes, want 32", len(mac))
	}
	return hex.EncodeToString(mac[:8]), nil
}

// cacheDoc is the file format.
type cacheDoc struct {
	Version int `json:"version"`
	Assignment
}

// validateAssignment checks what a usable assignment must have.
func validateAssignment(a Assignment) error {
	if err := ValidateHubHost(a.Hub); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	if err := validDeviceID(a.DeviceID); err != nil {
		return fmt.Errorf("deviceId: %w", err)
	}
	if err := validRegistrationID(a.RegistrationID); err != nil {
		return fmt.Errorf("registrationId: %w", err)
	}
	if err := validIDScope(a.IDScope); err != nil {
		return fmt.Errorf("idScope: %w", err)
	}
	if _, err := NormalizeEndpoint(a.Endpoint); err != nil {
		return fmt.Errorf("endpoint: %w", err)
	}
	if len(a.KeyFingerprint) != 16 {
		return errors.New("keyFingerprint is not 16 hex digits")
	}
	if _, err := hex.DecodeString(a.KeyFingerprint); err != nil {
		return errors.New("keyFingerprint is not 16 hex digits")
	}
	if len(a.Substatus) > 64 || !printable(a.Substatus) {
		return errors.New("substatus is not a short printable string")
	}
	if a.AssignedAt.IsZero() {
		return errors.New("assignedAt is missing")
	}
	if len(a.Payload) > 0 && !json.Valid(a.Payload) {
		return errors.New("payload is not valid JSON")
	}
	return nil
}

// ReadCache reads the cached assignment in dir without comparing identities.
// A missing file gives ErrNoCache. A file that is not a valid assignment is
// moved to provisioning.json.corrupt-<unix seconds> and reported as a
// *CorruptCacheError (ErrCorruptCache). Other errors are I/O errors.
func ReadCache(dir string) (Assignment, error) {
	path := filepath.Join(dir, CacheFile)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Assignment{}, fmt.Errorf("%w in %s", ErrNoCache, dir)
	}
	if err != nil {
		return Assignment{}, fmt.Errorf("provisioning: read cache: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxCacheFile+1))
	f.Close()
	if err != nil {
		return Assignment{}, fmt.Errorf("provisioning: read cache %s: %w", path, err)
	}
	var reason string
	var doc cacheDoc
	switch {
	case len(b) > maxCacheFile:
		reason = fmt.Sprintf("larger than %d bytes", maxCacheFile)
	case len(bytes.TrimSpace(b)) == 0:
		reason = fmt.Sprintf("empty or blank (%d bytes), probably torn by a power cut", len(b))
	default:
		dec := json.NewDecoder(bytes.NewReader(b))
		var extra json.RawMessage
		if err := dec.Decode(&doc); err != nil {
			reason = "not a JSON assignment: " + sanitize(err.Error(), 120)
		} else if dec.Decode(&extra) != io.EOF {
			reason = "trailing data after the JSON document"
		} else if doc.Version != cacheVersion {
			reason = fmt.Sprintf("format version %d, this build reads %d", doc.Version, cacheVersion)
		} else if err := validateAssignment(doc.Assignment); err != nil {
			reason = "invalid assignment: " + err.Error()
		}
	}
	if reason == "" {
		doc.Payload = compactJSON(doc.Payload)
		return doc.Assignment, nil
	}
	ce := &CorruptCacheError{Path: path, Reason: reason}
	ce.QuarantinedTo, ce.MoveErr = quarantine(path)
	return Assignment{}, ce
}

// quarantine renames path to path.corrupt-<unix>, adding -N when taken.
func quarantine(path string) (string, error) {
	// The time only names the file for the operator; nothing depends on it.
	base := path + ".corrupt-" + strconv.FormatInt(time.Now().Unix(), 10)
	for i := 0; i < 100; i++ {
		dst := base
		if i > 0 {
			dst += "-" + strconv.Itoa(i)
		}
		if _, err := os.Lstat(dst); err == nil {
			continue
		}
		if err := os.Rename(path, dst); err != nil {
			return "", err
		}
		syncDir(filepath.Dir(path))
		return dst, nil
	}
	return "", errors.New("too many quarantined cache files; clean up " + filepath.Dir(path))
}

// LoadCache returns the cached assignment when it exists, is valid and was
// made with want's identity. No file or an identity mismatch give
// (zero, false, nil): provision again (want.Mismatch on ReadCache's result
// tells why). A corrupt file is quarantined and reported with a
// *CorruptCacheError (errors.Is ErrCorruptCache): log it and provision again.
func LoadCache(dir string, want Identity) (Assignment, bool, error) {
	a, err := ReadCache(dir)
	if errors.Is(err, ErrNoCache) {
		return Assignment{}, false, nil
	}
	if err != nil {
		return Assignment{}, false, err
	}
	if want.Mismatch(a) != "" {
		return Assignment{}, false, nil
	}
	return a, true, nil
}

// SaveCache writes a to dir/provisioning.json atomically: a temporary file
// in dir (mode 0600) is written and fsynced, renamed over the cache, and the
// directory is fsynced, so a power cut leaves either the old or the new
// assignment, never a torn one.
func SaveCache(dir string, a Assignment) error {
	if err := validateAssignment(a); err != nil {
		return fmt.Errorf("provisioning: save cache: %w", err)
	}
	b, err := json.MarshalIndent(cacheDoc{Version: cacheVersion, Assignment: a}, "", "  ")
	if err != nil {
		return fmt.Errorf("provisioning: save cache: %w", err)
	}
	b = append(b, '\n')
	tmp, err := os.CreateTemp(dir, CacheFile+".tmp-*")
	if err != nil {
		return fmt.Errorf("provisioning: save cache: %w; check that the state directory exists and is writable", err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("provisioning: save cache: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		return fmt.Errorf("provisioning: save cache: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("provisioning: save cache: fsync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("provisioning: save cache: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, CacheFile)); err != nil {
		return fmt.Errorf("provisioning: save cache: %w", err)
	}
	ok = true
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("provisioning: save cache: fsync %s: %w", dir, err)
	}
	return nil
}

// RemoveCache deletes the cached assignment (fieldgate provision --force,
// or re-provisioning after repeated hub refusals). A missing file is not an
// error.
func RemoveCache(dir string) error {
	err := os.Remove(filepath.Join(dir, CacheFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("provisioning: remove cache: %w", err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// compactJSON returns valid JSON without insignificant white space, nil for
// empty or null.
func compactJSON(raw json.RawMessage) json.RawMessage {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return nil
	}
	var b bytes.Buffer
	if json.Compact(&b, t) != nil {
		return append(json.RawMessage(nil), t...)
	}
	return b.Bytes()
}
