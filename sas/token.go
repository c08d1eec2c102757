package sas

import (
	"crypto/hmac"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Prefix starts every SAS token.
const Prefix = "SharedAccessSignature "

// RegistrationKeyName is the skn of DPS device registration tokens.
const RegistrationKeyName = "registration"

// Sentinel errors returned (wrapped) by Parse and Verify, for callers that
// branch on the cause.
var (
	ErrMalformed = errors.New("sas: malformed token")
	ErrSignature = errors.New("sas: signature does not match")
	ErrExpired   = errors.New("sas: token expired")
	ErrAudience  = errors.New("sas: token resource does not cover the target")
)

// Token is a shared access signature. Resource holds sr exactly as it is (or
// was) transmitted, i.e. percent-encoded; DecodedResource gives the URI.
type Token struct {
	Resource     string // sr, percent-encoded, exactly as signed
	Signature    string // base64 HMAC-SHA256 (sig after URL-decoding)
	Expiry       int64  // se, seconds since the Unix epoch
	KeyName      string // skn, empty when absent
	RepositoryID string // rid (model-repository tokens only), empty when absent
}

// Encode percent-encodes s once: every byte except A-Z a-z 0-9 - _ . ~ becomes
// %XX with upper-case hex.
func Encode(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) * 3 / 2)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// StringToSign returns the string signed for sr and se: sr + "\n" + se.
func StringToSign(encodedResource string, expiry int64) string {
	return encodedResource + "\n" + strconv.FormatInt(expiry, 10)
}

// DeviceResource returns the IoT Hub resource URI of a device, or of a module
// when moduleID is not empty.
func DeviceResource(hubHost, deviceID, moduleID string) string {
	r := hubHost + "/devices/" + deviceID
	if moduleID != "" {
		r += "/modules/" + moduleID
	}
	return r
}

// RegistrationResource returns the DPS resource URI of a registration. It
// carries no host name.
func RegistrationResource(idScope, registrationID string) string {
	return idScope + "/registrations/" + registrationID
}

// New signs a token for resource (an unencoded URI) expiring at expiry. keyName
// becomes skn when not empty: leave it empty for IoT Hub device and module
// keys, use the policy name for shared access policy keys, and
// RegistrationKeyName for DPS registrations.
func New(resource, keyName string, expiry int64, s Signer) (Token, error) {
	if resource == "" {
		return Token{}, errors.New("sas: new token: resource is empty")
	}
	if expiry < 0 {
		return Token{}, fmt.Errorf("sas: new token: expiry %d is negative", expiry)
	}
	sr := Encode(resource)
	sig, err := s.Sign([]byte(StringToSign(sr, expiry)))
	if err != nil {
		return Token{}, fmt.Errorf("sas: new token: %w", err)
	}
	return Token{
		Resource:  sr,
		Signature: base64.StdEncoding.EncodeToString(sig),
		Expiry:    expiry,
		KeyName:   keyName,
	}, nil
}

// NewDeviceToken signs an IoT Hub device (or module) token with the device's
// own key: sr = {hub}/devices/{id}[/modules/{m}], no skn.
func NewDeviceToken(hubHost, deviceID, moduleID string, expiry int64, s Signer) (Token, error) {
	if hubHost == "" || deviceID == "" {
		return Token{}, errors.New("sas: device token: hub host and device id are required")
	}
	return New(DeviceResource(hubHost, deviceID, moduleID), "", expiry, s)
}

// NewRegistrationToken signs a DPS device registration token:
// sr = {idScope}/registrations/{registrationId}, skn = registration.
func NewRegistrationToken(idScope, registrationID string, expiry int64, s Signer) (Token, error) {
	if idScope == "" || registrationID == "" {
		return Token{}, errors.New("sas: registration token: id scope and registration id are required")
	}
	return New(RegistrationResource(idScope, registrationID), RegistrationKeyName, expiry, s)
}

