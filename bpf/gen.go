package bpf

// The exec tracer is built twice from one source: exec (bpf_loop, 5.17+) and
// execCompat (bounded loops, for 5.8-5.16 kernels). BPF_CFLAGS comes from the Makefile.
//go:generate sh -c "go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -type event -cflags \"${BPF_CFLAGS:--O2 -g -Wall -Werror}\" exec exec.bpf.c -- -I./include"
//go:generate sh -c "go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -type event -cflags \"${BPF_CFLAGS:--O2 -g -Wall -Werror} -DLOUPE_NO_BPF_LOOP\" execCompat exec.bpf.c -- -I./include"
