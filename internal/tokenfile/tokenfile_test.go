package tokenfile

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func line(tok, name string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:]) + "  " + name + "\n"
}

// TestRevokeTheLastToken: removing the last token line revokes it (the file
// was read whole and holds none), while a malformed edit keeps the last
// good tokens; a file with no token is refused at start.
func TestRevokeTheLastToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	write := func(s string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	base := time.Now().Add(-time.Hour)
	write("# only comments\n", base)
	if _, err := Open(path, "test token file", nil); err == nil {
		t.Fatal("a file without tokens was accepted at start")
	}
	write(line("tok-a", "alice")+line("tok-b", "bob"), base)
	f, err := Open(path, "test token file", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if name, ok := f.Lookup("tok-a", now); !ok || name != "alice" {
		t.Fatalf("tok-a: %q %v", name, ok)
	}
	now = now.Add(3 * time.Second)
	write("not a token line\n", base.Add(time.Minute)) // malformed: the last good tokens stay
	if _, ok := f.Lookup("tok-a", now); !ok {
		t.Error("a malformed edit locked tok-a out")
	}
	now = now.Add(3 * time.Second)
	write(line("tok-b", "bob"), base.Add(2*time.Minute)) // alice revoked
	if _, ok := f.Lookup("tok-a", now); ok {
		t.Error("revoked tok-a still accepted")
	}
	if _, ok := f.Lookup("tok-b", now); !ok {
		t.Error("tok-b refused")
	}
	now = now.Add(3 * time.Second)
	write("# every token revoked\n", base.Add(3*time.Minute))
	if _, ok := f.Lookup("tok-b", now); ok {
		t.Error("the last token, removed from the file, is still accepted")
	}
}
