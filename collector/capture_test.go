package collector

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
)

// fakeAgent holds a Control stream for node and answers each capture
// command with answer (which sends updates on the stream).
func fakeAgent(t *testing.T, s *testServer, c loupev1.CollectorClient, node string, answer func(loupev1.Collector_ControlClient, *loupev1.CaptureCommand)) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := c.Control(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&loupev1.AgentMessage{Message: &loupev1.AgentMessage_Hello{Hello: &loupev1.AgentHello{Node: node, AgentVersion: "fake"}}}); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			cmd, err := stream.Recv()
			if err != nil {
				return
			}
			if cc := cmd.GetCapture(); cc != nil {
				answer(stream, cc)
			}
		}
	}()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		s.caps.mu.Lock()
		_, ok := s.caps.agents[node]
		s.caps.mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("fake agent not registered")
		}
	}
	t.Cleanup(cancel)
	return cancel
}

func upload(stream loupev1.Collector_ControlClient, id string, data []byte, sum string) {
	for i := 0; i < len(data); i += 4 {
		stream.Send(&loupev1.AgentMessage{Message: &loupev1.AgentMessage_Capture{Capture: &loupev1.CaptureUpdate{CaptureId: id, Data: data[i:min(i+4, len(data))],
			Progress: &loupev1.CaptureProgress{Stage: "uploading", Bytes: int64(i)}}}})
	}
	stream.Send(&loupev1.AgentMessage{Message: &loupev1.AgentMessage_Capture{Capture: &loupev1.CaptureUpdate{CaptureId: id, Done: true, Sha256: sum,
		Info: &loupev1.CaptureInfo{Container: &loupev1.ContainerRef{Id: "c0ffee00c0ffee", Namespace: "payments", Pod: "api", Name: "app"}, AgentVersion: "fake"}}}})
}

func runCapture(c loupev1.CollectorClient, req *loupev1.CaptureRequest) (*loupev1.CaptureInfo, []string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := c.Capture(ctx, req)
	if err != nil {
		return nil, nil, err
	}
	var stages []string
	for {
		ev, err := stream.Recv()
		if err != nil {
			return nil, stages, err
		}
		if p := ev.GetProgress(); p != nil {
			stages = append(stages, p.GetStage())
		}
		if r := ev.GetResult(); r != nil {
			return r, stages, nil
		}
	}
}

