package bpf

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

type fakeStats struct{}

func (fakeStats) Lost() uint64 { return 7 }
func (fakeStats) Count(t EventType) uint64 {
	return uint64(t) * 10
}
func (fakeStats) Mode() Mode {
	return Mode{Object: ObjectBoundedLoop, Exit: ExitSignalLive, ExecFailures: "unavailable: attach tracepoint/syscalls/sys_enter_execve: permission denied"}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(NewMetrics(fakeStats{})); err != nil {
		t.Fatal(err)
	}
	want := `# HELP loupe_agent_bpf_events_lost_total Exec tracer events lost because the ring buffer was full (counted per CPU in the kernel) or a record could not be decoded.
# TYPE loupe_agent_bpf_events_lost_total counter
loupe_agent_bpf_events_lost_total 7
# HELP loupe_agent_bpf_events_total Exec tracer events read from the ring buffer, by type.
# TYPE loupe_agent_bpf_events_total counter
loupe_agent_bpf_events_total{type="exec"} 10
loupe_agent_bpf_events_total{type="exec_failed"} 20
loupe_agent_bpf_events_total{type="exit"} 30
# HELP loupe_agent_tracer_info Always 1: the exec tracer's loaded variants (object bpf_loop|bounded_loop, exit group_dead|signal_live), whether failed exec attempts are traced (on|off|unavailable) and whether enforcement is on.
# TYPE loupe_agent_tracer_info gauge
loupe_agent_tracer_info{enforce="false",exec_failures="unavailable",exit="signal_live",object="bounded_loop"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
