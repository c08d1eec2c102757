// Package secretfile reads secrets (device keys, enrollment-group keys,
// shared access policy keys) from files whose permissions keep them private.
//
// A secret file must not be accessible by group or others (mode & 0o077 == 0,
// e.g. 0600 or 0400); anything else is refused with the chmod command that
// fixes it. Read trims the trailing newline an editor or echo leaves, and no
// error ever contains the file's contents.
//
// It is imported by cmd/fieldgate (token, derive-key, doctor) and by the agent's
// identity loading, so both apply exactly the same rule.
package secretfile

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// MaxSize is the largest secret file Read accepts. Azure keys are 44 or 88
// base64 characters; anything this large is the wrong file.
const MaxSize = 64 << 10

// ModeError reports a secret file that group or others may access. Its
// message names the file, its mode and the chmod command that fixes it.
type ModeError struct {
	Path string      // the path as given to Read or Check
	Mode fs.FileMode // the permission bits found
}

func (e *ModeError) Error() string {
	return fmt.Sprintf("secretfile: key file %s has mode %04o; it must not be readable by group or others — run: chmod 600 %s",
		e.Path, uint32(e.Mode.Perm()), shellQuote(e.Path))
}

// Read returns the contents of the secret file at path with trailing CR/LF
// removed. It refuses a file that group or others may access (*ModeError), a
// directory, a file larger than MaxSize and an empty (or blank) file. The
// permission check is made on the opened file, so a symbolic link is judged
// by its target and the file cannot be swapped between check and read.
func Read(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("secretfile: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("secretfile: %w", err)
	}
	if err := checkInfo(path, fi); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		clear(b)
		return nil, fmt.Errorf("secretfile: read key file %s: %w", path, err)
	}
	if len(b) > MaxSize {
		clear(b)
		return nil, fmt.Errorf("secretfile: key file %s is larger than %d bytes; a key is a short base64 string — check the path", path, MaxSize)
	}
	n := len(bytes.TrimRight(b, "\r\n"))
	clear(b[n:])
	b = b[:n]
	if len(bytes.TrimSpace(b)) == 0 {
		clear(b)
		return nil, fmt.Errorf("secretfile: key file %s is empty; write the key into it (one line, as shown by Azure)", path)
	}
	return b, nil
}

// Check reports whether the file at path exists and is private enough to hold
// a secret, without reading it. It returns nil, a *ModeError, or an error
// naming the path (missing file, directory).
func Check(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("secretfile: %w", err)
	}
	return checkInfo(path, fi)
}

func checkInfo(path string, fi fs.FileInfo) error {
	if fi.IsDir() {
		return fmt.Errorf("secretfile: key file %s is a directory; give the path of the file that holds the key", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return &ModeError{Path: path, Mode: fi.Mode().Perm()}
	}
	return nil
}

// shellQuote returns p quoted for a POSIX shell when it contains anything but
// characters that are safe unquoted.
func shellQuote(p string) string {
	safe := p != ""
	for _, c := range p {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune("/._-+,:@%=", c)) {
			safe = false
			break
		}
	}
	if safe {
		return p
	}
	return "'" + strings.ReplaceAll(p, "'", `'\''`) + "'"
}