// NewModelRepoToken signs an IoT Plug and Play model-repository token. The
// string-to-sign is {repoId}\n{encoded host}\n{expiry}; the token carries
// sr (the encoded host), sig, se, skn (when keyName is set) and rid.
func NewModelRepoToken(repoHost, repositoryID, keyName string, expiry int64, s Signer) (Token, error) {
	if repoHost == "" || repositoryID == "" {
		return Token{}, errors.New("sas: model repository token: host and repository id are required")
	}
	sr := Encode(repoHost)
	sig, err := s.Sign([]byte(modelRepoStringToSign(repositoryID, sr, expiry)))
	if err != nil {
		return Token{}, fmt.Errorf("sas: model repository token: %w", err)
	}
	return Token{
		Resource:     sr,
		Signature:    base64.StdEncoding.EncodeToString(sig),
		Expiry:       expiry,
		KeyName:      keyName,
		RepositoryID: repositoryID,
	}, nil
}

func modelRepoStringToSign(repositoryID, encodedHost string, expiry int64) string {
	return repositoryID + "\n" + encodedHost + "\n" + strconv.FormatInt(expiry, 10)
}

// stringToSign returns what t's signature covers.
func (t Token) stringToSign() string {
	if t.RepositoryID != "" {
		return modelRepoStringToSign(t.RepositoryID, t.Resource, t.Expiry)
	}
	return StringToSign(t.Resource, t.Expiry)
}

// String returns the token in wire form, fields in the order sr, sig, se,
// skn, rid. The result is a credential: never log it (slog callers get a
// redacted form through LogValue).
func (t Token) String() string {
	var b strings.Builder
	b.WriteString(Prefix)
	b.WriteString("sr=")
	b.WriteString(t.Resource)
	b.WriteString("&sig=")
	b.WriteString(Encode(t.Signature))
	b.WriteString("&se=")
	b.WriteString(strconv.FormatInt(t.Expiry, 10))
	if t.KeyName != "" {
		b.WriteString("&skn=")
		b.WriteString(Encode(t.KeyName))
	}
	if t.RepositoryID != "" {
		b.WriteString("&rid=")
		b.WriteString(Encode(t.RepositoryID))
	}
	return b.String()
}

// LogValue implements slog.LogValuer: resource, expiry and key name, never the
// signature.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("sr", t.Resource),
		slog.Time("se", time.Unix(t.Expiry, 0).UTC()),
		slog.String("skn", t.KeyName),
	)
}

// ExpiresAt returns the expiry as a time.
func (t Token) ExpiresAt() time.Time { return time.Unix(t.Expiry, 0) }

// DecodedResource returns the resource URI with percent-encoding removed
// ('+' stays '+').
func (t Token) DecodedResource() (string, error) {
	r, err := url.PathUnescape(t.Resource)
	if err != nil {
		return "", fmt.Errorf("%w: sr %q is not valid percent-encoding", ErrMalformed, t.Resource)
	}
	return r, nil
}

