package console

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/internal/filter"
	"github.com/loupe-dev/loupe/internal/humanize"
	"github.com/loupe-dev/loupe/internal/version"
)

// pages are the templates, each parsed with layout.html.
var pages = []string{"overview", "search", "finding", "timeline", "images", "image", "login", "error"}

func parseTemplates() (map[string]*template.Template, error) {
	out := map[string]*template.Template{}
	for _, p := range pages {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+p+".html")
		if err != nil {
			return nil, fmt.Errorf("console template %s: %w", p, err)
		}
		out[p] = t
	}
	return out, nil
}

// render writes page name with data (a map; User and Version are added).
func (c *Console) render(w http.ResponseWriter, r *http.Request, name string, code int, data map[string]any) error {
	data["User"] = user(r.Context())
	data["Version"] = version.Version
	data["Path"] = r.URL.Path
	var b bytes.Buffer
	if err := c.tpl[name].Execute(&b, data); err != nil {
		c.log.Error("console template failed", "page", name, "err", err)
		http.Error(w, "page rendering failed; the collector's log has the details", http.StatusInternalServerError)
		return nil
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, err := w.Write(b.Bytes())
	return err
}

var funcs = template.FuncMap{
	"kind":        func(k loupev1.Kind) string { return strings.ToLower(k.ShortName()) },
	"sev":         func(s loupev1.Severity) string { return strings.ToLower(s.ShortName()) },
	"ts":          formatTS,
	"tsISO":       func(t *timestamppb.Timestamp) string { return t.AsTime().UTC().Format(time.RFC3339Nano) },
	"ago":         func(now time.Time, t *timestamppb.Timestamp) string { return humanize.Ago(t.AsTime(), now) },
	"vis":         visible,
	"argv":        argvLine,
	"short":       shortID,
	"search":      searchURL,
	"timelineURL": timelineURL,
	"imageURL":    imageURL,
	"findingURL":  func(id string) string { return "/finding/" + url.PathEscape(id) },
	"mode":        func(m uint32) string { return fmt.Sprintf("%#o", m) },
}

func formatTS(t *timestamppb.Timestamp) string {
	if t == nil {
		return "—"
	}
	return t.AsTime().UTC().Format("2006-01-02 15:04:05Z")
}

// visible shows s as recorded, with every byte a terminal or a browser
// would hide or reinterpret (control characters, invalid UTF-8, bidi
// overrides) written as a Go escape, so an analyst sees what really ran.
// HTML escaping is html/template's job, not this one's.
func visible(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || r == '\u200b' || r == '\ufeff':
			if r < 0x100 {
				fmt.Fprintf(&b, `\x%02x`, r)
			} else {
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		default:
			b.WriteRune(r)
		}
		i += n
	}
	return b.String()
}

// argvLine is argv on one line, each argument quoted when it holds a space
// or is empty, for tables.
func argvLine(argv []string) string {
	parts := make([]string, len(argv))
	for i, a := range argv {
		v := visible(a)
		if v == "" || strings.ContainsAny(v, " '\"") {
			v = strconv.Quote(a)
		}
		parts[i] = v
	}
	return strings.Join(parts, " ")
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// searchURL is /search with the filter given as name/value pairs; since
// defaults to "" (all time): a link to "same sha256" must find old hits too.
func searchURL(kv ...string) string {
	f := filter.Filter{}
	for i := 0; i+1 < len(kv); i += 2 {
		switch kv[i] {
		case "since":
			f.Since = kv[i+1]
		case "pod": // real names hold no '*'; a hostile one matches more, never less
			f.Pod = kv[i+1]
		case "namespace":
			f.Namespace = kv[i+1]
		case "image":
			f.Image = kv[i+1]
		case "sha256":
			f.Sha256 = kv[i+1]
		case "container":
			f.Container = kv[i+1]
		case "node":
			f.Nodes = append(f.Nodes, kv[i+1])
		case "kind":
			f.Kinds = append(f.Kinds, kv[i+1])
		case "severity":
			f.Severity = kv[i+1]
		}
	}
	return "/search?" + f.Values().Encode()
}

func timelineURL(c *loupev1.ContainerRef) string {
	v := url.Values{}
	if c.GetPod() != "" {
		v.Set("namespace", c.GetNamespace())
		v.Set("pod", c.GetPod())
	} else {
		v.Set("container", c.GetId())
	}
	return "/timeline?" + v.Encode()
}

func imageURL(c *loupev1.ContainerRef) string {
	v := url.Values{}
	v.Set("ref", c.GetImage())
	if c.GetImageDigest() != "" {
		v.Set("digest", c.GetImageDigest())
	}
	return "/image?" + v.Encode()
}
