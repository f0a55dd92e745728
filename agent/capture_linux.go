package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loupe-dev/loupe/agent/capture"
	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/bpf/classify"
	"github.com/loupe-dev/loupe/collector"
	"github.com/loupe-dev/loupe/internal/version"
	"github.com/loupe-dev/loupe/runtime"
)

// Capture limits on the agent side.
const (
	// captureTimeout bounds one capture, collection and upload together.
	captureTimeout = 15 * time.Minute
	// captureChunk is the size of the bundle pieces sent up the Control stream.
	captureChunk = 1 << 20
	// controlMaxRecv bounds one command (a capture carries the timeline).
	controlMaxRecv = 64 << 20
)

// freezeJournal is where a capture records the cgroup it froze (--freeze).
func (a *Agent) freezeJournal() string { return filepath.Join(a.cfg.StateDir, "capture-frozen") }

// controlLoop holds the Control stream to the collector, reconnecting with
// backoff, and runs the captures it is asked for (one at a time). It first
// thaws what a killed predecessor left frozen.
func (a *Agent) controlLoop(ctx context.Context) error {
	thawed, err := capture.ThawLeftovers(a.freezeJournal(), a.cfg.HostRoot)
	for _, cg := range thawed {
		a.log.Warn("thawed a container left frozen by an interrupted capture", "cgroup", cg)
	}
	if err != nil {
		a.log.Error("thaw containers left frozen by an interrupted capture", "err", err)
	}
	backoff := 250 * time.Millisecond
	for {
		progressed, err := a.controlSession(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if progressed {
			backoff = 250 * time.Millisecond
		}
		wait := time.Duration(rand.Int64N(int64(backoff))) + backoff/2
		a.log.Debug("control stream ended; reconnecting", "err", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// controlSender serialises sends on one Control stream.
type controlSender struct {
	mu     sync.Mutex
	stream loupev1.Collector_ControlClient
}

func (s *controlSender) send(m *loupev1.AgentMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream.Send(m)
}

func (a *Agent) controlSession(ctx context.Context) (bool, error) {
	conn, err := collector.Dial(ctx, a.cfg.Collector, a.cfg.TLS)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := loupev1.NewCollectorClient(conn).Control(sctx, grpc.MaxCallRecvMsgSize(controlMaxRecv))
	if err != nil {
		return false, fmt.Errorf("open control stream: %w", err)
	}
	snd := &controlSender{stream: stream}
	if err := snd.send(&loupev1.AgentMessage{Message: &loupev1.AgentMessage_Hello{Hello: &loupev1.AgentHello{Node: a.cfg.NodeName, AgentVersion: version.Version}}}); err != nil {
		return false, fmt.Errorf("send hello: %w", err)
	}
	var (
		mu      sync.Mutex
		running = map[string]context.CancelFunc{}
		wg      sync.WaitGroup
	)
	defer wg.Wait()
	defer cancel()
	progressed := false
	for {
		cmd, err := stream.Recv()
		if err != nil {
			return progressed, err
		}
		progressed = true
		switch c := cmd.GetCommand().(type) {
		case *loupev1.AgentCommand_Capture:
			mu.Lock()
			busy := len(running) > 0
			cctx, ccancel := context.WithTimeout(sctx, captureTimeout)
			if !busy {
				running[c.Capture.GetCaptureId()] = ccancel
			}
			mu.Unlock()
			if busy {
				ccancel()
				snd.send(captureDone(c.Capture.GetCaptureId(), "", nil, "another capture is running on this node; try again when it is done"))
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { mu.Lock(); delete(running, c.Capture.GetCaptureId()); mu.Unlock(); ccancel() }()
				a.runCapture(cctx, snd, c.Capture)
			}()
		case *loupev1.AgentCommand_CancelCaptureId:
			mu.Lock()
			if f := running[c.CancelCaptureId]; f != nil {
				f()
			}
			mu.Unlock()
		}
	}
}

func captureDone(id, sum string, info *loupev1.CaptureInfo, errMsg string) *loupev1.AgentMessage {
	return &loupev1.AgentMessage{Message: &loupev1.AgentMessage_Capture{Capture: &loupev1.CaptureUpdate{
		CaptureId: id, Done: true, Sha256: sum, Info: info, Error: errMsg}}}
}

func captureProgress(id, stage, msg string, n int64) *loupev1.AgentMessage {
	return &loupev1.AgentMessage{Message: &loupev1.AgentMessage_Capture{Capture: &loupev1.CaptureUpdate{
		CaptureId: id, Progress: &loupev1.CaptureProgress{Stage: stage, Message: msg, Bytes: n}}}}
}

// runCapture takes one capture and uploads it; every outcome ends with a
// done message (with the bundle's sha256, or the reason it was refused).
func (a *Agent) runCapture(ctx context.Context, snd *controlSender, cmd *loupev1.CaptureCommand) {
	id := cmd.GetCaptureId()
	log := a.log.With("capture", id, "container", cmd.GetContainerId())
	sum, info, err := a.captureTo(ctx, snd, cmd)
	if err != nil {
		log.Warn("capture failed", "err", err)
		snd.send(captureDone(id, "", nil, err.Error()))
		return
	}
	log.Info("capture uploaded", "sha256", sum, "bytes", info.GetSize(), "requested_by", cmd.GetRequestedBy())
	if err := snd.send(captureDone(id, sum, info, "")); err != nil {
		log.Warn("report capture", "err", err)
	}
}

func (a *Agent) captureTo(ctx context.Context, snd *controlSender, cmd *loupev1.CaptureCommand) (string, *loupev1.CaptureInfo, error) {
	id := cmd.GetCaptureId()
	c, ok := a.parts.registry.Get(cmd.GetContainerId())
	switch {
	case !ok:
		return "", nil, fmt.Errorf("container %s is not known on node %s", cmd.GetContainerId(), a.cfg.NodeName)
	case c.Kind == runtime.KindSandbox:
		return "", nil, fmt.Errorf("container %s is a pod sandbox; capture a workload container", c.ID)
	case c.State != runtime.StateRunning:
		return "", nil, fmt.Errorf("container %s is %s, not running", c.String(), c.State)
	}
	if err := a.emit.rules.MayCapture(c.Pod.Namespace); err != nil {
		return "", nil, err
	}
	o := cmd.GetOptions()
	req := capture.Request{
		ID: id, RequestedBy: cmd.GetRequestedBy(), Reason: cmd.GetReason(), RequestedAt: cmd.GetRequestedAt().AsTime(),
		Options:      capture.Options{Paths: o.GetPaths(), IncludeEnv: o.GetIncludeEnv(), Freeze: o.GetFreeze()},
		MaxFileBytes: o.GetMaxFileBytes(), MaxTotalBytes: o.GetMaxTotalBytes(),
		Timeline: cmd.GetTimeline(), TimelineTruncated: cmd.GetTimelineTruncated(),
	}
	if err := req.Validate(); err != nil {
		return "", nil, err
	}
	// The bundle streams to the collector as it is built: no copy on the
	// node's disk, and collection and upload overlap.
	pr, pw := io.Pipe()
	h := sha256.New()
	type upResult struct {
		sent int64
		err  error
	}
	upDone := make(chan upResult, 1)
	go func() {
		buf := make([]byte, captureChunk)
		var sent int64
		for {
			n, err := io.ReadFull(pr, buf)
			if n > 0 {
				h.Write(buf[:n])
				up := &loupev1.AgentMessage{Message: &loupev1.AgentMessage_Capture{Capture: &loupev1.CaptureUpdate{CaptureId: id, Data: buf[:n],
					Progress: &loupev1.CaptureProgress{Stage: "uploading", Bytes: sent + int64(n)}}}}
				if serr := snd.send(up); serr != nil {
					pr.CloseWithError(serr)
					upDone <- upResult{sent, fmt.Errorf("upload bundle: %w", serr)}
					return
				}
				sent += int64(n)
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				upDone <- upResult{sent, nil}
				return
			}
			if err != nil {
				upDone <- upResult{sent, err}
				return
			}
		}
	}()
	cw := &countWriter{w: pw}
	snd.send(captureProgress(id, "collecting", "capturing "+c.String(), 0))
	m, err := capture.Collect(ctx, c, req, capture.Env{HostRoot: a.cfg.HostRoot, ContainerdState: a.cfg.ContainerdState,
		Node: a.cfg.NodeName, AgentVersion: version.Version, FreezeJournal: a.freezeJournal()}, cw, func(stage string) {
		snd.send(captureProgress(id, "collecting", stage, cw.n.Load()))
	})
	if err != nil {
		pw.CloseWithError(err)
		<-upDone
		return "", nil, fmt.Errorf("capture %s: %w", c.String(), err)
	}
	pw.Close()
	up := <-upDone
	if up.err != nil {
		return "", nil, up.err
	}
	sent, sum := up.sent, hex.EncodeToString(h.Sum(nil))
	info := &loupev1.CaptureInfo{
		Id: id, Node: a.cfg.NodeName, Container: classify.ContainerOf(c).Ref, RequestedBy: req.RequestedBy, Reason: req.Reason,
		RequestedAt: timestamppb.New(req.RequestedAt), Size: sent, Sha256: sum, AgentVersion: version.Version,
		Artifacts: int64(len(m.Artifacts)), Processes: int32(m.Counts.Processes), FrozenMs: m.Freeze.DurationMS,
		Warnings: firstN(m.Warnings, 50),
	}
	return sum, info, nil
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("… %d more in the manifest", len(s)-n))
	}
	return s
}

type countWriter struct {
	w io.Writer
	n atomic.Int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}
