package posix

// intendedDifferences names every way the mount is meant to differ from
// ext4, with the reason. A script line annotated "#differs: NAME" must
// differ (a stale annotation fails the test), and each NAME is listed in
// docs/fuse.md ("Differences from ext4").
var intendedDifferences = map[string]string{
	"atime": "the mount does not update atime on reads (noatime)",
	"nodev": "the mount is nodev (and nosuid): opening a device node on it is EACCES",
}
