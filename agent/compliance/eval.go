package compliance

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"

	"github.com/loupe-dev/loupe/agent/inspect"
	"github.com/loupe-dev/loupe/agent/inspect/pkgdb"
	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

// Status of a test or control.
type Status string

// Statuses, as in InSpec/HDF.
const (
	Passed  Status = "passed"
	Failed  Status = "failed"
	Skipped Status = "skipped"
	Error   Status = "error"
)

// Info describes one entry of the container's merged filesystem.
type Info struct {
	// Type: 'f' regular file, 'd' directory, 'l' symlink, 'o' other.
	Type byte
	// Mode: permission bits including setuid/setgid/sticky (07777).
	Mode     uint32
	UID, GID uint32
	Size     int64
	// Link is a symlink's target.
	Link string
}

// FS reads the container's merged root filesystem. Implementations never
// leave the root (see NewFS).
type FS interface {
	// Lstat describes p without following a final symlink.
	Lstat(p string) (Info, error)
	// Stat follows symlinks (inside the root).
	Stat(p string) (Info, error)
	// ReadFile reads a regular file; files larger than max fail with ErrTooLarge.
	ReadFile(p string, max int64) ([]byte, error)
	// SHA256 hashes a regular file (hex).
	SHA256(p string) (string, error)
	// ReadDir lists a directory's names (sorted).
	ReadDir(p string) ([]string, error)
}

// ErrTooLarge: a file is larger than a check reads.
var ErrTooLarge = errors.New("file too large")

// MaxRead bounds the bytes a content check reads from one file.
const MaxRead = 4 << 20

// ContainerFacts are the runtime facts of a container (OCI spec).
type ContainerFacts struct {
	// UserKnown: UID is known (offline scans: from the image config's User).
	UserKnown bool
	UID       uint32
	// SpecKnown: the remaining fields come from a runtime spec (agent), not
	// an offline scan.
	SpecKnown       bool
	Privileged      bool
	ReadOnlyRootfs  bool
	NoNewPrivileges bool
	CapEffective    []string
	CapBounding     []string
}

// Target is what a profile runs against.
type Target struct {
	// Name: the image reference (HDF platform) or the scanned path.
	Name string
	// Container is copied into findings (nil offline).
	Container *loupev1.ContainerRef
	// Report is the scan of the container (findings, packages, profile).
	Report *inspect.Report
	FS     FS
	Facts  ContainerFacts
	// Node is copied into findings.
	Node string
}

// Result is one test's result.
type Result struct {
	Status    Status
	CodeDesc  string
	Message   string
	Resource  string
	StartTime time.Time
	RunTime   time.Duration
}

// ControlResult is one control's results.
type ControlResult struct {
	Control *Control
	Results []Result
	// SkipMessage when only_if did not hold.
	SkipMessage string
}

// Status rolls the results up as Heimdall does: any error → error, any
// failed → failed, all skipped → skipped, else passed.
func (c *ControlResult) Status() Status { return rollUp(c.Results) }

func rollUp(rs []Result) Status {
	st := Skipped
	for _, r := range rs {
		switch r.Status {
		case Error:
			return Error
		case Failed:
			st = Failed
		case Passed:
			if st == Skipped {
				st = Passed
			}
		}
	}
	return st
}

// Run is one profile evaluated against one target.
type Run struct {
	Profile  *Profile
	Target   string
	Release  string // os-release PRETTY_NAME or the image profile, for HDF's platform release
	TargetID string // container id or image digest
	Start    time.Time
	Duration time.Duration
	Controls []*ControlResult
	// Container of the target (agent runs).
	Container *loupev1.ContainerRef
	Node      string
}

