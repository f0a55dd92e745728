package imagetar

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"

	"github.com/loupe-dev/loupe/internal/testenv"
)

type ent struct {
	name, link string
	typ        byte
	body       string
	mode       int64
}

func layerOf(t *testing.T, es []ent) v1.Layer {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Size: int64(len(e.body))}
		if h.Mode == 0 {
			h.Mode = 0o755
		}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if e.typ == tar.TypeChar {
			h.Devmajor, h.Devminor = 1, 5
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func image(t *testing.T, user string, layers ...v1.Layer) v1.Image {
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.Config.User = user
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestUnpackHostileDockerArchive(t *testing.T) {
	testenv.RequireRoot(t)
	host := t.TempDir() // must stay untouched
	l1 := layerOf(t, []ent{
		{name: "bin/", typ: tar.TypeDir},
		{name: "bin/busybox", typ: tar.TypeReg, body: "busybox"},
		{name: "bin/sh", typ: tar.TypeSymlink, link: "/bin/busybox"},
		{name: "bin/hl", typ: tar.TypeLink, link: "bin/busybox"},
		{name: "../evil", typ: tar.TypeReg, body: "x"},
		{name: "/abs-evil", typ: tar.TypeReg, body: "x"},
		{name: "a/../../evil2", typ: tar.TypeReg, body: "x"},
		{name: "escape", typ: tar.TypeSymlink, link: host},
		{name: "escape/pwned", typ: tar.TypeReg, body: "x"},
		{name: "up", typ: tar.TypeSymlink, link: "../../../../../../.." + host},
		{name: "up/pwned2", typ: tar.TypeReg, body: "x"},
		{name: "hl-out", typ: tar.TypeLink, link: "../../../etc/passwd"},
		{name: "dev/zero", typ: tar.TypeChar},
		{name: "opt/old/file", typ: tar.TypeReg, body: "old"},
		{name: "usr/bin/passwd", typ: tar.TypeReg, body: "suid", mode: 0o4755},
	})
	l2 := layerOf(t, []ent{
		{name: "bin/.wh.busybox", typ: tar.TypeReg},
		{name: "opt/new", typ: tar.TypeReg, body: "new"},
		{name: "opt/.wh..wh..opq", typ: tar.TypeReg},
	})
	img := image(t, "root", l1, l2)
	file := filepath.Join(t.TempDir(), "img.tar")
	ref, _ := name.NewTag("example.com/hostile:1")
	if err := tarball.WriteToFile(file, ref, img); err != nil {
		t.Fatal(err)
	}
	if !IsImageTar(file) {
		t.Fatal("docker-archive not recognised")
	}
	dest := t.TempDir()
	im, err := Unpack(file, dest, t.TempDir(), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if im.Ref != "example.com/hostile:1" || im.User != "root" || len(im.Layers) != 2 || im.Digest == "" {
		t.Fatalf("image %+v", im)
	}
	if entries, _ := os.ReadDir(host); len(entries) != 0 {
		t.Fatalf("wrote outside the root: %v", entries)
	}
	for _, p := range []string{"../evil", "evil", "abs-evil", "evil2", "dev/zero", "bin/busybox", "opt/old"} {
		if _, err := os.Lstat(filepath.Join(dest, p)); err == nil {
			t.Fatalf("%s should not exist", p)
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dest), "evil")); err == nil {
		t.Fatal("../evil escaped")
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "bin/hl")); string(b) != "busybox" {
		t.Fatal("in-root hard link missing")
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "opt/new")); string(b) != "new" {
		t.Fatal("opaque dir lost the new layer's own file")
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dest, "usr/bin/passwd"), &st); err != nil || st.Mode&unix.S_ISUID == 0 {
		t.Fatalf("set-uid bit lost: %o %v", st.Mode, err)
	}
	if im.Rejected < 6 {
		t.Fatalf("rejected %d entries: %v", im.Rejected, im.Warnings)
	}
}

func TestUnpackOCILayoutTarball(t *testing.T) {
	img := image(t, "65532", layerOf(t, []ent{{name: "app/server", typ: tar.TypeReg, body: "srv"}}))
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	// Tar the layout up as `skopeo copy oci-archive:` / `docker save` (OCI) would.
	file := filepath.Join(t.TempDir(), "oci.tar")
	f, _ := os.Create(file)
	tw := tar.NewWriter(f)
	filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		b, _ := os.ReadFile(path)
		tw.WriteHeader(&tar.Header{Name: rel, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg})
		tw.Write(b)
		return nil
	})
	tw.Close()
	f.Close()
	dest := t.TempDir()
	im, err := Unpack(file, dest, t.TempDir(), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if im.User != "65532" || len(im.Layers) != 1 {
		t.Fatalf("image %+v", im)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "app/server")); string(b) != "srv" {
		t.Fatal("layer not applied")
	}
}

// FuzzApplyLayer feeds arbitrary layer tar streams to the applier: it must
// not panic and must never create anything outside the root.
func FuzzApplyLayer(f *testing.F) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "a/b", Typeflag: tar.TypeReg, Mode: 0o755, Size: 1},
		{Name: "../x", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1},
		{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/"},
		{Name: "l/y", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1},
		{Name: "h", Typeflag: tar.TypeLink, Linkname: "a/b"},
		{Name: "a/.wh.b", Typeflag: tar.TypeReg},
		{Name: "a/.wh..wh..opq", Typeflag: tar.TypeReg},
	} {
		tw.WriteHeader(h)
		if h.Size > 0 {
			tw.Write([]byte("z"))
		}
	}
	tw.Close()
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		outer := t.TempDir()
		dest := filepath.Join(outer, "root")
		os.Mkdir(dest, 0o755)
		root, err := unix.Open(dest, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(root)
		a := &applier{root: root, img: &Image{}, lim: Limits{MaxBytes: 1 << 20, MaxEntries: 1000}}
		a.apply(bytes.NewReader(data))
		entries, _ := os.ReadDir(outer)
		if len(entries) != 1 || entries[0].Name() != "root" {
			t.Fatalf("created outside the root: %v", entries)
		}
	})
}
