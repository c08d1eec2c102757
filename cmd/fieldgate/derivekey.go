package main

import (
	"context"
	"fmt"

	"github.com/fieldgate/fieldgate/sas"
)

var deriveKeyCmd = &command{
	name:    "derive-key",
	summary: "derive a device key from a DPS enrollment-group key",
	usage: `fieldgate derive-key (--group-key K | --group-key-file F) --registration-id ID

Prints only the device key, base64(HMAC-SHA256(base64decode(groupKey), ID)),
on standard output. Run it off the device (on a factory line) so the group key
never reaches the gateway. "-" as --group-key or --group-key-file reads the
group key from standard input; a key file must have mode 0600 or 0400.

Example (umask 077 so the new key file is created with mode 0600):
  (umask 077; fieldgate derive-key --group-key-file group.key --registration-id sn-007-888 > device.key)`,
}

func init() {
	deriveKeyCmd.run = runDeriveKey
	register(deriveKeyCmd)
}

func runDeriveKey(_ context.Context, e *env, args []string) int {
	fs := deriveKeyCmd.flags()
	groupKey := fs.String("group-key", "", "enrollment-group `KEY` (base64), or - to read it from standard input (prefer --group-key-file)")
	groupKeyFile := fs.String("group-key-file", "", "read the group key from `FILE` (mode 0600/0400), or - for standard input")
	regID := fs.String("registration-id", "", "the device's DPS registration `ID`")
	if code, done := deriveKeyCmd.parse(e, fs, args); done {
		return code
	}
	if *regID == "" {
		return deriveKeyCmd.usageError(e, fs, "--registration-id is required")
	}
	secret, err := readSecret(e, *groupKey, *groupKeyFile, "group-key")
	if err != nil {
		return deriveKeyCmd.fail(e, fs, err)
	}
	key, err := sas.DeriveDeviceKey(secret, *regID)
	if err != nil {
		return deriveKeyCmd.fail(e, fs, err)
	}
	fmt.Fprintln(e.Stdout, key)
	return exitOK
}
