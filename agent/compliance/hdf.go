package compliance

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/internal/version"
)

// HDF (InSpec exec-json) document types: what Heimdall and the SAF CLI read.
// The schema is MITRE's exec-json.schema.json (heimdall2 inspecjs).
type hdfDoc struct {
	Platform   hdfPlatform  `json:"platform"`
	Profiles   []hdfProfile `json:"profiles"`
	Statistics hdfStats     `json:"statistics"`
	Version    string       `json:"version"`
}

type hdfPlatform struct {
	Name     string `json:"name"`
	Release  string `json:"release"`
	TargetID string `json:"target_id,omitempty"`
}

type hdfProfile struct {
	Name          string       `json:"name"`
	Version       string       `json:"version,omitempty"`
	Title         string       `json:"title,omitempty"`
	Maintainer    string       `json:"maintainer,omitempty"`
	Summary       string       `json:"summary,omitempty"`
	License       string       `json:"license,omitempty"`
	Copyright     string       `json:"copyright,omitempty"`
	SHA256        string       `json:"sha256"`
	Status        string       `json:"status"`
	StatusMessage string       `json:"status_message,omitempty"`
	Supports      []any        `json:"supports"`
	Attributes    []any        `json:"attributes"`
	Groups        []hdfGroup   `json:"groups"`
	Controls      []hdfControl `json:"controls"`
	// Target is Loupe's description of what the run was against.
	Target *hdfTarget `json:"loupe_target,omitempty"`
}

type hdfTarget struct {
	Node        string `json:"node,omitempty"`
	Namespace   string `json:"namespace,omitempty"`
	Pod         string `json:"pod,omitempty"`
	Container   string `json:"container,omitempty"`
	ContainerID string `json:"container_id,omitempty"`
	Image       string `json:"image,omitempty"`
	ImageDigest string `json:"image_digest,omitempty"`
}

type hdfGroup struct {
	ID       string   `json:"id"`
	Title    string   `json:"title,omitempty"`
	Controls []string `json:"controls"`
}

type hdfControl struct {
	ID             string           `json:"id"`
	Title          string           `json:"title,omitempty"`
	Desc           string           `json:"desc,omitempty"`
	Descriptions   []hdfDescription `json:"descriptions,omitempty"`
	Impact         float64          `json:"impact"`
	Refs           []Ref            `json:"refs"`
	Tags           map[string]any   `json:"tags"`
	Code           string           `json:"code,omitempty"`
	SourceLocation hdfSource        `json:"source_location"`
	Results        []hdfResult      `json:"results"`
}

type hdfDescription struct {
	Label string `json:"label"`
	Data  string `json:"data"`
}

type hdfSource struct {
	Ref  string `json:"ref,omitempty"`
	Line int    `json:"line,omitempty"`
}

type hdfResult struct {
	Status      Status  `json:"status"`
	CodeDesc    string  `json:"code_desc"`
	RunTime     float64 `json:"run_time"`
	StartTime   string  `json:"start_time"`
	Resource    string  `json:"resource,omitempty"`
	Message     string  `json:"message,omitempty"`
	SkipMessage string  `json:"skip_message,omitempty"`
}

type hdfBlock struct {
	Total int `json:"total"`
}

type hdfStats struct {
	Duration float64 `json:"duration"`
	Controls struct {
		Passed  hdfBlock `json:"passed"`
		Failed  hdfBlock `json:"failed"`
		Skipped hdfBlock `json:"skipped"`
	} `json:"controls"`
}

// Severity maps an impact to Heimdall's severity bucket (inspecjs
// compat_wrappers): < 0.1 none, < 0.4 low, < 0.7 medium, < 0.9 high, else critical.
func Severity(impact float64) string {
	switch {
	case impact < 0.1:
		return "none"
	case impact < 0.4:
		return "low"
	case impact < 0.7:
		return "medium"
	case impact < 0.9:
		return "high"
	}
	return "critical"
}

