package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/gitmetal/gitmetal/test/e2e/diskimage"
	"github.com/gitmetal/gitmetal/test/gittest"
)

// The repository's files the test adds to examples/fleet.
const (
	templateFile = "templates/e2e-os.cue"
	templateName = "e2e-os"
)

// domain is the e2e machine's DNS domain.
const domain = "e2e.test"

// fleet is the story's git repository.
type fleet struct {
	repo     *gittest.Repo
	c        vmCase
	userData string // the machine's userData, unique per test run
}

func (f *fleet) hardwareFile() string { return "hardware/e2e/" + f.c.name + ".cue" }
func (f *fleet) workflowName() string { return f.c.name + "-os" }

// fqdn is the hostname the metadata service gives the machine.
func (f *fleet) fqdn() string { return f.c.name + "." + domain }

// written is what the template's writefile puts on the data partition.
func (f *fleet) written() string { return fmt.Sprintf("name=%s mac=%s", f.c.name, f.c.mac) }

// newFleet makes the repository: examples/fleet, plus the VM's machine,
// the template that installs image, and the workflow binding them. When
// the test fails, the repository's history goes to the results directory.
func newFleet(t *testing.T, root, results string, c vmCase, image imageRef) *fleet {
	t.Helper()
	var nonce [4]byte
	rand.Read(nonce[:])
	f := &fleet{
		repo: gittest.New(t, "main"),
		c:    c,
		// Two lines, so the test sees the user-data byte for byte (the
		// OS prints its newlines as '|').
		userData: fmt.Sprintf("#!/bin/sh\necho e2e user-data %s for %s", hex.EncodeToString(nonce[:]), c.name),
	}
	if c.debian {
		f.userData = diskimage.DebianUserData(fmt.Sprintf("e2e user-data %s for %s", hex.EncodeToString(nonce[:]), c.name))
	}
	f.repo.CopyDir(filepath.Join(root, "examples", "fleet"), "")
	f.repo.Write(f.hardwareFile(), f.hardwareCUE())
	f.repo.Write(templateFile, f.templateCUE(image))
	f.repo.Write("workflows/"+f.workflowName()+".cue", fmt.Sprintf(`// The e2e machine converges on the template: a new image re-provisions it.
workflow: {
	name:     %q
	hardware: %q
	template: %q
	policy:   "onChange"
}
`, f.workflowName(), c.name, templateName))
	t.Cleanup(func() {
		if !t.Failed() && os.Getenv("GITMETAL_E2E_KEEP") != "1" {
			return
		}
		cmd := exec.Command("git", "log", "--stat", "-p", "--format=fuller")
		cmd.Dir, cmd.Env = f.repo.Dir, gittest.Env()
		out, _ := cmd.CombinedOutput()
		os.WriteFile(filepath.Join(results, "repo-log.txt"), out, 0o644)
	})
	return f
}

func (f *fleet) hardwareCUE() string {
	return fmt.Sprintf(`// The end-to-end test's VM (QEMU, %s firmware).
hardware: {
	name: %q
	labels: role: "e2e"
	interfaces: [{
		mac:      %q
		ip:       "%s/24"
		hostname: %q
		// The metadata service's hostname is the FQDN.
		domain:   %q
		arch:     "x86_64"
		uefi:     %t
		netboot: allowPXE: true
		// No gateway: nothing in the lab is routed anywhere.
	}]
	// QEMU's virtio disk; the installer has no udev, so no by-id names.
	disks: [{device: "/dev/vda"}]
	metadata: instance: {
		hostname: %q
		tags: ["e2e"]
	}
	userData: %q
}
`, f.c.fw, f.c.name, f.c.mac, f.c.machineIP(), f.c.name, domain, f.c.uefi(), f.c.name, f.userData)
}

// imageRef is an OS image as the template names it.
type imageRef struct {
	url string
	img *diskimage.Image
}

// templateCUE writes image to the whole disk, writes the machine's
// identity onto the image's data partition, and reboots. For the Debian
// OS it also writes cloud-init's datasource configuration, with the
// metadata service's URL, into the image's root file system.
func (f *fleet) templateCUE(image imageRef) string {
	cloudInit := ""
	if f.c.debian {
		cloudInit = fmt.Sprintf(`
		{
			name: "configure-cloud-init"
			uses: "writefile"
			env: {
				// Partition %d of the Debian image: its root file system.
				DEST_DISK: "{{(index .disks 0).device}}%d"
				FS_TYPE:   "ext4"
				DEST_PATH: %q
				CONTENTS:  %q
				MODE:      "0644"
			}
			timeout: "2m"
		},`, diskimage.DataPartition, diskimage.DataPartition, diskimage.CloudConfigPath, diskimage.CloudConfig(f.c.metadataURL()))
	}
	return fmt.Sprintf(`// Install the e2e OS (%s): stream the image onto the disk, write the
// machine's identity onto its data partition, reboot into it.
template: {
	name:    %q
	timeout: "20m"
	actions: [
		{
			name: "stream-image"
			uses: "image2disk"
			env: {
				IMG_URL:                   %q
				CHECKSUM:                  "sha256:%s"
				DEST_DISK:                 "{{(index .disks 0).device}}"
				PROGRESS_INTERVAL_SECONDS: "5"
			}
			timeout: "10m"
			retries: 1
		},%s
		{
			name: "write-identity"
			uses: "writefile"
			env: {
				// Partition %d of the image: its ext4 data partition.
				DEST_DISK: "{{(index .disks 0).device}}%d"
				FS_TYPE:   "ext4"
				DEST_PATH: %q
				CONTENTS:  "name={{.hardware.name}} mac={{(index .hardware.interfaces 0).mac}}"
				MODE:      "0644"
			}
			timeout: "2m"
		},
		{
			name:       "reboot"
			uses:       "reboot"
			background: true
			timeout:    "1m"
		},
	]
}
`, image.img.Version, templateName, image.url, image.img.SHA256, cloudInit, diskimage.DataPartition, diskimage.DataPartition, diskimage.WrittenPath)
}
