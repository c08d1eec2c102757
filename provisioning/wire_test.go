package provisioning

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDecodeOperation(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		status  string
		wantErr string // "" → valid
	}{
		{"assigning", assigningBody, statusAssigning, ""},
		{"unassigned", `{"operationId":"op-1","status":"unassigned"}`, statusUnassigned, ""},
		{"assigned (docs example)", `{"operationId":"5.316aac5bdc130deb.b1e02da8-0000-4000-8000-000000000001","status":"assigned","registrationState":{"registrationId":"my-symkey-device","createdDateTimeUtc":"2022-08-31T22:02:50.5163352Z","assignedHub":"MyExampleHub.azure-devices.net","deviceId":"my-symkey-device","status":"assigned","substatus":"initialAssignment","lastUpdatedDateTimeUtc":"2022-08-31T22:02:50.7370676Z","etag":"IjY5MDAz"}}`, statusAssigned, ""},
		{"assigned, emulator port", `{"status":"assigned","registrationState":{"assignedHub":"127.0.0.1:8883","deviceId":"d"}}`, statusAssigned, ""},
		{"assigned, upper-case status", `{"status":"Assigned","registrationState":{"assignedHub":"h.example.net","deviceId":"d"}}`, statusAssigned, ""},
		{"failed", `{"status":"failed","registrationState":{"errorCode":400208,"errorMessage":"no hub"}}`, statusFailed, ""},
		{"failed without state", `{"status":"failed"}`, statusFailed, ""},
		{"disabled", `{"status":"disabled"}`, statusDisabled, ""},
		{"legacy blacklisted", `{"status":"blacklisted"}`, statusDisabled, ""},
		{"leading white space", "\n  " + assigningBody, statusAssigning, ""},
		{"empty", ``, "", "not a JSON object (empty)"},
		{"HTML", `<html></html>`, "", "captive portal"},
		{"array", `[]`, "", "not a JSON object"},
		{"no status", `{"operationId":"x"}`, "", "no status"},
		{"status wrong type", `{"status":true}`, "", "not a registration operation status"},
		{"unknown status", `{"status":"weird"}`, "", `unknown status "weird"`},
		{"assigning without id", `{"status":"assigning"}`, "", "without operationId"},
		{"operation id with slash", `{"operationId":"a/b","status":"assigning"}`, "", "operationId contains"},
		{"operation id with query", `{"operationId":"a?x=1","status":"assigning"}`, "", "operationId contains"},
		{"operation id too long", `{"operationId":"` + strings.Repeat("a", 257) + `","status":"assigning"}`, "", "operationId"},
		{"assigned no state", `{"status":"assigned"}`, "", "without registrationState"},
		{"assigned null state", `{"status":"assigned","registrationState":null}`, "", "without registrationState"},
		{"assigned no hub", `{"status":"assigned","registrationState":{"deviceId":"d"}}`, "", "assignedHub"},
		{"assigned no device", `{"status":"assigned","registrationState":{"assignedHub":"h.example.net"}}`, "", "deviceId"},
		{"hub with scheme", `{"status":"assigned","registrationState":{"assignedHub":"mqtts://h.example.net","deviceId":"d"}}`, "", "no scheme"},
		{"device id with newline", `{"status":"assigned","registrationState":{"assignedHub":"h.example.net","deviceId":"a\nb"}}`, "", "deviceId"},
		{"substatus with control char", `{"status":"assigned","registrationState":{"assignedHub":"h.example.net","deviceId":"d","substatus":"x\u0000"}}`, "", "substatus"},
		{"errorCode as string", `{"status":"failed","registrationState":{"errorCode":"x"}}`, "", "not a registration operation status"},
		{"trailing garbage", assigningBody + `{}`, "", "not a registration operation status"},
		{"too large", `{"x":"` + strings.Repeat("a", maxBody) + `"}`, "", "exceeds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op, err := decodeOperation([]byte(tt.body))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("decodeOperation(%.60q) error = %v", tt.body, err)
				}
				if op.Status != tt.status {
					t.Errorf("decodeOperation(%.60q).Status = %q; want %q", tt.body, op.Status, tt.status)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("decodeOperation(%.60q) error = %v; want it to contain %q", tt.body, err, tt.wantErr)
			}
			if !errors.Is(err, ErrBadResponse) || !IsRetryable(err) {
				t.Errorf("error %v is not a retryable ErrBadResponse", err)
			}
		})
	}
}

