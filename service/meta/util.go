package meta

import (
	"encoding/binary"
)

func be64(b []byte) uint64                 { return binary.BigEndian.Uint64(b) }
func appendBE64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }
