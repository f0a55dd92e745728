package inspect

import (
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loupe-dev/loupe/agent/inspect/pkgdb"
	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/internal/version"
)

// layerFS answers lookups in one live layer directory (used to decide which
// layer wins for a path without keeping every path in memory).
type layerFS interface {
	// Lookup reports whether p exists in the layer — or is hidden by a
	// non-directory ancestor there — and, when p itself exists, its type.
	Lookup(p string) (typ byte, exists bool)
}

// layerView is one scanned layer in stacking order.
type layerView struct {
	name   string
	res    *LayerResult
	fs     layerFS
	cached bool
	opaque map[string]bool // opaque directories of this layer
	upper  bool
}

func newView(name string, res *LayerResult, fs layerFS, upper bool) *layerView {
	v := &layerView{name: name, res: res, fs: fs, opaque: map[string]bool{}, upper: upper}
	for i := range res.Entries {
		if res.Entries[i].Opaque {
			v.opaque[res.Entries[i].Path] = true
		}
	}
	return v
}

// hides reports whether layer v hides path p of any layer below it.
func (v *layerView) hides(p string) bool {
	if _, ok := v.fs.Lookup(p); ok {
		return true
	}
	for a := path.Dir(p); ; a = path.Dir(a) {
		if v.opaque[a] {
			return true
		}
		if a == "/" || a == "." {
			return false
		}
	}
}

// visible is an entry of the merged view and the layer it comes from.
type visible struct {
	e     *Entry
	layer string
}

// merge computes the merged view of the kept entries of views (bottom
// first), top wins; whiteouts are dropped.
func merge(views []*layerView) map[string]visible {
	m := map[string]visible{}
	for i, v := range views {
	entries:
		for k := range v.res.Entries {
			e := &v.res.Entries[k]
			if e.Type == TypeWhiteout {
				continue
			}
			for _, above := range views[i+1:] {
				if above.hides(e.Path) {
					continue entries
				}
			}
			m[e.Path] = visible{e: e, layer: v.name}
		}
	}
	return m
}

// resolve follows symlinks lexically inside the merged view (at most 40),
// the way the kernel would inside the container root. It returns the final
// path and its entry, or nil when the target is not a kept entry.
func resolve(m map[string]visible, p string) (string, *visible) {
	for hops := 0; hops < 40; hops++ {
		changed := false
		parts := strings.Split(strings.TrimPrefix(path.Clean("/"+p), "/"), "/")
		cur := "/"
		for i, c := range parts {
			next := path.Join(cur, c)
			if v, ok := m[next]; ok && v.e.Type == TypeSymlink {
				t := v.e.Link
				if !strings.HasPrefix(t, "/") {
					t = path.Join(cur, t)
				}
				p = path.Join(append([]string{t}, parts[i+1:]...)...)
				changed = true
				break
			}
			cur = next
		}
		if !changed {
			p = path.Clean("/" + p)
			if v, ok := m[p]; ok {
				return p, &v
			}
			return p, nil
		}
	}
	return p, nil
}

// Profile is the classification of an image.
type Profile struct {
	// Name: distroless-static, distroless-base, distroless-cc,
	// distroless-java, distroless-python, distroless-nodejs, minimal
	// (a shell but no package manager, e.g. busybox), distro, or unknown.
	Name         string
	Vendor       string // google-distroless, chainguard, wolfi or ""
	OSID         string
	OSVersion    string
	OSPretty     string
	Libc         string // glibc, musl or none
	Shells       []string
	PkgManagers  []string
	Tools        []string
	Interpreters []string
}

// Summary is one human sentence.
func (p Profile) Summary() string {
	var b strings.Builder
	b.WriteString(p.Name)
	var facts []string
	switch p.Vendor {
	case "google-distroless":
		facts = append(facts, "Google distroless")
	case "chainguard":
		facts = append(facts, "Chainguard")
	case "wolfi":
		facts = append(facts, "Wolfi")
	}
	if p.OSID != "" {
		facts = append(facts, strings.TrimSpace(p.OSID+" "+p.OSVersion))
	}
	facts = append(facts, p.Libc)
	if len(p.Shells) == 0 {
		facts = append(facts, "no shell")
	} else {
		facts = append(facts, "shell "+strings.Join(clipList(p.Shells, 3), ","))
	}
	if len(p.PkgManagers) == 0 {
		facts = append(facts, "no package manager")
	} else {
		facts = append(facts, "package manager "+strings.Join(clipList(p.PkgManagers, 3), ","))
	}
	if len(p.Interpreters) > 0 {
		facts = append(facts, "interpreters "+strings.Join(p.Interpreters, ","))
	}
	fmt.Fprintf(&b, " (%s)", strings.Join(facts, ", "))
	return b.String()
}

