package testutil

import (
	"bufio"
	"os"
	"strings"
	"syscall"
	"time"
)

// DetachDeadMounts lazily unmounts the FUSE mounts whose mount point
// contains prefix and whose server is gone (ENOTCONN): what a killed test
// run left. Mounts of a test binary running at the same time (another
// engineer's, with the same prefix) still answer and are left alone.
func DetachDeadMounts(prefix string) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 1 && strings.Contains(fields[1], prefix) && serverGone(fields[1]) {
			_ = syscall.Unmount(fields[1], syscall.MNT_DETACH)
		}
	}
}

// serverGone reports whether the FUSE mount at dir has lost its server. A
// live server that does not answer within a few seconds (stopped, busy)
// counts as present.
func serverGone(dir string) bool {
	gone := make(chan bool, 1)
	go func() {
		var st syscall.Statfs_t
		gone <- syscall.Statfs(dir, &st) == syscall.ENOTCONN
	}()
	select {
	case g := <-gone:
		return g
	case <-time.After(3 * time.Second):
		return false
	}
}
