// Package tokenfile checks bearer tokens against a file of their sha256
// hashes, one per line in sha256sum's format ("<hex>  <name>"; # starts a
// comment), so that the file itself holds no secret. The file is re-read
// when it changes: tokens are added and revoked without a restart. The web
// console and the audit webhook use it.
package tokenfile

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// Limits of a token file and of a presented token.
const (
	MaxFileBytes = 1 << 20
	MaxTokens    = 10000
	MaxTokenLen  = 4096
	recheck      = 2 * time.Second
)

// File is a token file, safe for concurrent use.
type File struct {
	path string
	what string // "console token file", for messages
	log  *slog.Logger

	mu      sync.Mutex
	checked time.Time
	mtime   time.Time
	size    int64
	hashes  map[[32]byte]string // sha256 → name
	loadErr error
	logged  string // the last reload error logged
}

// Open reads path; what names it in messages (e.g. "console token file").
// It must hold at least one token. A file that turns unreadable or
// malformed later is logged once and keeps the last good tokens in force:
// an edit in progress must not lock users out. A file read whole that
// holds no token any more (its last line removed, to revoke a leaked
// token) revokes them all.
func Open(path, what string, log *slog.Logger) (*File, error) {
	if log == nil {
		log = slog.Default()
	}
	f := &File{path: path, what: what, log: log}
	if err := f.reload(time.Now(), true); err != nil {
		return nil, err
	}
	if len(f.hashes) == 0 {
		return nil, fmt.Errorf("%s %s holds no token", what, path)
	}
	return f, nil
}

// reload re-reads the file when its size or mtime changed.
func (f *File) reload(now time.Time, force bool) error {
	if !force && now.Sub(f.checked) < recheck {
		return f.loadErr
	}
	f.checked = now
	st, err := os.Stat(f.path)
	if err != nil {
		f.loadErr = fmt.Errorf("%s: %w", f.what, err)
		return f.loadErr
	}
	if !force && st.ModTime().Equal(f.mtime) && st.Size() == f.size {
		return f.loadErr
	}
	hashes, err := read(f.path, f.what)
	if err != nil {
		f.loadErr = err
		return err
	}
	if len(hashes) == 0 && len(f.hashes) > 0 {
		f.log.Warn(f.what+" holds no token any more: every token is refused", "path", f.path)
	}
	f.hashes, f.mtime, f.size, f.loadErr = hashes, st.ModTime(), st.Size(), nil
	return nil
}

// read parses a token file: "<64 hex>  name" lines.
func read(path, what string) (map[[32]byte]string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if !st.Mode().IsRegular() || st.Size() > MaxFileBytes {
		return nil, fmt.Errorf("%s %s: want a regular file of at most %d bytes", what, path, MaxFileBytes)
	}
	hashes := map[[32]byte]string{}
	sc := bufio.NewScanner(fh)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		h, name, _ := strings.Cut(line, " ")
		b, err := hex.DecodeString(h)
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("%s %s:%d: want \"<sha256 hex of the token>  <name>\" (e.g. printf %%s \"$TOKEN\" | sha256sum)", what, path, n)
		}
		if len(hashes) >= MaxTokens {
			return nil, fmt.Errorf("%s %s: more than %d tokens", what, path, MaxTokens)
		}
		name = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), "*"))
		if name == "" || name == "-" {
			name = "token " + h[:8]
		}
		hashes[[32]byte(b)] = name
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	return hashes, nil
}

// Lookup returns the name of token when its hash is in the file.
func (f *File) Lookup(token string, now time.Time) (string, bool) {
	if f == nil || token == "" || len(token) > MaxTokenLen {
		return "", false
	}
	f.mu.Lock()
	if err := f.reload(now, false); err != nil && err.Error() != f.logged {
		f.logged = err.Error()
		f.log.Warn(f.what+" not reloaded; the last good tokens stay in force", "err", err)
	} else if err == nil {
		f.logged = ""
	}
	hashes := f.hashes
	f.mu.Unlock()
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
