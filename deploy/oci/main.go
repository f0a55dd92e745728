// Command oci builds Loupe's images as OCI image-layout tarballs without
// Docker (`make oci`): each static binary from --bin on an empty base, with
// version labels, one tarball per image in --out, ready for
// `ctr -n k8s.io image import` or a registry push with crane/skopeo.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/loupe-dev/loupe/internal/ociimage"
)

// images are the three Loupe images: binary name and user. The agent runs
// as root (it loads eBPF and reads every container's files; the DaemonSet
// drops all but the capabilities it needs), the others as nonroot.
var images = []struct{ binary, user string }{
	{"loupe-agent", "0:0"},
	{"loupe-collector", "65532:65532"},
	{"loupe", "65532:65532"},
}

func main() {
	bin := flag.String("bin", "bin", "directory with the static binaries (make build)")
	out := flag.String("out", "bin/oci", "directory for the image tarballs")
	registry := flag.String("registry", "ghcr.io/loupe-dev", "registry and path the images are named under")
	version := flag.String("version", "dev", "image tag and org.opencontainers.image.version label")
	commit := flag.String("commit", "unknown", "org.opencontainers.image.revision label")
	arch := flag.String("arch", "amd64", "image architecture (must match the binaries)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*bin, *out, *registry, *version, *commit, *arch, log); err != nil {
		log.Error("build images", "err", err)
		os.Exit(1)
	}
}

func run(bin, out, registry, version, commit, arch string, log *slog.Logger) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	created := time.Unix(0, 0)
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err)
		}
		created = time.Unix(n, 0)
	}
	for _, im := range images {
		ref := registry + "/" + im.binary + ":" + version
		img, err := ociimage.Build(ociimage.Spec{Ref: ref, Binary: filepath.Join(bin, im.binary), User: im.user,
			Version: version, Commit: commit, Created: created, Arch: arch})
		if err != nil {
			return err
		}
		dst := filepath.Join(out, im.binary+".tar")
		if err := ociimage.WriteOCITar(dst, ref, img); err != nil {
			return err
		}
		d, _ := img.Digest()
		log.Info("image written", "ref", ref, "file", dst, "digest", d.String())
	}
	return nil
}
