package collector

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/correlate"
	"github.com/loupe-dev/loupe/collector/store"
)

// Chunking of query results: a QueryResponse carries at most this many
// findings or about this many bytes.
const (
	chunkFindings = 500
	chunkBytes    = 1 << 20
)

// queryTimeout bounds one query, so a pathological filter cannot hold a
// reader (and the WAL) forever.
const queryTimeout = 2 * time.Minute

// mayRead checks that the peer may read stored findings: under mTLS only
// the admin certificate may, so a compromised node cannot read the fleet's
// findings.
func (s *Server) mayRead(ctx context.Context) error {
	id, err := s.peerIdentity(ctx)
	if err != nil {
		return err
	}
	if id.cert != nil && !id.admin {
		return status.Errorf(codes.PermissionDenied, "client certificate %q may only ingest; queries need the admin certificate (CN %q)",
			id.cert.Subject.CommonName, s.cfg.AdminCN)
	}
	return nil
}

// Query implements the Query stream.
func (s *Server) Query(req *loupev1.QueryRequest, stream loupev1.Collector_QueryServer) error {
	ctx, cancel := context.WithTimeout(stream.Context(), queryTimeout)
	defer cancel()
	if err := s.mayRead(ctx); err != nil {
		return err
	}
	if err := store.CheckQuery(req); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	// Links are computed per chunk, before it is sent (collector/correlate).
	linker := correlate.New(s.store)
	chunk := &loupev1.QueryResponse{}
	size := 0
	flush := func() error {
		if len(chunk.Findings) == 0 {
			return nil
		}
		if err := linker.Annotate(ctx, chunk.Findings); err != nil {
			return err
		}
		err := stream.Send(chunk)
		chunk, size = &loupev1.QueryResponse{}, 0
		return err
	}
	add := func(f *loupev1.Finding) error {
		chunk.Findings = append(chunk.Findings, f)
		size += proto.Size(f)
		if len(chunk.Findings) >= chunkFindings || size >= chunkBytes {
			return flush()
		}
		return nil
	}
	var err error
	if req.GetUser() != "" {
		err = s.queryUser(ctx, linker, req, add)
	} else {
		err = s.store.Query(ctx, req, add)
	}
	if err == nil {
		err = flush()
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrInvalidQuery):
		return status.Error(codes.InvalidArgument, err.Error())
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
	case status.Code(err) != codes.Unknown:
		return err
	}
	s.log.Error("query failed", "err", err)
	return status.Errorf(codes.Internal, "query failed: %v", err)
}

// queryUser answers a query with a user: the audit events of that user
// (at most the query's limit of them, in its order) and the node findings
// each caused, every one of them matching the query's other filters, in
// the query's order, cut at its limit.
func (s *Server) queryUser(ctx context.Context, linker *correlate.Linker, req *loupev1.QueryRequest, fn func(*loupev1.Finding) error) error {
	limit, _ := store.EffectiveLimit(req)
	evq := &loupev1.QueryRequest{User: req.GetUser(), Namespace: req.GetNamespace(), Pod: req.GetPod(), Kinds: correlate.AuditKinds,
		Until: req.GetUntil(), Limit: uint32(limit), Order: req.GetOrder()}
	if t := req.GetSince(); t != nil {
		// An event before since may have caused node findings after it.
		evq.Since = timestamppb.New(t.AsTime().Add(-correlate.DebugWindow))
	}
	var evs []*loupev1.Finding
	if err := s.store.Query(ctx, evq, func(f *loupev1.Finding) error { evs = append(evs, f); return nil }); err != nil {
		return err
	}
	rest := proto.Clone(req).(*loupev1.QueryRequest)
	rest.User = ""
	rows := map[string]*loupev1.Finding{}
	for _, ev := range evs {
		if store.Match(rest, ev) {
			rows[ev.GetId()] = ev
		}
		caused, err := linker.Caused(ctx, ev)
		if err != nil {
			return err
		}
		for _, c := range caused {
			if store.Match(rest, c) {
				rows[c.GetId()] = proto.Clone(c).(*loupev1.Finding)
			}
		}
	}
	out := make([]*loupev1.Finding, 0, len(rows))
	for _, f := range rows {
		out = append(out, f)
	}
	oldest := req.GetOrder() == loupev1.Order_ORDER_OLDEST_FIRST
	slices.SortFunc(out, func(a, b *loupev1.Finding) int {
		c := a.GetTime().AsTime().Compare(b.GetTime().AsTime())
		if c == 0 {
			c = strings.Compare(a.GetId(), b.GetId())
		}
		if !oldest {
			c = -c
		}
		return c
	})
	for _, f := range out[:min(len(out), limit)] {
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

// ConnectedWindow: a node whose last batch arrived less than this long ago
// counts as connected, to this replica or another one. Agents send a batch,
// empty if need be, at least every 30 s (loupe-agent's heartbeat), so every
// replica of a shared store answers the same.
const ConnectedWindow = 90 * time.Second

// ListNodes implements ListNodes.
func (s *Server) ListNodes(ctx context.Context, _ *loupev1.ListNodesRequest) (*loupev1.ListNodesResponse, error) {
	if err := s.mayRead(ctx); err != nil {
		return nil, err
	}
	nodes, err := s.nodes(ctx)
	if err != nil {
		s.log.Error("list nodes failed", "err", err)
		return nil, status.Errorf(codes.Internal, "list nodes: %v", err)
	}
	return &loupev1.ListNodesResponse{Nodes: nodes}, nil
}

// nodes lists the stored nodes with their connection state.
func (s *Server) nodes(ctx context.Context) ([]*loupev1.Node, error) {
	nodes, err := s.store.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	s.mu.Lock()
	for _, n := range nodes {
		n.Connected = s.conns[n.GetName()] > 0 || (n.GetLastSeen() != nil && now.Sub(n.GetLastSeen().AsTime()) < ConnectedWindow)
	}
	s.mu.Unlock()
	return nodes, nil
}
