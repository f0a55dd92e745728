package output

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/loupe-dev/loupe/internal/tlsutil"
)

// sendTimeout bounds one delivery attempt (dial, TLS, request and response).
const sendTimeout = 10 * time.Second

// maxTokenBytes bounds a token file.
const maxTokenBytes = 4096

// permanent reports an HTTP status that refuses the finding itself, so that
// sending it again cannot succeed: a 4xx, except those that say something
// about the request's moment or credentials — 408 and 429 (later), 401 and
// 403 (a token rotated on one side first), 404 (a receiver being deployed)
// — which are retried until max-age like any failure.
func permanent(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
		return false
	}
	return code >= 400 && code < 500
}

// rejectedError is a permanent refusal by the receiver (see permanent):
// sending the same finding again cannot succeed.
type rejectedError struct {
	status int
	body   string
}

func (e *rejectedError) Error() string {
	return fmt.Sprintf("receiver rejected the finding: HTTP %d: %s", e.status, e.body)
}

// maxRetryAfter bounds the wait a receiver may ask for with Retry-After.
const maxRetryAfter = 10 * time.Minute

// retryLaterError is a receiver's request to retry no sooner than after
// wait (HTTP 429 or 503 with a Retry-After header).
type retryLaterError struct {
	err  error
	wait time.Duration
}

func (e *retryLaterError) Error() string {
	return fmt.Sprintf("%v (Retry-After %s)", e.err, e.wait)
}

func (e *retryLaterError) Unwrap() error { return e.err }

// retryAfter parses a Retry-After header (delay-seconds or an HTTP date,
// RFC 9110 10.2.3), bounded to [0, maxRetryAfter]; ok is false when the
// header is absent or malformed.
func retryAfter(h string, now time.Time) (time.Duration, bool) {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0, false
	}
	var d time.Duration
	if n, err := strconv.ParseUint(h, 10, 32); err == nil {
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(h); err == nil {
		d = t.Sub(now)
	} else {
		return 0, false
	}
	return min(max(d, 0), maxRetryAfter), true
}

// waitOf is the wait a receiver asked for with err (0 when none).
func waitOf(err error) time.Duration {
	var r *retryLaterError
	if errors.As(err, &r) {
		return r.wait
	}
	return 0
}

// httpSender POSTs one JSON body per finding.
type httpSender struct {
	url       string
	tokenFile string
	client    *http.Client
}

func newHTTPSender(c Config) (*httpSender, error) {
	tlsCfg, err := tlsutil.ClientConfig(tlsutil.ClientOptions{CAFile: c.CAFile})
	if err != nil {
		return nil, fmt.Errorf("output %s: %w", c.Name, err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	tr.MaxIdleConnsPerHost = 2
	s := &httpSender{url: c.URL, tokenFile: c.TokenFile, client: &http.Client{
		Transport: tr,
		Timeout:   sendTimeout,
		// A redirect is a misconfiguration: report it rather than follow it
		// (a followed 301/302 would turn the POST into a GET).
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	if s.tokenFile != "" {
		if _, err := s.token(); err != nil {
			return nil, fmt.Errorf("output %s: %w", c.Name, err)
		}
	}
	return s, nil
}

// token reads the bearer token; the file is read for every request, so a
// rotated token is used at once.
func (s *httpSender) token() (string, error) {
	f, err := os.Open(s.tokenFile)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenBytes+1))
	if err != nil {
		return "", fmt.Errorf("read token file %s: %w", s.tokenFile, err)
	}
	tok := strings.TrimSpace(string(b))
	if len(b) > maxTokenBytes || tok == "" || strings.ContainsAny(tok, "\r\n") {
		return "", fmt.Errorf("token file %s: want one line of at most %d bytes", s.tokenFile, maxTokenBytes)
	}
	return tok, nil
}

func (s *httpSender) send(ctx context.Context, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "loupe-collector")
	if s.tokenFile != "" {
		tok, err := s.token()
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) { // its message holds the URL, whose path may be a secret
			err = fmt.Errorf("POST %s: %w", redact(s.url), ue.Err)
		}
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return nil
	case permanent(c):
		return &rejectedError{status: c, body: oneLine(strings.TrimSpace(string(msg)))}
	default:
		err := fmt.Errorf("receiver answered HTTP %d: %s", c, oneLine(strings.TrimSpace(string(msg))))
		if c == http.StatusTooManyRequests || c == http.StatusServiceUnavailable {
			if d, ok := retryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
				return &retryLaterError{err: err, wait: d}
			}
		}
		return err
	}
}

func (s *httpSender) close() error {
	s.client.CloseIdleConnections()
	return nil
}

// isRejected reports a permanent refusal.
func isRejected(err error) bool {
	var r *rejectedError
	return errors.As(err, &r)
}
