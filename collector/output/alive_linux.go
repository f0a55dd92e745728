package output

import (
	"crypto/tls"
	"errors"
	"net"
	"syscall"
)

// peerState peeks at the socket without blocking: closed when the peer sent
// EOF or reset it, pending when it sent bytes.
func peerState(c net.Conn) (closed, pending bool) {
	if t, ok := c.(*tls.Conn); ok {
		c = t.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false, true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true, false
	}
	var n int
	var perr error
	if err := rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, perr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // never wait for readability
	}); err != nil {
		return true, false
	}
	switch {
	case errors.Is(perr, syscall.EAGAIN):
		return false, false
	case perr != nil || n == 0:
		return true, false
	}
	return false, true
}
