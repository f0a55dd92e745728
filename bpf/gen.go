package bpf

//go:generate sh -c "go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -type event -cflags \"${BPF_CFLAGS:--O2 -g -Wall -Werror}\" exec exec.bpf.c -- -I./include"
