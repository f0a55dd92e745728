// Command loupe-testapp is the "application" of the harness's test images
// (and, under the name /pause, their pause image). It is a static Go program
// that sleeps until SIGTERM or SIGINT and exits 0.
//
// So that tests and the demo can make the application process itself try to
// execute a shell without needing one, it polls two request files every 100 ms:
//
//   - /tmp/loupe-exec-request: the process replaces itself with execve(2) of
//     the command in the file (one argument a line; the first line is the
//     path, and is also argv[0] when it is the only line). On failure it logs
//     the errno and keeps running; on success the container's main process
//     becomes that command.
//   - /tmp/loupe-spawn-request: the same command is started as a child
//     process (fork + execve) and its output and exit status are logged.
//   - /tmp/loupe-start-request: the same, in the background: the child keeps
//     running beside the application (a second process of the container).
//
// With $LOUPE_TESTAPP_LISTEN=HOST:PORT it also listens on that TCP address
// (accepting and closing connections), as a server application does.
//
// SIGUSR1 is a shortcut for an in-place execve("/bin/sh", ["sh","-c","id"]).
// Every line it logs goes to stdout, prefixed "loupe-testapp: ".
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

const (
	execRequest  = "/tmp/loupe-exec-request"
	spawnRequest = "/tmp/loupe-spawn-request"
	startRequest = "/tmp/loupe-start-request"
)

func startBackground(argv []string) {
	if len(argv) == 0 {
		return
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{} // no LOUPE_TESTAPP_LISTEN: the child does not compete for the port
	if err := cmd.Start(); err != nil {
		logf("start %q: %v", argv, err)
		return
	}
	logf("started %q, pid %d", argv, cmd.Process.Pid)
	go func() { err := cmd.Wait(); logf("%q exited: %v", argv, err) }()
}

func listen(addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		logf("listen %s: %v", addr, err)
		return
	}
	logf("listening on %s", l.Addr())
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stdout, "loupe-testapp: "+format+"\n", args...)
}

// readRequest reads and removes a request file; it returns nil when there is none.
func readRequest(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	_ = os.Remove(path)
	var argv []string
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if l != "" {
			argv = append(argv, l)
		}
	}
	return argv
}

func execInPlace(argv []string) {
	if len(argv) == 0 {
		return
	}
	logf("execve %q", argv)
	err := syscall.Exec(argv[0], argv, os.Environ())
	var errno syscall.Errno
	if errors.As(err, &errno) {
		logf("execve %s failed: errno=%d (%v)", argv[0], int(errno), errno)
		return
	}
	logf("execve %s failed: %v", argv[0], err)
}

func spawn(argv []string) {
	if len(argv) == 0 {
		return
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	out, err := cmd.CombinedOutput()
	logf("spawn %q: output %q, err %v", argv, out, err)
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "exit" {
		// "exit [code]": terminate at once, for tests of short-lived containers.
		code := 0
		if len(os.Args) > 2 {
			_, _ = fmt.Sscan(os.Args[2], &code)
		}
		os.Exit(code)
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)
	logf("started, pid %d", os.Getpid())
	if a := os.Getenv("LOUPE_TESTAPP_LISTEN"); a != "" {
		listen(a)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGUSR1 {
				execInPlace([]string{"/bin/sh", "-c", "id"})
				continue
			}
			logf("received %v, exiting", s)
			return
		case <-tick.C:
			execInPlace(readRequest(execRequest))
			spawn(readRequest(spawnRequest))
			startBackground(readRequest(startRequest))
		}
	}
}
