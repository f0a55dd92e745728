package inspect

import (
	"path"
	"strings"
)

var (
	shellNames      = set("sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "rbash", "hush")
	pkgManagerNames = set("apt", "apt-get", "dpkg", "apk", "yum", "dnf", "microdnf", "rpm", "pip", "pip3")
	toolNames       = set("curl", "wget", "nc", "ncat", "netcat", "socat", "gdb", "strace", "tcpdump", "nmap", "telnet", "ssh", "scp")
	multiNames      = set("busybox", "toybox")
)

func set(xs ...string) map[string]bool {
	m := make(map[string]bool, len(xs))
	for _, x := range xs {
		m[x] = true
	}
	return m
}

// interpreterName returns the interpreter family for an executable's base
// name: python, perl, node, ruby or java ("" otherwise).
func interpreterName(base string) string {
	switch {
	case base == "python" || strings.HasPrefix(base, "python2") || strings.HasPrefix(base, "python3"):
		if strings.HasSuffix(base, "-config") {
			return ""
		}
		return "python"
	case base == "perl" || strings.HasPrefix(base, "perl5"):
		return "perl"
	case base == "node" || base == "nodejs":
		return "node"
	case base == "ruby" || strings.HasPrefix(base, "ruby3") || strings.HasPrefix(base, "ruby2"):
		return "ruby"
	case base == "java":
		return "java"
	}
	return ""
}

// libName classifies shared libraries that decide the image flavour.
func libName(base string) string {
	switch {
	case base == "libc.so.6" || strings.HasPrefix(base, "libc-2.") || strings.HasPrefix(base, "ld-linux"):
		return "glibc"
	case strings.HasPrefix(base, "ld-musl-") || strings.HasPrefix(base, "libc.musl-"):
		return "musl"
	case strings.HasPrefix(base, "libstdc++.so"):
		return "libstdc++"
	}
	return ""
}

// knownName: names worth keeping even when not executable (links, odd modes).
func knownName(base string) bool {
	return shellNames[base] || pkgManagerNames[base] || toolNames[base] || multiNames[base] ||
		interpreterName(base) != "" || libName(base) != ""
}

// pkgFileKind says which parser handles a file at p ("" for none).
func pkgFileKind(p string) string {
	base := path.Base(p)
	dir := path.Dir(p)
	switch {
	case p == "/var/lib/dpkg/status":
		return "dpkg"
	case dir == "/var/lib/dpkg/status.d":
		if strings.HasSuffix(base, ".md5sums") {
			return ""
		}
		return "dpkg"
	case p == "/lib/apk/db/installed" || p == "/usr/lib/apk/db/installed":
		return "apk"
	case p == "/etc/os-release" || p == "/usr/lib/os-release":
		return "os-release"
	case base == "METADATA" && strings.HasSuffix(dir, ".dist-info"):
		return "python"
	case base == "PKG-INFO" && strings.HasSuffix(dir, ".egg-info"):
		return "python"
	case base == "package.json" && isNodeModule(dir):
		return "npm"
	case strings.HasSuffix(base, ".jar") || strings.HasSuffix(base, ".war") || strings.HasSuffix(base, ".ear"):
		return "jar"
	}
	return ""
}

// isNodeModule: dir is node_modules/<name> or node_modules/@scope/<name>.
func isNodeModule(dir string) bool {
	parent := path.Dir(dir)
	if path.Base(parent) == "node_modules" {
		return !strings.HasPrefix(path.Base(dir), "@")
	}
	return path.Base(path.Dir(parent)) == "node_modules" && strings.HasPrefix(path.Base(parent), "@")
}
