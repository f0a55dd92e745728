package e2e

import "os/exec"

func osexec(name string, args ...string) error { return exec.Command(name, args...).Run() }
