package testenv

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// FreeAddr returns a loopback address with a port that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// HTTPGet returns the body of url (any status).
func HTTPGet(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// WaitHTTP200 polls url until it answers 200 or d passes; alive, if not nil,
// is called each round and ends the wait with its error (e.g. the daemon exited).
func WaitHTTP200(t testing.TB, url string, d time.Duration, alive func() error) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if alive != nil {
			if err := alive(); err != nil {
				t.Fatalf("waiting for %s: %v", url, err)
			}
		}
		resp, err := http.Get(url)
		if err != nil {
			last = err.Error()
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return
		}
		last = string(b)
	}
	t.Fatalf("%s not ready after %s: %s", url, d, last)
}
