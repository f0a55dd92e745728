// Package humanize formats values for people reading tables and pages: the
// CLI's and the console's relative times are the same words.
package humanize

import (
	"fmt"
	"time"
)

// Ago renders t relative to now for humans ("42s ago", "3m ago", "5h ago",
// "2d ago"); times older than a week print as a date.
func Ago(t, now time.Time) string {
	if t.IsZero() || t.Unix() <= 0 {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return t.UTC().Format(time.RFC3339)
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	case d < 7*24*time.Hour:
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	}
	return t.UTC().Format("2006-01-02 15:04")
}