// Evaluate runs every control of prof against t. It never fails: a check
// that cannot be made yields status error with the reason.
func Evaluate(ctx context.Context, prof *Profile, t *Target) *Run {
	ev := &evaluator{t: t, cache: map[string]any{}}
	run := &Run{Profile: prof, Target: t.Name, Start: time.Now(), Container: t.Container, Node: t.Node}
	if t.Container != nil {
		run.TargetID = t.Container.GetId()
	}
	if t.Report != nil {
		run.Release = t.Report.Profile.Name
	}
	if osr, err := ev.osRelease(); err == nil && osr["PRETTY_NAME"] != "" {
		run.Release = osr["PRETTY_NAME"]
	}
	if run.Release == "" {
		run.Release = "unknown"
	}
	for _, c := range prof.Controls {
		cr := &ControlResult{Control: c}
		run.Controls = append(run.Controls, cr)
		if ctx.Err() != nil {
			cr.Results = []Result{{Status: Error, CodeDesc: c.ID, Message: "evaluation cancelled: " + ctx.Err().Error(), StartTime: time.Now()}}
			continue
		}
		if c.OnlyIf != nil {
			r := ev.run(c.OnlyIf)
			if r.Status != Passed {
				msg := c.OnlyIfMessage
				if msg == "" {
					msg = "only_if did not hold: " + r.CodeDesc
					if r.Message != "" {
						msg += " (" + r.Message + ")"
					}
				}
				cr.SkipMessage = msg
				cr.Results = []Result{{Status: Skipped, CodeDesc: r.CodeDesc, Message: msg, Resource: r.Resource, StartTime: r.StartTime}}
				continue
			}
		}
		for _, tst := range c.Tests {
			cr.Results = append(cr.Results, ev.run(tst))
		}
	}
	run.Duration = time.Since(run.Start)
	return run
}

type evaluator struct {
	t     *Target
	cache map[string]any
}

func (e *evaluator) run(t *Test) (r Result) {
	r.StartTime = time.Now()
	r.Resource = t.Resource
	defer func() {
		if p := recover(); p != nil {
			r.Status, r.Message = Error, fmt.Sprintf("internal error evaluating %s: %v", t.Resource, p)
		}
		r.RunTime = time.Since(r.StartTime)
	}()
	var err error
	var fails []string
	r.CodeDesc, fails, err = e.check(t)
	var skip *skipError
	switch {
	case errors.As(err, &skip):
		r.Status, r.Message = Skipped, skip.msg
	case err != nil:
		r.Status, r.Message = Error, err.Error()
	case len(fails) > 0:
		r.Status, r.Message = Failed, strings.Join(fails, "; ")
	default:
		r.Status = Passed
	}
	return r
}

// errSkip marks a check that cannot apply (e.g. runtime facts offline).
type skipError struct{ msg string }

func (s *skipError) Error() string { return s.msg }

func (e *evaluator) check(t *Test) (desc string, fails []string, err error) {
	switch {
	case t.File != nil:
		return e.checkFile(t)
	case t.Config != nil:
		return e.checkConfig(t)
	case t.Doc != nil:
		return e.checkDoc(t)
	case t.Package != nil:
		return e.checkPackage(t)
	case t.OS != nil:
		return e.checkOS(t)
	case t.Passwd != nil:
		return e.checkPasswd(t)
	case t.Group != nil:
		return e.checkGroup(t)
	case t.Cont != nil:
		return e.checkContainer(t)
	case t.Findings != nil:
		return e.checkFindings(t)
	}
	return t.Resource, nil, fmt.Errorf("resource %q has no evaluator", t.Resource)
}

func notExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

func typeName(b byte) string {
	switch b {
	case 'f':
		return "file"
	case 'd':
		return "directory"
	case 'l':
		return "symlink"
	}
	return "other"
}