// TestCaptureRelay drives the collector's capture side over loopback mTLS
// with a fake agent: identity checks, the relay of the bundle to disk, the
// CAPTURE finding, list and download, and each failure a broken or hostile
// agent can cause.
func TestCaptureRelay(t *testing.T) {
	p := newPKI(t)
	cfg := mtlsConfig(p)
	cfg.CaptureMaxBundle = 64
	s := start(t, cfg)
	agent := dial(t, s, client(p, p.nodeA))
	admin := dial(t, s, client(p, p.admin))
	f := findings("node-a", 1)
	f[0].Container = &loupev1.ContainerRef{Id: "c0ffee00c0ffee", Namespace: "payments", Pod: "api", Name: "app"}
	if _, err := send(t, agent, &loupev1.IngestRequest{Sequence: 1, Node: "node-a", Findings: f}); err != nil {
		t.Fatal(err)
	}
	req := &loupev1.CaptureRequest{Namespace: "payments", Pod: "api", Reason: "INC-1"}

	_, _, err := runCapture(admin, req)
	wantCode(t, err, codes.FailedPrecondition, "no control stream")

	bundle := []byte("not really a tar.gz, but bytes all the same")
	sum := sha256.Sum256(bundle)
	var mode string
	fakeAgent(t, s, agent, "node-a", func(st loupev1.Collector_ControlClient, cmd *loupev1.CaptureCommand) {
		switch mode {
		case "ok":
			if cmd.GetReason() != "INC-1" || cmd.GetContainerId() != "c0ffee00c0ffee" || len(cmd.GetTimeline()) == 0 || cmd.GetRequestedBy() == "" {
				t.Errorf("command %v", cmd)
			}
			upload(st, cmd.GetCaptureId(), bundle, hex.EncodeToString(sum[:]))
		case "bad-sum":
			upload(st, cmd.GetCaptureId(), bundle, "00")
		case "too-big":
			upload(st, cmd.GetCaptureId(), bytes.Repeat([]byte("x"), 100), "00")
		case "abandoned": // keeps reporting after the requester left
			for i := 0; i < 40; i++ {
				st.Send(&loupev1.AgentMessage{Message: &loupev1.AgentMessage_Capture{Capture: &loupev1.CaptureUpdate{CaptureId: cmd.GetCaptureId(),
					Progress: &loupev1.CaptureProgress{Stage: "collecting", Message: "step"}}}})
				time.Sleep(5 * time.Millisecond)
			}
		case "refused":
			st.Send(&loupev1.AgentMessage{Message: &loupev1.AgentMessage_Capture{Capture: &loupev1.CaptureUpdate{CaptureId: cmd.GetCaptureId(), Done: true, Error: "captures are disabled on this node"}}})
		}
	})

	t.Run("only the admin identity", func(t *testing.T) {
		_, _, err := runCapture(agent, req)
		wantCode(t, err, codes.PermissionDenied, "admin certificate")
		_, err = agent.ListCaptures(context.Background(), &loupev1.ListCapturesRequest{})
		wantCode(t, err, codes.PermissionDenied, "admin certificate")
	})
	t.Run("an agent speaks only for its own node", func(t *testing.T) {
		st, err := agent.Control(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		st.Send(&loupev1.AgentMessage{Message: &loupev1.AgentMessage_Hello{Hello: &loupev1.AgentHello{Node: "node-b"}}})
		_, err = st.Recv()
		wantCode(t, err, codes.PermissionDenied, "node-b")
	})
	t.Run("a reason is required", func(t *testing.T) {
		_, _, err := runCapture(admin, &loupev1.CaptureRequest{Namespace: "payments", Pod: "api"})
		wantCode(t, err, codes.InvalidArgument, "reason")
	})

	mode = "ok"
	info, stages, err := runCapture(admin, req)
	if err != nil {
		t.Fatal(err)
	}
	if info.GetSha256() != hex.EncodeToString(sum[:]) || info.GetSize() != int64(len(bundle)) || info.GetNode() != "node-a" || info.GetRequestedBy() == "" {
		t.Errorf("result %v", info)
	}
	if len(stages) < 3 || stages[0] != "requested" || stages[len(stages)-1] != "stored" {
		t.Errorf("progress stages %v", stages)
	}
	stored, err := os.ReadFile(filepath.Join(filepath.Dir(s.cfg.DB[len("sqlite://"):]), "captures", info.GetId()+".tar.gz"))
	if err != nil || !bytes.Equal(stored, bundle) {
		t.Errorf("bundle on disk: %v", err)
	}
	fs, err := query(t, admin, &loupev1.QueryRequest{Kinds: []loupev1.Kind{loupev1.Kind_KIND_CAPTURE}})
	if err != nil || len(fs) != 1 || fs[0].GetFile().GetSha256() != info.GetSha256() || fs[0].GetId() != info.GetFindingId() || fs[0].GetDetails()["reason"] != "INC-1" {
		t.Errorf("CAPTURE finding: %v %v", fs, err)
	}
	list, err := admin.ListCaptures(context.Background(), &loupev1.ListCapturesRequest{})
	if err != nil || len(list.GetCaptures()) != 1 || list.GetCaptures()[0].GetId() != info.GetId() {
		t.Errorf("list: %v %v", list, err)
	}
	dl, err := admin.GetCapture(context.Background(), &loupev1.GetCaptureRequest{Id: info.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	for {
		ch, err := dl.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ch.GetData()...)
	}
	if !bytes.Equal(got, bundle) {
		t.Error("downloaded bundle differs")
	}
	_, err = admin.GetCapture(context.Background(), &loupev1.GetCaptureRequest{Id: "../../etc/passwd"})
	if err == nil {
		dl, _ := admin.GetCapture(context.Background(), &loupev1.GetCaptureRequest{Id: "../../etc/passwd"})
		_, err = dl.Recv()
	}
	wantCode(t, err, codes.InvalidArgument, "not a UUID")

	for _, c := range []struct {
		mode string
		code codes.Code
		want string
	}{
		{"bad-sum", codes.DataLoss, "sha256"},
		{"too-big", codes.ResourceExhausted, "cap of 64 bytes"},
		{"refused", codes.FailedPrecondition, "captures are disabled"},
	} {
		mode = c.mode
		_, _, err := runCapture(admin, req)
		wantCode(t, err, c.code, c.want)
	}
	// A requester that goes away mid-capture must not stall the agent's stream.
	mode = "abandoned"
	ctx, cancel := context.WithCancel(context.Background())
	st, err := admin.Capture(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	st.Recv() // "requested"
	cancel()
	time.Sleep(300 * time.Millisecond)
	mode = "ok"
	if _, _, err := runCapture(admin, req); err != nil {
		t.Errorf("capture after an abandoned one: %v", err)
	}
	if parts, _ := filepath.Glob(filepath.Join(s.caps.dir, "*.part")); len(parts) != 0 {
		t.Errorf("partial bundles left behind: %v", parts)
	}
}
