package compliance

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

//go:embed profiles/*.yaml
var shippedFS embed.FS

// Shipped returns the shipped profile of that name (e.g. "distroless-baseline").
func Shipped(name string) (*Profile, error) {
	data, err := shippedFS.ReadFile("profiles/" + name + ".yaml")
	if err != nil {
		return nil, fmt.Errorf("%w: %q (shipped: %s)", ErrNotFound, name, strings.Join(ShippedNames(), ", "))
	}
	return Parse("embedded:"+name+".yaml", data)
}

// ShippedNames lists the shipped profiles.
func ShippedNames() []string {
	ents, _ := fs.ReadDir(shippedFS, "profiles")
	var out []string
	for _, e := range ents {
		out = append(out, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	return out
}

// Load returns the profile in FILE, or the shipped profile NAME when no
// such file exists.
func Load(nameOrFile string) (*Profile, error) {
	if st, err := os.Stat(nameOrFile); err == nil && !st.IsDir() {
		return LoadFile(nameOrFile)
	}
	if strings.ContainsAny(nameOrFile, "/.") {
		return nil, fmt.Errorf("load profile %s: no such file", nameOrFile)
	}
	return Shipped(nameOrFile)
}

// LoadFile parses a profile file.
func LoadFile(file string) (*Profile, error) {
	st, err := os.Stat(file)
	if err != nil {
		return nil, fmt.Errorf("load profile: %w", err)
	}
	if st.Size() > MaxProfileBytes {
		return nil, fmt.Errorf("load profile %s: larger than %d bytes", file, MaxProfileBytes)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("load profile: %w", err)
	}
	return Parse(file, data)
}

// LoadDir parses every *.yaml / *.yml profile in dir (not recursive; names
// starting with "." are skipped, as Kubernetes ConfigMap volumes keep their
// internals there). It returns the good profiles and the errors of the bad.
func LoadDir(dir string) ([]*Profile, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read profiles dir: %w", err)
	}
	var out []*Profile
	var errs []error
	names := map[string]string{}
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".") || !(strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) {
			continue
		}
		p, err := LoadFile(filepath.Join(dir, n))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if prev, dup := names[p.Name]; dup {
			errs = append(errs, fmt.Errorf("%s: profile %q is also defined in %s; ignored", filepath.Join(dir, n), p.Name, prev))
			continue
		}
		names[p.Name] = filepath.Join(dir, n)
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, errors.Join(errs...)
}

// Set is the active set of profiles, reloaded from a directory when it
// changes (mtime/size polling; works with ConfigMap volumes' symlink swaps).
type Set struct {
	dir string
	log *slog.Logger

	mu       sync.RWMutex
	profiles []*Profile
	sig      string
}

// NewSet loads the profiles of dir, or the shipped profiles when dir is "".
func NewSet(dir string, log *slog.Logger) (*Set, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Set{dir: dir, log: log}
	if dir == "" {
		for _, n := range ShippedNames() {
			p, err := Shipped(n)
			if err != nil {
				return nil, err
			}
			s.profiles = append(s.profiles, p)
		}
		return s, nil
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("--profiles %s: not a directory", dir)
	}
	s.reload()
	return s, nil
}

// Profiles returns the active profiles.
func (s *Set) Profiles() []*Profile {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.profiles
}

func (s *Set) signature() string {
	var b strings.Builder
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return "error: " + err.Error()
	}
	for _, e := range ents {
		st, err := os.Stat(filepath.Join(s.dir, e.Name())) // follows ConfigMap symlinks
		if err != nil {
			fmt.Fprintf(&b, "%s:?;", e.Name())
			continue
		}
		fmt.Fprintf(&b, "%s:%d:%d;", e.Name(), st.ModTime().UnixNano(), st.Size())
	}
	return b.String()
}

// reload re-reads the directory if it changed; it reports whether it did.
// A profile with errors is logged and left out; the others stay active.
func (s *Set) reload() bool {
	sig := s.signature()
	s.mu.RLock()
	same := sig == s.sig
	s.mu.RUnlock()
	if same {
		return false
	}
	ps, err := LoadDir(s.dir)
	if err != nil {
		s.log.Error("compliance profiles with errors were not loaded", "dir", s.dir, "err", err)
	}
	var names []string
	for _, p := range ps {
		names = append(names, p.Name+"@"+p.Version)
	}
	s.log.Info("compliance profiles loaded", "dir", s.dir, "profiles", names)
	s.mu.Lock()
	s.profiles, s.sig = ps, sig
	s.mu.Unlock()
	return true
}

// Watch polls the directory every interval and calls onChange after a
// reload, until ctx ends. It does nothing for the shipped set.
func (s *Set) Watch(ctx context.Context, interval time.Duration, onChange func()) error {
	if s.dir == "" {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if s.reload() && onChange != nil {
				onChange()
			}
		}
	}
}
