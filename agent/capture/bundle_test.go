package capture

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBundleRoundTrip writes a bundle with hostile names and checks that
// Verify accepts it, that sha256sum -c accepts its SHA256SUMS, and that an
// entry added behind the manifest's back is caught.
func TestBundleRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	names := []string{"upper/tmp/new\nline", "upper/tmp/back\\slash", "upper/tmp/ünï cödé", "files.json"}
	for _, n := range names {
		if err := w.Add(n, KindUpper, []byte("content of "+n)); err != nil {
			t.Fatal(err)
		}
	}
	for _, bad := range []string{"../x", "/abs", "a/../b", "a//b", ManifestName, "x\x00y"} {
		if err := w.Add(bad, KindUpper, nil); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
	if err := w.Add(names[0], KindUpper, nil); err == nil {
		t.Error("duplicate name accepted")
	}
	m := &Manifest{CaptureID: "c1", Node: "n"}
	if err := w.Finish(m); err != nil {
		t.Fatal(err)
	}
	res, err := Verify(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifest.CaptureID != "c1" || len(res.Manifest.Artifacts) != len(names)+1 || res.Entries != len(names)+2 {
		t.Errorf("result %+v", res)
	}

	if _, err := exec.LookPath("sha256sum"); err == nil {
		dir := t.TempDir()
		gz, _ := gzip.NewReader(bytes.NewReader(buf.Bytes()))
		tr := tar.NewReader(gz)
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			p := filepath.Join(dir, h.Name)
			os.MkdirAll(filepath.Dir(p), 0o755)
			var b bytes.Buffer
			b.ReadFrom(tr)
			os.WriteFile(p, b.Bytes(), 0o644)
		}
		cmd := exec.Command("sha256sum", "-c", ChecksumsName)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("sha256sum -c: %v\n%s", err, out)
		}
	}

	// A bundle with one more entry than the manifest lists.
	var extra bytes.Buffer
	gzw := gzip.NewWriter(&extra)
	tw := tar.NewWriter(gzw)
	gz, _ := gzip.NewReader(bytes.NewReader(buf.Bytes()))
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		var b bytes.Buffer
		b.ReadFrom(tr)
		tw.WriteHeader(h)
		tw.Write(b.Bytes())
	}
	tw.WriteHeader(&tar.Header{Name: "planted", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644})
	tw.Write([]byte("x"))
	tw.Close()
	gzw.Close()
	if _, err := Verify(bytes.NewReader(extra.Bytes())); !errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), "planted") {
		t.Errorf("planted entry: %v", err)
	}
	if _, err := Verify(strings.NewReader("not gzip")); !errors.Is(err, ErrVerify) {
		t.Errorf("garbage: %v", err)
	}
}
