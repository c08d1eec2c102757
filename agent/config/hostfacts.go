package config

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// HostFacts are the per-board identifiers a registration_id template may use.
// Empty fields were not found on this host.
type HostFacts struct {
	// Serial is the board serial (Raspberry Pi: /proc/cpuinfo "Serial", or
	// the device tree serial-number), lower case.
	Serial string `json:"serial,omitempty"`
	// MachineID is /etc/machine-id (32 hex digits).
	MachineID string `json:"machine_id,omitempty"`
	// Hostname is the kernel host name.
	Hostname string `json:"hostname,omitempty"`
	// MAC is the first hardware network interface's address as 12 lower-case
	// hex digits without separators.
	MAC string `json:"mac,omitempty"`
}

// Placeholders are the names a registration_id template may use in braces.
var Placeholders = []string{"serial", "machine_id", "hostname", "mac"}

// MaxRegistrationIDLen is DPS's limit on registration ids.
const MaxRegistrationIDLen = 128

func (f HostFacts) lookup(name string) (string, string) {
	switch name {
	case "serial":
		return f.Serial, "no board serial found in /proc/cpuinfo or /sys/firmware/devicetree/base/serial-number — use {machine_id} on non-Pi boards"
	case "machine_id":
		return f.MachineID, "/etc/machine-id is missing or empty — run systemd-machine-id-setup, or use {serial} or {mac}"
	case "hostname":
		return f.Hostname, "the host name is empty — set one with hostnamectl, or use {serial} or {machine_id}"
	case "mac":
		return f.MAC, "no network interface with a hardware address in /sys/class/net — use {serial} or {machine_id}"
	}
	return "", ""
}

// templatePart is a literal run or a placeholder of a registration_id
// template.
type templatePart struct {
	literal     string
	placeholder string
}

// parseTemplate splits a registration_id template; unknown placeholders and
// unbalanced braces are errors.
func parseTemplate(tmpl string) ([]templatePart, error) {
	var parts []templatePart
	rest := tmpl
	for rest != "" {
		open := strings.IndexAny(rest, "{}")
		if open < 0 {
			parts = append(parts, templatePart{literal: rest})
			break
		}
		if rest[open] == '}' {
			return nil, fmt.Errorf("has a '}' without '{'")
		}
		if open > 0 {
			parts = append(parts, templatePart{literal: rest[:open]})
		}
		end := strings.IndexAny(rest[open+1:], "{}")
		if end < 0 || rest[open+1+end] != '}' {
			return nil, fmt.Errorf("has a '{' without '}'")
		}
		name := rest[open+1 : open+1+end]
		known := false
		for _, p := range Placeholders {
			known = known || p == name
		}
		if !known {
			return nil, fmt.Errorf("uses unknown placeholder {%s}", name)
		}
		parts = append(parts, templatePart{placeholder: name})
		rest = rest[open+1+end+1:]
	}
	return parts, nil
}

func regIDChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == ':'
}

// checkRegistrationTemplate checks what can be known before expansion.
func checkRegistrationTemplate(tmpl string) (msg, fix string) {
	const placeholders = "placeholders: {serial}, {machine_id}, {hostname}, {mac}"
	parts, err := parseTemplate(tmpl)
	if err != nil {
		return err.Error(), placeholders
	}
	n := 0
	for _, p := range parts {
		lit := strings.ToLower(p.literal)
		n += len(lit)
		for i := 0; i < len(lit); i++ {
			if !regIDChar(lit[i]) {
				return fmt.Sprintf("contains %q; registration ids use only letters, digits and - . _ :", lit[i]), `e.g. "gw-{serial}"`
			}
		}
	}
	if n > MaxRegistrationIDLen {
		return fmt.Sprintf("is longer than %d characters", MaxRegistrationIDLen), "shorten the fixed text"
	}
	if last := parts[len(parts)-1]; last.literal != "" {
		c := strings.ToLower(last.literal)[len(last.literal)-1]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return "must end with a letter, digit or '-'", `e.g. "gw-{serial}"`
		}
	}
	return "", ""
}

// ExpandRegistrationID replaces the placeholders of tmpl ({serial},
// {machine_id}, {hostname}, {mac}) with facts and lower-cases the result. It
// fails, naming the placeholder and a fix, when a needed fact is missing or
// the result is not a valid DPS registration id (at most 128 of a-z 0-9 - . _ :,
// ending in a letter, digit or '-').
func ExpandRegistrationID(tmpl string, facts HostFacts) (string, error) {
	parts, err := parseTemplate(tmpl)
	if err != nil {
		return "", fmt.Errorf("config: registration_id %q %w (placeholders: {serial}, {machine_id}, {hostname}, {mac})", tmpl, err)
	}
	var b strings.Builder
	for _, p := range parts {
		if p.placeholder == "" {
			b.WriteString(p.literal)
			continue
		}
		v, fix := facts.lookup(p.placeholder)
		if v == "" {
			return "", fmt.Errorf("config: registration_id %q: {%s}: %s", tmpl, p.placeholder, fix)
		}
		b.WriteString(v)
	}
	id := strings.ToLower(b.String())
	if err := ValidRegistrationID(id); err != nil {
		return "", fmt.Errorf("config: registration_id %q expands to %q: %w", tmpl, id, err)
	}
	return id, nil
}

