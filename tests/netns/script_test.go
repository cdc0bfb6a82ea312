package netns

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emberfs/emberfs/internal/testutil"
	"github.com/emberfs/emberfs/tests/testproc"
)

// TestScriptUpDown runs the manual cluster of scripts/netns-cluster.sh:
// up, a file copied in and read back from the client host, down (every
// namespace gone).
func TestScriptUpDown(t *testing.T) {
	root, err := testutil.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(root, "scripts", "netns-cluster.sh")
	dir := t.TempDir()
	sh := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join(dir, "cluster.env")); err == nil {
			_ = exec.Command(script, "down", dir).Run()
		}
	})
	sh(script, "up", "--storage", "3", dir)
	env := map[string]string{}
	data, err := os.ReadFile(filepath.Join(dir, "cluster.env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		k, v, _ := strings.Cut(l, "=")
		env[k] = v
	}
	ns := "efs-" + env["RUN"] + "-cl1"
	client := func(args ...string) string {
		return sh(append([]string{"ip", "netns", "exec", ns, "env", "EMBERFS_TOKEN=" + env["EMBERFS_TOKEN"],
			"EMBERFS_MGMTD=" + env["EMBERFS_MGMTD"], filepath.Join(dir, "emberfs")}, args...)...)
	}
	src := testproc.WriteFile(t, filepath.Join(dir, "src"), "through the namespaces\n")
	client("cp", src, "emberfs:/f")
	if got := client("cat", "emberfs:/f"); got != "through the namespaces\n" {
		t.Fatalf("read back %q", got)
	}
	sh(script, "down", dir)
	if out := sh("ip", "netns", "list"); strings.Contains(out, "efs-"+env["RUN"]+"-") {
		t.Fatalf("namespaces of run %s left after down:\n%s", env["RUN"], out)
	}
}