func (e *evaluator) checkFile(t *Test) (string, []string, error) {
	a := t.File
	desc := t.Resource + " " + a.Path
	var conds []string
	var fails []string
	if e.t.FS == nil {
		return desc, nil, errors.New("no filesystem access for this target")
	}
	want := a.Type
	if t.Resource == "directory" && want == "" {
		want = "directory"
	}
	fi, err := e.t.FS.Stat(a.Path)
	if want == "symlink" {
		fi, err = e.t.FS.Lstat(a.Path)
	}
	exists := err == nil
	if err != nil && !notExist(err) {
		return desc + " is readable", nil, fmt.Errorf("stat %s: %w", a.Path, err)
	}
	if a.Exists != nil && !*a.Exists {
		conds = append(conds, "should not exist")
		if exists {
			fails = append(fails, fmt.Sprintf("%s exists (%s, mode %04o)", a.Path, typeName(fi.Type), fi.Mode))
		}
		return desc + " " + strings.Join(conds, ", "), fails, nil
	}
	if t.Resource == "directory" && a.Empty != nil && *a.Empty && !exists {
		return desc + " should be empty or absent", nil, nil
	}
	if a.NoFileMatches != "" && !exists {
		return desc + " should contain no file matching /" + a.NoFileMatches + "/", nil, nil
	}
	conds = append(conds, "should exist")
	if !exists {
		return desc + " " + strings.Join(conds, ", "), []string{a.Path + " does not exist"}, nil
	}
	if want != "" {
		conds = append(conds, "be a "+want)
		if typeName(fi.Type) != want {
			fails = append(fails, fmt.Sprintf("%s is a %s", a.Path, typeName(fi.Type)))
		}
	}
	if a.Mode != "" {
		conds = append(conds, fmt.Sprintf("have mode %04o", a.mode))
		if fi.Mode != a.mode {
			fails = append(fails, fmt.Sprintf("mode is %04o", fi.Mode))
		}
	}
	if a.ModeMax != "" {
		conds = append(conds, fmt.Sprintf("not be more permissive than %04o", a.modeMax))
		if extra := fi.Mode &^ a.modeMax; extra != 0 {
			fails = append(fails, fmt.Sprintf("mode is %04o (extra bits %04o)", fi.Mode, extra))
		}
	}
	if a.Owner != "" {
		conds = append(conds, "be owned by "+a.Owner)
		if ok, got, err := e.idMatches(a.Owner, fi.UID, "/etc/passwd"); err != nil {
			return desc, nil, err
		} else if !ok {
			fails = append(fails, "owner is "+got)
		}
	}
	if a.Group != "" {
		conds = append(conds, "be grouped into "+a.Group)
		if ok, got, err := e.idMatches(a.Group, fi.GID, "/etc/group"); err != nil {
			return desc, nil, err
		} else if !ok {
			fails = append(fails, "group is "+got)
		}
	}
	if a.SizeMin != nil {
		conds = append(conds, fmt.Sprintf("have size >= %d", *a.SizeMin))
		if fi.Size < *a.SizeMin {
			fails = append(fails, fmt.Sprintf("size is %d", fi.Size))
		}
	}
	if a.SizeMax != nil {
		conds = append(conds, fmt.Sprintf("have size <= %d", *a.SizeMax))
		if fi.Size > *a.SizeMax {
			fails = append(fails, fmt.Sprintf("size is %d", fi.Size))
		}
	}
	if a.SHA256 != "" {
		conds = append(conds, "have sha256 "+a.SHA256)
		h, err := e.t.FS.SHA256(a.Path)
		if err != nil {
			return desc, nil, fmt.Errorf("hash %s: %w", a.Path, err)
		}
		if !strings.EqualFold(h, a.SHA256) {
			fails = append(fails, "sha256 is "+h)
		}
	}
	if t.Resource == "file" && (t.re != nil || t.notRe != nil) {
		data, err := e.t.FS.ReadFile(a.Path, MaxRead)
		if err != nil {
			return desc, nil, fmt.Errorf("read %s: %w", a.Path, err)
		}
		if t.re != nil {
			conds = append(conds, "have content matching /"+a.ContentMatches+"/")
			if !t.re.Match(data) {
				fails = append(fails, "content does not match /"+a.ContentMatches+"/")
			}
		}
		if t.notRe != nil {
			conds = append(conds, "have no content matching /"+a.ContentNotMatches+"/")
			if loc := t.notRe.FindIndex(data); loc != nil {
				line := bytes.Count(data[:loc[0]], []byte("\n")) + 1
				fails = append(fails, fmt.Sprintf("content matches /%s/ at line %d", a.ContentNotMatches, line))
			}
		}
	}
	if t.Resource == "directory" && fi.Type == 'd' {
		if a.Empty != nil {
			names, err := e.t.FS.ReadDir(a.Path)
			if err != nil {
				return desc, nil, fmt.Errorf("list %s: %w", a.Path, err)
			}
			if *a.Empty {
				conds = append(conds, "be empty")
				if len(names) > 0 {
					fails = append(fails, fmt.Sprintf("%s has %d entries: %s", a.Path, len(names), clip(names, 5)))
				}
			} else {
				conds = append(conds, "not be empty")
				if len(names) == 0 {
					fails = append(fails, a.Path+" is empty")
				}
			}
		}
		if t.notRe != nil {
			conds = append(conds, "contain no file matching /"+a.NoFileMatches+"/")
			hits, err := e.grepTree(a.Path, t)
			if err != nil {
				return desc, nil, err
			}
			if len(hits) > 0 {
				fails = append(fails, "files match: "+clip(hits, 10))
			}
		}
	}
	return desc + " " + strings.Join(conds, ", "), fails, nil
}

