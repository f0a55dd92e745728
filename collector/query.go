package collector

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
	chunk := &loupev1.QueryResponse{}
	size := 0
	flush := func() error {
		if len(chunk.Findings) == 0 {
			return nil
		}
		err := stream.Send(chunk)
		chunk, size = &loupev1.QueryResponse{}, 0
		return err
	}
	err := correlate.Query(ctx, s.store, req, func(f *loupev1.Finding) error {
		chunk.Findings = append(chunk.Findings, f)
		size += proto.Size(f)
		if len(chunk.Findings) >= chunkFindings || size >= chunkBytes {
			return flush()
		}
		return nil
	})
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

// ConnectedWindow: a node whose last batch arrived less than this long ago
// counts as connected, to this replica or another one. Agents send a batch,
// empty if need be, at least every 30 s (loupe-agent's heartbeat), so every
// replica of a shared store answers the same.
const ConnectedWindow = 90 * time.Second

// ListNodes implements ListNodes.
func (s *Server) ListNodes(ctx context.Context, req *loupev1.ListNodesRequest) (*loupev1.ListNodesResponse, error) {
	if err := s.mayRead(ctx); err != nil {
		return nil, err
	}
	nodes, err := s.nodes(ctx)
	if err != nil {
		s.log.Error("list nodes failed", "err", err)
		return nil, status.Errorf(codes.Internal, "list nodes: %v", err)
	}
	if req.GetSessionsSince() != nil {
		if err := s.addSessions(ctx, nodes, req); err != nil {
			if errors.Is(err, store.ErrInvalidQuery) {
				return nil, status.Error(codes.InvalidArgument, err.Error())
			}
			s.log.Error("list node sessions failed", "err", err)
			return nil, status.Errorf(codes.Internal, "list node sessions: %v", err)
		}
	}
	return &loupev1.ListNodesResponse{Nodes: nodes}, nil
}

// addSessions fills each node's sessions in the request's range, asking the
// store for MaxFilterValues nodes at a time.
func (s *Server) addSessions(ctx context.Context, nodes []*loupev1.Node, req *loupev1.ListNodesRequest) error {
	since, until := req.GetSessionsSince().AsTime(), time.Now()
	if u := req.GetSessionsUntil(); u != nil {
		until = u.AsTime()
	}
	if !until.After(since) {
		return fmt.Errorf("%w: sessions_until %s is not after sessions_since %s", store.ErrInvalidQuery,
			until.Format(time.RFC3339), since.Format(time.RFC3339))
	}
	byName := make(map[string]*loupev1.Node, len(nodes))
	for chunk := range slices.Chunk(nodes, store.MaxFilterValues) {
		names := make([]string, len(chunk))
		for i, n := range chunk {
			names[i] = n.GetName()
			byName[n.GetName()] = n
		}
		sessions, err := s.store.Sessions(ctx, names, since, until)
		if err != nil {
			return err
		}
		for _, ss := range sessions {
			if n := byName[ss.Node]; n != nil {
				n.Sessions = append(n.Sessions, &loupev1.AgentSession{Start: timestamppb.New(ss.Start), End: timestamppb.New(ss.End)})
			}
		}
	}
	return nil
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
