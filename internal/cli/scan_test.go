package cli

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"google.golang.org/protobuf/encoding/protojson"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/internal/testenv"
)

// busyboxImage writes a docker-archive with Debian's real busybox-static,
// a dpkg status excerpt from this host and an applet link, user unset (root).
func busyboxImage(t *testing.T) string {
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		testenv.Unavailable(t, "busybox-static not installed")
	}
	st, _ := os.ReadFile("/var/lib/dpkg/status")
	stanzas := strings.SplitN(string(st), "\n\n", 6)
	status := strings.Join(stanzas[:min(5, len(stanzas))], "\n\n") + "\n"
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, body []byte) {
		h.Size = int64(len(body))
		if h.Mode == 0 {
			h.Mode = 0o755
		}
		tw.WriteHeader(h)
		tw.Write(body)
	}
	add(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg}, bb)
	add(&tar.Header{Name: "bin/sh", Typeflag: tar.TypeSymlink, Linkname: "busybox"}, nil)
	add(&tar.Header{Name: "var/lib/dpkg/status", Typeflag: tar.TypeReg, Mode: 0o644}, []byte(status))
	add(&tar.Header{Name: "etc/os-release", Typeflag: tar.TypeReg, Mode: 0o644}, []byte("ID=debian\nVERSION_ID=\"12\"\n"))
	add(&tar.Header{Name: "../escape", Typeflag: tar.TypeReg}, []byte("x"))
	tw.Close()
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.Config.User = ""
	var img2 v1.Image
	if img2, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "bb.tar")
	ref, _ := name.NewTag("example.com/busybox:test")
	if err := tarball.WriteToFile(file, ref, img2); err != nil {
		t.Fatal(err)
	}
	return file
}

func TestScanImageTarballJSONLSBOMAndFailOn(t *testing.T) {
	testenv.RequireRoot(t)
	file := busyboxImage(t)
	sbom := filepath.Join(t.TempDir(), "sbom.json")
	out, stderr, err := run(t, "scan", file, "-o", "jsonl", "--sbom", sbom, "--fail-on", "medium", "-q")
	if ExitCode(err) != exitFindings {
		t.Fatalf("want exit %d, got %v (stderr %s)", exitFindings, err, stderr)
	}
	kinds := map[loupev1.Kind]int{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var f loupev1.Finding
		if err := protojson.Unmarshal(sc.Bytes(), &f); err != nil {
			t.Fatalf("bad jsonl line %q: %v", sc.Text(), err)
		}
		kinds[f.GetKind()]++
		if f.GetContainer().GetImage() != "example.com/busybox:test" || f.GetId() == "" {
			t.Fatalf("finding without image/id: %v", &f)
		}
	}
	if kinds[loupev1.Kind_KIND_SHELL_PRESENT] != 2 || kinds[loupev1.Kind_KIND_RUNS_AS_ROOT] != 1 || kinds[loupev1.Kind_KIND_IMAGE_PROFILE] != 1 || kinds[loupev1.Kind_KIND_PACKAGE] < 3 {
		t.Fatalf("kinds %v", kinds)
	}
	if !strings.Contains(stderr, "scanned example.com/busybox:test:") || !strings.Contains(stderr, `rejected entry "../escape"`) {
		t.Fatalf("stderr: %s", stderr)
	}
	f, err := os.Open(sbom)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var bom cdx.BOM
	if err := cdx.NewBOMDecoder(f, cdx.BOMFileFormatJSON).Decode(&bom); err != nil {
		t.Fatalf("SBOM is not CycloneDX JSON: %v", err)
	}
	debs := 0
	for _, c := range *bom.Components {
		if strings.HasPrefix(c.PackageURL, "pkg:deb/debian/") {
			debs++
		}
	}
	if debs < 3 || bom.Metadata.Component.Name != "example.com/busybox:test" {
		t.Fatalf("SBOM: %d deb components, metadata %+v", debs, bom.Metadata.Component)
	}
	// Below the threshold: exit 0.
	if _, stderr, err := run(t, "scan", file, "-o", "json", "--fail-on", "critical", "-q"); err != nil {
		t.Fatalf("fail-on critical: %v %s", err, stderr)
	}
}

func TestScanDirectoryTable(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "app"), 0o755)
	os.WriteFile(filepath.Join(dir, "app/run"), []byte("#!/bin/sh\n"), 0o755)
	out, stderr, err := run(t, "scan", dir, "-q")
	if err != nil {
		t.Fatal(err, stderr)
	}
	if !strings.Contains(out, "IMAGE_PROFILE") || !strings.Contains(out, "distroless-static") || !strings.Contains(stderr, "files") {
		t.Fatalf("out %s stderr %s", out, stderr)
	}
	index := filepath.Join(t.TempDir(), "index.jsonl")
	if _, stderr, err := run(t, "scan", dir, "-q", "-o", "json", "--index", index); err != nil {
		t.Fatal(err, stderr)
	}
	if b, _ := os.ReadFile(index); !strings.Contains(string(b), `"path":"/app/run","layer":"rootfs"`) ||
		!strings.Contains(string(b), fmt.Sprintf(`"sha256":"%x"`, sha256.Sum256([]byte("#!/bin/sh\n")))) {
		t.Fatalf("index: %s", b)
	}
	if _, _, err := run(t, "scan", filepath.Join(dir, "app/run")); err == nil || !strings.Contains(err.Error(), "neither a directory nor an image tarball") {
		t.Fatalf("plain file: %v", err)
	}
	if _, _, err := run(t, "scan", dir, "--fail-on", "bogus"); err == nil {
		t.Fatal("bad --fail-on accepted")
	}
}
