package collector

import (
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/correlate"
)

// Rejection reasons: the values of Rejection.reason and of the reason label
// of loupe_collector_rejected_total. The set is closed (bounded label).
const (
	ReasonEmpty           = "empty"
	ReasonMissingID       = "missing_id"
	ReasonInvalidID       = "invalid_id"
	ReasonMissingKind     = "missing_kind"
	ReasonInvalidKind     = "invalid_kind"
	ReasonMissingTime     = "missing_time"
	ReasonInvalidTime     = "invalid_time"
	ReasonMissingSeverity = "missing_severity"
	ReasonInvalidSeverity = "invalid_severity"
	ReasonNodeMismatch    = "node_mismatch"
	ReasonTooLarge        = "too_large"
	ReasonAuditFromNode   = "audit_from_node"
)

// Reasons lists every rejection reason.
var Reasons = []string{ReasonEmpty, ReasonMissingID, ReasonInvalidID, ReasonMissingKind, ReasonInvalidKind,
	ReasonMissingTime, ReasonInvalidTime, ReasonMissingSeverity, ReasonInvalidSeverity, ReasonNodeMismatch, ReasonTooLarge, ReasonAuditFromNode}

// Bounds on one finding. Agents bound what they collect far below these;
// anything larger is broken or hostile.
const (
	MaxFindingBytes = 64 << 10
	MaxArgv         = 1024
	MaxAncestors    = 64
	MaxDetails      = 64
	MaxNIST         = 256
)

// Times a finding may carry: the store keeps nanoseconds since 1970 in an int64.
var (
	minTime = time.Unix(0, 0)
	maxTime = time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC)
)

// ValidateFinding checks one finding of a batch sent for node. It returns
// nil when the finding may be stored, after normalising it: the id in
// canonical UUID form, an empty node set to node. Unless anyNode is set (an
// admin client, or no client identity), a finding naming another node is
// rejected.
func ValidateFinding(f *loupev1.Finding, node string, anyNode bool) *loupev1.Rejection {
	rej := func(reason, format string, a ...any) *loupev1.Rejection {
		return &loupev1.Rejection{Id: truncate(f.GetId(), 64), Reason: reason, Message: fmt.Sprintf(format, a...)}
	}
	if f == nil {
		return &loupev1.Rejection{Reason: ReasonEmpty, Message: "empty finding"}
	}
	if f.GetId() == "" {
		return rej(ReasonMissingID, "finding has no id")
	}
	id, err := uuid.Parse(f.GetId())
	if err != nil {
		return rej(ReasonInvalidID, "finding id %q is not a UUID", truncate(f.GetId(), 64))
	}
	if f.GetKind() == loupev1.Kind_KIND_UNSPECIFIED {
		return rej(ReasonMissingKind, "finding %s has no kind", id)
	}
	if _, ok := loupev1.Kind_name[int32(f.GetKind())]; !ok {
		return rej(ReasonInvalidKind, "finding %s has unknown kind %d", id, f.GetKind())
	}
	if f.GetTime() == nil {
		return rej(ReasonMissingTime, "finding %s has no time", id)
	}
	if err := f.GetTime().CheckValid(); err != nil {
		return rej(ReasonInvalidTime, "finding %s: invalid time: %v", id, err)
	}
	if t := f.GetTime().AsTime(); t.Before(minTime) || !t.Before(maxTime) {
		return rej(ReasonInvalidTime, "finding %s: time %s is outside 1970..2261", id, t.Format(time.RFC3339))
	}
	if f.GetSeverity() == loupev1.Severity_SEVERITY_UNSPECIFIED {
		return rej(ReasonMissingSeverity, "finding %s has no severity", id)
	}
	if _, ok := loupev1.Severity_name[int32(f.GetSeverity())]; !ok {
		return rej(ReasonInvalidSeverity, "finding %s has unknown severity %d", id, f.GetSeverity())
	}
	switch {
	case f.GetNode() == "" && f.GetAudit() != nil:
		// A Kubernetes audit event happened on no node.
	case f.GetNode() == "":
		f.Node = node
	case f.GetNode() != node && !anyNode:
		return rej(ReasonNodeMismatch, "finding %s is for node %q but the stream speaks for %q", id, truncate(f.GetNode(), 64), node)
	}
	if (f.GetAudit() != nil || slices.Contains(correlate.AuditKinds, f.GetKind())) && !anyNode {
		// Who did it comes from the API server's audit webhook, or from an
		// admin replaying an export: a node must not name users.
		return rej(ReasonAuditFromNode, "finding %s is a Kubernetes audit event: those come from the audit webhook (--audit-listen), not from agents", id)
	}
	// Computed when read, never taken from a sender.
	f.Links, f.K8SUser = nil, f.GetAudit().GetUser()
	if n := len(f.GetProcess().GetArgv()); n > MaxArgv {
		return rej(ReasonTooLarge, "finding %s has %d argv entries (max %d)", id, n, MaxArgv)
	}
	if n := len(f.GetProcess().GetAncestors()); n > MaxAncestors {
		return rej(ReasonTooLarge, "finding %s has %d ancestors (max %d)", id, n, MaxAncestors)
	}
	if n := len(f.GetDetails()); n > MaxDetails {
		return rej(ReasonTooLarge, "finding %s has %d details (max %d)", id, n, MaxDetails)
	}
	if n := len(f.GetControl().GetNist()); n > MaxNIST {
		return rej(ReasonTooLarge, "finding %s has %d NIST tags (max %d)", id, n, MaxNIST)
	}
	if n := proto.Size(f); n > MaxFindingBytes {
		return rej(ReasonTooLarge, "finding %s is %d bytes (max %d)", id, n, MaxFindingBytes)
	}
	f.Id = id.String()
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary so the message stays valid UTF-8.
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}