func clipList(xs []string, n int) []string {
	if len(xs) <= n {
		return xs
	}
	return append(append([]string{}, xs[:n]...), fmt.Sprintf("+%d", len(xs)-n))
}

// detector turns a merged view into findings.
type detector struct {
	t         Target
	opts      Options
	now       time.Time
	findings  []*loupev1.Finding
	pkgs      []pkgdb.Package
	seenMulti map[string]bool
}

func (d *detector) add(kind loupev1.Kind, sev loupev1.Severity, rule, summary string, file *loupev1.File, details map[string]string) *loupev1.Finding {
	id, err := uuid.NewV7()
	if err != nil {
		id = uuid.New()
	}
	f := &loupev1.Finding{
		Id: id.String(), Time: timestamppb.New(d.now), Node: d.opts.Node, Kind: kind, Severity: sev,
		Rule: rule, Summary: summary, Container: d.t.Container, File: file, Details: details,
		AgentVersion: version.Version,
	}
	d.findings = append(d.findings, f)
	return f
}

func fileOf(p string, v visible) *loupev1.File {
	e := v.e
	f := &loupev1.File{Path: printable(p), Layer: v.layer, Mode: e.Mode, Uid: e.UID, Gid: e.GID, Size: e.Size, Sha256: e.SHA256}
	if e.Type == TypeSymlink {
		f.LinkTarget = printable(e.Link)
	}
	return f
}

// detect runs every detector over the merged view m.
func (d *detector) detect(m map[string]visible) Profile {
	paths := make([]string, 0, len(m))
	for p := range m {
		paths = append(paths, p)
	}
	sort.Strings(paths)

	var prof Profile
	libs := map[string]bool{}
	interp := map[string]bool{}
	var osr map[string]string
	osrPath := ""
	for _, p := range paths {
		v := m[p]
		if v.e.OSRelease != nil && (osr == nil || p == "/etc/os-release") {
			osr, osrPath = v.e.OSRelease, p
		}
	}
	_ = osrPath
	if osr != nil {
		prof.OSID, prof.OSVersion, prof.OSPretty = osr["ID"], osr["VERSION_ID"], osr["PRETTY_NAME"]
		switch {
		case prof.OSPretty == "Distroless" || strings.Contains(osr["HOME_URL"], "distroless"):
			prof.Vendor = "google-distroless"
		case prof.OSID == "wolfi":
			prof.Vendor = "wolfi"
		case prof.OSID == "chainguard" || strings.Contains(strings.ToLower(osr["HOME_URL"]), "chainguard"):
			prof.Vendor = "chainguard"
		}
	}
	distro := prof.OSID
	if distro != "" && prof.OSVersion != "" {
		distro += "-" + prof.OSVersion
	}

	for _, p := range paths {
		v := m[p]
		e := v.e
		base := path.Base(p)
		switch e.Type {
		case TypeFile:
			if e.Executable() {
				d.program(p, base, v, v, &prof, interp)
			}
			if l := libName(base); l != "" {
				libs[l] = true
			}
			d.hardening(p, v)
			for _, pk := range e.Packages {
				if pk.Ecosystem == pkgdb.Deb || pk.Ecosystem == pkgdb.Apk {
					pk.Distro = distro
					pk.SetPURL()
				}
				d.pkgs = append(d.pkgs, pk)
			}
		case TypeSymlink:
			if l := libName(base); l != "" {
				if _, t := resolve(m, p); t != nil {
					libs[l] = true
				}
			}
			if !knownName(base) {
				continue
			}
			if _, t := resolve(m, p); t != nil && t.e.Type == TypeFile && t.e.Executable() {
				d.program(p, base, v, *t, &prof, interp)
			}
		case TypeDir:
			d.hardening(p, v)
		case TypeOther:
			d.hardening(p, v)
		}
	}
	if osr != nil {
		p := pkgdb.Package{Name: prof.OSID, Version: prof.OSVersion, Ecosystem: pkgdb.OS, Path: osrPath}
		if p.Name != "" {
			d.pkgs = append(d.pkgs, p)
		}
	}
	switch {
	case libs["glibc"]:
		prof.Libc = "glibc"
	case libs["musl"]:
		prof.Libc = "musl"
	default:
		prof.Libc = "no libc"
	}
	for k := range interp {
		prof.Interpreters = append(prof.Interpreters, k)
	}
	sort.Strings(prof.Interpreters)
	switch {
	case len(prof.Shells) == 0 && len(prof.PkgManagers) == 0:
		switch {
		case interp["java"]:
			prof.Name = "distroless-java"
		case interp["python"]:
			prof.Name = "distroless-python"
		case interp["node"]:
			prof.Name = "distroless-nodejs"
		case libs["libstdc++"]:
			prof.Name = "distroless-cc"
		case prof.Libc != "no libc":
			prof.Name = "distroless-base"
		default:
			prof.Name = "distroless-static"
		}
	case len(prof.PkgManagers) > 0 && prof.OSID != "":
		prof.Name = "distro"
	case len(prof.PkgManagers) == 0:
		prof.Name = "minimal"
	default:
		prof.Name = "unknown"
	}
	details := map[string]string{
		"profile": prof.Name, "libc": prof.Libc,
		"shells": strings.Join(clipList(prof.Shells, 20), ","), "package_managers": strings.Join(clipList(prof.PkgManagers, 20), ","),
		"tools": strings.Join(clipList(prof.Tools, 20), ","), "interpreters": strings.Join(prof.Interpreters, ","),
	}
	if prof.Vendor != "" {
		details["vendor"] = prof.Vendor
	}
	if prof.OSID != "" {
		details["os_id"], details["os_version"] = prof.OSID, prof.OSVersion
	}
	d.add(loupev1.Kind_KIND_IMAGE_PROFILE, loupev1.Severity_SEVERITY_INFO, "inspect.image_profile",
		"image profile: "+prof.Summary(), nil, details)
	return prof
}

