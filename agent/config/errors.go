package config

import (
	"fmt"
	"sort"
	"strings"
)

// Problem is one thing wrong with a configuration.
type Problem struct {
	// Key is the full key path, e.g. "telemetry.interval" or
	// "sensor[1].values" (zero-based index of the [[sensor]] table).
	Key string `json:"key,omitempty"`
	// Value is the offending value as written in TOML ("" when missing).
	Value string `json:"value,omitempty"`
	// Message says what is wrong.
	Message string `json:"message"`
	// Fix says how to repair it, when known.
	Fix string `json:"fix,omitempty"`
	// Line is the 1-based line of the key in the file, 0 when unknown.
	Line int `json:"line,omitempty"`
	// Column is the 1-based column, 0 when unknown.
	Column int `json:"column,omitempty"`
}

// String formats p as one line without the file name:
// `12: telemetry.interval = "0s": must be at least 1s (e.g. "30s")`.
func (p Problem) String() string {
	var b strings.Builder
	if p.Line > 0 {
		fmt.Fprintf(&b, "%d: ", p.Line)
		if p.Column > 0 {
			fmt.Fprintf(&b, "%d: ", p.Column)
		}
	}
	p.body(&b)
	return b.String()
}

func (p Problem) body(b *strings.Builder) {
	if p.Key != "" {
		b.WriteString(p.Key)
		if p.Value != "" {
			b.WriteString(" = ")
			b.WriteString(p.Value)
		}
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	if p.Fix != "" {
		b.WriteString(" (")
		b.WriteString(p.Fix)
		b.WriteString(")")
	}
}

// Error is every problem found in one configuration. Load, Parse and Validate
// return it; use errors.As to get at the Problems.
type Error struct {
	// File names the configuration in messages ("config" when unnamed).
	File     string
	Problems []Problem
}

// Error lists each problem on its own line, compiler style:
// `config.toml:12: telemetry.interval = "0s": must be at least 1s (e.g. "30s")`.
func (e *Error) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.File)
		if p.Line > 0 {
			fmt.Fprintf(&b, ":%d", p.Line)
			if p.Column > 0 {
				fmt.Fprintf(&b, ":%d", p.Column)
			}
		}
		b.WriteString(": ")
		p.body(&b)
	}
	return b.String()
}

// problems collects validation problems with line numbers from the source.
type problems struct {
	src  *sourceIndex
	list []Problem
}

// add records a problem for key. value is formatted as TOML: strings are
// quoted; pass nil when the key is missing.
func (ps *problems) add(key string, value any, msg, fix string) {
	p := Problem{Key: key, Message: msg, Fix: fix, Line: ps.src.line(key)}
	if value != nil {
		// Quote the value as the user wrote it when the source has it.
		if raw, ok := ps.src.raw(key); ok {
			p.Value = raw
		} else {
			p.Value = tomlValue(value)
		}
	}
	ps.list = append(ps.list, p)
}

func (ps *problems) err(file string) error {
	if len(ps.list) == 0 {
		return nil
	}
	// Document order; problems without a line keep their order at the end.
	sort.SliceStable(ps.list, func(i, j int) bool {
		li, lj := ps.list[i].Line, ps.list[j].Line
		if li == 0 || lj == 0 {
			return li != 0 && lj == 0
		}
		if li != lj {
			return li < lj
		}
		return ps.list[i].Column < ps.list[j].Column
	})
	if n := len(ps.list) - maxProblems; n > 0 {
		ps.list = append(ps.list[:maxProblems:maxProblems], Problem{Message: fmt.Sprintf("and %d more problems", n)})
	}
	return &Error{File: file, Problems: ps.list}
}

// maxProblems bounds the report; past it, the file is probably not a
// fieldgate configuration at all.
const maxProblems = 100

func tomlValue(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("%q", x)
	case Duration:
		return fmt.Sprintf("%q", x.String())
	case ByteSize:
		return fmt.Sprintf("%q", x.String())
	case []string:
		q := make([]string, len(x))
		for i, s := range x {
			q[i] = fmt.Sprintf("%q", s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	case int:
		return fmt.Sprintf("%d", x)
	case int64:
		return fmt.Sprintf("%d", x)
	case float64:
		return fmt.Sprintf("%g", x)
	case bool:
		return fmt.Sprintf("%t", x)
	case rawValue:
		return string(x)
	}
	return fmt.Sprintf("%v", v)
}

// rawValue is printed as is.
type rawValue string
