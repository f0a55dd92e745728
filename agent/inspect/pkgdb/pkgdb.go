// Package pkgdb parses the package databases and metadata files found in
// container images — dpkg status, apk installed, os-release, Python
// METADATA/PKG-INFO, npm package.json, JAR MANIFEST.MF and pom.properties, Go
// build info — into packages with package URLs. Every parser takes hostile
// bytes: it never panics, bounds what it keeps, and skips what it cannot read.
package pkgdb

import (
	"archive/zip"
	"bufio"
	"bytes"
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"strings"
	"unicode/utf8"

	"github.com/package-url/packageurl-go"
)

// Ecosystems, as recorded in Package.Ecosystem.
const (
	Deb    = "deb"
	Apk    = "apk"
	Golang = "golang"
	PyPI   = "pypi"
	Npm    = "npm"
	Maven  = "maven"
	OS     = "os"
)

// Limits on what one parser keeps from one file.
const (
	maxPackagesPerFile = 20000
	maxField           = 1024
	maxNestedJar       = 32 << 20
	maxJarEntries      = 50000
)

// Package is one inventory entry.
type Package struct {
	Name      string `json:"name"`
	Version   string `json:"version,omitempty"`
	Ecosystem string `json:"ecosystem"`
	PURL      string `json:"purl,omitempty"`
	License   string `json:"license,omitempty"`
	// Path of the file it was found in, inside the container.
	Path string `json:"path,omitempty"`
	// Arch, Distro: qualifiers used in the purl (deb/apk).
	Arch   string `json:"arch,omitempty"`
	Distro string `json:"distro,omitempty"`
}

// field makes a parsed value safe to keep: valid UTF-8, bounded, trimmed.
func field(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > maxField {
		s = s[:maxField]
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return s
}

// SetPURL fills p.PURL from its fields (namespace for deb/apk is the distro id).
func (p *Package) SetPURL() {
	if p.Name == "" {
		return
	}
	var q packageurl.Qualifiers
	ns, name := "", p.Name
	typ := ""
	switch p.Ecosystem {
	case Deb:
		typ, ns = packageurl.TypeDebian, distroNS(p.Distro, "debian")
	case Apk:
		typ, ns = packageurl.TypeApk, distroNS(p.Distro, "alpine")
	case Golang:
		typ = packageurl.TypeGolang
		if i := strings.LastIndex(name, "/"); i > 0 {
			ns, name = name[:i], name[i+1:]
		}
	case PyPI:
		typ = packageurl.TypePyPi
		name = strings.ToLower(strings.ReplaceAll(name, "_", "-"))
	case Npm:
		typ = packageurl.TypeNPM
		if strings.HasPrefix(name, "@") {
			if i := strings.Index(name, "/"); i > 0 {
				ns, name = name[:i], name[i+1:]
			}
		}
	case Maven:
		typ = packageurl.TypeMaven
		if i := strings.Index(name, ":"); i > 0 {
			ns, name = name[:i], name[i+1:]
		}
	default:
		return
	}
	if p.Arch != "" {
		q = append(q, packageurl.Qualifier{Key: "arch", Value: p.Arch})
	}
	if p.Distro != "" && (p.Ecosystem == Deb || p.Ecosystem == Apk) {
		q = append(q, packageurl.Qualifier{Key: "distro", Value: p.Distro})
	}
	p.PURL = packageurl.NewPackageURL(typ, ns, name, p.Version, q, "").ToString()
}

func distroNS(distro, def string) string {
	if distro == "" {
		return def
	}
	if i := strings.IndexAny(distro, "-"); i > 0 {
		return distro[:i]
	}
	return distro
}

// stanzas splits RFC-822-like text (dpkg status, apk installed) into
// records separated by blank lines, calling fn with each record's fields.
// Continuation lines (leading space) are ignored except for dpkg's first line.
func stanzas(data []byte, sep func(line string) (key, val string, ok bool), fn func(map[string]string) bool) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	rec := map[string]string{}
	flush := func() bool {
		if len(rec) == 0 {
			return true
		}
		ok := fn(rec)
		rec = map[string]string{}
		return ok
	}
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			if !flush() {
				return
			}
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue
		}
		if k, v, ok := sep(line); ok {
			if _, dup := rec[k]; !dup && len(rec) < 64 {
				rec[k] = v
			}
		}
	}
	flush()
}

