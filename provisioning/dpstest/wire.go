package dpstest

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"
)

// Wire types of the DPS device API (azure-iot-protocol.md §3.3–3.4).

// registerBody is the DeviceRegistration request body.
type registerBody struct {
	RegistrationID string
	Payload        json.RawMessage // compacted; nil when absent or null
}

// registrationState is the DeviceRegistrationResult of an operation.
type registrationState struct {
	RegistrationID         string            `json:"registrationId"`
	CreatedDateTimeUTC     string            `json:"createdDateTimeUtc,omitempty"`
	AssignedHub            string            `json:"assignedHub,omitempty"`
	DeviceID               string            `json:"deviceId,omitempty"`
	Status                 string            `json:"status"`
	Substatus              string            `json:"substatus,omitempty"`
	ErrorCode              int               `json:"errorCode,omitempty"`
	ErrorMessage           string            `json:"errorMessage,omitempty"`
	LastUpdatedDateTimeUTC string            `json:"lastUpdatedDateTimeUtc,omitempty"`
	ETag                   string            `json:"etag,omitempty"`
	SymmetricKey           *symmetricKeyInfo `json:"symmetricKey,omitempty"`
	Payload                json.RawMessage   `json:"payload,omitempty"`
}

type symmetricKeyInfo struct {
	EnrollmentGroupID string `json:"enrollmentGroupId,omitempty"`
}

// operationStatus is the RegistrationOperationStatus reply.
type operationStatus struct {
	OperationID       string             `json:"operationId"`
	Status            string             `json:"status"`
	RegistrationState *registrationState `json:"registrationState,omitempty"`
}

// errorBody is the ProvisioningServiceErrorDetails reply.
type errorBody struct {
	ErrorCode    int    `json:"errorCode"`
	TrackingID   string `json:"trackingId"`
	Message      string `json:"message"`
	TimestampUTC string `json:"timestampUtc"`
}

// decodeRegisterBody parses a DeviceRegistration body: a JSON object with a
// string registrationId and an optional payload (any JSON value; null is the
// same as absent). Unknown members are ignored, except tpm, which asks for an
// attestation the emulator does not offer. The returned error text names the
// problem and never quotes more than a short prefix of the input.
func decodeRegisterBody(data []byte) (registerBody, error) {
	var b registerBody
	if len(bytes.TrimSpace(data)) == 0 {
		return b, errors.New(`request body is empty; want {"registrationId": "<id>", "payload": {...}}`)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var fields map[string]json.RawMessage
	if err := dec.Decode(&fields); err != nil {
		return b, fmt.Errorf("request body is not a JSON object: %w", err)
	}
	if fields == nil {
		return b, errors.New("request body is null; want a JSON object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return b, errors.New("request body has data after the JSON object")
	}
	if _, ok := fields["tpm"]; ok {
		return b, errors.New("request body has tpm: TPM attestation is not emulated; use symmetric keys")
	}
	raw, ok := fields["registrationId"]
	if !ok {
		return b, errors.New("request body has no registrationId")
	}
	if err := json.Unmarshal(raw, &b.RegistrationID); err != nil || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return b, fmt.Errorf("request body registrationId is %s, want a string", jsonKind(raw))
	}
	if p, ok := fields["payload"]; ok && !bytes.Equal(bytes.TrimSpace(p), []byte("null")) {
		var buf bytes.Buffer
		if err := json.Compact(&buf, p); err != nil {
			return b, fmt.Errorf("request body payload: %w", err)
		}
		b.Payload = buf.Bytes()
	}
	return b, nil
}

// jsonKind names the JSON type of a raw value for error messages.
func jsonKind(raw json.RawMessage) string {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 {
		return "empty"
	}
	switch t[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

// validRegistrationID reports whether id is a DPS registration id: 1-128
// characters of a-z A-Z 0-9 - . _ :, the last a letter, digit or '-'.
func validRegistrationID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && c != '-' && c != '.' && c != '_' && c != ':' {
			return false
		}
		if i == len(id)-1 && !alnum && c != '-' {
			return false
		}
	}
	return true
}

type routeKind int

const (
	routeRegister  routeKind = iota + 1 // PUT …/register
	routeOperation                      // GET …/operations/{operationId}
	routeStatus                         // POST /{idScope}/registrations/{regId}
)

// route is a parsed device API path.
type route struct {
	kind        routeKind
	idScope     string
	regID       string
	operationID string // routeOperation only
}

// parseRoute parses an escaped URL path into a device API route. Segments are
// percent-decoded one by one, so an encoded '/' cannot split a segment.
func parseRoute(escapedPath string) (route, bool) {
	p, ok := strings.CutPrefix(escapedPath, "/")
	if !ok {
		return route{}, false
	}
	raw := strings.Split(p, "/")
	if len(raw) < 3 || len(raw) > 5 {
		return route{}, false
	}
	seg := make([]string, len(raw))
	for i, r := range raw {
		v, err := url.PathUnescape(r)
		if err != nil || v == "" {
			return route{}, false
		}
		seg[i] = v
	}
	if seg[1] != "registrations" {
		return route{}, false
	}
	rt := route{idScope: seg[0], regID: seg[2]}
	switch {
	case len(seg) == 3:
		rt.kind = routeStatus
	case len(seg) == 4 && seg[3] == "register":
		rt.kind = routeRegister
	case len(seg) == 5 && seg[3] == "operations":
		rt.kind = routeOperation
		rt.operationID = seg[4]
	default:
		return route{}, false
	}
	return rt, true
}

// IsDeviceAPIPath reports whether an escaped URL path (r.URL.EscapedPath())
// has the shape of a DPS device API endpoint this package serves, whatever
// the id scope. A binary sharing one listener between handlers routes with it.
func IsDeviceAPIPath(escapedPath string) bool {
	_, ok := parseRoute(escapedPath)
	return ok
}

// formatTime formats t as DPS does: UTC with seven fractional digits.
func formatTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.0000000Z")
}

// newUUID returns a random (version 4) UUID string.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// newOperationID returns an operation id shaped like DPS's
// "5.316aac5bdc130deb.b1e02da8-…".
func newOperationID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "5." + hex.EncodeToString(b[:]) + "." + newUUID()
}

// newETag returns an opaque etag shaped like DPS's (base64 of a quoted id).
func newETag() string {
	return base64.StdEncoding.EncodeToString([]byte(`"` + newUUID() + `"`))
}
