package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/fieldgate/fieldgate/sas"
)

var tokenCmd = &command{
	name:    "token",
	summary: "print a shared access signature (SAS) token",
	usage: `fieldgate token RESOURCE (--key K | --key-file F) [--key-name N]
                       [--expiry UNIX | --ttl DURATION] [--key-encoding base64|utf8]

RESOURCE is exactly one of:
  --resource URI                       any resource, unencoded (hub, hub/devices, DPS host, sb://...)
  --hub HOST --device ID [--module M]  IoT Hub device or module token
  --dps-scope SCOPE --registration-id ID
                                       DPS device registration token (adds skn=registration)
  --model-repo HOST --repo-id ID       IoT Plug and Play model repository token (adds rid)

Only the token and a newline are printed on standard output. "-" as --key or
--key-file reads the key from standard input; a key file must have mode 0600
or 0400. Without --expiry the token expires --ttl (default 1h) from now.

Examples:
  fieldgate token --hub myhub.azure-devices.net --device dev1 --key-file device.key
  fieldgate token --dps-scope 0ne00000000 --registration-id dev1 --key-file - < device.key
  fieldgate token --resource myhub.azure-devices.net --key-name iothubowner --key-file owner.key --ttl 10m`,
}

func init() {
	tokenCmd.run = runToken
	register(tokenCmd)
}

// tokenArgs are the parsed flags of fieldgate token.
type tokenArgs struct {
	resource, key, keyFile, keyName, expiry, keyEncoding string
	hub, device, module                                  string
	dpsScope, registrationID                             string
	modelRepo, repoID                                    string
	ttl                                                  time.Duration
}

func tokenFlags() (*flag.FlagSet, *tokenArgs) {
	fs := tokenCmd.flags()
	a := &tokenArgs{}
	fs.StringVar(&a.resource, "resource", "", "resource `URI` to sign, unencoded (e.g. myhub.azure-devices.net/devices)")
	fs.StringVar(&a.key, "key", "", "the `KEY`, or - to read it from standard input (visible to other users in ps: prefer --key-file)")
	fs.StringVar(&a.keyFile, "key-file", "", "read the key from `FILE` (mode 0600/0400), or - for standard input")
	fs.StringVar(&a.keyName, "key-name", "", "shared access policy `NAME`, sent as skn (omit for device keys)")
	fs.StringVar(&a.expiry, "expiry", "", "absolute expiry in `UNIX` seconds (instead of --ttl)")
	fs.DurationVar(&a.ttl, "ttl", time.Hour, "token lifetime from now as a `DURATION`, e.g. 30m or 24h")
	fs.StringVar(&a.keyEncoding, "key-encoding", "base64", "key `ENCODING`: base64 (Azure keys) or utf8 (raw secret, Service Bus style)")
	fs.StringVar(&a.hub, "hub", "", "IoT Hub `HOST` name for a device or module token (with --device)")
	fs.StringVar(&a.device, "device", "", "device `ID` (with --hub)")
	fs.StringVar(&a.module, "module", "", "module `ID` (with --hub and --device)")
	fs.StringVar(&a.dpsScope, "dps-scope", "", "DPS ID `SCOPE` for a registration token (with --registration-id)")
	fs.StringVar(&a.registrationID, "registration-id", "", "DPS registration `ID` (with --dps-scope)")
	fs.StringVar(&a.modelRepo, "model-repo", "", "model repository `HOST` (with --repo-id)")
	fs.StringVar(&a.repoID, "repo-id", "", "model repository `ID` (with --model-repo)")
	return fs, a
}

func runToken(_ context.Context, e *env, args []string) int {
	fs, a := tokenFlags()
	if code, done := tokenCmd.parse(e, fs, args); done {
		return code
	}
	set := setFlags(fs)
	expiry, err := a.validate(set, e.now)
	if err != nil {
		return tokenCmd.fail(e, fs, err)
	}
	secret, err := readSecret(e, a.key, a.keyFile, "key")
	if err != nil {
		return tokenCmd.fail(e, fs, err)
	}
	var key *sas.Key
	if a.keyEncoding == "utf8" {
		key = sas.NewKey([]byte(secret))
	} else if key, err = sas.ParseKey(secret); err != nil {
		return tokenCmd.fail(e, fs, fmt.Errorf("%w (for a raw UTF-8 secret add --key-encoding utf8)", err))
	}
	defer key.Destroy()
	tok, err := a.sign(expiry, key)
	if err != nil {
		return tokenCmd.fail(e, fs, err)
	}
	fmt.Fprintln(e.Stdout, tok.String())
	return exitOK
}

