package testenv

import (
	"archive/tar"
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// ImageKind names one of the images the harness builds locally.
type ImageKind string

const (
	// Distroless is like gcr.io/distroless/static: the static loupe-testapp as
	// /app (the entrypoint), /etc/passwd with root and nonroot (65532),
	// /var/lib/dpkg/status.d/*, CA certificates, tzdata and Debian's
	// os-release; no shell, no package manager. Two layers (base, app).
	Distroless ImageKind = "distroless"
	// DebianLike has /bin/sh (Debian's dash) and a few coreutils
	// (id, cat, ls, sleep) with their shared libraries copied from the host,
	// /var/lib/dpkg/status, and loupe-testapp as /usr/local/bin/app (the
	// entrypoint). Two layers (base system, app).
	DebianLike ImageKind = "debian-like"
	// Busybox is busybox-static as /bin/busybox with its applet links; its
	// command is a shell loop that exits on SIGTERM. One layer.
	Busybox ImageKind = "busybox"
	// Pause is the sandbox image: loupe-testapp as /pause.
	Pause ImageKind = "pause"
)

// Ref is the image reference a kind is imported under.
func (k ImageKind) Ref() string { return "loupe.test/" + string(k) + ":1" }

// AppPath is where loupe-testapp lives in an image of this kind ("" for Busybox).
func (k ImageKind) AppPath() string {
	switch k {
	case Distroless:
		return "/app"
	case DebianLike:
		return "/usr/local/bin/app"
	case Pause:
		return "/pause"
	}
	return ""
}

// ExecRequestFile and SpawnRequestFile are the paths inside the container that
// loupe-testapp polls (see internal/testenv/cmd/loupe-testapp).
const (
	ExecRequestFile  = "/tmp/loupe-exec-request"
	SpawnRequestFile = "/tmp/loupe-spawn-request"
	StartRequestFile = "/tmp/loupe-start-request"
)

var (
	appOnce sync.Once
	appPath string
	appErr  error
)

// TestAppBinary builds internal/testenv/cmd/loupe-testapp (static, CGO off)
// once per process and returns the path of the binary. The go tool must be
// on PATH and the working directory inside the module (as under go test).
func TestAppBinary() (string, error) {
	appOnce.Do(func() {
		// Built afresh by every process (go's build cache makes that quick)
		// into a per-user cache dir, renamed into place atomically so that
		// concurrent test processes never see a partial binary.
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		dir := filepath.Join(cache, "loupe-testenv")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			appErr = fmt.Errorf("build loupe-testapp: %w", err)
			return
		}
		out := filepath.Join(dir, "loupe-testapp")
		tmp := fmt.Sprintf("%s.%d", out, os.Getpid())
		defer os.Remove(tmp)
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", tmp,
			"github.com/loupe-dev/loupe/internal/testenv/cmd/loupe-testapp")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			appErr = fmt.Errorf("build loupe-testapp: %w: %s", err, b)
			return
		}
		if err := os.Rename(tmp, out); err != nil {
			appErr = fmt.Errorf("build loupe-testapp: %w", err)
			return
		}
		appPath = out
	})
	return appPath, appErr
}

// entry is one file of a layer.
type entry struct {
	path     string // absolute path inside the image
	mode     int64  // permission bits (and setuid etc.)
	typ      byte   // tar.TypeReg, TypeDir, TypeSymlink
	data     []byte // content of a regular file
	hostPath string // or: copy content from this host file
	link     string // symlink target
	uid, gid int
}

func file(p string, mode int64, data string) entry {
	return entry{path: p, mode: mode, typ: tar.TypeReg, data: []byte(data)}
}
func hostFile(p string, mode int64, host string) entry {
	return entry{path: p, mode: mode, typ: tar.TypeReg, hostPath: host}
}
func dir(p string, mode int64) entry { return entry{path: p, mode: mode, typ: tar.TypeDir} }
func symlink(p, target string) entry {
	return entry{path: p, mode: 0o777, typ: tar.TypeSymlink, link: target}
}

