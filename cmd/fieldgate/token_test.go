package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fieldgate/fieldgate/sas"
)

// Published vectors (shared/docs/azure-iot-protocol.md §1.6, §1.7).
const (
	tkV6Key      = "18RQk/hOPJR9EbsJlk2j8WA6vWaj/yi+oaYg7zmxfQNdOyMSu+SJ8O7TSlZhDJCYmn4rzEiVKIzNiVAWjLxrGA=="
	tkGroupKey   = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
	tkRegID      = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"
	tkDerivedKey = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="
)

// writeKeyFile writes data into a file with exactly mode and returns its path.
func writeKeyFile(t *testing.T, data string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// sasToken builds the expected token with the sas package.
func sasToken(t *testing.T, key string, mk func(*sas.Key) (sas.Token, error)) string {
	t.Helper()
	var k *sas.Key
	var err error
	if strings.HasPrefix(key, "utf8:") {
		k = sas.NewKey([]byte(strings.TrimPrefix(key, "utf8:")))
	} else if k, err = sas.ParseKey(key); err != nil {
		t.Fatal(err)
	}
	tok, err := mk(k)
	if err != nil {
		t.Fatal(err)
	}
	return tok.String() + "\n"
}

func TestTokenKnownAnswers(t *testing.T) {
	keyFile := writeKeyFile(t, tkDerivedKey+"\n", 0o600)
	readOnlyKeyFile := writeKeyFile(t, tkDerivedKey, 0o400)
	se := int64(1700000000)
	tests := []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"V5 published: hub policy token", "",
			[]string{"--resource", "test.azure-devices.net", "--key", "c2VjcmV0", "--key-name", "owner", "--expiry", "1546308061"},
			"SharedAccessSignature sr=test.azure-devices.net&sig=uux4PSAK1s9efNcBHin0pm7O5oENedTWkhqGp8JAyFY%3D&se=1546308061&skn=owner\n"},
		{"V6 published: hub device token", "",
			[]string{"--hub", "MyExampleHub.azure-devices.net", "--device", "my-symkey-device", "--key", tkV6Key, "--expiry", "1663119026"},
			"SharedAccessSignature sr=MyExampleHub.azure-devices.net%2Fdevices%2Fmy-symkey-device&sig=f%2BwW8XOKeJOtiPc9Iwjc4OpExvPM7NlhM9qxN2a1aAM%3D&se=1663119026\n"},
		{"V6 through --resource", "",
			[]string{"--resource", "MyExampleHub.azure-devices.net/devices/my-symkey-device", "--key", tkV6Key, "--expiry", "1663119026"},
			"SharedAccessSignature sr=MyExampleHub.azure-devices.net%2Fdevices%2Fmy-symkey-device&sig=f%2BwW8XOKeJOtiPc9Iwjc4OpExvPM7NlhM9qxN2a1aAM%3D&se=1663119026\n"},
		{"DPS registration with derived key (self-computed vector)", "",
			[]string{"--dps-scope", "0ne00000000", "--registration-id", tkRegID, "--key-file", keyFile, "--expiry", "1700000000"},
			"SharedAccessSignature sr=0ne00000000%2Fregistrations%2Fsn-007-888-abc-mac-a1-b2-c3-d4-e5-f6&sig=UcaBdA4L3Se7NlFQZcBFRndkqyymINWtRUmVT5QYWng%3D&se=1700000000&skn=registration\n"},
		{"DPS registration with explicit skn=registration", "",
			[]string{"--dps-scope", "0ne00000000", "--registration-id", tkRegID, "--key-name", "registration", "--key-file", keyFile, "--expiry", "1700000000"},
			"SharedAccessSignature sr=0ne00000000%2Fregistrations%2Fsn-007-888-abc-mac-a1-b2-c3-d4-e5-f6&sig=UcaBdA4L3Se7NlFQZcBFRndkqyymINWtRUmVT5QYWng%3D&se=1700000000&skn=registration\n"},
		{"hub device with derived key from stdin (self-computed vector)", tkDerivedKey + "\n",
			[]string{"--hub", "example-hub.azure-devices.net", "--device", tkRegID, "--key", "-", "--expiry", "1700000000"},
			"SharedAccessSignature sr=example-hub.azure-devices.net%2Fdevices%2Fsn-007-888-abc-mac-a1-b2-c3-d4-e5-f6&sig=Vma2VJuT%2BnDVg0CP%2BnL6L8oXdt%2Fh4ruxKh1ucWTcjUw%3D&se=1700000000\n"},
		{"hub module with key file from stdin (self-computed vector)", tkDerivedKey + "\r\n",
			[]string{"--hub", "example-hub.azure-devices.net", "--device", "dev1", "--module", "mod1", "--key-file", "-", "--expiry", "1700000000"},
			"SharedAccessSignature sr=example-hub.azure-devices.net%2Fdevices%2Fdev1%2Fmodules%2Fmod1&sig=Zaz%2B8KWlY4qtVMWSzuJS6wFTR6hH%2BL%2BSqgIY6qC%2F2zs%3D&se=1700000000\n"},
		{"hub service token sr={host}/devices", "",
			[]string{"--resource", "example-hub.azure-devices.net/devices", "--key-name", "registryRead", "--key", "c2VjcmV0", "--expiry", "1700000000"},
			"SharedAccessSignature sr=example-hub.azure-devices.net%2Fdevices&sig=aSaUmceCywDHiGR%2BNfVIUUi5RI1Jp0%2FRHEuHw20YGv4%3D&se=1700000000&skn=registryRead\n"},
		{"DPS service token", "",
			[]string{"--resource", "example-dps.azure-devices-provisioning.net", "--key-name", "provisioningserviceowner", "--key", "c2VjcmV0", "--expiry", "1700000000"},
			"SharedAccessSignature sr=example-dps.azure-devices-provisioning.net&sig=KrnjI9uBC9cMxbktifZQfMuGexiV1s9BCF1jwRREiSs%3D&se=1700000000&skn=provisioningserviceowner\n"},
		{"model repository token", "",
			[]string{"--model-repo", "repo.azureiotrepository.com", "--repo-id", "a1b2c3d4-e5f6-4a5b-8c9d-0e1f2a3b4c5d", "--key-name", "reader", "--key", "c2VjcmV0", "--expiry", "1700000000"},
			"SharedAccessSignature sr=repo.azureiotrepository.com&sig=f24QMW4fClr7DXzULfeKMxp0QvJIgcyIX7K%2FNKYSXis%3D&se=1700000000&skn=reader&rid=a1b2c3d4-e5f6-4a5b-8c9d-0e1f2a3b4c5d\n"},
		{"Service Bus token with raw UTF-8 key", "",
			[]string{"--resource", "sb://myns.servicebus.windows.net/myqueue", "--key-name", "RootManageSharedAccessKey", "--key", "my-utf8-secret-value", "--key-encoding", "utf8", "--expiry", "1700000000"},
			"SharedAccessSignature sr=sb%3A%2F%2Fmyns.servicebus.windows.net%2Fmyqueue&sig=ooZedCSMrnuBgxsEfGHCwSfV0kPbU%2FYqGH%2Fq7Y%2FmsaU%3D&se=1700000000&skn=RootManageSharedAccessKey\n"},
		{"equals sas.NewDeviceToken", "",
			[]string{"--hub", "h.example", "--device", "d:1", "--key-file", readOnlyKeyFile, "--expiry", "1700000000"},
			sasToken(t, tkDerivedKey, func(k *sas.Key) (sas.Token, error) { return sas.NewDeviceToken("h.example", "d:1", "", se, k) })},
		{"policy key acting for a device (skn=device)", "",
			[]string{"--hub", "h.example", "--device", "d1", "--key-name", "device", "--key", "c2VjcmV0", "--expiry", "1700000000"},
			sasToken(t, "c2VjcmV0", func(k *sas.Key) (sas.Token, error) {
				return sas.New(sas.DeviceResource("h.example", "d1", ""), "device", se, k)
			})},
		{"unpadded base64 key", "",
			[]string{"--hub", "h.example", "--device", "d1", "--key", strings.TrimRight(tkDerivedKey, "="), "--expiry", "1700000000"},
			sasToken(t, tkDerivedKey, func(k *sas.Key) (sas.Token, error) { return sas.NewDeviceToken("h.example", "d1", "", se, k) })},
		{"default ttl is one hour from now", "",
			[]string{"--hub", "h.example", "--device", "d1", "--key", "c2VjcmV0"},
			sasToken(t, "c2VjcmV0", func(k *sas.Key) (sas.Token, error) {
				return sas.NewDeviceToken("h.example", "d1", "", cliTestNow.Add(time.Hour).Unix(), k)
			})},
		{"explicit ttl", "",
			[]string{"--hub", "h.example", "--device", "d1", "--key", "c2VjcmV0", "--ttl", "90s"},
			sasToken(t, "c2VjcmV0", func(k *sas.Key) (sas.Token, error) {
				return sas.NewDeviceToken("h.example", "d1", "", cliTestNow.Unix()+90, k)
			})},
		{"single-dash flags and --flag=value", "",
			[]string{"-hub=h.example", "-device", "d1", "--key=c2VjcmV0", "--expiry=0"},
			sasToken(t, "c2VjcmV0", func(k *sas.Key) (sas.Token, error) { return sas.NewDeviceToken("h.example", "d1", "", 0, k) })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := execCLI(t, tt.stdin, append([]string{"token"}, tt.args...)...)
			if r.code != exitOK {
				t.Fatalf("fieldgate token %q exit = %d; want 0 (stderr %q)", tt.args, r.code, r.stderr)
			}
			if r.stdout != tt.want {
				t.Errorf("stdout =\n %q\nwant\n %q", r.stdout, tt.want)
			}
			checkOutput(t, "stderr", r.stderr, "")
			tok, err := sas.Parse(strings.TrimSuffix(r.stdout, "\n"))
			if err != nil {
				t.Fatalf("sas.Parse(output) = %v", err)
			}
			if tok.String()+"\n" != r.stdout {
				t.Errorf("output does not round-trip through sas.Parse")
			}
		})
	}
}

