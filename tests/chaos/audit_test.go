package chaos

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/emberfs/emberfs/client"
	"github.com/emberfs/emberfs/internal/errcode"
	"github.com/emberfs/emberfs/service/meta"
	"github.com/emberfs/emberfs/storage/storageclient"
)

// auditReplicas reads every chunk of the file at p (up to maxBlocks) from
// each serving replica of its chain and reports chunks whose replicas
// differ (version, length, checksum or bytes). With the cluster quiet and
// all targets serving, every replica must hold the same committed chunk:
// a difference means some reads can return what others do not.
// latent counts copies found corrupt (checksum) by the audit's reads.
func auditReplicas(ctx context.Context, cl *client.Client, p string, latent *int) ([]string, error) {
	n, err := cl.Stat(ctx, meta.Root, at(p))
	if err != nil {
		return nil, err
	}
	chains, err := meta.LayoutChains(ctx, cl.Routing(), n.Layout)
	if err != nil {
		return nil, err
	}
	var out []string
	r := cl.Routing().Current()
	for idx := uint32(0); idx*chunkSize < maxBlocks*blockSize; idx++ {
		chain := meta.ChunkChain(chains, idx)
		id := storageclient.ChunkID{Inode: n.ID, Index: idx}
		type copy struct {
			target uint64
			res    storageclient.ReadResult
			data   []byte
			err    error
		}
		var copies []copy
		for _, tgt := range r.ServingTargets(chain) {
			buf := make([]byte, chunkSize)
			res, err := cl.Storage().Read(ctx, chain, id, 0, buf, storageclient.ReadOptions{Target: tgt})
			switch {
			case errcode.Is(err, errcode.NotFound):
				err, res = nil, storageclient.ReadResult{Target: tgt}
			case errcode.Is(err, errcode.ChecksumMismatch):
				// A byte the nemesis flipped on a replica nobody read
				// since: caught now (and repaired from the others);
				// that copy is not compared.
				*latent++
				continue
			}
			copies = append(copies, copy{tgt, res, buf[:res.N], err})
		}
		same := true
		for _, c := range copies[min(1, len(copies)):] {
			a := copies[0]
			if (c.err == nil) != (a.err == nil) || c.res.Version != a.res.Version || c.res.N != a.res.N || c.res.Checksum != a.res.Checksum || !bytes.Equal(c.data, a.data) {
				same = false
			}
		}
		if !same {
			var desc []string
			for _, c := range copies {
				desc = append(desc, fmt.Sprintf("target %d: version %d, %d bytes, crc %08x, blocks %s, err %v", c.target, c.res.Version, c.res.N, c.res.Checksum, blockSeqs(c.data), c.err))
			}
			out = append(out, fmt.Sprintf("%s (inode %d) chunk %d on chain %d: replicas differ:\n    %s", p, n.ID, idx, chain, strings.Join(desc, "\n    ")))
		}
	}
	return out, nil
}

// blockSeqs summarizes a chunk's blocks by the write seq in each header.
func blockSeqs(data []byte) string {
	var s []string
	for off := 0; off+blockSize <= len(data); off += blockSize {
		b := data[off : off+blockSize]
		if bytes.Count(b, []byte{0}) == blockSize {
			s = append(s, "0")
			continue
		}
		if string(b[:8]) != magic {
			s = append(s, "?")
			continue
		}
		s = append(s, fmt.Sprintf("%x", binary.LittleEndian.Uint64(b[24:32])))
	}
	return "[" + strings.Join(s, " ") + "]"
}

// probeChunk asks every replica of chunk idx of inode ino what it holds,
// right after a read found the chunk all zeros inside the file's length
// (a hole, or a replica that lacks a write): the answer goes into a
// violation report if porcupine later rejects that block's history.
func probeChunk(ctx context.Context, cl *client.Client, ino uint64, idx uint32) string {
	n, err := cl.Stat(ctx, meta.Root, meta.PathAt{Parent: ino})
	if err != nil {
		return fmt.Sprintf("probe: stat inode %d: %v", ino, err)
	}
	chains, err := meta.LayoutChains(ctx, cl.Routing(), n.Layout)
	if err != nil {
		return fmt.Sprintf("probe: chains of inode %d: %v", ino, err)
	}
	r := cl.Routing().Current()
	chain := meta.ChunkChain(chains, idx)
	ch, _ := r.Chain(chain)
	var out []string
	for _, ct := range ch.GetTargets() {
		buf := make([]byte, chunkSize)
		res, err := cl.Storage().Read(ctx, chain, storageclient.ChunkID{Inode: ino, Index: idx}, 0, buf, storageclient.ReadOptions{Target: ct.TargetId})
		out = append(out, fmt.Sprintf("target %d (%v): version %d, %d bytes, blocks %s, err %v", ct.TargetId, ct.PublicState, res.Version, res.N, blockSeqs(buf[:res.N]), err))
	}
	return fmt.Sprintf("probe of inode %d chunk %d on chain %d (version %d, routing %d):\n      %s", ino, idx, chain, ch.GetVersion(), r.Version(), strings.Join(out, "\n      "))
}