// layerTar writes entries (with their parent directories) as a tar stream.
func layerTar(entries []entry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	seen := map[string]bool{}
	var addDirs func(p string) error
	addDirs = func(p string) error {
		d := path.Dir(p)
		if d == "/" || d == "." || seen[d] {
			return nil
		}
		if err := addDirs(d); err != nil {
			return err
		}
		seen[d] = true
		return tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(d, "/") + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX})
	}
	for _, e := range entries {
		if err := addDirs(e.path); err != nil {
			return nil, err
		}
		name := strings.TrimPrefix(e.path, "/")
		h := &tar.Header{Name: name, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid, ModTime: mtime, Format: tar.FormatPAX}
		switch e.typ {
		case tar.TypeDir:
			if seen[e.path] {
				continue
			}
			seen[e.path] = true
			h.Name += "/"
			if err := tw.WriteHeader(h); err != nil {
				return nil, err
			}
		case tar.TypeSymlink:
			h.Linkname = e.link
			if err := tw.WriteHeader(h); err != nil {
				return nil, err
			}
		default:
			data := e.data
			if e.hostPath != "" {
				b, err := os.ReadFile(e.hostPath)
				if err != nil {
					return nil, fmt.Errorf("read %s for image: %w", e.hostPath, err)
				}
				data = b
			}
			h.Size = int64(len(data))
			if err := tw.WriteHeader(h); err != nil {
				return nil, err
			}
			if _, err := tw.Write(data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func layerOf(entries []entry) (v1.Layer, error) {
	b, err := layerTar(entries)
	if err != nil {
		return nil, err
	}
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
}

const passwd = "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
const group = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"

const osRelease = `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
`

// dpkgStanza returns the host's /var/lib/dpkg/status stanza of pkg, or a
// minimal synthetic one when the host has no such package.
func dpkgStanza(pkg string) string {
	b, _ := os.ReadFile("/var/lib/dpkg/status")
	for _, st := range strings.Split(string(b), "\n\n") {
		if strings.HasPrefix(st, "Package: "+pkg+"\n") {
			return strings.TrimSpace(st) + "\n"
		}
	}
	return fmt.Sprintf("Package: %s\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0\nDescription: %s (synthetic)\n", pkg, pkg)
}

var lddLine = regexp.MustCompile(`(?:=>\s*)?(/[^\s]+)\s+\(0x`)

// sharedLibs lists the shared libraries of a host binary (via ldd).
func sharedLibs(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		// "not a dynamic executable" exits 1: a static binary needs nothing.
		if strings.Contains(string(out), "not a dynamic") {
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if m := lddLine.FindStringSubmatch(sc.Text()); m != nil {
			libs = append(libs, m[1])
		}
	}
	return libs, nil
}

// hostBinaryWithLibs copies a host binary to the same path in the image with
// its shared libraries (resolved to their real files, linked under the names
// the loader asks for).
func hostBinaryWithLibs(bin string) ([]entry, error) {
	real, err := filepath.EvalSymlinks(bin)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", bin, err)
	}
	es := []entry{hostFile(bin, 0o755, real)}
	libs, err := sharedLibs(real)
	if err != nil {
		return nil, err
	}
	for _, l := range libs {
		rl, err := filepath.EvalSymlinks(l)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", l, err)
		}
		es = append(es, hostFile(rl, 0o755, rl))
		if rl != l {
			es = append(es, symlink(l, rl))
		}
	}
	return es, nil
}

// dedup keeps the first entry for each path, in path order (parents first).
func dedup(es []entry) []entry {
	m := map[string]entry{}
	for _, e := range es {
		if _, ok := m[e.path]; !ok {
			m[e.path] = e
		}
	}
	out := make([]entry, 0, len(m))
	for _, e := range m {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out
}

// BuildImage builds the image of the given kind (see the ImageKind constants).
func BuildImage(kind ImageKind) (v1.Image, error) {
	app, err := TestAppBinary()
	if err != nil {
		return nil, err
	}
	var layers [][]entry
	cfg := v1.Config{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, WorkingDir: "/"}
	switch kind {
	case Pause:
		layers = [][]entry{{hostFile("/pause", 0o755, app)}}
		cfg.Entrypoint = []string{"/pause"}
	case Distroless:
		base := []entry{
			file("/etc/passwd", 0o644, passwd),
			file("/etc/group", 0o644, group),
			file("/etc/os-release", 0o644, osRelease),
			file("/etc/nsswitch.conf", 0o644, "hosts: files dns\n"),
			dir("/tmp", 0o1777),
			{path: "/home/nonroot", mode: 0o700, typ: tar.TypeDir, uid: 65532, gid: 65532},
			dir("/root", 0o700),
			file("/var/lib/dpkg/status.d/base-files", 0o644, dpkgStanza("base-files")),
			file("/var/lib/dpkg/status.d/netbase", 0o644, dpkgStanza("netbase")),
			file("/var/lib/dpkg/status.d/tzdata", 0o644, dpkgStanza("tzdata")),
			file("/var/lib/dpkg/status.d/ca-certificates", 0o644, dpkgStanza("ca-certificates")),
		}
		if _, err := os.Stat("/etc/ssl/certs/ca-certificates.crt"); err == nil {
			base = append(base, hostFile("/etc/ssl/certs/ca-certificates.crt", 0o644, "/etc/ssl/certs/ca-certificates.crt"))
		}
		for _, z := range []string{"UTC", "Etc/UTC", "Europe/Berlin", "America/New_York"} {
			if p := "/usr/share/zoneinfo/" + z; fileExists(p) {
				base = append(base, hostFile(p, 0o644, p))
			}
		}
		layers = [][]entry{base, {hostFile("/app", 0o755, app)}}
		cfg.Entrypoint = []string{"/app"}
	case DebianLike:
		base := []entry{
			file("/etc/passwd", 0o644, strings.Replace(passwd, "/sbin/nologin", "/bin/sh", 1)),
			file("/etc/group", 0o644, group),
			file("/etc/os-release", 0o644, osRelease),
			dir("/tmp", 0o1777),
			dir("/root", 0o700),
			symlink("/bin/sh", "dash"),
		}
		var status []string
		for _, p := range []string{"base-files", "dash", "libc6", "coreutils"} {
			status = append(status, dpkgStanza(p))
		}
		base = append(base, file("/var/lib/dpkg/status", 0o644, strings.Join(status, "\n")))
		bins := []string{"/bin/dash", "/usr/bin/id", "/usr/bin/cat", "/usr/bin/ls", "/usr/bin/sleep"}
		for _, b := range bins {
			es, err := hostBinaryWithLibs(b)
			if err != nil {
				return nil, fmt.Errorf("build %s image: %w", kind, err)
			}
			base = append(base, es...)
		}
		layers = [][]entry{dedup(base), {hostFile("/usr/local/bin/app", 0o755, app)}}
		cfg.Entrypoint = []string{"/usr/local/bin/app"}
	case Busybox:
		bb, err := exec.LookPath("busybox")
		if err != nil {
			return nil, fmt.Errorf("build busybox image: busybox-static is not installed: %w", err)
		}
		es := []entry{hostFile("/bin/busybox", 0o755, bb), dir("/tmp", 0o1777), file("/etc/passwd", 0o644, passwd), file("/etc/group", 0o644, group)}
		out, err := exec.Command(bb, "--list-full").Output()
		if err != nil {
			return nil, fmt.Errorf("build busybox image: list applets: %w", err)
		}
		for _, a := range strings.Fields(string(out)) {
			if a != "bin/busybox" {
				es = append(es, symlink("/"+a, "/bin/busybox"))
			}
		}
		layers = [][]entry{dedup(es)}
		cfg.Cmd = []string{"/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"}
	default:
		return nil, fmt.Errorf("build image: unknown kind %q", kind)
	}
	img := empty.Image
	for _, es := range layers {
		l, err := layerOf(es)
		if err != nil {
			return nil, fmt.Errorf("build %s image: %w", kind, err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			return nil, fmt.Errorf("build %s image: %w", kind, err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("build %s image: %w", kind, err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config = cfg
	cf.Created = v1.Time{Time: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
	return mutate.ConfigFile(img, cf)
}

// WriteImageTar builds the image of kind and writes it as a docker-archive
// tarball (what `docker save` produces) to path, tagged kind.Ref().
func WriteImageTar(kind ImageKind, path string) error {
	img, err := BuildImage(kind)
	if err != nil {
		return err
	}
	tag, err := name.NewTag(kind.Ref())
	if err != nil {
		return fmt.Errorf("write %s image: %w", kind, err)
	}
	if err := tarball.WriteToFile(path, tag, img); err != nil {
		return fmt.Errorf("write %s image: %w", kind, err)
	}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
