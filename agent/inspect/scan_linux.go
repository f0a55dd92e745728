package inspect

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/loupe-dev/loupe/agent/inspect/safefs"
)

// rootFS implements layerFS on a live directory.
type rootFS struct{ r *safefs.Root }

func (f rootFS) Lookup(p string) (byte, bool) {
	st, err := f.r.Lstat(p)
	if err != nil {
		return 0, errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR)
	}
	switch {
	case safefs.IsWhiteout(&st):
		return TypeWhiteout, true
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return TypeDir, true
	case st.Mode&unix.S_IFMT == unix.S_IFREG:
		return TypeFile, true
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return TypeSymlink, true
	}
	return TypeOther, true
}

// layer scans one image layer, through the cache when it has an id.
func (s *Scanner) layer(ctx context.Context, l Layer, label string) (*LayerResult, bool, error) {
	if l.ID == "" {
		r, err := scanLayer(ctx, l.Dir, "", label, modeOverlay, s.opts)
		return r, false, err
	}
	if s.cache != nil {
		if r, ok, err := s.cache.Get(l.ID); err != nil {
			s.log.Warn("layer cache read failed; rescanning", "layer", l.ID, "err", err)
		} else if ok {
			return r, true, nil
		}
	}
	s.mu.Lock()
	if f, ok := s.inflight[l.ID]; ok {
		s.mu.Unlock()
		select {
		case <-f.done:
			return f.res, true, f.err
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
	f := &flight{done: make(chan struct{})}
	s.inflight[l.ID] = f
	s.mu.Unlock()
	f.res, f.err = scanLayer(ctx, l.Dir, l.ID, label, modeOverlay, s.opts)
	if f.err == nil && s.cache != nil && f.res.Truncated == "" {
		if err := s.cache.Put(f.res); err != nil {
			s.log.Warn("layer cache write failed", "layer", l.ID, "err", err)
		}
	}
	s.mu.Lock()
	delete(s.inflight, l.ID)
	s.mu.Unlock()
	close(f.done)
	return f.res, false, f.err
}

// Scan inspects a target and returns its findings, inventory and profile.
func (s *Scanner) Scan(ctx context.Context, t Target) (*Report, error) {
	start := time.Now()
	rep := &Report{Name: t.Name}
	var views []*layerView
	var closers []*safefs.Root
	defer func() {
		for _, r := range closers {
			r.Close()
		}
	}()
	open := func(dir string) (*safefs.Root, error) {
		r, err := safefs.OpenRoot(dir)
		if err == nil {
			closers = append(closers, r)
		}
		return r, err
	}
	switch {
	case len(t.Layers) > 0:
		for i, l := range t.Layers {
			name := l.ID
			if name == "" {
				name = fmt.Sprintf("layer%d", i)
			}
			lr, cached, err := s.layer(ctx, l, name)
			if err != nil {
				return nil, fmt.Errorf("scan layer %d (%s): %w", i, l.Dir, err)
			}
			root, err := open(l.Dir)
			if err != nil {
				return nil, err
			}
			rep.addLayer(name, lr, cached)
			views = append(views, newView(name, lr, rootFS{root}, false))
		}
	case t.Root != "":
		name := t.RootLayer
		if name == "" {
			name = "rootfs"
		}
		lr, err := scanLayer(ctx, t.Root, "", name, modeRoot, s.opts)
		if err != nil {
			return nil, fmt.Errorf("scan %s: %w", t.Root, err)
		}
		root, err := open(t.Root)
		if err != nil {
			return nil, err
		}
		rep.addLayer(name, lr, false)
		views = append(views, newView(name, lr, rootFS{root}, false))
	default:
		return nil, errors.New("scan: target has neither layers nor a root directory")
	}
	d := &detector{t: t, opts: s.opts, now: time.Now(), seenMulti: map[string]bool{}}
	lower := views
	if t.Upper != "" {
		ur, err := scanLayer(ctx, t.Upper, "", UpperLayer, modeUpper, s.opts)
		if err != nil {
			return nil, fmt.Errorf("scan upper dir %s: %w", t.Upper, err)
		}
		root, err := open(t.Upper)
		if err != nil {
			return nil, err
		}
		rep.addLayer(UpperLayer, ur, false)
		up := newView(UpperLayer, ur, rootFS{root}, true)
		views = append(views, up)
		rep.Drift = d.drift(lower, up)
	}
	m := merge(views)
	rep.Profile = d.detect(m)
	d.runsAsRoot()
	d.packageFindings()
	rep.Findings, rep.Packages = d.findings, d.pkgs
	rep.Duration = time.Since(start)
	return rep, nil
}
