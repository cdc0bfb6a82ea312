package meta

import (
	"encoding/binary"
	"fmt"
	"time"
)

// FileType is the kind of an inode.
type FileType uint8

const (
	TypeFile    FileType = 1
	TypeDir     FileType = 2
	TypeSymlink FileType = 3
	// Special files: metadata only (mode, owner, times and, for devices,
	// Rdev). Their I/O is the kernel's on the machine that opens them, as
	// on any file system: a FIFO connects processes of one host, a device
	// node opens that host's device.
	TypeFIFO     FileType = 4
	TypeSocket   FileType = 5
	TypeCharDev  FileType = 6
	TypeBlockDev FileType = 7
)

// ModeType is t's file type bits of st_mode (S_IFREG, S_IFDIR, ...).
func (t FileType) ModeType() uint32 {
	switch t {
	case TypeDir:
		return 0o040000
	case TypeSymlink:
		return 0o120000
	case TypeFIFO:
		return 0o010000
	case TypeSocket:
		return 0o140000
	case TypeCharDev:
		return 0o020000
	case TypeBlockDev:
		return 0o060000
	}
	return 0o100000
}

// FileTypeOfMode is the file type whose st_mode type bits mode has.
func FileTypeOfMode(mode uint32) (FileType, bool) {
	for t := TypeFile; t <= TypeBlockDev; t++ {
		if t.ModeType() == mode&0o170000 {
			return t, true
		}
	}
	return 0, false
}

// IsSpecial reports whether t is a FIFO, socket or device node.
func (t FileType) IsSpecial() bool { return t >= TypeFIFO && t <= TypeBlockDev }

func (t FileType) String() string {
	switch t {
	case TypeFile:
		return "file"
	case TypeDir:
		return "directory"
	case TypeSymlink:
		return "symlink"
	case TypeFIFO:
		return "fifo"
	case TypeSocket:
		return "socket"
	case TypeCharDev:
		return "character device"
	case TypeBlockDev:
		return "block device"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Permission and special mode bits (the low 12 bits of st_mode).
const (
	ModeSetuid = 0o4000
	ModeSetgid = 0o2000
	ModeSticky = 0o1000
	ModePerm   = 0o7777
)

// RootID is the inode id of "/".
const RootID uint64 = 1

// Layout says where a file's chunks live. Directories carry the defaults
// (ChainTable, ChunkSize, StripeSize) that new files inherit; a file adds the
// first chain of its range (ChainBegin) and the seed that shuffles the order
// in which chunks visit the StripeSize chains of that range.
type Layout struct {
	ChainTable uint32
	ChunkSize  uint32
	StripeSize uint32
	ChainBegin uint32
	Seed       uint64
}

// Inode is the metadata of one file, directory or symlink.
type Inode struct {
	ID     uint64
	Type   FileType
	Mode   uint32 // permission and special bits only (ModePerm)
	UID    uint32
	GID    uint32
	Nlink  uint32
	Size   uint64 // files: length; symlinks: target length
	Atime  time.Time
	Mtime  time.Time
	Ctime  time.Time
	Parent uint64 // directories: the directory holding the entry (root: itself)
	Layout Layout
	Target string // symlinks
	Rdev   uint32 // device nodes: the device number (Linux new_encode_dev, as FUSE carries it)
	// Detached marks a directory removed by RemoveAll whose contents the
	// background collector is still deleting.
	Detached bool
	// subdirsCounted marks a directory whose Nlink counts its
	// subdirectories (2 + subdirectories). Directories made before counts
	// were kept lack it; the first change of their count counts them
	// (adjustSubdirs).
	subdirsCounted bool
	// trimEpoch counts the length changes made by truncate (SetAttr size,
	// O_TRUNC). Close and fsync ask storage for the length outside their
	// transaction; they apply it only if the epoch did not move meanwhile
	// (docs/meta.md, "Truncate").
	trimEpoch uint64
}

// Inode encodings. Version 1 stored times as int64 UnixNano, which wraps
// past 2262 (to 1715); version 2 stores seconds and nanoseconds and adds
// the trim epoch. Records are rewritten in version 2 whenever an inode is
// written; version 1 records are still read, so existing stores open.
// Version 3 is version 2 followed by the device number (BE32), written
// only for device nodes, so that servers that predate them read every
// other record.
const (
	inodeEncodingV1      = 1
	inodeEncodingVersion = 2
	inodeEncodingRdev    = 3
)

const (
	flagDetached       = 1
	flagSubdirsCounted = 2
)

func (n *Inode) encode() []byte {
	b := make([]byte, 0, inodeFixedLen+1+len(n.Target)+4)
	version := byte(inodeEncodingVersion)
	if n.Rdev != 0 {
		version = inodeEncodingRdev
	}
	b = append(b, version, byte(n.Type))
	b = binary.BigEndian.AppendUint32(b, n.Mode)
	b = binary.BigEndian.AppendUint32(b, n.UID)
	b = binary.BigEndian.AppendUint32(b, n.GID)
	b = binary.BigEndian.AppendUint32(b, n.Nlink)
	b = binary.BigEndian.AppendUint64(b, n.Size)
	b = appendTime(b, n.Atime)
	b = appendTime(b, n.Mtime)
	b = appendTime(b, n.Ctime)
	b = binary.BigEndian.AppendUint64(b, n.Parent)
	var flags uint32
	if n.Detached {
		flags |= flagDetached
	}
	if n.subdirsCounted {
		flags |= flagSubdirsCounted
	}
	b = binary.BigEndian.AppendUint32(b, flags)
	b = binary.BigEndian.AppendUint64(b, n.trimEpoch)
	b = appendLayout(b, n.Layout)
	b = binary.AppendUvarint(b, uint64(len(n.Target)))
	b = append(b, n.Target...)
	if version == inodeEncodingRdev {
		b = binary.BigEndian.AppendUint32(b, n.Rdev)
	}
	return b
}

// appendTime stores t as seconds since the epoch (int64) and nanoseconds
// (uint32): every time.Time of years -292277022657..292277026596 fits.
func appendTime(b []byte, t time.Time) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(t.Unix()))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

func appendLayout(b []byte, l Layout) []byte {
	b = binary.BigEndian.AppendUint32(b, l.ChainTable)
	b = binary.BigEndian.AppendUint32(b, l.ChunkSize)
	b = binary.BigEndian.AppendUint32(b, l.StripeSize)
	b = binary.BigEndian.AppendUint32(b, l.ChainBegin)
	return binary.BigEndian.AppendUint64(b, l.Seed)
}

const layoutLen = 24

func decodeLayout(b []byte) Layout {
	return Layout{
		ChainTable: binary.BigEndian.Uint32(b[0:]),
		ChunkSize:  binary.BigEndian.Uint32(b[4:]),
		StripeSize: binary.BigEndian.Uint32(b[8:]),
		ChainBegin: binary.BigEndian.Uint32(b[12:]),
		Seed:       binary.BigEndian.Uint64(b[16:]),
	}
}

const (
	timeLen         = 8 + 4
	inodeFixedLenV1 = 2 + 4*4 + 8*5 + 4 + layoutLen
	inodeFixedLen   = 2 + 4*4 + 8 + 3*timeLen + 8 + 4 + 8 + layoutLen
)

func decodeInode(id uint64, b []byte) (*Inode, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("inode %d: corrupt record (empty)", id)
	}
	fixed := inodeFixedLen
	switch b[0] {
	case inodeEncodingV1:
		fixed = inodeFixedLenV1
	case inodeEncodingVersion, inodeEncodingRdev:
	default:
		return nil, fmt.Errorf("inode %d: corrupt record (unknown encoding version %d)", id, b[0])
	}
	if len(b) < fixed+1 {
		return nil, fmt.Errorf("inode %d: corrupt record (%d bytes, version %d)", id, len(b), b[0])
	}
	v1 := b[0] == inodeEncodingV1
	n := &Inode{ID: id, Type: FileType(b[1])}
	p := b[2:]
	u32 := func() uint32 { v := binary.BigEndian.Uint32(p); p = p[4:]; return v }
	u64 := func() uint64 { v := binary.BigEndian.Uint64(p); p = p[8:]; return v }
	tm := func() time.Time {
		if v1 {
			return time.Unix(0, int64(u64()))
		}
		sec := int64(u64())
		nsec := u32()
		return time.Unix(sec, int64(nsec))
	}
	n.Mode, n.UID, n.GID, n.Nlink = u32(), u32(), u32(), u32()
	n.Size = u64()
	n.Atime = tm()
	n.Mtime = tm()
	n.Ctime = tm()
	n.Parent = u64()
	flags := u32()
	n.Detached = flags&flagDetached != 0
	n.subdirsCounted = flags&flagSubdirsCounted != 0
	if !v1 {
		n.trimEpoch = u64()
	}
	n.Layout = decodeLayout(p)
	p = p[layoutLen:]
	l, k := binary.Uvarint(p)
	if k <= 0 || uint64(len(p)-k) < l {
		return nil, fmt.Errorf("inode %d: corrupt symlink target", id)
	}
	n.Target = string(p[k : k+int(l)])
	if b[0] == inodeEncodingRdev {
		rest := p[k+int(l):]
		if len(rest) != 4 {
			return nil, fmt.Errorf("inode %d: corrupt device number (%d bytes)", id, len(rest))
		}
		n.Rdev = binary.BigEndian.Uint32(rest)
	}
	return n, nil
}

