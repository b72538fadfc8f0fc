// Package gitenc holds the git on-disk formats the cluster directory store
// writes itself, as pure encoders over memory (the store's gitdir package
// does the I/O and the durability): object ids, commit and tree payloads,
// the root tree kept encoded in memory, .git/index and its split form,
// packs and their indexes, and the tree-aware delta of root trees.
//
// Each is here, rather than taken from go-git, because the store writes
// one on every request and go-git's re-encodes from scratch:
//   - RootTree changes a host's entry with a 20-byte copy into the encoded
//     tree; object.Tree.Encode rebuilds the whole tree (400 KB at 10,000
//     hosts) for every commit.
//   - TreeDelta compares two root trees in memory blocks and copies the
//     runs they share (no per-entry work); packfile.DiffDelta indexes the
//     whole base tree for every delta.
//   - Index updates an entry in place and EncodeSplit writes only what
//     changed since the shared index (git's split index), which go-git's
//     index.Encoder cannot write.
//
// Where go-git is not on the hot path it is used: the pack index is
// encoded by idxfile, and gitdir reads the repository (packs of `git gc`
// included) with go-git.
package gitenc