// WriteHDF writes runs as one HDF (exec-json) document: one profile entry
// per run (profile × container target). platform is the image when every
// run is against the same image.
func WriteHDF(w io.Writer, runs []*Run) error {
	doc := hdfDoc{Version: "loupe " + version.Version, Profiles: []hdfProfile{}}
	images := map[string]bool{}
	var ids []string
	for _, r := range runs {
		images[r.Target] = true
		if r.TargetID != "" {
			ids = append(ids, r.TargetID)
		}
		doc.Profiles = append(doc.Profiles, r.hdf())
		doc.Statistics.Duration += r.Duration.Seconds()
		for _, c := range r.Controls {
			switch c.Status() {
			case Passed:
				doc.Statistics.Controls.Passed.Total++
			case Skipped:
				doc.Statistics.Controls.Skipped.Total++
			default: // failed and error: InSpec counts errors among failures
				doc.Statistics.Controls.Failed.Total++
			}
		}
	}
	switch {
	case len(runs) == 0:
		doc.Platform = hdfPlatform{Name: "loupe", Release: version.Version}
	case len(images) == 1:
		doc.Platform = hdfPlatform{Name: runs[0].Target, Release: runs[0].Release}
	default:
		doc.Platform = hdfPlatform{Name: fmt.Sprintf("loupe: %d images", len(images)), Release: version.Version}
	}
	if len(ids) > 0 {
		doc.Platform.TargetID = clip(ids, 20)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(&doc); err != nil {
		return fmt.Errorf("write HDF: %w", err)
	}
	return nil
}

func (r *Run) hdf() hdfProfile {
	p := r.Profile
	title := p.Title
	if title == "" {
		title = p.Name
	}
	if r.Target != "" {
		title += " — " + r.Target
	}
	hp := hdfProfile{Name: p.Name, Version: p.Version, Title: title, Maintainer: p.Maintainer, Summary: p.Summary,
		License: p.License, Copyright: p.Copyright, SHA256: p.SHA256, Status: "loaded",
		Supports: []any{}, Attributes: []any{}, Groups: []hdfGroup{}, Controls: []hdfControl{}}
	if c := r.Container; c != nil || r.Node != "" {
		hp.Target = &hdfTarget{Node: r.Node, Namespace: c.GetNamespace(), Pod: c.GetPod(), Container: c.GetName(),
			ContainerID: c.GetId(), Image: c.GetImage(), ImageDigest: c.GetImageDigest()}
	}
	group := hdfGroup{ID: p.Source, Title: p.Title, Controls: []string{}}
	for _, cr := range r.Controls {
		c := cr.Control
		tags := map[string]any{}
		for k, v := range c.Tags {
			tags[k] = v
		}
		if tags["nist"] == nil {
			tags["nist"] = []string{}
		}
		if tags["severity"] == nil {
			tags["severity"] = Severity(c.Impact)
		}
		hc := hdfControl{ID: c.ID, Title: c.Title, Desc: c.Desc, Impact: c.Impact, Refs: c.Refs, Tags: tags,
			SourceLocation: hdfSource{Ref: p.Source, Line: c.Line}, Results: []hdfResult{}}
		if hc.Refs == nil {
			hc.Refs = []Ref{}
		}
		if c.Desc != "" {
			hc.Descriptions = []hdfDescription{{Label: "default", Data: c.Desc}}
		}
		for _, res := range cr.Results {
			hr := hdfResult{Status: res.Status, CodeDesc: res.CodeDesc, RunTime: res.RunTime.Seconds(),
				StartTime: res.StartTime.UTC().Format(time.RFC3339Nano), Resource: res.Resource, Message: res.Message}
			if res.Status == Skipped {
				hr.SkipMessage, hr.Message = res.Message, ""
			}
			hc.Results = append(hc.Results, hr)
		}
		hp.Controls = append(hp.Controls, hc)
		group.Controls = append(group.Controls, c.ID)
	}
	hp.Groups = append(hp.Groups, group)
	return hp
}

// Findings turns a run into CONTROL_RESULT findings, one per control (the
// control's rolled-up status; code_desc and message of its results joined).
func (r *Run) Findings() []*loupev1.Finding {
	var out []*loupev1.Finding
	for _, cr := range r.Controls {
		c := cr.Control
		st := cr.Status()
		var descs, msgs []string
		for _, res := range cr.Results {
			descs = append(descs, res.CodeDesc)
			if res.Message != "" && (res.Status != Passed) {
				msgs = append(msgs, res.Message)
			}
		}
		sev := loupev1.Severity_SEVERITY_INFO
		if st == Failed || st == Error {
			sev = severityOf(c.Impact)
		}
		who := r.Target
		if ct := r.Container; ct.GetName() != "" {
			who = ct.GetNamespace() + "/" + ct.GetPod() + "/" + ct.GetName()
		}
		summary := fmt.Sprintf("%s %s %s on %s", r.Profile.Name, c.ID, st, who)
		if len(msgs) > 0 && st != Passed {
			summary += ": " + strings.Join(msgs, "; ")
		}
		if len(summary) > 400 {
			summary = summary[:400] + "…"
		}
		id, err := uuid.NewV7()
		if err != nil {
			id = uuid.New()
		}
		out = append(out, &loupev1.Finding{
			Id: id.String(), Time: timestamppb.New(r.Start.Add(r.Duration)), AgentVersion: version.Version,
			Kind: loupev1.Kind_KIND_CONTROL_RESULT, Severity: sev, Rule: "compliance." + r.Profile.Name + "." + c.ID,
			Summary: summary, Container: r.Container, Node: r.Node,
			Control: &loupev1.Control{Profile: r.Profile.Name, ProfileVersion: r.Profile.Version, Id: c.ID, Title: c.Title,
				Status: string(st), Impact: c.Impact, CodeDesc: strings.Join(descs, "; "), Message: strings.Join(msgs, "; "),
				Nist: c.NIST(), Desc: c.Desc},
			Details: map[string]string{"profile": r.Profile.Name, "profile_sha256": r.Profile.SHA256},
		})
	}
	return out
}

func severityOf(impact float64) loupev1.Severity {
	switch Severity(impact) {
	case "critical":
		return loupev1.Severity_SEVERITY_CRITICAL
	case "high":
		return loupev1.Severity_SEVERITY_HIGH
	case "medium":
		return loupev1.Severity_SEVERITY_MEDIUM
	case "low":
		return loupev1.Severity_SEVERITY_LOW
	}
	return loupev1.Severity_SEVERITY_INFO
}

// RunsFromFindings rebuilds runs from stored CONTROL_RESULT findings (as
// `loupe report hdf` gets them from the collector): one run per container ×
// profile × version, keeping the newest result of each control. Metadata of
// shipped profiles (title, sha256, refs, tags, source lines) is filled in
// when name and version match.
func RunsFromFindings(fs []*loupev1.Finding) []*Run {
	type key struct{ target, node, profile, version string }
	runs := map[key]*Run{}
	latest := map[key]map[string]*loupev1.Finding{}
	var order []key
	for _, f := range fs {
		c := f.GetControl()
		if f.GetKind() != loupev1.Kind_KIND_CONTROL_RESULT || c == nil || c.GetId() == "" {
			continue
		}
		target := f.GetContainer().GetId()
		if target == "" {
			target = f.GetContainer().GetImage()
		}
		k := key{target, f.GetNode(), c.GetProfile(), c.GetProfileVersion()}
		if _, ok := runs[k]; !ok {
			order = append(order, k)
			runs[k] = &Run{Target: f.GetContainer().GetImage(), TargetID: f.GetContainer().GetId(), Container: f.GetContainer(),
				Node: f.GetNode(), Release: "unknown"}
			latest[k] = map[string]*loupev1.Finding{}
		}
		if prev := latest[k][c.GetId()]; prev == nil || f.GetTime().AsTime().After(prev.GetTime().AsTime()) {
			latest[k][c.GetId()] = f
		}
	}
	var out []*Run
	for _, k := range order {
		r := runs[k]
		var known *Profile
		if p, err := Shipped(k.profile); err == nil && p.Version == k.version {
			known = p
		}
		prof := &Profile{Name: k.profile, Version: k.version, Source: "collector"}
		if known != nil {
			cp := *known
			prof = &cp
		} else {
			s := sha256.Sum256([]byte(k.profile + "@" + k.version))
			prof.SHA256 = hex.EncodeToString(s[:])
		}
		r.Profile = prof
		ids := make([]string, 0, len(latest[k]))
		for id := range latest[k] {
			ids = append(ids, id)
		}
		order := map[string]int{}
		if known != nil {
			for i, c := range known.Controls {
				order[c.ID] = i + 1
			}
		}
		sort.Slice(ids, func(i, j int) bool {
			oi, oj := order[ids[i]], order[ids[j]]
			if oi != oj {
				return oi < oj
			}
			return ids[i] < ids[j]
		})
		var earliest time.Time
		for _, id := range ids {
			f := latest[k][id]
			c := f.GetControl()
			ctl := &Control{ID: c.GetId(), Title: c.GetTitle(), Desc: c.GetDesc(), Impact: c.GetImpact(),
				Tags: map[string]any{"nist": stringsAny(c.GetNist())}}
			if known != nil {
				for _, kc := range known.Controls {
					if kc.ID == c.GetId() {
						ctl = kc
					}
				}
			}
			t := f.GetTime().AsTime()
			if earliest.IsZero() || t.Before(earliest) {
				earliest = t
			}
			res := Result{Status: Status(c.GetStatus()), CodeDesc: c.GetCodeDesc(), Message: c.GetMessage(), StartTime: t}
			switch res.Status {
			case Passed, Failed, Skipped, Error:
			default:
				res.Status, res.Message = Error, fmt.Sprintf("unknown status %q in stored finding", c.GetStatus())
			}
			if res.CodeDesc == "" {
				res.CodeDesc = ctl.ID
			}
			r.Controls = append(r.Controls, &ControlResult{Control: ctl, Results: []Result{res}})
		}
		r.Start = earliest
		out = append(out, r)
	}
	return out
}

func stringsAny(xs []string) []any {
	out := make([]any, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}
