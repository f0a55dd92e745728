package collector

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/store"
	"github.com/loupe-dev/loupe/collector/store/sqlite"
)

// Capture bounds on the collector side.
const (
	// DefaultCaptureMaxBytes bounds the capture directory (all bundles).
	DefaultCaptureMaxBytes = 20 << 30
	// DefaultCaptureMaxBundle bounds one bundle.
	DefaultCaptureMaxBundle = 5 << 30
	// captureTimeout bounds one capture from request to stored bundle.
	captureTimeout = 20 * time.Minute
	// agentIdle: a capture with no word from the agent for this long fails.
	agentIdle = 2 * time.Minute
	// timelineLimit bounds the findings sent to the agent as the timeline.
	timelineLimit = 5000
	// resolveLimit bounds the findings looked at to find a container's node.
	resolveLimit = 5000
	// maxCaptureList bounds ListCaptures.
	maxCaptureList = 1000
	// downloadChunk is the size of GetCapture's chunks.
	downloadChunk = 1 << 20
	// anonymous names the requester when the collector runs --insecure.
	anonymous = "anonymous (insecure collector)"
)

// captures is the collector's capture side: the agents' Control streams,
// the captures in flight and the bundle directory.
type captures struct {
	s         *Server
	dir       string // "" when captures are unavailable; dirErr says why
	dirErr    string
	maxBytes  int64
	maxBundle int64

	mu      sync.Mutex
	agents  map[string]*agentConn // node → its newest Control stream
	pending map[string]*pendingCapture
	seq     uint64
}

type agentConn struct {
	node    string
	version string
	seq     uint64
	cmds    chan *loupev1.AgentCommand
	done    chan struct{}
}

type pendingCapture struct {
	node    string
	updates chan *loupev1.CaptureUpdate
	gone    chan struct{} // closed when the agent's stream ends
	done    chan struct{} // closed when the Capture call ends (nobody reads updates any more)
}

// captureDir is where bundles are kept: Config.CaptureDir, else a
// "captures" directory next to a SQLite database.
func captureDir(cfg Config) (string, string) {
	return besideDB(cfg, cfg.CaptureDir, "captures", "captures need --capture-dir")
}

// besideDB is dir when set, else the directory sub next to a SQLite
// database; with another store it is "" and the reason why (need, e.g.
// "captures need --capture-dir", and the store).
func besideDB(cfg Config, dir, sub, need string) (string, string) {
	if dir != "" {
		return dir, ""
	}
	if o, err := sqlite.ParseDSN(cfg.DB); err == nil {
		return filepath.Join(filepath.Dir(o.Path), sub), ""
	}
	return "", need + " when the store is not SQLite"
}

func newCaptures(s *Server) (*captures, error) {
	c := &captures{s: s, maxBytes: s.cfg.CaptureMaxBytes, maxBundle: s.cfg.CaptureMaxBundle,
		agents: map[string]*agentConn{}, pending: map[string]*pendingCapture{}}
	if c.maxBytes <= 0 {
		c.maxBytes = DefaultCaptureMaxBytes
	}
	if c.maxBundle <= 0 {
		c.maxBundle = DefaultCaptureMaxBundle
	}
	c.dir, c.dirErr = captureDir(s.cfg)
	if c.dir != "" {
		if err := os.MkdirAll(c.dir, 0o700); err != nil {
			return nil, fmt.Errorf("capture directory (--capture-dir %s): %w", c.dir, err)
		}
		// Leftovers of captures interrupted by a restart.
		parts, _ := filepath.Glob(filepath.Join(c.dir, "*.part"))
		for _, p := range parts {
			os.Remove(p)
		}
	}
	return c, nil
}

