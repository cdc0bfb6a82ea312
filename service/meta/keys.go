package meta

import (
	"encoding/binary"

	"github.com/emberfs/emberfs/service/kv"
)

// Key schema (after 3FS). Every key starts with a 4-byte tag.
//
//	INOD + id(LE64)                   inode; little-endian so sequential ids spread over the keyspace
//	DENT + parent(BE64) + name        directory entry; big-endian parent keeps a directory contiguous
//	DENT + parent(BE64)               (never stored) conflict marker: "an entry was inserted here"
//	DTIM + dir(BE64) + writer(BE64)   directory change record: time of the last entry change by one server (dirtimes.go)
//	XATR + id(LE64) + name            extended attribute
//	SESS + id(LE64) + session(BE64)   write session of an open file
//	SESS + id(LE64)                   (never stored) conflict marker: "a session was opened"
//	CLNT + client id                  client lease expiry (unix ns, BE64)
//	GCQU + id(BE64)                   removed inode waiting for background cleanup
//	TRIM + id(BE64)                   truncate committed, chunks not yet trimmed (trim.go)
//	LOCK + id(LE64)                   advisory file locks of an inode (locks.go)
//	METAinode-next                    inode id allocator counter (BE64)
var (
	tagInode   = []byte("INOD")
	tagDentry  = []byte("DENT")
	tagXattr   = []byte("XATR")
	tagSession = []byte("SESS")
	tagClient  = []byte("CLNT")
	tagGC      = []byte("GCQU")
	tagTrim    = []byte("TRIM")
	tagLock    = []byte("LOCK")
	keyIDNext  = []byte("METAinode-next")
)

func inodeKey(id uint64) []byte {
	k := make([]byte, 0, 12)
	k = append(k, tagInode...)
	return binary.LittleEndian.AppendUint64(k, id)
}

func dirPrefix(parent uint64) []byte {
	k := make([]byte, 0, 12)
	k = append(k, tagDentry...)
	return binary.BigEndian.AppendUint64(k, parent)
}

func dentryKey(parent uint64, name string) []byte {
	return append(dirPrefix(parent), name...)
}

// dirInsertMarker is the conflict key every insert into directory parent
// writes (txn.touchMarker) and every emptiness check reads
// (AddReadConflictKey): engines need not detect phantoms in range scans.
func dirInsertMarker(parent uint64) []byte { return dirPrefix(parent) }

func dirRange(parent uint64) (begin, end []byte) {
	p := dirPrefix(parent)
	return p, kv.PrefixEnd(p)
}

func xattrPrefix(id uint64) []byte {
	k := make([]byte, 0, 12)
	k = append(k, tagXattr...)
	return binary.LittleEndian.AppendUint64(k, id)
}

func xattrKey(id uint64, name string) []byte { return append(xattrPrefix(id), name...) }

func sessionPrefix(id uint64) []byte {
	k := make([]byte, 0, 20)
	k = append(k, tagSession...)
	return binary.LittleEndian.AppendUint64(k, id)
}

func sessionKey(id, session uint64) []byte {
	return binary.BigEndian.AppendUint64(sessionPrefix(id), session)
}

func clientKey(client string) []byte { return append(append([]byte(nil), tagClient...), client...) }

func gcKey(id uint64) []byte {
	k := make([]byte, 0, 12)
	k = append(k, tagGC...)
	return binary.BigEndian.AppendUint64(k, id)
}

func trimKey(id uint64) []byte {
	k := make([]byte, 0, 12)
	k = append(k, tagTrim...)
	return binary.BigEndian.AppendUint64(k, id)
}

func lockKey(id uint64) []byte {
	k := make([]byte, 0, 12)
	k = append(k, tagLock...)
	return binary.LittleEndian.AppendUint64(k, id)
}

func prefixRange(tag []byte) (begin, end []byte) { return tag, kv.PrefixEnd(tag) }
