package pid1

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// OrderEntry is one line of the module order file.
type OrderEntry struct {
	// Name is the module's name; its file is Name+".ko".
	Name string
	// Depends are the modules of the file it needs (hard dependencies);
	// it is not loaded when one of them did not load.
	Depends []string
}

// ReadModuleOrder parses the order file the builder writes, one module a
// line, dependencies first:
//
//	# comment
//	virtio_net.ko net_failover
//
// that is the module's file name (in the same directory) and then the
// names of the modules it depends on.
func ReadModuleOrder(r io.Reader) ([]OrderEntry, error) {
	var out []OrderEntry
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		name, ok := strings.CutSuffix(f[0], ".ko")
		if !ok || name == "" || strings.Contains(name, "/") {
			return nil, fmt.Errorf("line %d: %q: want a module file name such as virtio_net.ko", n, f[0])
		}
		out = append(out, OrderEntry{Name: name, Depends: f[1:]})
	}
	return out, sc.Err()
}

// moduleResult is how loading the modules went.
type moduleResult struct {
	loaded, already int
	// slow are the modules that took 100 ms or more, with how long.
	slow []string
	// absent are the modules for hardware or firmware this machine does
	// not have (ENODEV, from the module itself or a dependency): normal.
	absent []string
	// failed are real errors.
	failed []error
}

// loadModules loads the modules of the order file in dir, in order, with
// finit_module. A module that is loaded already (or built in) counts as
// loaded; one that fails is reported and the rest still load: a driver
// for hardware that is missing can fail without harming the others. A
// module whose dependency did not load is not tried.
func loadModules(dir, orderFile string) (moduleResult, error) {
	var res moduleResult
	f, err := os.Open(orderFile)
	if err != nil {
		return res, err
	}
	entries, err := ReadModuleOrder(f)
	f.Close()
	if err != nil {
		return res, fmt.Errorf("%s: %w", orderFile, err)
	}
	// notLoaded maps a module that did not load to whether that is
	// because this machine lacks its hardware.
	notLoaded := map[string]bool{}
	for _, e := range entries {
		var missing string
		for _, d := range e.Depends {
			if _, ok := notLoaded[d]; ok {
				missing = d
				break
			}
		}
		if missing != "" {
			notLoaded[e.Name] = notLoaded[missing]
			if notLoaded[missing] {
				res.absent = append(res.absent, e.Name)
			} else {
				res.failed = append(res.failed, fmt.Errorf("module %s: needs %s, which did not load", e.Name, missing))
			}
			continue
		}
		start := time.Now()
		err := finitModule(filepath.Join(dir, e.Name+".ko"))
		if d := time.Since(start); d >= 100*time.Millisecond {
			res.slow = append(res.slow, fmt.Sprintf("%s %s", e.Name, d.Round(time.Millisecond)))
		}
		switch {
		case err == nil:
			res.loaded++
		case errors.Is(err, unix.EEXIST):
			res.already++
		case errors.Is(err, unix.ENODEV):
			notLoaded[e.Name] = true
			res.absent = append(res.absent, e.Name)
		default:
			notLoaded[e.Name] = false
			res.failed = append(res.failed, fmt.Errorf("module %s: %w", e.Name, err))
		}
	}
	return res, nil
}

// finitModule loads one module file. The kernel checks its signature
// itself (it is Debian's, kept intact by the builder).
func finitModule(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for {
		err = unix.FinitModule(fd, "", 0)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
