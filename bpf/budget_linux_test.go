//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package bpf

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/loupe-dev/loupe/internal/testenv"
)

// verifierBudget is the most instructions the verifier may process for any
// one program on any kernel: a quarter of its 1M limit, so that a kernel
// whose verifier explores more states than the ones we test on still loads.
const verifierBudget = 250_000

// TestVerifierBudget loads every variant of every program (both objects,
// both exit programs, the failed-exec programs) and fails when one needs
// more than verifierBudget verified instructions. It prints a LOUPE-TABLE
// line per program, which the kernel matrix collects for docs/bpf.md.
func TestVerifierBudget(t *testing.T) {
	testenv.RequireRoot(t)
	var uts unix.Utsname
	unix.Uname(&uts)
	release := unix.ByteSliceToString(uts.Release[:])
	for _, v := range []struct {
		name string
		cfg  Config
	}{
		{"native", Config{}},
		{"forced-legacy", Config{NoBPFLoop: true, NoGroupDead: true}},
	} {
		t.Run(v.name, func(t *testing.T) {
			cfg := v.cfg
			cfg.ExecFailures, cfg.Enforce, cfg.RingBufferBytes = true, true, 4096
			tr := newTracer(t, cfg)
			defer tr.Close()
			if tr.Mode().ExecFailures != "on" {
				t.Fatalf("mode %s: the failed-exec programs did not load", tr.Mode())
			}
			progs := tr.Programs()
			if len(progs) != 6 {
				t.Fatalf("%d programs loaded, want 6: %+v", len(progs), progs)
			}
			for _, p := range progs {
				fmt.Printf("LOUPE-TABLE %s %s object=%s exit=%s %s %d %.1fms\n", release, v.name, tr.Mode().Object,
					tr.Mode().Exit, p.Name, p.VerifiedInstructions, float64(p.LoadTime.Microseconds())/1000)
				if p.VerifiedInstructions == 0 {
					t.Errorf("%s: the kernel reported no verified-instruction count", p.Name)
				}
				if p.VerifiedInstructions > verifierBudget {
					t.Errorf("%s: %d verified instructions, budget %d", p.Name, p.VerifiedInstructions, verifierBudget)
				}
			}
		})
	}
}

// TestModeProbed checks that the loader picked what this kernel has and
// that the switches force the older variants.
func TestModeProbed(t *testing.T) {
	testenv.RequireRoot(t)
	kernelHasGroupDead := false
	if k, err := btf.LoadKernelSpec(); err == nil {
		n, err := tracepointArgs(k, "sched_process_exit")
		if err != nil {
			t.Fatal(err)
		}
		kernelHasGroupDead = n >= 2
	}
	tr := newTracer(t, Config{})
	m := tr.Mode()
	tr.Close()
	if forceLegacy {
		if m.Object != ObjectBoundedLoop || m.Exit != ExitSignalLive {
			t.Errorf("forced legacy mode: %s", m)
		}
		return
	}
	wantObj := ObjectBPFLoop
	if !haveBPFLoop(t) {
		wantObj = ObjectBoundedLoop
	}
	wantExit := ExitSignalLive
	if kernelHasGroupDead {
		wantExit = ExitGroupDead
	}
	if m.Object != wantObj || m.Exit != wantExit || m.ExecFailures != "off" {
		t.Errorf("mode %s, want object=%s exit=%s exec_failures=off", m, wantObj, wantExit)
	}
	tr = newTracer(t, Config{NoBPFLoop: true, NoGroupDead: true})
	defer tr.Close()
	if m := tr.Mode(); m.Object != ObjectBoundedLoop || m.Exit != ExitSignalLive {
		t.Errorf("forced: %s", m)
	}
}

// TestLegacyPaths runs the tracer's behaviour tests again with the variants
// for older kernels (no bpf_loop, no group_dead) forced, so those paths are
// loaded and exercised on every kernel of the matrix.
func TestLegacyPaths(t *testing.T) {
	testenv.RequireRoot(t)
	if forceLegacy {
		t.Log("already running with the legacy variants forced")
		return
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.v", "-test.count=1", "-test.run=^Test(ExecInTrackedCgroup|FailedExec|ShebangScript|ExecFromNonLeaderThread|NSEnter|Enforcement|HostExecs|ModeProbed)")
	cmd.Env = append(os.Environ(), "LOUPE_BPF_TEST_LEGACY=1")
	out, err := cmd.CombinedOutput()
	passed := strings.Count(string(out), "--- PASS")
	if err != nil || passed < 8 || strings.Contains(string(out), "--- SKIP") {
		t.Fatalf("legacy run: %v (%d passed):\n%s", err, passed, out)
	}
	t.Logf("legacy variants: %d tests passed", passed)
}
