package compliance

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestResources runs every resource type with passing, failing, skipped and
// error cases against real files.
func TestResources(t *testing.T) {
	root := distrolessTree(t)
	tree(t, root, map[string]string{
		"etc/app.conf":                  "# comment\nlisten = 8080\n[tls]\nenabled = yes\n; other\n",
		"etc/sshd_config":               "PermitRootLogin no\nPasswordAuthentication   no\n",
		"etc/app.json":                  `{"server":{"port":8443,"tls":true,"hosts":["a","b"]}}`,
		"etc/app.yaml":                  "server:\n  port: 8443\n  hosts: [a, b]\n",
		"etc/bad.json":                  `{"server":`,
		"etc/key/id":                    "-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n",
		"etc/loop1":                     "->loop2",
		"etc/loop2":                     "->loop1",
		"etc/ca-link":                   "->ssl/certs/ca-certificates.crt",
		"etc/empty/":                    "",
		"usr/lib/os-release":            osRel,
		"var/lib/dpkg/status.d/openssl": "Package: openssl\nVersion: 3.0.11-1~deb12u2\nArchitecture: amd64\nStatus: install ok installed\n",
	})
	if err := syscall.Mkfifo(filepath.Join(root, "etc/fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(root, "etc/app.conf"), 0o664); err != nil {
		t.Fatal(err)
	}
	nonroot := ContainerFacts{UserKnown: true, UID: 65532, SpecKnown: true, CapBounding: []string{"CAP_CHOWN"}}
	cases := []struct {
		name, test string
		facts      ContainerFacts
		want       Status
		msg        string // substring of the message
	}{
		{"file exists", `file: {path: /etc/passwd, type: file, owner: root, group: "0", mode: "0644", size_min: 10}`, nonroot, Passed, ""},
		{"file via symlink", `file: {path: /etc/ca-link, type: file, content_matches: "BEGIN CERTIFICATE"}`, nonroot, Passed, ""},
		{"file symlink type", `file: {path: /etc/ca-link, type: symlink}`, nonroot, Passed, ""},
		{"file missing", `file: {path: /etc/nope}`, nonroot, Failed, "does not exist"},
		{"file absent ok", `file: {path: /etc/nope, exists: false}`, nonroot, Passed, ""},
		{"file mode_max", `file: {path: /etc/app.conf, mode_max: "0644"}`, nonroot, Failed, "extra bits 0020"},
		{"file owner name", `file: {path: /etc/passwd, owner: nonroot}`, nonroot, Failed, "owner is root (0)"},
		{"file sha256", `file: {path: /etc/group, sha256: "` + hashBytes([]byte(groupOK)) + `"}`, nonroot, Passed, ""},
		{"file sha256 differs", `file: {path: /etc/group, sha256: "` + strings.Repeat("0", 64) + `"}`, nonroot, Failed, "sha256 is"},
		{"file content not", `file: {path: /etc/app.conf, content_not_matches: "^listen = 80"}`, nonroot, Failed, "line 2"},
		{"file size_max", `file: {path: /etc/passwd, size_max: 5}`, nonroot, Failed, "size is"},
		{"file fifo content error", `file: {path: /etc/fifo, content_matches: x}`, nonroot, Error, "not a regular file"},
		{"file symlink loop error", `file: {path: /etc/loop1}`, nonroot, Error, "too many levels"},
		{"file escape stays inside", `file: {path: /etc/ca-link, exists: true}`, nonroot, Passed, ""},
		{"directory", `directory: {path: /etc/ssl}`, nonroot, Passed, ""},
		{"directory is file", `directory: {path: /etc/passwd}`, nonroot, Failed, "is a file"},
		{"directory empty", `directory: {path: /etc/empty, empty: true}`, nonroot, Passed, ""},
		{"directory not empty", `directory: {path: /etc/ssl, empty: true}`, nonroot, Failed, "certs"},
		{"directory no key", `directory: {path: /etc/ssl, no_file_matches: "PRIVATE KEY-----"}`, nonroot, Passed, ""},
		{"directory key found", `directory: {path: /etc, no_file_matches: "PRIVATE KEY-----"}`, nonroot, Failed, "/etc/key/id"},
		{"parse_config", `parse_config: {path: /etc/app.conf, key: listen, equals: "8080"}`, nonroot, Passed, ""},
		{"parse_config section", `parse_config: {path: /etc/app.conf, section: tls, key: enabled, matches: "^(yes|true)$", comment_chars: "#;"}`, nonroot, Passed, ""},
		{"parse_config wrong", `parse_config: {path: /etc/app.conf, key: listen, equals: "443"}`, nonroot, Failed, `"8080"`},
		{"parse_config space sep", `parse_config: {path: /etc/sshd_config, separator: " ", key: PasswordAuthentication, equals: "no"}`, nonroot, Passed, ""},
		{"parse_config absent", `parse_config: {path: /etc/app.conf, key: debug, absent: true}`, nonroot, Passed, ""},
		{"parse_config missing file", `parse_config: {path: /etc/none.conf, key: a}`, nonroot, Error, "does not exist"},
		{"json", `json: {path: /etc/app.json, query: server.port, equals: "8443"}`, nonroot, Passed, ""},
		{"json list", `json: {path: /etc/app.json, query: server.hosts.1, equals: b}`, nonroot, Passed, ""},
		{"json bool", `json: {path: /etc/app.json, query: server.tls, equals: "false"}`, nonroot, Failed, `"true"`},
		{"json missing key", `json: {path: /etc/app.json, query: server.debug}`, nonroot, Failed, "not set"},
		{"json parse error", `json: {path: /etc/bad.json, query: server}`, nonroot, Error, "parse /etc/bad.json"},
		{"yaml", `yaml: {path: /etc/app.yaml, query: server.hosts.0, equals: a}`, nonroot, Passed, ""},
		{"yaml absent", `yaml: {path: /etc/app.yaml, query: server.debug, exists: false}`, nonroot, Passed, ""},
		{"packages", `packages: {name: openssl, ecosystem: deb, version: ">= 3.0.11"}`, nonroot, Passed, ""},
		{"packages old", `packages: {name: openssl, version: ">= 3.0.13"}`, nonroot, Failed, "3.0.11-1~deb12u2"},
		{"packages not installed", `packages: {name: curl, installed: false}`, nonroot, Passed, ""},
		{"packages missing", `packages: {name: curl}`, nonroot, Failed, "not installed"},
		{"os_release", `os_release: {field: ID, equals: debian}`, nonroot, Passed, ""},
		{"os_release fail", `os_release: {field: VERSION_ID, matches: "^11"}`, nonroot, Failed, `"12"`},
		{"passwd", `passwd: {user: nonroot, uid: 65532, gid: 65532, home: /home/nonroot, shell_matches: "nologin$"}`, nonroot, Passed, ""},
		{"passwd shell", `passwd: {user: root, shell_not_matches: "nologin$"}`, nonroot, Failed, "/sbin/nologin"},
		{"passwd missing user", `passwd: {user: app}`, nonroot, Failed, "no user app"},
		{"passwd uid0", `passwd: {only_root_uid0: true}`, nonroot, Passed, ""},
		{"group", `group: {name: nonroot, gid: 65532}`, nonroot, Passed, ""},
		{"group absent", `group: {name: docker, exists: false}`, nonroot, Passed, ""},
		{"group missing", `group: {name: docker}`, nonroot, Failed, "no group docker"},
		{"container nonroot", `container: {user_not_root: true, privileged: false, read_only_rootfs: false, capabilities_not_allowed: [SYS_ADMIN, NET_RAW]}`, nonroot, Passed, ""},
		{"container root", `container: {user_not_root: true}`, ContainerFacts{UserKnown: true, SpecKnown: true}, Failed, "uid 0"},
		{"container caps", `container: {capabilities_not_allowed: [chown]}`, nonroot, Failed, "CAP_CHOWN"},
		{"container offline", `container: {read_only_rootfs: true}`, ContainerFacts{UserKnown: true, UID: 1}, Skipped, "offline"},
		{"no_shell", `no_shell: {}`, nonroot, Passed, ""},
		{"no_package_manager", `no_package_manager: {}`, nonroot, Passed, ""},
		{"no_findings suid", `no_findings: {kind: suid}`, nonroot, Passed, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			run := evalProfile(t, root, oneTest(c.test), c.facts)
			r := run.Controls[0].Results[0]
			if r.Status != c.want || !strings.Contains(r.Message, c.msg) {
				t.Errorf("status %s message %q (code_desc %q); want %s with %q", r.Status, r.Message, r.CodeDesc, c.want, c.msg)
			}
			if r.CodeDesc == "" {
				t.Error("empty code_desc")
			}
		})
	}
}