// program reports shells, package managers and tools. at is the entry at p
// (the file itself or a link to it); target is the file that would run.
func (d *detector) program(p, base string, at, target visible, prof *Profile, interp map[string]bool) {
	file := fileOf(p, at)
	details := map[string]string{}
	if at.e.Type == TypeSymlink {
		file.Sha256 = target.e.SHA256
		details["resolves_to"] = printable(target.e.Path)
	}
	provider := target.e.Multi
	if provider != "" {
		details["provider"] = provider
	}
	multiFile := false
	if at.e.Type == TypeFile && provider != "" {
		// Any name of a multi-call binary gives a shell (argv[0] is the
		// caller's choice); report each inode once, not every hard link.
		k := fmt.Sprintf("%s:%d:%d", at.layer, at.e.Dev, at.e.Ino)
		multiFile = !d.seenMulti[k]
		d.seenMulti[k] = true
	}
	switch {
	case pkgManagerNames[base] || toolNames[base]:
		// handled below
	case shellNames[base] || multiFile:
		what := base
		if provider != "" && provider != base {
			what = fmt.Sprintf("%s (%s)", base, provider)
		}
		prof.Shells = appendUniq(prof.Shells, printable(p))
		d.add(loupev1.Kind_KIND_SHELL_PRESENT, loupev1.Severity_SEVERITY_MEDIUM, "inspect.shell_present",
			fmt.Sprintf("shell %s present at %s (layer %s)", printable(what), printable(p), at.layer), file, details)
	}
	switch {
	case pkgManagerNames[base]:
		prof.PkgManagers = appendUniq(prof.PkgManagers, printable(p))
		d.add(loupev1.Kind_KIND_PKG_MANAGER_PRESENT, loupev1.Severity_SEVERITY_LOW, "inspect.pkg_manager_present",
			fmt.Sprintf("package manager %s present at %s (layer %s)", printable(base), printable(p), at.layer), file, details)
	case toolNames[base]:
		prof.Tools = appendUniq(prof.Tools, printable(p))
		d.add(loupev1.Kind_KIND_TOOL_PRESENT, loupev1.Severity_SEVERITY_LOW, "inspect.tool_present",
			fmt.Sprintf("network/debug tool %s present at %s (layer %s)", printable(base), printable(p), at.layer), file, details)
	}
	if k := interpreterName(base); k != "" {
		interp[k] = true
	}
}

