package provisioning

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// maxBody bounds every response read. DPS messages are at most 96 KB
// (azure-iot-protocol.md §4.2); anything larger is not a DPS answer.
const maxBody = 128 << 10

// maxPayload bounds the custom-allocation payload sent to DPS.
const maxPayload = 64 << 10

// DPS registration statuses (azure-iot-protocol.md §3.4).
const (
	statusUnassigned = "unassigned"
	statusAssigning  = "assigning"
	statusAssigned   = "assigned"
	statusFailed     = "failed"
	statusDisabled   = "disabled"
	statusBlacklist  = "blacklisted" // legacy spelling of disabled, recognized by the C SDK
)

// registerRequest is the DeviceRegistration body of the register PUT.
type registerRequest struct {
	RegistrationID string          `json:"registrationId"`
	Payload        json.RawMessage `json:"payload,omitempty"`
}

// operation is a RegistrationOperationStatus as parsed from the wire.
type operation struct {
	OperationID       string             `json:"operationId"`
	Status            string             `json:"status"`
	RegistrationState *registrationState `json:"registrationState"`
}

// registrationState is a DeviceRegistrationResult.
type registrationState struct {
	RegistrationID string          `json:"registrationId"`
	AssignedHub    string          `json:"assignedHub"`
	DeviceID       string          `json:"deviceId"`
	Status         string          `json:"status"`
	Substatus      string          `json:"substatus"`
	ErrorCode      *int64          `json:"errorCode"`
	ErrorMessage   string          `json:"errorMessage"`
	Payload        json.RawMessage `json:"payload"`
}

// errorBody is a ProvisioningServiceErrorDetails.
type errorBody struct {
	ErrorCode  *int64 `json:"errorCode"`
	TrackingID string `json:"trackingId"`
	Message    string `json:"message"`
}

// decodeOperation parses and validates a RegistrationOperationStatus. The
// result has a known status; an "assigned" result has a valid hub and device
// id; an in-progress result has a usable operation id. Every problem is an
// error wrapping ErrBadResponse.
func decodeOperation(body []byte) (operation, error) {
	var op operation
	if len(body) > maxBody {
		return operation{}, badResponse("body of %d bytes exceeds %d", len(body), maxBody)
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return operation{}, badResponse("body is not a JSON object (%s)", describeBody(body))
	}
	if err := json.Unmarshal(trimmed, &op); err != nil {
		return operation{}, badResponse("body is not a registration operation status: %s", sanitize(err.Error(), 160))
	}
	op.Status = strings.ToLower(op.Status)
	switch op.Status {
	case statusAssigning, statusUnassigned:
		if op.OperationID == "" {
			return operation{}, badResponse("status %q without operationId", op.Status)
		}
		if err := validOperationID(op.OperationID); err != nil {
			return operation{}, err
		}
	case statusAssigned:
		rs := op.RegistrationState
		if rs == nil {
			return operation{}, badResponse("status assigned without registrationState")
		}
		if rs.AssignedHub == "" {
			return operation{}, badResponse("status assigned without registrationState.assignedHub")
		}
		if err := ValidateHubHost(rs.AssignedHub); err != nil {
			return operation{}, badResponse("registrationState.assignedHub: %v", err)
		}
		if rs.DeviceID == "" {
			return operation{}, badResponse("status assigned without registrationState.deviceId")
		}
		if err := validDeviceID(rs.DeviceID); err != nil {
			return operation{}, badResponse("registrationState.deviceId: %v", err)
		}
		if len(rs.Substatus) > 64 || !printable(rs.Substatus) {
			return operation{}, badResponse("registrationState.substatus is not a short printable string")
		}
	case statusFailed, statusDisabled, statusBlacklist:
		if op.Status == statusBlacklist {
			op.Status = statusDisabled
		}
	case "":
		return operation{}, badResponse("no status field")
	default:
		return operation{}, badResponse("unknown status %q", sanitize(op.Status, 32))
	}
	return op, nil
}

// decodeError parses an error body leniently: a body that is not a
// ProvisioningServiceErrorDetails still yields a StatusError, without code
// and message.
func decodeError(op string, status int, body []byte, secrets ...string) *StatusError {
	e := &StatusError{Op: op, HTTPStatus: status}
	var eb errorBody
	if json.Unmarshal(bytes.TrimSpace(body), &eb) == nil {
		if eb.ErrorCode != nil && *eb.ErrorCode > 0 && *eb.ErrorCode < 1_000_000_000 {
			e.ErrorCode = int(*eb.ErrorCode)
		}
		e.Message = sanitize(eb.Message, 200, secrets...)
		e.TrackingID = sanitize(eb.TrackingID, 64, secrets...)
	}
	return e
}