// TestShellAndFindings: no_shell and no_findings against the real scanner's
// detections; the failure names /bin/sh.
func TestShellAndFindings(t *testing.T) {
	root := distrolessTree(t)
	dash, err := os.ReadFile("/bin/dash")
	if err != nil {
		t.Skip("no /bin/dash on this host")
	}
	tree(t, root, map[string]string{"bin/sh": "->dash", "usr/bin/apt": "#!/bin/sh\necho\n"})
	if err := os.WriteFile(filepath.Join(root, "bin/dash"), dash, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "usr/bin/su"), dash, 0o4755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(filepath.Join(root, "usr/bin/su"), 0o4755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(root, "usr/bin/apt"), 0o755)
	for _, c := range []struct{ test, msg string }{
		{"no_shell: {}", "/bin/sh"},
		{"no_package_manager: {}", "/usr/bin/apt"},
		{"no_findings: {kind: SUID}", "/usr/bin/su"},
	} {
		r := evalProfile(t, root, oneTest(c.test), ContainerFacts{}).Controls[0].Results[0]
		if r.Status != Failed || !strings.Contains(r.Message, c.msg) {
			t.Errorf("%s: %s %q, want failed naming %s", c.test, r.Status, r.Message, c.msg)
		}
	}
	r := evalProfile(t, root, oneTest(`no_shell: {allow: [/bin/sh, /bin/dash]}`), ContainerFacts{}).Controls[0].Results[0]
	if r.Status != Passed {
		t.Errorf("no_shell with allow: %s %q", r.Status, r.Message)
	}
}

