package initramfs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// DefaultInitPackage is the Go package built as /init: the gitmetal
// binary, whose main hands over to pid1.Main when it is PID 1.
const DefaultInitPackage = "./cmd/gitmetal"

// pid1Symbol is the function /init must call. Its name is in every Go
// binary that calls it, stripped or not (the runtime's function table
// keeps names for stack traces).
const pid1Symbol = "github.com/gitmetal/gitmetal/agent/pid1.Main"

// BuildInit compiles the Go package pkg of the module in dir into out as
// the installer's /init: static (CGO_ENABLED=0), linux/amd64, stripped
// (-s -w) and without file system paths (-trimpath), so the same source
// gives the same binary. Then it checks the result with CheckInit.
func BuildInit(ctx context.Context, dir, pkg, out string) error {
	if pkg == "" {
		pkg = DefaultInitPackage
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, strings.TrimSpace(stderr.String()))
	}
	return CheckInit(out)
}

// CheckInit checks that path can be the installer's /init: a static
// executable that calls pid1.Main. A binary that does not would print its
// usage and exit, and the kernel panics when init exits.
func CheckInit(path string) error {
	if !IsStatic(path) {
		return fmt.Errorf("%s is not a static executable (build it with CGO_ENABLED=0)", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !bytes.Contains(b, []byte(pid1Symbol)) {
		return fmt.Errorf("%s never calls pid1.Main: its main must start with `if os.Getpid() == 1 { pid1.Main(pid1.Config{...}) }`", path)
	}
	return nil
}