// grepTree finds regular files below dir whose content matches t.notRe
// (depth ≤ 8, at most 2000 files and 64 MiB read, files ≤ MaxRead).
func (e *evaluator) grepTree(dir string, t *Test) ([]string, error) {
	var hits []string
	n := 0
	var total int64
	var walk func(d string, depth int) error
	walk = func(d string, depth int) error {
		if depth > 8 {
			return nil
		}
		names, err := e.t.FS.ReadDir(d)
		if err != nil {
			return fmt.Errorf("list %s: %w", d, err)
		}
		for _, name := range names {
			p := path.Join(d, name)
			fi, err := e.t.FS.Lstat(p)
			if err != nil {
				continue
			}
			switch fi.Type {
			case 'd':
				if err := walk(p, depth+1); err != nil {
					return err
				}
			case 'f':
				if n++; n > 2000 {
					return fmt.Errorf("more than 2000 files below %s", dir)
				}
				if fi.Size > MaxRead {
					continue
				}
				if total += fi.Size; total > 64<<20 {
					return fmt.Errorf("more than 64 MiB of files below %s", dir)
				}
				data, err := e.t.FS.ReadFile(p, MaxRead)
				if err != nil {
					return fmt.Errorf("read %s: %w", p, err)
				}
				if t.notRe.Match(data) {
					hits = append(hits, inspect.Printable(p))
				}
			}
		}
		return nil
	}
	return hits, walk(dir, 0)
}

func clip(xs []string, n int) string {
	if len(xs) > n {
		return strings.Join(xs[:n], ", ") + fmt.Sprintf(" and %d more", len(xs)-n)
	}
	return strings.Join(xs, ", ")
}

// idMatches compares a numeric id with a name or number, resolving names
// through the container's passwd/group file.
func (e *evaluator) idMatches(want string, id uint32, db string) (bool, string, error) {
	got := strconv.FormatUint(uint64(id), 10)
	if n, err := strconv.ParseUint(want, 10, 32); err == nil {
		return uint32(n) == id, got, nil
	}
	entries, err := e.accounts(db)
	if err != nil && !notExist(err) {
		return false, got, err
	}
	for _, a := range entries {
		if a.id == id {
			got = a.name + " (" + got + ")"
		}
	}
	for _, a := range entries {
		if a.name == want {
			return a.id == id, got, nil
		}
	}
	return false, got, nil
}

type account struct {
	name     string
	id, gid  uint32
	home, sh string
	line     int
	hasGID   bool
}

// accounts parses /etc/passwd or /etc/group (cached per evaluation).
func (e *evaluator) accounts(file string) ([]account, error) {
	if v, ok := e.cache[file]; ok {
		if err, ok := v.(error); ok {
			return nil, err
		}
		return v.([]account), nil
	}
	data, err := e.readFile(file)
	if err != nil {
		e.cache[file] = err
		return nil, err
	}
	var out []account
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	ln := 0
	for sc.Scan() {
		ln++
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) < 3 {
			continue
		}
		id, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			continue
		}
		a := account{name: f[0], id: uint32(id), line: ln}
		if file == "/etc/passwd" && len(f) >= 7 {
			g, _ := strconv.ParseUint(f[3], 10, 32)
			a.gid, a.hasGID, a.home, a.sh = uint32(g), true, f[5], f[6]
		}
		out = append(out, a)
	}
	e.cache[file] = out
	return out, nil
}

func (e *evaluator) readFile(p string) ([]byte, error) {
	if e.t.FS == nil {
		return nil, errors.New("no filesystem access for this target")
	}
	return e.t.FS.ReadFile(p, MaxRead)
}