// TestOnlyIf: a control whose only_if fails is skipped with the message.
func TestOnlyIf(t *testing.T) {
	root := distrolessTree(t)
	text := `name: t
controls:
  - id: alpine-only
    impact: 0.5
    only_if: {os_release: {field: ID, equals: alpine}}
    only_if_message: not an Alpine image
    tests:
      - file: {path: /etc/apk/world}
  - id: debian-only
    impact: 0.5
    only_if: {os_release: {field: ID, equals: debian}}
    tests:
      - file: {path: /etc/apk/world}
`
	run := evalProfile(t, root, text, ContainerFacts{})
	if c := run.Controls[0]; c.Status() != Skipped || c.Results[0].Message != "not an Alpine image" {
		t.Errorf("alpine-only: %s %+v", c.Status(), c.Results)
	}
	if c := run.Controls[1]; c.Status() != Failed {
		t.Errorf("debian-only: %s %+v", c.Status(), c.Results)
	}
}

// TestRollUp follows Heimdall: error beats failed beats passed; all skipped is skipped.
func TestRollUp(t *testing.T) {
	for _, c := range []struct {
		in   []Status
		want Status
	}{
		{[]Status{Passed, Failed, Error}, Error},
		{[]Status{Passed, Failed}, Failed},
		{[]Status{Passed, Skipped}, Passed},
		{[]Status{Skipped}, Skipped},
		{nil, Skipped},
	} {
		var rs []Result
		for _, s := range c.in {
			rs = append(rs, Result{Status: s})
		}
		if got := rollUp(rs); got != c.want {
			t.Errorf("rollUp(%v) = %s, want %s", c.in, got, c.want)
		}
	}
}

func TestCompareVersions(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"1.2.3", "1.2.3", 0}, {"1.2.10", "1.2.9", 1}, {"3.0.11-1~deb12u2", "3.0.11", 1},
		{"1.0~rc1", "1.0", -1}, {"1:0.9", "2.0", 1}, {"v1.21.0", "1.21", 1}, {"2.0a", "2.0b", -1},
	} {
		if got := compareVersions(c.a, c.b); got != c.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}