// Control implements the agents' Control stream.
func (s *Server) Control(stream loupev1.Collector_ControlServer) error {
	ctx := stream.Context()
	id, err := s.peerIdentity(ctx)
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil || hello.GetNode() == "" {
		return status.Error(codes.InvalidArgument, "the first message of a Control stream must be a hello naming the node")
	}
	if !id.mayClaim(hello.GetNode()) {
		return status.Errorf(codes.PermissionDenied, "client certificate %q may not speak for node %q", id.cert.Subject.CommonName, hello.GetNode())
	}
	c := s.caps
	c.mu.Lock()
	c.seq++
	a := &agentConn{node: hello.GetNode(), version: hello.GetAgentVersion(), seq: c.seq, cmds: make(chan *loupev1.AgentCommand, 16), done: make(chan struct{})}
	c.agents[a.node] = a
	c.mu.Unlock()
	s.log.Info("agent control stream open", "node", a.node, "version", a.version)
	defer func() {
		c.mu.Lock()
		if c.agents[a.node] == a {
			delete(c.agents, a.node)
		}
		c.mu.Unlock()
		close(a.done)
	}()
	sendErr := make(chan error, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.draining:
				sendErr <- status.Error(codes.Unavailable, "collector shutting down")
				return
			case cmd := <-a.cmds:
				if err := stream.Send(cmd); err != nil {
					sendErr <- err
					return
				}
			}
		}
	}()
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			u := m.GetCapture()
			if u == nil {
				continue
			}
			c.mu.Lock()
			p := c.pending[u.GetCaptureId()]
			c.mu.Unlock()
			if p == nil || p.node != a.node {
				continue // the requester went away, or not this agent's capture
			}
			select {
			case p.updates <- u: // back-pressure: the agent's upload waits for the disk
			case <-ctx.Done():
				recvErr <- ctx.Err()
				return
			case <-p.gone:
			case <-p.done: // the requester went away: drop the rest, keep the stream
			}
		}
	}()
	select {
	case err = <-sendErr:
	case err = <-recvErr:
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// mayCapture: only the admin identity may ask for captures and read them;
// without mTLS only an --insecure (development) collector allows them.
func (s *Server) mayCapture(ctx context.Context) (string, error) {
	id, err := s.peerIdentity(ctx)
	if err != nil {
		return "", err
	}
	switch {
	case id.cert != nil && id.admin:
		return "CN=" + id.cert.Subject.CommonName + " serial=" + id.cert.SerialNumber.Text(16), nil
	case id.cert != nil:
		return "", status.Errorf(codes.PermissionDenied, "client certificate %q may not request or read captures; that needs the admin certificate (CN %q)",
			id.cert.Subject.CommonName, s.cfg.AdminCN)
	case s.cfg.Insecure:
		return anonymous, nil
	}
	return "", status.Error(codes.PermissionDenied, "captures need a client identity: run the collector with --client-ca (mTLS) and use the admin certificate")
}

// Capture implements the Capture RPC.
func (s *Server) Capture(req *loupev1.CaptureRequest, stream loupev1.Collector_CaptureServer) error {
	ctx, cancel := context.WithTimeout(stream.Context(), captureTimeout)
	defer cancel()
	who, err := s.mayCapture(ctx)
	if err != nil {
		return err
	}
	c := s.caps
	if c.dir == "" {
		return status.Error(codes.FailedPrecondition, c.dirErr)
	}
	if strings.TrimSpace(req.GetReason()) == "" {
		return status.Error(codes.InvalidArgument, "a reason is required (--reason)")
	}
	if len(req.GetReason()) > 4096 {
		return status.Error(codes.InvalidArgument, "reason longer than 4096 bytes")
	}
	progress := func(stage, msg string, n int64) error {
		return stream.Send(&loupev1.CaptureEvent{Event: &loupev1.CaptureEvent_Progress{Progress: &loupev1.CaptureProgress{Stage: stage, Message: msg, Bytes: n}}})
	}
	cid, node, err := s.resolveContainer(ctx, req)
	if err != nil {
		return err
	}
	if used := c.used(); used >= c.maxBytes {
		return status.Errorf(codes.ResourceExhausted, "capture directory %s holds %d bytes, at its cap of %d: remove old bundles first", c.dir, used, c.maxBytes)
	}
	c.mu.Lock()
	a := c.agents[node]
	c.mu.Unlock()
	if a == nil {
		return status.Errorf(codes.FailedPrecondition, "the agent of node %q has no control stream open to this collector (not running, too old, or connected to another replica)", node)
	}
	timeline, truncated, err := s.timeline(ctx, cid)
	if err != nil {
		return err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return status.Errorf(codes.Internal, "capture id: %v", err)
	}
	now := time.Now()
	cmd := &loupev1.CaptureCommand{CaptureId: id.String(), ContainerId: cid, Options: req.GetOptions(), RequestedBy: who,
		Reason: req.GetReason(), RequestedAt: timestamppb.New(now), Timeline: timeline, TimelineTruncated: truncated}
	p := &pendingCapture{node: node, updates: make(chan *loupev1.CaptureUpdate, 8), gone: a.done, done: make(chan struct{})}
	c.mu.Lock()
	c.pending[cmd.CaptureId] = p
	c.mu.Unlock()
	defer func() { c.mu.Lock(); delete(c.pending, cmd.CaptureId); c.mu.Unlock(); close(p.done) }()
	select {
	case a.cmds <- &loupev1.AgentCommand{Command: &loupev1.AgentCommand_Capture{Capture: cmd}}:
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
	s.log.Info("capture requested", "capture", cmd.CaptureId, "node", node, "container", cid, "requested_by", who, "reason", req.GetReason())
	if err := progress("requested", fmt.Sprintf("capture %s sent to the agent on node %s (container %s, %d timeline findings)", cmd.CaptureId, node, short(cid), len(timeline)), 0); err != nil {
		return err
	}
	info, err := c.receive(ctx, cmd, p, progress)
	if err != nil {
		if ctx.Err() != nil {
			select { // tell the agent to stop
			case a.cmds <- &loupev1.AgentCommand{Command: &loupev1.AgentCommand_CancelCaptureId{CancelCaptureId: cmd.CaptureId}}:
			default:
			}
		}
		s.log.Warn("capture failed", "capture", cmd.CaptureId, "node", node, "err", err)
		return err
	}
	info.CompletedAt = timestamppb.Now()
	info.RequestedAt = cmd.RequestedAt
	info.RequestedBy, info.Reason, info.Node = who, req.GetReason(), node
	f := captureFinding(info)
	info.FindingId = f.Id
	if err := c.saveInfo(info); err != nil {
		return status.Errorf(codes.Internal, "store capture record: %v", err)
	}
	ictx, icancel := context.WithTimeout(context.Background(), commitTimeout)
	defer icancel()
	if rej := ValidateFinding(f, node, true); rej != nil {
		return status.Errorf(codes.Internal, "CAPTURE finding invalid: %s", rej.GetMessage())
	}
	if _, err := s.store.Ingest(ictx, store.NodeInfo{Name: node, AgentVersion: info.GetAgentVersion(), Seen: time.Now()}, []*loupev1.Finding{f}); err != nil {
		return status.Errorf(codes.Internal, "store CAPTURE finding: %v", err)
	}
	s.log.Info("capture stored", "capture", info.Id, "node", node, "bytes", info.Size, "sha256", info.Sha256)
	if err := progress("stored", fmt.Sprintf("bundle stored: %d bytes, sha256 %s", info.Size, info.Sha256), info.Size); err != nil {
		return err
	}
	return stream.Send(&loupev1.CaptureEvent{Event: &loupev1.CaptureEvent_Result{Result: info}})
}

// receive relays the agent's progress and writes its bundle to disk,
// checking the size cap and, at the end, the sha256 the agent computed.
func (c *captures) receive(ctx context.Context, cmd *loupev1.CaptureCommand, p *pendingCapture, progress func(string, string, int64) error) (*loupev1.CaptureInfo, error) {
	part := filepath.Join(c.dir, cmd.CaptureId+".tar.gz.part")
	f, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "bundle file: %v", err)
	}
	defer func() {
		f.Close()
		os.Remove(part) // gone after the rename on success
	}()
	h := sha256.New()
	var n int64
	lastStage, lastReport := "", time.Time{}
	idle := time.NewTimer(agentIdle)
	defer idle.Stop()
	for {
		var u *loupev1.CaptureUpdate
		select {
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-p.gone:
			return nil, status.Errorf(codes.Unavailable, "the agent of node %s disconnected during the capture", p.node)
		case <-idle.C:
			return nil, status.Errorf(codes.DeadlineExceeded, "no word from the agent of node %s for %s", p.node, agentIdle)
		case u = <-p.updates:
			idle.Reset(agentIdle)
		}
		if len(u.GetData()) > 0 {
			if n+int64(len(u.GetData())) > c.maxBundle {
				return nil, status.Errorf(codes.ResourceExhausted, "bundle larger than the collector's cap of %d bytes", c.maxBundle)
			}
			if _, err := f.Write(u.GetData()); err != nil {
				return nil, status.Errorf(codes.Internal, "write bundle: %v", err)
			}
			h.Write(u.GetData())
			n += int64(len(u.GetData()))
		}
		if pr := u.GetProgress(); pr != nil && (pr.GetStage() != lastStage || pr.GetMessage() != "" || time.Since(lastReport) > time.Second) {
			lastStage, lastReport = pr.GetStage(), time.Now()
			if err := progress(pr.GetStage(), pr.GetMessage(), pr.GetBytes()); err != nil {
				return nil, err
			}
		}
		if !u.GetDone() {
			continue
		}
		if u.GetError() != "" {
			return nil, status.Errorf(codes.FailedPrecondition, "agent on node %s: %s", p.node, u.GetError())
		}
		sum := hex.EncodeToString(h.Sum(nil))
		if sum != u.GetSha256() {
			return nil, status.Errorf(codes.DataLoss, "bundle received with sha256 %s, the agent sent %s", sum, u.GetSha256())
		}
		if err := f.Sync(); err != nil {
			return nil, status.Errorf(codes.Internal, "sync bundle: %v", err)
		}
		if err := os.Rename(part, filepath.Join(c.dir, cmd.CaptureId+".tar.gz")); err != nil {
			return nil, status.Errorf(codes.Internal, "store bundle: %v", err)
		}
		info := u.GetInfo()
		if info == nil {
			info = &loupev1.CaptureInfo{}
		}
		info.Id, info.Size, info.Sha256 = cmd.CaptureId, n, sum
		return info, nil
	}
}