func colonSep(line string) (string, string, bool) {
	k, v, ok := strings.Cut(line, ":")
	return k, v, ok && k != ""
}

// ParseDpkgStatus parses /var/lib/dpkg/status or one status.d/* file
// (distroless images ship one file per package there). Only packages whose
// Status is "install ok installed" (or that have no Status, as in status.d)
// are returned.
func ParseDpkgStatus(data []byte, distro string) []Package {
	var out []Package
	stanzas(data, colonSep, func(r map[string]string) bool {
		name := field(r["Package"])
		if name == "" {
			return true
		}
		if st, ok := r["Status"]; ok && !strings.HasSuffix(strings.TrimSpace(st), " installed") {
			return true
		}
		p := Package{Name: name, Version: field(r["Version"]), Ecosystem: Deb, Arch: field(r["Architecture"]), Distro: distro}
		p.SetPURL()
		out = append(out, p)
		return len(out) < maxPackagesPerFile
	})
	return out
}

// ParseApkInstalled parses /lib/apk/db/installed (P: name, V: version, A:
// arch, L: licence).
func ParseApkInstalled(data []byte, distro string) []Package {
	var out []Package
	sep := func(line string) (string, string, bool) {
		if len(line) < 2 || line[1] != ':' {
			return "", "", false
		}
		return line[:1], line[2:], true
	}
	stanzas(data, sep, func(r map[string]string) bool {
		name := field(r["P"])
		if name == "" {
			return true
		}
		p := Package{Name: name, Version: field(r["V"]), Ecosystem: Apk, Arch: field(r["A"]), License: field(r["L"]), Distro: distro}
		p.SetPURL()
		out = append(out, p)
		return len(out) < maxPackagesPerFile
	})
	return out
}

