package checkpoint

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/emberfs/emberfs/internal/errcode"
)

// Format and Version identify manifest.json; a reader refuses any other.
const (
	Format  = "emberfs-checkpoint"
	Version = 1
)

// ManifestName is the manifest's file name inside a checkpoint directory;
// it is written last, so a directory without it is no checkpoint.
const ManifestName = "manifest.json"

// Manifest describes a published checkpoint: where every tensor's bytes
// are and how to check them.
type Manifest struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
	// Name is the checkpoint's directory name; CreatedUnixNano when the
	// coordinator committed it. Both are set by Commit.
	Name            string `json:"name"`
	CreatedUnixNano int64  `json:"created_unix_ns"`
	// Files lists every data file of the checkpoint with its size (set by
	// Commit from the namespace).
	Files map[string]FileInfo `json:"files"`
	// Tensors in the order the coordinator gave them.
	Tensors []Tensor `json:"tensors"`
	// Metadata is the caller's own JSON, kept as given.
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

// FileInfo is one data file of a checkpoint.
type FileInfo struct {
	Size int64 `json:"size"`
}

// Tensor is one stored byte range: a tensor, a tensor shard or any item
// the caller names. Dtype and Shape are the caller's (any dtype string).
type Tensor struct {
	Name   string  `json:"name"`
	File   string  `json:"file"`
	Offset int64   `json:"offset"`
	Length int64   `json:"length"`
	Dtype  string  `json:"dtype,omitempty"`
	Shape  []int64 `json:"shape,omitempty"`
	CRC32C uint32  `json:"crc32c"`
}

// TotalBytes is the sum of the tensors' lengths.
func (m *Manifest) TotalBytes() int64 {
	var n int64
	for _, t := range m.Tensors {
		n += t.Length
	}
	return n
}

// DataBytes is what the checkpoint holds: the tensors' bytes, or for a
// manifest that lists files only (a DCP checkpoint), the files' sizes.
func (m *Manifest) DataBytes() int64 {
	if len(m.Tensors) > 0 {
		return m.TotalBytes()
	}
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// ParseManifest decodes and checks a manifest. A manifest the caller
// hands to Commit may leave Format, Version, Name, Files and the creation
// time empty (Commit fills them).
func ParseManifest(b []byte) (*Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, errcode.New(errcode.InvalidArgument, "checkpoint manifest: bad JSON: %v", err)
	}
	if m.Format != "" && m.Format != Format {
		return nil, errcode.New(errcode.InvalidArgument, "checkpoint manifest: format %q, want %q", m.Format, Format)
	}
	if m.Version != 0 && m.Version != Version {
		return nil, errcode.New(errcode.NotSupported, "checkpoint manifest: version %d, this build reads version %d", m.Version, Version)
	}
	if err := m.checkTensors(); err != nil {
		return nil, err
	}
	return &m, nil
}

// checkTensors checks names and ranges (not against file sizes).
func (m *Manifest) checkTensors() error {
	seen := make(map[string]bool, len(m.Tensors))
	for i, t := range m.Tensors {
		switch {
		case t.Name == "":
			return errcode.New(errcode.InvalidArgument, "checkpoint manifest: tensor #%d has no name", i)
		case seen[t.Name]:
			return errcode.New(errcode.InvalidArgument, "checkpoint manifest: tensor %q listed twice", t.Name)
		case !validFileName(t.File):
			return errcode.New(errcode.InvalidArgument, "checkpoint manifest: tensor %q: bad file name %q", t.Name, t.File)
		case t.Offset < 0 || t.Length < 0:
			return errcode.New(errcode.InvalidArgument, "checkpoint manifest: tensor %q: negative offset %d or length %d", t.Name, t.Offset, t.Length)
		}
		for _, d := range t.Shape {
			if d < 0 {
				return errcode.New(errcode.InvalidArgument, "checkpoint manifest: tensor %q: negative dimension in shape %v", t.Name, t.Shape)
			}
		}
		seen[t.Name] = true
	}
	return nil
}

// checkFiles checks every tensor's range against the file sizes.
func (m *Manifest) checkFiles() error {
	for _, t := range m.Tensors {
		fi, ok := m.Files[t.File]
		if !ok {
			return errcode.New(errcode.NotFound, "checkpoint %s: tensor %q: file %s is missing", m.Name, t.Name, t.File)
		}
		if t.Offset+t.Length > fi.Size {
			return errcode.New(errcode.OutOfRange, "checkpoint %s: tensor %q: bytes [%d, %d) past the end of file %s (%d bytes)",
				m.Name, t.Name, t.Offset, t.Offset+t.Length, t.File, fi.Size)
		}
	}
	return nil
}

// validFileName accepts a plain file name inside the checkpoint directory
// (no separators, not a reserved name).
func validFileName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\x00") && s != ManifestName && s != leaseName
}

// Encode returns the manifest as indented JSON.
func (m *Manifest) Encode() []byte {
	b, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		panic(fmt.Sprintf("checkpoint: encoding a manifest: %v", err)) // only plain types inside
	}
	return append(b, '\n')
}