// resolveContainer finds the full container id and its node from the
// container's findings (the collector knows containers only through them).
func (s *Server) resolveContainer(ctx context.Context, req *loupev1.CaptureRequest) (string, string, error) {
	q := &loupev1.QueryRequest{Limit: resolveLimit, Order: loupev1.Order_ORDER_NEWEST_FIRST}
	switch {
	case req.GetContainerId() != "":
		if req.GetPod() != "" || req.GetNamespace() != "" {
			return "", "", status.Error(codes.InvalidArgument, "select by container id or by namespace/pod, not both")
		}
		q.ContainerId = req.GetContainerId()
	case req.GetPod() != "" && req.GetNamespace() != "":
		if strings.ContainsAny(req.GetPod(), "*") {
			return "", "", status.Error(codes.InvalidArgument, "the pod name must be exact for a capture (no *)")
		}
		q.Namespace, q.Pod = req.GetNamespace(), req.GetPod()
	default:
		return "", "", status.Error(codes.InvalidArgument, "name the container: --pod NAMESPACE/POD [--container NAME] or --container ID")
	}
	if err := store.CheckQuery(q); err != nil {
		return "", "", status.Error(codes.InvalidArgument, err.Error())
	}
	type cand struct{ id, name, node string }
	var order []string
	found := map[string]cand{}
	err := s.store.Query(ctx, q, func(f *loupev1.Finding) error {
		r := f.GetContainer()
		if r.GetId() == "" || (req.GetContainerName() != "" && r.GetName() != req.GetContainerName()) {
			return nil
		}
		if q.Pod != "" && r.GetName() == "" {
			// The pod's sandbox ("pause"): the tracer may see its first exec.
			// It is never what a capture by pod means.
			return nil
		}
		if _, ok := found[r.GetId()]; !ok {
			found[r.GetId()] = cand{r.GetId(), r.GetName(), f.GetNode()}
			order = append(order, r.GetId())
		}
		return nil
	})
	if err != nil {
		return "", "", status.Errorf(codes.Internal, "find the container: %v", err)
	}
	if len(order) == 0 {
		return "", "", status.Error(codes.NotFound, "no findings name such a container at this collector (check the names, or wait for the agent's first scan)")
	}
	pick := found[order[0]] // newest
	if req.GetContainerId() != "" && len(order) > 1 {
		return "", "", status.Errorf(codes.InvalidArgument, "container id prefix %q matches %d containers; give more characters", req.GetContainerId(), len(order))
	}
	if req.GetContainerName() == "" {
		names := map[string]bool{}
		for _, id := range order {
			names[found[id].name] = true
		}
		if len(names) > 1 {
			var ns []string
			for n := range names {
				ns = append(ns, n)
			}
			sort.Strings(ns)
			return "", "", status.Errorf(codes.InvalidArgument, "pod %s/%s has several containers (%s): pick one with --container NAME", req.GetNamespace(), req.GetPod(), strings.Join(ns, ", "))
		}
	}
	node := pick.node
	if req.GetNode() != "" {
		node = req.GetNode()
	}
	return pick.id, node, nil
}