// validate checks the flag combination and returns the expiry in Unix
// seconds. Every problem is a usage error naming the flags involved.
func (a *tokenArgs) validate(set map[string]bool, now func() time.Time) (int64, error) {
	for _, f := range []struct{ name, v string }{
		{"resource", a.resource}, {"key-name", a.keyName}, {"expiry", a.expiry}, {"key-encoding", a.keyEncoding},
		{"hub", a.hub}, {"device", a.device}, {"module", a.module}, {"dps-scope", a.dpsScope},
		{"registration-id", a.registrationID}, {"model-repo", a.modelRepo}, {"repo-id", a.repoID},
	} {
		if set[f.name] && f.v == "" {
			return 0, usagef("--%s is empty; give a value or leave the flag out", f.name)
		}
	}
	var forms []string
	for _, f := range []string{"resource", "hub", "dps-scope", "model-repo"} {
		if set[f] {
			forms = append(forms, "--"+f)
		}
	}
	switch len(forms) {
	case 0:
		return 0, usagef("say what to sign: one of --resource, --hub (with --device), --dps-scope (with --registration-id) or --model-repo (with --repo-id)")
	case 1:
	default:
		return 0, usagef("%s are mutually exclusive; give exactly one resource", strings.Join(forms, " and "))
	}
	// Flags that belong to one form only.
	for _, dep := range []struct{ flag, form string }{
		{"device", "hub"}, {"module", "hub"}, {"registration-id", "dps-scope"}, {"repo-id", "model-repo"},
	} {
		if set[dep.flag] && !set[dep.form] {
			return 0, usagef("--%s needs --%s (it cannot be combined with %s)", dep.flag, dep.form, forms[0])
		}
	}
	switch {
	case set["hub"] && !set["device"]:
		return 0, usagef("--hub needs --device ID")
	case set["dps-scope"] && !set["registration-id"]:
		return 0, usagef("--dps-scope needs --registration-id ID")
	case set["model-repo"] && !set["repo-id"]:
		return 0, usagef("--model-repo needs --repo-id ID")
	case set["dps-scope"] && set["key-name"] && a.keyName != sas.RegistrationKeyName:
		return 0, usagef("--key-name cannot be combined with --dps-scope, which always sends skn=%s", sas.RegistrationKeyName)
	}
	if a.keyEncoding != "base64" && a.keyEncoding != "utf8" {
		return 0, usagef("--key-encoding %q is not base64 or utf8", a.keyEncoding)
	}
	if set["expiry"] {
		if set["ttl"] {
			return 0, usagef("--expiry and --ttl are mutually exclusive; give one of them")
		}
		se, err := strconv.ParseInt(a.expiry, 10, 64)
		if err != nil || se < 0 {
			return 0, usagef("--expiry %q is not a non-negative integer number of seconds since 1970 (e.g. 1700000000)", a.expiry)
		}
		return se, nil
	}
	if a.ttl <= 0 {
		return 0, usagef("--ttl %v must be positive, e.g. 1h", a.ttl)
	}
	return now().Add(a.ttl).Unix(), nil
}

// sign builds the token of the chosen form.
func (a *tokenArgs) sign(expiry int64, key sas.Signer) (sas.Token, error) {
	switch {
	case a.hub != "" && a.keyName != "":
		// A shared access policy (e.g. "device") acting for one device.
		return sas.New(sas.DeviceResource(a.hub, a.device, a.module), a.keyName, expiry, key)
	case a.hub != "":
		return sas.NewDeviceToken(a.hub, a.device, a.module, expiry, key)
	case a.dpsScope != "":
		return sas.NewRegistrationToken(a.dpsScope, a.registrationID, expiry, key)
	case a.modelRepo != "":
		return sas.NewModelRepoToken(a.modelRepo, a.repoID, a.keyName, expiry, key)
	default:
		return sas.New(a.resource, a.keyName, expiry, key)
	}
}