func (e *evaluator) checkPasswd(t *Test) (string, []string, error) {
	a := t.Passwd
	desc := "passwd user " + a.User
	if a.OnlyRootUID0 {
		desc = "passwd: only root has uid 0"
	}
	users, err := e.accounts("/etc/passwd")
	if err != nil {
		if notExist(err) && a.Exists != nil && !*a.Exists {
			return desc + " should not exist", nil, nil
		}
		return desc, nil, fmt.Errorf("read /etc/passwd: %w", err)
	}
	var fails []string
	if a.OnlyRootUID0 {
		for _, u := range users {
			if u.id == 0 && u.name != "root" {
				fails = append(fails, fmt.Sprintf("/etc/passwd line %d: %s has uid 0", u.line, u.name))
			}
		}
		if a.User == "" {
			return desc, fails, nil
		}
	}
	var u *account
	for i := range users {
		if users[i].name == a.User {
			u = &users[i]
			break
		}
	}
	if a.Exists != nil && !*a.Exists {
		if u != nil {
			fails = append(fails, fmt.Sprintf("/etc/passwd line %d defines %s", u.line, a.User))
		}
		return desc + " should not exist", fails, nil
	}
	conds := []string{"should exist"}
	if u == nil {
		return desc + " should exist", append(fails, "no user "+a.User+" in /etc/passwd"), nil
	}
	if a.UID != nil {
		conds = append(conds, fmt.Sprintf("have uid %d", *a.UID))
		if int64(u.id) != *a.UID {
			fails = append(fails, fmt.Sprintf("uid is %d", u.id))
		}
	}
	if a.GID != nil {
		conds = append(conds, fmt.Sprintf("have gid %d", *a.GID))
		if int64(u.gid) != *a.GID {
			fails = append(fails, fmt.Sprintf("gid is %d", u.gid))
		}
	}
	if a.Home != "" {
		conds = append(conds, "have home "+a.Home)
		if u.home != a.Home {
			fails = append(fails, "home is "+u.home)
		}
	}
	if t.re != nil {
		conds = append(conds, "have a login shell matching /"+a.ShellMatches+"/")
		if !t.re.MatchString(u.sh) {
			fails = append(fails, "login shell is "+u.sh)
		}
	}
	if t.notRe != nil {
		conds = append(conds, "have a login shell not matching /"+a.ShellNotMatches+"/")
		if t.notRe.MatchString(u.sh) {
			fails = append(fails, "login shell is "+u.sh)
		}
	}
	return desc + " " + strings.Join(conds, ", "), fails, nil
}

func (e *evaluator) checkGroup(t *Test) (string, []string, error) {
	a := t.Group
	desc := "group " + a.Name
	groups, err := e.accounts("/etc/group")
	if err != nil {
		if notExist(err) && a.Exists != nil && !*a.Exists {
			return desc + " should not exist", nil, nil
		}
		return desc, nil, fmt.Errorf("read /etc/group: %w", err)
	}
	var g *account
	for i := range groups {
		if groups[i].name == a.Name {
			g = &groups[i]
			break
		}
	}
	if a.Exists != nil && !*a.Exists {
		if g != nil {
			return desc + " should not exist", []string{fmt.Sprintf("/etc/group line %d defines %s", g.line, a.Name)}, nil
		}
		return desc + " should not exist", nil, nil
	}
	if g == nil {
		return desc + " should exist", []string{"no group " + a.Name + " in /etc/group"}, nil
	}
	if a.GID != nil {
		if int64(g.id) != *a.GID {
			return fmt.Sprintf("%s should exist, have gid %d", desc, *a.GID), []string{fmt.Sprintf("gid is %d", g.id)}, nil
		}
		return fmt.Sprintf("%s should exist, have gid %d", desc, *a.GID), nil, nil
	}
	return desc + " should exist", nil, nil
}

func (e *evaluator) osRelease() (map[string]string, error) {
	if v, ok := e.cache["os-release"]; ok {
		if err, ok := v.(error); ok {
			return nil, err
		}
		return v.(map[string]string), nil
	}
	var m map[string]string
	data, err := e.readFile("/etc/os-release")
	if notExist(err) {
		data, err = e.readFile("/usr/lib/os-release")
	}
	if err != nil {
		e.cache["os-release"] = err
		return nil, err
	}
	m = pkgdb.ParseOSRelease(data)
	e.cache["os-release"] = m
	return m, nil
}

func (e *evaluator) checkOS(t *Test) (string, []string, error) {
	a := t.OS
	desc := "os_release " + a.Field
	m, err := e.osRelease()
	if err != nil && !notExist(err) {
		return desc, nil, fmt.Errorf("read os-release: %w", err)
	}
	v, ok := m[a.Field]
	return valueChecks(desc, v, ok, a.Exists, a.Equals, a.Matches, t)
}