// timeline is the container's findings, oldest first, bounded.
func (s *Server) timeline(ctx context.Context, id string) ([]*loupev1.Finding, bool, error) {
	var out []*loupev1.Finding
	err := s.store.Query(ctx, &loupev1.QueryRequest{ContainerId: id, Limit: timelineLimit, Order: loupev1.Order_ORDER_OLDEST_FIRST},
		func(f *loupev1.Finding) error { out = append(out, f); return nil })
	if err != nil {
		return nil, false, status.Errorf(codes.Internal, "read the container's timeline: %v", err)
	}
	return out, len(out) >= timelineLimit, nil
}

func captureFinding(info *loupev1.CaptureInfo) *loupev1.Finding {
	id, _ := uuid.NewV7()
	r := info.GetContainer()
	who := r.GetId()
	if r.GetPod() != "" {
		who = fmt.Sprintf("%s/%s/%s", r.GetNamespace(), r.GetPod(), r.GetName())
	}
	return &loupev1.Finding{
		Id: id.String(), Time: info.GetCompletedAt(), Node: info.GetNode(), Kind: loupev1.Kind_KIND_CAPTURE,
		Severity: loupev1.Severity_SEVERITY_INFO, Rule: "collector.capture", Container: r, AgentVersion: info.GetAgentVersion(),
		Summary: fmt.Sprintf("evidence bundle %s of %s captured for %s: %s", info.GetId(), who, info.GetRequestedBy(), truncate(info.GetReason(), 200)),
		File:    &loupev1.File{Path: "capture:" + info.GetId() + ".tar.gz", Size: info.GetSize(), Sha256: info.GetSha256()},
		Details: map[string]string{"capture_id": info.GetId(), "requested_by": info.GetRequestedBy(), "reason": truncate(info.GetReason(), 4096),
			"bundle_sha256": info.GetSha256(), "bundle_size": fmt.Sprint(info.GetSize()), "frozen_ms": fmt.Sprint(info.GetFrozenMs()),
			"processes": fmt.Sprint(info.GetProcesses()), "artifacts": fmt.Sprint(info.GetArtifacts())},
	}
}