// dentry is the value of a DENT key.
type dentry struct {
	ID   uint64
	Type FileType
}

func (d dentry) encode() []byte {
	b := make([]byte, 0, 10)
	b = append(b, 1, byte(d.Type))
	return binary.BigEndian.AppendUint64(b, d.ID)
}

func decodeDentry(b []byte) (dentry, error) {
	if len(b) != 10 || b[0] != 1 {
		return dentry{}, fmt.Errorf("corrupt directory entry (%d bytes)", len(b))
	}
	return dentry{Type: FileType(b[1]), ID: binary.BigEndian.Uint64(b[2:])}, nil
}

// session is the value of a SESS key: one open-for-write handle.
type session struct {
	Client  string
	Created time.Time
}

func (s session) encode() []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(s.Created.UnixNano()))
	return append(b, s.Client...)
}

func decodeSession(b []byte) (session, error) {
	if len(b) < 8 {
		return session{}, fmt.Errorf("corrupt session record (%d bytes)", len(b))
	}
	return session{Created: time.Unix(0, int64(binary.BigEndian.Uint64(b))), Client: string(b[8:])}, nil
}

// gcEntry is the value of a GCQU key: what is left to clean up of a removed
// inode. Files keep their layout and size so storage can drop their chunks;
// detached directories have their remaining entries removed in batches.
type gcEntry struct {
	Type   FileType
	Size   uint64
	Layout Layout
}

func (g gcEntry) encode() []byte {
	b := []byte{1, byte(g.Type)}
	b = binary.BigEndian.AppendUint64(b, g.Size)
	return appendLayout(b, g.Layout)
}

func decodeGCEntry(b []byte) (gcEntry, error) {
	if len(b) != 10+layoutLen || b[0] != 1 {
		return gcEntry{}, fmt.Errorf("corrupt gc record (%d bytes)", len(b))
	}
	return gcEntry{Type: FileType(b[1]), Size: binary.BigEndian.Uint64(b[2:]), Layout: decodeLayout(b[10:])}, nil
}
