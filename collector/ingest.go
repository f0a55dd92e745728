package collector

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/store"
)

// commitTimeout bounds one batch's store transaction. It is not tied to the
// stream: a batch in hand is committed (and acked) even while the collector
// shuts down or the agent goes away.
const commitTimeout = time.Minute

// identity is who the peer of an RPC is.
type identity struct {
	// cert is the verified client certificate under mTLS; nil otherwise.
	cert *x509.Certificate
	// admin: the certificate's CommonName is the admin CN.
	admin bool
}

func (s *Server) peerIdentity(ctx context.Context) (identity, error) {
	if !s.mtls {
		return identity{}, nil
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return identity{}, status.Error(codes.Unauthenticated, "no peer information")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return identity{}, status.Error(codes.Unauthenticated, "a client certificate signed by the collector's --client-ca is required")
	}
	leaf := ti.State.VerifiedChains[0][0]
	return identity{cert: leaf, admin: leaf.Subject.CommonName == s.cfg.AdminCN}, nil
}

// mayClaim reports whether the peer may send findings for node.
func (id identity) mayClaim(node string) bool {
	if id.cert == nil || id.admin {
		return true
	}
	return id.cert.Subject.CommonName == node || slices.Contains(id.cert.DNSNames, node)
}

// anyNode: the peer may send findings naming nodes other than its own.
func (id identity) anyNode() bool { return id.cert == nil || id.admin }

func (s *Server) connect(node string) {
	s.mu.Lock()
	s.conns[node]++
	s.mu.Unlock()
	s.m.connected.Inc()
}

func (s *Server) disconnect(node string) {
	s.mu.Lock()
	if s.conns[node]--; s.conns[node] <= 0 {
		delete(s.conns, node)
	}
	s.mu.Unlock()
	s.m.connected.Dec()
}

// Ingest implements the Ingest stream: batches are handled in order, each
// acknowledged after its store transaction committed.
func (s *Server) Ingest(stream loupev1.Collector_IngestServer) error {
	ctx := stream.Context()
	id, err := s.peerIdentity(ctx)
	if err != nil {
		return err
	}
	reqs := make(chan *loupev1.IngestRequest)
	recvErr := make(chan error, 1)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-done:
				return
			}
		}
	}()
	node := ""
	defer func() {
		if node != "" {
			s.disconnect(node)
		}
	}()
	for {
		select {
		case <-s.draining:
			return status.Error(codes.Unavailable, "collector is shutting down; reconnect and resend unacknowledged batches")
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			if status.Code(err) == codes.ResourceExhausted {
				// grpc-go has already sent the client its own status ("received
				// message larger than max (N vs. M)"); count and log it here.
				s.m.rejected.WithLabelValues(ReasonTooLarge).Inc()
				s.log.Warn("ingest batch too large; stream closed", "node", node, "max_msg_bytes", s.cfg.MaxMsgBytes, "err", status.Convert(err).Message())
				return status.Errorf(codes.ResourceExhausted,
					"batch rejected: %s (the collector accepts at most %d bytes per batch, --max-msg-bytes); send smaller batches",
					status.Convert(err).Message(), s.cfg.MaxMsgBytes)
			}
			return err
		case req := <-reqs:
			if req.GetNode() == "" {
				return status.Error(codes.InvalidArgument, "IngestRequest.node is required")
			}
			if node == "" {
				if !id.mayClaim(req.GetNode()) {
					s.log.Warn("ingest refused: node does not match the client certificate", "node", req.GetNode(), "cn", id.cert.Subject.CommonName)
					return status.Errorf(codes.PermissionDenied, "client certificate %q (DNS names %v) may not send findings for node %q",
						id.cert.Subject.CommonName, id.cert.DNSNames, req.GetNode())
				}
				node = req.GetNode()
				s.connect(node)
			} else if req.GetNode() != node {
				return status.Errorf(codes.InvalidArgument, "stream started for node %q; got a batch for %q", node, req.GetNode())
			}
			resp, err := s.ingestBatch(ctx, req, id.anyNode())
			if err != nil {
				return err
			}
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
	}
}

// ingestBatch validates and stores one batch and builds its ack. A store
// error becomes Unavailable: nothing of the batch was committed and the
// agent resends it.
func (s *Server) ingestBatch(ctx context.Context, req *loupev1.IngestRequest, anyNode bool) (*loupev1.IngestResponse, error) {
	resp := &loupev1.IngestResponse{AckedSequence: req.GetSequence()}
	valid := make([]*loupev1.Finding, 0, len(req.GetFindings()))
	for i, f := range req.GetFindings() {
		if rej := ValidateFinding(f, req.GetNode(), anyNode); rej != nil {
			rej.Index = uint32(i)
			resp.Rejected = append(resp.Rejected, rej)
			s.m.rejected.WithLabelValues(rej.GetReason()).Inc()
			continue
		}
		valid = append(valid, f)
	}
	if len(resp.Rejected) > 0 {
		s.log.Warn("ingest rejected invalid findings", "node", req.GetNode(), "sequence", req.GetSequence(),
			"rejected", len(resp.Rejected), "first_reason", resp.Rejected[0].GetReason(), "first_message", resp.Rejected[0].GetMessage())
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	start := time.Now()
	sender := store.NodeInfo{Name: req.GetNode(), AgentVersion: req.GetAgentVersion(), Seen: start}
	if req.GetReplay() && anyNode {
		sender = store.NodeInfo{} // a replay client is not an agent: no node entry for it
	}
	// Outputs first: a finding is pushed at least once even when the
	// collector dies between the commit and the ack (the agent resends).
	s.outputs.Enqueue(valid)
	res, err := s.store.Ingest(cctx, sender, valid)
	s.m.commit.Observe(time.Since(start).Seconds())
	if err != nil {
		s.m.storeErrs.Inc()
		s.log.Error("ingest: store commit failed; batch not acknowledged", "node", req.GetNode(), "sequence", req.GetSequence(), "err", err)
		return nil, status.Errorf(codes.Unavailable, "store commit failed, batch %d not acknowledged (resend it): %v", req.GetSequence(), err)
	}
	for i, f := range valid {
		if res.Inserted[i] {
			s.m.countIngested(f)
		}
	}
	s.m.duplicates.Add(float64(res.Duplicates))
	resp.Stored, resp.Duplicates = uint32(res.Stored), uint32(res.Duplicates)
	return resp, nil
}
