// Package imagetar unpacks a docker-archive or OCI image tarball into a
// directory so it can be scanned offline. Image tarballs are hostile: every
// entry is created through a directory fd resolved with
// openat2(RESOLVE_IN_ROOT), entries with ".." or absolute names are
// rejected, hard links must resolve inside the root, device nodes are never
// created, and whiteouts (.wh.NAME, .wh..wh..opq) are applied as deletions.
package imagetar

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"
)

// Limits bound what one image may unpack to.
type Limits struct {
	MaxBytes   int64 // total bytes of file content (default 64 GiB)
	MaxEntries int64 // total tar entries (default 5,000,000)
}

// Image describes an unpacked image.
type Image struct {
	// Ref is the first repo tag, if the archive names one.
	Ref string
	// Digest is the image manifest digest.
	Digest string
	// User from the image config ("" = root). UserKnown is always true
	// when a config was read.
	User      string
	UserKnown bool
	// Layers are the layer diff ids, bottom first.
	Layers []string
	// Warnings: rejected entries and other oddities (bounded).
	Warnings []string
	// Rejected counts skipped hostile entries.
	Rejected int
}

func (im *Image) warn(format string, args ...any) {
	im.Rejected++
	if len(im.Warnings) < 50 {
		im.Warnings = append(im.Warnings, fmt.Sprintf(format, args...))
	}
}

// IsImageTar reports whether file looks like an image tarball
// (manifest.json or oci-layout at its top level).
func IsImageTar(file string) bool {
	f, err := os.Open(file)
	if err != nil {
		return false
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for i := 0; i < 100000; i++ {
		h, err := tr.Next()
		if err != nil {
			return false
		}
		switch path.Clean(h.Name) {
		case "manifest.json", "oci-layout":
			return true
		}
	}
	return false
}

// Unpack reads the image tarball file and applies its layers, in order, into
// dest (an empty directory). tmp is a scratch directory for OCI layouts.
func Unpack(file, dest, tmp string, lim Limits) (*Image, error) {
	if lim.MaxBytes <= 0 {
		lim.MaxBytes = 64 << 30
	}
	if lim.MaxEntries <= 0 {
		lim.MaxEntries = 5_000_000
	}
	img, ref, err := open(file, tmp)
	if err != nil {
		return nil, err
	}
	out := &Image{Ref: ref}
	if d, err := img.Digest(); err == nil {
		out.Digest = d.String()
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read image config: %w", err)
	}
	out.User, out.UserKnown = cfg.Config.User, true
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("list image layers: %w", err)
	}
	root, err := unix.Open(dest, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dest, err)
	}
	defer unix.Close(root)
	a := &applier{root: root, img: out, lim: lim}
	for i, l := range layers {
		if id, err := l.DiffID(); err == nil {
			out.Layers = append(out.Layers, id.String())
		}
		rc, err := l.Uncompressed()
		if err != nil {
			return nil, fmt.Errorf("open layer %d: %w", i, err)
		}
		err = a.apply(rc)
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("apply layer %d: %w", i, err)
		}
	}
	return out, nil
}

// open reads a docker-archive (manifest.json) or an OCI layout tarball.
func open(file, tmp string) (v1.Image, string, error) {
	var hasManifest, hasLayout bool
	f, err := os.Open(file)
	if err != nil {
		return nil, "", fmt.Errorf("open image tarball: %w", err)
	}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		switch path.Clean(h.Name) {
		case "manifest.json":
			hasManifest = true
		case "oci-layout":
			hasLayout = true
		}
	}
	f.Close()
	switch {
	case hasManifest:
		m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(file) })
		if err != nil {
			return nil, "", fmt.Errorf("read docker-archive manifest: %w", err)
		}
		if len(m) == 0 {
			return nil, "", errors.New("docker-archive manifest lists no image")
		}
		ref := ""
		if len(m[0].RepoTags) > 0 {
			ref = m[0].RepoTags[0]
		}
		img, err := tarball.Image(func() (io.ReadCloser, error) { return os.Open(file) }, nil)
		if err != nil && ref != "" {
			return nil, "", fmt.Errorf("read docker-archive: %w", err)
		}
		if err != nil {
			return nil, "", fmt.Errorf("read docker-archive: %w", err)
		}
		return img, ref, nil
	case hasLayout:
		dir := filepath.Join(tmp, "oci-layout")
		if err := extractLayout(file, dir); err != nil {
			return nil, "", err
		}
		idx, err := layout.ImageIndexFromPath(dir)
		if err != nil {
			return nil, "", fmt.Errorf("read OCI layout: %w", err)
		}
		im, err := idx.IndexManifest()
		if err != nil || len(im.Manifests) == 0 {
			return nil, "", fmt.Errorf("read OCI index: no manifests (%v)", err)
		}
		desc := im.Manifests[0]
		ref := desc.Annotations["io.containerd.image.name"]
		if ref == "" {
			ref = desc.Annotations["org.opencontainers.image.ref.name"]
		}
		img, err := idx.Image(desc.Digest)
		if err != nil {
			// A nested index (multi-platform): take its first image.
			sub, err2 := idx.ImageIndex(desc.Digest)
			if err2 != nil {
				return nil, "", fmt.Errorf("read OCI image: %w", err)
			}
			sim, err2 := sub.IndexManifest()
			if err2 != nil || len(sim.Manifests) == 0 {
				return nil, "", fmt.Errorf("read OCI image: %w", err)
			}
			if img, err = sub.Image(sim.Manifests[0].Digest); err != nil {
				return nil, "", fmt.Errorf("read OCI image: %w", err)
			}
		}
		return img, ref, nil
	}
	return nil, "", errors.New("not an image tarball: no manifest.json (docker-archive) or oci-layout (OCI) at its top level")
}

// extractLayout writes the regular files of an OCI layout tarball (blobs,
// index.json, oci-layout) into dir; nothing else is created.
func extractLayout(file, dir string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read OCI tarball: %w", err)
		}
		name := path.Clean(h.Name)
		if h.Typeflag != tar.TypeReg || strings.HasPrefix(h.Name, "/") || hasDotDot(name) {
			continue
		}
		if !(name == "index.json" || name == "oci-layout" || strings.HasPrefix(name, "blobs/")) {
			continue
		}
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		out, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		_, err = io.Copy(out, tr)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
}

func hasDotDot(p string) bool {
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return true
		}
	}
	return false
}
