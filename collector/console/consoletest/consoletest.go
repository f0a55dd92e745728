// Package consoletest builds the small fleet the console's tests look at —
// nodes, a shell with its ancestors and what it ran, failed attempts on a
// distroless pod, drift, inventory, compliance results, findings whose
// argv and names are hostile HTML — and sends it to a collector through the
// real Ingest API, as agents do.
package consoletest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/store/storetest"
)

// Hostile strings planted in findings: rendered anywhere but as text, they
// would run script in the analyst's browser.
const (
	XSSScript = `<script>alert("xss-script")</script>`
	XSSImg    = `"><img src=x onerror=alert("xss-img")>`
	XSSPod    = `<svg onload=alert("xss-pod")>`
)

// Fleet is the seeded data, by node.
type Fleet struct {
	Now      time.Time
	ByNode   map[string][]*loupev1.Finding
	Versions map[string]string // node → agent version
	// Ids of findings the tests look for.
	ShellID, ChildID, XSSID, FailedIDs, DriftID string
	// The distroless pod: its shell attempts (EXEC_FAILED and
	// RUNTIME_EXEC_FAILED) are the rows of a search by kind and pod.
	DistrolessNS, DistrolessPod string
	ShellChain                  []string // comm of the shell's ancestors, root first, then the shell
	Image, ImageDigest          string
	Packages                    int
}