// ValidRegistrationID reports whether id is a valid lower-case DPS
// registration id.
func ValidRegistrationID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("registration id is empty")
	case len(id) > MaxRegistrationIDLen:
		return fmt.Errorf("registration id is %d characters long, the limit is %d", len(id), MaxRegistrationIDLen)
	}
	for i := 0; i < len(id); i++ {
		if !regIDChar(id[i]) {
			return fmt.Errorf("registration id contains %q; only a-z, 0-9 and - . _ : are allowed", id[i])
		}
	}
	if c := id[len(id)-1]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
		return fmt.Errorf("registration id must end with a letter, digit or '-'")
	}
	return nil
}

// ReadHostFacts reads the host identifiers below root ("/" on a real host; a
// directory with the same layout in tests): /proc/cpuinfo,
// /sys/firmware/devicetree/base/serial-number, /etc/machine-id,
// /proc/sys/kernel/hostname (or /etc/hostname) and /sys/class/net/*/address.
// Facts that are missing stay empty; only an unusable root is an error.
func ReadHostFacts(root string) (HostFacts, error) {
	fi, err := os.Stat(root)
	if err != nil {
		return HostFacts{}, fmt.Errorf("config: reading host facts: %w", err)
	}
	if !fi.IsDir() {
		return HostFacts{}, fmt.Errorf("config: reading host facts: %s is not a directory", root)
	}
	var f HostFacts
	f.Serial = cpuinfoSerial(readSmall(root, "proc/cpuinfo"))
	if f.Serial == "" {
		f.Serial = cleanSerial(string(bytes.Trim(readSmall(root, "sys/firmware/devicetree/base/serial-number"), "\x00 \t\r\n")))
	}
	if id := strings.ToLower(firstLine(readSmall(root, "etc/machine-id"))); isHex(id) && len(id) == 32 {
		f.MachineID = id
	}
	f.Hostname = firstLine(readSmall(root, "proc/sys/kernel/hostname"))
	if f.Hostname == "" || f.Hostname == "(none)" {
		f.Hostname = firstLine(readSmall(root, "etc/hostname"))
	}
	f.MAC = firstMAC(root)
	return f, nil
}

// readSmall reads at most 64 KiB of root/rel, or nil.
func readSmall(root, rel string) []byte {
	fh, err := os.Open(filepath.Join(root, filepath.FromSlash(rel)))
	if err != nil {
		return nil
	}
	defer fh.Close()
	buf := make([]byte, 64<<10)
	n, _ := fh.Read(buf)
	return buf[:n]
}

func firstLine(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte{'\n'})
	return strings.TrimSpace(string(bytes.Trim(line, "\x00")))
}

func cpuinfoSerial(b []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "Serial" {
			return cleanSerial(strings.TrimSpace(v))
		}
	}
	return ""
}

// cleanSerial lower-cases a serial and drops placeholder values (all zeros,
// or characters no registration id may hold).
func cleanSerial(s string) string {
	s = strings.ToLower(s)
	if strings.Trim(s, "0") == "" || len(s) > 64 {
		return ""
	}
	for i := 0; i < len(s); i++ {
		if !regIDChar(s[i]) {
			return ""
		}
	}
	return s
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil && s != ""
}

// firstMAC returns the address of the first interface (by name) backed by a
// device, else of the first non-loopback interface with a non-zero address.
func firstMAC(root string) string {
	dir := filepath.Join(root, "sys", "class", "net")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	var virtual string
	for _, name := range names {
		if name == "lo" {
			continue
		}
		mac := parseMAC(firstLine(readSmall(dir, name+"/address")))
		if mac == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, name, "device")); err == nil {
			return mac
		}
		if virtual == "" {
			virtual = mac
		}
	}
	return virtual
}

// parseMAC turns "dc:a6:32:01:02:03" into "dca632010203"; "" for anything
// that is not a non-zero 6-byte address.
func parseMAC(s string) string {
	h := strings.ToLower(strings.ReplaceAll(s, ":", ""))
	if len(h) != 12 || !isHex(h) || strings.Trim(h, "0") == "" {
		return ""
	}
	return h
}