// ParseOSRelease parses os-release(5): KEY=value lines, values optionally
// quoted. Unknown or malformed lines are skipped.
func ParseOSRelease(data []byte) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t\"'") {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
			v = strings.NewReplacer(`\"`, `"`, `\\`, `\`, `\$`, `$`, "\\`", "`").Replace(v)
		}
		if len(out) < 64 {
			out[field(k)] = field(v)
		}
	}
	return out
}

// ParsePythonMetadata parses a dist-info METADATA or egg-info PKG-INFO file
// (email-header format; the body after the first blank line is ignored).
func ParsePythonMetadata(data []byte) (Package, bool) {
	p := Package{Ecosystem: PyPI}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" {
			break
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.ToLower(k) {
		case "name":
			if p.Name == "" {
				p.Name = field(v)
			}
		case "version":
			if p.Version == "" {
				p.Version = field(v)
			}
		case "license":
			if p.License == "" {
				p.License = field(v)
			}
		case "license-expression":
			p.License = field(v)
		}
	}
	if p.Name == "" {
		return p, false
	}
	p.SetPURL()
	return p, true
}

// ParsePackageJSON parses an npm package.json.
func ParsePackageJSON(data []byte) (Package, bool) {
	var m struct {
		Name    string          `json:"name"`
		Version string          `json:"version"`
		License json.RawMessage `json:"license"`
	}
	if err := json.Unmarshal(data, &m); err != nil || field(m.Name) == "" {
		return Package{}, false
	}
	p := Package{Name: field(m.Name), Version: field(m.Version), Ecosystem: Npm}
	var lic string
	if json.Unmarshal(m.License, &lic) == nil {
		p.License = field(lic)
	} else {
		var lo struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(m.License, &lo) == nil {
			p.License = field(lo.Type)
		}
	}
	p.SetPURL()
	return p, true
}

// ParseManifest parses a JAR META-INF/MANIFEST.MF main section (continuation
// lines start with one space).
func ParseManifest(data []byte) map[string]string {
	out := map[string]string{}
	var last string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" {
			break // end of the main section
		}
		if line[0] == ' ' {
			if last != "" && len(out[last]) < maxField {
				out[last] = field(out[last] + line[1:])
			}
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok || len(out) >= 64 {
			last = ""
			continue
		}
		last = field(k)
		out[last] = field(v)
	}
	return out
}

// ParsePomProperties parses META-INF/maven/<g>/<a>/pom.properties.
func ParsePomProperties(data []byte) (Package, bool) {
	kv := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == '!' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		kv[strings.TrimSpace(k)] = field(v)
	}
	g, a := kv["groupId"], kv["artifactId"]
	if a == "" {
		return Package{}, false
	}
	name := a
	if g != "" {
		name = g + ":" + a
	}
	p := Package{Name: name, Version: kv["version"], Ecosystem: Maven}
	p.SetPURL()
	return p, true
}

// ScanJar lists the Maven packages of a JAR/WAR/EAR: every pom.properties
// inside, else the MANIFEST.MF (Implementation-Title/Version or
// Bundle-SymbolicName), plus the same for nested jars one level down
// (WEB-INF/lib, BOOT-INF/lib). where is the jar's path in the container.
func ScanJar(r io.ReaderAt, size int64, where string) (pkgs []Package, err error) {
	return scanJar(r, size, where, true)
}

func scanJar(r io.ReaderAt, size int64, where string, nested bool) (pkgs []Package, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("read jar %s: malformed archive: %v", where, p)
		}
	}()
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return nil, fmt.Errorf("read jar %s: %w", where, err)
	}
	if len(zr.File) > maxJarEntries {
		return nil, fmt.Errorf("read jar %s: %d entries, more than %d", where, len(zr.File), maxJarEntries)
	}
	var manifest map[string]string
	for _, f := range zr.File {
		name := f.Name
		switch {
		case strings.HasPrefix(name, "META-INF/maven/") && strings.HasSuffix(name, "/pom.properties"):
			if b, err := readZip(f, 1<<20); err == nil {
				if p, ok := ParsePomProperties(b); ok {
					p.Path = where
					pkgs = append(pkgs, p)
				}
			}
		case name == "META-INF/MANIFEST.MF":
			if b, err := readZip(f, 1<<20); err == nil {
				manifest = ParseManifest(b)
			}
		case nested && isJarName(name) && f.UncompressedSize64 <= maxNestedJar:
			if b, err := readZip(f, maxNestedJar); err == nil {
				sub, _ := scanJar(bytes.NewReader(b), int64(len(b)), where+"!/"+field(name), false)
				pkgs = append(pkgs, sub...)
			}
		}
		if len(pkgs) >= maxPackagesPerFile {
			break
		}
	}
	if len(pkgs) == 0 && manifest != nil {
		name := manifest["Implementation-Title"]
		if v := manifest["Bundle-SymbolicName"]; name == "" && v != "" {
			name, _, _ = strings.Cut(v, ";")
		}
		if name == "" {
			name = strings.TrimSuffix(path.Base(strings.TrimSuffix(where, "!/")), path.Ext(where))
		}
		ver := manifest["Implementation-Version"]
		if ver == "" {
			ver = manifest["Bundle-Version"]
		}
		if g := manifest["Implementation-Vendor-Id"]; g != "" {
			name = g + ":" + name
		}
		p := Package{Name: field(name), Version: field(ver), Ecosystem: Maven, Path: where}
		p.SetPURL()
		pkgs = append(pkgs, p)
	}
	return pkgs, nil
}

func isJarName(n string) bool {
	n = strings.ToLower(n)
	return strings.HasSuffix(n, ".jar") || strings.HasSuffix(n, ".war") || strings.HasSuffix(n, ".ear")
}

func readZip(f *zip.File, max int64) ([]byte, error) {
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", f.Name, max)
	}
	return b, nil
}

// GoBinary reads the build info embedded in a Go executable: the main module
// and every dependency as golang packages, plus the Go toolchain version.
func GoBinary(r io.ReaderAt, where string) (pkgs []Package, goVersion string, err error) {
	defer func() {
		if p := recover(); p != nil {
			pkgs, err = nil, fmt.Errorf("read go build info %s: malformed binary: %v", where, p)
		}
	}()
	bi, err := buildinfo.Read(r)
	if err != nil {
		return nil, "", err
	}
	add := func(path, ver string) {
		if path == "" || len(pkgs) >= maxPackagesPerFile {
			return
		}
		p := Package{Name: field(path), Version: field(ver), Ecosystem: Golang, Path: where}
		p.SetPURL()
		pkgs = append(pkgs, p)
	}
	add(bi.Main.Path, bi.Main.Version)
	for _, d := range bi.Deps {
		if d.Replace != nil {
			add(d.Replace.Path, d.Replace.Version)
		} else {
			add(d.Path, d.Version)
		}
	}
	p := Package{Name: "stdlib", Version: field(bi.GoVersion), Ecosystem: Golang, Path: where}
	p.SetPURL()
	pkgs = append(pkgs, p)
	return pkgs, field(bi.GoVersion), nil
}
