package gitenc

import (
	"crypto/sha1"
	"fmt"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
)

// The bound of an audited update at N hosts: every commit has a new root
// tree (one entry per host, "40000 <serial>\0" and 20 bytes of id) that git's
// object model makes us hash whole. BenchmarkSHA1 gives this machine's SHA-1
// speed; BenchmarkRootCommit what one commit's root tree costs us (patch an
// entry, hash, delta against the previous root in the batch's pack).
//
//	go test -run '^$' -bench 'SHA1|RootCommit' ./pkg/store/gitdir/internal/gitenc/
//
// bound (commits/s) = SHA-1 bytes/s / root tree bytes; RootCommit's ns/op
// against the hashing alone (the SHA1 figure at that size) is the overhead.

func benchRoot(n int) *RootTree {
	es := make([]TreeEntry, n)
	for i := range es {
		es[i] = TreeEntry{Name: fmt.Sprintf("storm-%06d", i), Mode: filemode.Dir, Hash: plumbing.Hash(sha1.Sum([]byte{byte(i), byte(i >> 8)}))}
	}
	return NewRootTree(es)
}

func BenchmarkSHA1(b *testing.B) {
	for _, n := range []int{2000, 10000} {
		t := benchRoot(n)
		payload := t.Bytes()
		b.Run(fmt.Sprintf("hosts=%d", n), func(b *testing.B) {
			b.SetBytes(int64(len(payload)))
			b.ReportMetric(float64(len(payload)), "tree-bytes")
			for b.Loop() {
				HashObject(plumbing.TreeObject, payload)
			}
		})
	}
}

func BenchmarkRootCommit(b *testing.B) {
	for _, n := range []int{2000, 10000} {
		b.Run(fmt.Sprintf("hosts=%d", n), func(b *testing.B) {
			t := benchRoot(n)
			payload := t.Bytes()
			b.SetBytes(int64(len(payload)))
			pw := NewMemPackWriter()
			var rd RootDeltas
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				// A group commit's batch: a fresh pack every 32 commits.
				if i%32 == 0 {
					pw, rd = NewMemPackWriter(), RootDeltas{}
				}
				name := fmt.Sprintf("storm-%06d", (i*7919)%n)
				t.Set(TreeEntry{Name: name, Mode: filemode.Dir, Hash: plumbing.Hash(sha1.Sum([]byte(name + fmt.Sprint(i))))})
				buf := t.Bytes()
				h := HashObject(plumbing.TreeObject, buf)
				if err := rd.Write(pw, h, buf, true); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
