package classify

import (
	"path"
	"strings"

	"github.com/loupe-dev/loupe/bpf"
)

var shells = toSet(bpf.DefaultShellNames)

var multiCall = toSet(bpf.MultiCallNames)

// tools are programs whose attempted exec in a container is suspicious
// (network, debugging, privilege and package tools).
var tools = toSet([]string{"curl", "wget", "nc", "ncat", "netcat", "socat", "telnet", "ssh", "scp", "ftp", "tftp",
	"nmap", "tcpdump", "gdb", "strace", "ltrace", "python", "python2", "python3", "perl", "ruby", "node", "php",
	"lua", "busybox", "toybox", "apt", "apt-get", "dpkg", "apk", "yum", "dnf", "rpm", "pip", "pip3", "npm",
	"su", "sudo", "chmod", "chown", "mount", "nsenter", "unshare", "id", "whoami", "uname", "ls", "cat", "ps",
	"env", "kubectl", "crictl", "docker", "base64", "xxd", "dd", "openssl"})

// binDirs are the directories commands are looked up in.
var binDirs = toSet([]string{"/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin", "/busybox"})

func toSet(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

func base(p string) string {
	if p == "" {
		return ""
	}
	return path.Base(p)
}

// shellKind says why an exec counts as a shell: "" (it does not), "shell",
// "applet" (busybox sh) or "inline" (python -c and the like).
func shellKind(ev *bpf.Event) (kind, name string) {
	names := []string{base(ev.Filename), base(ev.Path), base(ev.Interpreter)}
	if len(ev.Argv) > 0 {
		names = append(names, base(ev.Argv[0]))
	}
	for _, n := range names {
		if shells[n] {
			return "shell", n
		}
	}
	// busybox/toybox: the applet is the name it was called by, or argv[1].
	if multiCall[base(ev.Path)] || multiCall[base(ev.Filename)] {
		applet := base(ev.Filename)
		if multiCall[applet] && len(ev.Argv) > 1 {
			applet = base(ev.Argv[1])
		}
		if shells[applet] {
			return "applet", applet
		}
	}
	prog := base(ev.Path)
	if prog == "" {
		prog = base(ev.Filename)
	}
	if flag := inlineFlag(prog); flag != "" && hasLeadingFlag(ev.Argv, flag) {
		return "inline", prog + " " + flag
	}
	return "", ""
}

// inlineFlag returns the flag that makes prog run code from its arguments.
func inlineFlag(prog string) string {
	switch {
	case strings.HasPrefix(prog, "python"), strings.HasPrefix(prog, "pypy"):
		return "-c"
	case strings.HasPrefix(prog, "perl"), strings.HasPrefix(prog, "ruby"), prog == "node", prog == "nodejs",
		strings.HasPrefix(prog, "php"), strings.HasPrefix(prog, "lua"):
		return "-e"
	}
	return ""
}

// hasLeadingFlag reports whether flag (e.g. "-c") appears among the options
// before the first operand, alone or as the last of grouped letters ("-uc").
func hasLeadingFlag(argv []string, flag string) bool {
	letter := flag[1:]
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		if a == "--" || !strings.HasPrefix(a, "-") || a == "-" {
			return false
		}
		if a == flag || a == "--eval" && flag == "-e" || !strings.HasPrefix(a, "--") && strings.HasSuffix(a, letter) {
			return true
		}
	}
	return false
}

// suspiciousTarget reports whether a failed exec's target is a shell, a
// common tool, or a command in a standard bin directory.
func suspiciousTarget(filename string) bool {
	n := base(filename)
	return shells[n] || tools[n] || multiCall[n] || binDirs[path.Dir(filename)]
}
