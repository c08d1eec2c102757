package main

import (
	"bytes"
	"fmt"
	"io"

	"github.com/fieldgate/fieldgate/internal/secretfile"
)

// readSecret returns the secret given either inline (--NAME VALUE) or as a
// file (--NAME-file PATH); name is the flag name without dashes, e.g. "key".
// The value "-" in either flag reads the secret from standard input. Files
// must not be readable by group or others (see internal/secretfile). Trailing
// CR/LF is removed. Giving both flags or neither is a usage error; no error
// contains the secret.
func readSecret(e *env, flagValue, fileValue, name string) (string, error) {
	switch {
	case flagValue != "" && fileValue != "":
		return "", usagef("--%s and --%s-file are mutually exclusive; give one of them", name, name)
	case flagValue == "" && fileValue == "":
		return "", usagef("one of --%s or --%s-file is required (--%s-file - reads standard input)", name, name, name)
	case flagValue == "-" || fileValue == "-":
		return readSecretStdin(e, name)
	case fileValue != "":
		b, err := secretfile.Read(fileValue)
		if err != nil {
			return "", fmt.Errorf("--%s-file: %w", name, err)
		}
		s := string(b)
		clear(b)
		return s, nil
	default:
		return flagValue, nil
	}
}

func readSecretStdin(e *env, name string) (string, error) {
	if e.Stdin == nil {
		return "", fmt.Errorf("--%s -: no standard input", name)
	}
	b, err := io.ReadAll(io.LimitReader(e.Stdin, secretfile.MaxSize+1))
	defer clear(b)
	if err != nil {
		return "", fmt.Errorf("--%s -: read standard input: %w", name, err)
	}
	if len(b) > secretfile.MaxSize {
		return "", fmt.Errorf("--%s -: standard input is larger than %d bytes; pipe in only the key", name, secretfile.MaxSize)
	}
	b = bytes.TrimRight(b, "\r\n")
	if len(bytes.TrimSpace(b)) == 0 {
		return "", fmt.Errorf("--%s -: standard input was empty; pipe the key in, e.g. fieldgate ... --%s - < %s.txt", name, name, name)
	}
	return string(b), nil
}