// Parse reads a token in wire form. Fields may come in any order; duplicates,
// unknown fields, a missing sr, sig or se, a non-integer se and a missing
// "SharedAccessSignature " prefix are errors (wrapping ErrMalformed) that name
// the problem. The error never contains the signature.
func Parse(s string) (Token, error) {
	rest, ok := strings.CutPrefix(s, Prefix)
	if !ok {
		return Token{}, fmt.Errorf("%w: must start with %q", ErrMalformed, Prefix)
	}
	if rest == "" {
		return Token{}, fmt.Errorf("%w: no fields after %q", ErrMalformed, Prefix)
	}
	var t Token
	seen := map[string]bool{}
	for _, field := range strings.Split(rest, "&") {
		name, value, ok := strings.Cut(field, "=")
		if !ok || name == "" {
			return Token{}, fmt.Errorf("%w: field %q is not name=value", ErrMalformed, redactField(field))
		}
		if seen[name] {
			return Token{}, fmt.Errorf("%w: field %q appears twice", ErrMalformed, name)
		}
		seen[name] = true
		switch name {
		case "sr":
			if value == "" {
				return Token{}, fmt.Errorf("%w: sr is empty", ErrMalformed)
			}
			if _, err := url.PathUnescape(value); err != nil {
				return Token{}, fmt.Errorf("%w: sr %q is not valid percent-encoding", ErrMalformed, value)
			}
			t.Resource = value
		case "sig":
			sig, err := url.QueryUnescape(value)
			if err != nil {
				return Token{}, fmt.Errorf("%w: sig is not valid percent-encoding", ErrMalformed)
			}
			if _, err := base64.StdEncoding.DecodeString(sig); err != nil || sig == "" {
				return Token{}, fmt.Errorf("%w: sig is not base64 after URL-decoding", ErrMalformed)
			}
			t.Signature = sig
		case "se":
			if value == "" || strings.TrimLeft(value, "0123456789") != "" {
				return Token{}, fmt.Errorf("%w: se %q is not a non-negative integer (seconds since 1970)", ErrMalformed, value)
			}
			se, err := strconv.ParseInt(value, 10, 64)
			if err != nil {
				return Token{}, fmt.Errorf("%w: se %q is out of range", ErrMalformed, value)
			}
			t.Expiry = se
		case "skn":
			v, err := url.QueryUnescape(value)
			if err != nil || v == "" {
				return Token{}, fmt.Errorf("%w: skn %q is empty or not valid percent-encoding", ErrMalformed, value)
			}
			t.KeyName = v
		case "rid":
			v, err := url.QueryUnescape(value)
			if err != nil || v == "" {
				return Token{}, fmt.Errorf("%w: rid %q is empty or not valid percent-encoding", ErrMalformed, value)
			}
			t.RepositoryID = v
		default:
			return Token{}, fmt.Errorf("%w: unknown field %q (known: sr, sig, se, skn, rid)", ErrMalformed, name)
		}
	}
	for _, req := range []string{"sr", "sig", "se"} {
		if !seen[req] {
			return Token{}, fmt.Errorf("%w: missing field %s", ErrMalformed, req)
		}
	}
	return t, nil
}

// redactField keeps a malformed field's name out of danger: it is shortened so
// that an error never echoes a whole signature.
func redactField(f string) string {
	if len(f) > 16 {
		return f[:16] + "…"
	}
	return f
}

// Verify checks t as a service does: the signature is recomputed with s over
// sr exactly as transmitted; the decoded resource must be a path-segment
// prefix of target (the first segment, the host or id scope, compared
// case-insensitively); and the token must not have expired at now, allowing
// skew of grace. Errors wrap ErrSignature, ErrAudience or ErrExpired.
func Verify(t Token, s Signer, target string, now time.Time, skew time.Duration) error {
	want, err := s.Sign([]byte(t.stringToSign()))
	if err != nil {
		return fmt.Errorf("sas: verify: %w", err)
	}
	got, err := base64.StdEncoding.DecodeString(t.Signature)
	if err != nil || !hmac.Equal(got, want) {
		return ErrSignature
	}
	res, err := t.DecodedResource()
	if err != nil {
		return err
	}
	if !CoversResource(res, target) {
		return fmt.Errorf("%w: token is for %q, request is for %q", ErrAudience, res, target)
	}
	if now.Unix() > t.Expiry+int64(skew/time.Second) {
		return fmt.Errorf("%w: expired at %s, now %s", ErrExpired,
			time.Unix(t.Expiry, 0).UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return nil
}

// CoversResource reports whether resource is a path-segment prefix of target:
// "h/devices/d" covers "h/devices/d" and "h/devices/d/modules/m" but not
// "h/devices/dx". The first segment (host name or id scope) is compared
// case-insensitively, the rest exactly. A trailing slash is ignored.
func CoversResource(resource, target string) bool {
	rs := strings.Split(strings.TrimSuffix(resource, "/"), "/")
	ts := strings.Split(strings.TrimSuffix(target, "/"), "/")
	if len(rs) > len(ts) || rs[0] == "" {
		return false
	}
	for i, seg := range rs {
		if i == 0 {
			if !strings.EqualFold(seg, ts[0]) {
				return false
			}
			continue
		}
		if seg != ts[i] {
			return false
		}
	}
	return true
}

var _ slog.LogValuer = Token{}
