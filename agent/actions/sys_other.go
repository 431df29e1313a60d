//go:build !linux

package actions

import (
	"errors"
	"os"
	"syscall"
)

// The actions run on Linux only; elsewhere they build, so that the one
// gitmetal binary does, and fail when they would touch the system.

var errNotLinux = errors.New("not supported on this operating system (Linux only)")

const oDirect = 0

const errInvalid = syscall.EINVAL

func clearDirect(*os.File) error { return nil }

const (
	rebootCmdKexec   = 0
	rebootCmdRestart = 0
	kexecNoInitramfs = 0
	loopAutoclear    = 0
	loopPartscan     = 0
	modeBlock        = 0
	modeChar         = 0
	modeFIFO         = 0
)

type linuxSystem struct{}

func (linuxSystem) KexecFileLoad(int, int, string, int) error { return errNotLinux }
func (linuxSystem) Reboot(int) error                          { return errNotLinux }

func syncAll()                                            {}
func startWriteback(*os.File, int64, int64)               {}
func waitWriteback(*os.File, int64, int64)                {}
func rereadPartitions(*os.File) error                     { return errNotLinux }
func mount(string, string, string, uintptr, string) error { return errNotLinux }
func unmount(string, bool) error                          { return errNotLinux }
func bindMount(string, string) error                      { return errNotLinux }
func attachLoop(string, uint32) (string, *os.File, error) {
	return "", nil, errNotLinux
}
func detachLoop(*os.File) error                              { return errNotLinux }
func mknodAt(*os.File, string, uint32, uint32, uint32) error { return errNotLinux }
