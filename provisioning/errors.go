package provisioning

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
)

// Classes of failure. Errors returned by this package wrap at most one of
// them; branch with errors.Is.
var (
	// ErrDisabled: DPS reports the enrollment (or the device registration)
	// disabled. Terminal for this Register call; an operator must enable it.
	ErrDisabled = errors.New("provisioning: enrollment is disabled")
	// ErrFailed: DPS reports the registration failed; the *FailedError
	// carries the errorCode and errorMessage of registrationState.
	ErrFailed = errors.New("provisioning: registration failed")
	// ErrUnauthorized: DPS answered 401 or 403 (token rejected: wrong key,
	// wrong registration id for a derived key, or a device clock far off).
	ErrUnauthorized = errors.New("provisioning: token rejected")
	// ErrNotFound: DPS answered 404 (no enrollment for this registration id
	// in this id scope, or an unknown operation).
	ErrNotFound = errors.New("provisioning: not found")
	// ErrThrottled: DPS answered 429.
	ErrThrottled = errors.New("provisioning: throttled")
	// ErrServer: DPS answered 5xx.
	ErrServer = errors.New("provisioning: service error")
	// ErrConflict: DPS answered 408, 409 or 412 (a concurrent operation or an
	// ETag race); retrying later resolves it.
	ErrConflict = errors.New("provisioning: conflict")
	// ErrRejected: DPS answered another 4xx (bad request, unsupported media
	// type...). Retrying the same request cannot help.
	ErrRejected = errors.New("provisioning: request rejected")
	// ErrBadResponse: the response could not be used (not JSON, too large,
	// wrong types, missing or invalid fields). Typical of a captive portal or
	// a broken proxy; retried with backoff.
	ErrBadResponse = errors.New("provisioning: unusable response")
	// ErrNetwork: the request did not get an answer (DNS, TCP, TLS — e.g. a
	// certificate not yet valid on a clock that is not synced — or timeout).
	ErrNetwork = errors.New("provisioning: network error")
)

// StatusError is an HTTP error answer from DPS. Its fields come from the
// ProvisioningServiceErrorDetails body when it parses; Message is sanitized
// (printable, bounded, never an echoed credential). Unwrap returns the class:
// ErrUnauthorized, ErrNotFound, ErrThrottled, ErrServer, ErrConflict or
// ErrRejected.
type StatusError struct {
	Op         string // "register" or "operation status"
	HTTPStatus int
	ErrorCode  int    // e.g. 404201; 0 when the body had none
	Message    string // sanitized
	TrackingID string // sanitized
}

func (e *StatusError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "provisioning: %s: DPS answered %d %s", e.Op, e.HTTPStatus, http.StatusText(e.HTTPStatus))
	if e.ErrorCode != 0 {
		fmt.Fprintf(&b, " (errorCode %d)", e.ErrorCode)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.TrackingID != "" {
		fmt.Fprintf(&b, " [trackingId %s]", e.TrackingID)
	}
	if h := hint(e.HTTPStatus); h != "" {
		b.WriteString("; ")
		b.WriteString(h)
	}
	return b.String()
}

// Unwrap returns the class sentinel of the HTTP status.
func (e *StatusError) Unwrap() error { return statusClass(e.HTTPStatus) }

func statusClass(code int) error {
	switch {
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return ErrUnauthorized
	case code == http.StatusNotFound:
		return ErrNotFound
	case code == http.StatusTooManyRequests:
		return ErrThrottled
	case code == http.StatusRequestTimeout || code == http.StatusConflict || code == http.StatusPreconditionFailed:
		return ErrConflict
	case code >= 500:
		return ErrServer
	default:
		return ErrRejected
	}
}

// hint returns the likely cause and fix of an HTTP status.
func hint(code int) string {
	switch code {
	case http.StatusUnauthorized, http.StatusForbidden:
		return "token rejected — check the key and the device clock"
	case http.StatusNotFound:
		return "enrollment not found — create the enrollment or check id_scope"
	case http.StatusBadRequest:
		return "check registration_id (lower-case letters, digits, '-', '.', '_', ':') and the payload"
	}
	return ""
}

// FailedError reports a registration DPS completed with status "failed".
// errors.Is(err, ErrFailed) is true.
type FailedError struct {
	ErrorCode int    // registrationState.errorCode, e.g. 400208 (no hub can be allocated)
	Message   string // registrationState.errorMessage, sanitized
}

func (e *FailedError) Error() string {
	s := fmt.Sprintf("provisioning: registration failed (errorCode %d)", e.ErrorCode)
	if e.Message != "" {
		s += ": " + e.Message
	}
	switch e.ErrorCode {
	case 400208:
		s += "; no IoT hub is linked to the enrollment or allocatable — link a hub in DPS"
	case 400209:
		s += "; the IoT hub refused the device — check the hub's registry and the enrollment"
	}
	return s
}

// Unwrap returns ErrFailed.
func (e *FailedError) Unwrap() error { return ErrFailed }

// IsRetryable reports whether a later attempt may succeed without an
// operator changing anything: network errors, throttling, 5xx, conflicts,
// unusable responses, and 401/403/404 (the enrollment may appear later).
// It is false for nil, context cancellation, ErrDisabled, ErrFailed,
// ErrRejected and errors of configuration or of the signer.
func IsRetryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	for _, class := range []error{ErrUnauthorized, ErrNotFound, ErrThrottled, ErrServer, ErrConflict, ErrBadResponse, ErrNetwork} {
		if errors.Is(err, class) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne)
}

// sanitize makes text from the network safe to put into an error or a log
// line: printable ASCII only, at most max bytes, and anything that looks like
// a credential (or contains secret) replaced.
func sanitize(s string, max int, secrets ...string) string {
	for _, sec := range secrets {
		if sec != "" && strings.Contains(s, sec) {
			return "[redacted: the text contained a credential]"
		}
	}
	if strings.Contains(s, "SharedAccessSignature") || strings.Contains(s, "sig=") {
		return "[redacted: the text contained a credential]"
	}
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < max; i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e {
			c = '?'
		}
		b.WriteByte(c)
	}
	if len(s) > max {
		b.WriteString("…")
	}
	return b.String()
}

// classError is an error of a class whose message does not repeat the
// class sentinel's text.
type classError struct {
	class error
	msg   string
	cause error // or nil
}

func (e *classError) Error() string {
	if e.cause != nil {
		return e.msg + ": " + e.cause.Error()
	}
	return e.msg
}

func (e *classError) Unwrap() []error {
	if e.cause != nil {
		return []error{e.class, e.cause}
	}
	return []error{e.class}
}

// badResponse returns an ErrBadResponse-class error.
func badResponse(format string, args ...any) error {
	return &classError{class: ErrBadResponse, msg: "unusable response: " + fmt.Sprintf(format, args...)}
}
