package sas

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// Signer computes the HMAC-SHA256 of a string-to-sign. Key is the in-memory
// implementation; a TPM or HSM backed signer can implement the same method
// without ever exposing the key bytes.
type Signer interface {
	// Sign returns the raw (not base64-encoded) HMAC-SHA256 of message.
	Sign(message []byte) ([]byte, error)
}

// ErrKeyEncoding reports a key string that is not valid base64.
var ErrKeyEncoding = errors.New("sas: key is not valid base64")

// Key is a symmetric key held in memory. Its String, GoString and LogValue
// methods never reveal the key bytes, so a Key passed to a logger or a
// formatting verb by mistake prints "[redacted]".
type Key struct {
	secret []byte
}

// ParseKey decodes a base64 key as shown by Azure (device primary/secondary
// key, enrollment-group key or shared access policy key). Standard base64 is
// accepted with or without '=' padding; surrounding white space (a trailing
// newline in a key file) is ignored. Anything else is an error that does not
// echo the key.
func ParseKey(s string) (*Key, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("%w: the key is empty; paste the primary or secondary key exactly as shown by Azure", ErrKeyEncoding)
	}
	enc := base64.StdEncoding
	if !strings.HasSuffix(s, "=") && len(s)%4 != 0 {
		enc = base64.RawStdEncoding
	}
	b, err := enc.DecodeString(s)
	if err != nil {
		var ce base64.CorruptInputError
		if errors.As(err, &ce) {
			return nil, fmt.Errorf("%w: invalid character or length at byte %d of %d; use the key exactly as shown by Azure (standard base64, A-Z a-z 0-9 + /, optional '=' padding)", ErrKeyEncoding, int64(ce), len(s))
		}
		return nil, fmt.Errorf("%w: use the key exactly as shown by Azure", ErrKeyEncoding)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: the key decodes to zero bytes", ErrKeyEncoding)
	}
	return &Key{secret: b}, nil
}

// NewKey returns a Key over raw secret bytes, for schemes whose key is used as
// UTF-8 text rather than base64-decoded (Service Bus / Event Hubs style keys,
// the Locatrix API secret). The bytes are copied.
func NewKey(secret []byte) *Key {
	return &Key{secret: append([]byte(nil), secret...)}
}

// Sign implements Signer.
func (k *Key) Sign(message []byte) ([]byte, error) {
	if k == nil || len(k.secret) == 0 {
		return nil, errors.New("sas: sign: key is empty or was destroyed")
	}
	m := hmac.New(sha256.New, k.secret)
	m.Write(message)
	return m.Sum(nil), nil
}

// Base64 returns the key in standard padded base64, the form Azure shows.
// Callers must treat the result as a secret.
func (k *Key) Base64() string {
	return base64.StdEncoding.EncodeToString(k.secret)
}

// Destroy overwrites the key bytes with zeros. The Key is unusable afterwards.
// Go may have copied the bytes elsewhere (the garbage collector moves nothing,
// but strings the caller decoded from are immutable), so this reduces, not
// removes, the time a secret lives in memory.
func (k *Key) Destroy() {
	if k == nil {
		return
	}
	clear(k.secret)
	k.secret = nil
}

// String implements fmt.Stringer without revealing the key.
func (k *Key) String() string { return "[redacted]" }

// GoString implements fmt.GoStringer without revealing the key.
func (k *Key) GoString() string { return "sas.Key([redacted])" }

// LogValue implements slog.LogValuer without revealing the key.
func (k *Key) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// DeriveDeviceKey derives the device key of an enrollment-group member:
// base64(HMAC-SHA256(base64decode(groupKey), registrationID)). The result is
// used like an individual enrollment key, for DPS and for the assigned hub.
func DeriveDeviceKey(groupKey, registrationID string) (string, error) {
	k, err := ParseKey(groupKey)
	if err != nil {
		return "", fmt.Errorf("sas: derive device key: group key: %w", err)
	}
	defer k.Destroy()
	d, err := DeriveKey(k, registrationID)
	if err != nil {
		return "", err
	}
	defer d.Destroy()
	return d.Base64(), nil
}

// DeriveKey derives a device Key from an enrollment-group signer; see
// DeriveDeviceKey.
func DeriveKey(group Signer, registrationID string) (*Key, error) {
	if registrationID == "" {
		return nil, errors.New("sas: derive device key: registration id is empty")
	}
	b, err := group.Sign([]byte(registrationID))
	if err != nil {
		return nil, fmt.Errorf("sas: derive device key: %w", err)
	}
	return &Key{secret: b}, nil
}

var (
	_ Signer         = (*Key)(nil)
	_ slog.LogValuer = (*Key)(nil)
)