func TestValidateHubHost(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"myhub.azure-devices.net", true},
		{"MyExampleHub.azure-devices.net", true},
		{"localhost", true},
		{"127.0.0.1:8883", true},
		{"hub.example.net:443", true},
		{"[::1]:8883", true},
		{"10.0.0.7", true},
		{"", false},
		{"https://hub.example.net", false},
		{"hub.example.net/path", false},
		{"hub example.net", false},
		{"user@hub.example.net", false},
		{"hub.example.net:0", false},
		{"hub.example.net:65536", false},
		{"hub.example.net:08883", false},
		{"hub.example.net:", false},
		{"hub.example.net:x", false},
		{"::1", false},
		{"[127.0.0.1]:8883", false},
		{"[::1]", false},
		{"-hub.example.net", false},
		{"hub..example.net", false},
		{"hub_1.example.net", false},
		{"hub.example.net?x", false},
		{strings.Repeat("a", 64) + ".net", false},
		{strings.Repeat("a.", 130) + "net", false},
		{"hüb.example.net", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			err := ValidateHubHost(tt.in)
			if (err == nil) != tt.ok {
				t.Errorf("ValidateHubHost(%q) = %v; want ok=%v", tt.in, err, tt.ok)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	tests := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{"3", 3 * time.Second, true},
		{" 12 ", 12 * time.Second, true},
		{"0", 2 * time.Second, true},
		{"1", 2 * time.Second, true},
		{"301", 300 * time.Second, true},
		{"9223372036854775807", 300 * time.Second, true},
		{"", 2 * time.Second, false},
		{"-1", 2 * time.Second, false},
		{"1.5", 2 * time.Second, false},
		{"Fri, 31 Dec 1999 23:59:59 GMT", 2 * time.Second, false},
		{"99999999999999999999999", 2 * time.Second, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := parseRetryAfter(tt.in)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestRequestWindow(t *testing.T) {
	var w requestWindow
	t0 := testEpoch
	for i := 0; i < 5; i++ {
		at := t0.Add(time.Duration(i) * time.Second)
		if d := w.wait(at); d != 0 {
			t.Fatalf("request %d: wait %v; want 0", i, d)
		}
		w.add(at)
	}
	if d := w.wait(t0.Add(5 * time.Second)); d != 5250*time.Millisecond {
		t.Errorf("6th request at 5 s: wait %v; want 5.25 s (until the first leaves the window)", d)
	}
	w.add(t0.Add(10250 * time.Millisecond))
	if d := w.wait(t0.Add(10250 * time.Millisecond)); d != time.Second {
		t.Errorf("7th request: wait %v; want 1 s", d)
	}
	if d := w.wait(t0.Add(time.Hour)); d != 0 || len(w.times) != 0 {
		t.Errorf("an hour later: wait %v with %d remembered; want 0 and none", d, len(w.times))
	}
}

func TestSanitize(t *testing.T) {
	tests := []struct {
		in, want string
		secrets  []string
	}{
		{"plain message", "plain message", nil},
		{"tab\tand\nnewline", "tab?and?newline", nil},
		{"ünïcode", "??n??code", nil},
		{strings.Repeat("x", 300), strings.Repeat("x", 200) + "…", nil},
		{"token SharedAccessSignature sr=a&sig=b", "[redacted: the text contained a credential]", nil},
		{"you sent abc123", "[redacted: the text contained a credential]", []string{"abc123"}},
	}
	for _, tt := range tests {
		t.Run(tt.in[:min(len(tt.in), 20)], func(t *testing.T) {
			if got := sanitize(tt.in, 200, tt.secrets...); got != tt.want {
				t.Errorf("sanitize(%q) = %q; want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestStatusErrorText(t *testing.T) {
	e := &StatusError{Op: "register", HTTPStatus: 404, ErrorCode: 404201, Message: "not found", TrackingID: "t-1"}
	want := "provisioning: register: DPS answered 404 Not Found (errorCode 404201): not found [trackingId t-1]; enrollment not found — create the enrollment or check id_scope"
	if e.Error() != want {
		t.Errorf("Error() =\n%s\nwant\n%s", e.Error(), want)
	}
	if !errors.Is(e, ErrNotFound) {
		t.Errorf("404 StatusError is not ErrNotFound")
	}
	d := decodeError("register", 503, []byte("<html>"))
	if d.HTTPStatus != 503 || d.Message != "" || !errors.Is(d, ErrServer) {
		t.Errorf("decodeError(non-JSON) = %+v", d)
	}
}