// valueChecks applies exists/equals/matches to a looked-up value.
func valueChecks(desc, v string, ok bool, exists *bool, equals *string, matches string, t *Test) (string, []string, error) {
	if exists != nil && !*exists {
		if ok {
			return desc + " should not be set", []string{fmt.Sprintf("it is set to %q", v)}, nil
		}
		return desc + " should not be set", nil, nil
	}
	var conds []string
	var fails []string
	conds = append(conds, "should be set")
	if !ok {
		return desc + " should be set", []string{"it is not set"}, nil
	}
	if equals != nil {
		conds = append(conds, fmt.Sprintf("equal %q", *equals))
		if v != *equals {
			fails = append(fails, fmt.Sprintf("it is %q", v))
		}
	}
	if t.re != nil {
		conds = append(conds, "match /"+matches+"/")
		if !t.re.MatchString(v) {
			fails = append(fails, fmt.Sprintf("it is %q", v))
		}
	}
	return desc + " " + strings.Join(conds, ", "), fails, nil
}

func (e *evaluator) checkConfig(t *Test) (string, []string, error) {
	a := t.Config
	desc := fmt.Sprintf("parse_config %s", a.Path)
	key := a.Key
	if a.Section != "" {
		key = "[" + a.Section + "] " + key
	}
	desc += " " + key
	data, err := e.readFile(a.Path)
	if err != nil {
		if notExist(err) && a.Absent {
			return desc + " should be absent", nil, nil
		}
		return desc, nil, fmt.Errorf("read %s: %w", a.Path, err)
	}
	v, ok := parseConfig(data, a.Separator, a.CommentChars, a.Section, a.Key)
	var ex *bool
	if a.Absent {
		f := false
		ex = &f
	}
	return valueChecks(desc, v, ok, ex, a.Equals, a.Matches, t)
}

// parseConfig finds key in a key/value file (last assignment wins; INI
// sections when section is set).
func parseConfig(data []byte, sep, comments, section, key string) (string, bool) {
	cur := ""
	var val string
	found := false
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.ContainsAny(line[:1], comments) {
			continue
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			cur = strings.TrimSpace(line[1 : len(line)-1])
			continue
		}
		if cur != section {
			continue
		}
		var k, v string
		if strings.TrimSpace(sep) == "" {
			f := strings.Fields(line)
			k = f[0]
			v = strings.TrimSpace(strings.TrimPrefix(line, k))
		} else {
			var ok bool
			k, v, ok = strings.Cut(line, sep)
			if !ok {
				continue
			}
		}
		if strings.TrimSpace(k) == key {
			val, found = strings.TrimSpace(v), true
		}
	}
	return val, found
}

func (e *evaluator) checkDoc(t *Test) (string, []string, error) {
	a := t.Doc
	desc := fmt.Sprintf("%s %s %s", t.Resource, a.Path, a.Query)
	data, err := e.readFile(a.Path)
	if err != nil {
		return desc, nil, fmt.Errorf("read %s: %w", a.Path, err)
	}
	var doc any
	if t.Resource == "json" {
		err = json.Unmarshal(data, &doc)
	} else {
		err = yaml.Unmarshal(data, &doc)
	}
	if err != nil {
		return desc, nil, fmt.Errorf("parse %s as %s: %w", a.Path, t.Resource, err)
	}
	v, ok := query(doc, a.Query)
	s := ""
	if ok {
		switch x := v.(type) {
		case string:
			s = x
		case nil:
			s = "null"
		case map[string]any, []any:
			b, _ := json.Marshal(x)
			s = string(b)
		default:
			s = fmt.Sprint(x)
		}
	}
	return valueChecks(desc, s, ok, a.Exists, a.Equals, a.Matches, t)
}

