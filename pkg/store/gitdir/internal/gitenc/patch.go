package gitenc

import (
	"errors"
	"fmt"
)

// ErrDelta is wrapped by PatchDelta's errors: delta is not a git delta for
// base.
var ErrDelta = errors.New("invalid git delta")

// PatchDelta applies delta, in git's delta format (gitformat-pack(5),
// "Deltified representation": the base's and the result's sizes as
// little-endian base-128 numbers, then copy-from-base and insert
// instructions), to base and returns the result. The result is allocated
// once at the size the delta declares: go-git's PatchDelta grows a buffer
// from 64 KiB by doubling, which for the store's 400 KB root trees made
// pack merges allocate about 1 MB per tree (two thirds of what a storm at
// 10,000 hosts allocated). base is not modified.
func PatchDelta(base, delta []byte) ([]byte, error) {
	srcSize, delta, err := deltaSize(delta)
	if err != nil {
		return nil, err
	}
	if srcSize != uint64(len(base)) {
		return nil, fmt.Errorf("%w: for a base of %d bytes, not %d", ErrDelta, srcSize, len(base))
	}
	dstSize, delta, err := deltaSize(delta)
	if err != nil {
		return nil, err
	}
	// A delta cannot make more than 0x10000 bytes per instruction byte
	// or one per inserted byte: a larger declared size is corrupt, and is
	// refused before it is allocated.
	if dstSize > uint64(len(delta))*0x10000 {
		return nil, fmt.Errorf("%w: %d bytes declared by a delta of %d", ErrDelta, dstSize, len(delta))
	}
	out := make([]byte, 0, dstSize)
	for len(delta) > 0 {
		op := delta[0]
		delta = delta[1:]
		switch {
		case op&0x80 != 0: // copy from base
			var off, n uint64
			for i := 0; i < 4; i++ {
				if op&(1<<i) != 0 {
					if len(delta) == 0 {
						return nil, fmt.Errorf("%w: truncated copy", ErrDelta)
					}
					off |= uint64(delta[0]) << (8 * i)
					delta = delta[1:]
				}
			}
			for i := 0; i < 3; i++ {
				if op&(0x10<<i) != 0 {
					if len(delta) == 0 {
						return nil, fmt.Errorf("%w: truncated copy", ErrDelta)
					}
					n |= uint64(delta[0]) << (8 * i)
					delta = delta[1:]
				}
			}
			if n == 0 {
				n = 0x10000
			}
			if off+n > uint64(len(base)) || uint64(len(out))+n > dstSize {
				return nil, fmt.Errorf("%w: copy of %d bytes at %d out of bounds", ErrDelta, n, off)
			}
			out = append(out, base[off:off+n]...)
		case op != 0: // insert the next op bytes
			n := uint64(op)
			if n > uint64(len(delta)) || uint64(len(out))+n > dstSize {
				return nil, fmt.Errorf("%w: insert of %d bytes out of bounds", ErrDelta, n)
			}
			out = append(out, delta[:n]...)
			delta = delta[n:]
		default:
			return nil, fmt.Errorf("%w: reserved instruction 0", ErrDelta)
		}
	}
	if uint64(len(out)) != dstSize {
		return nil, fmt.Errorf("%w: %d bytes made, %d declared", ErrDelta, len(out), dstSize)
	}
	return out, nil
}

// deltaSize reads one of a delta header's sizes.
func deltaSize(b []byte) (uint64, []byte, error) {
	var v uint64
	for i := 0; i < len(b) && i < 10; i++ {
		v |= uint64(b[i]&0x7f) << (7 * i)
		if b[i]&0x80 == 0 {
			return v, b[i+1:], nil
		}
	}
	return 0, nil, fmt.Errorf("%w: bad size in the header", ErrDelta)
}
