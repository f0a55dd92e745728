package inspect

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// printable makes a raw container path safe for output (protobuf strings
// must be valid UTF-8, tables must stay one line): valid printable paths are
// returned unchanged; otherwise invalid bytes and control characters are
// escaped Go-style (\n, \xff), so the name stays recognisable and distinct.
func printable(s string) string {
	ok := utf8.ValidString(s) && strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }) < 0 && !strings.Contains(s, `\`)
	if ok {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

// Printable is printable for other packages (file indexes, CLI output).
func Printable(s string) string { return printable(s) }
