// Package ociimage builds Loupe's container images without Docker: one
// static binary on an empty base (plus /etc/passwd, /etc/group and /tmp, as
// in gcr.io/distroless/static), with version labels, written as an OCI
// image-layout tarball that `ctr image import` and containerd's client
// Import accept. `make oci` runs it through ./deploy/oci.
package ociimage

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Spec describes one image.
type Spec struct {
	// Ref is the image reference the tarball is named with (REGISTRY/NAME:TAG).
	Ref string
	// Binary is the host path of the static binary, installed as /<base name>
	// and used as the entrypoint.
	Binary string
	// User is the uid:gid the image runs as ("0:0" for the agent, "65532:65532" otherwise).
	User string
	// Version and Commit go into the OCI labels (org.opencontainers.image.version, .revision).
	Version, Commit string
	// Created is the image's creation time and every file's mtime (reproducible builds:
	// pass the commit time or SOURCE_DATE_EPOCH; zero means the Unix epoch).
	Created time.Time
	// Platform defaults to linux/amd64.
	OS, Arch string
}

// Labels are the OCI annotation keys set on every image.
const (
	LabelVersion  = "org.opencontainers.image.version"
	LabelRevision = "org.opencontainers.image.revision"
	LabelTitle    = "org.opencontainers.image.title"
	LabelSource   = "org.opencontainers.image.source"
)

// ErrNotStatic is returned for a binary that needs a dynamic loader.
var ErrNotStatic = errors.New("binary is not statically linked")

// Build makes the image of s.
func Build(s Spec) (v1.Image, error) {
	if s.Ref == "" || s.Binary == "" {
		return nil, fmt.Errorf("build image: Ref and Binary are required")
	}
	if _, err := name.ParseReference(s.Ref, name.StrictValidation); err != nil {
		return nil, fmt.Errorf("build image %s: %w", s.Ref, err)
	}
	if err := checkStatic(s.Binary); err != nil {
		return nil, fmt.Errorf("build image %s: %s: %w", s.Ref, s.Binary, err)
	}
	if s.User == "" {
		s.User = "65532:65532"
	}
	if s.OS == "" {
		s.OS = "linux"
	}
	if s.Arch == "" {
		s.Arch = "amd64"
	}
	if s.Created.IsZero() {
		s.Created = time.Unix(0, 0)
	}
	s.Created = s.Created.UTC()
	bin := "/" + path.Base(s.Binary)
	layerTar, err := rootfs(s, bin)
	if err != nil {
		return nil, fmt.Errorf("build image %s: %w", s.Ref, err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("build image %s: layer: %w", s.Ref, err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
		Created: v1.Time{Time: s.Created}, CreatedBy: "loupe ociimage: " + bin, Comment: "static binary",
	}})
	if err != nil {
		return nil, fmt.Errorf("build image %s: %w", s.Ref, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("build image %s: %w", s.Ref, err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = s.OS, s.Arch, v1.Time{Time: s.Created}
	labels := map[string]string{
		LabelVersion: s.Version, LabelRevision: s.Commit, LabelTitle: path.Base(s.Binary),
		LabelSource: "https://github.com/loupe-dev/loupe",
	}
	cf.Config = v1.Config{
		Entrypoint: []string{bin},
		User:       s.User,
		WorkingDir: "/",
		Env:        []string{"PATH=/", "SSL_CERT_DIR=/etc/ssl/certs"},
		Labels:     labels,
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("build image %s: %w", s.Ref, err)
	}
	return mutate.Annotations(img, labels).(v1.Image), nil
}

// rootfs is the image's single layer: the binary, passwd/group with root
// and nonroot (65532) like distroless, /tmp (1777) and /var/lib/loupe.
func rootfs(s Spec, bin string) ([]byte, error) {
	f, err := os.Open(s.Binary)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", s.Binary)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := func(h *tar.Header) error {
		h.ModTime, h.Format = s.Created, tar.FormatPAX
		h.Uname, h.Gname = "", ""
		return tw.WriteHeader(h)
	}
	dirs := []struct {
		name     string
		mode     int64
		uid, gid int
	}{{"etc/", 0o755, 0, 0}, {"tmp/", 0o1777, 0, 0}, {"var/", 0o755, 0, 0}, {"var/lib/", 0o755, 0, 0}, {"var/lib/loupe/", 0o750, 65532, 65532},
		{"home/", 0o755, 0, 0}, {"home/nonroot/", 0o700, 65532, 65532}, {"root/", 0o700, 0, 0}}
	for _, d := range dirs {
		if err := hdr(&tar.Header{Name: d.name, Typeflag: tar.TypeDir, Mode: d.mode, Uid: d.uid, Gid: d.gid}); err != nil {
			return nil, err
		}
	}
	files := []struct{ name, data string }{
		{"etc/passwd", "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"},
		{"etc/group", "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"},
	}
	for _, fl := range files {
		if err := hdr(&tar.Header{Name: fl.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(fl.data))}); err != nil {
			return nil, err
		}
		if _, err := tw.Write([]byte(fl.data)); err != nil {
			return nil, err
		}
	}
	if err := hdr(&tar.Header{Name: strings.TrimPrefix(bin, "/"), Typeflag: tar.TypeReg, Mode: 0o755, Size: st.Size()}); err != nil {
		return nil, err
	}
	if n, err := io.Copy(tw, f); err != nil || n != st.Size() {
		return nil, fmt.Errorf("copy %s: %d of %d bytes: %v", s.Binary, n, st.Size(), err)
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// checkStatic refuses binaries with a program interpreter (dynamic loader):
// an empty base has no libc to run them.
func checkStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("read ELF: %w", err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return ErrNotStatic
		}
	}
	return nil
}
