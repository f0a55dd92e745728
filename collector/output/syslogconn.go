package output

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/loupe-dev/loupe/internal/tlsutil"
)

// syslogSender writes octet-counted frames on one TCP or TLS connection,
// dialled when needed and dropped on any error.
//
// Syslog has no acknowledgement: a write that returned is taken as
// delivered. Before reusing an idle connection the sender checks that the
// receiver has not closed it, so a restarted receiver does not swallow the
// next findings.
type syslogSender struct {
	addr string
	tls  *tls.Config // nil for tcp://
	conn net.Conn
}

func newSyslogSender(c Config) (*syslogSender, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, fmt.Errorf("output %s: %w", c.Name, err)
	}
	s := &syslogSender{addr: u.Host}
	if u.Scheme == "tls" {
		host, _, _ := net.SplitHostPort(u.Host)
		s.tls, err = tlsutil.ClientConfig(tlsutil.ClientOptions{CAFile: c.CAFile, ServerName: host})
		if err != nil {
			return nil, fmt.Errorf("output %s: %w", c.Name, err)
		}
	}
	return s, nil
}

func (s *syslogSender) send(ctx context.Context, msg []byte) error {
	if s.conn != nil && !alive(s.conn) {
		s.close()
	}
	if s.conn == nil {
		d := &net.Dialer{Timeout: sendTimeout}
		var conn net.Conn
		var err error
		if s.tls != nil {
			conn, err = (&tls.Dialer{NetDialer: d, Config: s.tls}).DialContext(ctx, "tcp", s.addr)
		} else {
			conn, err = d.DialContext(ctx, "tcp", s.addr)
		}
		if err != nil {
			return fmt.Errorf("connect to syslog %s: %w", s.addr, err)
		}
		s.conn = conn
	}
	s.conn.SetWriteDeadline(time.Now().Add(sendTimeout))
	if _, err := s.conn.Write(frame(msg)); err != nil {
		s.close()
		return fmt.Errorf("write to syslog %s: %w", s.addr, err)
	}
	return nil
}

// alive reports whether the receiver kept the connection open. A syslog
// receiver never writes, so a peer that sent EOF (or an RST) is gone; the
// check costs one non-blocking peek (peerState), plus a 1 ms read when the
// peer did send something (a TLS close_notify or session ticket).
func alive(c net.Conn) bool {
	closed, pending := peerState(c)
	if closed || !pending {
		return !closed
	}
	c.SetReadDeadline(time.Now().Add(time.Millisecond))
	var b [1]byte
	_, err := c.Read(b[:])
	c.SetReadDeadline(time.Time{})
	return err == nil || errors.Is(err, os.ErrDeadlineExceeded)
}

func (s *syslogSender) close() error {
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return err
}
