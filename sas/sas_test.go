package sas

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Published and independently computed vectors. V5, V6 and the derived key
// are published (see shared/docs/azure-iot-protocol.md §1.6, §1.7); the
// others were computed with Python's hmac and urllib.parse.quote(safe="").
const (
	derivedKey = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="
	groupKey   = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
	regID      = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"
)

func mustKey(t *testing.T, s string) *Key {
	t.Helper()
	k, err := ParseKey(s)
	if err != nil {
		t.Fatalf("ParseKey: %v", err)
	}
	return k
}

func TestKnownAnswers(t *testing.T) {
	tests := []struct {
		name string
		make func(t *testing.T) (Token, error)
		want string
	}{
		{"V5 hub policy token (published)", func(t *testing.T) (Token, error) {
			return New("test.azure-devices.net", "owner", 1546308061, mustKey(t, "c2VjcmV0"))
		}, "SharedAccessSignature sr=test.azure-devices.net&sig=uux4PSAK1s9efNcBHin0pm7O5oENedTWkhqGp8JAyFY%3D&se=1546308061&skn=owner"},
		{"V6 hub device token (published)", func(t *testing.T) (Token, error) {
			return NewDeviceToken("MyExampleHub.azure-devices.net", "my-symkey-device", "", 1663119026,
				mustKey(t, "18RQk/hOPJR9EbsJlk2j8WA6vWaj/yi+oaYg7zmxfQNdOyMSu+SJ8O7TSlZhDJCYmn4rzEiVKIzNiVAWjLxrGA=="))
		}, "SharedAccessSignature sr=MyExampleHub.azure-devices.net%2Fdevices%2Fmy-symkey-device&sig=f%2BwW8XOKeJOtiPc9Iwjc4OpExvPM7NlhM9qxN2a1aAM%3D&se=1663119026"},
		{"V3 lenient unpadded key (Node test suite)", func(t *testing.T) (Token, error) {
			return NewDeviceToken("host", "device", "", 12345, mustKey(t, "key"))
		}, "SharedAccessSignature sr=host%2Fdevices%2Fdevice&sig=wM3XiP6gD960IxP7J5WHqnxQHEcWC6YaQCtoMT%2BkKHc%3D&se=12345"},
		{"V4 lenient key (Node test suite)", func(t *testing.T) (Token, error) {
			return NewDeviceToken("fake.host.name", "fakeDeviceId", "", 10, mustKey(t, "fakeKey"))
		}, "SharedAccessSignature sr=fake.host.name%2Fdevices%2FfakeDeviceId&sig=bYz5R2IFTaejB6pgYOxns2mw6lcuA4VSy8kJbYQp0Sc%3D&se=10"},
		{"DPS registration token with derived key", func(t *testing.T) (Token, error) {
			return NewRegistrationToken("0ne00000000", regID, 1700000000, mustKey(t, derivedKey))
		}, "SharedAccessSignature sr=0ne00000000%2Fregistrations%2Fsn-007-888-abc-mac-a1-b2-c3-d4-e5-f6&sig=UcaBdA4L3Se7NlFQZcBFRndkqyymINWtRUmVT5QYWng%3D&se=1700000000&skn=registration"},
		{"hub device token with derived key", func(t *testing.T) (Token, error) {
			return NewDeviceToken("example-hub.azure-devices.net", regID, "", 1700000000, mustKey(t, derivedKey))
		}, "SharedAccessSignature sr=example-hub.azure-devices.net%2Fdevices%2Fsn-007-888-abc-mac-a1-b2-c3-d4-e5-f6&sig=Vma2VJuT%2BnDVg0CP%2BnL6L8oXdt%2Fh4ruxKh1ucWTcjUw%3D&se=1700000000"},
		{"hub module token", func(t *testing.T) (Token, error) {
			return NewDeviceToken("example-hub.azure-devices.net", "dev1", "mod1", 1700000000, mustKey(t, derivedKey))
		}, "SharedAccessSignature sr=example-hub.azure-devices.net%2Fdevices%2Fdev1%2Fmodules%2Fmod1&sig=Zaz%2B8KWlY4qtVMWSzuJS6wFTR6hH%2BL%2BSqgIY6qC%2F2zs%3D&se=1700000000"},
		{"hub service token sr={host}/devices", func(t *testing.T) (Token, error) {
			return New("example-hub.azure-devices.net/devices", "registryRead", 1700000000, mustKey(t, "c2VjcmV0"))
		}, "SharedAccessSignature sr=example-hub.azure-devices.net%2Fdevices&sig=aSaUmceCywDHiGR%2BNfVIUUi5RI1Jp0%2FRHEuHw20YGv4%3D&se=1700000000&skn=registryRead"},
		{"DPS service token", func(t *testing.T) (Token, error) {
			return New("example-dps.azure-devices-provisioning.net", "provisioningserviceowner", 1700000000, mustKey(t, "c2VjcmV0"))
		}, "SharedAccessSignature sr=example-dps.azure-devices-provisioning.net&sig=KrnjI9uBC9cMxbktifZQfMuGexiV1s9BCF1jwRREiSs%3D&se=1700000000&skn=provisioningserviceowner"},
		{"model repository token", func(t *testing.T) (Token, error) {
			return NewModelRepoToken("repo.azureiotrepository.com", "a1b2c3d4-e5f6-4a5b-8c9d-0e1f2a3b4c5d", "reader", 1700000000, mustKey(t, "c2VjcmV0"))
		}, "SharedAccessSignature sr=repo.azureiotrepository.com&sig=f24QMW4fClr7DXzULfeKMxp0QvJIgcyIX7K%2FNKYSXis%3D&se=1700000000&skn=reader&rid=a1b2c3d4-e5f6-4a5b-8c9d-0e1f2a3b4c5d"},
		{"Service Bus token with raw UTF-8 key", func(t *testing.T) (Token, error) {
			return New("sb://myns.servicebus.windows.net/myqueue", "RootManageSharedAccessKey", 1700000000, NewKey([]byte("my-utf8-secret-value")))
		}, "SharedAccessSignature sr=sb%3A%2F%2Fmyns.servicebus.windows.net%2Fmyqueue&sig=ooZedCSMrnuBgxsEfGHCwSfV0kPbU%2FYqGH%2Fq7Y%2FmsaU%3D&se=1700000000&skn=RootManageSharedAccessKey"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := tt.make(t)
			if err != nil {
				t.Fatalf("make: %v", err)
			}
			if got := tok.String(); got != tt.want {
				t.Errorf("String() =\n %s\nwant\n %s", got, tt.want)
			}
			// String → Parse → String round-trips.
			p, err := Parse(tok.String())
			if err != nil {
				t.Fatalf("Parse(String()) = %v", err)
			}
			if p != tok {
				t.Errorf("Parse(String()) = %+v, want %+v", p, tok)
			}
			if got := p.String(); got != tt.want {
				t.Errorf("round trip = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestNodeVectors(t *testing.T) {
	// V1: raw HMAC; V2: Node emits sr, sig, skn, se — we parse any order and
	// keep the signature.
	k := mustKey(t, "cGFzc3dvcmQ=")
	sig, err := k.Sign([]byte("string-to-sign"))
	if err != nil {
		t.Fatal(err)
	}
	if got := b64(sig); got != "o1n1hiIVgzVA2+krq9ty1Z4xsIJKJZP3dYT8MOi65Y4=" {
		t.Errorf("V1 HMAC = %s", got)
	}
	tok, err := Parse("SharedAccessSignature sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3D&skn=encode%28%27Me%27%29&se=12345")
	if err != nil {
		t.Fatalf("Parse V2: %v", err)
	}
	if tok.KeyName != "encode('Me')" || tok.Expiry != 12345 || tok.Resource != "uri" {
		t.Errorf("Parse V2 = %+v", tok)
	}
	if err := Verify(tok, k, "uri", time.Unix(12000, 0), 0); err != nil {
		t.Errorf("Verify V2: %v", err)
	}
}

func TestDeriveDeviceKey(t *testing.T) {
	tests := []struct {
		name, group, reg, want, wantErr string
	}{
		{"published vector", groupKey, regID, derivedKey, ""},
		{"unpadded group key", strings.TrimRight(groupKey, "="), regID, derivedKey, ""},
		{"trailing newline from a key file", groupKey + "\n", regID, derivedKey, ""},
		{"invalid base64", "not*base64!", regID, "", "not valid base64"},
		{"empty group key", "", regID, "", "key is empty"},
		{"empty registration id", groupKey, "", "", "registration id is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DeriveDeviceKey(tt.group, tt.reg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("DeriveDeviceKey err = %v, want containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), tt.group) && tt.group != "" {
					t.Errorf("error echoes the key: %v", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("DeriveDeviceKey = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestPlansStaticSignature(t *testing.T) {
	secret := NewKey([]byte("locatrix-api-secret"))
	tests := []struct {
		name     string
		req      PlansStaticRequest
		wantSTS  string
		wantSign string
	}{
		{"floor", PlansStaticRequest{Code: "flr_95kpvk552x7ue5xvb4f290a4q", Partner: "ptnr_cadr0g675rbk0fv03fm5fewz7", Expiry: 2145916800},
			"flr_95kpvk552x7ue5xvb4f290a4q:ptnr_cadr0g675rbk0fv03fm5fewz7:2145916800", "cP7IZHoMmyPY4TYmrJhiBGpE2yhvjlDyeducCf5%2F3oI%3D"},
		{"layers", PlansStaticRequest{Code: "flr_95kpvk552x7ue5xvb4f290a4q", Layers: []string{"structure", "interiorZone", "leaderLineIcon"}, Partner: "ptnr_cadr0g675rbk0fv03fm5fewz7", Expiry: 2145916800},
			"flr_95kpvk552x7ue5xvb4f290a4q:structure,interiorZone,leaderLineIcon:ptnr_cadr0g675rbk0fv03fm5fewz7:2145916800", "dLXvl2P1IwqL6If7y4ue08BaBff5y5svv%2Bi3D7Efy9Y%3D"},
		{"empty icons list stays in", PlansStaticRequest{Code: "camp_v03fm5fewz75xvb4f290a4q", Icons: []string{}, Partner: "ptnr_cadr0g675rbk0fv03fm5fewz7", Expiry: 2145916800},
			"camp_v03fm5fewz75xvb4f290a4q::ptnr_cadr0g675rbk0fv03fm5fewz7:2145916800", "ZM7XMnNHrPKZjsvXp1XmpUwhSump%2Bj%2BnZxvfhpMcMZE%3D"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.req.StringToSign(); got != tt.wantSTS {
				t.Errorf("StringToSign() = %q, want %q", got, tt.wantSTS)
			}
			got, err := PlansStaticSignature(tt.req, secret)
			if err != nil || got != tt.wantSign {
				t.Errorf("PlansStaticSignature() = %q, %v; want %q", got, err, tt.wantSign)
			}
		})
	}
	if _, err := PlansStaticSignature(PlansStaticRequest{Partner: "p", Expiry: 1}, secret); err == nil {
		t.Error("missing code: want error")
	}
}

func TestParseErrors(t *testing.T) {
	const good = "sr=h%2Fdevices%2Fd&sig=uux4PSAK1s9efNcBHin0pm7O5oENedTWkhqGp8JAyFY%3D&se=10"
	tests := []struct {
		name, in, want string
	}{
		{"no prefix", good, "must start with"},
		{"lower-case prefix", "sharedaccesssignature " + good, "must start with"},
		{"empty", Prefix, "no fields"},
		{"duplicate se", Prefix + good + "&se=11", `"se" appears twice`},
		{"duplicate sr", Prefix + good + "&sr=x", `"sr" appears twice`},
		{"missing sig", Prefix + "sr=a&se=10", "missing field sig"},
		{"missing se", Prefix + "sr=a&sig=AAAA", "missing field se"},
		{"missing sr", Prefix + "sig=AAAA&se=10", "missing field sr"},
		{"non-integer se", Prefix + "sr=a&sig=AAAA&se=10.5", `se "10.5" is not a non-negative integer`},
		{"negative se", Prefix + "sr=a&sig=AAAA&se=-1", "not a non-negative integer"},
		{"huge se", Prefix + "sr=a&sig=AAAA&se=99999999999999999999", "out of range"},
		{"unknown field", Prefix + good + "&foo=1", `unknown field "foo"`},
		{"field without =", Prefix + good + "&oops", "not name=value"},
		{"bad sig base64", Prefix + "sr=a&sig=%%%&se=1", "sig"},
		{"bad sr encoding", Prefix + "sr=a%zz&sig=AAAA&se=1", "sr"},
		{"empty skn", Prefix + good + "&skn=", "skn"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse(%q) err = %v, want ErrMalformed containing %q", tt.in, err, tt.want)
			}
		})
	}
	if _, err := Parse("SharedAccessSignature se=10&skn=x&sig=uux4PSAK1s9efNcBHin0pm7O5oENedTWkhqGp8JAyFY%3D&sr=a"); err != nil {
		t.Errorf("any field order: %v", err)
	}
}

func TestVerify(t *testing.T) {
	key := mustKey(t, derivedKey)
	other := mustKey(t, "c2VjcmV0")
	const hub = "Example-Hub.azure-devices.net"
	tok, err := NewDeviceToken(hub, "dev1", "", 1700000000, key)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1699999000, 0)
	flip := func(s string, i int) string {
		b := []byte(s)
		b[i] ^= 1
		return string(b)
	}
	tests := []struct {
		name   string
		tok    Token
		key    Signer
		target string
		now    time.Time
		skew   time.Duration
		want   error
	}{
		{"valid", tok, key, hub + "/devices/dev1", now, 0, nil},
		{"host case-insensitive", tok, key, "example-hub.AZURE-devices.net/devices/dev1", now, 0, nil},
		{"module under device", tok, key, hub + "/devices/dev1/modules/m", now, 0, nil},
		{"segment prefix only", tok, key, hub + "/devices/dev10", now, 0, ErrAudience},
		{"device id is case-sensitive", tok, key, hub + "/devices/DEV1", now, 0, ErrAudience},
		{"other device", tok, key, hub + "/devices/dev2", now, 0, ErrAudience},
		{"wrong key", tok, other, hub + "/devices/dev1", now, 0, ErrSignature},
		{"expired", tok, key, hub + "/devices/dev1", time.Unix(1700000001, 0), 0, ErrExpired},
		{"expired within skew", tok, key, hub + "/devices/dev1", time.Unix(1700000200, 0), 5 * time.Minute, nil},
		{"expired beyond skew", tok, key, hub + "/devices/dev1", time.Unix(1700000301, 0), 5 * time.Minute, ErrExpired},
		{"flipped bit in sig", Token{Resource: tok.Resource, Signature: flip(tok.Signature, 3), Expiry: tok.Expiry}, key, hub + "/devices/dev1", now, 0, ErrSignature},
		{"flipped bit in sr", Token{Resource: flip(tok.Resource, len(tok.Resource)-1), Signature: tok.Signature, Expiry: tok.Expiry}, key, hub + "/devices/dev1", now, 0, ErrSignature},
		{"flipped bit in se", Token{Resource: tok.Resource, Signature: tok.Signature, Expiry: tok.Expiry ^ 1}, key, hub + "/devices/dev1", now, 0, ErrSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(tt.tok, tt.key, tt.target, tt.now, tt.skew)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Verify() = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestVerifyOtherEncodings(t *testing.T) {
	// The cloud verifies over sr as transmitted: raw slashes (C SDK), lower-case
	// hex (C SDK DPS) and upper-case hex must all verify.
	key := mustKey(t, derivedKey)
	for _, sr := range []string{"h.net/devices/d", "h.net%2fdevices%2fd", "h.net%2Fdevices%2Fd"} {
		t.Run(sr, func(t *testing.T) {
			sig, _ := key.Sign([]byte(StringToSign(sr, 100)))
			tok := Token{Resource: sr, Signature: b64(sig), Expiry: 100}
			p, err := Parse(tok.String())
			if err != nil {
				t.Fatal(err)
			}
			if err := Verify(p, key, "h.net/devices/d", time.Unix(50, 0), 0); err != nil {
				t.Fatalf("Verify: %v", err)
			}
		})
	}
}

func TestCoversResource(t *testing.T) {
	tests := []struct {
		res, target string
		want        bool
	}{
		{"h", "h/devices/d", true},
		{"h/devices", "h/devices/d", true},
		{"h/devices/d/", "h/devices/d", true},
		{"h/dev", "h/devices/d", false},
		{"h/devices/d/modules/m", "h/devices/d", false},
		{"", "h", false},
		{"H", "h/x", true},
	}
	for _, tt := range tests {
		t.Run(tt.res+"→"+tt.target, func(t *testing.T) {
			if got := CoversResource(tt.res, tt.target); got != tt.want {
				t.Errorf("CoversResource(%q, %q) = %v, want %v", tt.res, tt.target, got, tt.want)
			}
		})
	}
}

func TestKeyNeverPrinted(t *testing.T) {
	k := mustKey(t, groupKey)
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s", k, k, k, k)} {
		if strings.Contains(s, groupKey[:10]) || !strings.Contains(s, "redacted") {
			t.Errorf("key formatted as %q", s)
		}
	}
	k.Destroy()
	if _, err := k.Sign([]byte("x")); err == nil {
		t.Error("Sign after Destroy: want error")
	}
}

func TestEncode(t *testing.T) {
	tests := []struct{ in, want string }{
		{"AZaz09-_.~", "AZaz09-_.~"},
		{"a/b c+d", "a%2Fb%20c%2Bd"},
		{"dtmi:com:x;1", "dtmi%3Acom%3Ax%3B1"},
		{"é", "%C3%A9"},
	}
	for _, tt := range tests {
		if got := Encode(tt.in); got != tt.want {
			t.Errorf("Encode(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
