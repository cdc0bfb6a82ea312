package meta

import (
	"strings"

	"github.com/emberfs/emberfs/internal/errcode"
)

// PathAt names a file: Path resolved from directory Parent (0 or an absolute
// Path means "/"). An empty Path names Parent itself, which is how callers
// holding an inode id (FUSE) address it. The final component is followed if
// it is a symlink unless NoFollow is set; operations that never follow
// (unlink, rename, readlink...) ignore NoFollow.
type PathAt struct {
	Parent   uint64
	Path     string
	NoFollow bool
}

// P is shorthand for an absolute or root-relative path.
func P(path string) PathAt { return PathAt{Path: path} }

// At is shorthand for path relative to directory parent.
func At(parent uint64, path string) PathAt { return PathAt{Parent: parent, Path: path} }

func (p PathAt) String() string {
	if p.Parent == 0 || strings.HasPrefix(p.Path, "/") {
		return p.Path
	}
	if p.Path == "" {
		return "inode " + itoa(p.Parent)
	}
	return "inode " + itoa(p.Parent) + ":" + p.Path
}

func itoa(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}

// start returns the inode resolution starts from and the components.
func (t *txn) start(p PathAt) (*Inode, []string, bool, error) {
	comps, err := splitPath(p.Path)
	if err != nil {
		return nil, nil, false, err
	}
	trailingSlash := strings.HasSuffix(p.Path, "/") && len(comps) > 0
	from := p.Parent
	if from == 0 || strings.HasPrefix(p.Path, "/") {
		from = RootID
	}
	n, err := t.inode(from)
	if err != nil {
		return nil, nil, false, err
	}
	return n, comps, trailingSlash, nil
}

// walk resolves comps from directory cur. Symlinks in the middle are always
// followed, the last one only if follow. Search permission is checked on
// every directory looked into.
func (t *txn) walk(cur *Inode, comps []string, follow bool, what string) (*Inode, error) {
	links := 0
	rest := comps
	for len(rest) > 0 {
		name := rest[0]
		rest = rest[1:]
		if cur.Type != TypeDir {
			return nil, errNotDir(what)
		}
		if err := checkAccess(t.u, cur, permX, what); err != nil {
			return nil, err
		}
		if name == "." {
			continue
		}
		if name == ".." {
			if cur.ID == RootID {
				continue
			}
			if cur.Parent == 0 { // detached by RemoveAll
				return nil, errNoEnt(what)
			}
			up, err := t.inode(cur.Parent)
			if err != nil {
				return nil, err
			}
			cur = up
			continue
		}
		d, ok, err := t.lookup(cur.ID, name)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, errNoEnt(what)
		}
		n, err := t.entryInode(d.ID, what)
		if err != nil {
			return nil, err
		}
		if n.Type == TypeSymlink && (len(rest) > 0 || follow) {
			links++
			if links > MaxSymlinks {
				return nil, errcode.New(errcode.Loop, "%s: too many levels of symbolic links", what)
			}
			target, err := splitPath(n.Target)
			if err != nil {
				return nil, err
			}
			if strings.HasPrefix(n.Target, "/") {
				if cur, err = t.inode(RootID); err != nil {
					return nil, err
				}
			}
			rest = append(target, rest...)
			continue
		}
		cur = n
	}
	return cur, nil
}

// resolve returns the inode p names.
func (t *txn) resolve(p PathAt) (*Inode, error) {
	start, comps, trailing, err := t.start(p)
	if err != nil {
		return nil, err
	}
	n, err := t.walk(start, comps, !p.NoFollow || trailing, p.String())
	if err != nil {
		return nil, err
	}
	if trailing && n.Type != TypeDir {
		return nil, errNotDir(p.String())
	}
	return n, nil
}

// resolveParent returns the directory holding p's last component and that
// component's name, for operations that create or remove an entry. The
// directory has passed search permission; the name is valid or "." / "..".
func (t *txn) resolveParent(p PathAt) (*Inode, string, error) {
	start, comps, _, err := t.start(p)
	if err != nil {
		return nil, "", err
	}
	if len(comps) == 0 {
		if p.Path == "" {
			return nil, "", errInval("%s: operation needs a name, not a bare inode", p)
		}
		return nil, "", errcode.New(errcode.Busy, "%s: is the root directory", p)
	}
	name := comps[len(comps)-1]
	dir, err := t.walk(start, comps[:len(comps)-1], true, p.String())
	if err != nil {
		return nil, "", err
	}
	if dir.Type != TypeDir {
		return nil, "", errNotDir(p.String())
	}
	if err := checkName(name); err != nil {
		return nil, "", err
	}
	return dir, name, nil
}

func isDots(name string) bool { return name == "." || name == ".." }
