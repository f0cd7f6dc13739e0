package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The machine is shared (builds, tests); each measured run reports how
// much CPU went to processes other than the bench's own, so that a number
// taken while something else was running can be recognised. Linux only
// (/proc); elsewhere the figure is left at -1.

const clkTck = 100 // USER_HZ, 100 on every Linux architecture Go supports

// cpuMeter measures "other" CPU over an interval: all busy CPU time
// (/proc/stat, including steal) minus that of this process, of the
// long-lived children's process groups, and of the one-shot child (wrk or
// the attacker) whose usage the caller adds from its ProcessState.
type cpuMeter struct {
	pgids    map[int]bool
	start    time.Time
	busy0    float64
	ours0    float64
	disabled bool
}

func startCPUMeter(cs *children) *cpuMeter {
	m := &cpuMeter{pgids: map[int]bool{}, start: time.Now()}
	cs.mu.Lock()
	for _, c := range cs.list {
		m.pgids[c.cmd.Process.Pid] = true
	}
	cs.mu.Unlock()
	var ok bool
	if m.busy0, ok = busyCPU(); !ok {
		m.disabled = true
		return m
	}
	m.ours0 = m.oursCPU()
	return m
}

// other returns the CPU used by other processes since the start, as a
// percentage of one CPU; oneShot is the finished one-shot child, if any.
func (m *cpuMeter) other(oneShot *exec.Cmd) float64 {
	busy1, ok := busyCPU()
	if m.disabled || !ok {
		return -1
	}
	ours := m.oursCPU() - m.ours0
	if oneShot != nil && oneShot.ProcessState != nil {
		ours += (oneShot.ProcessState.UserTime() + oneShot.ProcessState.SystemTime()).Seconds()
	}
	elapsed := time.Since(m.start).Seconds()
	return max(0, 100*(busy1-m.busy0-ours)/elapsed)
}

// busyCPU is the busy time of all CPUs in seconds (user, nice, system,
// steal). Interrupt time is left out: the loopback traffic of the bench
// itself is largely accounted as softirq, not to its processes.
func busyCPU() (float64, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, false
	}
	var sum float64
	for _, i := range []int{1, 2, 3, 8} {
		v, _ := strconv.ParseFloat(f[i], 64)
		sum += v
	}
	return sum / clkTck, true
}

// oursCPU is the CPU time (s) of this process and of every process in one
// of the children's process groups.
func (m *cpuMeter) oursCPU() float64 {
	user, sys := groupCPU(os.Getpid(), m.pgids)
	return user + sys
}

// groupCPU is the user and system CPU time (s) of process self and of
// every process in one of the process groups pgids (self 0: none).
func groupCPU(self int, pgids map[int]bool) (user, sys float64) {
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')') // comm may contain spaces
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
		if len(f) < 13 {
			continue
		}
		pid, _ := strconv.Atoi(strings.Fields(s)[0])
		pgid, _ := strconv.Atoi(f[2])
		if pid != self && !pgids[pgid] {
			continue
		}
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		user += ut / clkTck
		sys += st / clkTck
	}
	return user, sys
}

// procMeter measures the CPU time of one target (a process group) over a
// run, to be divided by the requests it served.
type procMeter struct {
	pgid      int
	user, sys float64
}

func startProcMeter(pgid int) procMeter {
	m := procMeter{pgid: pgid}
	if pgid > 0 {
		m.user, m.sys = groupCPU(0, map[int]bool{pgid: true})
	}
	return m
}

// perRequest returns the target's user and system CPU per request (µs)
// since the start; -1 if unknown.
func (m procMeter) perRequest(requests int64) (user, sys float64) {
	if m.pgid <= 0 || requests <= 0 {
		return -1, -1
	}
	u, s := groupCPU(0, map[int]bool{m.pgid: true})
	return (u - m.user) / float64(requests) * 1e6, (s - m.sys) / float64(requests) * 1e6
}
