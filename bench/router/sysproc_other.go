//go:build !linux

package main

import "syscall"

// sysProcAttr puts a child in its own process group, so that it and its
// own children (e.g. nginx's workers) can be signalled together.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
