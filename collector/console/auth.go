package console

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/loupe-dev/loupe/internal/tokenfile"
)

// AuthConfig says who may read the console. At least one of TokenFile and
// ProxyHeader is required: there is no anonymous access.
type AuthConfig struct {
	// TokenFile holds the sha256 of each accepted bearer token, one per line
	// in sha256sum's format ("<hex>  <name>"); # starts a comment. It is
	// re-read when it changes, so tokens are added and revoked without a
	// restart.
	TokenFile string
	// ProxyHeader names the header carrying the user's identity set by an
	// authenticating reverse proxy (oauth2-proxy: X-Forwarded-Email),
	// accepted only from TrustedProxies.
	ProxyHeader string
	// TrustedProxies are the addresses the proxy connects from.
	TrustedProxies []netip.Prefix
}

// Limits of the console's identities and cookie.
const (
	maxIdentity    = 256
	cookieName     = "loupe_console"
	cookieLifetime = 12 * time.Hour
)

// auth checks requests against the token file and the trusted proxy.
type auth struct {
	cfg    AuthConfig
	tokens *tokenfile.File // nil without a token file
}

func newAuth(cfg AuthConfig, log *slog.Logger) (*auth, error) {
	if cfg.TokenFile == "" && cfg.ProxyHeader == "" {
		return nil, errors.New("the console needs --console-token-file or --console-proxy-header: it serves no anonymous access")
	}
	if cfg.ProxyHeader != "" && len(cfg.TrustedProxies) == 0 {
		return nil, errors.New("--console-proxy-header needs --console-trusted-proxy (the addresses of the reverse proxy): the header is accepted from nowhere else")
	}
	a := &auth{cfg: cfg}
	if cfg.TokenFile != "" {
		var err error
		if a.tokens, err = tokenfile.Open(cfg.TokenFile, "console token file", log); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// tokenName returns the name of token when its hash is in the token file.
func (a *auth) tokenName(token string, now time.Time) (string, bool) {
	return a.tokens.Lookup(token, now)
}

// identify returns who is asking, or "" when nobody acceptable is.
func (a *auth) identify(r *http.Request, now time.Time) string {
	if a.cfg.ProxyHeader != "" && a.fromTrustedProxy(r) {
		if id := strings.TrimSpace(r.Header.Get(a.cfg.ProxyHeader)); id != "" && len(id) <= maxIdentity && printableASCII(id) {
			return id
		}
	}
	if tok, ok := bearer(r); ok {
		if name, ok := a.tokenName(tok, now); ok {
			return name
		}
		return ""
	}
	if c, err := r.Cookie(cookieName); err == nil {
		if name, ok := a.tokenName(c.Value, now); ok {
			return name
		}
	}
	return ""
}

func (a *auth) fromTrustedProxy(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	for _, p := range a.cfg.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false
	}
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", true // a malformed header is a failed attempt, not a fall-through to the cookie
	}
	return strings.TrimSpace(tok), true
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// ParseTrustedProxies parses addresses and CIDR prefixes ("10.0.0.0/8",
// "127.0.0.1") for AuthConfig.TrustedProxies.
func ParseTrustedProxies(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		for _, part := range strings.Split(s, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			if p, err := netip.ParsePrefix(part); err == nil {
				out = append(out, p.Masked())
				continue
			}
			ip, err := netip.ParseAddr(part)
			if err != nil {
				return nil, fmt.Errorf("--console-trusted-proxy %q: want an address or a CIDR prefix such as 10.0.0.0/8", part)
			}
			out = append(out, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
		}
	}
	return out, nil
}

// safeNext is the local path to return to after login, or "/".
func safeNext(next string) string {
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/"
	}
	return next
}