// tkSecret is the key used by the error cases; it must never be printed.
const tkSecret = "SuperSecretKeyBytesDoNotPrint+0123456789abcdef="

func TestTokenErrors(t *testing.T) {
	publicFile := writeKeyFile(t, tkSecret+"\n", 0o644)
	blankFile := writeKeyFile(t, "\n", 0o600)
	missingFile := filepath.Join(t.TempDir(), "missing.key")
	hub := []string{"--hub", "h.example", "--device", "d1"}
	with := func(a ...string) []string { return append(append([]string{}, hub...), a...) }
	tests := []struct {
		name     string
		stdin    string
		args     []string
		wantCode int
		want     []string // substrings of stderr
	}{
		{"nothing to sign", "", []string{"--key", tkSecret}, exitUsage, []string{"one of --resource, --hub", "--dps-scope", "--model-repo"}},
		{"resource and hub", "", with("--resource", "x", "--key", tkSecret), exitUsage, []string{"--resource and --hub are mutually exclusive"}},
		{"hub and dps-scope", "", with("--dps-scope", "s", "--registration-id", "r", "--key", tkSecret), exitUsage, []string{"--hub and --dps-scope are mutually exclusive"}},
		{"dps-scope and model-repo", "", []string{"--dps-scope", "s", "--registration-id", "r", "--model-repo", "m", "--repo-id", "i", "--key", tkSecret}, exitUsage, []string{"--dps-scope and --model-repo are mutually exclusive"}},
		{"hub without device", "", []string{"--hub", "h", "--key", tkSecret}, exitUsage, []string{"--hub needs --device"}},
		{"device without hub", "", []string{"--resource", "r", "--device", "d", "--key", tkSecret}, exitUsage, []string{"--device needs --hub", "--resource"}},
		{"module with resource", "", []string{"--resource", "r", "--module", "m", "--key", tkSecret}, exitUsage, []string{"--module needs --hub"}},
		{"dps-scope without registration-id", "", []string{"--dps-scope", "s", "--key", tkSecret}, exitUsage, []string{"--dps-scope needs --registration-id"}},
		{"registration-id with hub", "", with("--registration-id", "r", "--key", tkSecret), exitUsage, []string{"--registration-id needs --dps-scope"}},
		{"model-repo without repo-id", "", []string{"--model-repo", "m", "--key", tkSecret}, exitUsage, []string{"--model-repo needs --repo-id"}},
		{"repo-id without model-repo", "", []string{"--resource", "r", "--repo-id", "i", "--key", tkSecret}, exitUsage, []string{"--repo-id needs --model-repo"}},
		{"dps-scope with another key name", "", []string{"--dps-scope", "s", "--registration-id", "r", "--key-name", "owner", "--key", tkSecret}, exitUsage, []string{"--key-name cannot be combined with --dps-scope"}},
		{"expiry and ttl", "", with("--expiry", "1", "--ttl", "1h", "--key", tkSecret), exitUsage, []string{"--expiry and --ttl are mutually exclusive"}},
		{"expiry not a number", "", with("--expiry", "tomorrow", "--key", tkSecret), exitUsage, []string{`--expiry "tomorrow" is not a non-negative integer`}},
		{"negative expiry", "", with("--expiry", "-5", "--key", tkSecret), exitUsage, []string{`--expiry "-5"`}},
		{"zero ttl", "", with("--ttl", "0s", "--key", tkSecret), exitUsage, []string{"--ttl 0s must be positive"}},
		{"negative ttl", "", with("--ttl", "-1h", "--key", tkSecret), exitUsage, []string{"--ttl -1h0m0s must be positive"}},
		{"ttl not a duration", "", with("--ttl", "an hour", "--key", tkSecret), exitUsage, []string{"invalid value", "-ttl"}},
		{"key and key-file", "", with("--key", tkSecret, "--key-file", publicFile), exitUsage, []string{"--key and --key-file are mutually exclusive"}},
		{"no key", "", hub, exitUsage, []string{"one of --key or --key-file is required"}},
		{"unknown key encoding", "", with("--key", tkSecret, "--key-encoding", "hex"), exitUsage, []string{`--key-encoding "hex" is not base64 or utf8`}},
		{"empty hub value", "", []string{"--hub", "", "--device", "d", "--key", tkSecret}, exitUsage, []string{"--hub is empty"}},
		{"positional argument", "", with("--key", tkSecret, "extra"), exitUsage, []string{`unexpected argument "extra"`}},
		{"unknown flag", "", with("--key", tkSecret, "--sr", "x"), exitUsage, []string{"flag provided but not defined: -sr"}},
		{"bad base64 key", "", with("--key", "SuperSecret*NotBase64!"), exitError, []string{"not valid base64", "--key-encoding utf8"}},
		{"bad base64 key on stdin", "SuperSecret*NotBase64!\n", with("--key", "-"), exitError, []string{"not valid base64"}},
		{"key file readable by others", "", with("--key-file", publicFile), exitError, []string{"--key-file: secretfile: key file " + publicFile + " has mode 0644", "run: chmod 600 " + publicFile}},
		{"blank key file", "", with("--key-file", blankFile), exitError, []string{"is empty"}},
		{"missing key file", "", with("--key-file", missingFile), exitError, []string{"no such file", missingFile}},
		{"empty stdin", "", with("--key-file", "-"), exitError, []string{"standard input was empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := execCLI(t, tt.stdin, append([]string{"token"}, tt.args...)...)
			if r.code != tt.wantCode {
				t.Errorf("fieldgate token %q exit = %d; want %d (stderr %q)", tt.args, r.code, tt.wantCode, r.stderr)
			}
			checkOutput(t, "stdout", r.stdout, "")
			if !strings.HasPrefix(r.stderr, "fieldgate token: ") {
				t.Errorf("stderr = %q; want prefix %q", r.stderr, "fieldgate token: ")
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr = %q; want it to contain %q", r.stderr, w)
				}
			}
			if tt.wantCode == exitUsage && !strings.Contains(r.stderr, "Usage: fieldgate token") {
				t.Errorf("usage error without usage: %q", r.stderr)
			}
			for _, secret := range []string{tkSecret, "SuperSecret"} {
				if strings.Contains(r.stderr, secret) {
					t.Errorf("stderr reveals the key: %q", r.stderr)
				}
			}
		})
	}
}