// query follows a dotted path through maps and lists.
func query(doc any, q string) (any, bool) {
	cur := doc
	for _, part := range strings.Split(q, ".") {
		switch x := cur.(type) {
		case map[string]any:
			v, ok := x[part]
			if !ok {
				return nil, false
			}
			cur = v
		case []any:
			i, err := strconv.Atoi(part)
			if err != nil || i < 0 || i >= len(x) {
				return nil, false
			}
			cur = x[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

func (e *evaluator) checkPackage(t *Test) (string, []string, error) {
	a := t.Package
	desc := "package " + a.Name
	if a.Ecosystem != "" {
		desc += " (" + a.Ecosystem + ")"
	}
	if e.t.Report == nil {
		return desc, nil, errors.New("no package inventory for this target")
	}
	var found []pkgdb.Package
	for _, p := range e.t.Report.Packages {
		if p.Name == a.Name && (a.Ecosystem == "" || p.Ecosystem == a.Ecosystem) {
			found = append(found, p)
		}
	}
	if a.Installed != nil && !*a.Installed {
		if len(found) > 0 {
			return desc + " should not be installed", []string{fmt.Sprintf("installed: %s %s at %s", found[0].Name, found[0].Version, found[0].Path)}, nil
		}
		return desc + " should not be installed", nil, nil
	}
	if len(found) == 0 {
		return desc + " should be installed", []string{"not installed"}, nil
	}
	if a.op == "" {
		return desc + " should be installed", nil, nil
	}
	d := desc + " should be installed, version " + a.op + " " + a.ver
	for _, p := range found {
		if cmpOK(compareVersions(p.Version, a.ver), a.op) {
			return d, nil, nil
		}
	}
	var vs []string
	for _, p := range found {
		vs = append(vs, p.Version)
	}
	return d, []string{"installed version " + strings.Join(vs, ", ")}, nil
}

func cmpOK(c int, op string) bool {
	switch op {
	case "=":
		return c == 0
	case "!=":
		return c != 0
	case "<":
		return c < 0
	case "<=":
		return c <= 0
	case ">":
		return c > 0
	case ">=":
		return c >= 0
	}
	return false
}

// compareVersions compares dotted versions: numeric runs numerically,
// other runs as strings, an epoch "N:" first (Debian-style, simplified; "~"
// sorts before anything).
func compareVersions(a, b string) int {
	ea, a2 := epoch(a)
	eb, b2 := epoch(b)
	if ea != eb {
		if ea < eb {
			return -1
		}
		return 1
	}
	a, b = strings.TrimPrefix(a2, "v"), strings.TrimPrefix(b2, "v")
	for a != "" || b != "" {
		if strings.HasPrefix(a, "~") || strings.HasPrefix(b, "~") {
			if !strings.HasPrefix(b, "~") {
				return -1
			}
			if !strings.HasPrefix(a, "~") {
				return 1
			}
			a, b = a[1:], b[1:]
			continue
		}
		na, ra := splitRun(a, isDigit)
		nb, rb := splitRun(b, isDigit)
		if na != "" || nb != "" {
			ia, _ := strconv.ParseUint(strings.TrimLeft(na, "0")+"0", 10, 64)
			ib, _ := strconv.ParseUint(strings.TrimLeft(nb, "0")+"0", 10, 64)
			if ia != ib {
				if ia < ib {
					return -1
				}
				return 1
			}
			a, b = ra, rb
			continue
		}
		sa, ra := splitRun(a, func(c byte) bool { return !isDigit(c) && c != '~' })
		sb, rb := splitRun(b, func(c byte) bool { return !isDigit(c) && c != '~' })
		if sa != sb {
			if sa == "" {
				return -1
			}
			if sb == "" {
				return 1
			}
			if sa < sb {
				return -1
			}
			return 1
		}
		a, b = ra, rb
		if sa == "" && sb == "" && na == "" && nb == "" {
			break
		}
	}
	return 0
}

func epoch(v string) (uint64, string) {
	if i := strings.IndexByte(v, ':'); i > 0 {
		if n, err := strconv.ParseUint(v[:i], 10, 32); err == nil {
			return n, v[i+1:]
		}
	}
	return 0, v
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func splitRun(s string, f func(byte) bool) (string, string) {
	i := 0
	for i < len(s) && f(s[i]) {
		i++
	}
	return s[:i], s[i:]
}

func (e *evaluator) checkContainer(t *Test) (string, []string, error) {
	a := t.Cont
	f := e.t.Facts
	var conds, fails []string
	var unknown []string
	if a.UserNotRoot != nil {
		if *a.UserNotRoot {
			conds = append(conds, "user should not be root")
		} else {
			conds = append(conds, "user should be root")
		}
		if !f.UserKnown {
			unknown = append(unknown, "the user")
		} else if (f.UID != 0) != *a.UserNotRoot {
			fails = append(fails, fmt.Sprintf("runs as uid %d", f.UID))
		}
	}
	spec := func(name string, want *bool, got bool, failMsg string) {
		if want == nil {
			return
		}
		conds = append(conds, fmt.Sprintf("%s should be %v", name, *want))
		if !f.SpecKnown {
			unknown = append(unknown, name)
		} else if got != *want {
			fails = append(fails, fmt.Sprintf("%s is %v", name, got))
		}
		_ = failMsg
	}
	spec("read_only_rootfs", a.ReadOnlyRootfs, f.ReadOnlyRootfs, "")
	spec("privileged", a.Privileged, f.Privileged, "")
	spec("no_new_privileges", a.NoNewPrivileges, f.NoNewPrivileges, "")
	if len(a.CapsNotAllowed) > 0 {
		conds = append(conds, "capabilities should not include "+strings.Join(a.CapsNotAllowed, ", "))
		if !f.SpecKnown {
			unknown = append(unknown, "capabilities")
		} else {
			have := map[string]bool{}
			for _, c := range append(append([]string{}, f.CapEffective...), f.CapBounding...) {
				have[normCap(c)] = true
			}
			var bad []string
			for _, c := range a.CapsNotAllowed {
				if have[normCap(c)] {
					bad = append(bad, normCap(c))
				}
			}
			if len(bad) > 0 {
				fails = append(fails, "has "+strings.Join(bad, ", "))
			}
		}
	}
	desc := "container " + strings.Join(conds, ", ")
	if len(unknown) > 0 && len(fails) == 0 {
		return desc, nil, &skipError{"not known for this target (offline scan without a runtime spec): " + strings.Join(unknown, ", ")}
	}
	return desc, fails, nil
}

func normCap(c string) string {
	c = strings.ToUpper(strings.TrimSpace(c))
	if !strings.HasPrefix(c, "CAP_") {
		c = "CAP_" + c
	}
	return c
}

func parseKind(s string) (loupev1.Kind, error) {
	k, err := loupev1.ParseKind(s)
	if err != nil {
		return 0, fmt.Errorf("kind: %w", err)
	}
	return k, nil
}

func (e *evaluator) checkFindings(t *Test) (string, []string, error) {
	var kinds []loupev1.Kind
	var desc string
	switch t.Resource {
	case "no_shell":
		kinds, desc = []loupev1.Kind{loupev1.Kind_KIND_SHELL_PRESENT}, "no_shell: no shell (/bin/sh or any other) in the container"
	case "no_package_manager":
		kinds, desc = []loupev1.Kind{loupev1.Kind_KIND_PKG_MANAGER_PRESENT}, "no_package_manager: no package manager in the container"
	default:
		k, _ := parseKind(t.Findings.Kind)
		kinds, desc = []loupev1.Kind{k}, "no_findings: no "+k.ShortName()+" finding in the container's scan"
	}
	if e.t.Report == nil {
		return desc, nil, errors.New("no scan report for this target")
	}
	allowed := map[string]bool{}
	for _, p := range t.Findings.Allow {
		allowed[p] = true
	}
	var hits []string
	seen := map[string]bool{}
	for _, f := range e.t.Report.Findings {
		for _, k := range kinds {
			p := f.GetFile().GetPath()
			if f.GetKind() == k && !allowed[p] && !seen[p] {
				seen[p] = true
				s := inspect.Printable(p)
				if l := f.GetFile().GetLayer(); l != "" {
					s += " (layer " + short(l) + ")"
				}
				hits = append(hits, s)
			}
		}
	}
	sort.Strings(hits)
	if t.Resource == "no_shell" && e.t.FS != nil && !allowed["/bin/sh"] && !seen["/bin/sh"] {
		// The scanner reports the shell binary (e.g. /bin/dash); name the
		// path every exec-based tool tries first when it resolves.
		if fi, err := e.t.FS.Lstat("/bin/sh"); err == nil {
			s := "/bin/sh"
			if fi.Type == 'l' {
				s += " -> " + inspect.Printable(fi.Link)
			}
			hits = append([]string{s}, hits...)
		}
	}
	if len(hits) > 0 {
		return desc, []string{"found " + clip(hits, 10)}, nil
	}
	return desc, nil, nil
}

func short(s string) string {
	if len(s) > 19 && strings.HasPrefix(s, "sha256:") {
		return s[:19]
	}
	return s
}

// hashReader is shared by FS implementations.
func hashBytes(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
