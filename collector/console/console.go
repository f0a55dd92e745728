// Package console is the collector's read-only web console for SOC
// analysts: a fleet overview, a search form over every `loupe query` filter,
// finding details with the process tree, pod and container timelines, and
// images with their inventory and compliance results.
//
// Pages are rendered on the server with html/template from the same store
// queries as the gRPC API; every asset is embedded in the binary. Finding
// data is attacker-controlled and is only ever written through
// html/template's contextual escaping; the Content-Security-Policy forbids
// inline script and any origin but the console's own. Nobody reads anything
// without a bearer token (checked against hashed tokens) or an identity
// header from a trusted reverse proxy.
package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/store"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Bounds of the console's work, like those of the gRPC API.
const (
	// PageLimit is the default number of rows of a search page, MaxPageLimit
	// the most a page shows (downloads go up to store.MaxLimit).
	PageLimit, MaxPageLimit = 100, 1000
	// requestTimeout bounds the queries of one page or download.
	requestTimeout = 30 * time.Second
	// maxConcurrent bounds the pages and downloads being computed at once;
	// more get 503 and a Retry-After.
	maxConcurrent = 8
	// maxURL bounds the query string of a request.
	maxURL = 8 << 10
)

// CSP is the Content-Security-Policy of every response: the console's own
// script and stylesheet only, no inline script or style, no framing.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Config configures the console.
type Config struct {
	// Store is the collector's store.
	Store store.Store
	// Nodes lists the nodes with their connection state (the server knows
	// open streams); nil uses Store.Nodes.
	Nodes func(context.Context) ([]*loupev1.Node, error)
	// Auth says who may read.
	Auth AuthConfig
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now defaults to time.Now (tests set it).
	Now func() time.Time
}

// Console serves the pages.
type Console struct {
	cfg  Config
	log  *slog.Logger
	auth *auth
	tpl  map[string]*template.Template
	sem  chan struct{}
	mux  *http.ServeMux
}

// New checks cfg and parses the templates.
func New(cfg Config) (*Console, error) {
	if cfg.Store == nil {
		return nil, errors.New("console: no store")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Nodes == nil {
		cfg.Nodes = cfg.Store.Nodes
	}
	a, err := newAuth(cfg.Auth, cfg.Logger)
	if err != nil {
		return nil, err
	}
	c := &Console{cfg: cfg, log: cfg.Logger, auth: a, sem: make(chan struct{}, maxConcurrent), mux: http.NewServeMux()}
	if c.tpl, err = parseTemplates(); err != nil {
		return nil, err
	}
	static, _ := fs.Sub(staticFS, "static")
	c.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	c.mux.HandleFunc("GET /login", c.loginPage)
	c.mux.HandleFunc("POST /login", c.login)
	c.mux.HandleFunc("POST /logout", c.logout)
	c.page("GET /{$}", c.overview)
	c.page("GET /search", c.search)
	c.page("GET /search.jsonl", c.download)
	c.page("GET /search.json", c.download)
	c.page("GET /finding/{id}", c.finding)
	c.page("GET /timeline", c.timeline)
	c.page("GET /images", c.images)
	c.page("GET /image", c.image)
	c.page("GET /image/hdf.json", c.imageHDF)
	return c, nil
}

// ServeHTTP sets the security headers of every response and routes.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	if r.TLS != nil {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
	if len(r.URL.RawQuery) > maxURL {
		http.Error(w, "query string too long", http.StatusRequestURITooLong)
		return
	}
	c.mux.ServeHTTP(w, r)
}

type ctxKey struct{}

// user is who is asking (set by page).
func user(ctx context.Context) string { s, _ := ctx.Value(ctxKey{}).(string); return s }

// page registers an authenticated, bounded handler.
func (c *Console) page(pattern string, fn func(http.ResponseWriter, *http.Request) error) {
	c.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		who := c.auth.identify(r, c.cfg.Now())
		if who == "" {
			c.unauthorized(w, r)
			return
		}
		select {
		case c.sem <- struct{}{}:
			defer func() { <-c.sem }()
		default:
			w.Header().Set("Retry-After", "5")
			http.Error(w, "the console is busy: too many pages being computed, retry in a few seconds", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(context.WithValue(r.Context(), ctxKey{}, who), requestTimeout)
		defer cancel()
		if err := fn(w, r.WithContext(ctx)); err != nil {
			c.fail(w, r.WithContext(ctx), err)
		}
	})
}

// httpError is an error with the status to answer.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	code, msg := http.StatusInternalServerError, "the store failed to answer; the collector's log has the details"
	var he *httpError
	switch {
	case errors.As(err, &he):
		code, msg = he.code, he.msg
	case errors.Is(err, store.ErrInvalidQuery):
		code, msg = http.StatusBadRequest, err.Error()
	case errors.Is(err, store.ErrNotFound):
		code, msg = http.StatusNotFound, "no such finding (it may have passed the retention)"
	case errors.Is(err, context.DeadlineExceeded):
		code, msg = http.StatusGatewayTimeout, fmt.Sprintf("the query took longer than %s: narrow it (a shorter --since, a kind, a namespace)", requestTimeout)
	default:
		c.log.Error("console page failed", "path", r.URL.Path, "err", err)
	}
	_ = c.render(w, r, "error", code, map[string]any{"Title": http.StatusText(code), "Message": msg, "Code": code})
}

func (c *Console) unauthorized(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="loupe-console"`)
	_ = c.render(w, r, "login", http.StatusUnauthorized, map[string]any{"Title": "Sign in", "Next": r.URL.RequestURI(),
		"Tokens": c.cfg.Auth.TokenFile != ""})
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	_ = c.render(w, r, "login", http.StatusOK, map[string]any{"Title": "Sign in", "Next": safeNext(r.URL.Query().Get("next")),
		"Tokens": c.cfg.Auth.TokenFile != ""})
}

// login checks the token typed in the form and keeps it in an HttpOnly,
// SameSite=Strict cookie; every request checks it again against the file.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	tok := r.PostForm.Get("token")
	next := safeNext(r.PostForm.Get("next"))
	if _, ok := c.auth.tokenName(tok, c.cfg.Now()); !ok {
		_ = c.render(w, r, "login", http.StatusUnauthorized, map[string]any{"Title": "Sign in", "Next": next, "Tokens": true,
			"Failed": true})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: tok, Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: int(cookieLifetime / time.Second)})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