// FuzzTokenCLI runs token, derive-key and version with arbitrary arguments
// and standard input: the CLI never panics, exits 0, 1 or 2, prints exactly
// one line on success and nothing on stdout on failure.
func FuzzTokenCLI(f *testing.F) {
	f.Add(uint8(0), "--hub\x00h\x00--device\x00d\x00--key\x00-\x00--expiry\x001", "c2VjcmV0\n")
	f.Add(uint8(0), "--resource\x00a b/c\x00--key-file\x00-\x00--key-encoding\x00utf8\x00--ttl\x0024h", "x")
	f.Add(uint8(0), "--dps-scope\x00s\x00--registration-id\x00r\x00--key\x00c2VjcmV0", "")
	f.Add(uint8(0), "--model-repo\x00m\x00--repo-id\x00r\x00--key\x00-", "a===")
	f.Add(uint8(1), "--group-key\x00-\x00--registration-id\x00r", tkGroupKey)
	f.Add(uint8(2), "--json", "")
	names := []string{"token", "derive-key", "version"}
	f.Fuzz(func(t *testing.T, which uint8, args, stdin string) {
		argv := []string{names[int(which)%len(names)]}
		if args != "" {
			argv = append(argv, strings.Split(args, "\x00")...)
		}
		// Secrets come only from arguments and stdin: no file is ever read.
		for i, a := range argv {
			if !strings.Contains(a, "file") {
				continue
			}
			switch name := strings.TrimLeft(a, "-"); {
			case (name == "key-file" || name == "group-key-file") && i+1 < len(argv) && argv[i+1] == "-":
			case name == "key-file=-" || name == "group-key-file=-":
			default:
				return
			}
		}
		r := execCLI(t, stdin, argv...)
		switch r.code {
		case exitOK:
			if r.stdout == "" || r.stderr != "" {
				t.Fatalf("exit 0 with stdout %q stderr %q", r.stdout, r.stderr)
			}
			help := strings.HasPrefix(r.stdout, "fieldgate "+argv[0]+": ")
			if argv[0] != "version" && !help && (strings.Count(r.stdout, "\n") != 1 || !strings.HasSuffix(r.stdout, "\n")) {
				t.Fatalf("exit 0 with stdout %q; want exactly one line", r.stdout)
			}
		case exitError, exitUsage:
			if r.stdout != "" {
				t.Fatalf("exit %d with stdout %q", r.code, r.stdout)
			}
			if !strings.HasPrefix(r.stderr, "fieldgate "+argv[0]+": ") {
				t.Fatalf("exit %d with stderr %q", r.code, r.stderr)
			}
		default:
			t.Fatalf("exit code %d", r.code)
		}
	})
}
