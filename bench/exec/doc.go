// Command exec benchmarks Loupe's eBPF exec tracer (see main_linux.go); it
// needs Linux and root.
package main
