// Package capture builds and verifies forensic evidence bundles of running
// containers: a .tar.gz holding the container's runtime changes (upper dir),
// selected files of its merged view, its processes as /proc on the host shows
// them, its runtime record and its finding timeline, with a manifest.json
// that lists every artifact's size and sha256 and records who asked, why,
// when, on which node and with which agent. Everything is read from the host
// side (safefs for container files, /proc for processes): nothing runs in
// the container and nothing is written into it.
//
// The bundle format is portable (Writer, Verify); collecting is Linux-only.
package capture

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"sort"
	"strings"
	"time"
)

// Format is the manifest's format identifier.
const Format = "loupe-capture/v1"

// Fixed artifact names at the bundle's top level.
const (
	ManifestName  = "manifest.json"
	ChecksumsName = "SHA256SUMS"
)

// Artifact kinds.
const (
	KindRecord    = "record"    // container.json: the container's runtime record
	KindProcesses = "processes" // processes.json
	KindIndex     = "index"     // files.json, merged.json: file metadata
	KindUpper     = "upper"     // upper/<path>: contents of an upper-dir file
	KindMerged    = "merged"    // merged/<path>: contents of a merged-view file
	KindTimeline  = "timeline"  // timeline.jsonl: findings from the collector
)

// Artifact is one file of the bundle.
type Artifact struct {
	Name   string `json:"name"`
	Kind   string `json:"kind"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Requester is who asked for the capture and why.
type Requester struct {
	Identity    string    `json:"identity"`
	Reason      string    `json:"reason"`
	RequestedAt time.Time `json:"requested_at"`
}

// ContainerSummary names the captured container.
type ContainerSummary struct {
	ID          string `json:"id"`
	Name        string `json:"name,omitempty"`
	Pod         string `json:"pod,omitempty"`
	Namespace   string `json:"namespace,omitempty"`
	PodUID      string `json:"pod_uid,omitempty"`
	Image       string `json:"image,omitempty"`
	ImageDigest string `json:"image_digest,omitempty"`
}

// Freeze records a --freeze capture's cgroup freeze.
type Freeze struct {
	Requested  bool      `json:"requested"`
	Cgroup     string    `json:"cgroup,omitempty"`
	FrozenAt   time.Time `json:"frozen_at,omitzero"`
	ThawedAt   time.Time `json:"thawed_at,omitzero"`
	DurationMS int64     `json:"duration_ms"`
	Error      string    `json:"error,omitempty"`
}

// Limits are the caps a capture ran with.
type Limits struct {
	MaxFileBytes  int64 `json:"max_file_bytes"`
	MaxTotalBytes int64 `json:"max_total_bytes"`
	MaxEntries    int   `json:"max_entries"`
	MaxProcesses  int   `json:"max_processes"`
}

// Counts summarise the bundle.
type Counts struct {
	UpperEntries     int   `json:"upper_entries"`
	MergedFiles      int   `json:"merged_files"`
	Processes        int   `json:"processes"`
	ProcessesGone    int   `json:"processes_gone"`
	Sockets          int   `json:"sockets"`
	TimelineFindings int   `json:"timeline_findings"`
	ContentBytes     int64 `json:"content_bytes"`
}

// Manifest is manifest.json.
type Manifest struct {
	Format       string           `json:"format"`
	CaptureID    string           `json:"capture_id"`
	Node         string           `json:"node"`
	AgentVersion string           `json:"agent_version"`
	Requester    Requester        `json:"requester"`
	Container    ContainerSummary `json:"container"`
	StartedAt    time.Time        `json:"started_at"`
	CompletedAt  time.Time        `json:"completed_at"`
	Options      Options          `json:"options"`
	Limits       Limits           `json:"limits"`
	Freeze       Freeze           `json:"freeze"`
	Counts       Counts           `json:"counts"`
	// Artifacts lists every file of the bundle except manifest.json itself,
	// SHA256SUMS last.
	Artifacts []Artifact `json:"artifacts"`
	// Warnings: capped contents, processes gone, unreadable entries.
	Warnings []string `json:"warnings,omitempty"`
}

// Options are what the request asked for.
type Options struct {
	Paths      []string `json:"paths,omitempty"`
	IncludeEnv bool     `json:"include_env"`
	Freeze     bool     `json:"freeze"`
}

// Writer writes a bundle: a gzip'd tar whose entries are regular files only.
type Writer struct {
	gz        *gzip.Writer
	tw        *tar.Writer
	artifacts []Artifact
	names     map[string]bool
	mtime     time.Time
}

// NewWriter starts a bundle on w.
func NewWriter(w io.Writer) *Writer {
	gz, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
	return &Writer{gz: gz, tw: tar.NewWriter(gz), names: map[string]bool{}, mtime: time.Now().UTC().Truncate(time.Second)}
}

// Add writes one artifact with the given contents.
func (w *Writer) Add(name, kind string, data []byte) error {
	_, err := w.add(name, kind, data)
	return err
}

// add writes one artifact and returns its sha256.
func (w *Writer) add(name, kind string, data []byte) (string, error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	if w.names[name] {
		return "", fmt.Errorf("bundle entry %q written twice", name)
	}
	w.names[name] = true
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: w.mtime, Format: tar.FormatPAX}
	if err := w.tw.WriteHeader(hdr); err != nil {
		return "", fmt.Errorf("write bundle entry %q: %w", name, err)
	}
	if _, err := w.tw.Write(data); err != nil {
		return "", fmt.Errorf("write bundle entry %q: %w", name, err)
	}
	sum := sha256.Sum256(data)
	a := Artifact{Name: name, Kind: kind, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
	w.artifacts = append(w.artifacts, a)
	return a.SHA256, nil
}

// AddJSON writes v as indented JSON.
func (w *Writer) AddJSON(name, kind string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", name, err)
	}
	return w.Add(name, kind, append(b, '\n'))
}

// Finish writes SHA256SUMS and manifest.json (m.Artifacts is filled in) and
// closes the archive; the underlying writer is not closed.
func (w *Writer) Finish(m *Manifest) error {
	if err := w.Add(ChecksumsName, "checksums", checksums(w.artifacts)); err != nil {
		return err
	}
	m.Format = Format
	m.Artifacts = w.artifacts
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode manifest: %w", err)
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: ManifestName, Mode: 0o644, Size: int64(len(b) + 1), ModTime: w.mtime, Format: tar.FormatPAX}
	if err := w.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	if _, err := w.tw.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	if err := w.tw.Close(); err != nil {
		return fmt.Errorf("close bundle tar: %w", err)
	}
	if err := w.gz.Close(); err != nil {
		return fmt.Errorf("close bundle gzip: %w", err)
	}
	return nil
}

// checksums renders artifacts in the format of `sha256sum -c`, escaping
// names with a backslash or newline the way GNU coreutils does.
func checksums(as []Artifact) []byte {
	var b strings.Builder
	for _, a := range as {
		name := a.Name
		if strings.ContainsAny(name, "\\\n\r") {
			name = strings.NewReplacer("\\", "\\\\", "\n", "\\n", "\r", "\\r").Replace(name)
			b.WriteByte('\\')
		}
		fmt.Fprintf(&b, "%s  %s\n", a.SHA256, name)
	}
	return []byte(b.String())
}

// checkName refuses names that would escape the extraction directory.
func checkName(name string) error {
	if name == "" || strings.HasPrefix(name, "/") || strings.ContainsRune(name, 0) || name == ManifestName {
		return fmt.Errorf("invalid bundle entry name %q", name)
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." || c == "." || c == "" {
			return fmt.Errorf("invalid bundle entry name %q", name)
		}
	}
	return nil
}

// Verification limits: a bundle larger than this is not read further.
const (
	MaxVerifyEntries  = 1 << 20
	MaxManifestBytes  = 256 << 20
	maxChecksumsBytes = 256 << 20
)

// ErrVerify wraps every integrity failure Verify reports.
var ErrVerify = errors.New("bundle verification failed")

// Result is what Verify found.
type Result struct {
	Manifest *Manifest
	// SHA256 of the whole bundle file as read.
	SHA256 string
	Size   int64
	// Entries counts tar entries checked.
	Entries int
}

// Verify reads a bundle and checks it: a well-formed gzip'd tar of regular
// files; every artifact listed in manifest.json present with its size and
// sha256; no entry the manifest does not list; SHA256SUMS matching the
// manifest. It returns the manifest even on failure, when it was read.
func Verify(r io.Reader) (*Result, error) {
	whole := sha256.New()
	cr := &countingReader{r: io.TeeReader(r, whole)}
	res := &Result{}
	gz, err := gzip.NewReader(cr)
	if err != nil {
		return res, fmt.Errorf("%w: not a gzip stream: %v", ErrVerify, err)
	}
	tr := tar.NewReader(gz)
	type seen struct {
		size int64
		sum  string
	}
	got := map[string]seen{}
	var manifestBytes, sums []byte
	var h hash.Hash = sha256.New()
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return res, fmt.Errorf("%w: reading tar: %v", ErrVerify, err)
		}
		if res.Entries++; res.Entries > MaxVerifyEntries {
			return res, fmt.Errorf("%w: more than %d entries", ErrVerify, MaxVerifyEntries)
		}
		if hdr.Typeflag != tar.TypeReg {
			return res, fmt.Errorf("%w: entry %q is not a regular file (type %q)", ErrVerify, hdr.Name, hdr.Typeflag)
		}
		if _, dup := got[hdr.Name]; dup || (hdr.Name == ManifestName && manifestBytes != nil) {
			return res, fmt.Errorf("%w: entry %q appears twice", ErrVerify, hdr.Name)
		}
		if hdr.Name == ManifestName {
			if manifestBytes, err = io.ReadAll(io.LimitReader(tr, MaxManifestBytes+1)); err != nil {
				return res, fmt.Errorf("%w: reading manifest: %v", ErrVerify, err)
			}
			if len(manifestBytes) > MaxManifestBytes {
				return res, fmt.Errorf("%w: manifest larger than %d bytes", ErrVerify, MaxManifestBytes)
			}
			continue
		}
		h.Reset()
		var src io.Reader = tr
		var keep *strings.Builder
		if hdr.Name == ChecksumsName {
			keep = &strings.Builder{}
			src = io.TeeReader(io.LimitReader(tr, maxChecksumsBytes), keep)
		}
		n, err := io.Copy(h, src)
		if err != nil {
			return res, fmt.Errorf("%w: reading entry %q: %v", ErrVerify, hdr.Name, err)
		}
		if keep != nil {
			sums = []byte(keep.String())
		}
		got[hdr.Name] = seen{n, hex.EncodeToString(h.Sum(nil))}
	}
	// Drain to the end of the gzip stream so its CRC and length are checked.
	if _, err := io.Copy(io.Discard, gz); err != nil {
		return res, fmt.Errorf("%w: gzip stream: %v", ErrVerify, err)
	}
	if err := gz.Close(); err != nil {
		return res, fmt.Errorf("%w: gzip stream: %v", ErrVerify, err)
	}
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return res, fmt.Errorf("%w: reading bundle: %v", ErrVerify, err)
	}
	res.SHA256, res.Size = hex.EncodeToString(whole.Sum(nil)), cr.n
	if manifestBytes == nil {
		return res, fmt.Errorf("%w: no %s", ErrVerify, ManifestName)
	}
	var m Manifest
	if err := json.Unmarshal(manifestBytes, &m); err != nil {
		return res, fmt.Errorf("%w: %s: %v", ErrVerify, ManifestName, err)
	}
	res.Manifest = &m
	if m.Format != Format {
		return res, fmt.Errorf("%w: manifest format %q, want %q", ErrVerify, m.Format, Format)
	}
	listed := map[string]bool{}
	var problems []string
	for _, a := range m.Artifacts {
		listed[a.Name] = true
		g, ok := got[a.Name]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("%s: listed in the manifest, missing from the bundle", a.Name))
		case g.size != a.Size:
			problems = append(problems, fmt.Sprintf("%s: size %d, manifest says %d", a.Name, g.size, a.Size))
		case g.sum != a.SHA256:
			problems = append(problems, fmt.Sprintf("%s: sha256 %s, manifest says %s", a.Name, g.sum, a.SHA256))
		}
	}
	for name := range got {
		if !listed[name] {
			problems = append(problems, fmt.Sprintf("%s: in the bundle, not in the manifest", name))
		}
	}
	if !listed[ChecksumsName] {
		problems = append(problems, ChecksumsName+": not in the manifest")
	} else if want := checksums(m.Artifacts[:len(m.Artifacts)-1]); string(want) != string(sums) || m.Artifacts[len(m.Artifacts)-1].Name != ChecksumsName {
		problems = append(problems, ChecksumsName+": does not match the manifest's artifact list")
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		if len(problems) > 20 {
			problems = append(problems[:20], fmt.Sprintf("… and %d more", len(problems)-20))
		}
		return res, fmt.Errorf("%w:\n  %s", ErrVerify, strings.Join(problems, "\n  "))
	}
	return res, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
