package main

import "syscall"

// sysProcAttr puts a child in its own process group (so that it and its
// own children, e.g. nginx's workers, can be signalled together) and has
// the kernel send it SIGTERM if this process dies without cleaning up
// (SIGTERM, not SIGKILL, so that an nginx master takes its workers along).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
