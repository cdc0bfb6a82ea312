package kvformat

// Stats are a namespace's counters. Each storage target keeps them for
// the reads it served and the values it holds; the client sums them over
// a namespace's chains (BytesStored and Values from chain heads only, so
// replicas are not counted twice).
type Stats struct {
	Hits          uint64 // gets that returned a value
	Misses        uint64 // gets that found no live record of the key
	BytesRead     uint64 // value bytes returned by hits
	BytesStored   uint64 // record bytes held (header, key, value)
	Values        uint64 // records held
	Evictions     uint64 // values removed to stay within capacity
	Expirations   uint64 // values removed after their TTL
	CorruptMisses uint64 // misses because a record failed its checksums
}

// Add adds o's counters to s.
func (s *Stats) Add(o Stats) {
	s.Hits += o.Hits
	s.Misses += o.Misses
	s.BytesRead += o.BytesRead
	s.BytesStored += o.BytesStored
	s.Values += o.Values
	s.Evictions += o.Evictions
	s.Expirations += o.Expirations
	s.CorruptMisses += o.CorruptMisses
}
