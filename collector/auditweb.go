package collector

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	loupev1 "github.com/loupe-dev/loupe/api/v1"
	"github.com/loupe-dev/loupe/collector/audit"
	"github.com/loupe-dev/loupe/collector/store"
	"github.com/loupe-dev/loupe/internal/tlsutil"
	"github.com/loupe-dev/loupe/internal/tokenfile"
)

// DefaultAuditClientCN is the client certificate CommonName accepted from
// the API server's audit webhook.
const DefaultAuditClientCN = "kube-apiserver"

// AuditPath is where the audit webhook posts its EventList batches.
const AuditPath = "/audit"

// auditWeb is the audit webhook backend (--audit-listen).
type auditWeb struct {
	s      *Server
	tokens *tokenfile.File // nil without --audit-token-file
	certCN string          // accepted client certificate CN; "" without --client-ca
}

// newAuditWeb prepares the audit webhook listener: HTTPS with the
// collector's certificate; the API server authenticates with the client
// certificate (signed by --client-ca, CN --audit-client-cn) or the bearer
// token (sha256 in --audit-token-file) of its webhook kubeconfig.
func (s *Server) newAuditWeb() error {
	a := &auditWeb{s: s}
	var err error
	if s.cfg.AuditTokenFile != "" {
		if a.tokens, err = tokenfile.Open(s.cfg.AuditTokenFile, "audit token file", s.log); err != nil {
			return err
		}
	}
	if s.cfg.TLS.CertFile == "" {
		return errors.New("--audit-listen needs --tls-cert: the API server's audit webhook sends who did what, over HTTPS only")
	}
	tlsCfg, err := tlsutil.ServerConfig(s.cfg.TLS)
	if err != nil {
		return fmt.Errorf("audit webhook TLS: %w", err)
	}
	if tlsCfg.ClientCAs != nil {
		a.certCN = s.cfg.AuditClientCN
		tlsCfg.ClientAuth = tls.VerifyClientCertIfGiven // a token is the other way in
	}
	if a.tokens == nil && a.certCN == "" {
		return errors.New("--audit-listen needs --audit-token-file or --client-ca: the API server authenticates with the token or client certificate of its webhook kubeconfig")
	}
	mux := http.NewServeMux()
	mux.Handle(AuditPath, a)
	s.auditSrv = &http.Server{Handler: mux, TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	if s.auditLis, err = net.Listen("tcp", s.cfg.AuditListen); err != nil {
		return fmt.Errorf("audit webhook listener (--audit-listen %s): %w", s.cfg.AuditListen, err)
	}
	return nil
}

// authorized reports who the caller is, or "" when it may not post.
func (a *auditWeb) authorized(r *http.Request) string {
	if a.certCN != "" && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		if cn := r.TLS.VerifiedChains[0][0].Subject.CommonName; cn == a.certCN {
			return "certificate " + cn
		}
	}
	if h := r.Header.Get("Authorization"); a.tokens != nil && h != "" {
		if scheme, tok, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
			if name, ok := a.tokens.Lookup(strings.TrimSpace(tok), time.Now()); ok {
				return "token " + name
			}
		}
	}
	return ""
}

// ServeHTTP stores the kept events of one EventList. 200: stored (or
// nothing to keep); 400: a bad batch, which the API server should not
// resend; 503: the store failed, resend.
func (a *auditWeb) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := a.s
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST audit.k8s.io/v1 EventList batches here", http.StatusMethodNotAllowed)
		return
	}
	if a.authorized(r) == "" {
		s.m.auditBatches.WithLabelValues("unauthenticated").Inc()
		http.Error(w, "unauthenticated: use the client certificate or the token of the audit webhook kubeconfig", http.StatusUnauthorized)
		return
	}
	list, err := audit.Decode(r.Body)
	if err != nil {
		s.m.auditBatches.WithLabelValues("bad_batch").Inc()
		s.log.Warn("audit webhook: batch refused", "remote", r.RemoteAddr, "err", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var (
		keep []*loupev1.Finding
		seen = map[string]bool{}
	)
	for i := range list.Items {
		f := audit.Finding(&list.Items[i])
		if f == nil {
			s.m.auditEvents.WithLabelValues("ignored").Inc()
			continue
		}
		if rej := ValidateFinding(f, "", true); rej != nil {
			s.m.auditEvents.WithLabelValues("invalid").Inc()
			s.m.rejected.WithLabelValues(rej.GetReason()).Inc()
			s.log.Warn("audit webhook: event refused", "audit_id", f.GetAudit().GetAuditId(), "reason", rej.GetReason(), "err", rej.GetMessage())
			continue
		}
		if seen[f.GetId()] {
			continue // another stage of the same request
		}
		seen[f.GetId()] = true
		keep = append(keep, f)
	}
	if len(keep) > 0 {
		s.outputs.Enqueue(keep)
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), commitTimeout)
		defer cancel()
		res, err := s.store.Ingest(ctx, store.NodeInfo{}, keep)
		if err != nil {
			s.m.storeErrs.Inc()
			s.m.auditBatches.WithLabelValues("store_error").Inc()
			s.log.Error("audit webhook: store commit failed; the API server resends the batch", "events", len(list.Items), "err", err)
			http.Error(w, "store commit failed; resend", http.StatusServiceUnavailable)
			return
		}
		for i, f := range keep {
			if res.Inserted[i] {
				s.m.countIngested(f)
				s.m.auditEvents.WithLabelValues("stored").Inc()
			} else {
				s.m.auditEvents.WithLabelValues("duplicate").Inc()
			}
		}
	}
	s.m.auditBatches.WithLabelValues("ok").Inc()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintln(w, `{"kind":"Status","apiVersion":"v1","status":"Success"}`)
}
