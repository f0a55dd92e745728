package console

import (
	"fmt"
	"strings"
	"time"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/store"
)

// chart is the overview's bar chart: findings per hour, stacked by
// severity, drawn as SVG on the server (no script, no library).
type chart struct {
	W, H, Top int
	Bars      []bar
	Labels    []label
	Max       int64
	Total     int64
}

type bar struct {
	X, W  int
	Parts []part
	Title string
}

type part struct {
	Y, H  int
	Class string
}

type label struct {
	X    int
	Text string
}

// Chart geometry, in SVG units.
const (
	chartW, chartH, chartTop, chartBottom = 720, 170, 8, 150
)

func newChart(counts []store.Count, start time.Time, hours int) chart {
	per := make([][6]int64, hours)
	for _, c := range counts {
		i := int(c.Hour.Sub(start) / time.Hour)
		if i < 0 || i >= hours || c.Severity < 0 || int(c.Severity) >= 6 {
			continue
		}
		per[i][c.Severity] += c.N
	}
	ch := chart{W: chartW, H: chartH, Top: chartTop}
	for _, h := range per {
		var t int64
		for _, n := range h {
			t += n
		}
		ch.Max = max(ch.Max, t)
		ch.Total += t
	}
	slot := chartW / hours
	plot := chartBottom - chartTop
	for i, h := range per {
		b := bar{X: i*slot + 1, W: slot - 2}
		y := chartBottom
		var words []string
		for sev := 0; sev < 6; sev++ { // info at the bottom, critical on top
			n := h[sev]
			if n == 0 {
				continue
			}
			px := int(int64(plot) * n / max(ch.Max, 1))
			if px < 1 {
				px = 1
			}
			y -= px
			b.Parts = append(b.Parts, part{Y: y, H: px, Class: "sev-" + strings.ToLower(loupev1.Severity(sev).ShortName())})
			words = append(words, fmt.Sprintf("%d %s", n, strings.ToLower(loupev1.Severity(sev).ShortName())))
		}
		hour := start.Add(time.Duration(i) * time.Hour).UTC()
		b.Title = hour.Format("15:04") + "Z: " + strings.Join(words, ", ")
		if len(words) == 0 {
			b.Title = hour.Format("15:04") + "Z: none"
		}
		ch.Bars = append(ch.Bars, b)
		if i%4 == 0 {
			ch.Labels = append(ch.Labels, label{X: i*slot + 2, Text: hour.Format("15:04")})
		}
	}
	return ch
}
