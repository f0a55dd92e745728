package ociimage

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/loupe-dev/loupe/internal/testenv"
)

func staticBinary(t *testing.T) string {
	t.Helper()
	testenv.RequireCommand(t, "go")
	p := filepath.Join(t.TempDir(), "loupe-collector")
	cmd := exec.Command("go", "build", "-o", p, "../../cmd/loupe-collector")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return p
}

func TestBuildAndWrite(t *testing.T) {
	bin := staticBinary(t)
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	img, err := Build(Spec{Ref: "example.test/loupe-collector:v1.2.3", Binary: bin, User: "65532:65532", Version: "v1.2.3", Commit: "abc", Created: created})
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.Entrypoint[0] != "/loupe-collector" || cf.Config.User != "65532:65532" || cf.OS != "linux" || !cf.Created.Time.Equal(created) {
		t.Errorf("config %+v", cf.Config)
	}
	if cf.Config.Labels[LabelVersion] != "v1.2.3" || cf.Config.Labels[LabelRevision] != "abc" {
		t.Errorf("labels %v", cf.Config.Labels)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %d %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = h
	}
	rc.Close()
	st, _ := os.Stat(bin)
	if h := files["loupe-collector"]; h == nil || h.Size != st.Size() || h.Mode != 0o755 {
		t.Errorf("binary entry %+v", h)
	}
	for _, p := range []string{"etc/passwd", "etc/group", "tmp/"} {
		if files[p] == nil {
			t.Errorf("%s missing", p)
		}
	}
	if h := files["tmp/"]; h != nil && h.Mode != 0o1777 {
		t.Errorf("/tmp mode %o", h.Mode)
	}
	for _, h := range files {
		if !h.ModTime.Equal(created) {
			t.Errorf("%s mtime %v, want %v", h.Name, h.ModTime, created)
		}
	}
	// Same input, same image: reproducible.
	img2, err := Build(Spec{Ref: "example.test/loupe-collector:v1.2.3", Binary: bin, User: "65532:65532", Version: "v1.2.3", Commit: "abc", Created: created})
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, _ := img2.Digest()
	if d1 != d2 {
		t.Errorf("not reproducible: %s != %s", d1, d2)
	}

	dst := filepath.Join(t.TempDir(), "img.tar")
	if err := WriteOCITar(dst, "example.test/loupe-collector:v1.2.3", img); err != nil {
		t.Fatal(err)
	}
	// Unpack and read it back as an OCI layout.
	dir := t.TempDir()
	cmd := exec.Command("tar", "-xf", dst, "-C", dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Digest != d1 || im.Manifests[0].Annotations["io.containerd.image.name"] != "example.test/loupe-collector:v1.2.3" {
		b, _ := json.Marshal(im)
		t.Fatalf("index %s", b)
	}
}

func TestBuildRejects(t *testing.T) {
	if _, err := Build(Spec{Ref: "example.test/y:1", Binary: "/nonexistent"}); err == nil {
		t.Error("missing binary accepted")
	}
	if _, err := Build(Spec{Ref: "Not A Ref", Binary: "/bin/true"}); err == nil {
		t.Error("bad reference accepted")
	}
	if _, err := Build(Spec{Ref: "example.test/y:1", Binary: "/etc/passwd"}); err == nil {
		t.Error("non-ELF accepted")
	}
	// Debian's /bin/true is dynamically linked.
	if _, err := Build(Spec{Ref: "example.test/y:1", Binary: "/bin/true"}); !errors.Is(err, ErrNotStatic) {
		t.Errorf("dynamic binary: %v, want ErrNotStatic", err)
	}
}
