package console

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"
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

// Limits of the token file.
const (
	maxTokenFile   = 1 << 20
	maxTokens      = 10000
	maxTokenLen    = 4096
	maxIdentity    = 256
	tokenRecheck   = 2 * time.Second
	cookieName     = "loupe_console"
	cookieLifetime = 12 * time.Hour
)

// auth checks requests against the token file and the trusted proxy.
type auth struct {
	cfg AuthConfig
	log *slog.Logger

	mu      sync.Mutex
	checked time.Time
	mtime   time.Time
	size    int64
	hashes  map[[32]byte]string // sha256 → name
	loadErr error
	logged  string // the last reload error logged
}

func newAuth(cfg AuthConfig, log *slog.Logger) (*auth, error) {
	if cfg.TokenFile == "" && cfg.ProxyHeader == "" {
		return nil, errors.New("the console needs --console-token-file or --console-proxy-header: it serves no anonymous access")
	}
	if cfg.ProxyHeader != "" && len(cfg.TrustedProxies) == 0 {
		return nil, errors.New("--console-proxy-header needs --console-trusted-proxy (the addresses of the reverse proxy): the header is accepted from nowhere else")
	}
	a := &auth{cfg: cfg, log: log}
	if cfg.TokenFile != "" {
		if err := a.reload(time.Now(), true); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// reload re-reads the token file when its size or mtime changed. A file
// that became unreadable or malformed keeps the last good tokens (an edit in
// progress must not lock analysts out) and is logged by the caller.
func (a *auth) reload(now time.Time, force bool) error {
	if !force && now.Sub(a.checked) < tokenRecheck {
		return a.loadErr
	}
	a.checked = now
	st, err := os.Stat(a.cfg.TokenFile)
	if err != nil {
		a.loadErr = fmt.Errorf("console token file: %w", err)
		return a.loadErr
	}
	if !force && st.ModTime().Equal(a.mtime) && st.Size() == a.size {
		return a.loadErr
	}
	hashes, err := readTokenFile(a.cfg.TokenFile)
	if err != nil {
		a.loadErr = err
		return err
	}
	a.hashes, a.mtime, a.size, a.loadErr = hashes, st.ModTime(), st.Size(), nil
	return nil
}

// readTokenFile parses a token file: "<64 hex>  name" lines.
func readTokenFile(path string) (map[[32]byte]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("console token file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("console token file: %w", err)
	}
	if !st.Mode().IsRegular() || st.Size() > maxTokenFile {
		return nil, fmt.Errorf("console token file %s: want a regular file of at most %d bytes", path, maxTokenFile)
	}
	hashes := map[[32]byte]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		h, name, _ := strings.Cut(line, " ")
		b, err := hex.DecodeString(h)
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("console token file %s:%d: want \"<sha256 hex of the token>  <name>\" (e.g. printf %%s \"$TOKEN\" | sha256sum)", path, n)
		}
		if len(hashes) >= maxTokens {
			return nil, fmt.Errorf("console token file %s: more than %d tokens", path, maxTokens)
		}
		name = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), "*"))
		if name == "" || name == "-" {
			name = "token " + h[:8]
		}
		hashes[[32]byte(b)] = name
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("console token file %s: %w", path, err)
	}
	if len(hashes) == 0 {
		return nil, fmt.Errorf("console token file %s holds no token", path)
	}
	return hashes, nil
}

// tokenName returns the name of token when its hash is in the file.
func (a *auth) tokenName(token string, now time.Time) (string, bool) {
	if a.cfg.TokenFile == "" || token == "" || len(token) > maxTokenLen {
		return "", false
	}
	a.mu.Lock()
	if err := a.reload(now, false); err != nil && err.Error() != a.logged {
		a.logged = err.Error()
		a.log.Warn("console token file not reloaded; the last good tokens stay in force", "err", err)
	} else if err == nil {
		a.logged = ""
	}
	hashes := a.hashes
	a.mu.Unlock()
	sum := sha256.Sum256([]byte(token))
	// Compare against every entry in constant time, so timing tells nothing.
	name, found := "", false
	for h, n := range hashes {
		if subtle.ConstantTimeCompare(h[:], sum[:]) == 1 {
			name, found = n, true
		}
	}
	return name, found
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
