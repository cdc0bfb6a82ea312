package kvstore

import (
	"github.com/emberfs/emberfs/storage/kvformat"
)

// Drop removes every local chunk of namespace ns (values and descriptor)
// from the engine and forgets its usage and counters. It returns how many
// chunks it removed. Each target drops on its own (the client sends the
// request to every target of the namespace's chains): a namespace being
// dropped has no readers that care which replica still answers.
func (s *Store) Drop(ns uint32) (int, error) {
	inodes := map[uint64]bool{}
	for _, m := range s.eng.Dump() {
		if kvformat.IsKVChunk(m.ID) && kvformat.NamespaceOf(m.ID) == ns {
			inodes[m.ID.Inode] = true
		}
	}
	removed := 0
	for ino := range inodes {
		n, _, err := s.eng.RemoveInode(ino, 0)
		removed += n
		if err != nil {
			s.forget(ns)
			return removed, err
		}
	}
	s.forget(ns)
	return removed, nil
}

func (s *Store) forget(ns uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, e := range s.entries {
		if e.ns == ns {
			delete(s.entries, id)
		}
	}
	delete(s.ns, ns)
}