func appendUniq(xs []string, x string) []string {
	for _, y := range xs {
		if y == x {
			return xs
		}
	}
	return append(xs, x)
}

const (
	sIFMT   = 0o170000
	sIFDIR  = 0o040000
	sIFREG  = 0o100000
	sISUID  = 0o4000
	sISGID  = 0o2000
	sISVTX  = 0o1000
	wOthers = 0o002
)

// hardening reports SUID/SGID files and world-writable files and
// directories without the sticky bit.
func (d *detector) hardening(p string, v visible) {
	e := v.e
	if e.Type == TypeSymlink {
		return
	}
	if e.Mode&(sISUID|sISGID) != 0 && e.Mode&sIFMT != sIFDIR {
		which := "set-uid"
		if e.Mode&sISUID == 0 {
			which = "set-gid"
		} else if e.Mode&sISGID != 0 {
			which = "set-uid and set-gid"
		}
		sev := loupev1.Severity_SEVERITY_MEDIUM
		if e.Mode&sISUID != 0 && e.UID == 0 {
			sev = loupev1.Severity_SEVERITY_HIGH
		}
		d.add(loupev1.Kind_KIND_SUID, sev, "inspect.suid",
			fmt.Sprintf("%s file %s owned by uid %d (mode %o, layer %s)", which, printable(p), e.UID, e.Mode&0o7777, v.layer), fileOf(p, v), nil)
	}
	if e.Mode&wOthers != 0 {
		switch {
		case e.Mode&sIFMT == sIFDIR && e.Mode&sISVTX == 0:
			d.add(loupev1.Kind_KIND_WORLD_WRITABLE, loupev1.Severity_SEVERITY_MEDIUM, "inspect.world_writable",
				fmt.Sprintf("world-writable directory without sticky bit %s (mode %o, layer %s)", printable(p), e.Mode&0o7777, v.layer), fileOf(p, v), nil)
		case e.Mode&sIFMT == sIFREG:
			d.add(loupev1.Kind_KIND_WORLD_WRITABLE, loupev1.Severity_SEVERITY_MEDIUM, "inspect.world_writable",
				fmt.Sprintf("world-writable file %s (mode %o, layer %s)", printable(p), e.Mode&0o7777, v.layer), fileOf(p, v), nil)
		}
	}
}

// runsAsRoot reports an image/container user of root.
func (d *detector) runsAsRoot() {
	if !d.t.UserKnown {
		return
	}
	u := strings.TrimSpace(d.t.ImageUser)
	name, _, _ := strings.Cut(u, ":")
	if name != "" && name != "0" && name != "root" {
		return
	}
	shown := u
	if shown == "" {
		shown = "(unset: defaults to root)"
	}
	d.add(loupev1.Kind_KIND_RUNS_AS_ROOT, loupev1.Severity_SEVERITY_MEDIUM, "inspect.runs_as_root",
		"container runs as root: user "+printable(shown), nil, map[string]string{"user": printable(u)})
}

// packageFindings turns the inventory into PACKAGE findings (deduplicated).
func (d *detector) packageFindings() {
	seen := map[string]bool{}
	out := d.pkgs[:0]
	for _, p := range d.pkgs {
		k := p.Ecosystem + "\x00" + p.Name + "\x00" + p.Version + "\x00" + p.Path
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, p)
		d.add(loupev1.Kind_KIND_PACKAGE, loupev1.Severity_SEVERITY_INFO, "inspect.package",
			fmt.Sprintf("package %s %s (%s) in %s", p.Name, p.Version, p.Ecosystem, printable(p.Path)), nil, nil).Package =
			&loupev1.Package{Name: p.Name, Version: p.Version, Ecosystem: p.Ecosystem, Purl: p.PURL, Path: printable(p.Path), License: p.License}
	}
	d.pkgs = out
}