func (c *captures) saveInfo(info *loupev1.CaptureInfo) error {
	b, err := protojson.MarshalOptions{UseProtoNames: true, Indent: "  "}.Marshal(info)
	if err != nil {
		return err
	}
	tmp := filepath.Join(c.dir, info.GetId()+".json.part")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(c.dir, info.GetId()+".json"))
}

func (c *captures) list() ([]*loupev1.CaptureInfo, error) {
	paths, err := filepath.Glob(filepath.Join(c.dir, "*.json"))
	if err != nil {
		return nil, err
	}
	var out []*loupev1.CaptureInfo
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		info := &loupev1.CaptureInfo{}
		if protojson.Unmarshal(b, info) == nil {
			out = append(out, info)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetId() > out[j].GetId() }) // UUIDv7: newest first
	return out, nil
}

// used is the bytes in the capture directory.
func (c *captures) used() int64 {
	var n int64
	ents, _ := os.ReadDir(c.dir)
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
	}
	return n
}

// ListCaptures implements the ListCaptures RPC.
func (s *Server) ListCaptures(ctx context.Context, req *loupev1.ListCapturesRequest) (*loupev1.ListCapturesResponse, error) {
	if _, err := s.mayCapture(ctx); err != nil {
		return nil, err
	}
	if s.caps.dir == "" {
		return nil, status.Error(codes.FailedPrecondition, s.caps.dirErr)
	}
	all, err := s.caps.list()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "list captures: %v", err)
	}
	limit := int(req.GetLimit())
	if limit <= 0 || limit > maxCaptureList {
		limit = maxCaptureList
	}
	resp := &loupev1.ListCapturesResponse{}
	for _, info := range all {
		if p := req.GetContainerId(); p != "" && !strings.HasPrefix(info.GetContainer().GetId(), p) {
			continue
		}
		if len(resp.Captures) >= limit {
			break
		}
		resp.Captures = append(resp.Captures, info)
	}
	return resp, nil
}

// GetCapture implements the GetCapture RPC.
func (s *Server) GetCapture(req *loupev1.GetCaptureRequest, stream loupev1.Collector_GetCaptureServer) error {
	if _, err := s.mayCapture(stream.Context()); err != nil {
		return err
	}
	if s.caps.dir == "" {
		return status.Error(codes.FailedPrecondition, s.caps.dirErr)
	}
	id, err := uuid.Parse(req.GetId())
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "capture id %q is not a UUID", truncate(req.GetId(), 64))
	}
	b, err := os.ReadFile(filepath.Join(s.caps.dir, id.String()+".json"))
	if err != nil {
		return status.Errorf(codes.NotFound, "no capture %s", id)
	}
	info := &loupev1.CaptureInfo{}
	if err := protojson.Unmarshal(b, info); err != nil {
		return status.Errorf(codes.Internal, "capture record %s: %v", id, err)
	}
	f, err := os.Open(filepath.Join(s.caps.dir, id.String()+".tar.gz"))
	if err != nil {
		return status.Errorf(codes.NotFound, "bundle of capture %s: %v", id, err)
	}
	defer f.Close()
	if err := stream.Send(&loupev1.CaptureChunk{Info: info}); err != nil {
		return err
	}
	buf := make([]byte, downloadChunk)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if err := stream.Send(&loupev1.CaptureChunk{Data: buf[:n]}); err != nil {
				return err
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return status.Errorf(codes.Internal, "read bundle: %v", err)
		}
	}
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