func ts(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

// NewFleet builds the fleet with times relative to now.
func NewFleet(now time.Time) *Fleet {
	now = now.UTC()
	fl := &Fleet{Now: now, ByNode: map[string][]*loupev1.Finding{},
		Versions:     map[string]string{"node-a": "v1.4.0", "node-b": "v1.4.0", "node-c": "v1.3.2"},
		DistrolessNS: "payments", DistrolessPod: "api-7d9f-x2x", Image: "registry.local/payments/api:1.8",
		ImageDigest: "sha256:5f1c2e9b0d3a4c7e8f6a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6"}
	api := &loupev1.ContainerRef{Id: "c0ffee11aa22bb33cc44dd55ee66ff7788990011aabbccddeeff001122334455", Name: "api",
		Pod: fl.DistrolessPod, Namespace: fl.DistrolessNS, PodUid: "7c0a1d2e-1111-2222-3333-444455556666",
		Image: fl.Image, ImageDigest: fl.ImageDigest, RuntimeNamespace: "k8s.io"}
	web := &loupev1.ContainerRef{Id: "deadbeef00112233445566778899aabbccddeeff00112233445566778899aabb", Name: "web",
		Pod: "web-5c6d-q9q", Namespace: "shop", Image: "registry.local/shop/web:2.1",
		ImageDigest: "sha256:aa11bb22cc33dd44ee55ff6600112233445566778899aabbccddeeff00112233", RuntimeNamespace: "k8s.io"}
	add := func(node string, f *loupev1.Finding) *loupev1.Finding {
		f.Id = storetest.NewID()
		f.Node = node
		f.AgentVersion = fl.Versions[node]
		if f.Rule == "" {
			f.Rule = "loupe/" + f.GetKind().ShortName()
		}
		fl.ByNode[node] = append(fl.ByNode[node], f)
		return f
	}
	// node-a: the distroless pod. Inventory and compliance 5 h ago, then
	// shell attempts 2 h ago (a quiet stretch between).
	t0 := now.Add(-5 * time.Hour)
	add("node-a", &loupev1.Finding{Time: ts(t0), Kind: loupev1.Kind_KIND_IMAGE_PROFILE, Severity: loupev1.Severity_SEVERITY_INFO,
		Container: api, Summary: "image profile: distroless (static), no shell, no package manager",
		Details: map[string]string{"profile": "distroless-static", "os_id": "debian", "os_version": "12"}})
	for i, p := range []struct{ name, version string }{{"base-files", "12.4+deb12u5"}, {"netbase", "6.4"}, {"tzdata", "2024a-0+deb12u1"}, {"ca-certificates", "20230311"}} {
		add("node-a", &loupev1.Finding{Time: ts(t0.Add(time.Duration(i) * time.Millisecond)), Kind: loupev1.Kind_KIND_PACKAGE,
			Severity: loupev1.Severity_SEVERITY_INFO, Container: api, Summary: "package " + p.name,
			Package: &loupev1.Package{Name: p.name, Version: p.version, Ecosystem: "deb", Purl: "pkg:deb/debian/" + p.name + "@" + p.version,
				Path: "/var/lib/dpkg/status.d/" + p.name}})
		fl.Packages++
	}
	for i, c := range []struct{ id, title, status string }{{"dl-1.1", "No shell in the image", "passed"}, {"dl-1.2", "No package manager", "passed"},
		{"dl-2.1", "Runs as a non-root user", "failed"}} {
		add("node-a", &loupev1.Finding{Time: ts(t0.Add(time.Duration(10+i) * time.Millisecond)), Kind: loupev1.Kind_KIND_CONTROL_RESULT,
			Severity: loupev1.Severity_SEVERITY_LOW, Container: api, Summary: "control " + c.id + " " + c.status,
			Control: &loupev1.Control{Profile: "distroless-baseline", ProfileVersion: "1.0.0", Id: c.id, Title: c.title, Status: c.status,
				Impact: 0.5, CodeDesc: c.title}})
	}
	t1 := now.Add(-2 * time.Hour)
	f := add("node-a", &loupev1.Finding{Time: ts(t1), Kind: loupev1.Kind_KIND_RUNTIME_EXEC_FAILED, Severity: loupev1.Severity_SEVERITY_HIGH,
		Container: api, Summary: "runtime exec of /bin/sh failed: no such file",
		Process: &loupev1.Process{Filename: "/bin/sh", Argv: []string{"/bin/sh", "-c", "id"}, Errno: 2, ExecId: "exec-1"},
		Details: map[string]string{"runtime_error": `exec: "/bin/sh": stat /bin/sh: no such file or directory`}})
	fl.FailedIDs = f.Id
	f = add("node-a", &loupev1.Finding{Time: ts(t1.Add(time.Second)), Kind: loupev1.Kind_KIND_EXEC_FAILED, Severity: loupev1.Severity_SEVERITY_HIGH,
		Container: api, Summary: "execve(/bin/sh) failed with ENOENT",
		Process: &loupev1.Process{Pid: 4242, Ppid: 4200, Comm: "api", Filename: "/bin/sh", Argv: []string{"/bin/sh", "-c", XSSScript}, Errno: 2,
			Ancestors: []*loupev1.Ancestor{{Pid: 4200, Comm: "api", Filename: "/app/api"}, {Pid: 1, Comm: "containerd-shim", Filename: "/usr/bin/containerd-shim-runc-v2"}}}})
	fl.FailedIDs += "," + f.Id
	fl.XSSID = f.Id
	// A control that changed: dl-2.1 passes after a redeploy.
	add("node-a", &loupev1.Finding{Time: ts(t1.Add(2 * time.Second)), Kind: loupev1.Kind_KIND_CONTROL_RESULT,
		Severity: loupev1.Severity_SEVERITY_INFO, Container: api, Summary: "control dl-2.1 passed",
		Control: &loupev1.Control{Profile: "distroless-baseline", ProfileVersion: "1.0.0", Id: "dl-2.1", Title: "Runs as a non-root user",
			Status: "passed", Impact: 0.5}})

	// node-b: a shell in the debian-like web pod, what it ran, and a drift.
	t2 := now.Add(-40 * time.Minute)
	shell := add("node-b", &loupev1.Finding{Time: ts(t2), Kind: loupev1.Kind_KIND_SHELL_EXEC, Severity: loupev1.Severity_SEVERITY_CRITICAL,
		Container: web, Summary: "interactive shell in shop/web-5c6d-q9q",
		Process: &loupev1.Process{Pid: 9100, Ppid: 9090, Comm: "bash", Filename: "/usr/bin/bash", Argv: []string{"bash", "-i"}, Tty: true,
			Ancestors: []*loupev1.Ancestor{{Pid: 9090, Comm: "runc:[2:INIT]", Filename: "/usr/sbin/runc"},
				{Pid: 9001, Comm: "containerd-shim", Filename: "/usr/bin/containerd-shim-runc-v2"}, {Pid: 1, Comm: "systemd", Filename: "/sbin/init"}}}})
	fl.ShellID = shell.Id
	fl.ShellChain = []string{"systemd", "containerd-shim", "runc:[2:INIT]", "bash"}
	child := add("node-b", &loupev1.Finding{Time: ts(t2.Add(20 * time.Second)), Kind: loupev1.Kind_KIND_EXEC, Severity: loupev1.Severity_SEVERITY_LOW,
		Container: web, Summary: "curl ran",
		Process: &loupev1.Process{Pid: 9150, Ppid: 9100, Comm: "curl", Filename: "/usr/bin/curl", Argv: []string{"curl", "-s", XSSImg},
			Ancestors: []*loupev1.Ancestor{{Pid: 9100, Comm: "bash", Filename: "/usr/bin/bash"}, {Pid: 9090, Comm: "runc:[2:INIT]"}}}})
	fl.ChildID = child.Id
	d := add("node-b", &loupev1.Finding{Time: ts(t2.Add(30 * time.Second)), Kind: loupev1.Kind_KIND_DRIFT_EXEC, Severity: loupev1.Severity_SEVERITY_HIGH,
		Container: web, Summary: "a binary not in the image ran: /tmp/x",
		Process: &loupev1.Process{Pid: 9160, Ppid: 9100, Comm: "x", Filename: "/tmp/x", Argv: []string{"/tmp/x"},
			Ancestors: []*loupev1.Ancestor{{Pid: 9100, Comm: "bash"}}},
		File: &loupev1.File{Path: "/tmp/x", Layer: "upper", Mode: 0o100755, Size: 8192, Change: "added",
			Sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}})
	fl.DriftID = d.Id
	// node-c: an older agent, a hostile pod name.
	add("node-c", &loupev1.Finding{Time: ts(now.Add(-10 * time.Minute)), Kind: loupev1.Kind_KIND_SHELL_PRESENT, Severity: loupev1.Severity_SEVERITY_MEDIUM,
		Container: &loupev1.ContainerRef{Id: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", Name: XSSImg, Pod: XSSPod,
			Namespace: "default", Image: "registry.local/legacy:" + XSSScript},
		File:    &loupev1.File{Path: "/bin/" + XSSScript, Layer: "sha256:" + XSSImg, Mode: 0o100755},
		Summary: "shell present: " + XSSScript, Details: map[string]string{XSSImg: XSSScript}})
	return fl
}

// Count is the number of findings seeded.
func (fl *Fleet) Count() int {
	n := 0
	for _, fs := range fl.ByNode {
		n += len(fs)
	}
	return n
}

// Ingest sends each node's findings on an Ingest stream of conn, as that
// node's agent, and waits for the acks.
func (fl *Fleet) Ingest(ctx context.Context, conn grpc.ClientConnInterface) error {
	c := loupev1.NewCollectorClient(conn)
	for node, fs := range fl.ByNode {
		if err := Send(ctx, c, node, fl.Versions[node], fs); err != nil {
			return fmt.Errorf("ingest for %s: %w", node, err)
		}
	}
	return nil
}

// Send sends findings as node's agent in one batch and checks the ack.
func Send(ctx context.Context, c loupev1.CollectorClient, node, version string, fs []*loupev1.Finding) error {
	stream, err := c.Ingest(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&loupev1.IngestRequest{Sequence: 1, Node: node, AgentVersion: version, Findings: fs}); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	resp, err := stream.Recv()
	if err != nil {
		return err
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	if resp.GetAckedSequence() != 1 || len(resp.GetRejected()) > 0 || int(resp.GetStored()+resp.GetDuplicates()) != len(fs) {
		return fmt.Errorf("ack %v for %d findings", resp, len(fs))
	}
	return nil
}
