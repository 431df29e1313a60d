package actions

// system makes the two calls that end the running system. Tests replace
// it (and set AllowReboot) to run kexec and reboot up to those calls; no
// other code does.
type system interface {
	// KexecFileLoad loads the next kernel (kexec_file_load(2)).
	KexecFileLoad(kernelFd, initrdFd int, cmdline string, flags int) error
	// Reboot is reboot(2) with one of the LINUX_REBOOT_CMD_* commands.
	Reboot(cmd int) error
}
