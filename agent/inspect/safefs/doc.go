// Package safefs reads a hostile directory tree (a container layer or root
// filesystem) as root without ever leaving it: every lookup goes through
// openat2(RESOLVE_IN_ROOT|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS|
// RESOLVE_NO_XDEV), files are first opened O_PATH|O_NOFOLLOW, fstat'ed, and
// only reopened for reading when they are regular files, so FIFOs, sockets and
// device nodes are never opened for I/O and a file swapped for a symlink
// mid-scan is never followed. Nothing is ever written, executed or changed.
package safefs