// describeBody names what a non-JSON body looks like without echoing it.
func describeBody(b []byte) string {
	if len(b) == 0 {
		return "empty"
	}
	t := bytes.TrimSpace(b)
	if len(t) > 0 && t[0] == '<' {
		return fmt.Sprintf("%d bytes of HTML or XML; a captive portal or proxy may be answering", len(b))
	}
	return fmt.Sprintf("%d bytes", len(b))
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// validOperationID accepts what DPS issues ("5.316aac5bdc130deb.b1e02da8-…"):
// letters, digits and . - _ :, at most 256 bytes, never a dot segment. The
// value goes into a URL path, so anything else from the network is refused.
func validOperationID(id string) error {
	if len(id) > 256 || id == "." || id == ".." {
		return badResponse("operationId is not a plain identifier")
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(isAlnum(c) || c == '.' || c == '-' || c == '_' || c == ':') {
			return badResponse("operationId contains %q; only letters, digits and . - _ : are expected", string(rune(c)))
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// validDeviceID checks an IoT Hub device id: 1–128 ASCII letters, digits
// and - : . + % _ # * ? ! ( ) , = @ ; $ '.
func validDeviceID(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("device id must be 1 to 128 characters, got %d", len(id))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !isAlnum(c) && !strings.ContainsRune("-:.+%_#*?!(),=@;$'", rune(c)) {
			return fmt.Errorf("device id contains %q, which IoT Hub does not allow", string(rune(c)))
		}
	}
	return nil
}

// validRegistrationID checks a DPS registration id: 1–128 letters, digits
// and - . _ : (DPS compares case-insensitively; lower case is recommended).
func validRegistrationID(id string) error {
	if id == "" || len(id) > 128 {
		return fmt.Errorf("registration id must be 1 to 128 characters, got %d", len(id))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !isAlnum(c) && c != '-' && c != '.' && c != '_' && c != ':' {
			return fmt.Errorf("registration id %q contains %q; use only lower-case letters, digits and the characters - . _ or : (colon) in the id", id, string(rune(c)))
		}
	}
	if last := id[len(id)-1]; !isAlnum(last) && last != '-' {
		return fmt.Errorf("registration id %q must end with a letter, a digit or '-'", id)
	}
	return nil
}

// validIDScope checks a DPS id scope such as 0ne00000000.
func validIDScope(s string) error {
	if s == "" || len(s) > 64 {
		return fmt.Errorf("id scope must be 1 to 64 characters, got %d", len(s))
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) {
			return fmt.Errorf("id scope %q contains %q; copy the ID Scope from the DPS overview page (e.g. 0ne00000000)", s, string(rune(s[i])))
		}
	}
	return nil
}

// ValidateHubHost checks that an assigned hub is a bare host name or IP
// address with an optional :port, as DPS returns it ("myhub.azure-devices.net",
// or "127.0.0.1:8883" from the emulator): no scheme, no path, no user info,
// no spaces.
func ValidateHubHost(s string) error {
	if s == "" {
		return fmt.Errorf("hub host is empty")
	}
	if len(s) > 260 {
		return fmt.Errorf("hub host is %d bytes long; a host name is at most 253", len(s))
	}
	if !printable(s) || strings.ContainsAny(s, " /\\@?#") {
		return fmt.Errorf("hub host %q must be a host name with an optional :port (no scheme, path or spaces)", sanitize(s, 80))
	}
	host, port := s, ""
	if strings.HasPrefix(s, "[") || strings.Count(s, ":") == 1 {
		h, p, err := net.SplitHostPort(s)
		if err != nil {
			return fmt.Errorf("hub host %q: %s", sanitize(s, 80), sanitize(err.Error(), 80))
		}
		host, port = h, p
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || port[0] == '0' {
			return fmt.Errorf("hub host %q: port must be 1 to 65535", sanitize(s, 80))
		}
		if strings.HasPrefix(s, "[") {
			if ip := net.ParseIP(host); ip == nil || ip.To4() != nil {
				return fmt.Errorf("hub host %q: bracketed address is not IPv6", sanitize(s, 80))
			}
			return nil
		}
	} else if strings.Contains(s, ":") {
		return fmt.Errorf("hub host %q: an IPv6 address needs brackets and a port, e.g. [::1]:8883", sanitize(s, 80))
	}
	if net.ParseIP(host) != nil {
		return nil
	}
	if len(host) > 253 {
		return fmt.Errorf("hub host name is %d bytes long; at most 253", len(host))
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("hub host %q has an empty or over-long label", sanitize(s, 80))
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("hub host %q has a label starting or ending with '-'", sanitize(s, 80))
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !isAlnum(c) && c != '-' {
				return fmt.Errorf("hub host %q contains %q", sanitize(s, 80), string(rune(c)))
			}
		}
	}
	return nil
}
