// Package gitdir is the store.Store over a Mayu cluster directory:
// cluster.json and one <serial>/conf.json per host, every change a git
// commit, byte-compatible with what Mayu 0.11 reads and writes.
//
// Files, by what they do:
//
//	dir.go          Dir, Open, the read side (served from memory)
//	load.go         reading the directory into memory at open and reload
//	salvage.go      a record on disk that does not read: taken from git
//	recover.go      committing what a crash or a --no-git run left uncommitted
//	rollforward.go  finishing a branch update a crash interrupted
//	groupcommit.go  Create and Update: the group commit of concurrent writes
//	cluster.go      cluster.json: its file format and UpdateCluster
//	handedit.go     picking up an operator's edits (fsnotify)
//	repo.go         the repository: init, reading HEAD, locks, refs, reflog
//	tx.go           staging commits and writing them as one pack and ref update
//	gitindex.go     writing .git/index (split index) so git status stays clean
//	packmerge.go    merging the store's packs in the background
//	retired.go      keeping merged-away packs for concurrent git readers
//
// go-git reads the repository (HEAD, trees, packs of `git gc`, config) and
// encodes the commits (object.Commit) and pack indexes (idxfile). The
// store writes the rest itself (internal/gitenc), for two reasons.
//
// Durability, which go-git's filesystem storer does not give: it neither
// fsyncs objects nor replaces a ref atomically (it truncates the ref file
// in place), and it has no roll-forward. Here every write is a
// durable.Batch: the batch's pack and index, then the ref lock written
// and fsynced, then the records renamed, then the lock renamed over the
// ref; a crash between the last two is rolled forward at open
// (rollforward.go), so a record on disk always has its commit. The ref
// lock is git's <ref>.lock, so a git command run by an operator at the
// same time waits for the store or makes it reload, never loses a commit.
//
// Speed, where go-git's encoders cost more than the 10% the store's
// benchmarks allow (BenchmarkUpdateConcurrent, the boot storm), measured
// at 1,000 hosts:
//   - the root tree: object.Tree.Encode re-encodes every entry per commit;
//     gitenc.RootTree patches one 20-byte id in place.
//   - root tree deltas: packfile.GetDelta (DiffDelta) took 137 µs and 93 KB
//     per delta at 1,000 hosts; gitenc.TreeDelta first walked the two
//     sorted trees entry by entry (87 µs, 41 KB; ~200 µs at 10,000 hosts,
//     more than hashing the tree), and now compares them in memory blocks
//     (~20 µs at 10,000 hosts, nothing allocated per entry): a commit's
//     root tree costs 1.4-2x hashing it, the bound git's object model sets.
//   - .git/index: go-git's index.Encoder writes the whole file, 880 KB at
//     10,000 hosts, on every commit, and cannot write git's split index
//     that keeps an update to a few KB. Its encoder for the shared index
//     alone (off the hot path) would keep each entry twice, as go-git's
//     struct and as the encoded entry the split index is made of, and two
//     encoders of one format; gitenc.Index keeps one.
//
// Commit encoding costs 3.5 µs with go-git against 1.2 µs by hand, well
// within that budget, so go-git's is used.
package gitdir
